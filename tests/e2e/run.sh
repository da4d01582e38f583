#!/usr/bin/env bash
# End-to-end suite on a real Kubernetes cluster (kind):
#   kind cluster -> image built and loaded -> Kafka (KRaft) + PostgreSQL -> operator via
#   helm -> a pipeline -> signed webhooks through the ingress -> rows in PostgreSQL,
#   status conditions, a scale-up under injected lag and back down, cleanup on delete.
#
# Exit codes: 0 all checks passed; 1 a check failed; 77 SKIPPED (Docker, kind or helm
# missing; the reason is printed on a line starting with "SKIPPED:"). With
# E2E_REQUIRE=1 (set in CI workflows) a missing tool is a failure (exit 1) instead.
#
# Settings (environment):
#   E2E_CLUSTER         kind cluster name (default wapipe-e2e)
#   E2E_KEEP_CLUSTER=1  leave the cluster running afterwards
#   E2E_IMAGE           image to test (default wapipe:e2e); built from ./Dockerfile
#   E2E_SKIP_BUILD=1    do not build E2E_IMAGE (it must exist in the local Docker)
#   E2E_WEBHOOK_PATH    ingress path for Meta webhooks (default /webhook)
#   E2E_MESSAGES_TABLE  table holding one row per message (default wapipe_messages)
#   E2E_ARTIFACTS       directory for diagnostics on failure (default a temp dir)
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$repo/tests/e2e"
cluster="${E2E_CLUSTER:-wapipe-e2e}"
image="${E2E_IMAGE:-wapipe:e2e}"
webhook_path="${E2E_WEBHOOK_PATH:-/webhook}"
messages_table="${E2E_MESSAGES_TABLE:-wapipe_messages}"
artifacts="${E2E_ARTIFACTS:-$(mktemp -d)}"
# The port-forward log goes there before any failure: the folder must exist from the start.
mkdir -p "$artifacts"
local_port=18080

skip() {
  if [[ "${E2E_REQUIRE:-0}" == 1 ]]; then
    echo "e2e: FAILED: $1 (E2E_REQUIRE=1 forbids skipping)" >&2
    exit 1
  fi
  echo "SKIPPED: $1"
  echo "e2e: 0 passed, 0 failed, 1 skipped"
  exit 77
}

# shellcheck source=tests/e2e/lib.sh
source "$here/lib.sh"

# --- preflight: run for real or say why not ---------------------------------------
for tool in docker kind kubectl helm curl openssl jq; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed; the kind suite needs docker, kind, kubectl, helm, curl, openssl and jq"
done
docker info >/dev/null 2>&1 || skip "the Docker daemon is not reachable (docker info failed); kind cannot create a cluster"

pf_pid=""
diagnostics() {
  mkdir -p "$artifacts"
  echo "e2e: writing diagnostics to $artifacts" >&2
  kubectl get all,wapipe,lease,events -A -o wide >"$artifacts/objects.txt" 2>&1
  kubectl -n "$ns" get wapipe "$pipeline" -o yaml >"$artifacts/pipeline.yaml" 2>&1
  for n in "$operator_ns" "$ns" "$infra_ns"; do
    for pod in $(kubectl -n "$n" get pods -o name 2>/dev/null); do
      kubectl -n "$n" logs "$pod" --all-containers --tail=500 >"$artifacts/${n}_${pod#pod/}.log" 2>&1
      kubectl -n "$n" describe "$pod" >"$artifacts/${n}_${pod#pod/}.describe.txt" 2>&1
    done
  done
}

cleanup() {
  [[ -n "$pf_pid" ]] && kill "$pf_pid" 2>/dev/null
  if ((failed > 0)); then diagnostics; fi
  if [[ "${E2E_KEEP_CLUSTER:-0}" != 1 ]]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1
  fi
}

# fatal NAME: a step the rest depends on failed.
fatal() {
  fail "$1"
  echo "e2e: $passed passed, $failed failed"
  exit 1
}

# --- cluster, image, infrastructure --------------------------------------------------
log "kind cluster $cluster"
trap cleanup EXIT
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --config "$here/manifests/kind-config.yaml" --wait 180s ||
    fatal "create the kind cluster"
fi
kubectl config use-context "kind-$cluster" >/dev/null || fatal "select the kind context"

if [[ "${E2E_SKIP_BUILD:-0}" != 1 ]]; then
  log "docker build $image"
  docker build -t "$image" "$repo" || fatal "build the image"
fi
kind load docker-image "$image" --name "$cluster" || fatal "load the image into kind"
# The same image under a second tag: the workers' rolling update moves the pods to it.
docker tag "$image" "${image%:*}:e2e-next" || fatal "tag the image a second time"
kind load docker-image "${image%:*}:e2e-next" --name "$cluster" || fatal "load the second tag into kind"

log "Kafka and PostgreSQL"
kubectl apply -f "$here/manifests/kafka.yaml" -f "$here/manifests/postgres.yaml" || fatal "apply infrastructure"
kubectl -n "$infra_ns" rollout status deploy/kafka --timeout=300s || fatal "Kafka becomes ready"
kubectl -n "$infra_ns" rollout status deploy/postgres --timeout=300s || fatal "PostgreSQL becomes ready"

# --- operator -----------------------------------------------------------------------
log "helm install the operator"
if [[ -d "$repo/crds" ]] && compgen -G "$repo/crds/*.yaml" >/dev/null; then
  # The freshly generated CRD wins over the chart's copy (helm never updates CRDs).
  kubectl apply --server-side -f "$repo/crds/" || fatal "apply the CRD"
elif ! compgen -G "$repo/charts/wapipe-operator/crds/*.yaml" >/dev/null; then
  fatal "find the WhatsAppWebhookPipeline CRD (neither crds/ nor the chart's crds/ has it)"
fi
helm upgrade --install wapipe-operator "$repo/charts/wapipe-operator" \
  --namespace "$operator_ns" --create-namespace \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
  --set-string logLevel='info\,wapipe_operator=debug' \
  --wait --timeout 5m || fatal "helm install the operator"
check "operator Deployment is available" \
  kubectl -n "$operator_ns" wait deploy/wapipe-operator --for=condition=Available --timeout=120s
lease_holder() {
  [[ -n "$(kubectl -n "$operator_ns" get lease wapipe-operator-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)" ]]
}
check "one replica holds the leader Lease" retry 90 lease_holder
operator_uid() {
  [[ "$(kubectl -n "$operator_ns" get pods -l app.kubernetes.io/name=wapipe-operator \
    -o jsonpath='{.items[0].spec.securityContext.runAsUser}')" == 65532 ]]
}
check "operator pods run as uid 65532" operator_uid

# --- pipeline -----------------------------------------------------------------------
log "apply the pipeline"
kubectl apply -f "$here/manifests/pipeline.yaml" || fatal "apply the pipeline"
kubectl -n "$ns" wait "wapipe/$pipeline" --for=condition=Ready --timeout=300s || fatal "pipeline becomes Ready"
pass "pipeline becomes Ready"

observed_is_current() {
  local gen obs
  gen="$(kubectl -n "$ns" get wapipe "$pipeline" -o jsonpath='{.metadata.generation}')"
  obs="$(kubectl -n "$ns" get wapipe "$pipeline" -o jsonpath='{.status.observedGeneration}')"
  [[ -n "$gen" && "$gen" == "$obs" ]]
}
check "status.observedGeneration equals metadata.generation" observed_is_current
for condition in TopicReady IngressReady WorkersReady; do
  check "condition $condition is True" \
    kubectl -n "$ns" wait "wapipe/$pipeline" --for="condition=$condition" --timeout=60s
done
status_field() { kubectl -n "$ns" get wapipe "$pipeline" -o jsonpath="{.status.$1}"; }
partitions_are_4() { [[ "$(status_field partitions)" == 4 ]]; }
check "status.partitions is 4" partitions_are_4

no_tracking_on_children() {
  local out
  out="$(kubectl -n "$ns" get deploy,svc -l "wapipe.dev/pipeline=$pipeline" -o json)" || return 1
  [[ "$(jq '.items | length' <<<"$out")" -ge 3 ]] || return 1
  ! jq -e '.items[] | select((.metadata.annotations // {} | has("argocd.argoproj.io/tracking-id"))
                             or (.metadata.labels // {})["app.kubernetes.io/instance"] == "e2e-argocd-app")' \
    <<<"$out" >/dev/null
}
check "children carry no Argo CD tracking label or annotation" no_tracking_on_children

# --- signed webhooks ----------------------------------------------------------------
# The Service exposes port 80 (targetPort: the container's named port "http", 8080).
log "port-forward the ingress"
kubectl -n "$ns" port-forward "svc/$pipeline-ingress" "$local_port:80" >"$artifacts/port-forward.log" 2>&1 &
pf_pid=$!
url="http://127.0.0.1:$local_port$webhook_path"
ingress_up() { curl -s -o /dev/null "http://127.0.0.1:$local_port/"; }
retry 60 ingress_up || fatal "reach the ingress through port-forward"

handshake() {
  [[ "$(curl -sf "$url?hub.mode=subscribe&hub.verify_token=$verify_token&hub.challenge=1158201444")" == 1158201444 ]]
}
check "GET handshake echoes hub.challenge" handshake
# What faces the internet is only the webhook: the Service has one port, and health, readiness
# and metrics (on the pod's admin port) are not found through it.
service_has_only_the_webhook_port() {
  [[ "$(kubectl -n "$ns" get svc "$pipeline-ingress" -o jsonpath='{.spec.ports[*].targetPort}')" == http ]]
}
check "the ingress Service exposes only the webhook port" service_has_only_the_webhook_port
admin_paths_not_public() {
  local path
  for path in /metrics /readyz /healthz; do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$local_port$path")" == 404 ]] || return 1
  done
}
check "/metrics, /readyz and /healthz answer 404 through the Service" admin_paths_not_public

log "send signed webhooks"
unsigned_rejected() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url" -H 'Content-Type: application/json' \
    --data-binary "$(meta_payload 0 1)")" == 401 ]]
}
wrong_signature_rejected() {
  [[ "$(post "$(meta_payload 0 1)" "sha256=$(sign "$(meta_payload 1 1)")")" == 401 ]]
}
check "unsigned POST is rejected with 401" unsigned_rejected
check "wrongly signed POST is rejected with 401" wrong_signature_rejected
check "10 signed POSTs of 3 messages each are acknowledged with 200" send_batch 0 10 3
# The same POST again: the worker is idempotent by wamid.
check "a duplicate delivery is acknowledged with 200" send_batch 0 1 3

psql_query() {
  kubectl -n "$infra_ns" exec deploy/postgres -- psql -U wapipe -d wapipe -Atc "$1" 2>/dev/null
}
rows_are() { [[ "$(psql_query "SELECT count(*) FROM $messages_table")" == "$1" ]]; }
check "30 messages arrive in PostgreSQL exactly once" retry 180 rows_are 30
distinct_wamids() { [[ "$(psql_query "SELECT count(DISTINCT wamid) FROM $messages_table")" == 30 ]]; }
check "every wamid is stored once" distinct_wamids

# --- scale-up under injected lag (tests/e2e/lib.sh) -----------------------------------
work_dir="$artifacts/scenarios"
mkdir -p "$work_dir"
sink_stop() {
  kubectl -n "$infra_ns" scale deploy/postgres --replicas=0 >/dev/null &&
    kubectl -n "$infra_ns" wait pods -l app=postgres --for=delete --timeout=120s >/dev/null
}
sink_start() {
  kubectl -n "$infra_ns" scale deploy/postgres --replicas=1 >/dev/null &&
    kubectl -n "$infra_ns" rollout status deploy/postgres --timeout=180s >/dev/null
}
log "lag scales the worker pods up to the partition count (4) and back down"
# 300 events with lagPerReplica 20: desired = min(ceil(300/20), maxReplicas 4, partitions 4) = 4.
scenario_lag_scaling 100 4
check "all 330 messages are stored" retry 60 rows_are 330
dead_letters_empty() {
  local out
  out="$(kubectl -n "$infra_ns" exec deploy/kafka -- /opt/kafka/bin/kafka-get-offsets.sh \
    --bootstrap-server localhost:9092 --topic e2e_webhooks_failed 2>/dev/null)" || return 1
  # Lines are topic:partition:offset; every log-end offset must be 0.
  [[ -n "$out" ]] && ! grep -qv ':0$' <<<"$out"
}
check "a sink outage dead-letters nothing" dead_letters_empty
# wamids were numbered in sending order, so per user (user_key) the write order (seq)
# must follow them, across the rebalances of the scale-up.
in_order_per_user() {
  [[ "$(psql_query "SELECT count(*) FROM (SELECT wamid, lag(wamid) OVER (PARTITION BY user_key ORDER BY seq) AS prev FROM $messages_table) t WHERE prev > wamid")" == 0 ]]
}
check "messages of each user are written in the order they were sent" in_order_per_user
lag_drained() { [[ "$(status_field totalLag)" == 0 ]]; }
check "status lag drains to 0" retry 180 lag_drained
check "pipeline is Ready after the episode" \
  kubectl -n "$ns" wait "wapipe/$pipeline" --for=condition=Ready --timeout=60s

# --- rolling updates, memory, graceful delete (tests/e2e/lib.sh) ----------------------
skip_check "rolling update of the ingress under load" \
  "requests go through kubectl port-forward, which is pinned to one ingress pod; the node suite sends them through the Service"
scenario_rollout worker "${image%:*}:e2e-next" 100000
scenario_memory_burst 300000 2 8 1000 2000
scenario_memory_burst 320000 1 24 1000 2700

kill "$pf_pid" 2>/dev/null
pf_pid=""
wapipe_image="$image"
wapipe_image_pull_policy=Never
kafka_bootstrap="kafka.$infra_ns.svc.cluster.local:9092"
topic=e2e_webhooks_raw
group=e2e-postgres

# --- deletion -------------------------------------------------------------------------
# The Delete policy's removal of the topic is proved by operator/tests/cluster.rs; here the topic
# is retained so that the group's committed offsets can be read after the pods are gone.
scenario_graceful_delete 400000

echo
echo "e2e: $passed passed, $failed failed"
((failed == 0))
