#!/usr/bin/env bash
# A script's messages to stderr, each prefixed with the script's name (scripts/cluster.sh:
# "cluster: ...").
#
#   log MESSAGE...   prints "NAME: MESSAGE"
#   die MESSAGE...   logs MESSAGE and exits 1

_log_name="$(basename "$0" .sh)"

log() { printf '%s: %s\n' "$_log_name" "$*" >&2; }

die() {
  log "$*"
  exit 1
}
