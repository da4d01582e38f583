#!/usr/bin/env bash
# Starts, stops or reports on a single-node Apache Kafka (KRaft) broker on loopback, with its
# data and log under the state dir. Install it first with scripts/install-kafka.sh.
#
#   scripts/kafka.sh start [port]   prints the bootstrap address once a metadata request is answered
#   scripts/kafka.sh stop           SIGTERM (controlled shutdown), SIGKILL after 30 s
#   scripts/kafka.sh status         exit 0 and the address when it answers, 1 otherwise
#
#   WAPIPE_KAFKA_PORT   broker port (default 19092; the controller listens on port + 1)
#   WAPIPE_KAFKA_ADDRESS address the broker listens on and advertises (default 127.0.0.1; the
#                       real node's bridge address, so that pods reach it); the controller
#                       stays on loopback
#   WAPIPE_STATE_DIR    state dir (default .wapipe in the checkout); the broker uses kafka/ in it
#   KAFKA_HEAP_OPTS     JVM heap (default -Xms256m -Xmx768m)
#   WAPIPE_CACHE        where install-kafka.sh put the jars
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cmd="${1:-}"
port="${2:-${WAPIPE_KAFKA_PORT:-19092}}"
address="${WAPIPE_KAFKA_ADDRESS:-127.0.0.1}"
# shellcheck source=scripts/lib/state.sh
source "$repo/scripts/lib/state.sh"
dir="$(state_dir kafka)"
pidfile="$dir/kafka.pid"
log="$dir/kafka.log"

pom="$repo/kafka-local/kafka/pom.xml"
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")"
log4j="$(sed -n 's:.*<log4j.version>\(.*\)</log4j.version>.*:\1:p' "$pom")"
libs=""
for root in "${WAPIPE_CACHE:-}" /var/cache/wapipe "${XDG_CACHE_HOME:-$HOME/.cache}/wapipe"; do
  [[ -n "$root" && -f "$root/kafka/$version-log4j$log4j/libs/.complete" ]] && { libs="$root/kafka/$version-log4j$log4j/libs"; break; }
done

# shellcheck source=scripts/lib/proc.sh
source "$repo/scripts/lib/proc.sh"
running() { proc_pid "$pidfile" >/dev/null; }
answers() { python3 "$repo/kafka-local/kafka/probe.py" "$address" "$port" 2; }

case "$cmd" in
  start)
    mkdir -p "$dir"
    if running; then
      echo "kafka: already running (pid $(proc_pid "$pidfile"))" >&2
      echo "$address:$port"
      exit 0
    fi
    if [[ -z "$libs" ]]; then
      echo "kafka: Kafka $version is not installed; run scripts/install-kafka.sh" >&2
      exit 1
    fi
    for p in "$port" "$((port + 1))"; do
      if (exec 3<>"/dev/tcp/$address/$p") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "kafka: port $p is taken by another process; pass another port (the controller uses port + 1)" >&2
        exit 1
      fi
    done
    sed -e "s|PLAINTEXT://127.0.0.1:@PORT@|PLAINTEXT://$address:@PORT@|g" -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$((port + 1))|g" -e "s|@DATA_DIR@|$dir/data|g" \
      "$repo/kafka-local/kafka/server.properties" >"$dir/server.properties"
    cp "$repo/kafka-local/kafka/log4j2.properties" "$dir/log4j2.properties"
    if [[ ! -f "$dir/data/meta.properties" ]]; then
      java -cp "$libs/*" kafka.tools.StorageTool format --ignore-formatted \
        -t "$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid | tail -n 1)" \
        -c "$dir/server.properties" >>"$log" 2>&1 || proc_fail "kafka: formatting $dir/data failed; its log:" "$log" 40
    fi
    # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several JVM flags
    proc_spawn "$pidfile" "$log" java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m} -XX:+UseG1GC \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$libs/*" \
      kafka.Kafka "$dir/server.properties"
    proc_await "$pidfile" 60 answers ||
      proc_fail "kafka: did not answer on $address:$port; the end of $log:" "$log" 40
    echo "$address:$port"
    ;;
  stop)
    proc_stop "$pidfile" 30
    ;;
  status)
    proc_status kafka "$pidfile" "$address:$port" answers
    ;;
  *)
    echo "usage: $0 start [port] | stop | status" >&2
    exit 2
    ;;
esac
