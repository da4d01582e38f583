#!/usr/bin/env bash
# Measures the consumption stall while a worker group grows from 1 to 8 wapipe-worker
# processes under load, with the classic group protocol and with KIP-848's
# (group.protocol=consumer), on a real Apache Kafka broker, and prints the figures
# (`wapipe bench rebalance`, see cli/src/bench_rebalance.rs).
#
#   WAPIPE_TEST_BROKERS   a running broker (default: start one with scripts/kafka.sh, stopped after)
#   RUNS                  runs per protocol (default 2), alternating the protocols
#   extra arguments go to `wapipe bench rebalance` (--rate, --partitions, --from, --to, ...)
#
# The broker needs the new protocol: Kafka 4.0+ has it on by default
# (group.coordinator.rebalance.protocols includes consumer, group.version=1); on 3.7-3.9 it must
# be enabled in server.properties. Figures, not assertions: the machine's load shows in them.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
brokers="${WAPIPE_TEST_BROKERS:-}"
started=""
if [[ -z "$brokers" ]]; then
  brokers="$(bash scripts/kafka.sh start)"
  started=1
fi
cleanup() { if [[ -n "$started" ]]; then bash scripts/kafka.sh stop; fi; }
trap cleanup EXIT
version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' kafka-local/kafka/pom.xml)"
echo "measure-rebalance: Apache Kafka $version at $brokers (the project's broker), debug builds"
cargo build -q -p wapipe-worker -p wapipe
"$CARGO_TARGET_DIR/debug/wapipe" bench rebalance --brokers "$brokers" --runs "${RUNS:-2}" \
  --worker-bin "$CARGO_TARGET_DIR/debug/wapipe-worker" "$@"
