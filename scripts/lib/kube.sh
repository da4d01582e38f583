#!/usr/bin/env bash
# Helpers for scripts that talk to the local control plane (scripts/cluster.sh) with kubectl.
#
#   sa_kubeconfig NAMESPACE SERVICEACCOUNT FILE
#       writes to FILE a kubeconfig that authenticates as the ServiceAccount (a 2-hour token)
#       against the current context's API server, NAMESPACE as its default namespace

sa_kubeconfig() {
  local namespace="$1" account="$2" file="$3" token server
  token="$(kubectl -n "$namespace" create token "$account" --duration=2h)" || return 1
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')" || return 1
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: wapipe, cluster: {server: "$server", insecure-skip-tls-verify: true}}]
users: [{name: $account, user: {token: "$token"}}]
contexts: [{name: $account, context: {cluster: wapipe, user: $account, namespace: $namespace}}]
current-context: $account
KUBECONFIG
}
