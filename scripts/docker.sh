#!/usr/bin/env bash
# Starts, stops or reports on a Docker engine (Debian's dockerd, no systemd) with its own data
# and exec roots under the cache, so images and the build cache survive between runs, and its own
# socket, so it never meets another engine on the machine.
#
#   scripts/docker.sh start    prints the DOCKER_HOST value once `docker info` answers
#   scripts/docker.sh stop     SIGTERM (dockerd stops its containers and containerd), SIGKILL after
#                              30 s; then removes what dockerd left in the host's network set-up
#                              (its iptables chains and rules, the docker0 bridge) and puts
#                              net.ipv4.ip_forward and the FORWARD policy back as they were
#   scripts/docker.sh status   exit 0 and the DOCKER_HOST value when the engine answers
#   scripts/docker.sh env      print `export DOCKER_HOST=... DOCKER_BUILDKIT=1 DOCKER=...` (eval it)
#
#   WAPIPE_DOCKER_ROOT   default /var/cache/wapipe/docker: data/ (images, layers, BuildKit's
#                        cache), run/ (exec root, socket, pid file), dockerd.log, host.saved
#
# The client is Debian's /usr/bin/docker (20.10, the engine's own version): it builds with the
# engine's BuildKit, while a newer client on PATH would ask for the buildx plug-in.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
root="${WAPIPE_DOCKER_ROOT:-/var/cache/wapipe/docker}"
run="$root/run"
socket="unix://$run/docker.sock"
pidfile="$run/dockerd.pid"
log="$root/dockerd.log"
saved="$root/host.saved"
client=/usr/bin/docker

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
running() { proc_pid "$pidfile" >/dev/null; }
answers() { DOCKER_HOST="$socket" "$client" info >/dev/null 2>&1; }

# shellcheck source=scripts/lib/netfilter.sh
source "$repo/scripts/lib/netfilter.sh"

case "$cmd" in
  start)
    if running && answers; then
      echo "$socket"
      exit 0
    fi
    command -v dockerd >/dev/null || { echo "docker: dockerd is not installed (scripts/install-deps.sh installs docker.io)" >&2; exit 1; }
    mkdir -p "$root/data" "$run"
    # What dockerd changes in the host's network set-up, to put back on stop (kept from the
    # first start: a crashed run must not record dockerd's own values).
    if [[ ! -f "$saved" ]]; then
      printf 'ip_forward=%s\nforward_policy=%s\n' "$(cat /proc/sys/net/ipv4/ip_forward)" \
        "$(iptables -S FORWARD 2>/dev/null | sed -n 's/^-P FORWARD //p')" >"$saved"
      netfilter_tables >"$saved.tables"
    fi
    proc_spawn "$pidfile" "$log" dockerd --data-root "$root/data" --exec-root "$run" \
      --pidfile "$run/dockerd.engine.pid" --host "$socket" --storage-driver overlay2 --log-level warn
    proc_await "$pidfile" 60 answers ||
      proc_fail "docker: dockerd did not answer on $socket; the end of $log:" "$log" 30
    echo "$socket"
    ;;
  stop)
    proc_stop "$pidfile" 30
    if [[ -f "$saved" ]]; then
      # dockerd's chains (DOCKER*) and the rules that name them or its bridge; nothing else.
      netfilter_remove 'DOCKER|docker0' 'DOCKER[A-Z0-9_-]*'
      ip link delete docker0 2>/dev/null || true
      # shellcheck disable=SC1090 # written by start above
      source "$saved"
      [[ -n "${ip_forward:-}" ]] && echo "$ip_forward" >/proc/sys/net/ipv4/ip_forward
      [[ -n "${forward_policy:-}" ]] && iptables -P FORWARD "$forward_policy"
      netfilter_drop_new_tables "$saved.tables"
      rm -f "$saved" "$saved.tables"
    fi
    ;;
  status)
    proc_status docker "$pidfile" "$socket" answers
    ;;
  env)
    echo "export DOCKER_HOST='$socket' DOCKER_BUILDKIT=1 DOCKER='$client'"
    ;;
  *)
    echo "usage: $0 start | stop | status | env" >&2
    exit 2
    ;;
esac
