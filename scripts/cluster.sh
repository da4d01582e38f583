#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, without containers: etcd, kube-apiserver (token
# auth, RBAC), kube-controller-manager, kube-scheduler and kwok with fake nodes whose pods
# become Ready (they run nothing). Binaries come from scripts/build-control-plane.sh.
#
#   scripts/cluster.sh up       start; ready once the nodes are Ready and a 2-replica Deployment is 2/2
#   scripts/cluster.sh down     stop every process, free every port, remove the etcd data
#   scripts/cluster.sh status   exit 0 when every process runs and /readyz answers ok
#   scripts/cluster.sh env      print `export KUBECONFIG=... PATH=...` for a shell (eval it)
#
#   WAPIPE_STATE_DIR            state dir (default .wapipe in the checkout); the cluster uses cluster/ in it
#   WAPIPE_CLUSTER_PORT_BASE    first of the six loopback ports (default 26440): etcd client, etcd
#                               peer, apiserver, controller-manager, scheduler, kwok
#   WAPIPE_CLUSTER_NODES        number of fake nodes (default 2)
#   WAPIPE_CLUSTER_ADDRESS      address kube-apiserver binds to and advertises (default 127.0.0.1,
#                               advertising the host's first address); scripts/node.sh passes its
#                               bridge's address so that pods reach the API server there
#   WAPIPE_CLUSTER_AUDIT        1: kube-apiserver writes every request (metadata only: user, user
#                               agent, verb, resource) to logs/audit.log, for counting a client's
#                               requests (scripts/measure-operator-scale.sh); default off
#
# Files in the state dir: kubeconfig (admin token, system:masters), bin -> the binaries, logs/*.log.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
# shellcheck source=scripts/lib/state.sh
source "$repo/scripts/lib/state.sh"
state="$(state_dir cluster)"
base="${WAPIPE_CLUSTER_PORT_BASE:-26440}"
nodes="${WAPIPE_CLUSTER_NODES:-2}"
address="${WAPIPE_CLUSTER_ADDRESS:-127.0.0.1}"
etcd_port=$base
etcd_peer_port=$((base + 1))
api_port=$((base + 2))
kcm_port=$((base + 3))
sched_port=$((base + 4))
kwok_port=$((base + 5))
ports=("$etcd_port" "$etcd_peer_port" "$api_port" "$kcm_port" "$sched_port" "$kwok_port")
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
kubeconfig="$state/kubeconfig"

# shellcheck source=scripts/lib/log.sh
source "$repo/scripts/lib/log.sh"

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
pid_of() { proc_pid "$state/run/$1.pid"; }
alive() { pid_of "$1" >/dev/null; }
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

# start NAME BINARY ARGS...: runs a component in its own process group, logging to logs/NAME.log.
start() {
  local name="$1"
  shift
  setsid "$@" >>"$state/logs/$name.log" 2>&1 </dev/null &
  proc_record "$!" "$state/run/$name.pid"
}

# wait_for SECONDS WHAT CMD...: polls CMD every second; fails with WHAT after the deadline.
wait_for() {
  local seconds="$1" what="$2" i
  shift 2
  for ((i = 0; i < seconds; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 1
  done
  die "$what not reached within ${seconds}s; logs in $state/logs/"
}

readyz() { curl -ksf --max-time 3 -H "Authorization: Bearer $(cat "$state/run/admin.token")" "https://$address:$api_port/readyz"; }
k() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

stop_all() {
  local i name
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    name="${components[i]}"
    proc_stop "$state/run/$name.pid" 10
  done
  for port in "${ports[@]}"; do
    for ((t = 0; t < 20; t++)); do
      port_busy "$port" || break
      sleep 0.5
    done
    port_busy "$port" && die "port $port is still in use after down"
  done
  rm -rf "$state/etcd" "$state/run"
}

case "$cmd" in
  up)
    bin_dir="$(bash "$repo/scripts/build-control-plane.sh")"
    bin="$state/bin"
    if alive kube-apiserver && readyz >/dev/null 2>&1; then
      log "already up ($kubeconfig)"
      echo "$kubeconfig"
      exit 0
    fi
    mkdir -p "$state/logs"
    stop_all
    for port in "${ports[@]}"; do
      port_busy "$port" && die "port $port is in use (set WAPIPE_CLUSTER_PORT_BASE)"
    done
    mkdir -p "$state/run" "$state/etcd" "$state/logs"
    ln -sfn "$bin_dir" "$bin"
    : >"$state/logs/etcd.log"
    for name in "${components[@]}"; do : >"$state/logs/$name.log"; done

    # The apiserver advertises a non-loopback address (with a loopback bind and no explicit
    # address it looks for a default route); the kubernetes Service endpoint gets it.
    host_ip="$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+\.' | grep -v '^127\.' | head -n1 || true)"
    [[ -n "$host_ip" ]] || host_ip=10.255.255.1
    [[ "$address" == 127.* ]] || host_ip="$address"
    run="$state/run"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$run/admin.token"
    token="$(cat "$run/admin.token")"
    printf '%s,admin,admin,"system:masters"\n' "$token" >"$run/tokens.csv"
    openssl genrsa -out "$run/sa.key" 2048 2>/dev/null
    openssl rsa -in "$run/sa.key" -pubout -out "$run/sa.pub" 2>/dev/null
    cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: wapipe
    cluster:
      server: https://$address:$api_port
      insecure-skip-tls-verify: true
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: wapipe
    context:
      cluster: wapipe
      user: admin
      namespace: default
current-context: wapipe
EOF
    chmod 600 "$kubeconfig"

    log "etcd on 127.0.0.1:$etcd_port"
    start etcd "$bin/etcd" --name wapipe --data-dir "$state/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
      --initial-cluster "wapipe=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync --quota-backend-bytes 2147483648 \
      --log-level warn
    wait_for 60 "etcd health" curl -sf "http://127.0.0.1:$etcd_port/health"

    audit_args=()
    if [[ "${WAPIPE_CLUSTER_AUDIT:-0}" == 1 ]]; then
      printf '%s\n' 'apiVersion: audit.k8s.io/v1' 'kind: Policy' 'omitStages: [RequestReceived]' \
        'rules: [{level: Metadata}]' >"$run/audit-policy.yaml"
      audit_args=(--audit-policy-file "$run/audit-policy.yaml" --audit-log-path "$state/logs/audit.log"
        --audit-log-format json --audit-log-mode blocking)
    fi
    log "kube-apiserver on https://$address:$api_port"
    # InternalIP first: kubectl logs/exec reach a real node's kubelet at its address, not by a
    # node name no resolver knows.
    start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
      --bind-address "$address" --kubelet-preferred-address-types InternalIP --secure-port "$api_port" --advertise-address "$host_ip" \
      --cert-dir "$run/pki" --token-auth-file "$run/tokens.csv" --authorization-mode Node,RBAC \
      --allow-privileged=true --service-cluster-ip-range 10.96.0.0/16 \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$run/sa.pub" --service-account-signing-key-file "$run/sa.key" \
      --enable-priority-and-fairness=false --profiling=false "${audit_args[@]}"
    wait_for 120 "kube-apiserver /readyz" readyz

    log "kube-controller-manager and kube-scheduler"
    start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$kubeconfig" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port "$kcm_port" \
      --service-account-private-key-file "$run/sa.key" --root-ca-file "$run/pki/apiserver.crt" \
      --authorization-always-allow-paths /healthz,/readyz,/livez,/metrics --profiling=false \
      --node-monitor-grace-period 60s
    start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$kubeconfig" \
      --leader-elect=false --bind-address 127.0.0.1 --secure-port "$sched_port" --profiling=false

    log "kwok with $nodes fake node(s)"
    # Only the fake nodes (their annotation): a real node's pods and Lease are its kubelet's.
    start kwok "$bin/kwok" --kubeconfig "$kubeconfig" --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --config "$bin_dir/../stages.yaml" --node-lease-duration-seconds 40 --cidr 10.244.0.0/16 \
      --node-ip "$host_ip" --server-address "127.0.0.1:$kwok_port"
    wait_for 60 "the default ServiceAccount" k -n default get serviceaccount default
    for ((n = 0; n < nodes; n++)); do
      k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$n
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$n
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec: {}
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
    done
    k wait --for=condition=Ready node --all --timeout=120s >/dev/null ||
      die "nodes not Ready; logs in $state/logs/"

    # Smoke: the whole path from Deployment to ReplicaSet to scheduled, Ready pods.
    k create namespace wapipe-smoke >/dev/null
    k -n wapipe-smoke create deployment smoke --image=registry.k8s.io/pause:3.10 --replicas=2 >/dev/null
    k -n wapipe-smoke rollout status deployment/smoke --timeout=120s >/dev/null ||
      die "the smoke Deployment did not reach 2/2; logs in $state/logs/"
    ready="$(k -n wapipe-smoke get deployment smoke -o jsonpath='{.status.readyReplicas}')"
    [[ "$ready" == 2 ]] || die "smoke Deployment: $ready of 2 ready"
    k delete namespace wapipe-smoke --wait=false >/dev/null
    log "up: $nodes node(s) Ready, a 2-replica Deployment reached 2/2; KUBECONFIG=$kubeconfig"
    echo "$kubeconfig"
    ;;
  down)
    [[ -d "$state" ]] || exit 0
    stop_all
    log "down: no process left, ports ${ports[*]} free"
    ;;
  status)
    ok=1
    for name in "${components[@]}"; do
      if alive "$name"; then echo "$name: running (pid $(pid_of "$name"))"; else
        echo "$name: not running"
        ok=0
      fi
    done
    if alive kube-apiserver && readyz >/dev/null 2>&1; then echo "kube-apiserver: /readyz ok"; else
      echo "kube-apiserver: /readyz not ok"
      ok=0
    fi
    ((ok)) && echo "KUBECONFIG=$kubeconfig"
    ((ok))
    ;;
  env)
    echo "export KUBECONFIG='$kubeconfig' PATH='$state/bin':\"\$PATH\""
    ;;
  *)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
