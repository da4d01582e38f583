#!/usr/bin/env bash
# Brings the whole pipeline up on this machine, no Kubernetes, with `wapipe up`: an Apache Kafka
# broker (KRaft, its log in .wapipe/kafka/), the topics, the ingress on :8080 and a worker pool scaled by the
# operator's own policy, with a live view. Ctrl-C stops everything.
#
#   scripts/run-local.sh                                   # bundled example pipeline, rows in .wapipe/wapipe.db
#   scripts/run-local.sh -f examples/meta-postgres.yaml    # your WhatsAppWebhookPipeline
#   scripts/run-local.sh --database-url postgres://root@127.0.0.1/test   # rows in PostgreSQL
#
# Every other `wapipe up` flag passes through (`target/release/wapipe up --help`).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/install-kafka.sh
cargo build --release -p wapipe-ingress -p wapipe-worker -p wapipe
exec "${CARGO_TARGET_DIR:-$repo/target}/release/wapipe" up "$@"
