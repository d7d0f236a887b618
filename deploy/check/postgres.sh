#!/bin/sh
# The official postgres image's behaviour that the compose file relies on, for Debian's
# PostgreSQL: on first start create the cluster with superuser $POSTGRES_USER (password
# $POSTGRES_PASSWORD) and database $POSTGRES_DB; then run the server on $PGPORT, loopback only.
set -eu
bin=/usr/lib/postgresql/15/bin
data=/var/lib/postgresql/data/pgdata
if [ ! -s "$data/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    "$bin/initdb" --pgdata="$data" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
    rm -f "$pwfile"
    echo "CREATE DATABASE \"$POSTGRES_DB\"" | "$bin/postgres" --single -D "$data" postgres >/dev/null
fi
exec "$bin/postgres" -D "$data" -p "$PGPORT" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories=/tmp
