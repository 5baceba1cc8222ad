"""The rule kinds of the plan's criteria and alerts, one class each: its data points, its
text and its judgement. ``judge.py`` composes them into criteria and the verdict.

:func:`rule_kind` turns a rule spec from ``plan.py`` into its kind: ``threshold``,
``sustained``, ``window_count``, ``baseline``, ``growth``. Rules: docs/plans.md#rules.

Design notes: docs/design.md#rulespy
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from typing import Any, Generic, TypeVar

from migration_soak.plan import (
    BaselineRule,
    Condition,
    GrowthRule,
    Rule,
    SustainedRule,
    ThresholdRule,
    WindowCountRule,
)
from migration_soak.sources.openmetrics import histogram_quantile
from migration_soak.store import Observation

#: One data point of a rule: the reading and the value compared (in the check's unit, or a
#: relative change 0.1 = +10 % for ``baseline`` and ``growth``).
Point = tuple[Observation, float]

Spec = TypeVar("Spec", ThresholdRule, SustainedRule, WindowCountRule, BaselineRule, GrowthRule)


# --- time, values and confidence ---------------------------------------------------------------

def soak_minutes(a: Observation, b: Observation) -> float:
    """Soak minutes from reading ``a``'s scheduled time to ``b``'s."""
    return (_soak(b, "soak_s") - _soak(a, "soak_s")) / 60.0


def taken_minutes(a: Observation, b: Observation) -> float:
    """Soak minutes from the moment reading ``a`` was taken to the moment ``b`` was."""
    return (_soak(b, "measured_soak_s") - _soak(a, "measured_soak_s")) / 60.0


def _soak(o: Observation, field: str) -> float:
    """A reading's soak time; ``ValueError`` for one loaded without the run's clock."""
    t = getattr(o, field)
    if t is None:
        raise ValueError(f"observation {o.check_id}@{o.phase}#{o.tick} has no soak time: load it on the run's clock")
    return t


def _value(o: Observation) -> float:
    """A reading's value; ``ValueError`` for one without (the series must hold measured readings)."""
    if o.value is None:
        raise ValueError(f"observation {o.check_id}@{o.phase}#{o.tick} has no value: rules read measured readings")
    return o.value


def wilson_lower(successes: float, trials: float, z: float = 1.96) -> float:
    """Lower bound of the Wilson score interval of a proportion (95 % for z = 1.96)."""
    if trials <= 0:
        return 0.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / (1 + z * z / trials))


def wilson_upper(successes: float, trials: float, z: float = 1.96) -> float:
    """Upper bound of the Wilson score interval of a proportion (95 % for z = 1.96)."""
    if trials <= 0:
        return 1.0
    return 1.0 - wilson_lower(trials - successes, trials, z)


def _counts(o: Observation, op: str) -> tuple[float, float] | None:
    """(numerator, denominator) of a count-based ratio compared by an order (``>``, ``>=``,
    ``<``, ``<=``), else None."""
    ev = o.evidence or {}
    if o.unit == "ratio" and op in (">", ">=", "<", "<=") and "numerator" in ev and "denominator" in ev:
        return float(ev["numerator"]), float(ev["denominator"])
    return None


def _breach_value(o: Observation, op: str) -> float:
    """The value a bound ``op`` is compared with to show it holds: a count-based ratio's
    confident limit on the far side (the lower limit for ``>``, the upper one for ``<``)."""
    counts = _counts(o, op)
    if counts is None:
        return _value(o)
    return wilson_lower(*counts) if op in (">", ">=") else wilson_upper(*counts)


def _clear_value(o: Observation, op: str) -> float:
    """The value that shows a bound ``op`` does not hold: a count-based ratio's confident
    limit on the near side (the upper limit for ``>``, the lower one for ``<``)."""
    counts = _counts(o, op)
    if counts is None:
        return _value(o)
    return wilson_upper(*counts) if op in (">", ">=") else wilson_lower(*counts)


def _windows(series: list[Observation], minutes: float,
             closed: bool) -> Iterator[tuple[Observation, list[Observation]]]:
    """Each reading of ``series`` with the readings of the ``minutes`` of soak time that end
    at it: those scheduled ``0 <= age < minutes`` before it (``<=`` when ``closed``). Two
    pointers: linear in the readings, which matters with a guard reading every minute for
    24 hours."""
    start = 0
    for i, o in enumerate(series):
        while start < i and _too_old(soak_minutes(series[start], o), minutes, closed):
            start += 1
        end = i + 1  # readings scheduled at the same time as ``o`` belong to its window too
        while end < len(series) and series[end].scheduled_at == o.scheduled_at:
            end += 1
        yield o, series[start:end]


def _too_old(age: float, minutes: float, closed: bool) -> bool:
    return age > minutes if closed else age >= minutes


def _num(x: float, sig: int = 3, max_decimals: int = 4) -> str:
    """``x`` with about ``sig`` significant digits, thousands separators, never e-notation."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    decimals = min(max(sig - 1 - math.floor(math.log10(abs(x))), 0), max_decimals)
    text = f"{x:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("0", "-0"):
        return ("-" if x < 0 else "") + "<0." + "0" * (max_decimals - 1) + "1"
    return text


#: How a unit reads: (multiplier, suffix); the value times the multiplier, then the suffix.
_UNITS: dict[str, tuple[float, str]] = {
    "ratio": (100, "%"),
    "percent": (1, "%"),
    "bytes": (1 / 2**20, " MiB"),
    "ms": (1, " ms"),
    "seconds": (1, " s"),
    "per_minute": (1, "/min"),
}


def format_value(value: float | None, unit: str, sig: int = 3) -> str:
    """A reading as people read it: ``ratio`` 0..1 in %, ``bytes`` in MiB, ``ms``/``seconds``
    with their unit, ``up`` as up/down, counts as integers; ``n/a`` for ``None``. About
    ``sig`` significant digits."""
    if value is None:
        return "n/a"
    if unit in _UNITS:
        scale, suffix = _UNITS[unit]
        return f"{_num(value * scale, sig, max(4, sig))}{suffix}"
    if unit == "up" and value in (0, 1):
        return "up" if value == 1 else "down"
    if unit in ("count", "rows") and float(value).is_integer():
        return f"{int(value):,}"
    return _num(value, sig + 1, max(4, sig))


def format_change(ratio: float, sig: int = 3) -> str:
    """A relative change (0.079 -> ``+7.9%``)."""
    return ("+" if ratio > 0 else "") + f"{_num(ratio * 100, sig, max(4, sig))}%"


def format_apart(value: float, bound: float, fmt=format_value, *args: Any) -> str:
    """``fmt(value, *args)`` with as many more digits as it takes not to read as ``bound``
    when it is not ``bound`` (10.04 % against "> 10%" reads "10.04%", not "10%"); at most 9."""
    text = fmt(value, *args)
    if value == bound or text != fmt(bound, *args):
        return text
    for sig in range(4, 10):
        text = fmt(value, *args, sig=sig)
        if text != fmt(bound, *args, sig=sig):
            break
    return text


# --- the rule kinds ----------------------------------------------------------------------------

@dataclass(frozen=True)
class RuleKind(ABC, Generic[Spec]):
    """What every kind shares: its ``spec`` from the plan, the condition ``op value`` its
    points are compared with, and how a NO-GO (:meth:`detect`) and a GO
    (:meth:`holds_throughout`) read those points. Subclasses give the points and the text."""

    spec: Spec

    #: the rule compares against the baseline median: without one it has no points
    needs_baseline = False
    #: how a breach names its reading: ``at`` a reading, or ``in the window ending`` at one
    window_phrase = "at"

    def window_words(self, series: list[Observation], base: float | None) -> str:
        """:attr:`window_phrase` for the window the rule compared on ``series``."""
        return self.window_phrase

    @cached_property  # built once: the loops below compare every reading with it
    def condition(self) -> Condition:
        return Condition(op=self.spec.op, value=self.spec.value)

    @abstractmethod
    def points(self, series: list[Observation], base: float | None,
               confident: bool = False) -> list[Point]:
        """The data points compared with the condition. ``base``: the baseline median (or
        None); ``confident``: compare count-based ratios by their lower confidence limit
        (for breaches)."""

    @abstractmethod
    def text(self, unit: str) -> str:
        """The rule in words, values in the checks' ``unit`` (e.g. ``> 1% sustained for 5 min``)."""

    def shown(self, value: float, unit: str) -> str:
        """One data point in words: the value in ``unit`` (relative kinds: the change), never
        written as the bound it is not (:func:`format_apart`)."""
        return format_apart(value, self.spec.value, format_value, unit)

    def max_gap_minutes(self) -> float | None:
        """The longest soak-time gap accepted between two readings of a breaching run; None: no limit."""
        return None

    def span_minutes(self) -> float | None:
        """The soak time a run of breaching points must span; None: one point is a breach."""
        return None

    def run_phrase(self) -> str:
        """What a breach's run of readings says about their spacing (after ``N consecutive readings``)."""
        gap = self.max_gap_minutes()
        return "" if gap is None else f", at most {_num(gap)} min apart"

    def breach_note(self, base: float | None, unit: str) -> str:
        """Appended to a breach's detail (the baseline for relative kinds)."""
        return ""

    def point_note(self, series: list[Observation], o: Observation, base: float | None, unit: str) -> str:
        """Appended to the point at ``o`` in words: what it compared (relative kinds)."""
        return ""

    def range_note(self, base: float | None, unit: str, check_id: str = "") -> str:
        """Appended to a met GO criterion's range and coverage (of ``check_id``)."""
        return ""

    def clears(self, o: Observation) -> bool:
        """Whether a reading that does not show the condition shows it does not hold: a
        count-based ratio only when its 95 % limit on the near side is within the bound (0
        errors in 50 requests does not show an error rate under 1 %; in 5 000 it does). A
        reading that shows neither is no evidence: inside a run it is a gap."""
        return _counts(o, self.spec.op) is None or not self.condition.holds(_clear_value(o, self.spec.op))

    def detect(self, series: list[Observation], base: float | None) -> list[Point] | None:
        """The points that show the condition is met (as a NO-GO or alert reads it), or None:
        the first such point, or for a kind with :meth:`span_minutes` the first covered run
        (:meth:`_covered_run`). Times are scheduled times (the soak clock's)."""
        points = self.points(series, base, confident=True)
        span = self.span_minutes()
        if span is None:
            hit = next(((o, v) for o, v in points if self.condition.holds(v)), None)
            return [hit] if hit else None
        return self._covered_run(points, span)

    def _covered_run(self, points: list[Point], span: float) -> list[Point] | None:
        """The first run of consecutive points meeting the condition, at least two, spanning
        ``span`` soak minutes, none more than :meth:`max_gap_minutes` after the one before.
        A point that :meth:`clears` restarts the run; one that neither meets nor clears is a
        gap; a point too long after the run's last starts a new run."""
        gap = self.max_gap_minutes()
        run: list[Point] = []
        for o, v in points:
            if not self.condition.holds(v):
                if self.clears(o):
                    run = []
                continue  # too few requests to say either way: a gap, not a good reading
            # 1e-9: readings exactly half the window apart cover it despite float rounding
            if run and gap is not None and soak_minutes(run[-1][0], o) > gap + 1e-9:
                run = []  # the window is not covered: start again from this reading
            run.append((o, v))
            if len(run) >= 2 and soak_minutes(run[0][0], run[-1][0]) >= span:
                return run
        return None

    def unjudged(self, series: list[Observation], base: float | None, reach: float | None = None,
                 min_cover: float = 0.9) -> str | None:
        """Why these readings could not show a breach, whatever their values, or None when
        they could: no data point (:meth:`no_points`); for a kind with :meth:`span_minutes`,
        readings spanning less than it; with :meth:`max_gap_minutes` too, readings close
        enough to each other covering less than ``min_cover`` (0..1) of the soak's first
        ``reach`` soak-minutes (None: of the span of the readings), so that a breach could
        hide in the rest (a compressed clock's guard, an outage). A NO-GO that could not be
        breached is not "clear" (docs/verdict.md#not-judged)."""
        points = self.points(series, base, confident=True)
        if not points:
            return self.no_points(series, base)
        span, gap = self.span_minutes(), self.max_gap_minutes()
        if span is None:
            return None
        n = len(points)
        first, last = points[0][0], points[-1][0]
        spanned = soak_minutes(first, last)
        if gap is None:
            return None if spanned >= span else (f"{n} reading{'' if n == 1 else 's'} spanning {_num(spanned)} "
                                                 f"soak-min; a breach needs {_num(span)}")
        total = max(reach if reach is not None else spanned, span)
        deltas = [soak_minutes(a, b) for (a, _), (b, _) in zip(points, points[1:])]
        # 1e-9: readings exactly half the window apart cover it despite float rounding
        covered = sum(d for d in deltas if d <= gap + 1e-9)
        if covered >= min_cover * total - 1e-9:
            return None
        apart = [d for d in deltas if d > 0]
        spacing = f"typically {_num(statistics.median(apart))} soak-min apart" if apart else "all at one soak time"
        return (f"{n} reading{'' if n == 1 else 's'}, {spacing}: readings at most {_num(gap)} min apart (what a "
                f"{_num(span)}-min window needs) cover {_num(covered)} of {_num(total)} soak-min")

    def no_points(self, series: list[Observation], base: float | None) -> str:
        """Why the rule has no data point (:meth:`unjudged`)."""
        return "no reading with a value"

    def beyond(self, series: list[Observation], base: float | None) -> list[Point]:
        """The points that meet the condition on their own (plain values): what a rule that
        could not be judged may hide."""
        return [(o, v) for o, v in self.points(series, base) if self.condition.holds(v)]

    def holds_throughout(self, series: list[Observation], base: float | None) -> tuple[bool, Point | None, int]:
        """(every point meets the condition, the first point that does not, number of points)."""
        points = self.points(series, base)
        bad = next(((o, v) for o, v in points if not self.condition.holds(v)), None)
        return bad is None, bad, len(points)


#: The window a GO on a count-based ratio must hold in, pooled (:meth:`Threshold.bad_window`):
#: the runbook's coarsest check of a metric after Horas 1-2 is hourly ("Checklist Horaria").
GO_WINDOW_MINUTES = 60.0


def _readings(series: list[Observation], op: str, confident: bool) -> list[Point]:
    """Each reading as a point (confident: a count-based ratio by its lower limit)."""
    return [(o, _breach_value(o, op) if confident else _value(o)) for o in series]


class Threshold(RuleKind[ThresholdRule]):
    """Each reading compared with the bound (runbook "Criterios de Éxito", e.g. "0 usuarios
    sin authorizerId"): a NO-GO is breached by any reading, a GO met when all meet it."""

    def points(self, series: list[Observation], base: float | None,
               confident: bool = False) -> list[Point]:
        return _readings(series, self.spec.op, confident)

    def text(self, unit: str) -> str:
        return f"{self.spec.op} {format_value(self.spec.value, unit)}"

    def holds_throughout(self, series: list[Observation], base: float | None) -> tuple[bool, Point | None, int]:
        """As :meth:`RuleKind.holds_throughout`; a count-based ratio's reading fails the bound
        only when its 95 % limit on the bound's side does too (1 failure in 1 000 requests
        is 0.1 %, but does not show a rate of 0.1 % or more); the soak's pooled requests
        must then show the bound (:meth:`unshown`)."""
        points = self.points(series, base)
        bad = next(((o, v) for o, v in points if not self.condition.holds(_clear_value(o, self.spec.op))), None)
        return bad is None, bad, len(points)

    def bad_window(self, series: list[Observation],
                   minutes: float = GO_WINDOW_MINUTES) -> tuple[Observation, float, float, float] | None:
        """The worst window of ``minutes`` soak-minutes whose pooled requests show a GO's
        bound on a count-based ratio does not hold (95 % limit on the near side), as
        ``(its last reading, rate, failed, requests)``, or None. Each series on its own (the
        guard's, the phases'), windows of "the last hour" readings pooled where they do not
        overlap (:func:`disjoint_windows`). The runbook checks "< 0.1%" at every check of its
        schedule (15 minutes, then hourly): a bad hour must not hide in the soak's pool, where
        23 good hours dilute it (0.2 % for an hour of 60 000 requests is 0.008 % of the day).
        A window of one reading is that reading, judged by :meth:`holds_throughout`."""
        op = self.spec.op
        if op not in ("<", "<=", ">", ">=") or not any(_counts(o, op) for o in series):
            return None
        found: tuple[Observation, float, float, float, float] | None = None
        below = op in ("<", "<=")

        def worse(a: float, b: float) -> bool:
            return a > b if below else a < b

        for part in _parts(series):
            for o, window in _windows(part, minutes, False):
                counted = [c for c in (_counts(p, op) for p in disjoint_windows(window)) if c is not None]
                if len(counted) < 2:
                    continue
                n, d = sum(c[0] for c in counted), sum(c[1] for c in counted)
                if d <= 0:
                    continue
                near = wilson_lower(n, d) if below else wilson_upper(n, d)
                if not self.condition.holds(near) and (found is None or worse(near, found[4])):
                    found = (o, n / d, n, d, near)
        return None if found is None else found[:4]

    def unshown(self, series: list[Observation]) -> str | None:
        """Why readings of a count-based ratio, each consistent with a GO's bound ("< 0.1 %",
        "> 90 %"), do not show it: their requests pooled (one series, :func:`_pooled_counts`)
        leave the 95 % limit on the far side of it (0 failures in 2 000 requests do not show
        < 0.1 %: upper limit 0.19 %). None when they show it, or carry no counts."""
        op = self.spec.op
        if op not in ("<", "<=", ">", ">="):
            return None
        below = op in ("<", "<=")
        counts = _pooled_counts(series, lower=not below)
        if counts is None:
            return None
        n, d = counts
        limit = wilson_upper(n, d) if below else wilson_lower(n, d)
        if self.condition.holds(limit):
            return None
        return (f"pooled counts {_num(n)} of {_num(d)}: too few to show {self.text('ratio')} (95 % "
                f"{'upper' if below else 'lower'} limit {format_value(limit, 'ratio')})")


class Sustained(RuleKind[SustainedRule]):
    """The bound met on consecutive readings covering ``minutes`` of soak time (runbook
    "Error rate > 1% sostenido por > 5 minutos"). Covered: at least two readings, none more
    than half the window after the one before (a shorter good spell could hide in a longer
    gap). With 15-minute phase ticks alone a 5-minute window is never covered: the guard's
    readings cover it."""

    def points(self, series: list[Observation], base: float | None,
               confident: bool = False) -> list[Point]:
        return _readings(series, self.spec.op, confident)

    def text(self, unit: str) -> str:
        return f"{self.spec.op} {format_value(self.spec.value, unit)} sustained for {self.spec.minutes:g} min"

    def max_gap_minutes(self) -> float | None:
        return self.spec.minutes / 2

    def span_minutes(self) -> float | None:
        return self.spec.minutes

    # Count-based ratios (failures out of requests): a breach needs each reading of the run
    # over the bound with 95 % confidence (a healthy 0.5 % at 60 requests a minute must not
    # roll back); a window is clear only when its requests, pooled, rule the bound out
    # (0 failures in 5 x 50 requests do not), else it is not judged.

    def detect(self, series: list[Observation], base: float | None) -> list[Point] | None:
        """Plain readings: :meth:`RuleKind.detect`. Count-based ratios: the same, each series
        on its own (a phase reading counts the requests of its 15 minutes, not an instant:
        it must not break or join a run of the guard's minutes); the earliest breach."""
        if not any(_counts(o, self.spec.op) for o in series):
            return super().detect(series, base)
        hits = []
        for part in _parts(series):
            hit = super().detect(part, base)
            if hit:
                hits.append(hit)
        return min(hits, key=lambda h: h[-1][0].scheduled_at) if hits else None

    def unjudged(self, series: list[Observation], base: float | None, reach: float | None = None,
                 min_cover: float = 0.9) -> str | None:
        """As :meth:`RuleKind.unjudged`; for count-based ratios a reading covers the time
        since the one before only when the requests pooled over the window ending at it rule
        the bound out at 95 % (0 failures in 50 requests do not show a rate under 1 %)."""
        if not any(_counts(o, self.spec.op) for o in series):
            return super().unjudged(series, base, reach, min_cover)
        weak = {id(o) for o, window in _windows(series, self.spec.minutes, True)
                if self.condition.holds(_pooled_upper(window))}
        if not weak:
            return super().unjudged(series, base, reach, min_cover)
        kept = [o for o in series if id(o) not in weak]
        few = f"{len(weak):,} of {len(series):,} readings over too few requests to rule the bound out"
        if not kept:
            return few
        why = super().unjudged(kept, base, reach, min_cover)
        return None if why is None else f"{few}; of the other {len(kept):,}, {why}"


def _parts(readings: list[Observation]) -> list[list[Observation]]:
    """``readings`` as their series: the guard's, the phases' (each counts every request
    since its own previous reading); empty ones left out."""
    return [p for p in ([o for o in readings if o.phase == "guard"], [o for o in readings if o.phase != "guard"]) if p]


def disjoint_windows(part: list[Observation]) -> list[Observation]:
    """``part`` to pool: readings that count a fixed window of wall time (evidence
    ``window_s``: "executions in the last hour") only where their windows do not overlap a
    later kept one (the latest is kept), since overlapping windows would count the same
    events again; readings that count since their previous one, all."""
    kept: list[Observation] = []
    start = None  # the earliest kept window's start
    for o in sorted(part, key=lambda o: o.measured_at, reverse=True):
        window = (o.evidence or {}).get("window_s")
        if window is None:
            kept.append(o)
            continue
        if start is None or o.measured_at <= start:
            kept.append(o)
            start = o.measured_at - timedelta(seconds=float(window))
    return sorted(kept, key=lambda o: o.measured_at)


def _pooled_counts(readings: list[Observation], lower: bool = True) -> tuple[float, float] | None:
    """The counts (failed, requests) pooled over ``readings``' most telling series (the
    largest lower limit, or with ``lower`` False the smallest upper one; see
    :func:`_pooled_upper`), or None when none carries counts."""
    best: tuple[float, float] | None = None
    for part in map(disjoint_windows, _parts(readings)):
        counted = [c for c in (_counts(o, ">") for o in part) if c is not None]
        if counted:
            pooled = (sum(n for n, _ in counted), sum(d for _, d in counted))
            if best is None or (wilson_lower(*pooled) > wilson_lower(*best) if lower
                                else wilson_upper(*pooled) < wilson_upper(*best)):
                best = pooled
    return best


def _pooled_upper(readings: list[Observation]) -> float:
    """The 95 % upper limit of the rate pooled over ``readings``, within one series: the
    guard's readings and the phases' each count every request once (each starts where its
    own series last read), so pooling across both would count requests twice. The most
    telling series decides (the smallest limit); a reading without counts stands for
    itself at its value."""
    limits = []
    for part in map(disjoint_windows, _parts(readings)):
        counted = [c for c in (_counts(o, ">") for o in part) if c is not None]
        if counted:
            limits.append(wilson_upper(sum(n for n, _ in counted), sum(d for _, d in counted)))
        limits += [_value(o) for o in part if _counts(o, ">") is None]
    return min(limits)


class WindowCount(RuleKind[WindowCountRule]):
    """The sum of the readings (counts) in any ``minutes`` of soak time, or over the whole
    soak when ``minutes`` is None (runbook "> 5 errores críticos en cualquier hora", "0
    errores críticos durante 24 horas"). A window holds the readings scheduled
    ``0 <= age < minutes`` before its last one."""

    window_phrase = "in the window ending"

    def points(self, series: list[Observation], base: float | None,
               confident: bool = False) -> list[Point]:
        # Summed within one series, never across: the guard's readings and the phases' each
        # count every log line once (each starts where its own series last read,
        # observe.previous_reading), so a sum over both would count every line twice.
        points: list[Point] = []
        for part in ([o for o in series if o.phase == "guard"], [o for o in series if o.phase != "guard"]):
            if not part:
                continue
            if self.spec.minutes is None:
                points.append((part[-1], sum(_value(o) for o in part)))
            elif not confident:
                points.extend((o, sum(_value(p) for p in window))
                              for o, window in _windows(part, self.spec.minutes, False))
            else:
                points.extend(self._sure_counts(part))
        return sorted(points, key=lambda p: p[0].scheduled_at)

    def _sure_counts(self, part: list[Observation]) -> list[Point]:
        """Per reading of one series, the count a NO-GO may read in the window ending at it:
        what is sure to lie in it. A reading counts what its series logged since its previous
        reading (its span, observe.previous_reading). Within a window every reading's span
        starts at the reading before it, inside the window, except the first one's: when that
        span reaches back before the window, its lines may all lie before it and are left
        out, and when that reading is the window's last too (a 4-hour passive reading against
        "in any hour") only its densest ``minutes`` are sure: at least
        ``ceil(count / ceil(span / minutes))`` lines (six lines over four hours do not show
        "> 5 in any hour"). A series' first reading counts from the migration (it starts at
        the log position recorded before the DDL, observe.log_mark): its span is its soak
        time since hour 0; one that read the log's last lines instead (evidence
        ``first_read``, no mark) has no known span and is counted whole."""
        minutes = self.spec.minutes or 0.0
        sums = [0.0]
        for o in part:
            sums.append(sums[-1] + _value(o))
        at = {id(o): i for i, o in enumerate(part)}
        points: list[Point] = []
        for o, window in _windows(part, minutes, False):
            first, last = at[id(window[0])], at[id(window[-1])]
            total = sums[last + 1] - sums[first]
            p = window[0]
            if first > 0:
                span = soak_minutes(part[first - 1], p)
            else:
                span = 0.0 if (p.evidence or {}).get("first_read") else max(_soak(p, "soak_s") / 60.0, 0.0)
            if soak_minutes(p, o) + span > minutes + 1e-9:  # its lines may lie before the window
                total -= _value(p)
                if p is o:
                    total += math.ceil(_value(p) / math.ceil(span / minutes - 1e-9))
            points.append((o, total))
        return points

    def text(self, unit: str) -> str:
        over = f"in any {self.spec.minutes:g} min" if self.spec.minutes else "over the soak"
        return f"count {self.spec.op} {format_value(self.spec.value, unit)} {over}"


def _histogram(o: Observation) -> tuple[float, list[tuple[float, float]]] | None:
    """(quantile, [(bucket bound, cumulative requests)]) of a quantile reading that recorded
    its requests per bucket (openmetrics ``histogram_quantile``: evidence ``quantile`` and
    ``buckets``, the requests since its series' previous reading, bounds in seconds), bounds
    in the reading's unit (ms when ``unit`` is ``ms``); None without them."""
    ev = o.evidence or {}
    raw, q = ev.get("buckets"), ev.get("quantile")
    if not isinstance(raw, list) or not raw or not isinstance(q, (int, float)):
        return None
    scale = 1000.0 if o.unit == "ms" else 1.0
    try:
        return float(q), [(math.inf if str(le).lower() in ("+inf", "inf", "infinity") else float(le) * scale, float(n))
                          for le, n in raw]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Pooled:
    """A quantile of the requests of several readings: ``value`` (the readings' unit),
    ``requests``, ``readings``, the bucket ``(lower, upper)`` bounds it lies in, the
    ``quantile`` (0.95), and ``low``/``high``: its 95 % confidence limits from the
    requests' count (the order statistics :func:`quantile_ranks` names, read from the same
    buckets): 100 requests put a p95 between their p90 and their slowest; ``high`` is
    ``inf`` when they are too few to bound it (under 72 for a p95)."""

    value: float
    requests: float
    readings: int
    bucket: tuple[float, float]
    quantile: float = 0.95
    low: float = 0.0
    high: float = math.inf
    trimmed: bool = False  # a window's pool without its slowest reading (Baseline._pooled_windows)
    #: what a trimmed pool left out: the reading (``guard tick 1440``), its quantile and requests
    dropped_at: str = ""
    dropped_value: float = 0.0
    dropped_requests: float = 0.0


#: The largest share of a window's requests one reading may hold and still be left out of the
#: window's pool as a burst (``Baseline._pooled_windows``). A guard reading is one minute of a
#: real-time hour (1.7 % of its requests at a steady load; a burst minute at five times the load
#: about 8 %) and 15 soak-min of a 600-min window at x300 (2.5 %); an hourly phase reading is
#: 10 % of a stretched window. A quarter-hour reading of an hour (25 %) or a 4-hourly reading
#: of a stretched window (33 % to 50 %) is no burst: leaving it out would leave a quarter to
#: half of the window's requests unjudged (more than the six minutes of an hour that still move
#: its p95), so such a window is judged whole. At most 20 % left out, at least 80 % compared.
BURST_SHARE = 0.20


def pooled_quantile(readings: list[Observation]) -> Pooled | None:
    """The quantile of the requests counted by ``readings`` (each counts the requests since
    its series' previous reading, so a series' readings count every request once), their
    buckets summed, as PromQL's ``histogram_quantile`` of the summed increase; None when a
    reading has no histogram, the quantiles or bucket bounds differ, or nothing was counted."""
    hists = [_histogram(o) for o in readings]
    if not hists or any(h is None for h in hists):
        return None
    quantiles = {h[0] for h in hists if h is not None}
    bounds = {tuple(le for le, _ in h[1]) for h in hists if h is not None}
    if len(quantiles) != 1 or len(bounds) != 1:
        return None
    summed: dict[float, float] = {}
    for h in hists:
        for le, n in h[1] if h is not None else ():
            summed[le] = summed.get(le, 0.0) + n
    buckets = sorted(summed.items())
    if not buckets or buckets[-1][1] <= 0:
        return None
    q = quantiles.pop()
    n = buckets[-1][1]
    value = histogram_quantile(q, buckets)
    lower, upper = quantile_ranks(q, round(n))
    low = histogram_quantile(lower, buckets) if lower > 0 else 0.0
    high = histogram_quantile(upper, buckets) if math.isfinite(upper) else math.inf
    return Pooled(value, n, len(readings), bucket_of(value, [le for le, _ in buckets]), q, low, high)


#: Above this many requests :func:`quantile_ranks` uses the normal approximation of the
#: binomial (its ranks then differ from the exact ones by under a request in a thousand).
EXACT_RANKS_MAX = 10_000


@lru_cache(maxsize=4096)
def quantile_ranks(q: float, n: int) -> tuple[float, float]:
    """The ranks (fractions 0..1 of ``n``) of the order statistics that bound the ``q``
    quantile of the population ``n`` requests were drawn from, 95 % two-sided (2.5 % each
    side), distribution-free: the count of requests at or under the quantile is
    Binomial(n, q) (Conover, Practical Nonparametric Statistics, 3.2). The lower rank is 0
    when nothing bounds it from below; the upper one ``inf`` when ``n`` requests cannot bound
    it from above: a p95 needs at least 72 (0.95^72 < 2.5 %; :func:`requests_to_bound`).
    The normal approximation's ``q +- 1.96 sqrt(q (1 - q) / n)``, clamped at 1, claimed the
    slowest of 19 requests bounds a p95 (0.95^19 = 38 %: it does not)."""
    if n <= 0 or not 0 < q < 1:
        return 0.0, math.inf
    if n > EXACT_RANKS_MAX:
        margin = 1.96 * math.sqrt(q * (1 - q) / n)
        return max(q - margin, 0.0), q + margin if q + margin <= 1 else math.inf
    log_q, log_p, head = math.log(q), math.log1p(-q), math.lgamma(n + 1)
    # tail(k) = P(K >= k), K ~ Binomial(n, q), summed down from k = n: the u-th smallest
    # request is at or above the quantile unless u or more fall under it (upper: the smallest
    # u with tail(u) <= 2.5 %); the l-th at or under it unless fewer than l do (lower: the
    # largest l with tail(l) >= 97.5 %). About n (1 - q) terms, not n.
    upper, lower, tail = None, 0, 0.0
    for k in range(n, 0, -1):
        tail += math.exp(head - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_q + (n - k) * log_p)
        if tail <= 0.025:
            upper = k
        if tail >= 0.975:
            lower = k
            break
    return lower / n, upper / n if upper is not None else math.inf


def requests_to_bound(q: float) -> int:
    """The fewest requests whose slowest bounds the ``q`` quantile from above at 97.5 %
    (:func:`quantile_ranks`): 72 for a p95, 368 for a p99."""
    return math.ceil(math.log(0.025) / math.log(q) - 1e-9)


def bucket_of(value: float, bounds: list[float]) -> tuple[float, float]:
    """The histogram bucket ``(lower, upper]`` holding ``value`` among the upper ``bounds``."""
    lower = 0.0
    for le in sorted(bounds):
        if value <= le:
            return lower, le
        lower = le
    return lower, math.inf


class Base(float):
    """A baseline (a float: the baseline's value) that says how it was measured: ``pooled``
    when it is the quantile of the baseline readings' requests (:func:`pooled_quantile`),
    else the median of ``readings`` values."""

    pooled: Pooled | None
    readings: int
    #: (wall time, soak seconds) of a baseline reading: with the soak's readings, the run's pace
    #: (:func:`clock_pace`) before the soak has two readings of its own
    anchor: tuple[datetime, float] | None

    def __new__(cls, value: float, readings: int, pooled: Pooled | None = None,
                anchor: tuple[datetime, float] | None = None) -> "Base":
        base = super().__new__(cls, value)
        base.pooled, base.readings, base.anchor = pooled, readings, anchor
        return base


def baseline_value(readings: list[Observation]) -> Base | None:
    """The baseline of a relative rule from the baseline readings: the quantile of their
    requests when they recorded their histograms (:func:`pooled_quantile`), else the median
    of their values; None without a reading."""
    values = [_value(o) for o in readings]
    if not values:
        return None
    pooled = pooled_quantile(readings)
    first = min(readings, key=lambda o: o.scheduled_at)
    anchor = (first.scheduled_at, first.soak_s) if first.soak_s is not None else None
    if pooled is not None:
        return Base(pooled.value, len(readings), pooled, anchor)
    return Base(statistics.median(values), len(readings), anchor=anchor)


class Baseline(RuleKind[BaselineRule]):
    """Degradation ``(m - b) / b`` of the last ``window_minutes`` from the baseline ``b``
    (runbook "degradación > 10%" / "> 30%"). For quantile readings that recorded their
    histograms (the p95s): ``m`` is the quantile of the requests of each series' readings
    of the ``window_minutes`` ending at each reading (ages ``0 <= age < window_minutes``:
    each reading counts the requests since its series' previous one), their buckets pooled,
    and ``b`` the baseline readings' requests pooled the same way; the change is the one
    their 95 % limits show (:class:`Pooled`: a p95 of 100 requests is their p90 to their slowest),
    and 0 unless the window's p95 is shown out of the baseline p95's histogram bucket (the
    histogram cannot tell values within one bucket apart: inside it the quantile is a
    linear interpolation).
    Otherwise ``m`` is the median of the readings of the window (``0 <= age <=
    window_minutes``) and ``b`` the baseline readings' median. Either way a change under
    ``min_delta`` (check unit) counts as 0. No points without a baseline, or with a
    baseline of 0."""

    needs_baseline = True

    @property
    def window_phrase(self) -> str:  # type: ignore[override]
        return f"in the {self.spec.window_minutes:g} min ending at"

    def window_words(self, series: list[Observation], base: float | None) -> str:
        """``in the 600 min ending at`` when :meth:`window` stretched the window, else
        :attr:`window_phrase`."""
        return f"in the {_num(self.window(series, base))} min ending at"

    def unbounded(self, series: list[Observation], base: float | None) -> str | None:
        """Why no change this rule looks for can be shown, whatever the soak's readings: the
        baseline's pooled quantile has no upper 95 % limit (a rise; :func:`quantile_ranks`:
        under 72 requests for a p95) or a lower limit of 0 (a fall); None when it has one,
        or the rule compares medians."""
        if not (isinstance(base, Base) and base.pooled is not None and series
                and all(_histogram(o) is not None for o in series)):
            return None
        b, rise = base.pooled, self.spec.op in (">", ">=") or self.spec.value > 0
        if rise and math.isinf(b.high):
            return (f"the baseline's {b.requests:,.0f} requests cannot bound its p{b.quantile * 100:g} from above at "
                    f"95 % ({requests_to_bound(b.quantile)} needed): no rise can be shown against it")
        if not rise and b.low <= 0:
            return (f"the baseline's {b.requests:,.0f} requests cannot bound its p{b.quantile * 100:g} from below at "
                    f"95 %: no fall can be shown against it")
        return None

    def unjudged(self, series: list[Observation], base: float | None, reach: float | None = None,
                 min_cover: float = 0.9) -> str | None:
        """As :meth:`RuleKind.unjudged`, and :meth:`unbounded`: a NO-GO against a baseline
        that bounds nothing could never be breached, so it is not "clear"."""
        return super().unjudged(series, base, reach, min_cover) or self.unbounded(series, base)

    def points(self, series: list[Observation], base: float | None,
               confident: bool = False) -> list[Point]:
        if base is None or base == 0 or not series:
            return []
        floor = self.spec.floor(series[0].check_id)
        pooled = isinstance(base, Base) and base.pooled is not None
        if pooled and all(_histogram(o) is not None for o in series):
            assert isinstance(base, Base)
            points = [(o, self._change(p, base, floor)) for o, p in self._pooled_windows(series, base)]
            return sorted(points, key=lambda p: p[0].scheduled_at)
        points = []
        start = self.judged_from(series, base)
        for o, window in _windows(series, self.window(series, base), True):
            if _soak(o, "soak_s") < start:
                continue
            m = statistics.median(_value(p) for p in window)
            points.append((o, 0.0 if abs(m - base) < floor else (m - base) / base))
        return points

    def _pooled_windows(self, series: list[Observation],
                        base: float | None = None) -> Iterator[tuple[Observation, Pooled]]:
        """Each reading with the quantile of its series' requests in the window ending at it,
        the window's slowest reading (highest quantile) left out when it is a burst: above
        the window's pooled quantile and holding at most :data:`BURST_SHARE` (20 %) of its
        requests. One reading's burst (a minute in real time; 3 wall seconds, 15 soak-minutes,
        of a busy demo machine at ``time_scale`` 300) is not a degraded hour, and must not roll
        a soak back on its own; a slowdown of a few minutes shows in the other readings. A
        reading holding more (a quarter-hour reading of an hour, a 4-hourly one of a stretched
        window) is no burst: the window is judged whole. The pool says what it left out
        (``Pooled.dropped_*``, :func:`dropped_note`)."""
        minutes, start = self.window(series, base), self.judged_from(series, base)
        for part in _parts(series):
            for o, window in _windows(part, minutes, False):
                if _soak(o, "soak_s") < start:
                    continue
                p = pooled_quantile(window)
                if len(window) > 1 and p is not None:
                    slowest = max(range(len(window)), key=lambda i: _value(window[i]))
                    rest = pooled_quantile(window[:slowest] + window[slowest + 1:])
                    # left out only when it is a burst (slower than the window's pool) holding a burst's
                    # share of the requests: the rest still holds most of them
                    if (rest is not None and _value(window[slowest]) > p.value
                            and p.requests - rest.requests <= BURST_SHARE * p.requests + 1e-9):
                        s = window[slowest]
                        yield o, replace(rest, trimmed=True, dropped_at=f"{s.phase} tick {s.tick}",
                                         dropped_value=_value(s), dropped_requests=p.requests - rest.requests)
                        continue
                if p is not None:
                    yield o, p

    def latest_window(self, series: list[Observation], base: float | None) -> Pooled | None:
        """The pooled window ending at the latest reading of the series with the most readings
        there (the guard's, the phases'), as :meth:`points` compares it; None when
        the rule reads the readings' median (no histograms, or a baseline without)."""
        if not (isinstance(base, Base) and base.pooled is not None) or not series:
            return None
        if not all(_histogram(o) is not None for o in series):
            return None
        last: dict[bool, Pooled] = {}
        for o, p in self._pooled_windows(series, base):
            last[o.phase == "guard"] = p
        # the series read most often: its window is closest to the last window_minutes' requests
        # (a passive reading counts 4 hours of them)
        return max(last.values(), key=lambda p: (p.readings, p.requests), default=None)

    def window(self, series: list[Observation], base: float | None = None) -> float:
        """The soak minutes each window of ``series`` covers: ``window_minutes``, or
        ``min_window_wall_s`` of wall time when that is longer, i.e. on a compressed clock
        (its pace from the series' own readings, soak seconds per wall second: at
        ``time_scale`` 300, 120 wall s are 600 soak-min). At x300 one soak hour is 12 wall
        seconds, so a few seconds of a busy machine (slow requests, real latency, correlated
        across requests) would be a whole degraded hour; in real time they are diluted in
        3,600 s. The stretch keeps a compressed clock's windows as hard to tip by such a
        hiccup as real ones, and does nothing in real time (60 min > 120 s)."""
        pace = clock_pace(series, base)
        return max(self.spec.window_minutes, self.spec.min_window_wall_s * pace / 60.0)

    def judged_from(self, series: list[Observation], base: float | None = None) -> float:
        """The soak second from which a reading's window is compared: on a clock whose
        windows :meth:`window` stretches, ``min_window_wall_s`` of wall time after hour 0
        (600 soak-min at x300), so no window holds less wall time than that: the first
        readings after hour 0 (12 wall seconds at x300 are the first soak hour) are compared
        pooled with the later ones in the first window that does. 0 when nothing is
        stretched (real time: the first minutes are judged as they come, as before)."""
        if self.window(series, base) <= self.spec.window_minutes:
            return 0.0
        return self.spec.min_window_wall_s * clock_pace(series, base)

    def stretch_note(self, series: list[Observation], base: float | None = None) -> str:
        """`` over the 600 soak-min (10 h) ending there: the 60 min stretched to 120 wall s on
        this x300 clock`` when :meth:`window` is longer than ``window_minutes``, else empty."""
        minutes = self.window(series, base)
        if minutes <= self.spec.window_minutes:
            return ""
        return (f"; window {_num(minutes)} soak-min ({_num(minutes / 60)} h): the {self.spec.window_minutes:g} min "
                f"stretched to {self.spec.min_window_wall_s:g} wall s on this x{_num(clock_pace(series, base))} clock")

    @staticmethod
    def _change(window: Pooled, base: Base, floor: float) -> float:
        """The change the window's requests show from the baseline's at 95 %: its lower limit
        over the baseline's upper one when above it (its upper limit under the baseline's
        lower one when below); 0 when the window's p95 is not shown out of the baseline p95's
        bucket (inside a bucket the quantile is an interpolation, not a measurement), or
        moved less than ``floor``."""
        assert base.pooled is not None
        b = base.pooled
        lo, hi = b.bucket
        if window.low > max(b.high, hi):
            change = (window.low - b.high) / b.high
        elif window.high < min(b.low, lo) and b.low > 0:
            change = (window.high - b.low) / b.low
        else:
            return 0.0
        return 0.0 if abs(window.value - b.value) < floor else change

    def text(self, unit: str) -> str:
        floors = self.spec.min_delta
        if isinstance(floors, dict):
            noise = ", ".join(f"{format_value(v, unit) if unit else f'{v:g}'} for {cid}" for cid, v in floors.items() if v)
        else:
            noise = format_value(floors, unit) if unit else f"{floors:g}" if floors else ""
        return (f"degradation vs baseline {self.spec.op} {self.spec.value:.0%} over {self.spec.window_minutes:g} min "
                "(a quantile with histograms: of the window's requests, buckets pooled, against the baseline's, the "
                "change their 95 % limits show, none while not shown out of the baseline's bucket; other readings: "
                "the window's median against the baseline's)"
                + (f"; changes under {noise} are noise" if noise else ""))

    def shown(self, value: float, unit: str) -> str:
        return format_apart(value, self.spec.value, format_change)

    def point_note(self, series: list[Observation], o: Observation, base: float | None, unit: str) -> str:
        """What the point at ``o`` compared: the window's pooled quantile and its requests, or
        the median of its readings."""
        if isinstance(base, Base) and base.pooled is not None:
            p = next((p for r, p in self._pooled_windows(series, base) if r is o), None)
            if p is not None:
                return (f" ({_quantile_name(series)} {format_value(p.value, unit)} of {p.requests:,.0f} requests, "
                        f"{_limits(p, unit)}, their histogram buckets pooled{_but_slowest(p, unit)}"
                        f"{self.stretch_note(series, base)})")
        window = next((w for r, w in _windows(series, self.window(series, base), True) if r is o), [])
        if not window:
            return ""
        return (f" (median of {len(window):,} readings{self.stretch_note(series, base)}: "
                f"{format_value(statistics.median(_value(p) for p in window), unit)})")

    def no_points(self, series: list[Observation], base: float | None) -> str:
        if not series:
            return "no reading with a value"
        return "no baseline measured" if base is None else "the baseline is 0: a relative change has no meaning"

    def base_text(self, base: float | None, unit: str, check_id: str = "") -> str:
        """The baseline as compared: ``baseline p95 175 ms of 6,000 requests (4 baseline
        readings, their histogram buckets pooled), in the 100 ms to 200 ms bucket`` or
        ``baseline median 200 ms of 4 readings``."""
        if isinstance(base, Base) and base.pooled is not None:
            p, (lo, hi) = base.pooled, base.pooled.bucket
            return (f"baseline p{p.quantile * 100:g} {format_value(base, unit)} of {p.requests:,.0f} requests "
                    f"({_limits(p, unit)}; {plural_of(base.readings, 'baseline reading')}, their histogram buckets "
                    f"pooled), in the {format_value(lo, unit)} to {format_value(hi, unit)} bucket")
        readings = f" of {plural_of(base.readings, 'reading')}" if isinstance(base, Base) else ""
        return f"baseline median {format_value(base, unit)}{readings}"

    def breach_note(self, base: float | None, unit: str) -> str:
        return f"; {self.base_text(base, unit)}"

    def range_note(self, base: float | None, unit: str, check_id: str = "") -> str:
        floor = self.spec.floor(check_id)
        return f"; {self.base_text(base, unit)}" + (
            f", changes under {format_value(floor, unit)} count as 0" if floor else "")


def clock_pace(series: list[Observation], base: float | None = None) -> float:
    """Soak seconds per wall second of the run that took ``series`` (its ``time_scale``),
    from the earliest and latest (wall time, soak time) the readings (scheduled and taken)
    and the baseline's ``anchor`` give; 1 when they cannot tell (no wall time between them,
    or readings without soak time)."""
    marks = [(o.scheduled_at, o.soak_s) for o in series] + [(o.measured_at, o.measured_soak_s) for o in series]
    if isinstance(base, Base) and base.anchor is not None:
        marks.append(base.anchor)
    timed = [(t, s) for t, s in marks if s is not None]
    if len(timed) < 2:
        return 1.0
    (t0, s0), (t1, s1) = min(timed, key=lambda m: m[0]), max(timed, key=lambda m: m[0])
    wall = (t1 - t0).total_seconds()
    if wall <= 0:
        return 1.0
    return round(max((s1 - s0) / wall, 1.0), 3)


def _but_slowest(p: Pooled, unit: str = "") -> str:
    """How a window's pool was made: `` over N readings but the window's slowest (...)``
    (:func:`dropped_note`)."""
    return f" over {plural_of(p.readings, 'reading')} but the window's slowest{dropped_note(p, unit)}" if p.trimmed else ""


def dropped_note(p: Pooled, unit: str = "") -> str:
    """What a trimmed pool left out: `` (guard tick 1440: p95 97.5 ms, 120 of 4,800
    requests (2.5%), left out as one reading's burst: at most 20 % of the window's
    requests)``; "" when nothing was."""
    if not p.trimmed:
        return ""
    total = p.requests + p.dropped_requests
    return (f" ({p.dropped_at}: p{p.quantile * 100:g} {format_value(p.dropped_value, unit)}, "
            f"{p.dropped_requests:,.0f} of {total:,.0f} requests ({p.dropped_requests / total:.1%}), left out as one "
            f"reading's burst: at most {BURST_SHARE * 100:g} % of the window's requests)")


def _limits(p: Pooled, unit: str) -> str:
    """``95 % limits 4.5 ms to 4.95 ms`` of a pooled quantile, ``95 % limits 4.31 ms to none
    (19 requests are too few to bound a p95 from above: 72 needed)`` when unbounded."""
    return f"95 % limits {limits_range(p, unit)}"


def limits_range(p: Pooled, unit: str) -> str:
    """``4.5 ms to 4.95 ms``: a pooled quantile's 95 % limits (:func:`quantile_ranks`), the
    upper one named as missing, and why, when its requests cannot bound it."""
    if math.isfinite(p.high):
        return f"{format_value(p.low, unit)} to {format_value(p.high, unit)}"
    return (f"{format_value(p.low, unit)} to none ({p.requests:,.0f} requests are too few to bound a "
            f"p{p.quantile * 100:g} from above: {requests_to_bound(p.quantile)} needed)")


def _quantile_name(series: list[Observation]) -> str:
    h = _histogram(series[0]) if series else None
    return f"p{h[0] * 100:g}" if h is not None else "quantile"


def plural_of(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


class Growth(RuleKind[GrowthRule]):
    """Compound growth rate per ``per_minutes`` from the latest reading taken at least
    ``per_minutes`` before each reading (runbook "crecimiento > 20% por hora"); with
    ``minutes``, met on consecutive points spanning that long ("sostenido"). Each point is
    already a rate over at least ``per_minutes`` and consecutive points' spans join, so no
    gap limit applies."""

    def points(self, series: list[Observation], base: float | None,
               confident: bool = False) -> list[Point]:
        # A rate: spans are between the times the readings were *taken*. A late reading
        # (its tick's wake-up came late) holds a later value; timing it by its schedule
        # would inflate the growth before it and deflate the growth after it (seen in CI
        # on the compressed clock: 60 %/h read as 19.9 %/h next to a reading 12 min late).
        per = self.spec.per_minutes
        points = []
        for i, o in enumerate(series):
            earlier = [p for p in series[:i] if taken_minutes(p, o) >= per]
            if earlier and earlier[-1].value:
                ref = earlier[-1]
                span = taken_minutes(ref, o)
                # compound rate per period: 2 h at +20 %/h is x1.44, not x1.40
                ratio = _value(o) / _value(ref)
                points.append((o, ratio ** (per / span) - 1 if ratio > 0 else -1.0))
        return points

    def text(self, unit: str) -> str:
        return (f"growth {self.spec.op} {self.spec.value:.0%} per {self.spec.per_minutes:g} min"
                + (f", sustained {self.spec.minutes:g} min" if self.spec.minutes else ""))

    def shown(self, value: float, unit: str) -> str:
        return format_apart(value, self.spec.value, format_change)

    def span_minutes(self) -> float | None:
        return self.spec.minutes or None

    def no_points(self, series: list[Observation], base: float | None) -> str:
        if not series:
            return "no reading with a value"
        n = len(series)
        return f"{n} reading{'' if n == 1 else 's'}, no two taken {self.spec.per_minutes:g} min apart: no growth measured"


def rule_kind(spec: Rule) -> RuleKind[Any]:
    """The kind object of a plan rule spec; ``ValueError`` for anything else."""
    match spec:
        case ThresholdRule():
            return Threshold(spec)
        case SustainedRule():
            return Sustained(spec)
        case WindowCountRule():
            return WindowCount(spec)
        case BaselineRule():
            return Baseline(spec)
        case GrowthRule():
            return Growth(spec)
    raise ValueError(f"unknown rule kind {getattr(spec, 'kind', spec)!r}")
