"""Fixtures for integration tests on the real embedded PostgreSQL server.

Every test gets its own empty database (``fresh_db``); ``seeded`` applies the Prisma
init migration through ``LedgerBackend`` and inserts a few thousand users whose
``passwordHash`` values are all distinct, never NULL, and include the characters COPY
text format has to escape (tab, newline, carriage return, backslash, ``\\.``, ``\\N``),
quotes and non-ASCII text, so that a byte-for-byte restore is actually proven.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo import postgres
from migration_soak.migrate import LedgerBackend
from migration_soak.pgconn import PgTarget
from migration_soak.store import Store
from tests.conftest import recreate_database
from tests.pgbouncer import PgBouncer

REPO = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO / "include" / "prisma" / "migrations"
INIT = "20250101000000_init"
DROP = "20251202020032_update_user_schema_final"
DOWN_SQL = REPO / "include" / "sql" / "rollback" / f"{DROP}.down.sql"
#: What the default plan's rollback restores (``migration.table``, ``migration.dropped_columns``).
USERS_COLUMNS = {"table": "users", "columns": ("passwordHash", "emailVerified")}
SEED_USERS = 5000

# Set-based seed; values depend only on g, so every run is identical.
SEED_SQL = r"""
INSERT INTO clients (id, name, "updatedAt")
SELECT 'cli_' || g, 'Client ' || g, now() FROM generate_series(1, 10) g
ON CONFLICT DO NOTHING;

INSERT INTO users (id, email, "authorizerId", "clientId", "passwordHash", "emailVerified", "createdAt", "updatedAt")
SELECT 'usr_' || lpad(g::text, 7, '0'),
       'user' || g || '@example.test',
       'auth-' || g,
       CASE WHEN g %% 4 = 0 THEN NULL ELSE 'cli_' || (g %% 10 + 1) END,
       CASE g %% 10
         WHEN 0 THEN E'tab\there\\back\\\\slash ' || g
         WHEN 1 THEN E'line\nbreak\r\ncrlf ' || g
         WHEN 2 THEN 'quote''s "double" ; -- ' || g
         WHEN 3 THEN E'\\.\n' || g
         WHEN 4 THEN E'\\N ' || g
         WHEN 5 THEN 'ñandú 🔐 €' || g
         ELSE '$2b$10$' || md5(g::text) || '/' || g
       END,
       g %% 3 = 0,
       timestamp '2025-01-01' + g * interval '1 minute',
       timestamp '2025-06-01' + g * interval '1 second'
FROM generate_series(%(first)s, %(last)s) g;
"""


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """Folder of pg_dump/pg_restore/psql matching the embedded server."""
    return postgres.bin_dir()


@pytest.fixture(scope="session")
def pgbouncer(pg_server, tmp_path_factory) -> PgBouncer:
    """A real PgBouncer (Debian's package) in front of ``pg_server``: transaction pooling,
    one server connection per (database, user) pool, every database through the wildcard
    entry, logging in as the superuser. ``pgbouncer.target(name)`` is database ``name``
    through the pooler; ``pgbouncer.admin("SHOW SERVERS")`` reads its admin console.
    Without the binary the test is skipped, except in CI (``CI`` set), where it fails
    (``.ci/run`` installs Debian's package)."""
    import os

    from tests.pgbouncer import PGBOUNCER

    if not Path(PGBOUNCER).exists():
        if os.environ.get("CI"):
            pytest.fail("the pgbouncer binary is missing in CI (.ci/run installs Debian's package)")
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer); CI installs it")
    with PgBouncer(pg_server.host, pg_server.port, postgres.SUPERUSER, pg_server.password,
                   workdir=tmp_path_factory.mktemp("pgbouncer")) as bouncer:
        yield bouncer


@pytest.fixture
def target(pg_server, fresh_db) -> PgTarget:
    """The fresh database as a ``PgTarget`` (superuser, password auth over TCP)."""
    return PgTarget(host=pg_server.host, port=pg_server.port, database=fresh_db,
                    user=postgres.SUPERUSER, password=pg_server.password)


@pytest.fixture
def init_only_dir(tmp_path) -> Path:
    """A Prisma migrations folder holding only the init migration (same bytes)."""
    out = tmp_path / "migrations_init"
    out.mkdir()
    shutil.copy2(MIGRATIONS / "migration_lock.toml", out / "migration_lock.toml")
    shutil.copytree(MIGRATIONS / INIT, out / INIT)
    return out


def seed_users(target: PgTarget, first: int, last: int) -> None:
    conn = target.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SEED_SQL, {"first": first, "last": last})
    finally:
        conn.close()


@pytest.fixture
def seeded(target, init_only_dir) -> PgTarget:
    """``target`` with the init migration applied by ``LedgerBackend`` and 5000 users."""
    LedgerBackend(target, init_only_dir).deploy()
    seed_users(target, 1, SEED_USERS)
    return target


def snapshot(target: PgTarget) -> dict[str, tuple[bytes, bool]]:
    """``{id: (passwordHash as UTF-8 bytes, emailVerified)}`` of every user."""
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT id, convert_to("passwordHash", \'UTF8\'), "emailVerified" FROM users')
            return {row[0]: (bytes(row[1]) if row[1] is not None else None, row[2]) for row in cur.fetchall()}
    finally:
        conn.close()


def plain_backup(target: PgTarget, pg_bin: Path, path: Path):
    """A ``BackupRecord`` of a plain custom-format dump at ``path``, as ``take_backup``
    wrote before it compressed with zstd (``pg_dump --format=custom --file``, pg_dump's
    own default compression): such files must keep verifying and restoring."""
    from datetime import datetime, timezone

    from migration_soak import archive
    from migration_soak.backup import BackupRecord, verify_backup

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(pg_bin / "pg_dump"), "--format=custom", "--no-password", f"--file={path}"],
                   env=target.child_env(), check=True)
    assert archive.kind(path) == "custom"
    check = verify_backup(path, pg_bin)
    return BackupRecord(path=path, size_bytes=check.size_bytes, sha256=check.sha256, duration_s=0.0,
                        pg_dump_version=check.dumped_by, server_version=check.dumped_from, tables=check.tables,
                        created_at=datetime.now(timezone.utc))


def query(target: PgTarget, text: str, params=None) -> list[tuple]:
    conn = target.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


class PopenRecorder:
    """Wraps ``subprocess.Popen`` (which ``subprocess.run`` uses) to record argv and env."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[list[str], dict | None]] = []
        real = subprocess.Popen
        recorder = self

        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, args, *a, **kw):
                recorder.calls.append(([str(x) for x in args], kw.get("env")))
                super().__init__(args, *a, **kw)

        monkeypatch.setattr(subprocess, "Popen", Recording)


@pytest.fixture
def popen_recorder(monkeypatch) -> PopenRecorder:
    return PopenRecorder(monkeypatch)


@pytest.fixture(params=["psycopg", "psycopg2"])
def store(pg_server, fresh_db, request) -> Store:
    """An observation store in a database of its own beside the test's staging database,
    through psycopg 3 (the driver ``PostgresHook`` picks) and psycopg2."""
    name = f"{fresh_db[:50]}_store"
    recreate_database(pg_server, name)
    url = sa.URL.create(f"postgresql+{request.param}", username="postgres", password=pg_server.password,
                        host=pg_server.host, port=pg_server.port, database=name)
    s = Store(sa.create_engine(url))
    s.create_schema()
    yield s
    s.engine.dispose()


@pytest.fixture
def staging(seeded, monkeypatch) -> PgTarget:
    """The seeded database as the plan's ``soak_staging`` Airflow connection, and as its
    ``soak_staging_direct`` one (the embedded server is reached without a pooler; dumps
    go through the direct connection)."""
    value = json.dumps({
        "conn_type": "postgres", "host": seeded.host, "port": seeded.port, "login": seeded.user,
        "password": seeded.password, "schema": seeded.database})
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING", value)
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING_DIRECT", value)
    return seeded
