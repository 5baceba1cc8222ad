# staging-pooler: Debian's PgBouncer in transaction mode in front of staging-db, as hosted
# staging databases have (Supabase, Neon, RDS Proxy, most Kubernetes setups). The soak's
# checks go through it (soak_staging); DDL, dumps and locks go to staging-db directly
# (soak_staging_direct). tests/pgbouncer.py runs the same package in the test suite.
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer \
 && rm -rf /var/lib/apt/lists/*
COPY deploy/pgbouncer-entrypoint.sh /usr/local/bin/soak-pgbouncer-entrypoint.sh
USER postgres
EXPOSE 6432
ENTRYPOINT ["bash", "/usr/local/bin/soak-pgbouncer-entrypoint.sh"]
