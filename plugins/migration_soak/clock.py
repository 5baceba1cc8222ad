"""The soak clock: when each tick falls in wall time.

Hour 0 is the moment the migration was verified. A tick at soak offset ``o`` falls at
``hour0 + o / time_scale`` of wall time: ``time_scale`` 1 is real time (24 h), 360 runs
the 24 h soak in 4 minutes. Every tick time is computed from hour 0, so a restarted task
recomputes where it is and never restarts the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from migration_soak.plan import MAX_SOAK_HOURS, Plan


@dataclass(frozen=True)
class Tick:
    """One scheduled measurement time of a phase: 1-based ``index`` (0 at hour 0),
    ``offset`` in soak time from hour 0, ``at`` in wall time (UTC)."""

    phase: str
    index: int
    offset: timedelta
    at: datetime


#: The largest speed-up the DAG's trigger form and the demo accept (24 h in under 1 s;
#: anything faster cannot fit one task start per tick).
TIME_SCALE_MAX = 100_000


def check_time_scale(time_scale: float, plan: Plan | None = None) -> float:
    """Validate the speed-up factor, in (0, ``TIME_SCALE_MAX``], and with ``plan`` no slower
    than :func:`slowest_time_scale` (a value below 1 stretches the soak: 0.001 made the 24 h
    soak last 1 000 days); raises ``ValueError`` naming the field and value, and the wall
    time the plan's soak would take. The one check of the trigger form's value (``load``,
    ``lifecycle.open_run``) and the demo's ``--time-scale``."""
    if not isinstance(time_scale, (int, float)) or isinstance(time_scale, bool) or not 0 < time_scale <= TIME_SCALE_MAX:
        raise ValueError(f"time_scale must be a number in (0, {TIME_SCALE_MAX}], got {time_scale!r}")
    if plan is not None:
        hours = plan.soak_hours()
        wall_h = hours / time_scale
        if wall_h > MAX_SOAK_HOURS:
            took = (f"{wall_h:,.0f} h ({wall_h / 24:,.0f} days) of wall time" if wall_h < 1e9
                    else f"{wall_h:.3g} h of wall time" if math.isfinite(wall_h)
                    else "more wall time than any clock holds")
            raise ValueError(f"time_scale {time_scale!r} stretches the plan's {hours:g} h soak to {took}, longer than the longest soak a plan may ask for, {MAX_SOAK_HOURS} h "
                             f"({MAX_SOAK_HOURS // 24} days): at least {slowest_time_scale(plan):g} "
                             "(1 is real time)")
    return float(time_scale)


def slowest_time_scale(plan: Plan) -> float:
    """The smallest ``time_scale`` :func:`check_time_scale` accepts for ``plan``: its soak
    in at most ``MAX_SOAK_HOURS`` of wall time, rounded up to 3 significant figures (1/7
    for a 24 h soak is 0.143); at most 1 (``MAX_SOAK_HOURS`` bounds a plan's soak)."""
    hours = plan.soak_hours()
    low = hours / MAX_SOAK_HOURS
    places = 2 - math.floor(math.log10(low))
    step = math.ceil(low * 10 ** places - 1e-9)
    # the quotient rounds: 71.4 / 168 = 0.425 exactly, yet 71.4 / 0.425 is 168.00000000000003
    # in floats, which check_time_scale refused while naming 0.425 as the least it accepts
    while hours / (step / 10 ** places) > MAX_SOAK_HOURS:
        step += 1
    return min(1.0, step / 10 ** places)


#: The largest ``clock_lead_s`` the trigger form accepts (wall seconds).
CLOCK_LEAD_MAX_S = 600


def check_clock_lead(lead_s: Any) -> float:
    """Validate the trigger form's ``clock_lead_s``, in [0, ``CLOCK_LEAD_MAX_S``]; raises
    ``ValueError`` naming the field and value. NaN passes the form's JSON schema (it is
    neither below the minimum nor above the maximum), so it is refused here."""
    if (not isinstance(lead_s, (int, float)) or isinstance(lead_s, bool) or not math.isfinite(lead_s)
            or not 0 <= lead_s <= CLOCK_LEAD_MAX_S):
        raise ValueError(f"clock_lead_s must be a number of seconds in [0, {CLOCK_LEAD_MAX_S}], got {lead_s!r}")
    return float(lead_s)


def wall(hour0: datetime, offset: timedelta, time_scale: float) -> datetime:
    """Wall-clock time of soak offset ``offset``."""
    return hour0 + offset / check_time_scale(time_scale)


def guard_every(plan: Plan, time_scale: float | None = None) -> timedelta:
    """The guard's cadence in soak time: ``guard.every_minutes``, or longer on a fast clock
    so that two readings are at least ``guard.min_wall_seconds`` of wall time apart
    (``time_scale`` None: the plan's nominal cadence). Raises ``ValueError`` without a guard."""
    if plan.guard is None:
        raise ValueError(f"plan {plan.name!r} has no guard")
    every = timedelta(minutes=plan.guard.every_minutes)
    if time_scale is None:
        return every
    return max(every, timedelta(seconds=plan.guard.min_wall_seconds * check_time_scale(time_scale)))


def offsets(plan: Plan, phase: str, time_scale: float | None = None) -> list[timedelta]:
    """Soak-time offsets of a phase's ticks from its origin.

    ``hour0``: the single tick at 0. ``baseline``: from the baseline's start. ``guard``:
    every :func:`guard_every` (at ``time_scale``) from hour 0 to the end of the soak.
    Others: the phase's.
    """
    if phase == "hour0":
        return [timedelta(0)]
    if phase == "baseline":
        if plan.baseline is None:
            raise ValueError(f"plan {plan.name!r} has no baseline phase")
        return plan.baseline.tick_offsets()
    if phase == "guard":
        every, end = guard_every(plan, time_scale), timedelta(hours=plan.soak_hours())
        return [every * k for k in range(1, int(end / every + 1e-9) + 1)]
    return plan.phase(phase).tick_offsets()


def ticks(plan: Plan, phase: str, origin: datetime, time_scale: float) -> list[Tick]:
    """The ticks of ``phase`` in wall time from ``origin`` (hour 0, or the baseline's start)."""
    if phase == "hour0":
        return [Tick("hour0", 0, timedelta(0), origin)]
    return [Tick(phase, i, off, wall(origin, off, time_scale))
            for i, off in enumerate(offsets(plan, phase, time_scale), start=1)]


def tick_at(plan: Plan, phase: str, origin: datetime, time_scale: float, index: int) -> Tick:
    """Tick ``index`` (1-based) of ``phase`` without building the whole schedule (the guard's
    schedule at ``time_scale`` 1 has 1 440 ticks and is asked for every minute)."""
    if phase != "guard":
        return ticks(plan, phase, origin, time_scale)[index - 1]
    off = guard_every(plan, time_scale) * index
    return Tick(phase, index, off, wall(origin, off, time_scale))


def soak_end(plan: Plan, hour0: datetime, time_scale: float) -> datetime:
    """Wall time at which the last phase ends."""
    return wall(hour0, timedelta(hours=plan.soak_hours()), time_scale)
