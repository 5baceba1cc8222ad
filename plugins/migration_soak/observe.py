"""Taking observations: measure a check at its due ticks and record them in the store.

What one check task does at each wake-up (``observe_due``), free of Airflow; the guard
is ``guard_due`` (run in the triggerer, docs/guard.md). Ticks come from hour 0 and the
store, so a restarted task resumes at the right tick and never records one twice.

Design notes: docs/design.md#observepy
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any


from migration_soak import clock, judge, sources
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Plan
from migration_soak.sources.sql import one_connection
from migration_soak.store import Observation, RunClock, Status, Store

LATE_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class Progress:
    """Outcome of one wake-up: ``done`` (all ticks recorded or the soak stopped),
    ``next_at`` (wall time of the next tick, UTC), ``recorded`` observations, the NO-GO
    breach that stopped the soak (``{"criterion", "detail", ...}``), if any, and
    ``breached_now`` when this wake-up recorded it."""

    done: bool
    next_at: datetime | None
    recorded: list[Observation]
    stopped_by: dict | None = None
    breached_now: bool = False


def rule_checks(plan: Plan, checks: set[str], alerts: bool = False) -> set[str]:
    """Every check read by the NO-GO criteria (and alerts, with ``alerts``) that read any of
    ``checks``: the observations their judgment needs."""
    _, no_go = judge.implicit_criteria(plan)
    rules = list(no_go) + (list(plan.alerts) if alerts else [])
    return {c for r in rules if set(r.checks) & checks for c in r.checks} | set(checks)


def observations_of(store: Store, run_id: str, check_ids: set[str], clock: RunClock) -> list[Observation]:
    """The run's observations of ``check_ids`` only (every phase), on ``clock``: a criterion
    reads nothing else, and a 24-hour soak with a guard reading every minute holds thousands
    of others."""
    return [o for c in sorted(check_ids) for o in store.observations(run_id, check_id=c, clock=clock)]


def record_no_go(store: Store, run_id: str, breach: judge.CriterionResult) -> dict:
    """Record ``breach`` as the run's ``no_go`` event (the stop signal) unless the run
    already holds one; returns the run's first breach."""
    if store.no_go(run_id) is None:
        store.add_event(run_id, "no_go", {"criterion": breach.id, "detail": breach.detail,
                                          "text": f"NO-GO: {breach.id}: {breach.detail}"})
    first = store.no_go(run_id)
    if first is None:
        raise RuntimeError(f"run {run_id}: the no_go event just recorded is not in the store")
    return first


def check_no_go(plan: Plan, store: Store, run_id: str, checks: set[str], clock: RunClock) -> dict | None:
    """Judge the NO-GO criteria reading ``checks`` on the run's observations so far (on
    ``clock``); on a breach, record it as the run's ``no_go`` event (the stop signal) and
    return it."""
    obs = observations_of(store, run_id, rule_checks(plan, checks), clock)
    breaches = judge.no_go_breaches(plan, obs, checks)
    if not breaches:
        return None
    return record_no_go(store, run_id, breaches[0])


def measured_pairs(store: Store, run_id: str) -> set[tuple[str, str]]:
    """The (phase, check) pairs of the run that hold at least one observation: a check task
    that stopped with its pair here took a reading (it ends success, else skipped)."""
    return store.measured_pairs(run_id)


#: How a failed unmeasured task's message ends (the judge names the task without it).
UNMEASURED_TAIL = "; the verdict counts them as missing, never as passes"


def unmeasured(store: Store, run_id: str, phase: str, check_id: str | None = None) -> str | None:
    """Why a check task that took every tick measured nothing: each reading of (``phase``,
    ``check_id``) an ``error``; for the guard (``check_id`` None), each reading of any one
    of its checks (the others' readings do not watch it). None when one was measured or
    none was taken. Such a task ends failed, not green (docs/verdict.md, "What the grid
    shows"): a green task says it watched something. The cause is the verdict's
    (``judge.main_cause``: masked, no timestamps). Always None
    for the one-reading gates before the clock (``baseline``, ``hour0``): failing one would
    stop the soak on a scrape hiccup; the verdict counts that reading as missing."""
    if phase in ("baseline", "hour0"):
        return None
    taken = store.observations(run_id, phase=phase, check_id=check_id)
    if not taken:
        return None
    if check_id is None:  # the guard: a check of it read never was not watched, whatever the others read
        by_check: dict[str, list[Observation]] = {}
        for o in taken:
            by_check.setdefault(o.check_id, []).append(o)
        dead = {c: obs for c, obs in by_check.items() if all(o.status == "error" for o in obs)}
        if dead and len(dead) < len(by_check):
            parts = [f"{c}: 0 of {len(obs)} readings measured, every one an error{judge.main_cause(obs)}"
                     for c, obs in sorted(dead.items())]
            return f"the guard's {'; '.join(parts)}{UNMEASURED_TAIL}"
    if any(o.status != "error" for o in taken):
        return None
    what = check_id if check_id else f"the guard ({len({o.check_id for o in taken})} checks)"
    return f"{what} {phase}: 0 of {len(taken)} readings measured, every one an error{judge.main_cause(taken)}{UNMEASURED_TAIL}"


def unmeasured_task(store: Store, run_id: str, task_id: str) -> str | None:
    """:func:`unmeasured` of a check task or the guard by its Airflow ``task_id``
    (``<phase>.<check>``, ``guard``), without its closing clause: what ``judge_soak`` names
    for such a failed task. None for any other task."""
    phase, _, check_id = task_id.partition(".")
    text = unmeasured(store, run_id, phase, check_id or None) if check_id or task_id == "guard" else None
    return text[:-len(UNMEASURED_TAIL)] if text and text.endswith(UNMEASURED_TAIL) else text


def previous_reading(store: Store, run_id: str, check_id: str, phase: str) -> Observation | None:
    """The reading a new one in ``phase`` starts its window at (scrape counters, log offsets).

    The guard and the phase checks are two series of the same check: each window starts at
    its own series' last reading. A phase reading starting at a guard reading taken a second
    earlier held a handful of requests or none (an ``error``), and a log count would miss the
    lines the guard had read. After the migration no window starts before it: a window
    spanning the migration would blur the very change the soak looks for. ``error``
    readings (a missed tick, a log briefly unreadable) are passed over: the window starts at
    the series' last reading with a value, so the lines and requests since then are counted
    once, neither lost to a fresh tail read nor counted again.
    """
    if phase == "guard":
        return store.latest(run_id, check_id, phases=("guard",), valued=True)
    return store.latest(run_id, check_id, exclude_phases=("guard",) if phase == "baseline" else ("baseline", "guard"),
                        valued=True)


def log_mark(store: Store, run_id: str, check_id: str, phase: str) -> dict[str, Any] | None:
    """Where a series after the migration starts reading the check's log when it has no
    reading yet: the position recorded just before the DDL (``runbook.mark_logs``), or None
    (the baseline, a check without a mark, a mark that could not be taken)."""
    if phase == "baseline":
        return None
    for event in reversed(store.events(run_id, "log_marks")):
        position = ((event.get("payload") or {}).get("marks") or {}).get(check_id)
        if isinstance(position, dict) and "offset" in position:
            return position
    return None


def take(plan: Plan, check_id: str, phase: str, tick: clock.Tick, run_id: str, store: Store) -> Observation:
    """Measure ``check_id`` now for ``tick`` and return the observation (not yet stored).

    A failed measurement becomes an ``error`` observation carrying the reason.
    """
    check = plan.check(check_id)
    previous = previous_reading(store, run_id, check_id, phase)
    prev_evidence = previous.evidence if previous else log_mark(store, run_id, check_id, phase)
    status: Status
    try:
        m = sources.measure(check, plan, prev_evidence, sources.Context(run_id, store, phase, tick.index))
        status, value, evidence = judge.status_of(check.expect, check.no_go, m.value), m.value, m.evidence
    except MeasurementError as exc:
        status, value, evidence = "error", None, {"error": str(exc)[:500]}
    return Observation(
        run_id=run_id, phase=phase, check_id=check_id, tick=tick.index, scheduled_at=tick.at,
        measured_at=datetime.now(timezone.utc), value=value, unit=check.unit, status=status, evidence=evidence,
    )


def observe_due(
    plan: Plan,
    store: Store,
    run_id: str,
    phase: str,
    check_id: str,
    hour0: datetime,
    time_scale: float,
    now: datetime | None = None,
    late_grace: timedelta = LATE_GRACE,
) -> Progress:
    """Record the earliest due, unrecorded tick of (phase, check); see the module doc."""
    breach = store.no_go(run_id)
    if breach is not None:
        return Progress(True, None, [], stopped_by=breach)
    now = now or datetime.now(timezone.utc)
    schedule = clock.ticks(plan, phase, hour0, time_scale)
    seen = {o.tick for o in store.observations(run_id, phase=phase, check_id=check_id)} if schedule[0].at <= now else set()
    recorded, measured = record_due(plan, store, run_id, phase, check_id, schedule, seen, now, late_grace)
    if recorded and phase != "baseline":
        # the phase's origin as the clock's: the rules read only soak time between readings
        breach = check_no_go(plan, store, run_id, {check_id}, RunClock(hour0, time_scale))
        if breach is not None:
            return Progress(True, None, recorded, stopped_by=breach, breached_now=True)
    return progress_after(schedule, seen | measured | {o.tick for o in recorded}, recorded)


def record_due(plan: Plan, store: Store, run_id: str, phase: str, check_id: str, schedule: list[clock.Tick],
               seen: set[int], now: datetime, late_grace: timedelta) -> tuple[list[Observation], set[int]]:
    """Go through the due ticks of ``schedule`` not in ``seen`` (tick indexes already
    recorded) in order: record each one :func:`overdue` as a :func:`missed_observation`,
    then measure the first other one now (:func:`take`) and stop there: one measurement
    per wake-up, the next tick gets its own moment.

    Returns (the observations the store took: not those another task recorded first,
    the index of the tick measured now, if any, as a set of at most one).
    """
    recorded = []
    for i, tick in enumerate(schedule):
        if tick.at > now or tick.index in seen:
            continue
        if overdue(schedule, i, now, late_grace):
            obs = missed_observation(plan, run_id, phase, check_id, tick, now, late_grace)
            if store.record(obs):
                recorded.append(obs)
            continue
        obs = take(plan, check_id, phase, tick, run_id, store)
        if store.record(obs):
            recorded.append(obs)
        return recorded, {tick.index}
    return recorded, set()


def overdue(schedule: list[clock.Tick], i: int, now: datetime, late_grace: timedelta) -> bool:
    """Whether tick ``schedule[i]`` can no longer be measured honestly at ``now``: its
    successor has been due for longer than ``late_grace`` (the last tick never is)."""
    return i + 1 < len(schedule) and schedule[i + 1].at + late_grace < now


def missed_observation(plan: Plan, run_id: str, phase: str, check_id: str, tick: clock.Tick, now: datetime,
           late_grace: timedelta) -> Observation:
    """The ``error`` observation, measured at ``now``, of a tick no task measured before
    the next tick was due (+ ``late_grace``): a gap the judge sees, never an invented value."""
    return Observation(
        run_id=run_id, phase=phase, check_id=check_id, tick=tick.index, scheduled_at=tick.at,
        measured_at=now, value=None, unit=plan.check(check_id).unit, status="error",
        evidence={"error": f"missed: tick was due at {tick.at.isoformat()} and no task ran "
                           f"before the next tick (+{late_grace.total_seconds():g} s grace)"},
    )


def progress_after(schedule: list[clock.Tick], done: set[int], recorded: list[Observation]) -> Progress:
    """The wake-up's ``Progress``: finished when every tick of ``schedule`` is in ``done``
    (indexes recorded or measured), else due again at the first other tick's wall time
    (possibly past: the task wakes again at once)."""
    pending = [t for t in schedule if t.index not in done]
    return Progress(not pending, pending[0].at if pending else None, recorded)


@dataclass(frozen=True)
class GuardProgress:
    """Outcome of one guard wake-up.

    ``tick``: the guard tick measured now (None: none was due, or it was already recorded).
    ``recorded``: its new observations. ``stopped_by``: the run's NO-GO breach, if the soak
    stopped; ``breached_now`` when this wake-up recorded it. ``alerts``: alerts whose rule
    the data meets and that were never notified (``{"alert", "text", "detail"}``); the
    caller posts them and records each as an ``alert`` event. ``next_at``: wall time of
    the next guard tick (None: the soak's last guard tick is recorded).
    """

    tick: int | None
    recorded: list[Observation]
    stopped_by: dict | None
    next_at: datetime | None
    breached_now: bool = False
    alerts: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.stopped_by is not None or self.next_at is None


#: Posts of one alert Slack refused before the guard gives up on it (one a guard wake-up;
#: each recorded as an ``alert`` event with ``notified: false``).
ALERT_TRIES = 3


def alerts_settled(store: Store, run_id: str) -> set[str]:
    """Ids of alerts not to post again: Slack accepted one of their posts (or the event
    predates ``notified``), or refused ``ALERT_TRIES`` of them."""
    refused: Counter[str] = Counter()
    settled: set[str] = set()
    for e in store.events(run_id, "alert"):
        alert = e["payload"].get("alert")
        if e["payload"].get("notified") is False:
            refused[alert] += 1
        else:
            settled.add(alert)
    return settled | {a for a, n in refused.items() if n >= ALERT_TRIES}


def new_alerts(plan: Plan, store: Store, run_id: str, obs: list[Observation], checks: set[str]) -> list[dict]:
    """Alerts reading ``checks`` whose rule ``obs`` meet and that are not settled
    (``alerts_settled``: never notified, or refused fewer than ``ALERT_TRIES`` times)."""
    settled = alerts_settled(store, run_id)
    return [{"alert": a.id, "text": f"ALERT {a.text}: {a.detail}", "detail": a.detail}
            for a in judge.firing_alerts(plan, obs, checks) if a.id not in settled]


def guard_due(plan: Plan, store: Store, run_id: str, hour0: datetime, time_scale: float,
              now: datetime | None = None, held: dict[str, Any] | None = None) -> GuardProgress:
    """One guard wake-up: measure every guard check for the latest due guard tick that is
    not recorded yet, then judge the NO-GO criteria and alerts that read the guard checks.

    The SQL checks of one wake-up share one database connection (``sql.one_connection``),
    each in its own read-only transaction; ``held`` (the guard trigger's) keeps it for the
    next wake-up (one login a trigger, not one a wake-up). Only the latest due tick is measured: a reading taken now is a reading of now, and an
    older tick missed (the triggerer was busy or down) is a gap the judge sees as one (a
    ``sustained`` window it leaves uncovered is not judged). Re-running it for a tick
    already recorded measures nothing and judges nothing again.
    """
    if plan.guard is None:
        raise ValueError(f"plan {plan.name!r} has no guard: guard_due needs plan.guard")
    breach = store.no_go(run_id)
    if breach is not None:
        return GuardProgress(None, [], breach, None)
    now = now or datetime.now(timezone.utc)
    every = clock.guard_every(plan, time_scale)
    last = len(clock.offsets(plan, "guard", time_scale))
    due = min(int((now - hour0) * time_scale / every + 1e-9), last)
    recorded: list[Observation] = []
    checks = set(plan.guard.checks)
    if due >= 1:
        tick = clock.tick_at(plan, "guard", hour0, time_scale, due)
        with one_connection(held):  # one login for all the guard's SQL checks (a trigger's life when held)
            for check_id in sorted(checks - store.checks_at(run_id, "guard", due)):
                reading = take(plan, check_id, "guard", tick, run_id, store)
                if store.record(reading):
                    recorded.append(reading)
    next_at = clock.tick_at(plan, "guard", hour0, time_scale, due + 1).at if due < last else None
    if not recorded:
        return GuardProgress(None, [], None, next_at)
    obs = observations_of(store, run_id, rule_checks(plan, checks, alerts=True), RunClock(hour0, time_scale))
    breaches = judge.no_go_breaches(plan, obs, checks)
    if breaches:
        return GuardProgress(due, recorded, record_no_go(store, run_id, breaches[0]), next_at, breached_now=True)
    return GuardProgress(due, recorded, None, next_at, alerts=new_alerts(plan, store, run_id, obs, checks))
