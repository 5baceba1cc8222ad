"""rehearsal.py on the real server: the rollback rehearsed on a scratch copy; a broken down
SQL or a validation failure is caught there and staging is left exactly as it was."""

from __future__ import annotations

import time

import pytest

from migration_soak import archive
from migration_soak.backup import take_backup
from migration_soak.exceptions import RehearsalError
from migration_soak.migrate import LedgerBackend
from migration_soak.plan import load_plan
from migration_soak.rehearsal import rehearse, scratch_name

from .conftest import DOWN_SQL, MIGRATIONS, SEED_USERS, plain_backup, query, snapshot

RUN_ID = "manual__rehearsal-test"


def _plan(**rehearsal):
    plan = load_plan("default")
    return plan.model_copy(update={"rehearsal": plan.rehearsal.model_copy(update=rehearsal)})


def _with_down_sql(plan, path):
    return plan.model_copy(update={"migration": plan.migration.model_copy(update={"down_sql": str(path)})})


def _state(target):
    """Everything the rehearsal must leave alone on staging: values, columns, ledger."""
    columns = query(target, "SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND table_name = 'users' ORDER BY 1")
    ledger = query(target, 'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" '
                           "ORDER BY 1")
    return snapshot(target), columns, ledger


def _scratch_exists(target, run_id=RUN_ID):
    return bool(query(target, "SELECT 1 FROM pg_database WHERE datname = %s", (scratch_name(run_id),)))


@pytest.fixture
def backed_up(seeded, pg_bin, tmp_path, request):
    """The seeded staging database (the drop migration pending) and its verified backup:
    ``take_backup``'s (zstd), or with the parameter ``"plain"`` an earlier version's plain
    custom-format dump."""
    if getattr(request, "param", "zstd") == "plain":
        return seeded, plain_backup(seeded, pg_bin, tmp_path / "backups" / "pre_rehearsal.dump")
    backup = take_backup(seeded, tmp_path / "backups", pg_bin, "pre_rehearsal")
    assert backup.path is not None and archive.kind(backup.path) == "zstd"
    return seeded, backup


def _rehearse(plan, staging, backup, pg_bin):
    return rehearse(plan, staging, backup, pg_bin, run_id=RUN_ID,
                    backend_for=lambda t: LedgerBackend(t, MIGRATIONS, lock_retries=0))


@pytest.mark.parametrize("backed_up", ["zstd", "plain"], indirect=True)
def test_the_rollback_is_rehearsed_on_a_copy_and_staging_is_untouched(backed_up, pg_bin):
    staging, backup = backed_up
    before = _state(staging)
    result = _rehearse(_plan(), staging, backup, pg_bin)
    print(f"\nrehearsal of {SEED_USERS} users: {result.text}")

    assert result.status == "passed"
    assert result.rows_at_backup == SEED_USERS
    assert result.values_restored == 2 * SEED_USERS and result.mismatches == 0
    assert {v["check"]: v["ok"] for v in result.validations} == {
        "users_without_authorizer_id": True, "deprecated_columns_absent": True}
    assert min(result.restore_s, result.migrate_s, result.rollback_s, result.verify_s) > 0
    assert result.total_s >= result.restore_s + result.migrate_s + result.rollback_s + result.verify_s - 0.01
    assert result.text.startswith(f"rollback rehearsed: {2 * SEED_USERS} values restored, 0 mismatches, ")
    assert _state(staging) == before  # still pending on staging, every value and column in place
    assert LedgerBackend(staging, MIGRATIONS).status()[-1].is_pending
    assert not _scratch_exists(staging)


def test_a_down_sql_with_a_typo_stops_at_the_rollback_step(backed_up, pg_bin, tmp_path):
    staging, backup = backed_up
    broken = tmp_path / "typo.down.sql"
    broken.write_text(DOWN_SQL.read_text().replace("ADD COLUMN", "ADD COLUMNN", 1))
    before = _state(staging)
    with pytest.raises(RehearsalError) as err:
        _rehearse(_with_down_sql(_plan(), broken), staging, backup, pg_bin)
    assert err.value.step == "rollback" and "COLUMNN" in str(err.value)
    assert _state(staging) == before
    assert not _scratch_exists(staging)


def test_a_down_sql_that_forgets_a_dropped_column_is_caught(backed_up, pg_bin, tmp_path):
    staging, backup = backed_up
    partial = tmp_path / "partial.down.sql"
    partial.write_text('ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "passwordHash" TEXT;\n')
    assert "emailVerified" not in partial.read_text() and "passwordHash" in partial.read_text()
    before = _state(staging)
    with pytest.raises(RehearsalError) as err:
        _rehearse(_with_down_sql(_plan(), partial), staging, backup, pg_bin)
    assert err.value.step == "rollback" and "emailVerified" in str(err.value)
    assert _state(staging) == before
    assert not _scratch_exists(staging)


def test_a_validation_query_failing_on_the_copy_stops_the_run(seeded, pg_bin, tmp_path):
    query(seeded, "UPDATE users SET \"authorizerId\" = NULL WHERE id = 'usr_0000042'")
    backup = take_backup(seeded, tmp_path / "backups", pg_bin, "pre_rehearsal")
    before = _state(seeded)
    with pytest.raises(RehearsalError) as err:
        _rehearse(_plan(), seeded, backup, pg_bin)
    assert err.value.step == "validate" and "users_without_authorizer_id is 1" in str(err.value)
    assert _state(seeded) == before
    assert not _scratch_exists(seeded)


def test_a_database_above_the_limit_is_not_rehearsed_and_says_why(backed_up, pg_bin):
    staging, backup = backed_up
    result = _rehearse(_plan(max_database_mb=1), staging, backup, pg_bin)
    assert result.status == "skipped" and result.values_restored == 0
    assert result.database_bytes > 1024 * 1024
    assert "above rehearsal.max_database_mb 1 MiB" in result.text and result.text.startswith("rollback not rehearsed")
    assert not _scratch_exists(staging)


def test_a_leftover_scratch_database_from_a_killed_try_is_replaced(backed_up, pg_bin):
    staging, backup = backed_up
    conn = staging.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{scratch_name(RUN_ID)}"')
    conn.close()
    assert _rehearse(_plan(), staging, backup, pg_bin).status == "passed"
    assert not _scratch_exists(staging)



def _with_validation_sql(plan, monkeypatch, tmp_path, text: str):
    """``plan`` whose hour-0 check ``users_without_authorizer_id`` reads ``text`` instead
    of its file (written to a copy of include/sql/, which the readers are pointed at)."""
    import shutil

    from migration_soak import rehearsal
    from migration_soak.plan import SQL_DIR
    from migration_soak.sources import sql as sql_source

    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    (sql_dir / "users_without_authorizer_id.sql").write_text(text)
    monkeypatch.setattr(rehearsal, "SQL_DIR", sql_dir)
    monkeypatch.setattr(sql_source, "SQL_DIR", sql_dir)
    return plan


def test_a_validation_query_past_the_statement_timeout_is_cut_short(backed_up, pg_bin, monkeypatch, tmp_path):
    """The rehearsal's validation queries run as the soak's checks run (sources.sql.run_readonly):
    with its statement_timeout; on main they ran without one: a 3 s query slept 3 s and read 0 (passed)."""
    from migration_soak.sources import sql as sql_source

    staging, backup = backed_up
    monkeypatch.setattr(sql_source, "STATEMENT_TIMEOUT_MS", 300)
    plan = _with_validation_sql(_plan(), monkeypatch, tmp_path, "SELECT 0 FROM pg_sleep(30)")
    t0 = time.monotonic()
    with pytest.raises(RehearsalError) as err:
        _rehearse(plan, staging, backup, pg_bin)
    assert err.value.step == "validate" and "users_without_authorizer_id" in str(err.value)
    assert "statement_timeout" in str(err.value) or "cancel" in str(err.value)
    assert time.monotonic() - t0 < 15  # the restore, migrate and drop take the rest (0.75 s here)
    assert not _scratch_exists(staging)


def test_a_validation_file_that_turns_the_timeout_off_is_refused(backed_up, pg_bin, monkeypatch, tmp_path):
    """The per-statement read-back: a function the guard cannot see into switched the
    timeout off for the rest of the file; the rehearsal took its reading on main."""
    staging, backup = backed_up
    query(staging, "CREATE FUNCTION app_exec(text) RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE $1; END $$")
    backup = take_backup(staging, backup.path.parent, pg_bin, "pre_rehearsal_2")
    plan = _with_validation_sql(_plan(), monkeypatch, tmp_path,
                                "SELECT app_exec('SET statement_timeout = 0');\nSELECT 0 AS n")
    with pytest.raises(RehearsalError) as err:
        _rehearse(plan, staging, backup, pg_bin)
    assert err.value.step == "validate" and "changed statement_timeout" in str(err.value)
    assert not _scratch_exists(staging)
