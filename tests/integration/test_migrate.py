"""migrate.py on the real server: Prisma's migrate deploy semantics and ledger."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
import uuid

import pytest

from migration_soak.exceptions import MigrationError
from migration_soak.migrate import (
    PRISMA_ADVISORY_LOCK_KEY,
    LedgerBackend,
    MigrationBackend,
    checksum_matches,
    migration_checksum,
    verify_applied,
)

from .conftest import DOWN_SQL, DROP, INIT, MIGRATIONS, query

DROPPED = ("passwordHash", "emailVerified")

# information_schema view of the ledger Prisma creates (see LEDGER_DDL).
PRISMA_LEDGER_COLUMNS = [
    ("id", "character varying", 36, "NO", None),
    ("checksum", "character varying", 64, "NO", None),
    ("finished_at", "timestamp with time zone", None, "YES", None),
    ("migration_name", "character varying", 255, "NO", None),
    ("logs", "text", None, "YES", None),
    ("rolled_back_at", "timestamp with time zone", None, "YES", None),
    ("started_at", "timestamp with time zone", None, "NO", "now()"),
    ("applied_steps_count", "integer", None, "NO", "0"),
]


def ledger(target):
    return query(
        target,
        """SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at,
                  applied_steps_count
           FROM _prisma_migrations ORDER BY started_at, migration_name""",
    )


def columns_of(target, table="users"):
    return {r[0] for r in query(target, "SELECT column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'public' AND table_name = %s", (table,))}


def test_deploy_writes_the_ledger_exactly_as_prisma(target):
    backend = LedgerBackend(target, MIGRATIONS)
    assert isinstance(backend, MigrationBackend)
    result = backend.deploy()
    assert result.applied == (INIT, DROP) and result.already_applied == () and result.warnings == ()

    cols = query(target, """SELECT column_name, data_type, character_maximum_length, is_nullable, column_default
                            FROM information_schema.columns
                            WHERE table_schema = 'public' AND table_name = '_prisma_migrations'
                            ORDER BY ordinal_position""")
    assert cols == PRISMA_LEDGER_COLUMNS
    pk = query(target, """SELECT a.attname FROM pg_index i
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                          WHERE i.indrelid = '_prisma_migrations'::regclass AND i.indisprimary""")
    assert pk == [("id",)]

    rows = ledger(target)
    assert [r[3] for r in rows] == [INIT, DROP]
    for (row_id, checksum, finished_at, name, logs, rolled_back_at, started_at, steps), folder in zip(rows, (INIT, DROP)):
        assert uuid.UUID(row_id).version == 4 and len(row_id) == 36
        assert checksum == hashlib.sha256((MIGRATIONS / folder / "migration.sql").read_bytes()).hexdigest()
        assert finished_at is not None and finished_at >= started_at
        assert steps == 1 and logs is None and rolled_back_at is None
    assert not set(DROPPED) & columns_of(target)

    states = {s.name: s for s in backend.status()}
    assert [s.state for s in states.values()] == ["applied", "applied"]
    assert not any(s.modified or s.is_pending for s in states.values())
    assert states[DROP].checksum == states[DROP].db_checksum == rows[1][1]
    assert verify_applied(target, DROP, "users", DROPPED) == rows[1][2]

    again = backend.deploy()
    assert again.applied == () and again.already_applied == (INIT, DROP)
    assert ledger(target) == rows  # a second deploy is a no-op


def test_status_reads_without_creating_the_ledger(target):
    states = LedgerBackend(target, MIGRATIONS).status()
    assert [(s.name, s.state, s.is_pending) for s in states] == [(INIT, "pending", True), (DROP, "pending", True)]
    assert states[0].checksum == migration_checksum((MIGRATIONS / INIT / "migration.sql").read_bytes())
    assert query(target, "SELECT to_regclass('_prisma_migrations')") == [(None,)]


def test_non_empty_schema_without_ledger_is_refused(target):
    query(target, "CREATE TABLE legacy (id int)")
    with pytest.raises(MigrationError, match="P3005"):
        LedgerBackend(target, MIGRATIONS).deploy()
    assert query(target, "SELECT to_regclass('_prisma_migrations'), to_regclass('users')") == [(None, None)]


def test_folder_without_migration_sql_is_refused(target, tmp_path):
    migrations = tmp_path / "m"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "20260101000000_empty").mkdir()
    with pytest.raises(MigrationError, match="P3015.*20260101000000_empty"):
        LedgerBackend(target, migrations).deploy()
    assert query(target, "SELECT to_regclass('_prisma_migrations')") == [(None,)]  # refused before touching the db


def test_provider_mismatch_is_refused(target, tmp_path):
    migrations = tmp_path / "m"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "migration_lock.toml").write_text('provider = "mysql"\n')
    with pytest.raises(MigrationError, match="P3019"):
        LedgerBackend(target, migrations).deploy()


def _broken_dir(tmp_path, broken_sql: str):
    migrations = tmp_path / "m"
    migrations.mkdir()
    shutil.copy2(MIGRATIONS / "migration_lock.toml", migrations)
    shutil.copytree(MIGRATIONS / INIT, migrations / INIT)
    (migrations / "20250601000000_broken").mkdir()
    (migrations / "20250601000000_broken" / "migration.sql").write_text(broken_sql)
    (migrations / "20250701000000_later").mkdir()
    (migrations / "20250701000000_later" / "migration.sql").write_text('CREATE TABLE "later" ("id" TEXT);\n')
    return migrations


def test_failed_migration_is_recorded_blocks_deploys_until_rolled_back(target, tmp_path):
    broken = "20250601000000_broken"
    migrations = _broken_dir(tmp_path, 'ALTER TABLE "users" ADD COLUMN "nickname" TEXT;\nSELECT 1/0;\n')
    backend = LedgerBackend(target, migrations)

    with pytest.raises(MigrationError) as err:
        backend.deploy()
    assert "P3018" in str(err.value) and broken in str(err.value) and "division by zero" in str(err.value)
    # One implicit transaction: the ALTER before the error did not stay.
    assert "nickname" not in columns_of(target)
    assert query(target, "SELECT to_regclass('later')") == [(None,)]  # later migrations not attempted
    rows = {r[3]: r for r in ledger(target)}
    assert set(rows) == {INIT, broken}
    _, checksum, finished_at, _, logs, rolled_back_at, _, steps = rows[broken]
    assert finished_at is None and rolled_back_at is None and steps == 0
    assert "22012" in logs and "division by zero" in logs
    assert checksum == hashlib.sha256((migrations / broken / "migration.sql").read_bytes()).hexdigest()
    assert {s.name: s.state for s in backend.status()}[broken] == "failed"

    with pytest.raises(MigrationError, match="P3009") as err:
        backend.deploy()
    assert f"The `{broken}` migration started at" in str(err.value) and "division by zero" in str(err.value)
    assert len(ledger(target)) == 2

    assert backend.mark_rolled_back(broken) == 1
    assert backend.mark_rolled_back(broken) == 0  # idempotent
    state = {s.name: s for s in backend.status()}[broken]
    assert state.state == "rolled_back" and state.is_pending and state.rolled_back_at is not None

    (migrations / broken / "migration.sql").write_text('ALTER TABLE "users" ADD COLUMN "nickname" TEXT;\n')
    result = backend.deploy()
    assert result.applied == (broken, "20250701000000_later")
    assert "nickname" in columns_of(target)
    attempts = [r for r in ledger(target) if r[3] == broken]
    assert len(attempts) == 2  # Prisma keeps the rolled-back attempt and adds a new row
    assert attempts[0][5] is not None and attempts[0][2] is None
    assert attempts[1][5] is None and attempts[1][2] is not None and attempts[1][7] == 1


def test_mark_rolled_back_makes_an_applied_migration_pending(target):
    backend = LedgerBackend(target, MIGRATIONS)
    backend.deploy()
    assert backend.mark_rolled_back(DROP) == 1
    (removed,) = backend.removed_rows  # kept for the soak's record
    assert removed["migration_name"] == DROP and removed["finished_at"] and removed["rolled_back_at"]
    assert backend.mark_rolled_back(DROP) == 0
    states = {s.name: s for s in backend.status()}
    assert states[DROP].state == "pending" and states[DROP].is_pending
    assert DROP not in [r[3] for r in ledger(target)]  # only a missing row reads as pending to `prisma migrate status`
    assert states[INIT].state == "applied"
    with pytest.raises(MigrationError, match="not applied"):
        verify_applied(target, DROP, "users", DROPPED)
    # Re-adding the columns (the rollback's down SQL) lets the next deploy drop them again.
    query(target, DOWN_SQL.read_text())
    assert backend.deploy().applied == (DROP,)
    assert not set(DROPPED) & columns_of(target)
    assert [r[3] for r in ledger(target) if r[5] is None] == [INIT, DROP]


def test_modified_migration_warns_but_line_endings_do_not(target, init_only_dir, caplog):
    backend = LedgerBackend(target, init_only_dir)
    backend.deploy()
    script = init_only_dir / INIT / "migration.sql"
    original = script.read_bytes()

    script.write_bytes(original.replace(b"\n", b"\r\n"))  # what git may do on checkout
    assert checksum_matches(script.read_bytes(), migration_checksum(original))
    assert backend.deploy().warnings == ()
    assert not backend.status()[0].modified

    script.write_bytes(original + b"-- edited after it was applied\n")
    with caplog.at_level(logging.WARNING, logger="migration_soak.migrate"):
        result = backend.deploy()
    assert result.warnings == (f"The migration `{INIT}` was modified after it was applied.",)
    assert any("was modified after it was applied" in r.getMessage() for r in caplog.records)
    assert result.applied == ()  # a warning, not a re-apply
    assert backend.status()[0].modified


@pytest.mark.timeout(60)  # a missing lock_timeout would hang here, not fail
def test_advisory_lock_wait_is_bounded(target):
    holder = target.connect()
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (PRISMA_ADVISORY_LOCK_KEY,))
        started = time.monotonic()
        with pytest.raises(MigrationError, match=r"P1002.*pg_advisory_lock\(72707369\)"):
            LedgerBackend(target, MIGRATIONS, advisory_lock_wait_s=0.5).deploy()
        assert time.monotonic() - started < 5
        assert query(target, "SELECT to_regclass('_prisma_migrations')") == [(None,)]

        # A deploy that waits long enough proceeds once the holder lets go.
        threading.Timer(0.5, lambda: holder.cursor().execute("SELECT pg_advisory_unlock_all()")).start()
        assert LedgerBackend(target, MIGRATIONS, advisory_lock_wait_s=10).deploy().applied == (INIT, DROP)
    finally:
        holder.close()


@pytest.mark.timeout(60)  # a missing lock_timeout would hang here, not fail
def test_lock_timeout_keeps_the_ddl_from_queueing(seeded, caplog):
    """The application holds a lock on users for good: each try of the DROP fails after
    lock_timeout, and once the retries are spent the row is recorded as failed."""
    app = seeded.connect()
    try:
        with app.cursor() as cur:  # an open transaction that read users (ACCESS SHARE)
            cur.execute("SELECT count(*) FROM users")
        backend = LedgerBackend(seeded, MIGRATIONS, lock_timeout_s=0.5, lock_retries=1)
        started = time.monotonic()
        with pytest.raises(MigrationError, match="P3018") as err:
            backend.deploy()
        assert time.monotonic() - started < 5  # 2 x 0.5 s + 0.5 s backoff
        assert "55P03" in str(err.value) and "lock timeout" in str(err.value)
        assert "2 attempts: 1 lock timeout after 0.5" in str(err.value)
        assert [a["outcome"] for a in err.value.lock_attempts] == ["lock_timeout", "lock_timeout"]
    finally:
        app.rollback()
        app.close()
    assert set(DROPPED) <= columns_of(seeded)  # nothing dropped
    state = {s.name: s for s in backend.status()}[DROP]
    assert state.state == "failed" and "lock timeout" in state.logs
    with pytest.raises(MigrationError, match="in failed state"):
        verify_applied(seeded, DROP, "users", DROPPED)
    backend.mark_rolled_back(DROP)
    assert backend.deploy().applied == (DROP,)
    verify_applied(seeded, DROP, "users", DROPPED)


def test_verify_applied_checks_the_columns(target):
    with pytest.raises(MigrationError, match="no _prisma_migrations"):
        verify_applied(target, DROP, "users", DROPPED)
    LedgerBackend(target, MIGRATIONS).deploy()
    query(target, 'ALTER TABLE users ADD COLUMN "emailVerified" boolean')  # someone re-added one
    with pytest.raises(MigrationError, match="still has column.*emailVerified"):
        verify_applied(target, DROP, "users", DROPPED)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("setting", ["SET lock_timeout = 0;", "SET LOCAL lock_timeout = '1h';",
                                     "SELECT set_config('lock_timeout', '0', false);",
                                     "SET statement_timeout = 0;"])
def test_the_scripts_own_lock_timeout_does_not_let_the_ddl_queue_the_app(seeded, tmp_path, setting):
    """squawk's require-lock-timeout tells authors to put a SET lock_timeout in the script;
    any value there replaced migration.lock_timeout_s (0.3 s): the DROP waited ~5 s for the
    app's open read of users. The backend refuses such a script before recording or running it."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    script = migrations / DROP / "migration.sql"
    script.write_text(setting + "\n" + script.read_text())
    holder = seeded.connect(application_name="app-long-report")  # the app's open read of users
    with holder.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
    release = threading.Timer(5.0, holder.rollback)
    release.start()
    started = time.monotonic()
    try:
        backend = LedgerBackend(seeded, migrations, lock_timeout_s=0.3, lock_retries=0, _sleep=lambda s: None)
        with pytest.raises(MigrationError, match=rf"{DROP}/migration\.sql sets its own timeout: "
                                                 rf"['\"]{setting[:10]}") as err:
            backend.deploy()  # the DDL must give up after ~0.3 s, not wait for the reader
    finally:
        waited = time.monotonic() - started
        release.cancel()
        holder.rollback()
        holder.close()
    assert waited < 3, f"the DROP COLUMN waited {waited:.1f} s in the lock queue (lock_timeout_s 0.3)"
    assert query(seeded, "SELECT count(*) FROM _prisma_migrations WHERE migration_name = %s", (DROP,)) == [(0,)], \
        err.value
    assert query(seeded, """SELECT count(*) FROM information_schema.columns
                            WHERE table_name = 'users' AND column_name = 'passwordHash'""") == [(1,)]


@pytest.mark.timeout(60)
def test_a_lock_timeout_postgresql_refuses_leaves_no_failed_ledger_row(seeded):
    """3,000,000 s is 3e9 ms, above PostgreSQL's int limit: the ledger row was inserted
    before set_config failed, finished_at NULL (P3009 at the next deploy)."""
    backend = LedgerBackend(seeded, MIGRATIONS, lock_timeout_s=3_000_000, lock_retries=0, _sleep=lambda s: None)
    with pytest.raises(MigrationError, match=rf"migration {DROP} not started, nothing recorded in _prisma_migrations: "
                                             "PostgreSQL refuses lock_timeout 3000000000ms") as err:
        backend.deploy()
    rows = query(seeded, "SELECT migration_name, finished_at IS NULL FROM _prisma_migrations "
                         "WHERE migration_name = %s", (DROP,))
    assert rows == [], f"{err.value}\nledger rows left on staging: {rows}"
    LedgerBackend(seeded, MIGRATIONS, lock_timeout_s=3).deploy()  # nothing failed is left: deploy works


def test_a_script_that_moves_its_search_path_drops_there_and_check_drops_says_so(target, tmp_path):
    """The backend runs a script with search_path = public, but the script's own ``SET
    search_path`` moves its unqualified names: here ``ALTER TABLE users DROP COLUMN`` drops
    app.users' column, not public.users'. On main check_drops read it as public.users and
    accepted a plan whose migration.table is ``users`` (public): the soak would have backed up
    and restored public.users while the drop hit app.users."""
    from migration_soak.migrate import check_drops

    migrations = tmp_path / "m"
    migrations.mkdir()
    shutil.copy2(MIGRATIONS / "migration_lock.toml", migrations)
    shutil.copytree(MIGRATIONS / INIT, migrations / INIT)
    (migrations / "20250601000000_app").mkdir()
    (migrations / "20250601000000_app" / "migration.sql").write_text(
        'CREATE SCHEMA app;\nCREATE TABLE app.users ("id" TEXT PRIMARY KEY, "passwordHash" TEXT);\n')
    moved = 'SET search_path TO app;\nALTER TABLE "users" DROP COLUMN "passwordHash";\n'
    (migrations / "20250701000000_drop").mkdir()
    (migrations / "20250701000000_drop" / "migration.sql").write_text(moved)

    with pytest.raises(MigrationError, match=r"drops column app\.users\.passwordHash"):
        check_drops(moved, "users", ["passwordHash"])
    check_drops(moved, "app.users", ["passwordHash"])

    LedgerBackend(target, migrations).deploy()
    assert "passwordHash" in columns_of(target)  # public.users: untouched
    assert query(target, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app' "
                         "AND table_name = 'users' AND column_name = 'passwordHash'") == [(0,)]
