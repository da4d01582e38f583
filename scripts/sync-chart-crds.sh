#!/usr/bin/env bash
# Copy the generated CRDs (crds/, written by the operator's crdgen) into the chart's crds/ folder.
# scripts/check-chart.sh fails while the two differ.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/crds"
dst="$repo/charts/wapipe-operator/crds"

if [[ ! -d "$src" ]] || ! compgen -G "$src/*.yaml" >/dev/null; then
  echo "sync-chart-crds: $src has no CRD YAML yet (the operator's crdgen writes it); nothing to copy" >&2
  exit 1
fi
mkdir -p "$dst"
# Remove chart CRDs whose source is gone, then copy the current ones.
for f in "$dst"/*.yaml; do
  [[ -e "$f" ]] || continue
  [[ -e "$src/$(basename "$f")" ]] || { rm -v "$f"; }
done
cp -v "$src"/*.yaml "$dst"/
