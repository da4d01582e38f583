#!/usr/bin/env bash
# The cluster suite as CI runs it: build the control plane binaries (or reuse them from the
# cache), bring the cluster up, run tests/cluster/run.sh against it and the broker named by
# WAPIPE_TEST_BROKERS, and bring the cluster down on exit, failed or not.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
: "${WAPIPE_TEST_BROKERS:?WAPIPE_TEST_BROKERS must name the Kafka broker}"

need_apt=()
for pair in openssl:openssl curl:curl ss:iproute2 lua5.4:lua5.4; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if ((${#need_apt[@]})); then
  echo "test-cluster: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

start=$(date +%s)
bash scripts/build-control-plane.sh >/dev/null
echo "test-cluster: control plane binaries ready in $(($(date +%s) - start))s"
trap 'bash scripts/cluster.sh down' EXIT
kubeconfig="$(bash scripts/cluster.sh up)"
WAPIPE_TEST_KUBECONFIG="$kubeconfig" bash tests/cluster/run.sh
echo "test-cluster: suite done in $(($(date +%s) - start))s (binaries, cluster up, checks)"
