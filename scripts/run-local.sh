#!/usr/bin/env bash
# Brings the whole pipeline up on this machine, no Kubernetes: a Tansu broker, the raw and
# dead-letter topics, the ingress on :8080 and one worker. Ctrl-C stops everything.
#
#   WAPIPE_DATABASE_URL=postgres://root@127.0.0.1/test scripts/run-local.sh   # rows in PostgreSQL
#   scripts/run-local.sh                                                       # log sink
#
# Then, in another terminal:
#   target/release/wapipe send --url http://127.0.0.1:8080/webhook --secret local-secret --batch 10
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
secret="${WAPIPE_APP_SECRET:-local-secret}"
port="${WAPIPE_BROKER_PORT:-19092}"

bash scripts/install-tansu.sh
cargo build --release -p wapipe-ingress -p wapipe-worker -p wapipe
bin="${CARGO_TARGET_DIR:-$repo/target}/release"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash scripts/tansu.sh stop
  echo "stopped"
}
trap cleanup INT TERM EXIT

brokers="$(bash scripts/tansu.sh start "$port")"
"$bin/wapipe" topics create --kafka-brokers "$brokers" --partitions 12

if [[ -n "${WAPIPE_DATABASE_URL:-}" ]]; then sink=postgres; else sink=log; fi
WAPIPE_KAFKA_BROKERS="$brokers" WAPIPE_APP_SECRET="$secret" WAPIPE_VERIFY_TOKEN=local-token \
  WAPIPE_LISTEN=127.0.0.1:8080 "$bin/wapipe-ingress" & pids+=($!)
WAPIPE_KAFKA_BROKERS="$brokers" WAPIPE_SINK="$sink" WAPIPE_LISTEN=127.0.0.1:8081 \
  "$bin/wapipe-worker" & pids+=($!)

echo "pipeline up: ingress http://127.0.0.1:8080/webhook (secret $secret), worker sink $sink, broker $brokers"
echo "send load:   $bin/wapipe send --url http://127.0.0.1:8080/webhook --secret $secret --batch 10"
wait -n "${pids[@]}"
