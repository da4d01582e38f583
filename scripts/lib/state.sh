#!/usr/bin/env bash
# Where the local services (scripts/kafka.sh, registry.sh, cluster.sh, node.sh) keep their data,
# logs and pid files: $WAPIPE_STATE_DIR, by default .wapipe in the checkout.
#
#   state_root       prints the state dir
#   state_dir NAME   prints NAME's directory in it

# Resolved when sourced: a caller may change directory later.
_state_checkout="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

state_root() { printf '%s\n' "${WAPIPE_STATE_DIR:-$_state_checkout/.wapipe}"; }

state_dir() { printf '%s/%s\n' "$(state_root)" "$1"; }
