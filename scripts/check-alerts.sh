#!/usr/bin/env bash
# Checks the Prometheus alerting rules (promtool check rules), runs their unit tests on synthetic
# series (promtool test rules), and checks that the chart's copies of the rules and the Grafana
# dashboard are the files in deploy/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
promtool check rules deploy/prometheus/wapipe-alerts.yaml
promtool test rules tests/alerts/wapipe-alerts.test.yaml
for pair in "charts/wapipe-operator/files/wapipe-alerts.yaml deploy/prometheus/wapipe-alerts.yaml" \
  "charts/wapipe-operator/files/wapipe-dashboard.json deploy/grafana/wapipe-dashboard.json"; do
  # shellcheck disable=SC2086 # two paths
  if ! diff -u $pair; then
    echo "check-alerts: the chart's copy differs from deploy/ (copy one over the other)" >&2
    exit 1
  fi
done
echo "alerts and dashboard: ok"
