#!/usr/bin/env bash
# Starts, stops or reports on a local OCI registry: the CNCF distribution registry built by
# scripts/build-node.sh, as a process, plain HTTP on loopback, storage under the state dir. The
# image is pushed there (docker treats 127.0.0.0/8 as an insecure registry by default), the chart
# too (`helm push --plain-http`), and `helm install oci://...` and the node's containerd read
# from it: what a user's cluster does with a real registry.
#
#   scripts/registry.sh start    prints HOST:PORT once /v2/ answers
#   scripts/registry.sh stop     SIGTERM, SIGKILL after 10 s; the stored images are removed
#   scripts/registry.sh status   exit 0 and HOST:PORT when /v2/ answers
#
#   WAPIPE_REGISTRY_PORT   port (default 5000); WAPIPE_REGISTRY_ADDRESS address (default 127.0.0.1)
#   WAPIPE_STATE_DIR       state dir (default .wapipe in the checkout); the registry uses registry/
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
address="${WAPIPE_REGISTRY_ADDRESS:-127.0.0.1}"
port="${WAPIPE_REGISTRY_PORT:-5000}"
# shellcheck source=scripts/lib/state.sh
source "$repo/scripts/lib/state.sh"
dir="$(state_dir registry)"
pidfile="$dir/registry.pid"
log="$dir/registry.log"

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
running() { proc_pid "$pidfile" >/dev/null; }
answers() { curl -sf --max-time 2 "http://$address:$port/v2/" >/dev/null; }

case "$cmd" in
  start)
    if running && answers; then
      echo "$address:$port"
      exit 0
    fi
    bin="$(bash "$repo/scripts/build-node.sh" registry)/registry"
    if (exec 3<>"/dev/tcp/$address/$port") 2>/dev/null; then
      echo "registry: port $port is taken by another process (set WAPIPE_REGISTRY_PORT)" >&2
      exit 1
    fi
    mkdir -p "$dir/storage"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $address:$port
EOF
    proc_spawn "$pidfile" "$log" "$bin" serve "$dir/config.yml"
    proc_await "$pidfile" 10 answers ||
      proc_fail "registry: did not answer on $address:$port; the end of $log:" "$log" 20
    echo "$address:$port"
    ;;
  stop)
    proc_stop "$pidfile" 10
    rm -rf "$dir/storage"
    ;;
  status)
    proc_status registry "$pidfile" "$address:$port" answers
    ;;
  *)
    echo "usage: $0 start | stop | status" >&2
    exit 2
    ;;
esac
