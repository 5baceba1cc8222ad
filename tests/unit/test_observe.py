"""observe_due's parts without a database: which due ticks are missed, measured or left,
and what a wake-up says next (tests/integration/test_observe.py runs it on a real store)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from migration_soak import clock, observe
from migration_soak.plan import load_plan
from migration_soak.store import Observation

PLAN = load_plan("default")
H0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SCHEDULE = clock.ticks(PLAN, "intensive", H0, 1.0)  # every 15 minutes from 00:15 to 02:00
GRACE = timedelta(seconds=5)


def at(minutes: float) -> datetime:
    return H0 + timedelta(minutes=minutes)


class Store:
    """Records like the real store (one observation per tick); ``taken_by_others``: ticks
    another task records first (``record`` then says False)."""

    def __init__(self, taken_by_others=()):
        self.taken_by_others = set(taken_by_others)
        self.rows: list[Observation] = []

    def record(self, obs: Observation) -> bool:
        self.rows.append(obs)
        return obs.tick not in self.taken_by_others


@pytest.fixture
def measured(monkeypatch):
    """observe.take measuring 7.0 at once; returns the ticks it measured."""
    ticks: list[int] = []

    def take(plan, check_id, phase, tick, run_id, store):
        ticks.append(tick.index)
        return Observation(run_id, phase, check_id, tick.index, tick.at, tick.at, 7.0, "count", "pass")

    monkeypatch.setattr(observe, "take", take)
    return ticks


def test_a_tick_is_overdue_once_its_successor_is_late_beyond_the_grace_and_the_last_never():
    assert not observe.overdue(SCHEDULE, 0, at(30) + GRACE, GRACE)
    assert observe.overdue(SCHEDULE, 0, at(30) + GRACE + timedelta(microseconds=1), GRACE)
    assert not observe.overdue(SCHEDULE, len(SCHEDULE) - 1, at(10_000), GRACE)


def test_a_missed_tick_is_an_error_observation_that_says_when_it_was_due():
    obs = observe.missed_observation(PLAN, "r", "intensive", "login_p95", SCHEDULE[1], at(61), GRACE)
    assert (obs.tick, obs.scheduled_at, obs.measured_at, obs.value, obs.status, obs.unit) == \
        (2, at(30), at(61), None, "error", PLAN.check("login_p95").unit)
    assert obs.evidence == {"error": "missed: tick was due at 2026-01-01T12:30:00+00:00 and no task ran "
                                     "before the next tick (+5 s grace)"}


def test_overdue_ticks_are_recorded_missed_then_one_is_measured_and_the_rest_waits(measured):
    store = Store()
    recorded, now_measured = observe.record_due(PLAN, store, "r", "intensive", "login_p95", SCHEDULE, {1},
                                                at(62), GRACE)
    assert [(o.tick, o.status) for o in recorded] == [(2, "error"), (3, "error"), (4, "pass")]
    assert measured == [4] and now_measured == {4}  # tick 1 was recorded before; tick 5 (01:15) is not due


def test_nothing_due_records_nothing(measured):
    recorded, now_measured = observe.record_due(PLAN, Store(), "r", "intensive", "login_p95", SCHEDULE, set(),
                                                at(14), GRACE)
    assert (recorded, now_measured, measured) == ([], set(), [])


def test_ticks_another_task_recorded_first_are_not_returned(measured):
    store = Store(taken_by_others={2, 3})
    recorded, now_measured = observe.record_due(PLAN, store, "r", "intensive", "login_p95", SCHEDULE, {1},
                                                at(46), GRACE)
    assert [o.tick for o in store.rows] == [2, 3] and recorded == [] and now_measured == {3}
    # tick 2 (missed, taken by another task) is still pending: the task wakes at once and sees it recorded
    p = observe.progress_after(SCHEDULE, {1} | now_measured, recorded)
    assert not p.done and p.next_at == at(30)


def test_progress_is_done_when_every_tick_is_recorded_else_the_first_pending_tick():
    every = {t.index for t in SCHEDULE}
    assert observe.progress_after(SCHEDULE, every, []) == observe.Progress(True, None, [])
    assert observe.progress_after(SCHEDULE, every - {5, 8}, []) == observe.Progress(False, at(75), [])
