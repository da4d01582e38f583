#!/usr/bin/env bash
# Builds the binaries of a local Kubernetes control plane from the Go module proxy, at pinned
# versions, into a cache keyed by version: kube-apiserver, kube-controller-manager,
# kube-scheduler and kubectl (k8s.io/kubernetes), etcd (go.etcd.io/etcd/server/v3), kwok
# (sigs.k8s.io/kwok) and the helm v3 CLI. A binary already in the cache is not rebuilt, so a
# warm run costs seconds; a cold one tens of minutes on two cores.
#
#   scripts/build-control-plane.sh          build what is missing, print the bin directory
#   scripts/build-control-plane.sh --print  print the bin directory only (exit 1 if incomplete)
#
# Cache: $WAPIPE_CP_CACHE (default /var/cache/wapipe/k8s, or ~/.cache/wapipe/k8s when that is
# not writable). Each component lives in <cache>/<component>-<version>/, and
# <cache>/<all versions>/bin holds links to the set. The Go module and build caches stay in
# their default places (go env GOMODCACHE / GOCACHE). Cold build times are logged to
# <cache>/build-times.log.
set -euo pipefail

ETCD_VERSION="${WAPIPE_ETCD_VERSION:-3.6.14}"
KWOK_VERSION="${WAPIPE_KWOK_VERSION:-0.8.0}"
HELM_VERSION="${WAPIPE_HELM_VERSION:-3.21.4}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/gobuild.sh
source "$repo/scripts/lib/gobuild.sh"
cache="$(gobuild_cache)"

set_dir="$cache/kube-$KUBE_VERSION.etcd-$ETCD_VERSION.kwok-$KWOK_VERSION.helm-$HELM_VERSION"
kube_dir="$cache/kube-$KUBE_VERSION"
etcd_dir="$cache/etcd-$ETCD_VERSION"
kwok_dir="$cache/kwok-$KWOK_VERSION"
helm_dir="$cache/helm-$HELM_VERSION"

kube_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

link_set() {
  mkdir -p "$set_dir/bin"
  local b
  for b in "${kube_bins[@]}"; do ln -sfn "$kube_dir/bin/$b" "$set_dir/bin/$b"; done
  ln -sfn "$etcd_dir/bin/etcd" "$set_dir/bin/etcd"
  ln -sfn "$kwok_dir/bin/kwok" "$set_dir/bin/kwok"
  ln -sfn "$helm_dir/bin/helm" "$set_dir/bin/helm"
  ln -sfn "$kwok_dir/stages.yaml" "$set_dir/stages.yaml"
}

complete() {
  local b
  for b in "${kube_bins[@]}"; do [[ -x "$kube_dir/bin/$b" ]] || return 1; done
  [[ -x "$etcd_dir/bin/etcd" && -x "$kwok_dir/bin/kwok" && -s "$kwok_dir/stages.yaml" && -x "$helm_dir/bin/helm" ]]
}

if [[ "${1:-}" == "--print" ]]; then
  complete || { echo "control plane binaries not built: run scripts/build-control-plane.sh" >&2; exit 1; }
  link_set
  echo "$set_dir/bin"
  exit 0
fi

log() { printf '[build-control-plane] %s\n' "$*" >&2; }

build_kube() {
  local b missing=0
  for b in "${kube_bins[@]}"; do [[ -x "$kube_dir/bin/$b" ]] || missing=1; done
  ((missing)) || return 0
  log "kubernetes v$KUBE_VERSION"
  gobuild_kube_module "$kube_dir" "$KUBE_VERSION" "${kube_bins[@]}"
  local ld
  ld="$(gobuild_kube_ldflags "$KUBE_VERSION")"
  for b in "${kube_bins[@]}"; do
    [[ -x "$kube_dir/bin/$b" ]] && continue
    # One binary at a time, so the log shows what each one adds (the first pays the shared libraries).
    gobuild_timed "$b-v$KUBE_VERSION" gobuild_go "$kube_dir" "$kube_dir/bin/$b" "k8s.io/kubernetes/cmd/$b" "$ld"
  done
}

build_etcd() {
  [[ -x "$etcd_dir/bin/etcd" ]] && return 0
  log "etcd v$ETCD_VERSION"
  gobuild_module "$etcd_dir" etcdbin
  (cd "$etcd_dir/mod" && go get -tool "go.etcd.io/etcd/server/v3@v$ETCD_VERSION")
  gobuild_timed "etcd-v$ETCD_VERSION" gobuild_go "$etcd_dir" "$etcd_dir/bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  if [[ ! -x "$kwok_dir/bin/kwok" ]]; then
    log "kwok v$KWOK_VERSION"
    gobuild_module "$kwok_dir" kwokbin
    (cd "$kwok_dir/mod" && go get -tool "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION")
    gobuild_timed "kwok-v$KWOK_VERSION" gobuild_go "$kwok_dir" "$kwok_dir/bin/kwok" sigs.k8s.io/kwok/cmd/kwok
  fi
  if [[ ! -s "$kwok_dir/stages.yaml" ]]; then
    # kwok needs Stage objects: node initialisation and lease heartbeat, pods becoming Ready,
    # completing and going away when deleted (there is no kubelet). Read from the module cache.
    local src
    src="$(cd "$kwok_dir/mod" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
    local f first=1
    : >"$kwok_dir/stages.yaml.tmp"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      ((first)) || echo '---' >>"$kwok_dir/stages.yaml.tmp"
      first=0
      cat "$src/$f" >>"$kwok_dir/stages.yaml.tmp"
    done
    mv "$kwok_dir/stages.yaml.tmp" "$kwok_dir/stages.yaml"
  fi
}

build_helm() {
  [[ -x "$helm_dir/bin/helm" ]] && return 0
  log "helm v$HELM_VERSION"
  gobuild_module "$helm_dir" helmbin
  (cd "$helm_dir/mod" && go get -tool "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION")
  local minor="${KUBE_VERSION#1.}"
  minor="${minor%%.*}"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  gobuild_timed "helm-v$HELM_VERSION" gobuild_go "$helm_dir" "$helm_dir/bin/helm" helm.sh/helm/v3/cmd/helm "$ld"
}

if ! complete; then
  gobuild_check
  build_etcd
  build_kwok
  build_helm
  build_kube
fi
link_set
echo "$set_dir/bin"
