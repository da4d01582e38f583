#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use answers on 127.0.0.1:5432: starts the local Debian
# cluster if it is stopped, lets loopback connections in without a password (a fresh Debian
# cluster asks for one on TCP), and creates the roles `postgres` and `root` (superusers) and
# the database `test`. Idempotent; a machine whose server already lets the tests in is left as
# it is.
set -euo pipefail
answers() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
lets_tests_in() {
  PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -p 5432 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1 &&
    PGCONNECT_TIMEOUT=3 psql -w -h 127.0.0.1 -p 5432 -U root -d test -Atqc 'select 1' >/dev/null 2>&1
}
answers && lets_tests_in && exit 0

version=""
if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
  version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -V | tail -n 1)"
fi
if [[ -z "$version" ]]; then
  if answers; then
    echo "postgres: a server answers on 127.0.0.1:5432 but does not let user postgres/root into database test without a password, and it is not a local Debian cluster this script can set up" >&2
  else
    echo "postgres: nothing answers on 127.0.0.1:5432 and no local cluster is installed (scripts/install-deps.sh installs one)" >&2
  fi
  exit 1
fi

hba="/etc/postgresql/$version/main/pg_hba.conf"
marker="# wapipe tests: loopback without a password"
if ! grep -qF "$marker" "$hba"; then
  echo "postgres: trusting loopback connections in $hba (a test machine's database)"
  tmp="$(mktemp)"
  { echo "$marker"; echo "host all all 127.0.0.1/32 trust"; echo "host all all ::1/128 trust"; cat "$hba"; } >"$tmp"
  cat "$tmp" >"$hba"
  rm -f "$tmp"
fi
if ! answers; then
  echo "postgres: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
else
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
fi
for _ in $(seq 1 100); do answers && break; sleep 0.2; done
answers || { echo "postgres: cluster $version/main did not start" >&2; exit 1; }

as_postgres() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }
for role in postgres root; do
  if [[ "$(as_postgres -Atc "select 1 from pg_roles where rolname = '$role'")" != 1 ]]; then
    as_postgres -c "create role \"$role\" superuser login"
  fi
done
if [[ "$(as_postgres -Atc "select 1 from pg_database where datname = 'test'")" != 1 ]]; then
  as_postgres -c "create database test owner postgres"
fi
for _ in $(seq 1 50); do lets_tests_in && exit 0; sleep 0.2; done
echo "postgres: the cluster runs but user postgres/root still cannot reach database test" >&2
exit 1
