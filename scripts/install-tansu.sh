#!/usr/bin/env bash
# Installs the Tansu broker (Apache-2.0, Kafka-compatible) that tests and local runs use.
# Reuses an installed one. The first build takes about ten minutes.
set -euo pipefail
version="${TANSU_VERSION:-0.6.0}"
if command -v tansu >/dev/null 2>&1 || [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then
  echo "install-tansu: tansu already installed"
  exit 0
fi
echo "install-tansu: building tansu $version with SQLite storage (about ten minutes)"
# Its own target directory, so it neither waits on nor pollutes the workspace's build.
CARGO_TARGET_DIR="${TANSU_BUILD_DIR:-${TMPDIR:-/tmp}/tansu-build}" \
  cargo install tansu --version "$version" --locked --features libsql
