"""Triggers: the soak's waits, run by Airflow's triggerer instead of a worker (docs/guard.md).

- ``CheckTrigger``: a check task between its ticks; ends the task itself.
- ``GuardTrigger``: the guard; measures, judges NO-GO criteria and alerts.

Both rebuild from ``serialize()`` and the store; blocking work runs in threads.

Design notes: docs/design.md#airflowtriggerspy
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSkippedEvent, TaskSuccessEvent, TriggerEvent

#: Wall seconds between two looks at the run's stop signal while waiting. It bounds how
#: long the other checks keep waiting once a NO-GO is recorded (issue 11: the rollback
#: starts within 30 s); one store query per interval per run and triggerer, whatever the
#: number of waiting tasks (``StopWatch``).
STOP_POLL_SECONDS = 2.0


#: Threads for the triggers' blocking work (the store, the sources). Not the event loop's
#: default pool (CPU count + 4 threads, shared with every trigger of the triggerer): a
#: reading may wait (a first window of ``openmetrics.MIN_WINDOW_S``, a scrape up to its
#: timeout), and 13 checks on a 3 s cadence plus the guard would queue behind each other.
POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="migration-soak-trigger")


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` in ``POOL`` and await its result."""
    return await asyncio.get_running_loop().run_in_executor(POOL, fn)


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        raise ValueError(f"a naive datetime is ambiguous: {value!r}")
    return moment.astimezone(timezone.utc)


def _store(conn_id: str):
    from migration_soak.store import Store

    return Store.from_airflow(conn_id)


class StopWatch:
    """The run's stop signal as the triggers of one triggerer process see it.

    ``breach()`` returns the run's first ``no_go`` payload (or None), asking the store at
    most once per ``max_age`` seconds per (connection, run) however many triggers wait on
    it; a breach, once seen, is final. One lock per event loop (tests run several loops).
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[float, dict | None]] = {}
        self._locks: dict[tuple[int, str, str], asyncio.Lock] = {}

    async def breach(self, conn_id: str, run_id: str, max_age: float = STOP_POLL_SECONDS) -> dict | None:
        key = (conn_id, run_id)
        lock = self._locks.setdefault((id(asyncio.get_running_loop()), *key), asyncio.Lock())
        async with lock:
            at, payload = self._seen.get(key, (float("-inf"), None))
            if payload is None and time.monotonic() - at >= max_age:
                payload = await in_thread(lambda: _store(conn_id).no_go(run_id))
                self._seen[key] = (time.monotonic(), payload)
            return payload

    def forget(self, conn_id: str, run_id: str) -> None:
        """Drop what is known of a run (tests)."""
        self._seen.pop((conn_id, run_id), None)


WATCH = StopWatch()


def log_reading(log, what: str, o) -> None:
    """One log line per reading; an ``error`` reading is a WARNING naming why."""
    if o.status == "error":
        log.warning("%s tick %d: ERROR reading, counted as missing (never as a pass): %s", what, o.tick,
                    o.evidence.get("error", ""))
    else:
        log.info("%s tick %d: %s %s (%s)", what, o.tick, "n/a" if o.value is None else f"{o.value:g}", o.unit, o.status)


async def _sleep_until(moment: datetime, conn_id: str, run_id: str, poll: float) -> dict | None:
    """Sleep until ``moment`` (wall time), looking at the stop signal every ``poll``
    seconds; returns the breach if the soak stopped first, else None."""
    while True:
        breach = await WATCH.breach(conn_id, run_id, poll)
        if breach is not None:
            return breach
        remaining = (moment - datetime.now(timezone.utc)).total_seconds()
        if remaining <= 0:
            return None
        await asyncio.sleep(min(remaining, poll))


async def _end_done(conn_id: str, run_id: str, phase: str, check_id: str | None) -> TriggerEvent:
    """The event that ends a task whose last tick is recorded: ``success`` without a worker,
    or ``{"kind": "unmeasured", "text"}`` when every reading was an error (the worker fails
    the task, so Airflow's failure callback tells Slack: ``observe.unmeasured``)."""
    def why():
        from migration_soak.observe import unmeasured

        return unmeasured(_store(conn_id), run_id, phase, check_id)

    text = await in_thread(why)
    return TaskSuccessEvent() if text is None else TriggerEvent({"kind": "unmeasured", "text": text})


async def _end_stopped(trigger: BaseTrigger, conn_id: str, run_id: str, phase: str, check_id: str | None,
                       breach: dict) -> TriggerEvent:
    """The event that ends a stopped task without a worker: ``success`` if it took a
    reading (any check of ``phase`` when ``check_id`` is None), else ``skipped``."""
    def pairs_measured():
        from migration_soak.observe import measured_pairs  # a first import is slow: off the event loop

        return measured_pairs(_store(conn_id), run_id)

    pairs = await in_thread(pairs_measured)
    took = any(p == phase and (check_id is None or c == check_id) for p, c in pairs)
    trigger.log.warning("soak stopped: %s; this task %s", breach.get("text"),
                        "took readings: success" if took else "took no reading: skipped")
    return TaskSuccessEvent() if took else TaskSkippedEvent()


class CheckTrigger(BaseTrigger):
    """A check task between its ticks: sleep until the next tick, measure it (``observe_due``,
    in a thread), and so on until the phase's last tick; the task ends with no worker.

    Yields one event and stops:

    - the task's end, with no worker: ``success`` once every tick of (``phase``,
      ``check_id``) is recorded, or when someone else stopped the soak and this check took
      a reading (``skipped`` if it took none);
    - ``{"kind": "no_go", "criterion", "text"}``: a reading of this check breached a NO-GO
      criterion and this trigger recorded the run's NO-GO (the worker then skips the
      check tasks that never started).

    Measuring here rather than on a worker is what lets a compressed soak keep its clock:
    a worker task start costs seconds of scheduler and CPU time, a reading milliseconds
    (docs/demo.md, "Where the wall time goes"). A reading that fails is an ``error``
    observation, as on a worker.

    :param run_id: the DAG run (the store's run id)
    :param plan: the plan name or path
    :param hour0: hour 0 of the soak clock (ISO-8601, UTC)
    :param time_scale: the soak clock's speed-up
    :param store_conn_id: the observation store's connection (the plan's, for the stop watch)
    :param phase: the check task's phase
    :param check_id: the check task's check
    :param poll_seconds: wall seconds between two looks at the stop signal between ticks
    """

    def __init__(self, run_id: str, plan: str, hour0: datetime | str, time_scale: float, store_conn_id: str,
                 phase: str, check_id: str, poll_seconds: float = STOP_POLL_SECONDS):
        super().__init__()
        self.run_id = run_id
        self.plan = plan
        self.hour0 = _utc(hour0)
        self.time_scale = float(time_scale)
        self.store_conn_id = store_conn_id
        self.phase = phase
        self.check_id = check_id
        self.poll_seconds = float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("migration_soak.airflow.triggers.CheckTrigger", {
            "run_id": self.run_id, "plan": self.plan, "hour0": self.hour0.isoformat(),
            "time_scale": self.time_scale, "store_conn_id": self.store_conn_id, "phase": self.phase,
            "check_id": self.check_id, "poll_seconds": self.poll_seconds})

    def _wake(self):
        from migration_soak import observe
        from migration_soak.plan import load_plan

        return observe.observe_due(load_plan(self.plan), _store(self.store_conn_id), self.run_id, self.phase,
                                   self.check_id, self.hour0, self.time_scale)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        what = f"{self.check_id} {self.phase}"
        while True:
            progress = await in_thread(self._wake)
            for o in progress.recorded:
                log_reading(self.log, what, o)
            if progress.breached_now:
                self.log.warning("%s: %s", what, progress.stopped_by.get("text"))
                yield TriggerEvent({"kind": "no_go", "criterion": progress.stopped_by.get("criterion"),
                                    "text": progress.stopped_by.get("text")})
                return
            if progress.stopped_by is not None:
                yield await _end_stopped(self, self.store_conn_id, self.run_id, self.phase, self.check_id,
                                         progress.stopped_by)
                return
            if progress.done:
                self.log.info("%s: every tick of the phase is recorded", what)
                yield await _end_done(self.store_conn_id, self.run_id, self.phase, self.check_id)
                return
            breach = await _sleep_until(progress.next_at, self.store_conn_id, self.run_id, self.poll_seconds)
            if breach is not None:
                yield await _end_stopped(self, self.store_conn_id, self.run_id, self.phase, self.check_id, breach)
                return


class GuardTrigger(BaseTrigger):
    """The guard between breaches: measure the guard checks at each guard tick and judge.

    Yields one event and stops:

    - ``{"kind": "no_go", "criterion", "text"}``: this guard recorded the run's NO-GO (the
      worker then stops what has not started);
    - ``{"kind": "alerts", "alerts": [...]}``: alerts fired that the run never notified (the
      worker posts them, records them and waits again);
    - the task's end, with no worker: ``success`` at the soak's end or when someone else
      stopped the soak (``skipped`` if the guard never took a reading).

    :param run_id: the DAG run
    :param plan: the plan name or path
    :param hour0: hour 0 of the soak clock (ISO-8601, UTC)
    :param time_scale: the soak clock's speed-up
    :param store_conn_id: the observation store's connection (the plan's, for the stop watch)
    :param poll_seconds: wall seconds between two looks at the stop signal between ticks
    """

    def __init__(self, run_id: str, plan: str, hour0: datetime | str, time_scale: float, store_conn_id: str,
                 poll_seconds: float = STOP_POLL_SECONDS):
        super().__init__()
        self.run_id = run_id
        self.plan = plan
        self.hour0 = _utc(hour0)
        self.time_scale = float(time_scale)
        self.store_conn_id = store_conn_id
        self.poll_seconds = float(poll_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("migration_soak.airflow.triggers.GuardTrigger", {
            "run_id": self.run_id, "plan": self.plan, "hour0": self.hour0.isoformat(),
            "time_scale": self.time_scale, "store_conn_id": self.store_conn_id, "poll_seconds": self.poll_seconds})

    def _wake(self, held: dict[str, Any]):
        from migration_soak import observe
        from migration_soak.plan import load_plan

        plan = load_plan(self.plan)
        return observe.guard_due(plan, _store(self.store_conn_id), self.run_id, self.hour0, self.time_scale,
                                 held=held)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from migration_soak.sources.sql import close_held

        # The staging connection of the guard's SQL checks, kept between wake-ups: one login
        # for the trigger's life instead of 1 440 a soak (idle and outside any transaction
        # in between; replaced if the server drops it). Closed however the trigger ends.
        held: dict[str, Any] = {}
        try:
            async for event in self._guard(held):
                yield event
        finally:
            close_held(held)

    async def _guard(self, held: dict[str, Any]) -> AsyncIterator[TriggerEvent]:
        while True:
            progress = await in_thread(lambda: self._wake(held))
            for o in progress.recorded:
                log_reading(self.log, f"guard {o.check_id}", o)
            if progress.breached_now:
                self.log.warning("guard tick %s: %s", progress.tick, progress.stopped_by.get("text"))
                yield TriggerEvent({"kind": "no_go", "criterion": progress.stopped_by.get("criterion"),
                                    "text": progress.stopped_by.get("text")})
                return
            if progress.stopped_by is not None:
                yield await _end_stopped(self, self.store_conn_id, self.run_id, "guard", None, progress.stopped_by)
                return
            if progress.alerts:
                yield TriggerEvent({"kind": "alerts", "alerts": progress.alerts})
                return
            if progress.next_at is None:
                self.log.info("guard: the soak's last guard tick is recorded")
                yield await _end_done(self.store_conn_id, self.run_id, "guard", None)
                return
            breach = await _sleep_until(progress.next_at, self.store_conn_id, self.run_id, self.poll_seconds)
            if breach is not None:
                yield await _end_stopped(self, self.store_conn_id, self.run_id, "guard", None, breach)
                return
