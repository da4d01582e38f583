#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, generated CRDs and documentation up to
# date (the mdBook site builds, its links resolve), unit,
# service and integration tests on Apache Kafka and PostgreSQL, the chart and Argo CD health
# checks, the kind end-to-end suite where Docker and kind exist, the cluster suite and the node
# suite (real pods on this machine, where a Docker engine and CAP_NET_ADMIN exist).
#
# Starts a shared Kafka broker (scripts/kafka.sh, state in .wapipe/test-kafka) for the run unless
# WAPIPE_TEST_BROKERS names one, and stops it at the end; tests that stop and restart a broker,
# or need broker settings of their own, start a private one.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n== %s\n' "$*"; }

if [[ -z "${WAPIPE_TEST_BROKERS:-}" ]]; then
  step "starting an Apache Kafka broker for the tests"
  export WAPIPE_STATE_DIR="$repo/.wapipe/test"
  bash scripts/kafka.sh stop
  # A fresh log every run: topics of earlier runs would only slow the broker down.
  rm -rf "$WAPIPE_STATE_DIR/kafka"
  WAPIPE_TEST_BROKERS="$(bash scripts/kafka.sh start)"
  export WAPIPE_TEST_BROKERS
  trap 'bash scripts/kafka.sh stop' EXIT
fi
echo "broker: $WAPIPE_TEST_BROKERS"
# The suites append each failure here; they are repeated at the very end of the run.
WAPIPE_FAILURES="$(mktemp)"
export WAPIPE_FAILURES
bash scripts/postgres.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "CRDs in crds/ match the Rust types"
generated="$(mktemp)"
cargo run -q -p wapipe-operator --bin crdgen -- - >"$generated"
if ! diff -u crds/whatsappwebhookpipelines.wapipe.dev.yaml "$generated"; then
  echo "crds/ is stale: run cargo run -p wapipe-operator --bin crdgen && scripts/sync-chart-crds.sh" >&2
  exit 1
fi
rm -f "$generated"

step "shellcheck (every shell script)"
bash scripts/check-shell.sh

step "module imports (no circle between a crate's modules)"
python3 scripts/check-module-cycles.py

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (no broken or private intra-doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps --workspace

step "chart (Helm engine), examples, Argo CD health check, alerts (promtool) and dashboard"
bash scripts/check-chart.sh
bash scripts/test-lua.sh
bash scripts/check-alerts.sh

step "documentation (generated pages current, links, runbooks, reasons; the book builds)"
bash scripts/check-docs.sh

step "kind end-to-end suite"
set +e
bash tests/e2e/run.sh
rc=$?
set -e
case "$rc" in
  0) ;;
  77) echo "e2e: skipped (see the SKIPPED line above); everything else still runs" ;;
  *) echo "e2e: failed ($rc)" >&2; exit "$rc" ;;
esac

# --- cluster suite: a real control plane built from Go modules (README "Cluster suite") ------
step "cluster suite (kube-apiserver, etcd, controller-manager, scheduler, kwok, helm)"
# A failing cluster suite is reported at the end; the cargo tests still run.
set +e
bash scripts/test-cluster.sh
cluster_status=$?
set -e
# --- end of the cluster suite ------------------------------------------------------------

# --- node suite: real pods on a real node of this machine (docs/real-node.md) ---------------
step "node suite (image built here, local registry, kubelet + containerd, real pods)"
# Its own Kafka on the node's bridge (port 19500), its own state dir; 77 = SKIPPED (no Docker
# engine or no CAP_NET_ADMIN here); any other failure fails the run at the end.
set +e
WAPIPE_STATE_DIR="$repo/.wapipe/node-suite" bash tests/node/run.sh
node_status=$?
set -e
if [[ "$node_status" == 77 ]]; then
  echo "node suite: skipped (see the SKIPPED line above)"
  node_status=0
fi

step "cargo test (unit, service and integration tests)"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "${TMPDIR:-/tmp}/wapipe-cargo-test.log"
status="${PIPESTATUS[0]}"
set -e
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "${TMPDIR:-/tmp}/wapipe-cargo-test.log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "${TMPDIR:-/tmp}/wapipe-cargo-test.log" | awk '{s+=$1} END {print s+0}')
grep -E '^test .* FAILED$' "${TMPDIR:-/tmp}/wapipe-cargo-test.log" | sed 's/^/cargo: /' >>"$WAPIPE_FAILURES" || true
echo
if [[ -s "$WAPIPE_FAILURES" ]]; then
  echo "failures of this run (details above):"
  cat "$WAPIPE_FAILURES"
  echo
fi
rm -f "$WAPIPE_FAILURES"
echo "cargo: ${passed} passed, ${failed} failed"
if [[ "$cluster_status" != 0 ]]; then
  echo "cluster suite: failed ($cluster_status); see its output above" >&2
  [[ "$status" != 0 ]] || status="$cluster_status"
fi
if [[ "$node_status" != 0 ]]; then
  echo "node suite: failed ($node_status); see its output above" >&2
  [[ "$status" != 0 ]] || status="$node_status"
fi
exit "$status"
