"""Faults around ``migrate deploy`` (issue 4, item 4): a script failing half-way, the
advisory lock held elsewhere, the DDL blocked by the application, and a retried task."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from migration_soak.exceptions import MigrationError
from migration_soak.migrate import PRISMA_ADVISORY_LOCK_KEY, LedgerBackend, verify_applied
from tests.integration.conftest import DROP, INIT, MIGRATIONS, query, snapshot

DROPPED = ("passwordHash", "emailVerified")
HALF = "20251202020032_update_user_schema_half"


def _columns(target):
    return {r[0] for r in query(target, "SELECT column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'public' AND table_name = 'users'")}


def _ledger(target):
    return query(target, "SELECT id, migration_name, checksum, started_at, finished_at, logs, rolled_back_at, "
                         "applied_steps_count FROM _prisma_migrations ORDER BY started_at, migration_name")


@pytest.mark.timeout(60)
def test_migration_failing_half_way_leaves_failed_ledger_state(seeded, tmp_path):
    """The drop migration's first statement (DROP COLUMN "passwordHash") succeeds, the
    second fails: the script's one implicit transaction rolls the first back (the values
    are all still there), the ledger row is failed with the error in ``logs`` (P3018), and
    the next deploy refuses (P3009). The general P3018/P3009 cycle with a later
    migration and ``mark_rolled_back`` is ``tests/integration/test_migrate.py::
    test_failed_migration_is_recorded_blocks_deploys_until_rolled_back``."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    shutil.copy2(MIGRATIONS / "migration_lock.toml", migrations / "migration_lock.toml")
    shutil.copytree(MIGRATIONS / INIT, migrations / INIT)
    (migrations / HALF).mkdir()
    (migrations / HALF / "migration.sql").write_text(
        'ALTER TABLE "users" DROP COLUMN "passwordHash";\n'
        'ALTER TABLE "users" DROP COLUMN "noSuchColumn";\n'
    )
    before = snapshot(seeded)
    backend = LedgerBackend(seeded, migrations)

    with pytest.raises(MigrationError) as err:
        backend.deploy()
    text = str(err.value)
    assert text.startswith("P3018") and HALF in text and "42703" in text and "noSuchColumn" in text

    assert set(DROPPED) <= _columns(seeded)  # the first statement's DDL was rolled back
    assert snapshot(seeded) == before  # every value still there
    (row,) = [r for r in _ledger(seeded) if r[1] == HALF]
    _, _, _, _, finished_at, logs, rolled_back_at, steps = row
    assert finished_at is None and rolled_back_at is None and steps == 0
    assert "Database error code: 42703" in logs and "noSuchColumn" in logs
    state = {s.name: s for s in backend.status()}[HALF]
    assert state.state == "failed" and not state.is_pending and state.logs == logs
    with pytest.raises(MigrationError, match="in failed state"):
        verify_applied(seeded, HALF, "users", DROPPED)

    started = time.monotonic()
    with pytest.raises(MigrationError) as err:
        backend.deploy()
    assert str(err.value).startswith("P3009") and f"The `{HALF}` migration started at" in str(err.value)
    assert time.monotonic() - started < 5
    assert len(_ledger(seeded)) == 2  # the refusal wrote nothing


@pytest.mark.timeout(60)
def test_advisory_lock_held_by_another_session_times_out_clearly(target):
    """Another session holds ``pg_advisory_lock(72707369)`` (a concurrent Prisma deploy
    or a stuck soak): deploy and mark_rolled_back give up after ``advisory_lock_wait_s``
    with a P1002 naming the lock and its holder. (The later successful wait is in
    ``tests/integration/test_migrate.py::test_advisory_lock_wait_is_bounded``.)"""
    holder = target.connect(application_name="other-deploy")
    holder.autocommit = True
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (PRISMA_ADVISORY_LOCK_KEY,))
            cur.execute("SELECT pg_backend_pid()")
            holder_pid = cur.fetchone()[0]
        backend = LedgerBackend(target, MIGRATIONS, advisory_lock_wait_s=1.0)
        for call in (backend.deploy, lambda: backend.mark_rolled_back(DROP)):
            started = time.monotonic()
            with pytest.raises(MigrationError) as err:
                call()
            elapsed = time.monotonic() - started
            text = str(err.value)
            assert 1.0 <= elapsed < 3.0, elapsed
            assert text.startswith("P1002") and "pg_advisory_lock(72707369)" in text
            assert f"held by pid {holder_pid} (application_name 'other-deploy'" in text, text
            assert target.describe() in text and target.password not in text
        assert query(target, "SELECT to_regclass('_prisma_migrations')") == [(None,)]
    finally:
        holder.close()


@pytest.mark.timeout(60)
def test_ddl_waiting_on_a_lock_fails_within_lock_timeout(seeded):
    """The application holds ACCESS SHARE on users (an open transaction that read it).
    The DROP waits for ACCESS EXCLUSIVE and, while it waits, PostgreSQL queues every new
    query on users behind it: ``lock_timeout`` bounds both the deploy and that stall."""
    lock_timeout_s = 1.0
    app = seeded.connect(application_name="app-open-tx")
    reader = seeded.connect(application_name="app-reader")
    reader.autocommit = True
    watcher = seeded.connect(application_name="fault-watcher")
    watcher.autocommit = True
    outcome: dict = {}

    def deploy():
        t0 = time.monotonic()
        try:
            # One try: the stall of a single attempt is what is measured here (the retries
            # are tests/integration/test_lock_safety.py).
            LedgerBackend(seeded, MIGRATIONS, lock_timeout_s=lock_timeout_s, lock_retries=0).deploy()
        except MigrationError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - t0

    try:
        with app.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")  # ACCESS SHARE until the transaction ends
        worker = threading.Thread(target=deploy)
        worker.start()
        waiting = False
        deadline = time.monotonic() + 10
        while not waiting and time.monotonic() < deadline:
            with watcher.cursor() as cur:
                cur.execute("""SELECT count(*) FROM pg_stat_activity WHERE application_name = 'migration-soak'
                               AND wait_event_type = 'Lock' AND query ILIKE '%DROP COLUMN%'""")
                waiting = cur.fetchone()[0] > 0
        assert waiting, "the DROP never waited on the lock"
        t0 = time.monotonic()
        with reader.cursor() as cur:  # the application's next query on users
            cur.execute("SELECT email FROM users WHERE id = 'usr_0000001'")
            assert cur.fetchone() is not None
        stalled = time.monotonic() - t0
        worker.join(20)
        t0 = time.monotonic()
        with reader.cursor() as cur:
            cur.execute("SELECT email FROM users WHERE id = 'usr_0000002'")
        after = time.monotonic() - t0
    finally:
        app.rollback()
        app.close()
        reader.close()
        watcher.close()
    print(f"\ndeploy gave up after {outcome.get('elapsed', 0):.2f} s (lock_timeout {lock_timeout_s} s); "
          f"concurrent SELECT waited {stalled * 1000:.0f} ms, then {after * 1000:.1f} ms")
    error = outcome.get("error")
    assert isinstance(error, MigrationError) and "55P03" in str(error) and "lock timeout" in str(error)
    assert outcome["elapsed"] < lock_timeout_s + 2.0
    assert stalled < lock_timeout_s + 0.5  # queued behind the DDL at most until it gave up
    assert after < 0.5
    assert set(DROPPED) <= _columns(seeded)
    assert {s.name: s.state for s in LedgerBackend(seeded, MIGRATIONS).status()}[DROP] == "failed"


def test_task_retried_after_migrate_is_idempotent(target):
    """A retried ``migrate`` task after a successful deploy changes nothing: the second
    deploy applies nothing and the ledger rows are unchanged (ids, checksums, times).
    A retry after a *failed* deploy refuses with P3009 (see the half-way test)."""
    backend = LedgerBackend(target, MIGRATIONS)
    first = backend.deploy()
    assert first.applied == (INIT, DROP)
    rows = _ledger(target)
    second = backend.deploy()
    assert second.applied == () and second.already_applied == (INIT, DROP) and second.warnings == ()
    assert _ledger(target) == rows
    verify_applied(target, DROP, "users", DROPPED)
