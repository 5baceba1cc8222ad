"""Incremental backups on the real server: a dump of only the named tables that reads back
whole, names quoted for pg_dump's pattern parser, and a failed backup recorded as an
``error`` observation, never a pass."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from migration_soak import archive, clock, observe, sources
from migration_soak.backup import pg_dump_argv, take_backup, verify_backup
from migration_soak.exceptions import BackupError, MeasurementError
from migration_soak.plan import load_plan, parse_plan

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


def test_the_source_takes_numbered_verified_backups(staging, store, pg_bin, tmp_path):
    plan = plan_with_backup_check(tmp_path, pg_bin, ["users"])
    check = plan.check("incremental_backup")

    first = observe.take(plan, "incremental_backup", "passive", passive_tick(1), "manual__2026-01-01T00:00:00", store)
    assert (first.status, first.value) == ("pass", 1.0)
    ev = first.evidence
    expected = tmp_path / "backups" / "staging" / "incremental" / "inc_manual__2026-01-01T00_00_00_1.dump"
    assert ev["path"] == expected.as_uri() and expected.is_file()
    assert ev["tables"] == ["public.users"] and ev["requested"] == ["users"] and ev["size_bytes"] > 0
    assert len(ev["sha256"]) == 64 and ev["duration_s"] > 0
    store.record(first)

    second = sources.measure(check, plan, None, sources.Context("manual__2026-01-01T00:00:00", store))
    assert second.evidence["label"] == "inc_manual__2026-01-01T00_00_00_2"


def test_a_failed_backup_is_an_error_observation(staging, store, pg_bin, tmp_path):
    plan = plan_with_backup_check(tmp_path, pg_bin, ["users", "no_such_table"])
    check = plan.check("incremental_backup")
    with pytest.raises(MeasurementError, match="incremental backup failed.*no matching tables"):
        sources.measure(check, plan, None, sources.Context("r", store))

    obs = observe.take(plan, "incremental_backup", "passive", passive_tick(1), "r", store)
    assert (obs.status, obs.value) == ("error", None)
    assert "no matching tables" in obs.evidence["error"] and staging.password not in obs.evidence["error"]
    assert not any((tmp_path / "backups" / "staging" / "incremental").glob("*.dump"))
