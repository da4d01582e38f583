#!/usr/bin/env bash
# Chart checks with Helm's own engine (Helm v4 Go SDK via helm-python-sdk):
# lint --strict and render with default and non-default values, then pytest over the
# rendered objects (tests/chart/) and the CRD copy.
#
# Needs: python3 >= 3.10 with `pip install -r tests/chart/requirements.txt`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ -d crds ]] && compgen -G "crds/*.yaml" >/dev/null; then
  if ! diff -r -x '.*' crds charts/wapipe-operator/crds; then
    echo "check-chart: charts/wapipe-operator/crds differs from crds/; run scripts/sync-chart-crds.sh" >&2
    exit 1
  fi
  echo "check-chart: chart CRDs are identical to crds/"
else
  echo "check-chart: SKIPPED CRD comparison: crds/ has no generated CRD yet"
fi

python3 - <<'PY'
import helm_python as helm
print(f"check-chart: Helm engine {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__})")
PY

python3 -m pytest -q tests/chart tests/examples
