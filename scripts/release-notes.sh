#!/usr/bin/env bash
# Release notes from the commits of a range, grouped by the area each subject names before its
# colon ("worker: ...", "operator: ..."), for the GitHub release (.github/workflows/release.yml).
#
#   scripts/release-notes.sh [RANGE]   default: from the previous v* tag to HEAD (all history
#                                      when there is none)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
range="${1:-}"
if [[ -z "$range" ]]; then
  if previous="$(git describe --tags --abbrev=0 --match 'v*' HEAD^ 2>/dev/null)"; then
    range="$previous..HEAD"
  else
    range="HEAD"
  fi
fi
git log --no-merges --format='%h%x09%s' "$range" | awk -F '\t' '
  {
    subject = $2
    area = "other"
    if (match(subject, /^[a-zA-Z0-9_.\/ -]+: /)) {
      area = substr(subject, 1, RLENGTH - 2)
      subject = substr(subject, RLENGTH + 1)
    }
    if (!(area in seen)) { seen[area] = 1; order[++n] = area }
    lines[area] = lines[area] "- " subject " (" $1 ")\n"
  }
  END {
    if (n == 0) { print "No changes." > "/dev/stderr"; exit 1 }
    for (i = 1; i <= n; i++) printf "### %s\n\n%s\n", order[i], lines[order[i]]
  }'
