"""One soak per staging database, for tasks cleared in the UI: a task that changes staging
(migrate, the restarts, the rollback group) re-checks the database's lease first."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from airflow.sdk.exceptions import AirflowFailException

from migration_soak import lifecycle, notify, runbook
from migration_soak.airflow import context as c
from migration_soak.airflow import rollback_tasks as rb
from migration_soak.airflow import tasks as t
from migration_soak.decision import Decision, decision_event
from tests.unit.test_runbook import STAGING, FakeStore

OTHER = {"database_key": STAGING.key, "database": str(STAGING), "environment": "staging", "run_id": "r2",
         "plan": "default", "taken_at": datetime(2026, 12, 6, 4, 0, tzinfo=timezone.utc)}


class FakeTI:
    def xcom_pull(self, task_ids, key="return_value"):
        return None


class Touched(Exception):
    pass


@pytest.fixture
def old_run(monkeypatch):
    """Run r1 of the default plan, finished and released; anything that would reach staging,
    the apps or Slack raises ``Touched``."""
    store = FakeStore()
    store.add_event("r1", "decision", decision_event(Decision("NO_GO", "rollback", "judge", "errors 2%")))
    store.add_event("r1", "backup", {"path": "/backups/pre_r1.dump.zst"})
    ctx = {"params": {"plan": "default", "environment": "staging", "time_scale": 1.0}, "run_id": "r1", "ti": FakeTI()}
    monkeypatch.setattr(c, "get_current_context", lambda: ctx)
    monkeypatch.setattr(c.Store, "from_airflow", classmethod(lambda cls, conn_id: store))
    monkeypatch.setattr(c, "identity", lambda plan: STAGING)  # what the server says, read before anything changes

    def touch(*a, **kw):
        raise Touched()

    for module, name in ((t, "direct"), (t, "backend"), (t, "http"), (rb, "direct"), (rb, "backend"), (rb, "query"),
                         (runbook, "mark_logs"), (lifecycle, "kept_backup"), (lifecycle, "restart"), (notify, "send")):
        monkeypatch.setattr(module, name, touch)
    return store


TASKS = {"migrate": lambda: t.migrate.function({}), "restart_apps": lambda: t.restart_apps.function("x"),
         "notify_rollback": rb.notify_rollback.function, "restore": rb.restore.function,
         "mark_ledger": lambda: rb.mark_ledger.function({}),
         "restart_after_rollback": rb.restart_after_rollback.function}


@pytest.mark.parametrize("task", TASKS)
def test_a_cleared_task_of_a_finished_run_does_not_touch_staging_another_run_soaks(old_run, task):
    # Found by review: run r1 rolled back and released staging; run r2 now soaks it. The
    # operator clears r1's rollback.restore (or notify_rollback, migrate, a restart) in the
    # UI: it posted "ROLLBACK INITIATED", restored r1's old backup's values into the columns
    # r2 had dropped and marked the ledger rolled back, under r2's soak.
    old_run.lease = dict(OTHER)
    with pytest.raises(AirflowFailException) as err:
        TASKS[task]()
    step = {"restart_apps": "restart", "restart_after_rollback": "rollback_restart"}.get(task, task)
    assert str(err.value) == ("database 'staging' of PostgreSQL system 7400000000000000001 (reached as "
                              "soak@db.internal:5432/staging) is being soaked by run r2 (plan default, environment "
                              f"'staging', since 2026-12-06 04:00 UTC); this run's {step} does not touch it")
    assert old_run.kinds() == ["decision", "backup"]  # nothing recorded either


@pytest.mark.parametrize("task", TASKS)
def test_a_cleared_task_of_a_finished_run_takes_the_free_environment_back_first(old_run, task):
    with pytest.raises(Touched):  # it goes on to its work
        TASKS[task]()
    assert old_run.lease["run_id"] == "r1"  # until release, which runs after it, gives it back
