"""The sensors outside a scheduler: what they defer to and for how long, the reschedule
fallback under ``dag.test()``, the enforced timeout, and how a stopped soak ends them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    DownstreamTasksSkipped,
    TaskDeferred,
)

from migration_soak import observe
from migration_soak.airflow import sensors
from migration_soak.airflow.builder import build_dag
from migration_soak.airflow.triggers import CheckTrigger, GuardTrigger
from migration_soak.store import Observation
from tests.integration.test_observe import guard_plan

SCALE = 60.0  # one soak minute per wall second


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def dag(store, staging, tmp_path, monkeypatch):
    """The guard test plan's DAG with its sensors' templates rendered by hand, on the test's store."""
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    monkeypatch.setattr(sensors.Store, "from_airflow", classmethod(lambda cls, conn_id: store))
    d = build_dag("guardtest", plan)
    for t in d.tasks:
        if isinstance(t, sensors.SoakSensor):
            t.plan, t.time_scale = str(path), SCALE
    return d


def ctx(run_id: str, user: str | None = "someone") -> dict:
    return {"run_id": run_id, "dag_run": SimpleNamespace(triggering_user_name=user)}


def sensor(dag, task_id: str, hour0: datetime):
    task = dag.task_dict[task_id]
    task.hour0 = hour0.isoformat()
    return task


def test_a_check_task_defers_to_its_next_tick_with_the_deadline_as_timeout(dag):
    hour0 = now()
    task = sensor(dag, "soak.users_without_authorizer_id", hour0)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(ctx("s1"))
    d = deferred.value
    assert isinstance(d.trigger, CheckTrigger) and d.method_name == "execute_complete"
    assert d.trigger.hour0 == hour0 and d.trigger.time_scale == SCALE and d.trigger.plan == task.plan
    assert (d.trigger.run_id, d.trigger.phase, d.trigger.check_id) == ("s1", "soak", "users_without_authorizer_id")
    # deadline: the last tick (6 soak minutes = 6 s) + timeout (1 h)
    assert abs((now() + d.timeout) - (hour0 + timedelta(seconds=6 + sensors.DEFAULT_TIMEOUT_S))).total_seconds() < 1
    # started late (a queue), a tick due: still no reading on the worker, the trigger takes it
    task.hour0 = (now() - timedelta(seconds=3.1)).isoformat()
    with pytest.raises(TaskDeferred):
        task.execute(ctx("s1"))
    assert dag_store().observations("s1") == []
    # the trigger handed back the NO-GO it recorded: the check tasks that never read are skipped
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        task.execute_complete(ctx("s1"), {"kind": "no_go", "criterion": "x", "text": "NO-GO: x"})
    assert "soak.users_without_authorizer_id" not in skipped.value.tasks and skipped.value.tasks


def dag_store():
    return sensors.Store.from_airflow("any")


def test_under_dag_test_a_check_task_measures_on_the_worker_and_reschedules(dag):
    hour0 = now()
    task = sensor(dag, "soak.users_without_authorizer_id", hour0)
    with pytest.raises(AirflowRescheduleException) as rescheduled:
        task.execute(ctx("s2", user="dag_test"))
    assert rescheduled.value.reschedule_date == hour0 + timedelta(seconds=3)
    task.hour0 = (now() - timedelta(seconds=3.1)).isoformat()  # tick 1 due: measured here
    with pytest.raises(AirflowRescheduleException):
        task.execute(ctx("s2", user="dag_test"))
    assert [o.tick for o in dag_store().observations("s2")] == [1]


def test_a_check_task_past_its_deadline_fails_or_with_soft_fail_skips(dag):
    task = sensor(dag, "soak.users_without_authorizer_id", now() - timedelta(hours=2))
    with pytest.raises(AirflowSensorTimeout, match="timed out .* after its last tick"):
        task.execute(ctx("s3"))
    assert dag_store().observations("s3") == []  # nothing measured that late
    task.soft_fail = True
    with pytest.raises(AirflowSkipException, match="timed out"):
        task.execute(ctx("s3"))


def test_a_stopped_soak_skips_the_checks_that_took_no_reading(dag):
    store = dag_store()
    hour0 = now() - timedelta(seconds=3.2)  # tick 1 due
    store.record(Observation("s4", "hour0", "connection_usage", 0, hour0, hour0, 0.1, "ratio", "pass"))
    store.add_event("s4", "no_go", {"criterion": "x", "detail": "d", "text": "NO-GO: x: d"})
    # a check that took readings: success, and the idle check tasks are skipped in one call
    store.record(Observation("s4", "soak", "users_without_authorizer_id", 1, hour0, hour0, 0.0, "count", "pass"))
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        sensor(dag, "soak.users_without_authorizer_id", hour0).execute(ctx("s4"))
    checks = {t.task_id for t in dag.tasks if isinstance(t, sensors.CheckSensor)}
    assert set(skipped.value.tasks) == checks - {"soak.users_without_authorizer_id"}
    # a check that took none: skipped itself
    with pytest.raises(AirflowSkipException, match="before this check took a reading"):
        sensor(dag, "soak.connection_usage", hour0).execute(ctx("s4"))


def test_the_guard_defers_to_its_trigger_and_posts_alerts_it_hands_back(dag, monkeypatch):
    posted = []
    monkeypatch.setattr("migration_soak.notify.send", lambda text, conn_id=None, **kw: posted.append(text) or True)
    hour0 = now()
    guard = sensor(dag, "guard", hour0)
    with pytest.raises(TaskDeferred) as deferred:
        guard.execute(ctx("s5"))
    assert isinstance(deferred.value.trigger, GuardTrigger) and deferred.value.trigger.hour0 == hour0
    alert = {"alert": "pool_busy", "text": "ALERT connection usage high: 95%", "detail": "95%"}
    with pytest.raises(TaskDeferred):  # posted, then waits again
        guard.execute_complete(ctx("s5"), {"kind": "alerts", "alerts": [alert]})
    with pytest.raises(TaskDeferred):  # handed back twice (a retry): posted once
        guard.execute_complete(ctx("s5"), {"kind": "alerts", "alerts": [alert]})
    assert posted == [":warning: [staging] ALERT connection usage high: 95%"]
    assert [e["payload"]["alert"] for e in dag_store().events("s5", "alert")] == ["pool_busy"]
    with pytest.raises(DownstreamTasksSkipped):  # the NO-GO it recorded: stop the checks that did not start
        guard.execute_complete(ctx("s5"), {"kind": "no_go", "criterion": "x", "text": "NO-GO: x"})


def test_an_alert_slack_refused_is_posted_again_a_few_times(dag, monkeypatch):
    """An alert Slack refused (rate limit, outage) was recorded ``notified: false`` and never
    posted again: nobody heard of it. Now each wake-up that hands it back posts it again,
    ``observe.ALERT_TRIES`` times in all; once Slack accepts one, it is settled."""
    answers = [False, True]
    posted = []
    monkeypatch.setattr("migration_soak.notify.send",
                        lambda text, conn_id=None, **kw: posted.append(text) or answers.pop(0))
    guard = sensor(dag, "guard", now())
    alert = {"alert": "pool_busy", "text": "ALERT connection usage high: 95%", "detail": "95%"}
    for _ in range(3):
        with pytest.raises(TaskDeferred):
            guard.execute_complete(ctx("s6"), {"kind": "alerts", "alerts": [alert]})
    assert len(posted) == 2 and answers == []
    assert [e["payload"]["notified"] for e in dag_store().events("s6", "alert")] == [False, True]

    monkeypatch.setattr("migration_soak.notify.send", lambda text, conn_id=None, **kw: posted.append(text) or False)
    for _ in range(observe.ALERT_TRIES + 2):
        with pytest.raises(TaskDeferred):
            guard.execute_complete(ctx("s7"), {"kind": "alerts", "alerts": [alert]})
    assert [e["payload"]["notified"] for e in dag_store().events("s7", "alert")] == [False] * observe.ALERT_TRIES
    assert observe.alerts_settled(dag_store(), "s7") == {"pool_busy"}


def test_a_phase_task_that_measured_nothing_fails_and_a_gate_before_the_clock_does_not(dag):
    from airflow.sdk.exceptions import AirflowFailException

    store = dag_store()
    hour0 = now() - timedelta(seconds=6.5)  # the soak phase's two ticks are past
    for tick in (1, 2):
        at = hour0 + timedelta(seconds=3 * tick)
        store.record(Observation("s9", "soak", "users_without_authorizer_id", tick, at, at, None, "count", "error",
                                 {"error": "HTTP 503"}))
    task = sensor(dag, "soak.users_without_authorizer_id", hour0)
    with pytest.raises(AirflowFailException, match="0 of 2 readings measured, every one an error: .HTTP 503."):
        task.execute(ctx("s9", user="dag_test"))  # under dag.test(): the end is on the worker
    with pytest.raises(AirflowFailException, match="0 of 2 readings measured"):  # the trigger's hand-back
        task.execute_complete(ctx("s9"), {"kind": "unmeasured", "text": "users_without_authorizer_id soak: 0 of 2 "
                                                                        "readings measured, every one an error"})
    # hour 0's one reading as an error: counted as missing, the clock still starts
    store.record(Observation("s9", "hour0", "users_without_authorizer_id", 0, hour0, hour0, None, "count", "error",
                             {"error": "HTTP 503"}))
    assert observe.unmeasured(store, "s9", "hour0", "users_without_authorizer_id") is None
    assert observe.unmeasured(store, "s9", "soak", "connection_usage") is None  # took no reading


def test_a_guard_check_that_measured_nothing_fails_the_guard_though_others_did(store):
    # Found by review: the guard ended failed only when every reading of every guard check
    # was an error; with db_disk_io's 1 440 guard readings all 'HTTP 503' and the other
    # checks read, it ended green, as if it had watched the "> 90 % sustained" NO-GO on it.
    hour0 = now() - timedelta(minutes=10)
    for tick in (1, 2, 3):
        at = hour0 + timedelta(minutes=tick)
        store.record(Observation("g1", "guard", "db_disk_io", tick, at, at, None, "ratio", "error",
                                 {"error": "scrape of /metrics answered HTTP 503"}))
        store.record(Observation("g1", "guard", "db_cpu", tick, at, at, 0.2, "ratio", "pass"))
    text = observe.unmeasured(store, "g1", "guard")
    assert text == ("the guard's db_disk_io: 0 of 3 readings measured, every one an error: 'scrape of /metrics "
                    "answered HTTP 503'; the verdict counts them as missing, never as passes"), text
    store.record(Observation("g1", "guard", "db_disk_io", 4, hour0, hour0, 0.1, "ratio", "pass"))
    assert observe.unmeasured(store, "g1", "guard") is None  # one measured: it watched it
