#!/usr/bin/env bash
# The documentation checks CI runs: the generated pages are up to date (docs/api-reference.md
# from the CRD; the chart's README from values.yaml by helm-docs), links, runbooks and condition
# reasons check out (scripts/check-docs.py), the book builds with mdBook into target/book, and
# release notes can be generated.
#
#   scripts/check-docs.sh           check (fails on anything stale or broken)
#   scripts/check-docs.sh --write   regenerate the generated pages first
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
tools="$(bash scripts/build-doc-tools.sh)"
chart=charts/wapipe-operator

if [[ "${1:-}" == "--write" ]]; then
  python3 scripts/gen-api-reference.py
  "$tools/helm-docs" --chart-search-root "$chart" --template-files README.md.gotmpl --log-level warning
fi

python3 scripts/gen-api-reference.py --check
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$chart" "$work/chart"
"$tools/helm-docs" --chart-search-root "$work/chart" --template-files README.md.gotmpl --log-level warning
if ! diff -u "$chart/README.md" "$work/chart/README.md"; then
  echo "check-docs: $chart/README.md is stale: run scripts/check-docs.sh --write" >&2
  exit 1
fi
python3 scripts/check-docs.py
"$tools/mdbook" build docs --dest-dir "$repo/target/book" || { echo "check-docs: the book did not build" >&2; exit 1; }
bash scripts/release-notes.sh HEAD >/dev/null
echo "docs: ok (book in target/book)"
