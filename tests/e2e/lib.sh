#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2034 # url is set by the suite that sources this file; the names below are read by it
# The test body shared by the end-to-end suites: the kind suite (tests/e2e/run.sh) and the real
# node suite (tests/node/run.sh). Sourced; the caller sets `url` (the ingress's webhook URL).

# The names both suites deploy under, and the counts of their checks.
infra_ns=wapipe-e2e-infra
operator_ns=wapipe-system
ns=wapipe-e2e
pipeline=e2e
app_secret=e2e-app-secret
verify_token=e2e-verify-token
passed=0
failed=0

log() { printf '\n=== %s\n' "$*"; }
pass() { passed=$((passed + 1)); echo "PASS $1"; }
# Every failure is also appended to $WAPIPE_FAILURES when it is set, so that scripts/test.sh can
# repeat them at the end of a long run, where a truncated log still shows them.
fail() {
  failed=$((failed + 1))
  echo "FAIL $1" >&2
  if [[ -n "${WAPIPE_FAILURES:-}" ]]; then echo "node: FAIL $1" >>"$WAPIPE_FAILURES"; fi
}

# check NAME COMMAND...: one assertion of the suite.
check() {
  local name="$1"
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}

# retry SECONDS COMMAND...: until the command succeeds or the time is up.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS >= deadline)) && return 1
    sleep 3
  done
}

# meta_payload FIRST COUNT: one POST carrying COUNT text messages from three users.
meta_payload() {
  local first=$1 count=$2 i messages="" user
  for ((i = first; i < first + count; i++)); do
    user=$((15550000001 + i % 3))
    messages+="${messages:+,}{\"from\":\"$user\",\"id\":\"wamid.E2E$(printf '%08d' "$i")\",\"timestamp\":\"$((1767225600 + i))\",\"type\":\"text\",\"text\":{\"body\":\"message $i\"}}"
  done
  printf '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"E2E"},"wa_id":"15550000001"}],"messages":[%s]}}]}]}' "$messages"
}
sign() { printf '%s' "$1" | openssl dgst -sha256 -hmac "$app_secret" -r | cut -d' ' -f1; }

# post BODY [SIGNATURE]: prints the HTTP status.
post() {
  local body=$1 signature=${2-sha256=$(sign "$1")}
  curl -s -o /dev/null -w '%{http_code}' --max-time 30 -X POST "$url" \
    -H 'Content-Type: application/json' -H "X-Hub-Signature-256: $signature" --data-binary "$body"
}

# post_refused CODE: says what a POST answered, and (000: no answer) whether the ingress pods
# were in their Service then. Returns 1.
post_refused() {
  echo "POST answered $1" >&2
  if [[ "$1" == 000 ]]; then
    kubectl -n "$ns" get endpointslices -l "kubernetes.io/service-name=$pipeline-ingress" \
      -o jsonpath='{range .items[*].endpoints[*]}endpoint {.addresses[0]} ready={.conditions.ready}{"\n"}{end}' >&2
  fi
  return 1
}

# send_batch FIRST POSTS PER_POST: POSTS signed requests, all must answer 200.
send_batch() {
  local first=$1 posts=$2 per=$3 p code
  for ((p = 0; p < posts; p++)); do
    code="$(post "$(meta_payload $((first + p * per)) "$per")")"
    [[ "$code" == 200 ]] || post_refused "$code" || return 1
  done
}

# --- scenarios shared by the suites -------------------------------------------------------------
# They also need from the suite: `ns`, `pipeline`, `messages_table`, `psql_query SQL` (one value
# per line), `sink_stop` and `sink_start` (the PostgreSQL the workers write to), and `work_dir`
# (a scratch directory).

# skip_check NAME REASON: a check this suite cannot make here, said out loud.
skip_check() {
  skipped=$((${skipped:-0} + 1))
  echo "SKIP $1: $2"
}

# post_file FILE: a signed POST of the body in FILE; prints the HTTP status (000: no answer).
post_file() {
  local signature
  signature="sha256=$(openssl dgst -sha256 -hmac "$app_secret" -r <"$1" | cut -d' ' -f1)"
  curl -s -o /dev/null -w '%{http_code}' --max-time 60 -X POST "$url" \
    -H 'Content-Type: application/json' -H "X-Hub-Signature-256: $signature" --data-binary "@$1"
}

component_pods() {
  kubectl -n "$ns" get pods -l "app.kubernetes.io/component=$1,wapipe.dev/pipeline=$pipeline" "${@:2}"
}
worker_field() { kubectl -n "$ns" get deploy "$pipeline-worker" -o jsonpath="{$1}" 2>/dev/null; }

# wamids_stored FIRST COUNT: rows with the wamids FIRST..FIRST+COUNT-1 (as meta_payload numbers
# them), and how many of them are distinct: "ROWS DISTINCT".
wamids_stored() {
  local from to
  from="$(printf 'wamid.E2E%08d' "$1")"
  to="$(printf 'wamid.E2E%08d' $(($1 + $2)))"
  psql_query "SELECT count(*) || ' ' || count(DISTINCT wamid) FROM $messages_table WHERE wamid >= '$from' AND wamid < '$to'"
}
# stored_once FIRST COUNT: each of those wamids is stored exactly once.
stored_once() { [[ "$(wamids_stored "$1" "$2")" == "$2 $2" ]]; }

# --- steady load: background loops of signed POSTs, one message each ---------------------------
# load_start FIRST LOOPS: LOOPS loops POST wamids FIRST, FIRST+1, ... (loop k takes every LOOPS-th)
# until load_stop; each answer is a line "NUMBER STATUS" in $work_dir/load.
load_pids=()
load_start() {
  local first=$1 loops=$2 k
  : >"$work_dir/load"
  rm -f "$work_dir/load.stop"
  load_pids=()
  for ((k = 0; k < loops; k++)); do
    (
      i=$((first + k))
      until [[ -e "$work_dir/load.stop" ]]; do
        code="$(post "$(meta_payload "$i" 1)")"
        echo "$i $code" >>"$work_dir/load"
        i=$((i + loops))
      done
    ) &
    load_pids+=("$!")
  done
}
load_stop() {
  touch "$work_dir/load.stop"
  wait "${load_pids[@]}"
  load_pids=()
}
load_sent() { wc -l <"$work_dir/load"; }
load_non_2xx() { awk '$2 !~ /^2/' "$work_dir/load" | wc -l; }
# The numbers the ingress acknowledged, as a SQL array of wamids.
load_acked_sql() {
  awk '$2 == 200 {printf "%s'\''wamid.E2E%08d'\''", (n++ ? "," : ""), $1}' "$work_dir/load"
}
acked_stored_once() {
  local acked
  acked="$(awk '$2 == 200' "$work_dir/load" | wc -l)"
  [[ "$(psql_query "SELECT count(*) || ' ' || count(DISTINCT wamid) FROM $messages_table WHERE wamid IN ($(load_acked_sql))")" == "$acked $acked" ]]
}

same() { [[ "$1" == "$2" ]]; }
# all_answered_2xx SENT NON_2XX
all_answered_2xx() { (($1 > 0 && $2 == 0)); }

# --- 1. lag scales real worker pods up to the partition count and back down --------------------
# timeline_sample: one line "+SECONDS replicas R ready Y lag L" when something changed.
timeline_sample() {
  local line
  line="replicas $(worker_field .spec.replicas) ready $(worker_field .status.readyReplicas) lag $(kubectl -n "$ns" get wapipe "$pipeline" -o jsonpath='{.status.totalLag}' 2>/dev/null)"
  if [[ "$line" != "${timeline_last:-}" ]]; then
    timeline+=("+$((SECONDS - timeline_start))s $line")
    timeline_last="$line"
  fi
}
timeline_mark() { timeline+=("+$((SECONDS - timeline_start))s ($1)"); }
# timeline_until SECONDS COMMAND...: sample the worker Deployment every 2 s until COMMAND holds.
timeline_until() {
  local deadline=$((SECONDS + $1))
  shift
  while true; do
    timeline_sample
    "$@" && return 0
    ((SECONDS >= deadline)) && return 1
    sleep 2
  done
}
replicas_are() { [[ "$(worker_field .spec.replicas)" == "$1" ]]; }
ready_are() { [[ "$(worker_field .status.readyReplicas)" == "$1" && "$(worker_field .spec.replicas)" == "$1" ]]; }
workers_down_to() {
  replicas_are "$1" && [[ "$(component_pods worker -o name | wc -l)" == "$1" ]]
}

# scenario_lag_scaling FIRST CAP: with the sink stopped, 300 events from FIRST build a lag the
# scaler answers with CAP workers (the partition count or maxReplicas); once the sink is back,
# CAP pods are Ready and drain it; after the scale-down window the workers are back at 1.
scenario_lag_scaling() {
  local first=$1 cap=$2
  timeline=()
  timeline_last=""
  check "workers start at minReplicas (1)" retry 180 workers_down_to 1
  timeline_start=$SECONDS
  timeline_sample
  sink_stop || { fail "stop the sink"; return; }
  timeline_mark "sink stopped"
  check "300 events acknowledged while the sink is down" send_batch "$first" 30 10
  timeline_mark "300 events acknowledged"
  check "the scaler raises the worker replicas to $cap under lag" timeline_until 240 replicas_are "$cap"
  sink_start || { fail "start the sink again"; return; }
  timeline_mark "sink started"
  if timeline_until 240 ready_are "$cap"; then
    pass "$cap worker pods are Ready"
  else
    fail "$cap worker pods are Ready"
    component_pods worker -o wide || true
    kubectl -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 || true
  fi
  check "the 300 events land once" timeline_until 300 stored_once "$first" 300
  check "after the window the workers are back at 1 pod" timeline_until 300 workers_down_to 1
  echo "worker timeline (replicas, Ready pods, and the lag the operator last reported):"
  printf '  %s\n' "${timeline[@]}"
}

# --- 2. rolling updates under steady load ---------------------------------------------------------
# rolled_to COMPONENT IMAGE: every pod of the component runs IMAGE, is Ready, and no other pod
# (an old or terminating one) is left.
rolled_to() {
  local want=$2 out
  out="$(component_pods "$1" -o jsonpath='{range .items[*]}{.spec.containers[0].image} {.status.containerStatuses[0].ready} {.metadata.deletionTimestamp}{"\n"}{end}')"
  [[ -n "$out" ]] && ! grep -qv "^$want true $" <<<"$out"
}

# scenario_rollout COMPONENT IMAGE FIRST: the pipeline's COMPONENT (ingress or worker) moves to
# IMAGE while two loops POST signed events from FIRST; every POST answers 2xx and every
# acknowledged event is stored once.
scenario_rollout() {
  local component=$1 image=$2 first=$3 started sent bad
  log "rolling update of the $component pods to $image under steady load"
  load_start "$first" 2
  sleep 5
  started=$SECONDS
  kubectl -n "$ns" patch wapipe "$pipeline" --type merge \
    -p "{\"spec\":{\"$component\":{\"image\":\"$image\"}}}" >/dev/null || fail "patch spec.$component.image"
  check "every $component pod runs the new image, the old ones gone" retry 300 rolled_to "$component" "$image"
  echo "rollout took $((SECONDS - started)) s"
  sleep 5
  load_stop
  sent="$(load_sent)"
  bad="$(load_non_2xx)"
  echo "requests sent during the $component rollout: $sent, non-2xx: $bad"
  awk '$2 !~ /^2/ {print "  " $0}' "$work_dir/load" | sort -k2 | uniq -c -f1 | head -n 5
  check "zero non-2xx answers during the $component rollout ($sent requests)" all_answered_2xx "$sent" "$bad"
  check "every acknowledged event of the $component rollout is stored once" retry 240 acked_stored_once
}

# --- 3. memory limits under a burst of large signed bodies -----------------------------------------
# large_payload FIRST COUNT PAD: like meta_payload, each text body PAD characters long.
large_payload() {
  local first=$1 count=$2 pad i user text id
  pad="$(head -c "$3" /dev/zero | tr '\0' 'x')"
  for ((i = first; i < first + count; i++)); do
    user=$((15550000001 + i % 3))
    printf -v id '%08d' "$i"
    text+="${text:+,}{\"from\":\"$user\",\"id\":\"wamid.E2E$id\",\"timestamp\":\"$((1767225600 + i))\",\"type\":\"text\",\"text\":{\"body\":\"$i $pad\"}}"
  done
  printf '{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"E2E"},"wa_id":"15550000001"}],"messages":[%s]}}]}]}' "$text"
}

# pod_working_sets: "POD BYTES" per pod of the pipeline, the kubelet's summary API (through the
# API server's node proxy) for the working set.
pod_working_sets() {
  local node
  for node in $(component_pods ingress -o jsonpath='{.items[*].spec.nodeName}') $(component_pods worker -o jsonpath='{.items[*].spec.nodeName}'); do
    echo "$node"
  done | sort -u | while read -r node; do
    kubectl get --raw "/api/v1/nodes/$node/proxy/stats/summary" 2>/dev/null |
      jq -r --arg ns "$ns" --arg p "$pipeline" '.pods[] | select(.podRef.namespace == $ns and (.podRef.name | startswith($p + "-")))
        | "\(.podRef.name) \(.memory.workingSetBytes // 0)"'
  done
}
restart_counts() {
  kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" \
    -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount}{" "}{end}'
}
# restarts_unchanged BEFORE AFTER (restart_counts): every pod kept its count; a pod that came up
# meanwhile (the scaler adds workers) has none.
restarts_unchanged() {
  awk -v before="$1" -v after="$2" 'BEGIN {
    n = split(before, b, " "); for (i = 1; i <= n; i++) { split(b[i], kv, "="); was[kv[1]] = kv[2] }
    n = split(after, a, " "); for (i = 1; i <= n; i++) { split(a[i], kv, "="); if (kv[2] != ((kv[1] in was) ? was[kv[1]] : 0)) bad = 1 }
    exit bad }'
}
no_oom_kill() {
  ! kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[0].lastState.terminated.reason}{"\n"}{end}' | grep -q OOMKilled
}

# memory_sampler_start: samples every pod's working set each second into $work_dir/memory, in
# the background ($sampler).
memory_sampler_start() {
  : >"$work_dir/memory"
  rm -f "$work_dir/memory.stop"
  (while [[ ! -e "$work_dir/memory.stop" ]]; do pod_working_sets >>"$work_dir/memory"; sleep 1; done) &
  sampler=$!
}
# memory_sampler_stop_and_check BEFORE: stops the sampler; no container OOM-killed, none
# restarted since BEFORE (restart_counts); prints the peak working set per pod.
memory_sampler_stop_and_check() {
  local before=$1 after
  touch "$work_dir/memory.stop"
  wait "$sampler"
  after="$(restart_counts)"
  echo "restart counts before: $before"
  echo "restart counts after:  $after"
  check "no container was OOM-killed" no_oom_kill
  check "no container restarted during the burst" restarts_unchanged "$before" "$after"
  echo "peak working set per pod during the burst (summary API, sampled every second):"
  awk '{ if ($2 > peak[$1]) peak[$1] = $2 } END { for (p in peak) printf "  %s %.1f MiB\n", p, peak[p] / 1048576 }' "$work_dir/memory" | sort
  if declare -F pod_peak_hook >/dev/null; then pod_peak_hook; fi
}

# post_until_acknowledged FILE LOG: POSTs FILE until it gets 200, waiting 2 s after each 503
# (the provider waits out Retry-After); every answer is appended to LOG. Gives up on any other
# answer or after 60 tries.
post_until_acknowledged() {
  local try code
  for ((try = 0; try < 60; try++)); do
    code="$(post_file "$1")"
    echo "$code" >>"$2"
    [[ "$code" == 503 ]] || return 0
    sleep 2
  done
}
# ingress_metric NAME: the metric lines starting with NAME of one ingress pod, read on its admin
# port (9090) through the API server's pod proxy: the Service exposes the webhook only.
ingress_metric() {
  local pod
  pod="$(kubectl -n "$ns" get pods -l "app.kubernetes.io/component=ingress,wapipe.dev/pipeline=$pipeline" \
    -o jsonpath='{.items[0].metadata.name}')" || return 0
  kubectl -n "$ns" get --raw "/api/v1/namespaces/$ns/pods/$pod:9090/proxy/metrics" 2>/dev/null |
    grep "^$1" | tr '\n' ';'
}

# scenario_memory_burst FIRST ROUNDS PARALLEL MESSAGES PAD: ROUNDS rounds of PARALLEL concurrent
# signed POSTs, each MESSAGES messages with PAD-character texts. What does not fit the ingress's
# byte budget (set by the operator from its memory limit) is answered 503 with Retry-After and
# POSTed again until 200, as a provider does: every answer is 200 or 503, every POST acknowledged
# in the end, every event stored once, no container OOM-killed or restarted. The peak working set
# per pod (sampled every second from the summary API) is printed; `pod_peak_hook`, when the suite
# defines it, adds what the node itself can tell (cgroup v1's max_usage_in_bytes).
scenario_memory_burst() {
  local first=$1 rounds=$2 parallel=$3 messages=$4 pad=$5 r p n=0 before posts first_answers all_answers
  posts=$((rounds * parallel))
  log "memory: $rounds x $parallel concurrent signed POSTs of $messages messages of ${pad} B"
  before="$(restart_counts)"
  for ((p = 0; p < posts; p++)); do
    large_payload $((first + p * messages)) "$messages" "$pad" >"$work_dir/large-$p.json"
    : >"$work_dir/large-$p.answers"
  done
  echo "body size: $(wc -c <"$work_dir/large-0.json") bytes; ingress budgets: $(kubectl -n "$ns" get deploy "$pipeline-ingress" \
    -o jsonpath='{range .spec.template.spec.containers[0].env[*]}{.name}={.value} {end}' | tr ' ' '\n' | grep -E 'MAX_(IN_FLIGHT|BODY_READ)_BYTES' | tr '\n' ' ')"
  memory_sampler_start
  for ((r = 0; r < rounds; r++)); do
    for ((p = 0; p < parallel; p++)); do
      post_until_acknowledged "$work_dir/large-$n.json" "$work_dir/large-$n.answers" &
      n=$((n + 1))
    done
    wait_children_except "$sampler"
  done
  first_answers="$(for ((p = 0; p < posts; p++)); do head -n 1 "$work_dir/large-$p.answers"; done | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  all_answers="$(cat "$work_dir"/large-*.answers | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
  echo "first answers: $first_answers all answers (retries included): $all_answers"
  echo "ingress: $(ingress_metric 'wapipe_ingress_requests_total{outcome="\(ok\|overloaded\)"}')"
  check "every answer to the $posts large POSTs is 200 or 503" same "$(cat "$work_dir"/large-*.answers | grep -cv '^\(200\|503\)$')" 0
  check "each of the $posts large POSTs is acknowledged with 200 in the end" same "$(cat "$work_dir"/large-*.answers | grep -c '^200$')" "$posts"
  check "the $((posts * messages)) large events are stored once" retry 300 stored_once "$first" $((posts * messages))
  memory_sampler_stop_and_check "$before"
  rm -f "$work_dir"/large-*.json "$work_dir"/large-*.answers
}
# wait_children_except PID: wait for every background job but PID.
wait_children_except() {
  local pid
  for pid in $(jobs -p); do
    [[ "$pid" == "$1" ]] || wait "$pid"
  done
}

# --- 4. graceful drain on `kubectl delete` of the pipeline ----------------------------------------
pipeline_pods_gone() { [[ -z "$(kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" -o name)" ]]; }
pipeline_children_gone() {
  [[ -z "$(kubectl -n "$ns" get deploy,svc,pdb -l "wapipe.dev/pipeline=$pipeline" -o name)" ]]
}
# graceful_exits FILE: every line (one a pod) says exit 0, reason Completed.
graceful_exits() { [[ -s "$1" ]] && ! grep -qv ' exit 0 Completed ' "$1"; }
# shutdown_logged: each pod's log (followed to its end) has the stop signal and the clean stop.
shutdown_logged() {
  local file ok=0 all=0
  for file in "$work_dir/log-$pipeline"-*; do
    [[ -e "$file" ]] || return 1
    all=$((all + 1))
    grep -q 'shutdown signal received\|shutting down\|stop signal' "$file" &&
      grep -q 'ingress stopped\|worker stopped' "$file" && ok=$((ok + 1))
  done
  echo "$ok of $all pods logged the signal and a clean stop"
  ((all > 0 && ok == all))
}
# group_lags GROUP...: the total lag of each consumer group on the pipeline's topic, one a line,
# from `wapipe lag` in a pod of the suite's image ($wapipe_image; $kafka_bootstrap, $topic). A
# group that never committed counts what the topic retains: the sum of its end offsets.
group_lags() {
  local script="" group out attempt
  for group in "$@"; do
    script+="wapipe lag --kafka-brokers $kafka_bootstrap --topic $topic --group $group --samples 1 --workers 1 | awk '\$1 == \"total\" {print \$2}'; "
  done
  # A one-off pod can fail for reasons of its own (attach, scheduling on a busy node): a read,
  # so it is tried again, three times at most.
  for attempt in 1 2 3; do
    kubectl -n "$ns" delete pod group-lags --ignore-not-found >/dev/null 2>&1
    if out="$(kubectl -n "$ns" run group-lags --rm -i --quiet --restart=Never --image="$wapipe_image" \
      --image-pull-policy="${wapipe_image_pull_policy:-IfNotPresent}" --command -- bash -c "$script" 2>/dev/null)" &&
      [[ "$(grep -c '^[0-9][0-9]*$' <<<"$out")" == "$#" ]]; then
      echo "$out"
      return 0
    fi
    echo "group-lags: attempt $attempt failed" >&2
    sleep 2
  done
  return 1
}
group_drained() { [[ "$(group_lags "$group")" == 0 ]]; }

# scenario_graceful_delete FIRST: with the topic retained (deletionPolicy Retain), the pipeline
# is deleted while its workers are still writing a burst of 500 events from FIRST. Every pod gets
# SIGTERM and exits 0 before its grace period ends; the workers commit exactly what they wrote
# (rows written during the burst + the group's lag left = events sent); children are gone.
scenario_graceful_delete() {
  local first=$1 rows0 end0 rows1 lags lag1 end1 pod watch_pid deleted
  log "graceful drain on kubectl delete of the pipeline"
  kubectl -n "$ns" patch wapipe "$pipeline" --type merge -p '{"spec":{"deletionPolicy":"Retain"}}' >/dev/null ||
    fail "set deletionPolicy Retain"
  check "the group has no lag before the burst" retry 240 group_drained
  rows0="$(psql_query "SELECT count(*) FROM $messages_table")"
  end0="$(group_lags "wapipe-e2e-never-$first")" || { fail "read the topic's end offsets"; return; }
  kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" -w -o json --output-watch-events >"$work_dir/watch" 2>/dev/null &
  watch_pid=$!
  for pod in $(kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" -o name); do
    timeout 300 kubectl -n "$ns" logs -f "$pod" >"$work_dir/log-${pod#pod/}" 2>/dev/null &
  done
  check "500 events acknowledged right before the delete" send_batch "$first" 20 25
  deleted=$SECONDS
  kubectl -n "$ns" delete wapipe "$pipeline" --wait=true --timeout=180s >/dev/null || fail "delete the pipeline"
  check "the pipeline's pods terminate and are gone" retry 180 pipeline_pods_gone
  echo "pods gone $((SECONDS - deleted)) s after the delete"
  check "children are garbage-collected" retry 120 pipeline_children_gone
  sleep 2
  kill "$watch_pid" 2>/dev/null
  wait "$watch_pid" 2>/dev/null
  wait_children_except none
  # The last status each pod reported: its container's terminated state, and how long it took
  # from the deletion to the exit against its grace period.
  jq -rs '[.[] | .object] | group_by(.metadata.name)[] | last as $p
      | ($p.status.containerStatuses[0].state.terminated // {}) as $t
      | "\($p.metadata.name) exit \($t.exitCode // "none") \($t.reason // "-") started \($t.startedAt // "-") finished \($t.finishedAt // "-")"' \
    "$work_dir/watch" >"$work_dir/exits"
  echo "how the pods ended (their last reported status):"
  sed 's/^/  /' "$work_dir/exits"
  check "every pod exits 0 (Completed) after SIGTERM, not killed at the grace deadline" graceful_exits "$work_dir/exits"
  check "every pod logs the stop signal and its clean stop" shutdown_logged
  rows1="$(psql_query "SELECT count(*) FROM $messages_table")"
  lags="$(group_lags "$group" "wapipe-e2e-never-$first")" || { fail "read the group's offsets after the delete"; return; }
  lag1="$(sed -n 1p <<<"$lags")"
  end1="$(sed -n 2p <<<"$lags")"
  echo "events sent in the burst: $((end1 - end0)); written by the workers: $((rows1 - rows0)); left uncommitted in the group: $lag1"
  check "the burst put 500 records on the topic" same $((end1 - end0)) 500
  check "the workers committed exactly what they wrote (written + lag left = 500 sent)" \
    same $((rows1 - rows0 + lag1)) 500
  check "no wamid is stored twice" same "$(psql_query "SELECT count(*) - count(DISTINCT wamid) FROM $messages_table")" 0
}
