#!/usr/bin/env bash
# Runs shellcheck over every shell script in the repository: each tracked file with a bash shebang
# (scripts/, tests/, .ci/run, ...). Sourced files are followed (-x). Fails on any finding.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v shellcheck >/dev/null || { echo "check-shell: shellcheck is not installed (apt-get install shellcheck)" >&2; exit 1; }
mapfile -t scripts < <(git ls-files -z | xargs -0 grep -lIE '^#!(/usr/bin/env |/bin/)(ba)?sh' 2>/dev/null | sort)
((${#scripts[@]})) || { echo "check-shell: no shell scripts found" >&2; exit 1; }
shellcheck -x "${scripts[@]}"
echo "check-shell: ${#scripts[@]} scripts shellcheck-clean"
