"""Taking observations: measure a check at its due ticks and record them in the store.

This is what one check task does at each wake-up, kept free of Airflow so it is tested
on its own. Each call:

1. stops at once if the run already holds a NO-GO breach (a NO-GO anywhere stops the
   other checks, so the rollback starts promptly); after recording, it judges the NO-GO
   criteria that read this check and records the breach for everyone to see;
2. takes the earliest due tick of (phase, check) not yet in the store and measures it
   now, recording how late that is; a tick whose successor has been due for longer than
   ``LATE_GRACE`` (a scheduler outage) can no longer be measured honestly and is
   recorded as an ``error`` "missed" observation, never invented;
3. returns when to wake up next (the next unrecorded tick's wall time, possibly now) or
   that the work is done.

``LATE_GRACE`` is wall time, independent of ``time_scale``: at real time it is noise
against 15-minute ticks; on a compressed clock it absorbs the scheduler's own latency.

Because the ticks come from hour 0 and the store, a restarted task resumes at the right
tick and a tick is never recorded twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from migration_soak import clock, judge, sources
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Plan
from migration_soak.store import Observation, Store

LATE_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class Progress:
    """Outcome of one wake-up: ``done`` (all ticks recorded or the soak stopped),
    ``next_at`` (wall time of the next tick, UTC), ``recorded`` observations, and the
    NO-GO breach that stopped the soak (``{"criterion", "detail", ...}``), if any."""

    done: bool
    next_at: datetime | None
    recorded: list[Observation]
    stopped_by: dict | None = None


def check_no_go(plan: Plan, store: Store, run_id: str, checks: set[str], time_scale: float) -> dict | None:
    """Judge the NO-GO criteria reading ``checks`` on the run's observations so far; on a
    breach, record it as the run's ``no_go`` event (the stop signal) and return it."""
    breaches = judge.no_go_breaches(plan, store.observations(run_id), time_scale, checks)
    if not breaches:
        return None
    first = breaches[0]
    payload = {"criterion": first.id, "detail": first.detail, "text": f"NO-GO: {first.id}: {first.detail}"}
    store.add_event(run_id, "no_go", payload)
    return store.no_go(run_id)


def take(plan: Plan, check_id: str, phase: str, tick: clock.Tick, run_id: str, store: Store) -> Observation:
    """Measure ``check_id`` now for ``tick`` and return the observation (not yet stored).

    A failed measurement becomes an ``error`` observation carrying the reason.
    """
    check = plan.check(check_id)
    # After the migration, compare with readings after it: a window spanning the
    # migration would blur the very change the soak looks for.
    previous = store.latest(run_id, check_id, exclude_phase=None if phase == "baseline" else "baseline")
    prev_evidence = previous.evidence if previous and previous.status != "error" else None
    try:
        m = sources.measure(check, plan, prev_evidence, sources.Context(run_id, store))
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
    recorded = []
    for i, tick in enumerate(schedule):
        if tick.at > now or tick.index in seen:
            continue
        successor = schedule[i + 1] if i + 1 < len(schedule) else None
        if successor is not None and successor.at + late_grace < now:
            obs = Observation(
                run_id=run_id, phase=phase, check_id=check_id, tick=tick.index, scheduled_at=tick.at,
                measured_at=now, value=None, unit=plan.check(check_id).unit, status="error",
                evidence={"error": f"missed: tick was due at {tick.at.isoformat()} and no task ran "
                                   f"before the next tick (+{late_grace.total_seconds():g} s grace)"},
            )
            if store.record(obs):
                recorded.append(obs)
            continue
        obs = take(plan, check_id, phase, tick, run_id, store)
        if store.record(obs):
            recorded.append(obs)
        seen.add(tick.index)
        break  # one measurement per wake-up: the next tick gets its own moment
    if recorded and phase != "baseline":
        breach = check_no_go(plan, store, run_id, {check_id}, time_scale)
        if breach is not None:
            return Progress(True, None, recorded, stopped_by=breach)
    pending = [t for t in schedule if t.index not in seen and t.index not in {o.tick for o in recorded}]
    return Progress(not pending, pending[0].at if pending else None, recorded)
