"""A migration that fails after committing part of its change (two pending migrations, the
first done; found by review): the run read "the migration was not applied" and never rolled
back, with passwordHash already gone. judge_soak now reads the table: NO-GO, rollback."""

from __future__ import annotations

import shutil

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from migration_soak import runbook
from migration_soak.airflow import tasks
from migration_soak.exceptions import MigrationError
from migration_soak.migrate import LedgerBackend
from migration_soak.plan import load_plan

from .conftest import INIT, MIGRATIONS, query

PLAN = load_plan("default")


def two_migrations(tmp_path):
    """The default plan's drop split in two; the second fails after its own DROP."""
    migs = tmp_path / "migrations"
    migs.mkdir()
    shutil.copy2(MIGRATIONS / "migration_lock.toml", migs / "migration_lock.toml")
    shutil.copytree(MIGRATIONS / INIT, migs / INIT)
    for name, script in (("20251202020031_drop_password_hash", 'ALTER TABLE "users" DROP COLUMN "passwordHash";\n'),
                         ("20251202020032_update_user_schema_final",
                          'ALTER TABLE "users" DROP COLUMN "emailVerified";\nSELECT 1/0;\n')):
        (migs / name).mkdir()
        (migs / name / "migration.sql").write_text(script)
    return migs


class TI:
    dag_id, run_id = "migration_soak", "r1"

    def __init__(self, migrate: str):
        self.migrate, self.pushed = migrate, {}

    def get_task_states(self, dag_id, run_ids):
        return {"r1": {"verify": "upstream_failed"} | ({"migrate": self.migrate} if self.migrate else {})}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def judge(monkeypatch, target, store, migrate: str):
    ti = TI(migrate)
    ctx = {"params": {"plan": "default", "time_scale": 1.0, "on_inconclusive": "ask"}, "run_id": "r1", "ti": ti}
    monkeypatch.setattr(tasks, "run_context", lambda: (ctx, PLAN, "r1", store))
    monkeypatch.setattr(tasks, "query", lambda plan: lambda text: query(target, text))
    return tasks.judge_soak.function(), ti


def test_a_migration_that_dropped_a_column_before_failing_is_judged_no_go(seeded, store, tmp_path, monkeypatch):
    with pytest.raises(MigrationError):
        LedgerBackend(seeded, two_migrations(tmp_path)).deploy()  # what the migrate task runs
    assert runbook.dropped_already(PLAN, lambda text: query(seeded, text)) == ["passwordHash"]
    branch, ti = judge(monkeypatch, seeded, store, "failed")
    assert branch == ["ask_sign_off"] and ti.pushed["verdict"]["decision"] == "NO_GO"
    assert ti.pushed["verdict"]["reasons"] == [
        "the migration failed after committing part of its change: users.passwordHash already dropped; roll back to "
        "give the values back"]
    assert store.events("r1", "verdict")[-1]["payload"]["decision"] == "NO_GO"


def test_a_migration_that_changed_nothing_is_still_not_judged(seeded, store, monkeypatch):
    with pytest.raises(AirflowSkipException, match=r"the migration was not applied \(migrate: failed; every column it "
                                                   r"drops is still there\): nothing to judge or roll back"):
        judge(monkeypatch, seeded, store, "failed")


@pytest.mark.parametrize("migrate", ["upstream_failed", "skipped", None])
def test_columns_another_run_dropped_are_not_judged_when_this_run_never_migrated(seeded, store, monkeypatch, migrate):
    # Found by review: a run refused at load (another run holds staging) or whose preflight
    # failed (the migration was already applied by an earlier GO run) never reaches migrate,
    # yet judge_soak (all_done) read the columns gone and judged NO-GO "the migration failed
    # after committing part of its change": Slack "ROLLBACK INITIATED", then a rollback with
    # no backup of this run, against a schema another run is soaking or already approved.
    LedgerBackend(seeded, MIGRATIONS).deploy()  # an earlier or concurrent run's migration
    assert runbook.dropped_already(PLAN, lambda text: query(seeded, text)) == ["passwordHash", "emailVerified"]
    with pytest.raises(AirflowSkipException, match=r"this run did not start the migration \(migrate: "
                                                   + (migrate or "not run") + r"\)"):
        judge(monkeypatch, seeded, store, migrate)
    assert store.events("r1", "verdict") == []
