"""The triggers on a real store: what they serialize, when they fire, how they end a task
when the soak stops, and the guard's hand-backs (docs/guard.md)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from airflow.triggers.base import TaskSkippedEvent, TaskSuccessEvent

from migration_soak.airflow import triggers
from migration_soak.airflow.triggers import CheckTrigger, GuardTrigger
from migration_soak.store import Observation
from tests.integration.conftest import query
from tests.integration.test_observe import guard_plan


@pytest.fixture
def on_store(store, monkeypatch):
    """The triggers' store is the test's (not an Airflow connection); a fresh stop watch."""
    monkeypatch.setattr(triggers, "_store", lambda conn_id: store)
    monkeypatch.setattr(triggers, "WATCH", triggers.StopWatch())
    return store


def first_event(trigger, timeout: float = 20.0):
    async def go():
        return await asyncio.wait_for(anext(trigger.run()), timeout)

    return asyncio.run(go())


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_check_trigger_serializes_its_class_path_and_everything_it_needs():
    t = CheckTrigger("run-1", "default", datetime(2026, 1, 1, 12, tzinfo=timezone.utc), 300, "soak_store",
                     "intensive", "login_p95", poll_seconds=1.5)
    path, kwargs = t.serialize()
    assert path == "migration_soak.airflow.triggers.CheckTrigger"
    assert kwargs == {"run_id": "run-1", "plan": "default", "hour0": "2026-01-01T12:00:00+00:00", "time_scale": 300.0,
                      "store_conn_id": "soak_store", "phase": "intensive", "check_id": "login_p95", "poll_seconds": 1.5}
    assert CheckTrigger(**kwargs).serialize() == (path, kwargs)  # the triggerer rebuilds it as it was
    with pytest.raises(ValueError, match="naive"):
        CheckTrigger("r", "default", datetime(2026, 1, 1), 300, "c", "p", "x")


def test_guard_trigger_serializes_its_class_path():
    t = GuardTrigger("run-1", "default", "2026-01-01T12:00:00+00:00", 300, "soak_store")
    path, kwargs = t.serialize()
    assert path == "migration_soak.airflow.triggers.GuardTrigger"
    assert GuardTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["time_scale"] == 300.0 and kwargs["hour0"] == "2026-01-01T12:00:00+00:00"


def test_check_trigger_measures_every_tick_at_its_time_then_ends_the_task(on_store, staging, tmp_path):
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    hour0 = now()  # the phase's ticks: 3 and 6 soak minutes = 3 s and 6 s of wall time
    event = first_event(CheckTrigger("c1", str(path), hour0, 60, "c", "soak", "users_without_authorizer_id",
                                     poll_seconds=0.2))
    assert isinstance(event, TaskSuccessEvent)  # the task ends in the triggerer, no worker
    obs = on_store.observations("c1", phase="soak", check_id="users_without_authorizer_id")
    assert [(o.tick, o.status, o.value) for o in obs] == [(1, "pass", 0.0), (2, "pass", 0.0)]
    for o in obs:  # each reading taken at its tick, not before, not a poll late
        assert timedelta(0) <= o.measured_at - o.scheduled_at < timedelta(seconds=1.5), o
    # again (a triggerer restart after the last tick): nothing measured twice, ends at once
    assert isinstance(first_event(CheckTrigger("c1", str(path), hour0, 60, "c", "soak", "users_without_authorizer_id")),
                      TaskSuccessEvent)
    assert len(on_store.observations("c1", phase="soak")) == 2


def test_check_trigger_hands_back_the_no_go_its_reading_recorded(on_store, staging, tmp_path):
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    query(staging, 'UPDATE users SET "authorizerId" = NULL WHERE id = \'usr_0000003\'')
    hour0 = now() - timedelta(seconds=3.2)  # tick 1 due
    trigger = CheckTrigger("c2", str(path), hour0, 60, "c", "soak", "users_without_authorizer_id", poll_seconds=0.2)
    event = first_event(trigger)
    assert event.payload["kind"] == "no_go" and event.payload["criterion"] == "no_go_users_without_authorizer_id"
    assert on_store.no_go("c2")["criterion"] == "no_go_users_without_authorizer_id"
    # run again (a triggerer restart): stopped, and this check took a reading: success, no worker
    assert isinstance(first_event(trigger), TaskSuccessEvent)
    assert len(on_store.events("c2", "no_go")) == 1


@pytest.mark.parametrize("took_reading", [False, True])
def test_check_trigger_ends_the_task_soon_after_the_soak_stops(on_store, staging, tmp_path, took_reading):
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    if took_reading:
        on_store.record(Observation("t2", "soak", "connection_usage", 1, now(), now(), 0.1, "ratio", "pass"))

    async def go():
        trigger = CheckTrigger("t2", str(path), now() + timedelta(hours=4), 60, "c", "soak", "connection_usage",
                               poll_seconds=0.2)
        waiting = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.8)
        assert not waiting.done()
        on_store.add_event("t2", "no_go", {"criterion": "x", "detail": "d", "text": "NO-GO: x: d"})
        stopped = time.monotonic()
        event = await asyncio.wait_for(waiting, 5)
        return event, time.monotonic() - stopped

    event, after = asyncio.run(go())
    assert isinstance(event, TaskSuccessEvent if took_reading else TaskSkippedEvent)
    assert after < 1.0  # within the poll interval, not at the next tick four hours away


def test_one_store_query_per_interval_however_many_triggers_wait(on_store, staging, tmp_path, monkeypatch):
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    calls = []
    real = on_store.no_go
    monkeypatch.setattr(on_store, "no_go", lambda run_id: calls.append(run_id) or real(run_id))

    async def go():
        later = now() + timedelta(hours=1)
        ts = [CheckTrigger("t3", str(path), later, 60, "c", "soak", f"check_{i}", poll_seconds=0.5) for i in range(40)]
        waiting = [asyncio.ensure_future(anext(t.run())) for t in ts]
        await asyncio.sleep(1.0)  # each woke once (one look each at the store), now all wait
        settled = len(calls)
        await asyncio.sleep(2.0)
        for w in waiting:
            w.cancel()
        return settled, len(calls) - settled

    settled, while_waiting = asyncio.run(go())
    assert settled >= 40  # the first wake-up of each
    assert 1 <= while_waiting <= 6, while_waiting  # 2 s at one look per 0.5 s, not 40 per interval


def test_guard_trigger_hands_back_a_no_go_it_recorded(on_store, staging, tmp_path):
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    query(staging, 'UPDATE users SET "authorizerId" = NULL WHERE id = \'usr_0000003\'')
    hour0 = now() - timedelta(seconds=1.5)  # tick 1 is due (one soak minute a wall second)
    event = first_event(GuardTrigger("g1", str(path), hour0, 60, "c", poll_seconds=0.2))
    assert event.payload["kind"] == "no_go" and event.payload["criterion"] == "no_go_users_without_authorizer_id"
    assert on_store.no_go("g1")["criterion"] == "no_go_users_without_authorizer_id"
    # run again (a triggerer restart): the run already stopped, the guard took readings: success, no worker
    assert isinstance(first_event(GuardTrigger("g1", str(path), hour0, 60, "c", poll_seconds=0.2)), TaskSuccessEvent)


def test_guard_trigger_hands_back_alerts_then_ends_the_task_at_the_soak_end(on_store, staging, tmp_path, monkeypatch):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    logins, opened = [], []
    login = PostgresHook.get_conn

    def counted(self):
        logins.append(self.postgres_conn_id)
        opened.append(login(self))
        return opened[-1]

    monkeypatch.setattr(PostgresHook, "get_conn", counted)
    path, plan = guard_plan(tmp_path, alert_above=0.0)
    hour0 = now()
    began = time.monotonic()
    event = first_event(GuardTrigger("g2", str(path), hour0, 60, "c", poll_seconds=0.2))
    assert event.payload["kind"] == "alerts" and [a["alert"] for a in event.payload["alerts"]] == ["pool_busy"]
    assert 2.9 <= time.monotonic() - began < 6  # ticks 1, 2, 3 (a second apart): 2 minutes covered at tick 3
    # three wake-ups, two SQL checks each, one login: the trigger kept its connection, and closed it at its end
    assert logins == ["soak_staging"]
    assert all(c.closed for c in opened)
    on_store.add_event("g2", "alert", {"alert": "pool_busy", "text": "posted"})
    # waits again from where the store says it is; the 6-minute soak ends after tick 6
    end = first_event(GuardTrigger("g2", str(path), hour0, 60, "c", poll_seconds=0.2))
    assert isinstance(end, TaskSuccessEvent)
    ticks = sorted({o.tick for o in on_store.observations("g2", phase="guard")})
    assert ticks[0] == 1 and ticks[-1] == 6 and len(ticks) >= 5


def test_guard_trigger_stops_when_someone_else_stopped_the_soak(on_store, staging, tmp_path):
    path, plan = guard_plan(tmp_path, alert_above=0.99)

    async def go():
        trigger = GuardTrigger("g3", str(path), now() + timedelta(hours=1), 60, "c", poll_seconds=0.2)
        waiting = asyncio.ensure_future(anext(trigger.run()))
        await asyncio.sleep(0.5)
        on_store.add_event("g3", "no_go", {"criterion": "x", "detail": "d", "text": "NO-GO: x: d"})
        return await asyncio.wait_for(waiting, 5)

    assert isinstance(asyncio.run(go()), TaskSkippedEvent)  # before its first tick: no reading


def _errors(store, run_id: str, phase: str, check_id: str, ticks, hour0: datetime, why: str = "HTTP 503") -> None:
    for tick in ticks:
        at = hour0 + timedelta(seconds=3 * tick)
        store.record(Observation(run_id, phase, check_id, tick, at, at, None, "count", "error", {"error": why}))


def test_check_trigger_hands_a_task_that_measured_nothing_back_to_fail(on_store, staging, tmp_path):
    path, plan = guard_plan(tmp_path, alert_above=0.99)
    hour0 = now() - timedelta(seconds=6.5)  # both ticks past, each read as an error
    _errors(on_store, "c9", "soak", "users_without_authorizer_id", (1, 2), hour0,
            why="connection to postgresql://soak:hunter2@db:5432/staging refused")
    event = first_event(CheckTrigger("c9", str(path), hour0, 60, "c", "soak", "users_without_authorizer_id"))
    assert not isinstance(event, TaskSuccessEvent) and event.payload["kind"] == "unmeasured"
    text = event.payload["text"]
    assert text.startswith("users_without_authorizer_id soak: 0 of 2 readings measured, every one an error")
    assert "refused" in text and "hunter2" not in text and "never as passes" in text and "error: '" in text
    # one reading measured among the errors: the task did watch something, and ends success
    _errors(on_store, "c10", "soak", "users_without_authorizer_id", (1,), hour0)
    at = hour0 + timedelta(seconds=6)
    on_store.record(Observation("c10", "soak", "users_without_authorizer_id", 2, at, at, 0.0, "count", "pass"))
    assert isinstance(first_event(CheckTrigger("c10", str(path), hour0, 60, "c", "soak",
                                               "users_without_authorizer_id")), TaskSuccessEvent)
