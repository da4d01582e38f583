#!/usr/bin/env bash
# The cluster suite: the chart, the CRD, the examples and the operator against a real
# kube-apiserver (scripts/cluster.sh) and a real Kafka broker.
#
#   WAPIPE_TEST_KUBECONFIG  admin kubeconfig of a running cluster (scripts/cluster.sh up prints it)
#   WAPIPE_TEST_BROKERS     Kafka bootstrap address the operator and the tests use
#
# Every check asserts and can fail; the run fails if any does. What runs here:
#   1. helm lint (strict) and helm template, default and non-default values; the rendered
#      objects pass a server-side dry run; helm install --wait (kwok makes the pods Ready)
#   2. the CRD is Established; broken pipelines are refused by the server itself (CEL rule,
#      enum, minimum, unknown field); every example applies
#   3. wapipe-operator as a host process with a token of the chart's ServiceAccount: its RBAC is
#      enforced, a call outside it is refused, and the operator logs no refusal
#   4. operator/tests/cluster.rs (Ready, topics, children, GC, deletion policy, conditions,
#      events, scaling on real lag, namespace deletion, a Kafka outage) while that operator runs,
#      with a 45 s cleanup deadline: an abandoned cleanup shows within the test's patience,
#      and a loaded machine still reconciles a replacement pipeline before it
#      and operator/tests/cluster_ownership.rs (what the operator must never delete or take)
#   5. the whole loop (operator/tests/cluster_loop.rs): ingress and workers as host processes
#      from the Deployments' pod templates, signed webhooks into PostgreSQL, scaled on lag
#   5b. secret rotation (operator/tests/cluster_rotation.rs): the ingress from its pod template,
#      its mounted Secret kept in step with the API's Secret as the kubelet does; the Secret
#      gains a key, the sender switches, the old key goes: every answer 200, then the old key 401
#   6. pausing the scaler (operator/tests/cluster_pause.rs): workers held by the annotation,
#      Scaling=False Paused, a replay into the emptied group, the scaler back afterwards
#   7. two operator processes (operator/tests/cluster_lease.rs): one holds the Lease, kill it
#      and the other takes over and reconciles
#   7b. namespace-scoped mode: a second release with watchNamespaces, its ServiceAccount bound
#      in the watched namespace only; an operator under that token reconciles the pipeline
#      there, leaves the one elsewhere untouched, and logs no refusal
#   8. the Argo CD health check on the statuses captured in 4 and 6 (a paused one: Suspended)
# Exit 77 (skipped) when WAPIPE_TEST_KUBECONFIG is unset.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
# shellcheck source=scripts/lib/kube.sh
source scripts/lib/kube.sh

if [[ -z "${WAPIPE_TEST_KUBECONFIG:-}" ]]; then
  echo "cluster suite: SKIPPED: WAPIPE_TEST_KUBECONFIG is not set (scripts/cluster.sh up)"
  exit 77
fi
: "${WAPIPE_TEST_BROKERS:?WAPIPE_TEST_BROKERS must name the Kafka broker}"
bin="$(bash scripts/build-control-plane.sh --print)"
export PATH="$bin:$PATH" KUBECONFIG="$WAPIPE_TEST_KUBECONFIG"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d)"
operator_pid=""
# start_operator LOG PORT VAR=VALUE...: wapipe-operator as a host process, its metrics on PORT,
# with the environment given; its pid in $operator_pid.
start_operator() {
  local log="$1" port="$2"
  shift 2
  env WAPIPE_OPERATOR_LISTEN="127.0.0.1:$port" WAPIPE_IMAGE=ghcr.io/wapipe/wapipe:cluster-suite \
    RUST_LOG=info,kube=warn "$@" "$CARGO_TARGET_DIR/debug/wapipe-operator" >"$log" 2>&1 &
  operator_pid=$!
}
stop_operator() {
  [[ -n "$operator_pid" ]] || return 0
  kill "$operator_pid" 2>/dev/null || true
  wait "$operator_pid" 2>/dev/null || true
  operator_pid=""
}
# no_refusal LOG: the operator logged no refusal by the API server and still runs.
no_refusal() {
  if grep -Ei 'forbidden|code: 403' "$1"; then return 1; fi
  kill -0 "$operator_pid"
}
# free_port: a loopback port nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  stop_operator
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
# failure_lines [FILE]: the log without the frames of a backtrace.
failure_lines() {
  grep -v -E '^\s+[0-9]+: |^\s+at (/|\./)' "$@" || true
}
# check NAME CMD...: runs CMD, counts and prints the outcome.
check() {
  local name="$1"
  shift
  if "$@" >"$work/check.log" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    # Backtrace frames would push the panic message out of the last lines shown.
    failure_lines "$work/check.log" | sed 's/^/     /' | tail -n 40
    if [[ -n "${WAPIPE_FAILURES:-}" ]]; then
      {
        echo "cluster: FAIL $name"
        grep -A4 -E "panicked at|^---- " "$work/check.log" | failure_lines | sed 's/^/     /' | head -n 30
      } >>"$WAPIPE_FAILURES"
    fi
  fi
}
fatal() {
  echo "cluster suite: cannot go on: $*" >&2
  exit 1
}

chart=charts/wapipe-operator
release=wapipe
release_ns=wapipe-system
nondefault=(--set replicaCount=1 --set networkPolicy.enabled=true --set networkPolicy.egress.enabled=true
  --set podDisruptionBudget.enabled=false --set metrics.service.enabled=false --set logFormat=text
  --set serviceAccount.name=custom-sa --set image.tag=test)

# --- 1. chart -------------------------------------------------------------------------
check "helm lint --strict (default values)" helm lint --strict "$chart"
check "helm lint --strict (non-default values)" helm lint --strict "$chart" "${nondefault[@]}"
render_and_dry_run() {
  helm template "$release" "$chart" --namespace "$release_ns" --include-crds "$@" >"$work/rendered.yaml"
  kubectl apply --dry-run=server -f "$work/rendered.yaml" --namespace "$release_ns"
}
kubectl create namespace "$release_ns" >/dev/null
check "helm template (default values) passes a server-side dry run" render_and_dry_run
check "helm template (non-default values) passes a server-side dry run" render_and_dry_run "${nondefault[@]}"
check "helm install --wait: every object accepted, the operator Deployment becomes available" \
  helm install "$release" "$chart" --namespace "$release_ns" --wait --timeout 3m
check "the CRD is Established" \
  kubectl wait --for=condition=Established crd/whatsappwebhookpipelines.wapipe.dev --timeout=60s

# --- 2. the server's own validation, and the examples ------------------------------------
kubectl create namespace ct-schema >/dev/null
# pipeline_json JSON_PATCH: a valid pipeline merged with the patch, into $work/pipeline.json.
pipeline_json() {
  python3 - "$1" >"$work/pipeline.json" <<'PY'
import json, sys
base = {
    "apiVersion": "wapipe.dev/v1alpha1", "kind": "WhatsAppWebhookPipeline",
    "metadata": {"name": "broken", "namespace": "ct-schema"},
    "spec": {"kafka": {"bootstrapServers": "127.0.0.1:9092"},
             "ingress": {"appSecretRef": {"name": "s", "key": "k"},
                         "verifyTokenRef": {"name": "s", "key": "v"}},
             "worker": {}},
}
def merge(into, patch):
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
merge(base, json.loads(sys.argv[1]))
print(json.dumps(base))
PY
}
# refused MESSAGE JSON_PATCH: the valid pipeline changed by the patch is refused with MESSAGE.
refused() {
  local message="$1" out
  pipeline_json "$2"
  if out="$(kubectl apply -f "$work/pipeline.json" 2>&1)"; then
    echo "accepted: $out"
    kubectl delete -f "$work/pipeline.json" >/dev/null 2>&1 || true
    return 1
  fi
  echo "$out"
  grep -qF -- "$message" <<<"$out"
}
accepted() {
  pipeline_json '{}'
  kubectl apply --dry-run=server -f "$work/pipeline.json"
}
check "a valid pipeline is accepted (the base of the broken ones)" accepted
check "refused: CEL rule maxReplicas >= minReplicas" \
  refused "maxReplicas must be at least minReplicas" '{"spec": {"worker": {"minReplicas": 5, "maxReplicas": 2}}}'
check "refused: provider outside the enum" \
  refused 'Unsupported value: "telegram"' '{"spec": {"ingress": {"provider": "telegram", "appSecretRef": {"name": "s", "key": "k"}}}}'
check "refused: partitions below the minimum" \
  refused "should be greater than or equal to 1" '{"spec": {"topic": {"partitions": 0}}}'
check "refused: unknown field" \
  refused 'unknown field "spec.kafka.bootstrapServer"' '{"spec": {"kafka": {"bootstrapServers": "k:9092", "bootstrapServer": "typo"}}}'
check "refused: sink type outside the enum" \
  refused 'Unsupported value: "kafka"' '{"spec": {"worker": {"sink": {"type": "kafka"}}}}'
# The CEL rules of issue 23: what can be judged without Kafka is refused at once, with a message.
check "refused: sink type postgres without its Secret" \
  refused "sink type postgres needs sink.databaseUrlSecretRef" '{"spec": {"worker": {"sink": {"type": "postgres"}}}}'
check "refused: sink type http without its URL" \
  refused "sink type http needs sink.httpUrl" '{"spec": {"worker": {"sink": {"type": "http"}}}}'
check "refused: a sink URL under another sink type" \
  refused "sink.httpUrl is for sink type http only" '{"spec": {"worker": {"sink": {"type": "log", "httpUrl": "https://h.example/x"}}}}'
check "refused: a database Secret under another sink type" \
  refused "sink.databaseUrlSecretRef is for sink type postgres only" '{"spec": {"worker": {"sink": {"type": "log", "databaseUrlSecretRef": {"name": "d", "key": "u"}}}}}'
check "refused: httpUrl inline and from a Secret at once" \
  refused "sink.httpUrl and sink.httpUrlSecretRef exclude each other" '{"spec": {"worker": {"sink": {"type": "http", "httpUrl": "https://h.example/x", "httpUrlSecretRef": {"name": "h", "key": "url"}}}}}'
check "refused: an httpUrl Secret under another sink type" \
  refused "sink.httpUrlSecretRef is for sink type http only" '{"spec": {"worker": {"sink": {"type": "log", "httpUrlSecretRef": {"name": "h", "key": "url"}}}}}'
check "refused: httpUrl without a scheme" \
  refused "sink.httpUrl must be an absolute http:// or https:// URL" '{"spec": {"worker": {"sink": {"type": "http", "httpUrl": "hooks.example.com/whatsapp"}}}}'
check "refused: httpUrl with another scheme" \
  refused "sink.httpUrl must be an absolute http:// or https:// URL" '{"spec": {"worker": {"sink": {"type": "http", "httpUrl": "ftp://hooks.example.com/x"}}}}'
check "refused: provider meta without verifyTokenRef" \
  refused "provider meta needs ingress.verifyTokenRef" '{"spec": {"ingress": {"provider": "meta", "verifyTokenRef": null}}}'
check "refused: verifyTokenRef under provider wasender" \
  refused "ingress.verifyTokenRef is for provider meta only" '{"spec": {"ingress": {"provider": "wasender", "verifyTokenRef": {"name": "s", "key": "v"}}}}'
check "refused: SASL without TLS" \
  refused "kafka.sasl without kafka.tls would send the credentials" '{"spec": {"kafka": {"sasl": {"mechanism": "PLAIN", "username": "u", "passwordSecretRef": {"name": "s", "key": "p"}}}}}'
check "refused: topic and dead-letter topic of one name" \
  refused "topic.name and deadLetterTopic.name must differ" '{"spec": {"topic": {"name": "same"}, "deadLetterTopic": {"name": "same"}}}'
check "refused: a name that makes the Service name too long" \
  refused "metadata.name must be at most 55 characters" "{\"metadata\": {\"name\": \"$(printf 'a%.0s' {1..56})\"}}"
check "refused: a resource value that is no quantity" \
  refused "resources.requests values must be Kubernetes quantities" '{"spec": {"worker": {"resources": {"requests": {"cpu": "lots"}}}}}'
check "refused: a request above its limit" \
  refused "a resources.requests value must not exceed its limit" '{"spec": {"ingress": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}}}}'
# refused_update MESSAGE JSON_PATCH: a valid pipeline is created, then the merge patch is refused
# with MESSAGE (a transition rule: oldSelf is the pipeline as created).
refused_update() {
  local message="$1" out
  pipeline_json '{"metadata": {"name": "transition"}, "spec": {"topic": {"name": "t1", "partitions": 4, "replicationFactor": 1}, "worker": {"consumerGroup": "g1"}, "ingress": {"provider": "wasender", "verifyTokenRef": null}}}'
  kubectl apply -f "$work/pipeline.json" >/dev/null || return 1
  if out="$(kubectl -n ct-schema patch wapipe transition --type merge -p "$2" 2>&1)"; then
    echo "accepted: $out"
    kubectl -n ct-schema delete wapipe transition >/dev/null 2>&1 || true
    return 1
  fi
  kubectl -n ct-schema delete wapipe transition >/dev/null 2>&1 || true
  echo "$out"
  grep -qF -- "$message" <<<"$out"
}
check "refused on update: fewer partitions" \
  refused_update "topic.partitions can be increased but never decreased" '{"spec": {"topic": {"partitions": 2}}}'
check "refused on update: another topic name" \
  refused_update "topic.name cannot change" '{"spec": {"topic": {"name": "t2"}}}'
check "refused on update: another replication factor" \
  refused_update "topic.replicationFactor cannot change" '{"spec": {"topic": {"replicationFactor": 3}}}'
check "refused on update: another consumer group" \
  refused_update "worker.consumerGroup cannot change" '{"spec": {"worker": {"consumerGroup": "g2"}}}'
check "refused on update: another dead-letter topic name" \
  refused_update "deadLetterTopic.name cannot change" '{"spec": {"deadLetterTopic": {"name": "d2"}}}'
allowed_update() {
  pipeline_json '{"metadata": {"name": "transition"}, "spec": {"topic": {"name": "t1", "partitions": 4}, "ingress": {"provider": "wasender", "verifyTokenRef": null}}}'
  kubectl apply -f "$work/pipeline.json" >/dev/null || return 1
  kubectl -n ct-schema patch wapipe transition --type merge -p '{"spec": {"topic": {"partitions": 6}, "worker": {"maxReplicas": 6}}}'
  local rc=$?
  kubectl -n ct-schema delete wapipe transition >/dev/null 2>&1 || true
  return "$rc"
}
check "accepted on update: more partitions and other scaling bounds" allowed_update

apply_examples() {
  local file ns
  for file in examples/*.yaml; do
    # Namespaces the examples live in.
    while read -r ns; do
      [[ -z "$ns" ]] || kubectl get namespace "$ns" >/dev/null 2>&1 || kubectl create namespace "$ns"
    done < <(sed -n 's/^  namespace: *//p' "$file" | sort -u)
    if grep -q '^kind: Application$' "$file" && ! kubectl get crd applications.argoproj.io >/dev/null 2>&1; then
      # Argo CD's CRDs are not installed here (nothing to fetch them from): not applied.
      echo "SKIPPED $file: needs Argo CD's Application CRD"
      continue
    fi
    kubectl apply -f "$file" || return 1
  done
}
check "kubectl apply of every file in examples/" apply_examples
grep '^SKIPPED' "$work/check.log" || true

# --- 3. the operator under the chart's RBAC ---------------------------------------------
sa="$(kubectl -n "$release_ns" get serviceaccount -l "app.kubernetes.io/instance=$release" -o jsonpath='{.items[0].metadata.name}')"
[[ -n "$sa" ]] || fatal "the chart's ServiceAccount is missing"
sa_kubeconfig "$release_ns" "$sa" "$work/operator.kubeconfig"
as_operator() { kubectl --kubeconfig "$work/operator.kubeconfig" "$@"; }
# forbidden AS KUBECTL_ARGS...: the API server refuses the request made as AS (as_operator, as_scoped).
forbidden() {
  local out
  if out="$("$@" 2>&1)"; then
    echo "allowed: $out"
    return 1
  fi
  echo "$out"
  grep -qi forbidden <<<"$out"
}
check "the ServiceAccount may watch pipelines cluster-wide" as_operator auth can-i watch whatsappwebhookpipelines.wapipe.dev --all-namespaces
check "the ServiceAccount may patch Deployments" as_operator auth can-i patch deployments.apps -n default
check "refused under the chart's RBAC: creating a Secret" forbidden as_operator -n default create secret generic nope --from-literal=a=b
check "refused under the chart's RBAC: listing Pods" forbidden as_operator get pods -A
check "refused under the chart's RBAC: deleting a pipeline" forbidden as_operator -n ct-schema delete wapipe anything

log_file="$work/operator.log"
cargo build -q -p wapipe-operator --bin wapipe-operator
metrics_port="$(free_port)"
start_operator "$log_file" "$metrics_port" KUBECONFIG="$work/operator.kubeconfig" POD_NAMESPACE="$release_ns" \
  POD_NAME=host-operator-1 WAPIPE_LEASE_NAME=wapipe-operator-leader WAPIPE_CLEANUP_DEADLINE_SECONDS=45
holds_lease() {
  [[ "$(kubectl -n "$release_ns" get lease wapipe-operator-leader -o jsonpath='{.spec.holderIdentity}')" == host-operator-1 ]]
}
wait_lease() {
  local i
  for ((i = 0; i < 60; i++)); do
    holds_lease && return 0
    sleep 1
  done
  return 1
}
check "the host operator takes the chart's leader Lease" wait_lease

# --- 4. the operator's behaviour ---------------------------------------------------------
capture="$work/captured"
mkdir -p "$capture"
echo "cargo test -p wapipe-operator --test cluster (operator log: $log_file)"
if WAPIPE_TEST_CAPTURE_DIR="$capture" WAPIPE_TEST_KUBECTL="$bin/kubectl" \
  WAPIPE_TEST_OPERATOR_METRICS="http://127.0.0.1:$metrics_port/metrics" \
  cargo test -q -p wapipe-operator --test cluster -- --ignored --test-threads=1 --nocapture 2>&1 | tee "$work/cargo.log"; then
  passed=$((passed + 1))
  echo "ok   operator/tests/cluster.rs"
else
  failed=$((failed + 1))
  echo "FAIL operator/tests/cluster.rs"
fi
ownership_test() {
  WAPIPE_TEST_OPERATOR_METRICS="http://127.0.0.1:$metrics_port/metrics" \
    cargo test -q -p wapipe-operator --test cluster_ownership -- --ignored --test-threads=1
}
check "never deletes or takes what it does not own (operator/tests/cluster_ownership.rs): a replacement keeps the topic of one being deleted, same-named objects are neither taken nor deleted, the cleanup deadline holds with a pod stuck Terminating, claims by Kafka cluster id" ownership_test
loop_test() {
  cargo build -q -p wapipe-ingress -p wapipe-worker
  WAPIPE_TEST_BIN_DIR="$CARGO_TARGET_DIR/debug" cargo test -q -p wapipe-operator --test cluster_loop -- --ignored
}
check "the whole loop: ingress and workers run from the pod templates, rows in PostgreSQL, scaled on their lag" loop_test
rotation_test() {
  cargo build -q -p wapipe-ingress
  WAPIPE_TEST_BIN_DIR="$CARGO_TARGET_DIR/debug" \
    cargo test -q -p wapipe-operator --test cluster_rotation -- --ignored --nocapture
}
check "secret rotation on a real Secret under steady signed load: no answer but 200, then the old key gets 401, no rollout" rotation_test
grep -A6 '^rotation on the real Secret' "$work/check.log" || true
pause_test() {
  cargo build -q -p wapipe-worker
  WAPIPE_TEST_CAPTURE_DIR="$capture" WAPIPE_TEST_BIN_DIR="$CARGO_TARGET_DIR/debug" \
    cargo test -q -p wapipe-operator --test cluster_pause -- --include-ignored
}
check "pause: the annotation holds the workers (0 for a replay), Scaling=False Paused with the delay measured, replay into the emptied group, the scaler back when it goes" pause_test
check "the operator ran the whole suite under the chart's RBAC without a refusal" no_refusal "$log_file"

# Two operators and the Lease: this one stops first, the test starts its own two.
stop_operator
lease_test() {
  WAPIPE_TEST_OPERATOR_KUBECONFIG="$work/operator.kubeconfig" WAPIPE_TEST_OPERATOR_NAMESPACE="$release_ns" \
    cargo test -q -p wapipe-operator --test cluster_lease -- --ignored --test-threads=1
}
check "two operators: the Lease holder reconciles, the other takes over when it dies; a frozen leader steps down before the other starts; SIGTERM hands the Lease over" lease_test

# --- 7b. namespace-scoped mode ------------------------------------------------------------
scoped_release=wapipe-scoped
scoped_ns=wapipe-scoped-system
watched=ct-watched
unwatched=ct-unwatched
for ns in "$scoped_ns" "$watched" "$unwatched"; do
  kubectl create namespace "$ns" >/dev/null
done
for ns in "$watched" "$unwatched"; do
  kubectl -n "$ns" create secret generic meta --from-literal=app-secret=s3cret \
    --from-literal=verify-token=tok >/dev/null
done
check "helm install with watchNamespaces" \
  helm install "$scoped_release" "$chart" --namespace "$scoped_ns" --set replicaCount=1 \
  --set "watchNamespaces={$watched}" --set leaderElection.leaseName=wapipe-scoped-leader \
  --set rbac.aggregateToDefaultRoles=false --wait --timeout 3m
scoped_bindings() {
  local cluster_wide watched_binding
  cluster_wide="$(kubectl get clusterrolebinding -l "app.kubernetes.io/instance=$scoped_release" -o name)"
  watched_binding="$(kubectl -n "$watched" get rolebinding -l "app.kubernetes.io/instance=$scoped_release" -o name)"
  echo "cluster-wide: [$cluster_wide] in $watched: [$watched_binding]"
  [[ -z "$cluster_wide" && -n "$watched_binding" ]] &&
    [[ -z "$(kubectl -n "$unwatched" get rolebinding -l "app.kubernetes.io/instance=$scoped_release" -o name)" ]]
}
check "watchNamespaces: a RoleBinding in the watched namespace, none elsewhere, no ClusterRoleBinding" scoped_bindings
scoped_sa="$(kubectl -n "$scoped_ns" get serviceaccount -l "app.kubernetes.io/instance=$scoped_release" -o jsonpath='{.items[0].metadata.name}')"
sa_kubeconfig "$scoped_ns" "$scoped_sa" "$work/scoped.kubeconfig"
as_scoped() { kubectl --kubeconfig "$work/scoped.kubeconfig" "$@"; }
check "namespace-scoped: the ServiceAccount may watch pipelines and read Secrets in $watched" \
  bash -c "kubectl --kubeconfig '$work/scoped.kubeconfig' auth can-i watch whatsappwebhookpipelines.wapipe.dev -n $watched &&
    kubectl --kubeconfig '$work/scoped.kubeconfig' auth can-i get secrets -n $watched"
check "namespace-scoped: refused outside it: pipelines cluster-wide" forbidden as_scoped get whatsappwebhookpipelines.wapipe.dev -A
check "namespace-scoped: refused outside it: a Secret in $unwatched" forbidden as_scoped -n "$unwatched" get secret meta
scoped_log="$work/scoped-operator.log"
start_operator "$scoped_log" "$(free_port)" KUBECONFIG="$work/scoped.kubeconfig" POD_NAMESPACE="$scoped_ns" \
  POD_NAME=host-scoped-1 WAPIPE_LEASE_NAME=wapipe-scoped-leader WAPIPE_WATCH_NAMESPACES="$watched"
scoped_pipeline() {
  cat <<YAML
apiVersion: wapipe.dev/v1alpha1
kind: WhatsAppWebhookPipeline
metadata: {name: shop, namespace: $1}
spec:
  kafka: {bootstrapServers: "$WAPIPE_TEST_BROKERS"}
  topic: {name: ct-scoped-$1-$$, partitions: 2, replicationFactor: 1}
  deadLetterTopic: {name: ct-scoped-$1-$$.failed, partitions: 1, replicationFactor: 1}
  ingress:
    appSecretRef: {name: meta, key: app-secret}
    verifyTokenRef: {name: meta, key: verify-token}
  worker: {sink: {type: log}}
YAML
}
observed() { kubectl -n "$1" get wapipe shop -o jsonpath='{.status.observedGeneration}'; }
scoped_reconciles() {
  scoped_pipeline "$unwatched" | kubectl apply -f - || return 1
  scoped_pipeline "$watched" | kubectl apply -f - || return 1
  local i
  for ((i = 0; i < 90; i++)); do
    [[ -n "$(observed "$watched")" ]] && break
    sleep 1
  done
  echo "watched: observedGeneration=$(observed "$watched"), Ready=$(kubectl -n "$watched" get wapipe shop -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')"
  [[ "$(observed "$watched")" == 1 ]] || return 1
  kubectl -n "$watched" get deployment shop-worker >/dev/null || return 1
  # The unwatched one was applied first: had the operator seen it, it would have its status.
  sleep 5
  echo "unwatched: status=$(kubectl -n "$unwatched" get wapipe shop -o jsonpath='{.status}')"
  [[ -z "$(kubectl -n "$unwatched" get wapipe shop -o jsonpath='{.status}')" ]] || return 1
  ! kubectl -n "$unwatched" get deployment shop-worker 2>/dev/null
}
check "namespace-scoped: the operator reconciles the pipeline in $watched and never touches the one in $unwatched" scoped_reconciles
check "namespace-scoped: the operator logged no refusal" no_refusal "$scoped_log"
stop_operator
kubectl delete namespace "$watched" "$unwatched" --wait=false >/dev/null || true
helm uninstall "$scoped_release" --namespace "$scoped_ns" >/dev/null || true

# --- 5. Argo CD health check on the captured statuses --------------------------------------
health_on_captured() {
  local n
  n="$(find "$capture" -name '*.yaml' | wc -l)"
  ((n >= 4)) || {
    echo "only $n statuses captured"
    return 1
  }
  python3 tests/argocd/fixtures_to_lua.py "$capture" >"$work/captured.lua"
  lua5.4 tests/argocd/run.lua deploy/argocd/health.lua "$work/captured.lua"
}
check "Argo CD health check on statuses captured from this cluster" health_on_captured

if ((failed)); then
  echo "--- operator log (last 60 lines)"
  tail -n 60 "$log_file"
fi
echo "cluster suite: $passed passed, $failed failed"
((failed == 0))
