#!/usr/bin/env bash
# Starts or stops a Tansu broker on loopback with SQLite storage under .wapipe/broker/.
#   scripts/tansu.sh start [port]   prints the bootstrap address (default port 19092)
#   scripts/tansu.sh stop
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo/.wapipe/broker"
pidfile="$dir/tansu.pid"
cmd="${1:-}"
port="${2:-${WAPIPE_BROKER_PORT:-19092}}"

tansu_bin() {
  command -v tansu 2>/dev/null || echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "tansu: already running (pid $(cat "$pidfile"))" >&2
      echo "127.0.0.1:$port"
      exit 0
    fi
    bin="$(tansu_bin)"
    if [[ ! -x "$bin" ]]; then
      echo "tansu: not installed; run scripts/install-tansu.sh" >&2
      exit 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "tansu: port $port is taken by another process; pass another port" >&2
      exit 1
    fi
    url="tcp://127.0.0.1:$port"
    # Started without a subshell, so that $! is the broker itself and nothing keeps this
    # script's stdout open (callers read the bootstrap address with $(...)).
    cd "$dir"
    nohup "$bin" broker --listener-url "$url" --advertised-listener-url "$url" \
      --storage-engine "sqlite://tansu.db" >"$dir/tansu.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    cd "$repo"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
      sleep 0.2
    done
    echo "tansu: did not start; its log:" >&2
    cat "$dir/tansu.log" >&2
    exit 1
    ;;
  stop)
    if [[ -f "$pidfile" ]]; then
      pid="$(cat "$pidfile")"
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    ;;
  *)
    echo "usage: $0 start [port] | stop" >&2
    exit 2
    ;;
esac
