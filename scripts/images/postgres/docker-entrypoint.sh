#!/bin/bash
# Entrypoint of the postgres:15 stand-in: the parts of the official image's entrypoint that
# people use. POSTGRES_USER / POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) / POSTGRES_DB (and
# POSTGRES_HOST_AUTH_METHOD), a data directory initialised on first start,
# /docker-entrypoint-initdb.d/* run once, and the server running as the postgres user.
set -euo pipefail

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

# `docker run IMAGE -c key=value` passes server options, as with the official image.
if [ "${1:0:1}" = - ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
    exec "$@"
fi

# POSTGRES_PASSWORD_FILE (Docker secrets) as the official image reads it: into an exported
# POSTGRES_PASSWORD, which whatever this script starts inherits, the server included.
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE are set (but are exclusive)" >&2
        exit 1
    fi
    POSTGRES_PASSWORD=$(<"$POSTGRES_PASSWORD_FILE")
    export POSTGRES_PASSWORD
    unset POSTGRES_PASSWORD_FILE
fi

# Started as root: own the volume (a fresh bind mount is root's) and drop privileges.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

psql_init() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        echo "error: database is uninitialized and POSTGRES_PASSWORD is not set" \
            "(set it, or POSTGRES_HOST_AUTH_METHOD=trust to allow connections without one)" >&2
        exit 1
    fi
    pwfile=()
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile=(--pwfile=/dev/stdin)
    fi
    initdb --username="$POSTGRES_USER" "${pwfile[@]}" \
        --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" <<<"${POSTGRES_PASSWORD:-}"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all $POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

    # A temporary server on a private Unix socket only: nothing (not even a pg_isready
    # healthcheck) sees a server before the init scripts are done.
    export PGHOST=/tmp/docker-entrypoint-init
    mkdir -p "$PGHOST"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$PGHOST" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql_init --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    shopt -s nullglob
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh)
                echo "running $f"
                # shellcheck disable=SC1090  # an init script, sourced as by the official image
                if [ -x "$f" ]; then "$f"; else . "$f"; fi
                ;;
            *.sql) echo "running $f"; psql_init --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | psql_init --dbname "$POSTGRES_DB" ;;
            *) echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGHOST
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
