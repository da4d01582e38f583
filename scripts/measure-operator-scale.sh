#!/usr/bin/env bash
# The operator with 50 pipelines on the real control plane (issue 12, item 4): peak memory and
# API requests per minute, for one or more operator binaries in the same run, one after the other
# on the same cluster and broker.
#
#   scripts/measure-operator-scale.sh [LABEL=BINARY ...]
#     default: after=$CARGO_TARGET_DIR/release/wapipe-operator (built here if missing)
#     e.g.     before=/tmp/before/release/wapipe-operator after=target/release/wapipe-operator
#
#   WAPIPE_MEASURE_PIPELINES   pipelines (default 50), spread over 5 namespaces
#   WAPIPE_MEASURE_SETTLE      seconds each operator runs after the pipelines are applied (default 150)
#   WAPIPE_MEASURE_STEADY      of those, the last seconds counted as steady state (default 90)
#   WAPIPE_MEASURE_PORT_BASE   cluster ports (default 28440; the broker uses base + 50)
#
# Starts its own control plane (scripts/cluster.sh with the audit log on, 4 kwok nodes) and broker
# (scripts/kafka.sh) in a temporary state dir, stops both and removes the dir on exit. Each
# operator runs as a host process with a ServiceAccount token, so its requests are the audit
# log's entries of that user: counted exactly, by verb and resource, whatever else the cluster
# does. Memory is the process's VmHWM (peak resident set). Each operator starts on pipelines it
# has never seen (fresh namespaces), as after a rollout; the previous operator's namespaces are
# deleted before the next one starts. Bounded: every wait has a deadline and
# the whole run is under `timeout` (25 min).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=scripts/lib/kube.sh
source scripts/lib/kube.sh
if [[ -z "${WAPIPE_MEASURE_TIMED:-}" ]]; then
  WAPIPE_MEASURE_TIMED=1 exec timeout --foreground 25m bash "$0" "$@"
fi

pipelines="${WAPIPE_MEASURE_PIPELINES:-50}"
settle="${WAPIPE_MEASURE_SETTLE:-150}"
steady="${WAPIPE_MEASURE_STEADY:-90}"
base="${WAPIPE_MEASURE_PORT_BASE:-28440}"
broker_port=$((base + 50))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

operators=("$@")
if ((${#operators[@]} == 0)); then
  cargo build -q --release -p wapipe-operator --bin wapipe-operator
  operators=("after=$CARGO_TARGET_DIR/release/wapipe-operator")
fi
for pair in "${operators[@]}"; do
  [[ "$pair" == *=* && -x "${pair#*=}" ]] || {
    echo "measure: not LABEL=EXECUTABLE: $pair" >&2
    exit 2
  }
done

state="$(mktemp -d -t wapipe-measure.XXXXXX)"
export WAPIPE_STATE_DIR="$state" WAPIPE_CLUSTER_PORT_BASE="$base" WAPIPE_CLUSTER_NODES=4 WAPIPE_CLUSTER_AUDIT=1
operator_pid=""
finish() {
  if [[ -n "$operator_pid" ]]; then
    kill "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
  bash scripts/kafka.sh stop >/dev/null 2>&1 || true
  bash scripts/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap finish EXIT
trap 'exit 130' INT TERM

echo "measure: control plane and broker (state in $state)"
kubeconfig="$(bash scripts/cluster.sh up)"
brokers="$(bash scripts/kafka.sh start "$broker_port")"
bin="$(bash scripts/build-control-plane.sh --print)"
export PATH="$bin:$PATH" KUBECONFIG="$kubeconfig"
audit="$state/cluster/logs/audit.log"

kubectl apply -f crds/ >/dev/null
kubectl create namespace wapipe-measure >/dev/null
kubectl -n wapipe-measure create serviceaccount operator >/dev/null
kubectl create clusterrolebinding wapipe-measure-operator --clusterrole=cluster-admin \
  --serviceaccount=wapipe-measure:operator >/dev/null
sa_kubeconfig wapipe-measure operator "$state/operator.kubeconfig"
user="system:serviceaccount:wapipe-measure:operator"

# pipelines LABEL: $pipelines pipelines (Retain, defaults otherwise) in 5 fresh namespaces.
apply_pipelines() {
  local label="$1" i ns
  for ((i = 0; i < 5; i++)); do
    ns="m-$label-$i"
    kubectl create namespace "$ns" >/dev/null
    kubectl -n "$ns" create secret generic meta --from-literal=app-secret=s3cret \
      --from-literal=verify-token=tok >/dev/null
  done
  for ((i = 0; i < pipelines; i++)); do
    ns="m-$label-$((i % 5))"
    cat <<EOF
---
apiVersion: wapipe.dev/v1alpha1
kind: WhatsAppWebhookPipeline
metadata: {name: p$i, namespace: $ns}
spec:
  kafka: {bootstrapServers: "$brokers"}
  topic: {name: m-$label-$i, partitions: 2, replicationFactor: 1}
  deadLetterTopic: {name: m-$label-$i.failed, partitions: 1, replicationFactor: 1}
  ingress:
    provider: meta
    replicas: 1
    appSecretRef: {name: meta, key: app-secret}
    verifyTokenRef: {name: meta, key: verify-token}
  worker: {minReplicas: 1, maxReplicas: 2, sink: {type: log}}
  deletionPolicy: Retain
EOF
  done | kubectl apply -f - >/dev/null
}

# ready LABEL: how many of the label's pipelines are Ready=True.
ready() {
  kubectl get wapipe -A -o json | python3 -c '
import json, sys
label = sys.argv[1]
items = json.load(sys.stdin)["items"]
print(sum(1 for p in items if p["metadata"]["namespace"].startswith("m-" + label + "-")
          and any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))))
' "$1"
}

results=()
for pair in "${operators[@]}"; do
  label="${pair%%=*}"
  binary="${pair#*=}"
  metrics_port=$((base + 40))
  KUBECONFIG="$state/operator.kubeconfig" POD_NAMESPACE=wapipe-measure POD_NAME="measure-$label" \
    WAPIPE_OPERATOR_LISTEN="127.0.0.1:$metrics_port" WAPIPE_IMAGE=ghcr.io/wapipe/wapipe:measure \
    WAPIPE_LEASE_NAME="measure-$label" RUST_LOG=warn \
    "$binary" >"$state/operator-$label.log" 2>&1 &
  operator_pid=$!
  start="$(date +%s)"
  apply_pipelines "$label"
  applied="$(date +%s)"
  sleep "$settle"
  end="$(date +%s)"
  n_ready="$(ready "$label")"
  rss_kib="$(awk '/^VmHWM/ {print $2}' "/proc/$operator_pid/status")"
  kill "$operator_pid"
  wait "$operator_pid" 2>/dev/null || true
  operator_pid=""
  summary="$(python3 - "$audit" "$user" "$start" "$applied" "$end" "$steady" <<'PY'
import collections, datetime, json, sys
path, user, start, applied, end, steady = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
seen = {}
for line in open(path):
    event = json.loads(line)
    if event.get("user", {}).get("username") != user:
        continue
    at = datetime.datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
    if start <= at <= end:
        ref = event.get("objectRef", {})
        seen[event["auditID"]] = (at, event["verb"], ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else ""))
steady_from = end - steady
total = len(seen)
in_steady = [v for v in seen.values() if v[0] >= steady_from]
by = collections.Counter((verb, resource) for _, verb, resource in in_steady)
top = ", ".join(f"{verb} {resource} {count * 60 / steady:.0f}" for (verb, resource), count in by.most_common(6))
status_writes = by[("patch", "whatsappwebhookpipelines/status")] + by[("update", "whatsappwebhookpipelines/status")]
print(f"{total * 60 / (end - start):.0f}\t{len(in_steady) * 60 / steady:.0f}\t{status_writes * 60 / steady:.0f}\t{top}")
PY
)"
  IFS=$'\t' read -r per_min_all per_min_steady status_per_min top <<<"$summary"
  # The next operator must see only its own pipelines (Retain: no finalizer holds these).
  for ((i = 0; i < 5; i++)); do
    kubectl delete namespace "m-$label-$i" --wait=false >/dev/null
  done
  for ((i = 0; i < 5; i++)); do
    kubectl wait --for=delete "namespace/m-$label-$i" --timeout=120s >/dev/null
  done
  results+=("$(printf '%-8s %10s %14s %18s %20s %8s   %s' "$label" "$((rss_kib / 1024)) MiB" "$per_min_all" "$per_min_steady" "$status_per_min" "$n_ready/$pipelines" "$top")")
  echo "measure: $label done ($((end - start)) s: $((applied - start)) s applying, $settle s settling)"
done

echo
echo "operator with $pipelines pipelines, ${settle} s after applying them (steady state: the last ${steady} s)"
printf '%-8s %10s %14s %18s %20s %8s   %s\n' operator "peak RSS" "requests/min" "steady req/min" "steady status w/min" Ready "steady state by verb and resource (per min)"
printf '%s\n' "${results[@]}"
