#!/usr/bin/env bash
# The side-by-side benchmark: wapipe's ingress and worker beside the usual Python service
# (../shared/peers/python_ingress.py) and Python worker (python_worker.py) and the raw librdkafka producer and consumer, on one
# private Apache Kafka, printed as one table. Builds the release binaries first; installs wrk and
# the peers' Python packages when missing. Takes about three to five minutes; asserts nothing.
#
#   bash scripts/bench-compare.sh [--seconds 15] [--connections 64] [--worker-events 120000] [--rss-events 1000000] [--skip-worker] [--skip-callgrind]
#                                 [--kafka-port P] [--state-dir DIR] [--database-url URL]
#
# PostgreSQL: scripts/postgres.sh's on 127.0.0.1:5432, unless --database-url or
# WAPIPE_BENCH_DATABASE_URL names another (then that one is used as it is, and left alone).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
python3 -c "import fastapi, uvicorn, confluent_kafka, psycopg2" 2>/dev/null || python3 -m pip install -q fastapi uvicorn confluent-kafka psycopg2-binary
bash scripts/install-kafka.sh >/dev/null
case " $* " in
  *" --database-url "*) ;;
  *) [[ -n "${WAPIPE_BENCH_DATABASE_URL:-}" ]] || bash scripts/postgres.sh ;;
esac
target="${CARGO_TARGET_DIR:-$repo/target}"
cargo build -q --release -p wapipe-ingress -p wapipe
cargo build -q --release -p wapipe-worker --example bench
exec python3 scripts/bench_compare.py --bin-dir "$target/release" "$@"
