#!/usr/bin/env bash
# Builds the documentation tools into caches keyed by version, or reuses them: mdBook (from
# crates.io with `cargo install --locked`) and helm-docs (from the Go module proxy). Prints the
# directory holding both (symlinks), for scripts/check-docs.sh.
#
#   WAPIPE_MDBOOK_VERSION     default 0.5.4
#   WAPIPE_HELM_DOCS_VERSION  default 1.14.2
#   WAPIPE_CP_CACHE           the Go build cache root (scripts/lib/gobuild.sh)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MDBOOK_VERSION="${WAPIPE_MDBOOK_VERSION:-0.5.4}"
HELM_DOCS_VERSION="${WAPIPE_HELM_DOCS_VERSION:-1.14.2}"
# shellcheck source=scripts/lib/gobuild.sh
source "$repo/scripts/lib/gobuild.sh"
cache="$(gobuild_cache)"
log() { printf '[doc-tools] %s\n' "$*" >&2; }

mdbook_dir="$cache/mdbook-$MDBOOK_VERSION"
if [[ ! -x "$mdbook_dir/bin/mdbook" ]]; then
  log "mdbook $MDBOOK_VERSION (cargo install)"
  # Its own target dir, removed afterwards: only the binary is kept.
  work="$(mktemp -d)"
  gobuild_timed "mdbook-$MDBOOK_VERSION" \
    env CARGO_TARGET_DIR="$work" nice -n 10 cargo install --quiet --locked mdbook \
    --version "$MDBOOK_VERSION" --root "$mdbook_dir.tmp"
  rm -rf "$work" "$mdbook_dir"
  mv "$mdbook_dir.tmp" "$mdbook_dir"
fi

helm_docs_dir="$cache/helm-docs-$HELM_DOCS_VERSION"
if [[ ! -x "$helm_docs_dir/bin/helm-docs" ]]; then
  log "helm-docs v$HELM_DOCS_VERSION (go build)"
  gobuild_check
  gobuild_module "$helm_docs_dir" helmdocsbin
  (cd "$helm_docs_dir/mod" && go get -tool "github.com/norwoodj/helm-docs/cmd/helm-docs@v$HELM_DOCS_VERSION")
  gobuild_timed "helm-docs-v$HELM_DOCS_VERSION" \
    gobuild_go "$helm_docs_dir" "$helm_docs_dir/bin/helm-docs" github.com/norwoodj/helm-docs/cmd/helm-docs
fi

bin="$cache/doc-tools-mdbook-$MDBOOK_VERSION.helm-docs-$HELM_DOCS_VERSION"
mkdir -p "$bin"
ln -sfn "$mdbook_dir/bin/mdbook" "$bin/mdbook"
ln -sfn "$helm_docs_dir/bin/helm-docs" "$bin/helm-docs"
printf '%s\n' "$bin"
