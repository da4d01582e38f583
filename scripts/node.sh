#!/usr/bin/env bash
# A real node on this machine, joined to the control plane of scripts/cluster.sh: a bridge the
# script creates, Debian's containerd (a separate instance: own root, state, socket) with the CRI
# plugin and Debian's CNI plugins, kubelet and kube-proxy (iptables mode) built by
# scripts/build-node.sh, CoreDNS answering *.svc names on the bridge's address, and the local
# registry (scripts/registry.sh) the node pulls from, the sandbox image pushed there.
#
#   scripts/node.sh up     bridge, registry, control plane (its API server on the bridge's
#                          address), then the node; returns once the node is Ready; prints the
#                          kubeconfig
#   scripts/node.sh down   the node's pods deleted, the node deleted, every process stopped, the
#                          control plane and registry down, the host as before (iptables rules,
#                          route, bridge, sysctls, mounts, cgroups)
#   scripts/node.sh env    print `export KUBECONFIG=... PATH=...` for a shell (eval it)
#
#   WAPIPE_STATE_DIR            state dir (default .wapipe in the checkout); the node uses node/
#   WAPIPE_NODE_BRIDGE          bridge name (default wapipe0); WAPIPE_NODE_SUBNET its /24 (default
#                               10.88.0): the bridge is .1, pods get .10 to .250
#   WAPIPE_CLUSTER_PORT_BASE    as for cluster.sh; the node's own ports follow: kubelet +6,
#                               kubelet healthz +7, kube-proxy healthz +8 and metrics +9,
#                               CoreDNS health +11, the registry +10 (WAPIPE_REGISTRY_PORT)
#
# Network rule: pods reach the bridge, each other and the Service range; forwarded traffic from
# the bridge towards any other interface is dropped, and nothing is masqueraded.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
# shellcheck source=scripts/lib/state.sh
source "$repo/scripts/lib/state.sh"
# Exported: the registry and control plane it starts keep their state beside the node's.
WAPIPE_STATE_DIR="$(state_root)"
export WAPIPE_STATE_DIR
state="$WAPIPE_STATE_DIR/node"
bridge="${WAPIPE_NODE_BRIDGE:-wapipe0}"
subnet="${WAPIPE_NODE_SUBNET:-10.88.0}"
address="$subnet.1"
base="${WAPIPE_CLUSTER_PORT_BASE:-26440}"
export WAPIPE_REGISTRY_PORT="${WAPIPE_REGISTRY_PORT:-$((base + 10))}"
service_range=10.96.0.0/16
node_name=wapipe-node
sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.conf.all.route_localnet)
run="$state/run"

# shellcheck source=scripts/lib/log.sh
source "$repo/scripts/lib/log.sh"

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
# shellcheck source=scripts/lib/netfilter.sh
source "$repo/scripts/lib/netfilter.sh"
alive() { proc_pid "$run/$1.pid" >/dev/null; }
start() {
  local name="$1"
  shift
  proc_spawn "$run/$name.pid" "$state/logs/$name.log" "$@"
}
k() { "$cp_bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
wait_for() {
  local seconds="$1" what="$2" i
  shift 2
  for ((i = 0; i < seconds * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "$what not reached within ${seconds}s; logs in $state/logs/"
}

# The rules this script adds, one per line (iptables arguments after the table and -I/-D).
rules() {
  cat <<EOF
filter FORWARD -i $bridge -o $bridge -j ACCEPT -m comment --comment wapipe-node
filter FORWARD -i $bridge ! -o $bridge -j DROP -m comment --comment wapipe-node
filter FORWARD -o $bridge ! -i $bridge -j DROP -m comment --comment wapipe-node
EOF
}
rules_add() {
  local table chain rest
  while read -r table chain rest; do
    # shellcheck disable=SC2086 # the rule's words
    iptables -t "$table" -C "$chain" $rest 2>/dev/null || iptables -t "$table" -I "$chain" $rest
  done < <(rules)
}
rules_remove() {
  local table chain rest
  while read -r table chain rest; do
    # shellcheck disable=SC2086 # the rule's words
    while iptables -t "$table" -D "$chain" $rest 2>/dev/null; do :; done
  done < <(rules)
}

write_configs() {
  mkdir -p "$state/containerd/certs.d/127.0.0.1:$WAPIPE_REGISTRY_PORT" "$state/cni/net.d" "$state/cni/cache" \
    "$state/kubelet" "$state/pki" "$state/coredns"
  cat >"$state/containerd/config.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
[grpc]
  address = "$state/containerd/containerd.sock"
[ttrpc]
  address = "$state/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
      Root = "$state/runc"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/containerd/certs.d"
EOF
  cat >"$state/containerd/certs.d/127.0.0.1:$WAPIPE_REGISTRY_PORT/hosts.toml" <<EOF
server = "http://127.0.0.1:$WAPIPE_REGISTRY_PORT"
[host."http://127.0.0.1:$WAPIPE_REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$state/cni/net.d/10-wapipe.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "wapipe",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$state/cni/ipam",
        "ranges": [[{"subnet": "$subnet.0/24", "rangeStart": "$subnet.10", "rangeEnd": "$subnet.250", "gateway": "$address"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Pods ask CoreDNS on the bridge only; the node's own resolv.conf names nothing else.
  printf 'nameserver %s\n' "$address" >"$state/resolv.conf"
  cat >"$state/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
address: $address
port: $((base + 6))
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $((base + 7))
resolvConf: $state/resolv.conf
clusterDNS: [$address]
clusterDomain: cluster.local
# The API server calls the kubelet (logs, exec) without a client certificate; the kubelet
# listens on the bridge only.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi"}
EOF
  cat >"$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $kubeconfig}
hostnameOverride: $node_name
mode: iptables
bindAddress: $address
clusterCIDR: $subnet.0/24
healthzBindAddress: 127.0.0.1:$((base + 8))
metricsBindAddress: 127.0.0.1:$((base + 9))
# Service traffic is masqueraded to the bridge's address, so that a pod calling a Service
# whose endpoint is on the same bridge gets its answers back through the host.
iptables: {masqueradeAll: true}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: [$address/32]
EOF
  cat >"$state/coredns/Corefile" <<EOF
.:53 {
    bind $address
    errors
    health 127.0.0.1:$((base + 11))
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
}

# The sandbox image: the pause program alone, pushed to the local registry.
push_pause() {
  local ctx
  ctx="$(mktemp -d)"
  cp "$node_bin/pause" "$ctx/pause"
  DOCKER_HOST="$(bash "$repo/scripts/docker.sh" status)" || die "the engine is not running (scripts/docker.sh start)"
  tar -C "$ctx" -c pause | DOCKER_HOST="$DOCKER_HOST" /usr/bin/docker import --change 'ENTRYPOINT ["/pause"]' - "$pause_image" >/dev/null
  DOCKER_HOST="$DOCKER_HOST" /usr/bin/docker push -q "$pause_image" >/dev/null
  rm -rf "$ctx"
}

save_sysctls() {
  [[ -f "$state/sysctls.saved" ]] && return 0
  netfilter_tables >"$state/tables.saved"
  local s
  for s in "${sysctls[@]}"; do printf '%s=%s\n' "$s" "$(sysctl -n "$s")"; done >"$state/sysctls.saved"
}
restore_sysctls() {
  [[ -f "$state/sysctls.saved" ]] || return 0
  local line
  while read -r line; do sysctl -qw "$line" >/dev/null || true; done <"$state/sysctls.saved"
  rm -f "$state/sysctls.saved"
}

# Cgroup directories the kubelet and containerd made under each v1 controller, depth first.
remove_cgroups() {
  local c d
  for c in /sys/fs/cgroup/*/; do
    for d in kubepods.slice kubepods; do
      if [[ -d "$c$d" ]]; then find "$c$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
    done
  done
}

# Every container of the node's containerd killed and deleted, so that their shims (which
# outlive containerd by design) exit; sandboxes included.
remove_containers() {
  local c=(ctr --address "$state/containerd/containerd.sock" -n k8s.io) id i
  for id in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
  for ((i = 0; i < 50; i++)); do
    [[ -z "$("${c[@]}" tasks ls -q 2>/dev/null | while read -r id; do
      "${c[@]}" tasks delete "$id" >/dev/null 2>&1 || echo "$id"
    done)" ]] && break
    sleep 0.2
  done
  for id in $("${c[@]}" containers ls -q 2>/dev/null); do "${c[@]}" containers delete "$id" >/dev/null 2>&1 || true; done
}

down() {
  local cp_bin kubeconfig
  kubeconfig="$WAPIPE_STATE_DIR/cluster/kubeconfig"
  cp_bin="$(bash "$repo/scripts/build-control-plane.sh" --print 2>/dev/null)" || cp_bin=""
  if [[ -n "$cp_bin" ]] && alive kubelet && [[ -f "$kubeconfig" ]]; then
    # Pods first, while the kubelet runs, so their containers stop and their sandboxes go.
    k delete pods --all --all-namespaces --field-selector "spec.nodeName=$node_name" --wait=true --timeout=90s >/dev/null 2>&1 ||
      k delete pods --all --all-namespaces --field-selector "spec.nodeName=$node_name" --force --grace-period=0 >/dev/null 2>&1 || true
    k delete node "$node_name" --wait=false >/dev/null 2>&1 || true
  fi
  proc_stop "$run/coredns.pid" 10
  if alive kube-proxy; then
    proc_stop "$run/kube-proxy.pid" 10
  fi
  if [[ -x "${node_bin:-}/kube-proxy" ]]; then "$node_bin/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  proc_stop "$run/kubelet.pid" 20
  # Containers left behind (pods the kubelet had no time to stop) go before containerd.
  if alive containerd; then remove_containers; fi
  proc_stop "$run/containerd.pid" 20
  # Mounts under the node's directories (volumes, netns, rootfs), deepest first.
  awk -v s="$state/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  remove_cgroups
  rules_remove
  # What the kubelet and kube-proxy leave after kube-proxy --cleanup (KUBE-FIREWALL, canaries).
  netfilter_remove 'KUBE-' 'KUBE-[A-Z0-9_-]*'
  if [[ -f "$state/tables.saved" ]]; then netfilter_drop_new_tables "$state/tables.saved"; fi
  rm -f "$state/tables.saved"
  ip route del "$service_range" dev "$bridge" 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  restore_sysctls
  rm -rf /var/lib/kubelet/device-plugins /var/lib/cni
  rmdir /var/lib/kubelet 2>/dev/null || true
  # Each of the two is stopped even when the other fails (a port another process holds makes
  # the control plane's down fail, and the registry must not be left running for that).
  local status=0
  bash "$repo/scripts/cluster.sh" down || status=$?
  bash "$repo/scripts/registry.sh" stop || status=$?
  rm -rf "$state/containerd/root" "$state/containerd/state" "$state/kubelet" "$state/run" "$state/cni/ipam"
  return "$status"
}

case "$cmd" in
  up)
    node_bin="$(bash "$repo/scripts/build-node.sh")"
    mkdir -p "$state/logs" "$run"
    pause_image="127.0.0.1:$WAPIPE_REGISTRY_PORT/wapipe/pause:$(basename "$(dirname "$(readlink -f "$node_bin/pause")")")"
    if ! ip link show "$bridge" >/dev/null 2>&1; then
      ip link add "$bridge" type bridge
      ip addr add "$address/24" dev "$bridge"
    fi
    ip link set "$bridge" up
    ip route replace "$service_range" dev "$bridge"
    rules_add
    save_sysctls
    bash "$repo/scripts/registry.sh" start >/dev/null
    push_pause
    # The API server must bind to and advertise the bridge's address from its first start (its
    # serving certificate is made then); one fake node stays, tainted, for what kwok is for.
    kubeconfig="$(WAPIPE_CLUSTER_ADDRESS="$address" WAPIPE_CLUSTER_NODES="${WAPIPE_CLUSTER_NODES:-1}" bash "$repo/scripts/cluster.sh" up)"
    cp_bin="$(bash "$repo/scripts/build-control-plane.sh" --print)"
    k taint nodes -l type=kwok kwok.x-k8s.io/node=fake:NoSchedule --overwrite >/dev/null
    write_configs
    for name in containerd kubelet kube-proxy coredns; do : >"$state/logs/$name.log"; done

    log "containerd"
    start containerd containerd --config "$state/containerd/config.toml"
    wait_for 30 "containerd" ctr --address "$state/containerd/containerd.sock" version
    log "kubelet $node_name on $address"
    start kubelet "$node_bin/kubelet" --config "$state/kubelet/config.yaml" --kubeconfig "$kubeconfig" \
      --container-runtime-endpoint "unix://$state/containerd/containerd.sock" --root-dir "$state/kubelet" \
      --cert-dir "$state/pki" --node-ip "$address" --hostname-override "$node_name" \
      --node-labels wapipe.dev/node=real
    log "kube-proxy"
    start kube-proxy "$node_bin/kube-proxy" --config "$state/kube-proxy.yaml"
    log "CoreDNS on $address:53"
    start coredns "$node_bin/coredns" -conf "$state/coredns/Corefile"
    wait_for 90 "node $node_name Ready" k wait --for=condition=Ready "node/$node_name" --timeout=2s
    wait_for 30 "CoreDNS health" curl -sf "http://127.0.0.1:$((base + 11))/health"
    log "up: node $node_name Ready (pods on $subnet.0/24, Services $service_range, DNS $address)"
    echo "$kubeconfig"
    ;;
  down)
    node_bin="$(bash "$repo/scripts/build-node.sh" --print 2>/dev/null)" || node_bin=""
    down
    log "down"
    ;;
  env)
    bash "$repo/scripts/cluster.sh" env
    # The registry's port follows the port base: publish.sh and registry.sh need the same one.
    echo "export WAPIPE_REGISTRY_PORT='$WAPIPE_REGISTRY_PORT'"
    ;;
  *)
    echo "usage: $0 up|down|env" >&2
    exit 2
    ;;
esac
