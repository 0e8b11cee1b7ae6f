#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the multi-host study tests and print its URL.
#
#   eval "$(bash .ci/postgres.sh)"        # start; exports EABENCH_PG_URL and EABENCH_PG_DIR
#   bash .ci/postgres.sh stop [DIR]        # stop the server started above (DIR defaults to $EABENCH_PG_DIR)
#
# Installs Debian's `postgresql` package when no server binaries exist, initialises a cluster in a
# fresh temporary directory, starts it on 127.0.0.1 on a free port with trust authentication
# (nothing listens beyond loopback) and creates the database `eabench`.
# stdout carries only `export NAME=value` lines (the caller evals them); everything else goes to
# stderr. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  done
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  return 1
}

# Run a command as the server's owner: ourselves, or `postgres` when we are root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    # No python: pick a pseudo-random high port; the start below fails loudly if it is taken.
    echo $(( 20000 + RANDOM % 20000 ))
  fi
}

cmd_stop() {
  local dir="${1:-${EABENCH_PG_DIR:-}}"
  if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
    log "nothing to stop (give the directory printed as EABENCH_PG_DIR)"; return 1
  fi
  local bindir; bindir=$(find_bindir)
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
  log "stopped and removed $dir"
}

cmd_start() {
  local bindir
  if ! bindir=$(find_bindir); then
    if [ "$(id -u)" -ne 0 ]; then
      log "no PostgreSQL server binaries and not root: install Debian's 'postgresql' package"; return 1
    fi
    log "installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y --no-install-recommends postgresql >&2
    bindir=$(find_bindir) || { log "postgresql installed but initdb/pg_ctl not found"; return 1; }
  fi
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    log "creating system user postgres (the server refuses to run as root)"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  fi

  local dir port user=eabench db=eabench
  dir=$(mktemp -d "${TMPDIR:-/tmp}/eabench-pg.XXXXXX")
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi
  port=$(free_port)

  log "initdb in $dir/data ($bindir)"
  as_owner "$bindir/initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  # Socket directory inside the temp dir: /var/run/postgresql may not exist or be writable.
  log "starting on 127.0.0.1:$port"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >/dev/null 2>&1 \
    || { cat "$dir/server.log" >&2; return 1; }
  as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db" >&2

  echo "export EABENCH_PG_URL=postgresql+psycopg2://$user@127.0.0.1:$port/$db"
  echo "export EABENCH_PG_DIR=$dir"
  log "ready: postgresql+psycopg2://$user@127.0.0.1:$port/$db (stop: bash .ci/postgres.sh stop $dir)"
}

case "${1:-start}" in
  start) cmd_start ;;
  stop) shift; cmd_stop "$@" ;;
  *) log "usage: $0 [start|stop [DIR]]"; exit 2 ;;
esac
