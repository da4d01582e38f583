#!/usr/bin/env bash
# End-to-end suite on a real node of this machine (scripts/node.sh), the test body shared with
# the kind suite (tests/e2e/lib.sh): the image built here (scripts/image.sh), published with the
# chart to the local registry (scripts/publish.sh), `helm install oci://...`, the operator as a
# pod with in-cluster credentials taking its Lease, a pipeline whose ingress pods receive signed
# webhooks through the Service (from the host and from a pod) and whose worker pods write the
# rows to PostgreSQL. Kafka and a private PostgreSQL listen on the node's bridge address; the
# cluster reaches them by name through Services without selectors.
#
# Exit codes: 0 all checks passed; 1 a check failed; 77 SKIPPED (no Docker engine, no
# CAP_NET_ADMIN; the reason on a line starting with "SKIPPED:").
#
#   WAPIPE_STATE_DIR           default .wapipe/node-suite in the checkout
#   WAPIPE_CLUSTER_PORT_BASE   as for scripts/cluster.sh (default 26440); the node's ports follow
#   WAPIPE_NODE_KAFKA_PORT     the broker's port (default 19500)
#   NODE_KEEP=1                leave everything running afterwards
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export WAPIPE_STATE_DIR="${WAPIPE_STATE_DIR:-$repo/.wapipe/node-suite}"
subnet="${WAPIPE_NODE_SUBNET:-10.88.0}"
address="$subnet.1"
kafka_port="${WAPIPE_NODE_KAFKA_PORT:-19500}"
# Outside the checkout: its parent may be private to root (a `mktemp -d` clone), and the
# postgres user must reach the cluster's directory. One node suite runs at a time (one bridge).
pg_dir="${WAPIPE_NODE_PG_DIR:-/var/tmp/wapipe-node-suite-postgres}"
tag="node-$(date +%s)"
messages_table=wapipe_messages

skip() {
  echo "SKIPPED: $1"
  echo "node: 0 passed, 0 failed, 1 skipped"
  exit 77
}
# shellcheck source=tests/e2e/lib.sh
source "$repo/tests/e2e/lib.sh"

# --- preflight ---------------------------------------------------------------------------
for tool in dockerd containerd ctr iptables ip curl openssl jq initdb pg_ctl; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool is not installed (scripts/install-deps.sh)"
done
[[ -x /usr/lib/cni/bridge ]] || skip "the CNI plugins are not installed (containernetworking-plugins)"
if ! ip link add wapipe-probe0 type bridge 2>/dev/null; then
  skip "no CAP_NET_ADMIN: a bridge cannot be made here"
fi
ip link del wapipe-probe0

fatal() {
  fail "$1"
  echo "node: $passed passed, $failed failed"
  exit 1
}

pg() { (cd / && runuser -u postgres -- "$@"); }
pg_down() {
  [[ -f "$pg_dir/data/postmaster.pid" ]] && pg pg_ctl -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1
  rm -rf "$pg_dir"
}
started_docker=0
cleanup() {
  if [[ "${NODE_KEEP:-0}" == 1 ]]; then return; fi
  if ((failed > 0)) && [[ -n "${KUBECONFIG:-}" ]]; then
    kubectl get pods -A -o wide >&2
    for pod in $(kubectl -n "$ns" get pods -o name 2>/dev/null) $(kubectl -n "$operator_ns" get pods -o name 2>/dev/null); do
      echo "--- $pod" >&2
      kubectl -n "$ns" logs "$pod" --tail=30 >&2 2>/dev/null || kubectl -n "$operator_ns" logs "$pod" --tail=30 >&2 2>/dev/null
    done
  fi
  # Every step runs even when one before it fails, so nothing is left running for the next run.
  bash "$repo/scripts/node.sh" down || echo "node: the node did not come down cleanly" >&2
  WAPIPE_KAFKA_ADDRESS="$address" bash "$repo/scripts/kafka.sh" stop || echo "node: Kafka did not stop" >&2
  rm -rf "$WAPIPE_STATE_DIR/kafka"
  pg_down || echo "node: PostgreSQL did not stop" >&2
  if ((started_docker)); then bash "$repo/scripts/docker.sh" stop || echo "node: dockerd did not stop" >&2; fi
}
trap cleanup EXIT

# --- image, node, registry ------------------------------------------------------------------
log "Docker engine and the image"
if ! bash "$repo/scripts/docker.sh" status >/dev/null 2>&1; then
  bash "$repo/scripts/docker.sh" start >/dev/null || skip "dockerd does not start here (see /var/cache/wapipe/docker/dockerd.log)"
  started_docker=1
fi
bash "$repo/scripts/image.sh" build wapipe:node >/dev/null || fatal "build the image"
DOCKER_HOST="$(bash "$repo/scripts/docker.sh" status)"
/usr/bin/docker --host "$DOCKER_HOST" tag wapipe:node "wapipe:$tag"
/usr/bin/docker --host "$DOCKER_HOST" tag "debian:$(sed -n 's/^ARG DEBIAN_RELEASE=//p' "$repo/Dockerfile")-slim" "wapipe:$tag-client"

log "the node"
KUBECONFIG="$(bash "$repo/scripts/node.sh" up)" || fatal "bring the node up"
export KUBECONFIG
eval "$(bash "$repo/scripts/node.sh" env)"
pass "a real node joins the control plane and is Ready"

log "publish the image and the chart to the local registry"
mapfile -t published < <(bash "$repo/scripts/publish.sh" "$tag") || fatal "publish"
read -r chart chart_version <<<"${published[0]}"
repository="${published[1]}"
registry="${repository%%/*}"
/usr/bin/docker --host "$DOCKER_HOST" tag "wapipe:$tag-client" "$registry/wapipe/client:$tag"
/usr/bin/docker --host "$DOCKER_HOST" push -q "$registry/wapipe/client:$tag" >/dev/null || fatal "push the client image"
# The same image under a second tag: the rolling updates move the pods to it.
/usr/bin/docker --host "$DOCKER_HOST" tag "wapipe:$tag" "$repository:$tag-next"
/usr/bin/docker --host "$DOCKER_HOST" push -q "$repository:$tag-next" >/dev/null || fatal "push the image's second tag"

# --- Kafka and PostgreSQL on the bridge ------------------------------------------------------
log "Kafka and PostgreSQL on $address"
WAPIPE_KAFKA_ADDRESS="$address" bash "$repo/scripts/kafka.sh" start "$kafka_port" >/dev/null || fatal "start Kafka on $address"
pg_down
mkdir -p "$pg_dir"
chown postgres: "$pg_dir"
pg initdb -D "$pg_dir/data" -U postgres --auth trust >/dev/null || fatal "initdb"
sink_start() { pg pg_ctl -D "$pg_dir/data" -w -l "$pg_dir/log" -o "-h $address -p 5432 -k $pg_dir" start >/dev/null; }
sink_stop() { pg pg_ctl -D "$pg_dir/data" -m fast -w stop >/dev/null; }
sink_start || fatal "start PostgreSQL on $address"
echo "host all all $subnet.0/24 trust" >>"$pg_dir/data/pg_hba.conf"
pg pg_ctl -D "$pg_dir/data" reload >/dev/null
psql_query() { psql -h "$address" -U postgres -d "${2:-wapipe}" -Atqc "$1" 2>/dev/null; }
psql_query "CREATE ROLE wapipe LOGIN PASSWORD 'wapipe-e2e'" postgres >/dev/null
psql_query "CREATE DATABASE wapipe OWNER wapipe" postgres >/dev/null
[[ "$(psql_query 'select 1')" == 1 ]] || fatal "PostgreSQL answers on $address"

# Services without selectors: the names the pipeline uses resolve (CoreDNS) to ClusterIPs that
# kube-proxy maps to the host's listeners on the bridge.
kubectl apply -f - >/dev/null <<EOF || fatal "apply the infrastructure Services"
apiVersion: v1
kind: Namespace
metadata: {name: $infra_ns}
---
apiVersion: v1
kind: Service
metadata: {name: kafka, namespace: $infra_ns}
spec: {ports: [{name: kafka, port: 9092, targetPort: $kafka_port}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kafka-host, namespace: $infra_ns, labels: {kubernetes.io/service-name: kafka}}
addressType: IPv4
ports: [{name: kafka, port: $kafka_port, protocol: TCP}]
endpoints: [{addresses: ["$address"]}]
---
apiVersion: v1
kind: Service
metadata: {name: postgres, namespace: $infra_ns}
spec: {ports: [{name: postgres, port: 5432, targetPort: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: postgres-host, namespace: $infra_ns, labels: {kubernetes.io/service-name: postgres}}
addressType: IPv4
ports: [{name: postgres, port: 5432, protocol: TCP}]
endpoints: [{addresses: ["$address"]}]
EOF

# --- operator from the registry ----------------------------------------------------------------
log "helm install $chart from the registry"
kubectl apply --server-side -f "$repo/crds/" >/dev/null || fatal "apply the CRD"
helm install wapipe-operator "$chart" --version "$chart_version" --plain-http \
  --namespace "$operator_ns" --create-namespace \
  --set image.repository="$repository" --set image.tag="$tag" \
  --set-string logLevel='info\,wapipe_operator=debug' --wait --timeout 5m || fatal "helm install from oci://"
pass "helm install from the OCI registry"
check "operator Deployment is available" \
  kubectl -n "$operator_ns" wait deploy/wapipe-operator --for=condition=Available --timeout=120s
operator_on_node() {
  local out
  out="$(kubectl -n "$operator_ns" get pods -l app.kubernetes.io/name=wapipe-operator \
    -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.phase} {.status.containerStatuses[0].ready}{"\n"}{end}')"
  [[ -n "$out" ]] && ! grep -qv '^wapipe-node Running true$' <<<"$out"
}
check "operator pods run on the real node, Ready" operator_on_node
lease_holder() {
  local holder
  holder="$(kubectl -n "$operator_ns" get lease wapipe-operator-leader -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)"
  [[ -n "$holder" ]] && kubectl -n "$operator_ns" get pods -o name | grep -q "${holder%%_*}"
}
check "an operator pod holds the leader Lease (in-cluster credentials)" retry 90 lease_holder
running_uid() {
  local pod
  pod="$(kubectl -n "$operator_ns" get pods -l app.kubernetes.io/name=wapipe-operator -o jsonpath='{.items[0].metadata.name}')"
  ctr --address "$WAPIPE_STATE_DIR/node/containerd/containerd.sock" -n k8s.io containers ls -q >/dev/null &&
    [[ "$(kubectl -n "$operator_ns" get pod "$pod" -o jsonpath='{.spec.securityContext.runAsUser}')" == 65532 ]]
}
check "operator pods run as uid 65532" running_uid

# --- pipeline ---------------------------------------------------------------------------------
log "apply the pipeline"
kubectl apply -f "$repo/tests/e2e/manifests/pipeline.yaml" >/dev/null || fatal "apply the pipeline"
kubectl -n "$ns" wait "wapipe/$pipeline" --for=condition=Ready --timeout=300s || fatal "pipeline becomes Ready"
pass "pipeline becomes Ready (ingress and worker pods Ready on the node)"

cluster_ip="$(kubectl -n "$ns" get svc "$pipeline-ingress" -o jsonpath='{.spec.clusterIP}')"
url="http://$cluster_ip/webhook"
log "signed webhooks from the host to the Service ($url)"
ingress_up() { curl -s -o /dev/null --max-time 3 "http://$cluster_ip/"; }
retry 60 ingress_up || fatal "reach the ingress Service from the host"
handshake() {
  [[ "$(curl -sf "$url?hub.mode=subscribe&hub.verify_token=$verify_token&hub.challenge=1158201444")" == 1158201444 ]]
}
check "GET handshake through the Service echoes hub.challenge" handshake
unsigned_rejected() {
  [[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url" -H 'Content-Type: application/json' \
    --data-binary "$(meta_payload 0 1)")" == 401 ]]
}
check "unsigned POST is rejected with 401" unsigned_rejected
check "10 signed POSTs of 3 messages each from the host are acknowledged with 200" send_batch 0 10 3

log "signed webhooks from a pod, by the Service's DNS name"
body="$(meta_payload 30 3)"
signature="sha256=$(sign "$body")"
kubectl -n "$ns" delete pod webhook-client --ignore-not-found >/dev/null
# bash's /dev/tcp in the Debian base: the request is sent to $pipeline-ingress.$ns.svc, which
# only the cluster's DNS resolves.
# shellcheck disable=SC2016 # expanded by the pod's shell
kubectl -n "$ns" run webhook-client --restart=Never --image="$registry/wapipe/client:$tag" \
  --env="TARGET=$pipeline-ingress.$ns.svc.cluster.local" --env="BODY=$body" --env="SIG=$signature" \
  --command -- bash -c '
    exec 3<>"/dev/tcp/$TARGET/80" || exit 2
    printf "POST /webhook HTTP/1.1\r\nHost: ingress\r\nContent-Type: application/json\r\nX-Hub-Signature-256: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s" "$SIG" "${#BODY}" "$BODY" >&3
    head -n 1 <&3' >/dev/null || fail "start the client pod"
client_done() { [[ "$(kubectl -n "$ns" get pod webhook-client -o jsonpath='{.status.phase}')" == Succeeded ]]; }
client_got_200() { kubectl -n "$ns" logs webhook-client | grep -q '^HTTP/1.1 200'; }
check "the client pod finishes" retry 120 client_done
check "a signed POST from a pod to the Service's DNS name is acknowledged with 200" client_got_200

rows_are() { [[ "$(psql_query "SELECT count(*) FROM $messages_table")" == "$1" ]]; }
check "33 messages written by worker pods arrive in PostgreSQL" retry 180 rows_are 33
distinct_wamids() { [[ "$(psql_query "SELECT count(DISTINCT wamid) FROM $messages_table")" == 33 ]]; }
check "every wamid is stored once" distinct_wamids

# --- worker pods killed mid-stream --------------------------------------------------------------
worker_pod() {
  kubectl -n "$ns" get pods -l "app.kubernetes.io/component=worker,wapipe.dev/pipeline=$pipeline" \
    --field-selector status.phase=Running -o jsonpath='{.items[0].metadata.name}'
}
# burst_with KILL FIRST: 20 signed POSTs of 5 messages from FIRST, KILL run after the fifth; every
# POST must be acknowledged.
burst_with() {
  local kill="$1" first="$2" p code
  for ((p = 0; p < 20; p++)); do
    ((p == 5)) && "$kill"
    code="$(post "$(meta_payload $((first + p * 5)) 5)")"
    [[ "$code" == 200 ]] || post_refused "$code" || return 1
  done
}
force_delete_worker() {
  local pod
  pod="$(worker_pod)"
  echo "deleting $pod (--grace-period=0 --force)"
  kubectl -n "$ns" delete pod "$pod" --grace-period=0 --force >/dev/null 2>&1
}
runtime_kill_worker() {
  local pod id
  pod="$(worker_pod)"
  id="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  echo "SIGKILL to $pod's container ${id:13:12} through containerd"
  ctr --address "$WAPIPE_STATE_DIR/node/containerd/containerd.sock" -n k8s.io tasks kill -s KILL "${id#containerd://}" >/dev/null
}
log "a worker pod force-deleted mid-stream"
retry 120 worker_pod >/dev/null || fatal "a Running worker pod"
check "100 events acknowledged while a worker pod is force-deleted" burst_with force_delete_worker 100
check "every acknowledged event lands once (133 rows)" retry 240 rows_are 133
log "a worker container killed by the runtime mid-stream"
retry 120 worker_pod >/dev/null || fatal "a Running worker pod"
check "100 events acknowledged while a worker container is SIGKILLed" burst_with runtime_kill_worker 200
check "every acknowledged event lands once (233 rows)" retry 240 rows_are 233
distinct_233() { [[ "$(psql_query "SELECT count(DISTINCT wamid) FROM $messages_table")" == 233 ]]; }
check "no wamid is stored twice" distinct_233
restarted() {
  [[ "$(kubectl -n "$ns" get pods -l "app.kubernetes.io/component=worker" -o jsonpath='{.items[*].status.containerStatuses[0].restartCount}')" =~ [1-9] ]]
}
check "the killed container was restarted by the kubelet" retry 60 restarted

# --- the broker restarted under running pods ---------------------------------------------------
log "Kafka restarted under the running pods"
restarts_before="$(kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" \
  -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount}{" "}{end}')"
WAPIPE_KAFKA_ADDRESS="$address" bash "$repo/scripts/kafka.sh" stop
sleep 5
WAPIPE_KAFKA_ADDRESS="$address" bash "$repo/scripts/kafka.sh" start "$kafka_port" >/dev/null || fatal "restart Kafka"
accepted_again() { [[ "$(post "$(meta_payload 300 5)")" == 200 ]]; }
check "the ingress pods acknowledge again after the broker's restart" retry 120 accepted_again
check "10 more signed POSTs of 5 messages are acknowledged" send_batch 305 10 5
check "the worker pods write them: 288 rows" retry 240 rows_are 288
restarts_after="$(kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" \
  -o jsonpath='{range .items[*]}{.metadata.name}={.status.containerStatuses[0].restartCount}{" "}{end}')"
echo "restart counts before: $restarts_before"
echo "restart counts after:  $restarts_after"

# --- the scenarios of tests/e2e/lib.sh --------------------------------------------------------
work_dir="$WAPIPE_STATE_DIR/scenarios"
rm -rf "$work_dir"
mkdir -p "$work_dir"
wapipe_image="$repository:$tag"
kafka_bootstrap="kafka.$infra_ns.svc.cluster.local:9092"
topic=e2e_webhooks_raw
group=e2e-postgres

log "lag scales real worker pods up to the partition count and back down"
scenario_lag_scaling 400 4

scenario_rollout ingress "$repository:$tag-next" 100000
scenario_rollout worker "$repository:$tag-next" 200000

# Each pod's memory cgroup (cgroup v1, cgroupfs driver): the peak is reset before the burst, so
# max_usage_in_bytes afterwards is the burst's peak usage (page cache included); the working set
# now is usage minus inactive file pages, as the kubelet counts it.
pod_cgroups() {
  kubectl -n "$ns" get pods -l "wapipe.dev/pipeline=$pipeline" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.uid}{"\n"}{end}' |
    while read -r name uid; do
      echo "$name $(find /sys/fs/cgroup/memory/kubepods -maxdepth 2 -type d -name "pod$uid" 2>/dev/null | head -n 1)"
    done
}
pod_peak_reset() {
  local name dir
  while read -r name dir; do
    [[ -n "$dir" ]] && echo 0 >"$dir/memory.max_usage_in_bytes"
  done < <(pod_cgroups)
}
pod_peak_hook() {
  local name dir usage inactive limit
  echo "per pod from its memory cgroup (peak since the burst began, limit):"
  while read -r name dir; do
    [[ -n "$dir" ]] || continue
    usage="$(cat "$dir/memory.usage_in_bytes")"
    inactive="$(awk '$1 == "total_inactive_file" {print $2}' "$dir/memory.stat")"
    limit="$(cat "$dir/memory.limit_in_bytes")"
    awk -v n="$name" -v w="$((usage - inactive))" -v p="$(cat "$dir/memory.max_usage_in_bytes")" -v l="$limit" \
      'BEGIN {printf "  %s: peak usage %.1f MiB, working set now %.1f MiB, limit %s\n", n, p / 1048576, w / 1048576, (l > 2^50 ? "none" : sprintf("%.0f MiB", l / 1048576))}'
  done < <(pod_cgroups)
}
pod_peak_reset
scenario_memory_burst 300000 2 8 1000 2000
# Heavier than the ingress may hold at its 128Mi limit (24 x 2.8 MB OOM-killed it before the
# byte budget): what does not fit is shed with 503 and lands on retry.
pod_peak_reset
scenario_memory_burst 320000 1 24 1000 2700

scenario_graceful_delete 400000

echo
echo "node: $passed passed, $failed failed"
((failed == 0))
