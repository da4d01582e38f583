#!/usr/bin/env bash
# Builds what a real node and a local registry need from the Go module proxy, at pinned
# versions, into the control plane's cache (scripts/build-control-plane.sh), keyed by version:
#   registry              the CNCF distribution registry (github.com/distribution/distribution/v3)
#   kubelet, kube-proxy   k8s.io/kubernetes, the control plane's version (a wrapper module of
#                         their own, so the control plane's stays as it is)
#   coredns               CoreDNS with the plugins of scripts/node/coredns/main.go
#   pause                 the sandbox program of scripts/node/pause/main.go
# A binary already in the cache is not rebuilt.
#
#   scripts/build-node.sh [COMPONENT...]   build what is missing (default: all), print the bin dir
#   scripts/build-node.sh --print          print the bin dir only (exit 1 if incomplete)
#
# The bin dir holds a link per component. Cold build times go to <cache>/build-times.log.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/gobuild.sh
source "$repo/scripts/lib/gobuild.sh"

REGISTRY_VERSION="${WAPIPE_REGISTRY_VERSION:-3.1.2}"
COREDNS_VERSION="${WAPIPE_COREDNS_VERSION:-1.15.0}"

cache="$(gobuild_cache)"
node_dir="$cache/kube-node-$KUBE_VERSION"
registry_dir="$cache/registry-$REGISTRY_VERSION"
coredns_dir="$cache/coredns-$COREDNS_VERSION-$(sha256sum "$repo/scripts/node/coredns/main.go" | cut -c1-12)"
# The pause program's and CoreDNS's cache keys include their source: an edit rebuilds it.
pause_dir="$cache/pause-$(sha256sum "$repo/scripts/node/pause/main.go" | cut -c1-12)"
set_dir="$cache/node-kube-$KUBE_VERSION.registry-$REGISTRY_VERSION.$(basename "$coredns_dir").$(basename "$pause_dir")"
all=(registry kubelet kube-proxy coredns pause)

path_of() {
  case "$1" in
    registry) echo "$registry_dir/bin/registry" ;;
    kubelet | kube-proxy) echo "$node_dir/bin/$1" ;;
    coredns) echo "$coredns_dir/bin/coredns" ;;
    pause) echo "$pause_dir/bin/pause" ;;
    *) echo "unknown component $1 (${all[*]})" >&2; return 1 ;;
  esac
}

link_set() {
  local c
  mkdir -p "$set_dir/bin"
  for c in "${all[@]}"; do
    [[ -x "$(path_of "$c")" ]] && ln -sfn "$(path_of "$c")" "$set_dir/bin/$c"
  done
  return 0
}

if [[ "${1:-}" == "--print" ]]; then
  for c in "${all[@]}"; do
    [[ -x "$(path_of "$c")" ]] || { echo "node binaries not built: run scripts/build-node.sh" >&2; exit 1; }
  done
  link_set
  echo "$set_dir/bin"
  exit 0
fi

build() {
  local out
  out="$(path_of "$1")"
  [[ -x "$out" ]] && return 0
  gobuild_check
  case "$1" in
    registry)
      gobuild_module "$registry_dir" registrybin
      (cd "$registry_dir/mod" && go get -tool "github.com/distribution/distribution/v3/cmd/registry@v$REGISTRY_VERSION")
      gobuild_timed "registry-v$REGISTRY_VERSION" gobuild_go "$registry_dir" "$out" \
        github.com/distribution/distribution/v3/cmd/registry \
        "-s -w -X github.com/distribution/distribution/v3/version.version=v$REGISTRY_VERSION"
      ;;
    kubelet | kube-proxy)
      gobuild_kube_module "$node_dir" "$KUBE_VERSION" kubelet kube-proxy
      gobuild_timed "$1-v$KUBE_VERSION" gobuild_go "$node_dir" "$out" "k8s.io/kubernetes/cmd/$1" \
        "$(gobuild_kube_ldflags "$KUBE_VERSION")"
      ;;
    coredns)
      gobuild_module "$coredns_dir" corednsbin
      cp "$repo/scripts/node/coredns/main.go" "$coredns_dir/mod/"
      (cd "$coredns_dir/mod" && go get "github.com/coredns/coredns@v$COREDNS_VERSION" && go mod tidy)
      gobuild_timed "coredns-v$COREDNS_VERSION" gobuild_go "$coredns_dir" "$out" . \
        "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION"
      ;;
    pause)
      gobuild_module "$pause_dir" pause
      cp "$repo/scripts/node/pause/main.go" "$pause_dir/mod/"
      gobuild_timed pause gobuild_go "$pause_dir" "$out" .
      ;;
  esac
}

components=("$@")
((${#components[@]})) || components=("${all[@]}")
for c in "${components[@]}"; do
  path_of "$c" >/dev/null
  build "$c"
done
link_set
echo "$set_dir/bin"
