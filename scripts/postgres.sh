#!/usr/bin/env bash
# Sourced by scripts/test.sh: makes sure the tests have a PostgreSQL, and exports
# PORTCULLIS_TEST_POSTGRES for them.
#   1. PORTCULLIS_TEST_POSTGRES already set: used as it is.
#   2. Else the machine's own server on 127.0.0.1:5432 (database `test`, user `postgres`).
#   3. Else a throwaway cluster of our own: Debian's `postgresql` package is installed when
#      initdb is missing, a cluster is made in a temporary directory (trust auth, loopback, a
#      free port) and stopped and removed when the tests end.
# PORTCULLIS_TEST_OWN_POSTGRES=1 skips step 2 (to try step 3 on a machine that has a server).

pg_answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_find() {
  local tool=$1 found
  found=$(command -v "$tool" 2>/dev/null) && { echo "$found"; return 0; }
  for found in /usr/lib/postgresql/*/bin/"$tool"; do
    [ -x "$found" ] && { echo "$found"; return 0; }
  done
  return 1
}

pg_throwaway() {
  if ! pg_find initdb >/dev/null; then
    echo "setup: installing PostgreSQL for the tests (Debian package postgresql)" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq postgresql >/dev/null
  fi
  local initdb pg_ctl psql
  initdb=$(pg_find initdb) && pg_ctl=$(pg_find pg_ctl) && psql=$(pg_find psql) || {
    echo "setup: PostgreSQL tools (initdb, pg_ctl, psql) not found" >&2
    return 1
  }
  PG_TMP=$(mktemp -d /tmp/portcullis-pg.XXXXXX)
  # The server refuses to run as root: run it as the package's `postgres` user (or `nobody`).
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    local user=postgres
    id -u postgres >/dev/null 2>&1 || user=nobody
    chown "$user" "$PG_TMP"
    as=(runuser -u "$user" --)
  fi
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 40000))
    pg_answers 127.0.0.1 "$port" || break
  done
  "${as[@]}" "$initdb" -D "$PG_TMP/data" -U postgres --auth=trust -E UTF8 >"$PG_TMP/initdb.log" 2>&1 || {
    cat "$PG_TMP/initdb.log" >&2
    return 1
  }
  "${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w \
    -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || {
    cat "$PG_TMP/server.log" >&2
    return 1
  }
  PG_STOP=("${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -m fast stop)
  # For benches/load/outage.sh: the same server started again, and stopped as by a crash.
  PG_START=("${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w
    -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off" start)
  PG_CRASH=("${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -m immediate stop)
  "$psql" -h 127.0.0.1 -p "$port" -U postgres -q -c "CREATE DATABASE test" postgres
  export PORTCULLIS_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/test"
  echo "setup: throwaway PostgreSQL on 127.0.0.1:$port (stopped when the tests end)" >&2
}

pg_cleanup() {
  if [ -n "${PG_TMP:-}" ]; then
    "${PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$PG_TMP"
  fi
}

if [ -z "${PORTCULLIS_TEST_POSTGRES:-}" ]; then
  if [ "${PORTCULLIS_TEST_OWN_POSTGRES:-0}" != 1 ] && pg_answers 127.0.0.1 5432; then
    export PORTCULLIS_TEST_POSTGRES="postgres://postgres@127.0.0.1:5432/test"
  else
    trap pg_cleanup EXIT
    pg_throwaway
  fi
fi
