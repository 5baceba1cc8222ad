"""Incremental backups on the real server: a dump of only the named tables that reads back
whole, names quoted for pg_dump's pattern parser; increments (``increment.py``) that hold
exactly the rows changed since a watermark and every key, whose chain on top of the
pre-migration dump restores the table as it is now; and the source, whose readings chain
by watermark and whose failures are ``error`` observations, never a pass."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard
from airflow.sdk import ObjectStoragePath

from migration_soak import archive, clock, observe, runbook, sources
from migration_soak.backup import BackupRecord, pg_dump_argv, take_backup, verify_backup
from migration_soak.backup_storage import plan_root, take_kept_backup
from migration_soak.exceptions import BackupError, MeasurementError
from migration_soak.increment import apply_increment, current_watermark, take_increment, verify_increment
from migration_soak.plan import load_plan, parse_plan
from tests.conftest import recreate_database

from .conftest import SEED_USERS, query


def toc_data(pg_bin, path) -> list[str]:
    out = archive.run_restore([str(pg_bin / "pg_restore"), "--list"], path, timeout_s=60, what="list")
    return sorted(line.split(" TABLE DATA ")[1].rsplit(" ", 1)[0] for line in out.splitlines()
                  if " TABLE DATA " in line)


def test_a_tables_only_dump_holds_only_those_tables_and_verifies(seeded, pg_bin, tmp_path):
    query(seeded, """INSERT INTO execution_logs (id, "workflowId", status, "startedAt")
                     VALUES ('log_1', 'wf_1', 'SUCCESS', now())""")
    record = take_backup(seeded, tmp_path, pg_bin, "inc_users", tables=["users"])

    assert record.tables == ("public.users",)
    assert toc_data(pg_bin, record.path) == ["public users"]  # no clients, execution_logs, ledger
    script = archive.run_restore([str(pg_bin / "pg_restore"), "--data-only", "--file=-"], record.path,
                                 timeout_s=60, what="data")
    assert script.count("\nusr_") == SEED_USERS and "log_1" not in script and "cli_1\tClient" not in script
    assert verify_backup(record.path, pg_bin, expected_sha256=record.sha256,
                         required_tables=["public.users"]).tables == ("public.users",)

    both = take_backup(seeded, tmp_path, pg_bin, "inc_two", tables=["public.users", "clients"])
    assert both.tables == ("public.clients", "public.users")
    assert toc_data(pg_bin, both.path) == ["public clients", "public users"]
    full = take_backup(seeded, tmp_path, pg_bin, "full")  # unchanged without tables
    assert {"public.users", "public.clients", "public.execution_logs", "public._prisma_migrations"} <= set(full.tables)
    # What is in each archive, not its compressed size: zstd may pack a longer stream smaller.
    assert {"public execution_logs", "public _prisma_migrations"} <= set(toc_data(pg_bin, full.path))


def test_table_names_are_literal_and_quoted(seeded, pg_bin, tmp_path):
    query(seeded, 'CREATE TABLE "AuditLog" (id int PRIMARY KEY, "what*" text); INSERT INTO "AuditLog" VALUES (1, \'x\')')
    record = take_backup(seeded, tmp_path, pg_bin, "inc_audit", tables=["AuditLog"])
    assert record.tables == ("public.AuditLog",)
    argv = pg_dump_argv(pg_bin / "pg_dump", 60.0, ["AuditLog", 'odd"name', "s.t*"])
    assert argv[-4:] == ["--strict-names", '--table="public"."AuditLog"', '--table="public"."odd""name"',
                         '--table="s"."t*"']
    assert "--table" not in " ".join(pg_dump_argv(pg_bin / "pg_dump", 60.0))
    # Lower case does not match "AuditLog": names are not folded, and a non-match fails.
    with pytest.raises(BackupError, match="no matching tables"):
        take_backup(seeded, tmp_path, pg_bin, "inc_lower", tables=["auditlog"])


def test_a_bad_table_name_fails_and_leaves_no_file(seeded, pg_bin, tmp_path):
    dest = tmp_path / "inc"
    with pytest.raises(BackupError, match="no matching tables") as err:
        take_backup(seeded, dest, pg_bin, "inc_bad", tables=["users", "no_such_table"])
    assert seeded.password not in str(err.value)
    assert list(dest.iterdir()) == []
    with pytest.raises(BackupError, match="at least one table"):
        take_backup(seeded, dest, pg_bin, "inc_none", tables=[])
    with pytest.raises(BackupError, match="not 'table' or 'schema.table'"):
        take_backup(seeded, dest, pg_bin, "inc_dot", tables=["public."])



# --- increments ---------------------------------------------------------------------------


def storage(tmp_path) -> ObjectStoragePath:
    return ObjectStoragePath((tmp_path / "incremental").resolve().as_uri())


def kept_lines(record, table: str, what: str) -> list[bytes]:
    """The COPY text lines of one kept file of an increment (``what``: rows or keys)."""
    t = record.tables[table]
    path = ObjectStoragePath(record.location) / (t.rows_file if what == "rows" else t.keys_file)
    data = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes())
    return data.splitlines()


def first_fields(lines: list[bytes]) -> set[str]:
    return {line.split(b"\t", 1)[0].decode() for line in lines}


def users_changes(target, *, inserted=(), updated=(), deleted=()) -> None:
    for key in inserted:
        query(target, """INSERT INTO users (id, email, "updatedAt") VALUES (%s, %s || '@new.test', now())""",
              (key, key))
    for key in updated:
        query(target, """UPDATE users SET "authorizerId" = 'changed-' || id, "updatedAt" = now() WHERE id = %s""",
              (key,))
    for key in deleted:
        query(target, "DELETE FROM users WHERE id = %s", (key,))


def test_an_increment_holds_the_rows_changed_since_and_every_key(seeded, tmp_path):
    root = storage(tmp_path)
    first = take_increment(seeded, root, "inc_1", ["users"], None)
    assert (first.base, first.since, first.full_reason) == ("full", None, "no previous watermark")
    assert (first.tables["public.users"].rows, first.tables["public.users"].keys) == (SEED_USERS, SEED_USERS)
    assert int(first.watermark) > 0 and first.tables["public.users"].key == "id"

    users_changes(seeded, inserted=["usr_new_1", "usr_new_2"], updated=["usr_0000010", "usr_0000020", "usr_0000030"],
                  deleted=["usr_0000040"])
    query(seeded, "UPDATE users SET email = email WHERE false")  # a statement that changes nothing
    second = take_increment(seeded, root, "inc_2", ["users"], first.watermark)
    t = second.tables["public.users"]
    assert (second.base, second.since) == ("increment", first.watermark)
    assert int(second.watermark) > int(first.watermark)
    assert first_fields(kept_lines(second, "public.users", "rows")) == {
        "usr_new_1", "usr_new_2", "usr_0000010", "usr_0000020", "usr_0000030"}
    keys = first_fields(kept_lines(second, "public.users", "keys"))
    assert t.rows == 5 and t.keys == len(keys) == SEED_USERS + 1
    assert "usr_0000040" not in keys and {"usr_new_1", "usr_0000041"} <= keys
    assert t.columns == ("id", "email", "authorizerId", "clientId", "passwordHash", "emailVerified", "createdAt",
                         "updatedAt")

    manifest = json.loads((ObjectStoragePath(second.location) / "manifest.json").read_text())
    assert manifest["since"] == first.watermark and manifest["watermark"] == second.watermark
    assert manifest["base"] == "increment" and manifest["tables"]["public.users"]["rows"] == 5
    assert manifest["tables"]["public.users"]["files"]["rows"]["sha256"] == t.rows_sha256
    assert verify_increment(second.location)["watermark"] == second.watermark

    nothing = take_increment(seeded, root, "inc_3", ["users"], second.watermark)
    assert nothing.tables["public.users"].rows == 0 and nothing.tables["public.users"].keys == SEED_USERS + 1
    with pytest.raises(BackupError, match="already kept"):
        take_increment(seeded, root, "inc_3", ["users"], second.watermark)


def test_the_staging_transaction_ends_before_the_files_are_compressed(seeded, tmp_path, monkeypatch):
    """The COPY bytes are spooled raw while the read-only transaction runs; zstd, SHA-256
    and the line count come after it ended: staging's backend (a pooler slot, a snapshot
    holding back vacuum's horizon) does not wait on the client's compression. Observed, not
    mocked: each kept file's compressor asks pg_stat_activity, from its own connection,
    which backends carry the soak's application name."""
    from migration_soak import increment
    from migration_soak.pgconn import APPLICATION_NAME

    seen: list[tuple[str, list[tuple], list[str]]] = []

    class Observed(increment._Sink):
        def close(self) -> None:
            conn = seeded.connect(application_name="soak3-observer")
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pid, state, backend_xmin IS NOT NULL FROM pg_stat_activity "
                                "WHERE application_name = %s AND datname = current_database()", (APPLICATION_NAME,))
                    backends = cur.fetchall()
            finally:
                conn.close()
            spooled = sorted(p.name for p in Path(self.handle.name).parent.glob("*.copy"))
            seen.append((Path(self.handle.name).name, backends, spooled))
            super().close()

    monkeypatch.setattr(increment, "_Sink", Observed)
    since = current_watermark(seeded)
    users_changes(seeded, updated=["usr_0000003"])
    record = take_increment(seeded, storage(tmp_path), "inc_s", ["users", "execution_logs"], since)

    assert [name for name, _, _ in seen] == ["public.users.rows.copy.zst", "public.users.keys.copy.zst",
                                             "public.execution_logs.rows.copy.zst",
                                             "public.execution_logs.keys.copy.zst"]
    assert [backends for _, backends, _ in seen] == [[]] * 4  # no soak backend while compressing
    # Each raw spool file is deleted once compressed (10 M keys: ~400 MB raw).
    assert [spooled for _, _, spooled in seen] == [
        ["public.execution_logs.keys.copy", "public.execution_logs.rows.copy", "public.users.keys.copy",
         "public.users.rows.copy"],
        ["public.execution_logs.keys.copy", "public.execution_logs.rows.copy", "public.users.keys.copy"],
        ["public.execution_logs.keys.copy", "public.execution_logs.rows.copy"],
        ["public.execution_logs.keys.copy"]]
    # Same files and manifest as before: read back whole, the rows and keys as copied.
    assert first_fields(kept_lines(record, "public.users", "rows")) == {"usr_0000003"}
    assert len(kept_lines(record, "public.users", "keys")) == record.tables["public.users"].keys == SEED_USERS
    assert verify_increment(record.location)["watermark"] == record.watermark
    assert "staging_s" not in json.loads((ObjectStoragePath(record.location) / "manifest.json").read_text())
    # The time staging's connection was open is recorded apart from the whole.
    assert 0 < record.staging_s < record.duration_s


def test_frozen_rows_are_left_out_and_frozen_new_rows_are_not(seeded, tmp_path):
    since = current_watermark(seeded)
    users_changes(seeded, inserted=["usr_late"], updated=["usr_0000007"])
    conn = seeded.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM (FREEZE) users")
        # Every row is frozen now: all of their xmins are older than the table's relfrozenxid
        # (VACUUM froze every xid below it), the two new rows' included.
        cur.execute("""SELECT count(*) FILTER (WHERE age(u.xmin) <= age(c.relfrozenxid)), count(*)
                       FROM users u, pg_class c WHERE c.oid = 'users'::regclass""")
        assert cur.fetchone() == (0, SEED_USERS + 1)
        # A frozen tuple keeps its xmin (PostgreSQL 9.4+); the literal FrozenTransactionId
        # (older servers, pg_upgrade'd pages) has age INT_MAX: never "changed since".
        cur.execute("SELECT age('2'::xid) <= age(%s::text::xid)", (str(int(since) % 2**32),))
        assert cur.fetchone()[0] is False
    conn.close()
    inc = take_increment(seeded, storage(tmp_path), "inc_f", ["users"], since)
    # The 5000 old frozen rows are out; the two written after the watermark are in, frozen or not.
    assert first_fields(kept_lines(inc, "public.users", "rows")) == {"usr_late", "usr_0000007"}


def test_a_transaction_open_at_the_snapshot_is_in_the_next_increment(seeded, tmp_path):
    root = storage(tmp_path)
    since = current_watermark(seeded)
    early = seeded.connect()  # takes its xid first, commits last
    with early.cursor() as cur:
        cur.execute("""UPDATE users SET "authorizerId" = 'early' WHERE id = 'usr_0000001'""")
        cur.execute("SELECT pg_current_xact_id()::text")
        early_xid = int(cur.fetchone()[0])
    users_changes(seeded, updated=["usr_0000002"])  # a later xid, committed before the snapshot
    first = take_increment(seeded, root, "inc_1", ["users"], since)
    assert first_fields(kept_lines(first, "public.users", "rows")) == {"usr_0000002"}
    assert int(first.watermark) <= early_xid  # the snapshot's xmin: the open transaction is not behind it
    early.commit()
    early.close()
    second = take_increment(seeded, root, "inc_2", ["users"], first.watermark)
    assert "usr_0000001" in first_fields(kept_lines(second, "public.users", "rows"))


def test_the_chain_restores_the_tables_as_they_are_now(seeded, pg_server, pg_bin, tmp_path):
    tables = ["users", "execution_logs"]
    query(seeded, """INSERT INTO execution_logs (id, "workflowId", status, "startedAt", "userId")
                     SELECT 'log_' || g, 'wf_' || g, 'SUCCESS', now(), 'usr_' || lpad(g::text, 7, '0')
                     FROM generate_series(1, 300) g""")
    early = seeded.connect()  # still running while the dump is taken: not in the dump, in an increment
    with early.cursor() as cur:
        cur.execute("""UPDATE users SET "authorizerId" = 'during-dump' WHERE id = 'usr_0000050'""")
    backup = take_backup(seeded, tmp_path / "pre", pg_bin, "pre_chain")
    early.commit()
    early.close()
    assert backup.watermark is not None and BackupRecord.from_dict(backup.to_dict()) == backup
    # After the dump, before the migration: changes the dump may not hold.
    users_changes(seeded, inserted=["usr_a"], updated=["usr_0000100"], deleted=["usr_0000200"])
    query(seeded, """ALTER TABLE users DROP COLUMN "emailVerified", DROP COLUMN "passwordHash" """)  # the migration
    users_changes(seeded, inserted=["usr_b"], updated=["usr_0000101", "usr_a"], deleted=["usr_0000201"])
    query(seeded, """UPDATE execution_logs SET status = 'ERROR' WHERE id IN ('log_5', 'log_6')""")
    root = storage(tmp_path)
    one = take_increment(seeded, root, "inc_1", tables, backup.watermark)
    users_changes(seeded, inserted=["usr_c"], updated=["usr_0000102", "usr_b"], deleted=["usr_a", "usr_0000003"])
    query(seeded, """DELETE FROM execution_logs WHERE id = 'log_7'; INSERT INTO execution_logs
                     (id, "workflowId", status, "startedAt", "userId") VALUES ('log_x', 'wf', 'SUCCESS', now(), 'usr_c')""")
    two = take_increment(seeded, root, "inc_2", tables, one.watermark)
    assert one.tables["public.users"].columns == ("id", "email", "authorizerId", "clientId", "createdAt", "updatedAt")
    assert 0 < one.tables["public.users"].rows < 10 and 0 < two.tables["public.execution_logs"].rows < 10

    restored = replace(seeded, database=f"{seeded.database[:40]}_chain")
    recreate_database(pg_server, restored.database)
    archive.run_restore([str(pg_bin / "pg_restore"), "--no-owner", f"--dbname={restored.database}"], backup.path,
                        timeout_s=120, env=restored.child_env(), what="restore")
    with pytest.raises(BackupError, match=rf"starts at watermark {one.watermark}, but the target holds the state "
                                          rf"at {backup.watermark}: apply the increments in order"):
        apply_increment(restored, two.location, "users", after=backup.watermark)  # inc_1 skipped: refused
    for inc, after in ((one, backup.watermark), (two, one.watermark)):
        for table in tables:
            applied = apply_increment(restored, inc.location, table, after=after)
            assert applied.upserted == inc.tables[f"public.{table}"].rows
    # replaying the last one again changes nothing
    assert apply_increment(restored, two.location, "users", after=one.watermark).deleted == 0

    for table in tables:
        columns = two.tables[f"public.{table}"].columns
        now = io.BytesIO()
        live = seeded.connect()
        with live.cursor() as cur:
            cur.copy_expert(f'COPY "{table}" ({", ".join(map(quoted, columns))}) TO STDOUT', now)
        live.close()
        now.seek(0)
        conn = restored.connect()
        with conn, conn.cursor() as cur:
            cols = ", ".join(map(quoted, columns))
            cur.execute(f'CREATE TABLE "now_{table}" AS SELECT {cols} FROM "{table}" WITH NO DATA')
            cur.copy_expert(f'COPY "now_{table}" FROM STDIN', now)
            cur.execute(f'SELECT count(*) FROM "now_{table}"')
            assert cur.fetchone()[0] > 0
            cur.execute(f'SELECT count(*) FROM (SELECT {cols} FROM "{table}" EXCEPT SELECT * FROM "now_{table}") d')
            assert cur.fetchone()[0] == 0, f"{table}: rows in the chain that are not in the table now"
            cur.execute(f'SELECT count(*) FROM (SELECT * FROM "now_{table}" EXCEPT SELECT {cols} FROM "{table}") d')
            assert cur.fetchone()[0] == 0, f"{table}: rows of the table now missing from the chain"
        conn.close()
    assert query(restored, """SELECT "authorizerId" FROM users WHERE id = 'usr_0000050'""") == [("during-dump",)]


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_a_corrupted_kept_file_fails_verification_and_is_not_applied(seeded, tmp_path):
    users_changes(seeded, updated=["usr_0000001"])
    inc = take_increment(seeded, storage(tmp_path), "inc_c", ["users"], None)
    rows = Path(ObjectStoragePath(inc.location).path) / inc.tables["public.users"].rows_file
    data = bytearray(rows.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rows.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="does not decompress|sha256"):
        verify_increment(inc.location)
    before = query(seeded, "SELECT count(*) FROM users")
    with pytest.raises(BackupError, match="does not decompress|does not match its manifest"):
        apply_increment(seeded, inc.location, "users", after=None)
    assert query(seeded, "SELECT count(*) FROM users") == before

    rows.write_bytes(bytes(data[: len(data) // 3]))  # cut short
    with pytest.raises(BackupError, match="cut short|does not decompress"):
        verify_increment(inc.location)
    keys = Path(ObjectStoragePath(inc.location).path) / inc.tables["public.users"].keys_file
    keys.unlink()
    with pytest.raises(BackupError):
        verify_increment(inc.location)


def test_a_table_without_a_one_column_primary_key_is_refused(seeded, tmp_path):
    query(seeded, "CREATE TABLE nokey (a int); CREATE TABLE twokey (a int, b int, PRIMARY KEY (a, b))")
    with pytest.raises(BackupError, match=r"public\.nokey has no primary key"):
        take_increment(seeded, storage(tmp_path), "inc_k", ["users", "nokey"], None)
    with pytest.raises(BackupError, match=r"public\.twokey has a primary key of 2 columns"):
        take_increment(seeded, storage(tmp_path), "inc_k", ["twokey"], None)
    with pytest.raises(BackupError, match=r"public\.no_such_table does not exist"):
        take_increment(seeded, storage(tmp_path), "inc_k", ["no_such_table"], None)
    assert not (tmp_path / "incremental" / "inc_k" / "manifest.json").exists()


SESSION = ("SELECT current_setting('statement_timeout'), current_setting('TimeZone'), current_setting('DateStyle'), "
           "current_setting('IntervalStyle'), current_setting('extra_float_digits'), "
           "current_setting('transaction_read_only'), current_setting('transaction_isolation')")


def test_an_increment_through_a_transaction_pooler_leaves_nothing_behind(seeded, pgbouncer, tmp_path):
    pooled = pgbouncer.target(seeded.database)
    clean = query(seeded, SESSION)
    first = take_increment(pooled, storage(tmp_path), "inc_p1", ["users"], None)
    users_changes(seeded, updated=["usr_0000009"])
    second = take_increment(pooled, storage(tmp_path), "inc_p2", ["users"], first.watermark)
    assert first_fields(kept_lines(second, "public.users", "rows")) == {"usr_0000009"}
    # The next client of the pool's one server connection finds none of the increment's settings.
    assert query(pooled, SESSION) == clean


# --- the source ---------------------------------------------------------------------------


def plan_with_backup_check(tmp_path, pg_bin, tables):
    data = load_plan("default").model_dump(mode="json")
    data.update(backup_location=str(tmp_path / "backups"), pg_bin_dir=str(pg_bin))
    data["checks"] = [c for c in data["checks"] if c["id"] != "incremental_backup"] + [{
        "id": "incremental_backup", "title": "Incremental backup of the affected tables", "unit": "up",
        "source": {"kind": "backup", "tables": tables}, "expect": {"op": "==", "value": 1},
        "phases": ["passive"], "rule": "Horas 9-24 'Backup incremental creado'; GO 'Backups completados exitosamente'",
    }]
    return parse_plan(data, "<test>")


def passive_tick(k: int) -> clock.Tick:
    return clock.Tick("passive", k, timedelta(hours=8 + 4 * k), datetime.now(timezone.utc))


RUN = "manual__2026-01-01T00:00:00"


def test_the_source_chains_increments_by_watermark(staging, store, pg_bin, tmp_path):
    plan = plan_with_backup_check(tmp_path, pg_bin, ["users", "execution_logs"])
    check = plan.check("incremental_backup")
    pre = take_kept_backup(staging, plan_root(plan), pg_bin, "pre_run")
    store.add_event(RUN, "backup", runbook.backup_event(pre))
    users_changes(staging, updated=["usr_0000001"])

    first = observe.take(plan, "incremental_backup", "passive", passive_tick(1), RUN, store)
    assert (first.status, first.value) == ("pass", 1.0)
    ev = first.evidence
    folder = tmp_path / "backups" / "staging" / "incremental" / "inc_manual__2026-01-01T00_00_00_1"
    assert ev["path"] == folder.as_uri() and (folder / "manifest.json").is_file()
    assert (ev["since"], ev["since_from"], ev["base"]) == (pre.watermark, "pre-migration backup", "increment")
    first_link = "no previous increment (the first since the pre-migration backup, or none given)"
    assert ev["tables"]["public.users"] == {"rows": 1, "keys": SEED_USERS, "deletions": "key list",
                                            "key_list_reason": first_link}
    assert ev["tables"]["public.execution_logs"] == {"rows": 0, "keys": 0, "deletions": "key list",
                                                     "key_list_reason": first_link}
    assert ev["previous"] is None
    assert ev["size_bytes"] > 0 and ev["duration_s"] > 0 and int(ev["watermark"]) > int(pre.watermark)
    assert 0 < ev["staging_s"] < ev["duration_s"]
    store.record(first)

    users_changes(staging, inserted=["usr_x"])
    failed = replace(observe.take(plan, "incremental_backup", "passive", passive_tick(2), RUN, store),
                     status="error", value=None, evidence={"error": "storage down"})
    store.record(failed)  # an error reading keeps no watermark: the chain goes on from the last kept one
    second = sources.measure(check, plan, None, sources.Context(RUN, store))
    assert second.evidence["label"] == "inc_manual__2026-01-01T00_00_00_3"  # _2 was taken, then recorded as error
    assert (second.evidence["since"], second.evidence["since_from"]) == (
        ev["watermark"], "increment inc_manual__2026-01-01T00_00_00_1")
    # Chained to the first (not to the failed reading): nothing deleted, proved by count, no key list.
    assert second.evidence["previous"] == ev["path"]
    assert second.evidence["tables"]["public.users"] == {"rows": 1, "keys": SEED_USERS + 1, "deletions": "count"}
    manifest = json.loads((ObjectStoragePath(second.evidence["path"]) / "manifest.json").read_text())
    assert "keys" not in manifest["tables"]["public.users"]["files"]

    alone = sources.measure(check, plan, None, sources.Context("other-run", store))
    assert (alone.evidence["base"], alone.evidence["since"]) == ("full", None)
    assert alone.evidence["tables"]["public.users"]["rows"] == SEED_USERS + 1


def test_a_failed_backup_is_an_error_observation(staging, store, pg_bin, tmp_path):
    plan = plan_with_backup_check(tmp_path, pg_bin, ["users", "no_such_table"])
    check = plan.check("incremental_backup")
    with pytest.raises(MeasurementError, match="incremental backup failed.*no_such_table does not exist"):
        sources.measure(check, plan, None, sources.Context("r", store))

    obs = observe.take(plan, "incremental_backup", "passive", passive_tick(1), "r", store)
    assert (obs.status, obs.value) == ("error", None)
    assert "no_such_table" in obs.evidence["error"] and staging.password not in obs.evidence["error"]
    assert not any((tmp_path / "backups" / "staging" / "incremental").glob("*/manifest.json"))


def test_apply_increment_checks_what_the_target_holds_instead_of_trusting_after(seeded, pg_server, pg_bin, tmp_path):
    # Found by review: `after` was the caller's word for what the target holds; an
    # increment whose since equalled it was applied. A copy restored from the dump, given
    # inc_2 with after=inc_1's watermark (inc_1 forgotten), kept the dump's authorizerId of
    # usr_0000100, changed after the dump and held only by inc_1; a copy that holds inc_1,
    # given inc_3 with after=inc_2's watermark, kept usr_0000101's stale value the same way.
    backup = take_backup(seeded, tmp_path / "pre", pg_bin, "pre_chain")
    root = storage(tmp_path)
    users_changes(seeded, updated=["usr_0000100"])
    one = take_increment(seeded, root, "inc_1", ["users"], backup.watermark)
    users_changes(seeded, updated=["usr_0000101"])
    two = take_increment(seeded, root, "inc_2", ["users"], one.watermark)
    users_changes(seeded, updated=["usr_0000102"])
    three = take_increment(seeded, root, "inc_3", ["users"], two.watermark)

    restored = replace(seeded, database=f"{seeded.database[:40]}_verify")
    recreate_database(pg_server, restored.database)
    archive.run_restore([str(pg_bin / "pg_restore"), "--no-owner", f"--dbname={restored.database}"], backup.path,
                        timeout_s=120, env=restored.child_env(), what="restore")
    changed = """SELECT id, "authorizerId" FROM users WHERE id IN ('usr_0000100', 'usr_0000101', 'usr_0000102')
                 ORDER BY id"""
    before = query(restored, changed)

    with pytest.raises(BackupError) as err:
        apply_increment(restored, two.location, "users", after=one.watermark)
    assert f"no increment was applied to public.users of the target yet, but {two.location} starts at watermark " \
           f"{one.watermark}, where increment inc_1 ({one.location}) ends: apply it first" in str(err.value)
    assert query(restored, changed) == before  # nothing applied

    apply_increment(restored, one.location, "users", after=backup.watermark)
    apply_increment(restored, one.location, "users", after=backup.watermark)  # the same one again: no change
    with pytest.raises(BackupError) as err:
        apply_increment(restored, three.location, "users", after=two.watermark)
    assert (f"public.users of the target holds the state at watermark {one.watermark} (increment inc_1 applied "
            in str(err.value))
    assert f"not at {two.watermark} as after says: apply the increment whose since is {one.watermark} next" \
           in str(err.value)
    assert query(restored, changed) == [("usr_0000100", "changed-usr_0000100"), before[1], before[2]]

    apply_increment(restored, two.location, "users", after=one.watermark)
    apply_increment(restored, three.location, "users", after=two.watermark)
    assert query(restored, changed) == [(k, f"changed-{k}") for k in ("usr_0000100", "usr_0000101", "usr_0000102")]
