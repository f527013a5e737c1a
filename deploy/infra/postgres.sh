#!/bin/sh
# PostgreSQL for the `scale` profile: initialise the data dir on the first start (role and
# database from $POSTGRES_USER / $POSTGRES_DB, password from $POSTGRES_PASSWORD, network
# clients with scram-sha-256), then run the server in the foreground as the postgres user.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user="${POSTGRES_USER:-rlm}"
db="${POSTGRES_DB:-rlm}"
data=/var/lib/postgresql/data
bin=/usr/lib/postgresql/bin
as_postgres="setpriv --reuid=postgres --regid=postgres --init-groups"
mkdir -p "$data" /run/postgresql
chown postgres:postgres "$data" /run/postgresql
chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  chown postgres "$pwfile"
  $as_postgres "$bin/initdb" -D "$data" -U "$user" --pwfile="$pwfile" --encoding=UTF8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$data/pg_hba.conf"
  echo "CREATE DATABASE \"$db\" OWNER \"$user\";" \
    | $as_postgres "$bin/postgres" --single -D "$data" -j postgres >/dev/null
fi
exec $as_postgres "$bin/postgres" -D "$data" -c listen_addresses='*' -c max_connections=200
