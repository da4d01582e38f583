#!/usr/bin/env bash
# Pid files that cannot point at somebody else's process. A pid file holds "PID STARTTIME", the
# start time being field 22 of /proc/PID/stat (clock ticks since boot). A pid that has been
# reused by another process after ours exited has another start time, so it is never signalled.
#
#   proc_record PID FILE     writes PID and its start time to FILE
#   proc_pid FILE            prints the pid when FILE names a process that is still ours
#   proc_stop FILE [SECS]    SIGTERM (to the process group when it leads one), waits up to SECS
#                            (default 30), then SIGKILL, and only ever to the process FILE
#                            recorded; removes FILE
#   proc_spawn FILE LOG CMD...
#                            runs CMD in the background under nohup, stdin from /dev/null, its
#                            output appended to LOG; records it in FILE
#   proc_await FILE SECS CMD...
#                            runs CMD (a readiness probe) every 0.1 s until it succeeds, for up
#                            to SECS; fails early when the process FILE records has exited
#   proc_status NAME FILE ADDRESS PROBE...
#                            prints ADDRESS when the process FILE records runs and PROBE succeeds;
#                            else fails, saying to stderr "NAME: not running" or "NAME: running
#                            (pid PID) but not answering on ADDRESS"
#   proc_fail MESSAGE LOG LINES
#                            prints MESSAGE and the last LINES lines of LOG to stderr; exits 1

# proc_start_time PID: field 22 of /proc/PID/stat, read after the ")" that ends the command name
# (which may itself hold spaces or parentheses).
proc_start_time() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  # shellcheck disable=SC2086 # split the remaining fields on purpose
  set -- $stat
  # After the command name: state is field 3, so the start time (22) is the 20th here.
  printf '%s\n' "${20}"
}

proc_record() {
  local start
  start="$(proc_start_time "$1")" || start=""
  printf '%s %s\n' "$1" "$start" >"$2"
}

proc_pid() {
  local pid start now
  [[ -f "$1" ]] || return 1
  read -r pid start <"$1" || return 1
  [[ -n "$pid" ]] || return 1
  now="$(proc_start_time "$pid")" || return 1
  # A file from before start times were recorded: trust the pid only while it runs.
  [[ -z "$start" || "$start" == "$now" ]] || return 1
  printf '%s\n' "$pid"
}

proc_stop() {
  local file="$1" seconds="${2:-30}" pid group=""
  pid="$(proc_pid "$file")" || { rm -f "$file"; return 0; }
  [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]] && group="-"
  kill -TERM -- "$group$pid" 2>/dev/null || true
  local tenths=$((seconds * 10)) i
  for ((i = 0; i < tenths; i++)); do
    proc_pid "$file" >/dev/null || break
    sleep 0.1
  done
  if proc_pid "$file" >/dev/null; then
    echo "$(basename "$file" .pid): still running ${seconds}s after SIGTERM; sending SIGKILL" >&2
    kill -KILL -- "$group$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      proc_pid "$file" >/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$file"
}

proc_spawn() {
  local file="$1" log="$2"
  shift 2
  # set +m: the command is the recorded process itself, not a job-control parent that exits.
  set +m
  nohup "$@" >>"$log" 2>&1 </dev/null &
  proc_record "$!" "$file"
}

proc_await() {
  local file="$1" end=$((SECONDS + $2))
  shift 2
  while ((SECONDS < end)); do
    "$@" && return 0
    proc_pid "$file" >/dev/null || return 1
    sleep 0.1
  done
  return 1
}

proc_status() {
  # "where", not "address": a local would hide the caller's $address from PROBE (its function).
  local name="$1" file="$2" where="$3" pid
  shift 3
  if ! pid="$(proc_pid "$file")"; then
    echo "$name: not running" >&2
    return 1
  fi
  if ! "$@"; then
    echo "$name: running (pid $pid) but not answering on $where" >&2
    return 1
  fi
  printf '%s\n' "$where"
}

proc_fail() {
  echo "$1" >&2
  tail -n "$3" "$2" >&2
  exit 1
}
