#!/usr/bin/env bash
# Writes PgBouncer's config from the environment (the password only into a 0600 file),
# then runs it in the foreground. Transaction pooling: a client holds a server connection
# for one transaction only, so session state must never be left behind (docs/operations.md,
# "Pooled and direct connections").
set -euo pipefail
: "${STAGING_POSTGRES_PASSWORD:?set STAGING_POSTGRES_PASSWORD}"
conf=/tmp/pgbouncer
install -d -m 0700 "$conf"
umask 077
printf '"postgres" "%s"\n' "$STAGING_POSTGRES_PASSWORD" > "$conf/userlist.txt"
cat > "$conf/pgbouncer.ini" <<INI
[databases]
* = host=${POOLER_SERVER_HOST:-staging-db} port=${POOLER_SERVER_PORT:-5432}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
auth_type = scram-sha-256
auth_file = $conf/userlist.txt
pool_mode = transaction
default_pool_size = ${POOLER_POOL_SIZE:-20}
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
INI
exec pgbouncer "$conf/pgbouncer.ini"
