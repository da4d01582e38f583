#!/usr/bin/env bash
# Building Go programs from the module proxy into a cache keyed by version
# (scripts/build-control-plane.sh, scripts/build-node.sh).
#
#   KUBE_VERSION                    the Kubernetes version of the control plane and of the node
#                                   ($WAPIPE_KUBE_VERSION, default 1.36.3): one, so that they match
#   gobuild_cache                   prints the cache root: $WAPIPE_CP_CACHE, else
#                                   /var/cache/wapipe/k8s, else ~/.cache/wapipe/k8s
#   gobuild_check                   fails unless Go >= 1.26 is installed
#   gobuild_timed NAME CMD...       runs CMD; appends its duration to the cache's build-times.log
#   gobuild_module DIR NAME         a fresh wrapper module DIR/mod (module wapipe.invalid/NAME)
#                                   and DIR/bin
#   gobuild_kube_module DIR VERSION CMDS...
#                                   DIR/mod made a wrapper of k8s.io/kubernetes@vVERSION with
#                                   its staging modules replaced by their tags and each
#                                   k8s.io/kubernetes/cmd/CMD as a tool (kept when go.sum exists)
#   gobuild_kube_ldflags VERSION    the -ldflags that stamp a Kubernetes binary's version
#   gobuild_go DIR OUT PKG [LDFLAGS]
#                                   builds PKG in DIR/mod under nice into OUT (atomically)

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
# shellcheck disable=SC2034 # read by the scripts that source this file
KUBE_VERSION="${WAPIPE_KUBE_VERSION:-1.36.3}"

gobuild_cache() {
  local cache="${WAPIPE_CP_CACHE:-}"
  if [[ -z "$cache" ]]; then
    cache=/var/cache/wapipe/k8s
    if ! mkdir -p "$cache" 2>/dev/null || [[ ! -w "$cache" ]]; then
      cache="$HOME/.cache/wapipe/k8s"
    fi
  fi
  mkdir -p "$cache"
  printf '%s\n' "$cache"
}

gobuild_check() {
  command -v go >/dev/null || { echo "go is required (Go >= 1.26)" >&2; return 1; }
  local minor
  minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
  ((minor >= 26)) || { echo "Go >= 1.26 is required (found $(go env GOVERSION))" >&2; return 1; }
}

gobuild_timed() {
  local name="$1" start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  printf '%s %s %ss (go %s, %s cores)\n' "$(date -u +%FT%TZ)" "$name" "$((end - start))" \
    "$(go env GOVERSION)" "$(nproc)" >>"$(gobuild_cache)/build-times.log"
  printf '[build] %s built in %ss\n' "$name" "$((end - start))" >&2
}

# A wrapper module per component: k8s.io/kubernetes and etcd's server module carry replace
# directives that `go install pkg@version` refuses, and separate modules keep minimal version
# selection from moving one component's libraries inside another's build.
gobuild_module() {
  rm -rf "$1/mod"
  mkdir -p "$1/mod" "$1/bin"
  (cd "$1/mod" && go mod init "wapipe.invalid/$2" >/dev/null 2>&1)
}

gobuild_kube_module() {
  local dir="$1" version="$2" name
  shift 2
  [[ -f "$dir/mod/go.sum" ]] && return 0
  gobuild_module "$dir" "k8s-$(basename "$dir")"
  (
    cd "$dir/mod" || exit 1
    # k8s.io/kubernetes requires every staging module at v0.0.0 and maps it to ./staging;
    # a dependent module must replace each with its published v0.<minor>.<patch> tag.
    gomod="$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" | sort -u)
    [[ -n "$staging" ]] || { echo "no staging modules found in $gomod" >&2; exit 1; }
    for m in $staging; do go mod edit -replace="$m=$m@v0.${version#1.}"; done
    go mod edit -require="k8s.io/kubernetes@v$version"
    for name in "$@"; do go get -tool "k8s.io/kubernetes/cmd/$name@v$version"; done
  )
}

gobuild_kube_ldflags() {
  local version="$1" minor ld
  minor="${version#1.}"
  minor="${minor%%.*}"
  ld="-s -w -X k8s.io/component-base/version.gitVersion=v$version"
  ld+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=v$version"
  ld+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  printf '%s\n' "$ld"
}

gobuild_go() {
  local dir="$1" out="$2" pkg="$3" ld="${4:--s -w}"
  (cd "$dir/mod" && nice -n 10 go build -ldflags "$ld" -o "$out.tmp" "$pkg") && mv "$out.tmp" "$out"
}
