"""rollback.py on the real server: columns re-added, values restored byte for byte."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from migration_soak import archive, runbook
from migration_soak.backup import take_backup
from migration_soak.exceptions import RollbackError
from migration_soak.migrate import LedgerBackend, verify_applied
from migration_soak.rollback import (CopyBody, _column_info, parse_copy_header, pg_restore_data_argv, restore_by_method,
                                     restore_columns)

from .conftest import DOWN_SQL, DROP, MIGRATIONS, SEED_USERS, USERS_COLUMNS, plain_backup, query, snapshot

DROPPED = ("passwordHash", "emailVerified")
NEW_USERS = 50


def _column_defs(target):
    return query(target, """SELECT column_name, data_type, is_nullable, column_default
                            FROM information_schema.columns
                            WHERE table_schema = 'public' AND table_name = 'users'
                              AND column_name IN ('passwordHash', 'emailVerified')
                            ORDER BY column_name""")


@pytest.fixture
def migrated(seeded, pg_bin, tmp_path):
    """Seeded db: snapshot, backup, migration deployed, then life goes on for a while."""
    before = snapshot(seeded)
    definitions = _column_defs(seeded)
    backup = take_backup(seeded, tmp_path / "backups", pg_bin, "pre_migration")
    backend = LedgerBackend(seeded, MIGRATIONS)
    backend.deploy()
    verify_applied(seeded, DROP, "users", DROPPED)
    # After the backup: new sign-ups, a deletion, a profile change.
    seed_users_after_drop(seeded, SEED_USERS + 1, SEED_USERS + NEW_USERS)
    query(seeded, "DELETE FROM users WHERE id IN ('usr_0000007', 'usr_0000008', 'usr_0000009')")
    query(seeded, "UPDATE users SET email = 'changed@example.test' WHERE id = 'usr_0000010'")
    return seeded, backup, backend, before, definitions


def seed_users_after_drop(target, first, last):
    query(target, """INSERT INTO users (id, email, "authorizerId", "updatedAt")
                     SELECT 'usr_' || lpad(g::text, 7, '0'), 'late' || g || '@example.test', 'auth-' || g, now()
                     FROM generate_series(%s, %s) g""", (first, last))


def test_rollback_restores_every_value_byte_for_byte(migrated, pg_bin, popen_recorder):
    target, backup, backend, before, definitions = migrated
    assert len(before) == SEED_USERS and all(v[0] is not None for v in before.values())
    assert len({v[0] for v in before.values()}) == SEED_USERS  # distinct values
    assert sum(1 for v in before.values() if b"\t" in v[0] or b"\n" in v[0] or b"\\" in v[0]) >= SEED_USERS * 0.4

    result = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    print(f"\nrestore of {SEED_USERS} users: {result.to_dict()}")

    assert result.table == "public.users" and result.columns == DROPPED
    assert result.rows_at_backup == SEED_USERS
    assert result.rows_matched == SEED_USERS - 3
    assert result.rows_not_in_backup == NEW_USERS
    assert result.rows_updated == SEED_USERS - 3
    assert result.values_restored == 2 * (SEED_USERS - 3)
    assert result.mismatches == 0 and result.values_kept == 0
    assert result.duration_s >= result.stage_s + result.restore_s - 0.01
    assert result.batches == 1  # 5000 keys, batches of 20 000
    (ddl,) = result.lock_attempts  # the down SQL got its lock at once
    assert (ddl.step, ddl.attempt, ddl.outcome) == ("down_sql", 1, "ok") and ddl.elapsed_s == result.ddl_s
    assert result.ddl_s <= result.copy_s + result.verify_s + result.ddl_s <= result.restore_s + 0.01

    assert _column_defs(target) == definitions  # same types, nullability, defaults as before
    after = snapshot(target)
    deleted = {"usr_0000007", "usr_0000008", "usr_0000009"}
    for user_id, value in before.items():
        if user_id in deleted:
            assert user_id not in after
        else:
            assert after[user_id] == value, user_id  # bytes of passwordHash, emailVerified
    late = {k: v for k, v in after.items() if k not in before}
    assert len(late) == NEW_USERS and set(late.values()) == {(None, False)}
    assert query(target, "SELECT email FROM users WHERE id = 'usr_0000010'") == [("changed@example.test",)]
    assert query(target, "SELECT to_regnamespace('soak_rollback')") == [(None,)]  # scratch dropped

    # Streaming from the dump (zstd: decompressed into pg_restore's stdin, no file
    # argument), password nowhere on a command line.
    assert archive.kind(backup.path) == "zstd"
    restore_calls = [argv for argv, _ in popen_recorder.calls if "--data-only" in argv]
    assert restore_calls == [pg_restore_data_argv(pg_bin / "pg_restore", backup.path, "public", "users")]
    assert all(target.password not in part for argv, _ in popen_recorder.calls for part in argv)

    # The ledger part: the migration reads as pending again.
    backend.mark_rolled_back(DROP)
    assert {s.name: s for s in backend.status()}[DROP].is_pending

    # Idempotent: a second run proves the same data and writes nothing.
    second = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    same = ("table", "columns", "rows_at_backup", "rows_matched", "rows_not_in_backup", "mismatches",
            "values_kept", "batches")
    assert [getattr(second, k) for k in same] == [getattr(result, k) for k in same]
    assert second.rows_updated == second.values_restored == 0
    assert snapshot(target) == after

    # And the soak can run again: deploy drops the columns once more.
    assert backend.deploy().applied == (DROP,)
    verify_applied(target, DROP, "users", DROPPED)


def test_an_earlier_versions_plain_dump_still_restores_every_value(seeded, pg_bin, tmp_path):
    """A backup kept before dumps were zstd-compressed (a plain custom-format ``.dump``):
    the rollback reads it by its magic bytes, as a file argument, and restores every value."""
    before = snapshot(seeded)
    backup = plain_backup(seeded, pg_bin, tmp_path / "backups" / "pre_migration.dump")
    LedgerBackend(seeded, MIGRATIONS).deploy()
    verify_applied(seeded, DROP, "users", DROPPED)
    result = restore_columns(seeded, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.values_restored == 2 * SEED_USERS and result.mismatches == 0
    assert snapshot(seeded) == before
    assert pg_restore_data_argv(pg_bin / "pg_restore", backup.path, "public", "users")[-1] == str(backup.path)


def test_rollback_refuses_a_changed_backup(migrated, pg_bin):
    target, backup, _, _, _ = migrated
    with open(backup.path, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(RollbackError, match="re-verification.*checksum mismatch"):
        restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert _column_defs(target) == []  # nothing touched


@pytest.mark.timeout(60)  # a missing lock_timeout would hang here, not fail
def test_rollback_fails_fast_when_the_table_is_locked(migrated, pg_bin):
    target, backup, _, _, _ = migrated
    app = target.connect()
    try:
        with app.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")  # open transaction holding ACCESS SHARE
        started = time.monotonic()
        with pytest.raises(RollbackError, match="lock_timeout") as err:
            restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS, lock_timeout_s=0.5, lock_retries=1)
        assert time.monotonic() - started < 10  # staging + 2 x 0.5 s + 0.5 s backoff
    finally:
        app.rollback()
        app.close()
    assert "in 2 attempts: 1 lock timeout after 0.5" in str(err.value)
    assert [(a["step"], a["outcome"]) for a in err.value.lock_attempts] == [("down_sql", "lock_timeout")] * 2
    assert _column_defs(target) == []  # each try of the down SQL rolled back
    assert query(target, "SELECT to_regnamespace('soak_rollback')") == [(None,)]
    # Once the application lets go, the same call succeeds.
    assert restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS).mismatches == 0


def test_rollback_names_a_column_the_backup_lacks(migrated, pg_bin):
    target, backup, _, _, _ = migrated
    with pytest.raises(RollbackError, match="no column.*nickname"):
        restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, table="users", columns=("passwordHash", "nickname"))
    assert _column_defs(target) == []
    assert query(target, "SELECT to_regnamespace('soak_rollback')") == [(None,)]


def test_rollback_error_does_not_leak_the_password(migrated, pg_bin):
    target, backup, _, _, _ = migrated
    from migration_soak.pgconn import PgTarget

    wrong = PgTarget(target.host, target.port, target.database, f"u_{target.password}", target.password)
    with pytest.raises(RollbackError) as err:
        restore_columns(wrong, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert target.password not in str(err.value) and "password authentication failed" in str(err.value)


def test_parse_copy_header_handles_quoted_identifiers():
    line = 'COPY public.users (id, email, "authorizerId", "we""ird, name", "passwordHash") FROM stdin;\n'
    assert parse_copy_header(line) == ("public.users", ["id", "email", "authorizerId", 'we"ird, name', "passwordHash"])
    assert parse_copy_header('COPY "My Schema"."T" (a) FROM stdin;') == ("My Schema.T", ["a"])
    for bad in ("COPY public.users FROM stdin;", "SELECT 1;", 'COPY public.users (id, "open) FROM stdin;'):
        with pytest.raises(RollbackError, match="unexpected COPY header"):
            parse_copy_header(bad)


def test_copy_body_stops_at_the_end_of_data_marker():
    stream = io.BytesIO(b"a\t\\\\.\n" + b"b\t\\.\\n\n" + b"\\.\n" + b"\n--\n-- dump complete\n")
    body = CopyBody(stream)
    assert body.read(1) == b"a\t\\\\.\n"
    assert body.read(1 << 16) == b"b\t\\.\\n\n"
    assert body.read(10) == b"" and body.finished and body.rows == 2
    truncated = CopyBody(io.BytesIO(b"a\tb\n"))
    assert truncated.read(100) == b"a\tb\n" and truncated.read(100) == b"" and not truncated.finished


def test_rollback_commits_no_batch_whose_values_do_not_read_back(migrated, pg_bin):
    """A trigger rewriting the restored value: each batch's IS DISTINCT FROM check, before
    its commit, catches it; that batch is not committed (the columns stay re-added, with
    no value copied), and once the trigger is gone a rerun completes the job."""
    target, backup, _, before, definitions = migrated
    query(target, """CREATE FUNCTION scramble() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN NEW."passwordHash" := 'scrambled'; RETURN NEW; END $$""")
    query(target, "CREATE TRIGGER scramble BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION scramble()")
    with pytest.raises(RollbackError, match=rf"verification of public.users failed in copy batch 1 .*batch not "
                                            rf"committed: {SEED_USERS - 3} rows differ"):
        restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert _column_defs(target) == definitions  # re-added (committed on its own) ...
    nothing_copied = 'SELECT count(*) FROM users WHERE "passwordHash" IS NOT NULL OR "emailVerified"'
    assert query(target, nothing_copied) == [(0,)]  # ... no value copied, none scrambled
    assert query(target, "SELECT to_regnamespace('soak_rollback')") == [(None,)]
    query(target, "DROP TRIGGER scramble ON users")
    assert restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS).rows_updated == SEED_USERS - 3
    after = snapshot(target)
    assert all(after[k] == v for k, v in before.items() if k in after)


def test_a_second_concurrent_rollback_is_refused_and_leaves_the_first_alone(migrated, pg_bin):
    target, backup, _, _, _ = migrated
    from migration_soak.rollback import ROLLBACK_LOCK

    first = target.connect()
    first.autocommit = True
    try:
        with first.cursor() as cur:  # stands in for a rollback in progress, with its scratch table
            cur.execute("SELECT pg_advisory_lock(%s, %s)", ROLLBACK_LOCK)
            cur.execute("CREATE SCHEMA soak_rollback; CREATE TABLE soak_rollback.users_backup (id text)")
        with pytest.raises(RollbackError, match="another rollback is running"):
            restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        assert query(target, "SELECT to_regclass('soak_rollback.users_backup') IS NOT NULL") == [(True,)]
        assert _column_defs(target) == []
    finally:
        first.close()


DOWN_TEXT = DOWN_SQL.read_text()


def test_a_down_sql_with_its_own_commit_is_refused_before_it_runs(migrated, pg_bin, tmp_path):
    """What followed the down SQL's own COMMIT ran with no lock_timeout: it queued for
    ACCESS EXCLUSIVE on execution_logs behind an open application read, with no bound,
    and the application queued behind it (reviewer's reproduction)."""
    seeded, backup = migrated[:2]
    down = tmp_path / "down.sql"
    down.write_text('BEGIN;\n' + DOWN_TEXT + 'COMMIT;\n'
                    'ALTER TABLE "execution_logs" ADD COLUMN IF NOT EXISTS "note" TEXT;\n')
    app = seeded.connect()  # an application transaction that read execution_logs and is still open
    with app.cursor() as cur:
        cur.execute("SELECT count(*) FROM execution_logs")
    outcome: list = []

    def run():
        try:
            outcome.append(restore_columns(seeded, backup, pg_bin, down_sql=down, lock_timeout_s=0.5,
                                           lock_retries=0, **USERS_COLUMNS))
        except Exception as exc:  # noqa: BLE001
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(8)
    queued = query(seeded, """SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                              AND query LIKE '%%ADD COLUMN IF NOT EXISTS "note"%%'""")[0][0]
    app.rollback()  # let it through
    app.close()
    worker.join(30)
    assert not queued, ("8 s after start (lock_timeout 0.5 s, no retries) the down SQL's statement after its "
                        f"COMMIT still waits for ACCESS EXCLUSIVE with no lock_timeout; outcome: {outcome!r}")
    assert len(outcome) == 1 and isinstance(outcome[0], RollbackError), outcome
    assert "has its own transaction control: 'BEGIN'" in str(outcome[0])
    assert "refused before it ran: public.users unchanged" in str(outcome[0])
    assert _column_defs(seeded) == []  # nothing re-added


@pytest.mark.parametrize("method", ["copy", "rebuild"])
def test_a_now_default_on_the_readded_column_is_refused_before_the_down_sql_runs(target, pg_bin, tmp_path, method):
    """The re-added value was worked out by running the default again later: for
    CURRENT_TIMESTAMP no row matched it, nothing was restored, and the result said
    0 mismatches (reviewer's reproduction)."""
    query(target, """CREATE TABLE sessions (id text PRIMARY KEY, "lastSeenAt" timestamp NOT NULL
                                            DEFAULT CURRENT_TIMESTAMP, note text)""")
    query(target, """INSERT INTO sessions SELECT 's' || g, timestamp '2025-01-01' + g * interval '1 hour', 'n'
                     FROM generate_series(1, 200) g""")
    before = dict(query(target, 'SELECT id, "lastSeenAt" FROM sessions'))
    backup = take_backup(target, tmp_path / "b", pg_bin, "pre", required_tables=("public.sessions",))
    query(target, 'ALTER TABLE sessions DROP COLUMN "lastSeenAt"')  # the migration
    down = tmp_path / "down.sql"
    # The column's original definition, as Prisma writes @default(now()).
    down.write_text('ALTER TABLE "sessions" ADD COLUMN IF NOT EXISTS "lastSeenAt" TIMESTAMP NOT NULL '
                    'DEFAULT CURRENT_TIMESTAMP;\n')
    try:
        result = restore_by_method(method, target, backup, pg_bin, down_sql=down, table="sessions",
                                   columns=("lastSeenAt",))
    except RollbackError as exc:
        assert 're-adds sessions.lastSeenAt with DEFAULT CURRENT_TIMESTAMP, not a constant' in str(exc)
        assert query(target, """SELECT count(*) FROM information_schema.columns
                                WHERE table_name = 'sessions' AND column_name = 'lastSeenAt'""") == [(0,)]
        return
    after = dict(query(target, 'SELECT id, "lastSeenAt" FROM sessions'))
    wrong = [k for k in before if after[k] != before[k]]
    text = runbook.restore_event(result.to_dict())["text"]
    raise AssertionError(f"not refused; {len(wrong)} of {len(before)} values not restored; the result says: {text!r}")


def test_a_builtin_volatile_default_is_refused_before_the_table_is_rewritten(migrated, pg_bin, tmp_path):
    """The volatile check looked in pg_depend, where built-ins never appear: the down SQL
    rewrote users under ACCESS EXCLUSIVE and nothing was restored (reviewer's reproduction)."""
    seeded, backup = migrated[:2]
    node = query(seeded, "SELECT pg_relation_filenode('users')")[0][0]
    down = tmp_path / "down.sql"
    down.write_text(DOWN_TEXT.replace('"passwordHash" TEXT', '"passwordHash" TEXT DEFAULT gen_random_uuid()::text'))
    with pytest.raises(RollbackError, match=r"re-adds users.passwordHash with DEFAULT gen_random_uuid\(\)::text, "
                                            r"not a constant \(a volatile"):
        restore_columns(seeded, backup, pg_bin, down_sql=down, **USERS_COLUMNS)
    assert query(seeded, "SELECT pg_relation_filenode('users')")[0][0] == node  # not rewritten
    assert _column_defs(seeded) == []


def _info(target, ddl: str):
    from psycopg2 import sql

    query(target, "CREATE TABLE t (id int PRIMARY KEY)")
    query(target, "INSERT INTO t SELECT generate_series(1, 3)")
    query(target, ddl)
    conn = target.connect()
    try:
        return _column_info(conn, sql.Identifier("public", "t"), "public", "t", "id", ("c",), Path("down.sql"))
    finally:
        conn.close()


@pytest.mark.parametrize(("ddl", "readded"), [
    ("ALTER TABLE t ADD COLUMN c boolean NOT NULL DEFAULT false", "false"),
    ("ALTER TABLE t ADD COLUMN c text DEFAULT 'a \"b\", {c}'", 'a "b", {c}'),
    ("ALTER TABLE t ADD COLUMN c varchar(5) DEFAULT 'x'::text", "x"),
    ("ALTER TABLE t ADD COLUMN c text", None),
    ("ALTER TABLE t ADD COLUMN c text DEFAULT NULL", None),
])
def test_the_readded_value_is_the_one_the_catalog_stored_for_existing_rows(target, ddl, readded):
    _, (col,) = _info(target, ddl)
    assert col.readded == readded
    if readded is not None:
        assert query(target, "SELECT DISTINCT c::text FROM t") == [(readded,)]


def test_a_stable_default_reads_the_value_the_rows_got_not_a_new_one(target):
    """now() evaluated again later matched no row; attmissingval holds the value the rows got."""
    _, (col,) = _info(target, "ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now()")
    time.sleep(0.05)
    assert query(target, "SELECT DISTINCT c::text FROM t") == [(col.readded,)]


@pytest.mark.parametrize("ddl", ["ALTER TABLE t ADD COLUMN c text DEFAULT gen_random_uuid()::text",
                                 "ALTER TABLE t ADD COLUMN c float8 DEFAULT random()"])
def test_a_default_with_no_stored_value_is_refused(target, ddl):
    with pytest.raises(RollbackError, match=r"public\.t\.c has a default \(.*\) but no value stored for the rows "
                                            r"the down SQL down\.sql re-added it to .*a volatile default"):
        _info(target, ddl)


def test_the_restore_task_run_again_after_a_completed_restore_keeps_what_the_application_wrote_since(
        seeded, store, pg_bin, tmp_path, monkeypatch):
    # Found by review: the rollback completed, the application wrote on the restored columns
    # (a verification reset to false, a password removed: the values the re-add gives), then
    # the rollback group ran again (cleared in the UI, or decide re-run): the copy took those
    # rows for never-filled ones and wrote the backup's old values over them (2 rows).
    from migration_soak import lifecycle
    from migration_soak.airflow import rollback_tasks as rb
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    record = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    store.add_event("r1", "backup", runbook.backup_event(record))
    LedgerBackend(seeded, MIGRATIONS).deploy()
    ctx = {"params": {"plan": "default"}, "run_id": "r1"}
    monkeypatch.setattr(rb, "staging_context", lambda task: (ctx, plan, "r1", store))
    monkeypatch.setattr(rb, "direct", lambda p: seeded)
    monkeypatch.setattr(rb, "query", lambda p: lambda text: query(seeded, text), raising=False)
    monkeypatch.setattr(runbook, "pg_bin_dir", lambda p: pg_bin)
    first = rb.restore.function()
    assert first["mismatches"] == 0 and lifecycle.kept_backup(store, "r1").sha256 == record.sha256
    query(seeded, """UPDATE users SET "emailVerified" = false WHERE id = 'usr_0000003'""")
    query(seeded, """UPDATE users SET "passwordHash" = NULL WHERE id = 'usr_0000001'""")
    written = snapshot(seeded)

    again = rb.restore.function()
    assert again == first  # the completed restore's result, nothing copied again
    assert snapshot(seeded) == written
    assert [e["payload"]["values_restored"] for e in store.events("r1", "restore")] == [first["values_restored"]]
