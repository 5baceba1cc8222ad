#!/usr/bin/env bash
# staging-db: the folder PostgreSQL's logging collector writes server.log to (the soak's
# slow statement / lock checks read it as SOAK_DB_LOG), owned by postgres and readable by
# the Airflow workers, which mount the same volume read-only. Then the image's own entrypoint.
set -euo pipefail
install -d -o postgres -g postgres -m 0755 /var/log/postgresql/soak
exec docker-entrypoint.sh "$@"
