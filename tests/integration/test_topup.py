"""The top-up (topup.py): values of the dropped columns written between the pre-migration
backup and the DDL (the rehearsal and the fingerprint run meanwhile) come back with the
rollback, by either method; without a top-up the restore says they do not."""

from __future__ import annotations

import pytest
from airflow.sdk import ObjectStoragePath

from migration_soak import runbook, topup
from migration_soak.backup import take_backup
from migration_soak.exceptions import BackupError, RollbackError
from migration_soak.migrate import LedgerBackend
from migration_soak.rollback import restore_by_method

from .conftest import DOWN_SQL, MIGRATIONS, SEED_USERS, USERS_COLUMNS, query, seed_users, snapshot


def root(tmp_path) -> ObjectStoragePath:
    return ObjectStoragePath((tmp_path / "kept").resolve().as_uri())


def written_after_the_backup(target) -> None:
    """What the app writes while the rehearsal runs: a password change, a sign-up (values
    of both dropped columns), and a change that leaves them alone."""
    query(target, """UPDATE users SET "passwordHash" = 'changed-after-backup', "emailVerified" = true
                     WHERE id = 'usr_0000001'""")
    query(target, """UPDATE users SET email = 'moved@example.test' WHERE id = 'usr_0000002'""")
    seed_users(target, SEED_USERS + 1, SEED_USERS + 1)


@pytest.mark.parametrize("method", ["copy", "rebuild"])
def test_values_written_between_the_backup_and_the_ddl_come_back(seeded, pg_bin, tmp_path, method):
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    written_after_the_backup(seeded)
    kept = topup.take(seeded, root(tmp_path), "topup_1", "users", "id", USERS_COLUMNS["columns"], backup.watermark)
    assert kept is not None and kept.rows == 3 and kept.since == backup.watermark  # the three rows, no other
    assert topup.TopUp.from_dict(kept.to_dict()) == kept
    at_drop = snapshot(seeded)  # what the migration destroys
    LedgerBackend(seeded, MIGRATIONS).deploy()
    # a retried migrate task after the DDL: the columns are gone, the first top-up stands
    assert topup.take(seeded, root(tmp_path), "topup_2", "users", "id", USERS_COLUMNS["columns"],
                      backup.watermark) is None
    result = restore_by_method(method, seeded, backup, pg_bin, down_sql=DOWN_SQL, topup=kept, **USERS_COLUMNS)
    assert snapshot(seeded) == at_drop  # every value as it was at the DDL, the three rows included
    assert (result.mismatches, result.topup_rows, result.rows_at_backup) == (0, 3, SEED_USERS + 1)
    text = runbook.restore_event(result.to_dict())["text"]
    assert f"or written up to the top-up read just before the migration ({kept.taken_at}; 3 rows from it)" in text


def test_without_a_top_up_the_restore_says_what_it_could_not_give_back(seeded, pg_bin, tmp_path):
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    written_after_the_backup(seeded)
    LedgerBackend(seeded, MIGRATIONS).deploy()
    result = restore_by_method("copy", seeded, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert query(seeded, """SELECT "passwordHash" FROM users WHERE id = 'usr_0000001'""") != [("changed-after-backup",)]
    text = runbook.restore_event(result.to_dict())["text"]
    assert "; no top-up was taken: values written between the backup and the migration are not restored" in text
    assert "; 1 rows of users inserted after the backup keep NULL or the column default" in text


def test_a_damaged_top_up_restores_nothing(seeded, pg_bin, tmp_path):
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    written_after_the_backup(seeded)
    kept = topup.take(seeded, root(tmp_path), "topup_1", "users", "id", USERS_COLUMNS["columns"], backup.watermark)
    LedgerBackend(seeded, MIGRATIONS).deploy()
    path = ObjectStoragePath(kept.location)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RollbackError, match="the top-up of public.users cannot be read, nothing restored"):
        restore_by_method("copy", seeded, backup, pg_bin, down_sql=DOWN_SQL, topup=kept, **USERS_COLUMNS)
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(0,)]  # not even re-added


def test_the_migrate_task_tops_up_from_the_backup_it_recorded(seeded, store, pg_bin, tmp_path):
    """The migrate task's argument is the fingerprint task's output, not the backup record:
    the top-up reads the watermark from the run's backup event (it had copied every row,
    saying "the backup has no watermark", in the first demo after it was written)."""
    from migration_soak.plan import load_plan

    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    with pytest.raises(BackupError, match="no backup recorded for this run"):
        runbook.take_topup(plan, "r1", store, seeded)
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    written_after_the_backup(seeded)
    event = runbook.take_topup(plan, "r1", store, seeded)
    assert event["rows"] == 3 and event["since"] == backup.watermark
    assert event["text"] == (f"top-up of public.users: 3 rows written since the backup (watermark {backup.watermark}), "
                             "their passwordHash, emailVerified kept just before the migration")
    assert store.events("r1", "topup")[-1]["payload"]["rows"] == 3


@pytest.mark.xfail(strict=True, reason="the gap without the closing top-up (Prisma CLI backend, topup.take alone): a value written between the "
                                       "top-up's snapshot and the DDL's lock is in neither the backup, the top-up "
                                       "nor the table (topup.py, 'What it does not capture')")
def test_a_value_written_between_the_top_up_and_the_ddl_is_not_restored(seeded, pg_bin, tmp_path):
    """Measures the gap the migrate task leaves: it takes the top-up, keeps it and reads it
    back, then deploys; the application keeps writing meanwhile. A password changed in
    that window is lost by the rollback. Strict xfail: closing the gap (a last top-up under
    the DDL's own lock) turns this into a failure to remove the marker."""
    import time
    from datetime import datetime, timezone

    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    kept = topup.take(seeded, root(tmp_path), "topup_1", "users", "id", USERS_COLUMNS["columns"], backup.watermark)
    query(seeded, """UPDATE users SET "passwordHash" = 'changed-in-the-gap' WHERE id = 'usr_0000003'""")
    started = time.monotonic()
    LedgerBackend(seeded, MIGRATIONS).deploy()
    window_s = (datetime.now(timezone.utc) - datetime.fromisoformat(kept.taken_at)).total_seconds()
    print(f"top-up snapshot -> DDL committed: {window_s:.3f} s (deploy alone {time.monotonic() - started:.3f} s)")
    restore_by_method("copy", seeded, backup, pg_bin, down_sql=DOWN_SQL, topup=kept, **USERS_COLUMNS)
    assert query(seeded, """SELECT "passwordHash" FROM users WHERE id = 'usr_0000003'""") == [("changed-in-the-gap",)]


@pytest.mark.parametrize("method", ["copy", "rebuild"])
def test_the_migrate_task_closes_the_gap_under_the_migrations_lock(seeded, store, pg_bin, tmp_path, method):
    """The migrate task on the ledger backend copies the dropped columns once more inside the
    migration's transaction, under its lock: a password changed after the top-up's
    snapshot (lost by the rollback before, see the xfail above) comes back."""
    from migration_soak.plan import load_plan

    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    written_after_the_backup(seeded)
    first = runbook.take_topup(plan, "r1", store, seeded)
    query(seeded, """UPDATE users SET "passwordHash" = 'changed-in-the-gap' WHERE id = 'usr_0000003'""")
    at_drop = snapshot(seeded)
    runbook.deploy("r1", store, runbook.backend(plan, seeded), plan)
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(0,)]  # the migration ran
    last = store.events("r1", "topup")[-1]["payload"]
    assert last["closing"] is True and last["rows"] == 4 and last["since"] == backup.watermark
    assert last["taken_at"] > first["taken_at"] and store.events("r1", "topup_gap") == []
    assert "copied under the migration's lock" in last["text"]
    runbook.deploy("r1", store, runbook.backend(plan, seeded), plan)  # a retried migrate task: nothing to apply
    assert store.events("r1", "topup_gap") == [] and store.events("r1", "topup")[-1]["payload"] == last
    result = restore_by_method(method, seeded, backup, pg_bin, down_sql=DOWN_SQL,
                               topup=topup.TopUp.from_dict(last), **USERS_COLUMNS)
    assert snapshot(seeded) == at_drop and result.mismatches == 0 and result.topup_rows == 4


def test_the_closing_top_up_waits_for_its_lock_no_longer_than_the_ddl_would(seeded, store, pg_bin, tmp_path):
    """An application transaction holding a row of users open: the closing top-up's lock
    times out after lock_timeout_s like the DDL's (retries exhausted: the migration fails,
    recorded, nothing dropped), instead of queueing the application behind it."""
    import time

    from migration_soak.exceptions import MigrationError
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    plan = plan.model_copy(update={"backup_location": str(tmp_path / "kept"), "migration": plan.migration.model_copy(
        update={"lock_timeout_s": 0.5, "lock_retries": 0})})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    runbook.take_topup(plan, "r1", store, seeded)
    app = seeded.connect()
    try:
        with app.cursor() as cur:
            cur.execute("""UPDATE users SET email = email WHERE id = 'usr_0000004'""")  # open: ROW EXCLUSIVE held
        started = time.monotonic()
        with pytest.raises(MigrationError):
            runbook.deploy("r1", store, runbook.backend(plan, seeded), plan)
        assert time.monotonic() - started < 3
    finally:
        app.rollback()
        app.close()
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(1,)]
    assert [e["payload"].get("closing") for e in store.events("r1", "topup")] == [None]


def test_the_restore_says_when_the_gap_before_the_migration_stayed_open(seeded, store, pg_bin, tmp_path):
    """The Prisma CLI backend runs the DDL in its own transaction: the closing top-up cannot
    be taken, and the rollback's restore says which values it does not give back."""
    from migration_soak.backup_storage import fetched
    from migration_soak.plan import load_plan

    class Cli:  # a backend that is not the ledger's, as PrismaCliBackend
        def __init__(self, target):
            self.inner = LedgerBackend(target, MIGRATIONS)

        def deploy(self):
            return self.inner.deploy()

    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    first = runbook.take_topup(plan, "r1", store, seeded)
    runbook.deploy("r1", store, Cli(seeded), plan)
    gap = store.events("r1", "topup_gap")[-1]["payload"]["text"]
    assert gap == (f"values of passwordHash, emailVerified written between the top-up ({first['taken_at']}) and the "
                   "migration's lock are not restored by a rollback: the Prisma CLI runs the DDL in a transaction of "
                   "its own")
    runbook.restore(plan, "r1", store, fetch=lambda: fetched(backup), direct=seeded, pg_bin_dir=pg_bin)
    assert store.events("r1", "restore")[-1]["payload"]["text"].endswith("; " + gap)


def test_the_closing_top_up_is_kept_when_a_later_migration_of_the_same_deploy_fails(seeded, store, pg_bin, tmp_path):
    """Found by review: the deploy applies the drop, then a later pending migration fails.
    The drop committed (columns gone: a NO-GO, the rollback runs), but deploy raised before
    the closing top-up taken under the drop's lock was kept, and no topup_gap was recorded:
    the rollback overlaid the first top-up and gave usr_0000003 its older password back,
    saying nothing of the gap."""
    import shutil

    from migration_soak.backup_storage import fetched
    from migration_soak.exceptions import MigrationError
    from migration_soak.plan import load_plan

    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "20251203000000_later_and_broken").mkdir()
    (migrations / "20251203000000_later_and_broken" / "migration.sql").write_text("SELECT 1/0;\n")
    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    runbook.take_topup(plan, "r1", store, seeded)
    query(seeded, """UPDATE users SET "passwordHash" = 'changed-in-the-gap' WHERE id = 'usr_0000003'""")
    at_drop = snapshot(seeded)
    with pytest.raises(MigrationError, match="later_and_broken"):
        runbook.deploy("r1", store, LedgerBackend(seeded, migrations, lock_timeout_s=plan.migration.lock_timeout_s,
                                                  lock_retries=0), plan)
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(0,)]  # the drop committed
    last = [e for e in store.events("r1") if e["kind"] in ("topup", "topup_gap")][-1]
    assert last["kind"] == "topup" and last["payload"].get("closing") is True, last
    runbook.restore(plan, "r1", store, fetch=lambda: fetched(backup), direct=seeded, pg_bin_dir=pg_bin)
    assert snapshot(seeded) == at_drop


def test_an_app_transaction_that_reads_then_writes_users_does_not_deadlock_the_migration(seeded, store, pg_bin,
                                                                                         tmp_path):
    """Found by review: the closing top-up took LOCK users IN SHARE MODE, then the DDL
    upgraded it to ACCESS EXCLUSIVE. An application transaction that had read users (ACCESS
    SHARE, granted beside SHARE) and then wrote it (ROW EXCLUSIVE, which SHARE blocks) made
    a hard deadlock: after deadlock_timeout PostgreSQL aborted the migration ('deadlock
    detected', not retried like a lock timeout: P3018) or the application's transaction.
    Without the hook the same application transaction was let ahead of the DDL's queued lock
    and both went through."""
    import threading
    import time

    from migration_soak.plan import load_plan

    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    runbook.take_topup(plan, "r1", store, seeded)
    app = seeded.connect()
    outcome: dict = {}
    try:
        with app.cursor() as cur:
            cur.execute("""SELECT email FROM users WHERE id = 'usr_0000001'""")  # the app reads users ...

        def migrate() -> None:
            try:
                runbook.deploy("r1", store, runbook.backend(plan, seeded), plan)
                outcome["deploy"] = "ok"
            except Exception as exc:  # noqa: BLE001
                outcome["deploy"] = str(exc)

        worker = threading.Thread(target=migrate)
        worker.start()
        time.sleep(0.4)  # the migration is waiting for its lock now
        with app.cursor() as cur:  # ... then writes it, in the same transaction
            cur.execute("""UPDATE users SET "passwordHash" = 'changed-by-the-app' WHERE id = 'usr_0000001'""")
        app.commit()
        worker.join(30)
    finally:
        app.rollback()
        app.close()
    assert outcome.get("deploy") == "ok", outcome
    last = store.events("r1", "topup")[-1]["payload"]
    assert last.get("closing") is True  # the app's write came before the lock: in the closing copy


def test_a_migration_with_its_own_transaction_records_the_gap_it_leaves(seeded, store, pg_bin, tmp_path):
    """Found by review: the closing top-up runs only inside a transaction the ledger opens;
    a migration script with its own BEGIN/COMMIT gets none, and deploy recorded nothing, so
    the restore and the report said values were restored 'up to the top-up read just before
    the migration' with no word of the gap (the Prisma CLI backend records a topup_gap)."""
    import shutil

    from migration_soak.plan import load_plan

    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    drop = migrations / "20251202020032_update_user_schema_final" / "migration.sql"
    drop.write_text("BEGIN;\n" + drop.read_text() + "\nCOMMIT;\n")
    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    first = runbook.take_topup(plan, "r1", store, seeded)
    runbook.deploy("r1", store, LedgerBackend(seeded, migrations), plan)
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(0,)]
    gaps = store.events("r1", "topup_gap")
    assert [g["payload"]["text"] for g in gaps] == [
        f"values of passwordHash, emailVerified written between the top-up ({first['taken_at']}) and the migration's "
        "lock are not restored by a rollback: the migration's script opens its own transaction (BEGIN/COMMIT), so "
        "no copy could be taken under its lock"]


def test_a_closing_top_up_that_cannot_fit_its_budget_is_not_tried(seeded, store, pg_bin, tmp_path):
    """The copy under the lock scans what the first top-up scanned: when that took longer
    than half of lock_timeout_s (a large table) the copy is not tried, so the application
    does not wait behind the lock for a copy given up; the gap is recorded and says why."""
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    plan = plan.model_copy(update={"backup_location": str(tmp_path / "kept"), "migration": plan.migration.model_copy(
        update={"lock_timeout_s": 0.002})})  # 1 ms for the copy: less than any top-up takes
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    first = runbook.take_topup(plan, "r1", store, seeded)
    assert first["duration_s"] > 0.001
    runbook.deploy("r1", store, runbook.backend(plan, seeded), plan)
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(0,)]  # the migration ran
    assert [e["payload"].get("closing") for e in store.events("r1", "topup")] == [None]  # no copy under the lock
    gap = store.events("r1", "topup_gap")[-1]["payload"]["text"]
    assert f"the first top-up took {first['duration_s']:.2f} s" in gap and "0.001 s (half of" in gap, gap


def test_a_closing_copy_that_cannot_write_its_file_leaves_the_gap_and_the_migration_goes_on(seeded, store, pg_bin,
                                                                                            tmp_path, monkeypatch):
    """Found by review: a local file error while the closing top-up wrote its copy (the
    working folder's disk full: OSError 28 from the zstd file's write, mid-COPY) escaped the
    hook and failed the whole migration ("migrate_failed", nothing applied), though the
    first top-up was kept and read back and the same gap is accepted when the copy does
    not fit its budget or with the Prisma CLI. Now the copy is given up like a copy that
    does not fit: the savepoint is rolled back, the migration applies, and a topup_gap
    names the error and the values the rollback cannot give back."""
    import errno

    from migration_soak import increment
    from migration_soak.plan import load_plan

    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(backup))
    written_after_the_backup(seeded)
    first = runbook.take_topup(plan, "r1", store, seeded)
    monkeypatch.setattr(increment, "_BLOCK", 1)  # every COPY row reaches the file as it comes

    def full(self, out):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(increment._Sink, "_emit", full)
    payload = runbook.deploy("r1", store, runbook.backend(plan, seeded), plan)
    assert payload["applied"] == [plan.migration.name]
    assert query(seeded, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                            AND column_name = 'passwordHash'""") == [(0,)]  # the migration ran
    assert [e["payload"].get("closing") for e in store.events("r1", "topup")] == [None]  # the first one stands
    gap = store.events("r1", "topup_gap")[-1]["payload"]["text"]
    assert gap.startswith(f"values of passwordHash, emailVerified written between the top-up ({first['taken_at']}) "
                          "and the migration's lock are not restored by a rollback: the copy under the lock could "
                          "not be written to the local working folder (OSError: [Errno 28] No space left on device")
    assert store.events("r1", "migrate_failed") == []
    # no lock, no setting outlived the migration's transaction
    assert query(seeded, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                         "WHERE c.relname = 'users'") == [(0,)]
