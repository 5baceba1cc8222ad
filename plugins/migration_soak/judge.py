"""The judge: plan + observations -> verdict. Pure; reads nothing but its arguments.

The plan states the seed's "Criterios de Éxito" as ``go`` and ``no_go`` criteria;
:func:`judge` returns ``NO_GO``, ``GO`` or ``INCONCLUSIVE``. Missing data never breaches
a NO-GO nor meets a GO, and a NO-GO the readings could not breach is "not judged", never
clear; count ratios are judged on their requests (95 % Wilson bounds, pooled where a
window or a GO needs them), and a check's own NO-GO level no criterion compares with
keeps GO away. Rule kinds are in ``rules.py``; the decision table: docs/verdict.md.

Design notes: docs/plans.md#the-verdict
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Literal

from migration_soak.clock import guard_every
from migration_soak.plan import Condition, Criterion, Plan, ThresholdRule
from migration_soak.store import Observation, Status
from migration_soak.plan import Alert, Rule
from migration_soak.rules import (GO_WINDOW_MINUTES, Base, Baseline, Point, RuleKind, Threshold, baseline_value,
                                  dropped_note, rule_kind)
# judge's API before rules.py existed: report, charts and tests import them from here
from migration_soak.rules import format_change as format_change, format_value as format_value
from migration_soak.rules import wilson_lower as wilson_lower, wilson_upper as wilson_upper

Decision = Literal["GO", "NO_GO", "INCONCLUSIVE"]
Outcome = Literal["met", "not_met", "breached", "clear", "not_judged", "not_enough_data"]
PHASES_NOT_SCHEDULED = ("baseline", "guard")  # extra readings: they never count for coverage


@dataclass(frozen=True)
class CheckResult:
    """How one check fared, for the report. ``expected``: readings the plan schedules
    (hour 0 and phase ticks, whole soak); ``measured``: those with a value; ``coverage``
    0..1 = measured / expected. ``counts`` per status and ``min``/``max``/``last`` (in the
    check's ``unit``, ``None`` if nothing measured) cover every reading after the migration
    (scheduled and guard); ``by_phase`` counts statuses per phase, baseline included.
    ``outcome``: ``met``, ``not_met``, ``breached``, ``not_enough_data``, ``not_measured``
    (no value at all) or ``partial`` (as expected so far, but the soak stopped)."""

    check_id: str
    title: str
    unit: str
    rule: str
    outcome: Literal["met", "not_met", "breached", "not_enough_data", "not_measured", "partial"]
    expected: int
    measured: int
    errors: int
    coverage: float
    counts: dict[str, int]
    min: float | None
    max: float | None
    last: float | None
    detail: str
    deciding: dict | None = None
    by_phase: dict[str, dict[str, int]] = field(default_factory=dict)
    unread: str = ""  # a met check's readings of a fixed window leave soak hours unread: WindowCoverage.text


@dataclass(frozen=True)
class CriterionResult:
    """One criterion judged: ``kind`` go / no_go / alert, the ``outcome``, a one-line
    ``detail`` with the figures, and the observations that decided it (``deciding``; for a
    ``not_judged`` NO-GO: the readings beyond its bound on their own). ``too_sparse``: a
    ``not_judged`` NO-GO whose every check had data points, none beyond the bound, just
    too few, too far apart or over too few requests to cover its window (what a compressed
    clock's guard gives: each reading holds a few seconds of wall time). ``unread``: for a
    ``met`` / ``clear`` outcome, ``<check>: <WindowCoverage.text>`` per check whose readings
    each count a fixed window that leaves soak hours unread (none when they read it all)."""

    id: str
    kind: str
    text: str
    rule: str
    outcome: Outcome
    detail: str
    checks: list[str]
    deciding: list[dict] = field(default_factory=list)
    too_sparse: bool = False
    unread: list[str] = field(default_factory=list)  # met / clear on windows leaving soak hours unread (read_in_part)
    compared: list[str] = field(default_factory=list)  # a met relative GO on pooled p95s: what it compared (performance)


@dataclass(frozen=True)
class Verdict:
    """The decision, one reason line per deciding criterion, and every result."""

    decision: Decision
    reasons: list[str]
    criteria: list[CriterionResult] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form (for XCom and the store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        """Inverse of :meth:`to_dict`."""
        return cls(data["decision"], list(data["reasons"]),
                   [CriterionResult(**c) for c in data.get("criteria", [])],
                   [CheckResult(**c) for c in data.get("checks", [])])


# --- rules over a series of observations -------------------------------------------------

def _series(obs: list[Observation], check_id: str) -> list[Observation]:
    """Measured observations of a check after the migration, in time order."""
    return sorted((o for o in obs if o.check_id == check_id and o.phase != "baseline" and o.value is not None
                   and math.isfinite(o.value) and o.status != "error"), key=lambda o: o.scheduled_at)


def baseline_of(obs: list[Observation], check_id: str) -> float | None:
    """The check's baseline (before the migration), if any: the quantile of the baseline
    readings' requests when they recorded their histograms, else their median
    (``rules.baseline_value``)."""
    return baseline_value(sorted((o for o in obs if o.check_id == check_id and o.phase == "baseline"
                                  and o.value is not None and math.isfinite(o.value)), key=lambda o: o.scheduled_at))


def thin_baseline(plan: Plan, obs: list[Observation], check_id: str, min_cov: float) -> str | None:
    """Why ``check_id``'s baseline is too thin a reference, or None: fewer than ``min_cov`` of
    the plan's baseline readings (``baseline.minutes / every_minutes``) have a value. A
    relative rule compares with their median: one reading of four, a spike or a lull,
    would make the soak's change what that one reading says. No baseline at all is
    :func:`baseline_of`'s None (the rule has no points)."""
    if plan.baseline is None or check_id not in plan.baseline.checks:
        return None
    due = len(plan.baseline.tick_offsets())
    measured = len([o for o in obs if o.check_id == check_id and o.phase == "baseline" and o.value is not None
                    and math.isfinite(o.value) and o.status != "error"])
    if measured == 0 or due == 0 or measured >= min_cov * due - 1e-9:
        return None
    return (f"{measured} of {due} baseline readings measured ({below(measured / due, min_cov)}): "
            "too thin a reference for a relative change")


def format_condition(cond: Condition, unit: str) -> str:
    """``< 0.001`` on a ratio -> ``< 0.1%``."""
    return f"{cond.op} {format_value(cond.value, unit)}"


def rule_text(rule: Rule, unit: str = "") -> str:
    """Human form of a rule in the checks' ``unit``, e.g. ``> 1% sustained for 5 min``."""
    return rule_kind(rule).text(unit)


def below(share: float, bar: float) -> str:
    """``"89.7% < 90%"``: a coverage ``share`` under the ``bar`` (both 0..1) as the reasons
    show it. Whole percents, unless rounding would show the share at the bar or above it
    (1,309 of 1,459 is 89.7 %, not "90% < 90%"): then the digits that keep it under,
    rounded down."""
    limit = f"{bar:.0%}" if round(bar * 100, 6) == round(bar * 100) else f"{bar * 100:g}%"
    for digits in (0, 1, 2, 3):
        shown = math.floor(share * 100 * 10 ** digits + 1e-9) / 10 ** digits if digits else round(share * 100)
        if shown < bar * 100 - 1e-9:
            return f"{shown:.{digits}f}% < {limit}"
    return f"{share * 100:.4f}% < {limit}"


def plural(n: int, word: str) -> str:
    """``1 reading``, ``2 readings``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def _unit_of(obs: list[Observation], check_id: str) -> str:
    return next((o.unit for o in obs if o.check_id == check_id), "")


def _describe(o: Observation, derived: float | None = None) -> dict:
    d = {"check_id": o.check_id, "phase": o.phase, "tick": o.tick, "value": o.value, "status": o.status,
         "measured_at": o.measured_at.isoformat()}
    if derived is not None and derived != o.value:
        d["derived"] = derived
    return d


def max_gap_minutes(rule: Rule) -> float | None:
    """The longest soak-time gap a windowed rule accepts between two consecutive readings
    of its window: half the window for ``sustained`` (a shorter good spell could hide in a
    longer gap), None (no limit) for every other kind."""
    return rule_kind(rule).max_gap_minutes()


def detect(rule: Rule, series: list[Observation], base: float | None) -> list[Point] | None:
    """The points that show the rule's condition is met (as a NO-GO/alert reads it), or None.

    ``sustained``: a run of consecutive breaching readings, at least two, spanning
    ``minutes`` of soak time, none more than :func:`max_gap_minutes` after the one before;
    a missing reading, or a count-based ratio confidently neither above nor within the
    bound, is a gap. ``growth`` with ``minutes``: a run of growth points spanning
    ``minutes``. Others: the first point that meets it. ``series``: :func:`_series` of one
    check; ``base``: its :func:`baseline_of`. See ``rules.py`` for each kind.
    """
    return rule_kind(rule).detect(series, base)


def holds_throughout(rule: Rule, series: list[Observation], base: float | None) -> tuple[bool, Point | None, int]:
    """(all points meet the rule, the first point that does not, number of points)."""
    return rule_kind(rule).holds_throughout(series, base)


# --- criteria -------------------------------------------------------------------------------

def expected_observations(plan: Plan, check_id: str, reach: float | None = None) -> int:
    """Scheduled observations of a check: hour 0 and each phase tick it is in, over the
    whole soak or (``reach``) those at or before soak minute ``reach``."""
    end = None if reach is None else timedelta(minutes=reach) + timedelta(microseconds=1)
    return sum(1 if p == "hour0" else len([t for t in plan.phase(p).tick_offsets() if end is None or t <= end])
               for p, c in plan.schedule() if c == check_id)


def implicit_criteria(plan: Plan) -> tuple[list[Criterion], list[Criterion]]:
    """The plan's GO and NO-GO criteria; when it states none, each check's ``expect`` and
    ``no_go`` become threshold criteria."""
    if plan.go or plan.no_go:
        return list(plan.go), list(plan.no_go)
    go = [Criterion(id=f"{c.id}_expected", text=f"{c.title} {c.expect}", checks=[c.id],
                    rule=ThresholdRule(kind="threshold", op=c.expect.op, value=c.expect.value)) for c in plan.checks]
    no_go = [Criterion(id=f"{c.id}_no_go", text=f"{c.title} {c.no_go}", checks=[c.id],
                       rule=ThresholdRule(kind="threshold", op=c.no_go.op, value=c.no_go.value))
             for c in plan.checks if c.no_go]
    return go, no_go


def judge_breach(crit: Criterion | Alert, kind: str, obs: list[Observation], plan: Plan | None = None,
                 time_scale: float = 1.0) -> CriterionResult:
    """A NO-GO criterion (or an alert): ``breached`` when any of its checks shows the rule;
    ``not_judged`` when one of them could not have shown it (``RuleKind.unjudged``: no data,
    no baseline, readings too far apart for the window) or, given the ``plan``, when less
    than ``verdict.min_coverage`` of the readings due so far were measured (:func:`_due`);
    else ``clear``. Without a plan (the stop decision) only ``breached`` is meaningful."""
    rule = rule_kind(crit.rule)
    reach = _reach(obs) if plan is not None else None
    min_cov = plan.verdict.min_coverage if plan is not None else 0.9
    unjudged: list[str] = []
    beyond: list[dict] = []
    sparse = True
    for cid in crit.checks:
        series = _series(obs, cid)
        base = baseline_of(obs, cid)
        hit = rule.detect(series, base)
        if hit:
            unit = series[0].unit if series else ""
            return CriterionResult(crit.id, kind, crit.text, rule.text(unit), "breached",
                                   _breach_detail(rule, cid, hit, base, unit, series), list(crit.checks),
                                   [_describe(o, v) for o, v in hit])
        if plan is None:
            continue  # the stop decision and the alerts: only a breach matters, and fast
        # a one-reading rule (threshold) counts only readings that rule the bound out: 0
        # failures in 20 runs does not show a rate under 10 % (windowed kinds treat such a
        # reading as a gap in their run instead)
        weak = [] if rule.span_minutes() is not None else [o for o in series if not rule.clears(o)]
        short = (_short_of_due(plan, cid, series, reach, time_scale, min_cov, weak=len(weak))
                 or end_unread(plan, cid, series, reach))
        why = rule.unjudged(series, base, reach, min_cov)
        if why is None and rule.needs_baseline:
            why = thin_baseline(plan, obs, cid, min_cov)
        if short is not None or why is not None:
            over = rule.beyond(series, base)
            unit = _unit_of(obs, cid)
            reason = why if not series else short or why  # nothing read at all: say that, not a coverage of 0 %
            unjudged.append(f"{cid}: {reason}{not_measured(obs, cid)}" + (
                f"; {plural(len(over), 'reading')} beyond the bound on {'its' if len(over) == 1 else 'their'} own "
                f"({', '.join(rule.shown(v, unit) for _, v in over[:3])}{', ...' if len(over) > 3 else ''})"
                if over else ""))
            beyond += [_describe(o, v) for o, v in over]
            sparse = sparse and short is None and bool(rule.points(series, base)) and not over
            if isinstance(rule, Baseline):  # a baseline too thin, or bounding no rise: never the clock's sparseness
                sparse = False
    unit = _unit_of(obs, crit.checks[0])
    if unjudged:
        return CriterionResult(crit.id, kind, crit.text, rule.text(unit), "not_judged",
                               "not judged: " + "; ".join(unjudged), list(crit.checks), beyond, too_sparse=sparse)
    covered = {cid: window_coverage(plan, cid, _series(obs, cid), time_scale, reach) if plan is not None else None
               for cid in crit.checks}
    partly = {cid: cov.text() for cid, cov in covered.items() if cov is not None and not cov.full}
    counts = ", ".join(f"{cid}: clear on {partly[cid]}" if cid in partly
                       else f"{cid}: {plural(len(_series(obs, cid)), 'reading')} with a value" for cid in crit.checks)
    return CriterionResult(crit.id, kind, crit.text, rule.text(unit), "clear", f"no breach ({counts})",
                           list(crit.checks), unread=[f"{cid}: {t}" for cid, t in partly.items()])


def _reach(obs: Sequence[Observation]) -> float:
    """Soak minutes from hour 0 to the latest reading after the migration (0 without one)."""
    return max((o.soak_s / 60.0 for o in obs if o.phase != "baseline" and o.soak_s is not None), default=0.0)


latest_minute = _reach  # the report's name for it (report_checks.summarize_check)


def _due(plan: Plan, cid: str, reach: float, time_scale: float) -> int:
    """Readings of ``cid`` due in the first ``reach`` soak-minutes: hour 0, each phase tick
    and each guard tick (at ``time_scale``'s cadence) at or before it."""
    due = expected_observations(plan, cid, reach)
    if plan.guard is not None and cid in plan.guard.checks:
        due += int((timedelta(minutes=reach) + timedelta(microseconds=1)) / guard_every(plan, time_scale))
    return due


def _short_of_due(plan: Plan, cid: str, series: list[Observation], reach: float | None, time_scale: float,
                  min_cov: float, weak: int = 0) -> str | None:
    """Why ``series`` is too few to judge a NO-GO on (``min_cov`` of the readings due by
    ``reach``, :func:`_due`), or None. ``weak``: readings of ``series`` counted as missing
    (a count-based ratio over too few requests to rule the bound out). A check the plan
    does not know is not counted."""
    try:
        due = _due(plan, cid, reach or 0.0, time_scale)
    except KeyError:
        return None
    measured = len(series) - weak - _unscheduled(plan, cid, series)
    if due == 0 or measured >= min_cov * due:
        return None
    few = f"; {plural(weak, 'reading')} over too few requests to rule the bound out" if weak else ""
    return (f"{measured:,} of {due:,} reading{'' if due == 1 else 's'} due by soak minute {reach or 0:.0f} measured (coverage "
            f"{below(measured / due, min_cov)}){few}")


def short_of_readings(plan: Plan, cid: str, obs: list[Observation], time_scale: float, min_cov: float,
                      reach: float | None = None) -> str | None:
    """Why ``cid``'s readings in ``obs`` are too few for any claim about the soak, or None:
    :func:`_short_of_due` of its measured readings against the readings due by the run's
    latest reading (``reach``, soak minutes: :func:`_reach` of ``obs`` when None; hour 0,
    phase ticks and the guard's ticks at ``time_scale``'s cadence).
    The NO-GO side's coverage test, and the GO side's and the check row's too: readings too
    few to judge "no user without authorizerId was seen" are too few to say "none all
    soak" (the metrics-outage demo's GO criterion was met on 19 of 19 scheduled readings
    while its NO-GO, on the same check with the guard's missed minutes counted, was not
    judged at 87 %)."""
    return _short_of_due(plan, cid, _series(obs, cid), _reach(obs) if reach is None else reach, time_scale, min_cov)


def scheduled_ticks(plan: Plan, cid: str) -> dict[tuple[str, int], float]:
    """``{(phase, tick): soak minute}`` of ``cid``'s scheduled readings: hour 0 (tick 0) and
    each tick of its phases. ``KeyError`` for a check the plan does not know."""
    plan.check(cid)
    ticks: dict[tuple[str, int], float] = {}
    for p, c in plan.schedule():
        if c != cid:
            continue
        if p == "hour0":
            ticks[("hour0", 0)] = 0.0
            continue
        for tick, at in enumerate(plan.phase(p).tick_offsets(), start=1):
            ticks[(p, tick)] = at.total_seconds() / 60
    return ticks


def soak_end_minute(plan: Plan) -> float:
    """The soak's last minute: the end of its last phase (1 440 in the default plan)."""
    return max((p.end_hour for p in plan.phases), default=0.0) * 60


def _unscheduled(plan: Plan, cid: str, series: list[Observation]) -> int:
    """Phase readings of ``series`` the schedule does not owe: a tick the plan does not have
    (tick 5 of a 4-tick phase, at hour 25, stored after the verdict). They are read (a
    breach in one is a breach) but never count as coverage."""
    try:
        ticks = scheduled_ticks(plan, cid)
    except KeyError:
        return 0
    return len([o for o in series if o.phase not in PHASES_NOT_SCHEDULED and (o.phase, o.tick) not in ticks])


def _last_due(plan: Plan, cid: str, reach: float | None) -> tuple[str, int, float] | None:
    """``(phase, tick, soak minute)`` of ``cid``'s latest scheduled reading (hour 0 or a
    phase tick) at or before soak minute ``reach`` (``None``: the whole soak), or None."""
    end = None if reach is None else timedelta(minutes=reach) + timedelta(microseconds=1)
    last: tuple[str, int, float] | None = None
    for p, c in plan.schedule():
        if c != cid:
            continue
        ticks = [(0, timedelta(0))] if p == "hour0" else list(enumerate(plan.phase(p).tick_offsets(), start=1))
        for tick, at in ticks:
            if (end is None or at <= end) and (last is None or at.total_seconds() / 60 > last[2]):
                last = (p, tick, at.total_seconds() / 60)
    return last


def read_partly(series: list[Observation], op: str) -> str | None:
    """Why readings of ``series`` cannot show an upper bound (``op`` ``<``, ``<=``, ``==``),
    or None: a logs reading that left bytes unread (evidence ``skipped_bytes``: more than
    ``sources.logs.MAX_READ_BYTES`` written since its previous one) counted only what it
    read, a lower bound: it can show "> 5" but not "0 errores críticos"."""
    if op not in ("<", "<=", "=="):
        return None
    partial = [o for o in series if int((o.evidence or {}).get("skipped_bytes") or 0) > 0]
    if not partial:
        return None
    skipped = sum(int(o.evidence["skipped_bytes"]) for o in partial)
    return (f"{plural(len(partial), 'reading')} left {skipped} bytes of log unread (first: {partial[0].phase} tick "
            f"{partial[0].tick}): their counts are lower bounds")


def end_unread(plan: Plan, cid: str, series: list[Observation], reach: float | None) -> str | None:
    """Why the end of what ``series`` should cover is unread, or None: no reading with a
    value at or after ``cid``'s latest scheduled one due by ``reach`` (:func:`_last_due`;
    that tick itself, or any reading at or after its soak time when the readings carry it).
    Coverage counts readings; this asks for time: a missed last reading of a 4-hour phase
    leaves the soak's last 4 hours unread (and the soak-end exact compare of ``data_loss``
    untaken) with 10 of 11 readings measured."""
    try:
        last = _last_due(plan, cid, reach)
    except KeyError:
        return None
    if last is None:
        return None
    phase, tick, minute = last
    end = soak_end_minute(plan)  # a reading after the soak's end (after the verdict) is no reading of it
    if any((o.phase, o.tick) == (phase, tick)
           or (o.soak_s is not None and minute - 1e-6 <= o.soak_s / 60 <= end + 1e-6) for o in series):
        return None
    return (f"no reading with a value at or after its last one due ({phase} tick {tick}, soak minute {minute:.0f}): "
            "the end is unread")


@dataclass(frozen=True)
class WindowCoverage:
    """How much of the soak the readings of a check that each count a fixed window of wall
    time (evidence ``window_s``: the ``sql`` ratio's "executions in the last hour") read:
    ``readings`` of a ``window_min`` soak-minute window each (``window_s`` times the clock's
    ``time_scale``, ending when the reading was taken) cover ``covered_min`` of the first
    ``total_min`` soak-minutes; ``unread``: the spans they never read, ``(from, to, why)``
    in soak minutes, ``why`` the schedule's reason ("the passive phase reads the last hour
    every 4 hours") or the scheduled readings that had no value. ``so_far``: the soak has
    not reached its end."""

    readings: int
    window_min: float
    covered_min: float
    total_min: float
    unread: tuple[tuple[float, float, str], ...] = ()
    so_far: bool = False

    @property
    def full(self) -> bool:
        """The windows read the whole soak (so far): nothing to add to a ``met`` / ``clear``."""
        return not self.unread

    def text(self) -> str:
        """``18 readings whose 60-min windows cover 12:00 of 24:00 soak hours (hours 8-11,
        12-15, 16-19 and 20-23 not read: the passive phase reads the last hour every 4 hours)``."""
        by_why: dict[str, list[str]] = {}
        for a, b, why in self.unread:
            by_why.setdefault(why, []).append(f"{_hour(a)}-{_hour(b)}")
        spans = "; ".join(f"hours {_and(s)} not read: {why}" for why, s in by_why.items())
        return (f"{plural(self.readings, 'reading')} whose {self.window_min:g}-min windows cover "
                f"{_clock(self.covered_min)} of {_clock(self.total_min)} soak hours{' so far' if self.so_far else ''}"
                f" ({spans})")


def _clock(minutes: float) -> str:
    """``12:00`` (soak hours and minutes)."""
    m = round(minutes)
    return f"{m // 60}:{m % 60:02d}"


def _hour(minutes: float) -> str:
    """Soak hour ``12`` or ``12:30``."""
    m = round(minutes)
    return f"{m // 60}" if m % 60 == 0 else f"{m // 60}:{m % 60:02d}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _dur(minutes: float) -> str:
    """``hour``, ``4 hours``, ``90 minutes`` (after "the last" / "every")."""
    if minutes == 60:
        return "hour"
    return f"{minutes / 60:g} hours" if minutes % 60 == 0 else f"{minutes:g} minutes"


#: Unread spans shorter than this many soak-minutes are a reading's seconds of lateness, not unread hours.
WINDOW_SLACK_MINUTES = 1.0


def window_coverage(plan: Plan, cid: str, series: list[Observation], time_scale: float = 1.0,
                    reach: float | None = None) -> WindowCoverage | None:
    """How much of the soak ``cid``'s readings of a fixed window (evidence ``window_s``) read
    (:class:`WindowCoverage`), or None when none of ``series`` counts a fixed window
    (readings that count since their previous one read every minute between them).

    The verdict's rules stay the runbook's schedule's: this judges nothing, it says how
    much a ``met`` / ``clear`` stands on. Each reading reads the ``window_s`` of wall time
    before it was taken (``time_scale`` times that of soak time: at ×300 one wall hour is
    300 soak hours and every reading covers the soak); the windows, clipped to the soak's
    first ``reach`` soak-minutes (None: the whole soak, :func:`soak_end_minute`), leave
    spans unread: the passive phase reading "the last hour" every 4 hours reads 4 of its 16
    hours. ``series``: :func:`_series` of one check (measured readings after the migration)."""
    spans = []
    for o in series:
        w = (o.evidence or {}).get("window_s")
        at = o.measured_soak_s if o.measured_soak_s is not None else o.soak_s
        if w is None or at is None:
            continue
        end = at / 60
        spans.append((end - float(w) * time_scale / 60, end))
    if not spans:
        return None
    end_of_soak = soak_end_minute(plan)
    total = min(reach, end_of_soak) if reach is not None else end_of_soak
    if total <= 0:
        return None
    window = round(max(b - a for a, b in spans), 1)
    covered, gaps, edge = 0.0, [], 0.0
    for a, b in sorted(spans):
        a, b = max(a, 0.0), min(b, total)
        if b <= edge:
            continue
        if a - edge >= WINDOW_SLACK_MINUTES:
            gaps.append((edge, a))
        covered += b - max(a, edge)
        edge = b
    if total - edge >= WINDOW_SLACK_MINUTES:
        gaps.append((edge, total))
    if not gaps:
        return WindowCoverage(len(spans), window, total, total, (), total < end_of_soak)
    read = {(o.phase, o.tick) for o in series}
    return WindowCoverage(len(spans), window, covered, total,
                          tuple((a, b, _why_unread(plan, cid, a, b, window, read, total)) for a, b in gaps),
                          total < end_of_soak)


def _why_unread(plan: Plan, cid: str, a: float, b: float, window: float, read: set[tuple[str, int]],
                now: float | None = None) -> str:
    """Why soak minutes ``a``-``b`` were not read by ``cid``'s readings of a ``window``
    soak-minute window: scheduled readings (not among ``read``) whose window would have
    read part of it had no value, the next such reading is not due yet (after ``now``, the
    soak minute judged so far), or the phase the span falls in reads less often than its
    window."""
    try:
        ticks = scheduled_ticks(plan, cid)
    except KeyError:
        ticks = {}
    slack = WINDOW_SLACK_MINUTES
    would = sorted((m, p, k) for (p, k), m in ticks.items()
                   if (p, k) not in read and a + slack <= m and m - window <= b - slack)
    missed = [t for t in would if now is None or t[0] <= now + slack]
    if missed:
        return "no value at " + _and([f"{p} tick {k}" for _, p, k in missed])
    if would:  # mid-soak: the reading that will read it is not due yet
        m, p, k = would[0]
        return f"the reading that reads them is not due yet ({p} tick {k} at soak {_clock(m)})"
    mid = (a + b) / 2
    for phase in plan.phases:
        if phase.start_hour * 60 <= mid <= phase.end_hour * 60 and any(p == phase.name for p, _ in ticks):
            if phase.every_minutes > window:
                return f"the {phase.name} phase reads the last {_dur(window)} every {_dur(phase.every_minutes)}"
    if b >= max(ticks.values(), default=0.0):
        return "no reading after them"
    return "no reading scheduled there"


def read_in_part(criteria: list[CriterionResult]) -> list[str]:
    """One line per check whose readings of a fixed window left soak hours unread under a
    ``met`` GO or a ``clear`` NO-GO criterion (their ``unread``), naming those criteria:
    ``read in part: workflow_error_rate: 18 readings whose 60-min windows cover 12:00 of
    24:00 soak hours (...) (go_workflows, no_go_workflows)``. The verdict's GO reasons, the
    report and the post-mortem say it with the outcome, so no "met" claims the unread hours."""
    by_text: dict[str, list[str]] = {}
    for r in criteria:
        if r.outcome in ("met", "clear"):
            for part in r.unread:
                by_text.setdefault(part, []).append(r.id)
    return [f"read in part: {part} ({', '.join(ids)})" for part, ids in by_text.items()]


def _breach_detail(rule: RuleKind, cid: str, hit: list[Point], base: float | None, unit: str,
                   series: list[Observation] | None = None) -> str:
    """``<cid>: <value> at <phase> tick <n> meets <rule>``, the run's length and spacing, and
    for relative rules what the point compared and the baseline."""
    last_o, last_v = hit[-1]
    run = f" ({len(hit)} consecutive readings{rule.run_phrase()})" if len(hit) > 1 else ""
    note = rule.point_note(series, last_o, base, unit) if series else ""
    words = rule.window_words(series, base) if series else rule.window_phrase
    return (f"{cid}: {rule.shown(last_v, unit)} {words} {last_o.phase} tick {last_o.tick}{note} "
            f"meets {rule.text(unit)}{run}{rule.breach_note(base, unit)}")


#: A GO criterion reading several checks takes the worst of their outcomes.
_GO_RANK: dict[Outcome, int] = {"met": 0, "not_enough_data": 1, "not_met": 2}


def judge_go(plan: Plan, crit: Criterion, obs: list[Observation], stopped: bool,
             time_scale: float = 1.0) -> CriterionResult:
    """A GO criterion: ``met`` only with enough data and the rule holding throughout. A
    check met on readings of a fixed window that leave soak hours unread says so
    (:func:`window_coverage` on the run's ``time_scale``; ``unread``): the rule is the
    runbook's schedule's, the claim is what its readings read."""
    # one evidence bar with the NO-GO side: never below the verdict's (the plan refuses a lower one too)
    min_cov = max(crit.min_coverage or 0.0, plan.verdict.min_coverage)
    rule = rule_kind(crit.rule)
    outcome: Outcome = "met"
    details, deciding, unread, compared = [], [], [], []
    reach = _reach(obs)
    for cid in crit.checks:
        check_outcome, detail, decided = _go_check(plan, rule, cid, obs, stopped, min_cov, time_scale, reach)
        outcome = max(outcome, check_outcome, key=_GO_RANK.__getitem__)
        cov = window_coverage(plan, cid, _series(obs, cid), time_scale) if check_outcome == "met" else None
        if cov is not None and not cov.full:
            detail += f"; met on {cov.text()}"
            unread.append(f"{cid}: {cov.text()}")
        details.append(f"{cid}: {detail}")
        if decided is not None:
            deciding.append(decided)
        line = _compared(plan, rule, cid, obs) if check_outcome == "met" else None
        if line is not None:
            compared.append(line)
    return CriterionResult(crit.id, "go", crit.text, rule.text(plan.check(crit.checks[0]).unit), outcome,
                           "; ".join(details), list(crit.checks), deciding,
                           unread=unread if outcome == "met" else [], compared=compared if outcome == "met" else [])


def _compared(plan: Plan, rule: RuleKind, cid: str, obs: list[Observation]) -> str | None:
    """For a check met by a relative rule on pooled quantiles (the p95s with histograms):
    what the GO compared, in the runbook's results terms ("latencia p95: XXXms"): the
    baseline's pooled p95, the largest change shown at 95 % and the last window's p95;
    None for other rules and readings without histograms."""
    if not isinstance(rule, Baseline):
        return None
    series, base = _series(obs, cid), baseline_of(obs, cid)
    latest = rule.latest_window(series, base)
    if latest is None or not isinstance(base, Base) or base.pooled is None:
        return None
    unit = plan.check(cid).unit
    worst = max((v for _, v in rule.points(series, base)), default=0.0)
    name = f"p{latest.quantile * 100:g}"
    window, stretch = rule.window(series, base), rule.stretch_note(series, base)
    return (f"{cid}: {name} of each {window:g} min's requests (histogram buckets pooled{stretch}) against "
            f"the baseline's {format_value(base, unit)} ({base.pooled.requests:,.0f} requests): largest change shown "
            f"at 95 % {format_change(worst) if worst else 'none'}; latest: {name} {format_value(latest.value, unit)} of "
            f"the {latest.requests:,.0f} requests counted by the last {window:g} min's "
            f"{plural(latest.readings, 'reading')}" + (f" but its slowest{dropped_note(latest, unit)}"
                                                        if latest.trimmed else ""))


def _coverage(plan: Plan, cid: str, series: list[Observation]) -> tuple[int, int, float]:
    """(scheduled readings measured, scheduled readings, coverage 0..1) of one check's ``series``."""
    ticks = scheduled_ticks(plan, cid)
    measured = len({(o.phase, o.tick) for o in series if (o.phase, o.tick) in ticks})  # each owed reading once
    expected = expected_observations(plan, cid)
    return measured, expected, measured / expected if expected else 0.0


#: A timestamp in an error's text (a missed tick's "due at 2026-...") and the " at" before it.
_STAMP = re.compile(r"(?:\s+at)?\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?")
#: Characters of an error's cause the verdict's reasons show.
CAUSE_CHARS = 120


def drop_times(text: str) -> str:
    """``text`` without its timestamps (and the `` at`` before one), spaces collapsed: a
    missed tick's "missed: tick was due at 2026-12-06T05:10:29+00:00 and no task ran ..."
    reads "missed: tick was due and no task ran ...", the same for every missed tick."""
    return " ".join(_STAMP.sub("", text).split())


def error_cause(o: Observation) -> str | None:
    """What an ``error`` reading's evidence says went wrong, as the verdict's reasons name it:
    its first line, credentials masked (``sources.logs.mask``), timestamps left out (each
    missed tick's message holds its own), at most ``CAUSE_CHARS`` characters; None when
    none was recorded."""
    from migration_soak.sources.logs import mask  # the log source's masking; imported late: it imports plan

    text = str((o.evidence or {}).get("error") or "").strip()
    if not text:
        return None
    text = drop_times(mask(text.splitlines()[0]))
    return text if len(text) <= CAUSE_CHARS else text[:CAUSE_CHARS - 1].rstrip() + "…"


def not_measured(obs: list[Observation], cid: str) -> str:
    """``; 482 readings not measured (error), 480 of them the guard's: 'scrape of /metrics
    answered HTTP 503'`` ("" when none): the readings of ``cid`` after the migration whose
    source did not answer, and why (:func:`error_cause`; with several causes the most
    frequent, ``most often '...' (480 of 482)``): the report's incidents said "HTTP 503 from
    Prometheus", the verdict's reasons a person decides on did not. Never "482 errors":
    next to an error rate that reads as 482 failed requests (the metrics-outage demo's
    "auth_error_rate: ... (coverage 89% < 90%; 34 errors)" at 0 %), and the guard's share
    reconciles the count with the "N of M scheduled readings" before it."""
    errors = [o for o in obs if o.check_id == cid and o.status == "error" and o.phase != "baseline"]
    if not errors:
        return ""
    guard = sum(1 for o in errors if o.phase == "guard")
    return (f"; {plural(len(errors), 'reading')} not measured (error)"
            + (f", {guard} of them the guard's" if guard and guard < len(errors) else
               ", all the guard's" if guard else "") + main_cause(errors))


def main_cause(errors: list[Observation]) -> str:
    """The most frequent :func:`error_cause` of ``errors`` as it follows their count:
    ``: '<cause>'`` when it is every one's, ``, most often '<cause>' (480 of 482)``
    otherwise, "" when none recorded one."""
    causes = Counter(c for c in map(error_cause, errors) if c is not None)
    if not causes:
        return ""
    cause, n = causes.most_common(1)[0]
    return f": '{cause}'" if n == len(errors) else f", most often '{cause}' ({n} of {len(errors)})"


def _go_check(plan: Plan, rule: RuleKind, cid: str, obs: list[Observation], stopped: bool, min_cov: float,
              time_scale: float = 1.0, reach: float | None = None) -> tuple[Outcome, str, dict | None]:
    """One check of a GO criterion: (outcome, detail without the check id, the reading
    that decided a ``not_met`` or None). A stopped soak is ``not_met`` unless a reading
    already failed the rule. ``met`` needs ``min_cov`` of the scheduled readings and of
    the readings due, the guard's included (:func:`short_of_readings`, the NO-GO side's test)."""
    series = _series(obs, cid)
    measured, expected, coverage = _coverage(plan, cid, series)
    base = baseline_of(obs, cid)
    _, bad, n_points = rule.holds_throughout(series, base)
    unit = plan.check(cid).unit
    if bad is not None:
        o, v = bad
        return "not_met", (f"{rule.shown(v, unit)} {rule.window_words(series, base) if rule.needs_baseline else 'at'} "
                           f"{o.phase} tick {o.tick}"
                           f"{rule.point_note(series, o, base, unit)} does not meet {rule.text(unit)}"
                           f"{rule.breach_note(base, unit)}"), _describe(o, v)
    window = rule.bad_window(series) if isinstance(rule, Threshold) else None
    if window is not None:
        o, rate, n, d = window
        return "not_met", (f"{rule.shown(rate, unit)} ({n:,.0f} of {d:,.0f}) pooled over the {GO_WINDOW_MINUTES:g} min "
                           f"ending at {o.phase} tick {o.tick} does not meet {rule.text(unit)} (95 % "
                           f"{'lower' if rule.condition.op in ('<', '<=') else 'upper'} limit "
                           f"{format_value(wilson_lower(n, d) if rule.condition.op in ('<', '<=') else wilson_upper(n, d), unit)})"), \
            _describe(o, rate)
    if stopped:
        return "not_met", f"soak stopped early ({measured} of {expected} scheduled readings taken)", None
    if coverage < min_cov or n_points == 0:
        if rule.needs_baseline and base is None:
            return "not_enough_data", "no baseline measured", None
        if n_points == 0 and coverage >= min_cov:  # readings enough, but none the rule can read
            return "not_enough_data", rule.no_points(series, base), None
        return "not_enough_data", (f"{measured} of {expected} scheduled readings measured (coverage "
                                   f"{below(coverage, min_cov)}){not_measured(obs, cid)}"), None
    short = _short_of_due(plan, cid, series, _reach(obs) if reach is None else reach, time_scale, min_cov)
    if short is not None:
        return "not_enough_data", f"{short}{not_measured(obs, cid)}", None
    unread = (end_unread(plan, cid, series, None) or read_partly(series, rule.condition.op)
              or (thin_baseline(plan, obs, cid, min_cov) if rule.needs_baseline else None))
    if unread is None and isinstance(rule, Baseline):
        # a baseline of too few requests to bound its quantile shows no rise: "no degradation"
        # would claim what nothing measured, on any clock (the slow-auth demo's 40-fold login
        # slowdown against 20 baseline logins was such a "met")
        unread = rule.unbounded(series, base)
    if unread is not None:
        return "not_enough_data", unread, None
    unshown = rule.unshown(series) if isinstance(rule, Threshold) else None
    if unshown is not None:
        return "not_enough_data", unshown, None
    values = [v for _, v in rule.points(series, base)]
    rng = f"{rule.shown(min(values), unit)} to {rule.shown(max(values), unit)}"
    return "met", (f"{n_points} points {rule.text(unit)} (range {rng}, coverage {coverage:.0%}"
                   f"{rule.range_note(base, unit, cid)})"), None


def no_go_breaches(plan: Plan, obs: list[Observation], checks: set[str] | None = None) -> list[CriterionResult]:
    """Breached NO-GO criteria (those reading any of ``checks``, or all): the stop signal."""
    _, no_go = implicit_criteria(plan)
    results = [judge_breach(c, "no_go", obs) for c in no_go if checks is None or set(c.checks) & checks]
    return [r for r in results if r.outcome == "breached"]


def firing_alerts(plan: Plan, obs: list[Observation], checks: set[str] | None = None) -> list[CriterionResult]:
    """Alerts whose rule the data meets now (reading any of ``checks``, or all)."""
    results = [judge_breach(a, "alert", obs) for a in plan.alerts if checks is None or set(a.checks) & checks]
    return [r for r in results if r.outcome == "breached"]


# --- per-check summary for the report -----------------------------------------------------------

def stop_point(breaches: list[CriterionResult]) -> str | None:
    """Where the first breached NO-GO criterion stopped the soak, e.g. ``hour0 tick 0``."""
    for r in breaches:
        if r.outcome == "breached" and r.deciding:
            return f"{r.deciding[-1]['phase']} tick {r.deciding[-1]['tick']}"
    return None


def judge(plan: Plan, observations: list[Observation], time_scale: float = 1.0) -> Verdict:
    """The verdict of a soak from all its observations (see the module doc), each carrying
    its soak time (``Store.observations`` on the run's clock) for the rules that speak of
    minutes. GO needs every GO criterion met and every NO-GO criterion judged ``clear``
    at the readings the plan's schedule takes (a ``met`` / ``clear`` on readings of a fixed
    window that leave soak hours unread says which, and the GO's reasons name them:
    :func:`read_in_part`); one exception, on a compressed clock (``time_scale`` > 1, never an approval): a NO-GO
    criterion whose readings were only too far apart (or over too few requests) for its window (``too_sparse``) is
    named in the GO's reasons instead (docs/verdict.md#not-judged); never one whose baseline could show no rise.
    """
    go, no_go = implicit_criteria(plan)
    breaches = [judge_breach(c, "no_go", observations, plan, time_scale) for c in no_go]
    stopped = any(r.outcome == "breached" for r in breaches)
    gos = [judge_go(plan, c, observations, stopped, time_scale) for c in go]
    from migration_soak.report_checks import summarize_check  # report work; imported here: it imports this module

    reach = _reach(observations)
    checks = [summarize_check(plan, c, observations, stop_point(breaches) or stopped, breaches, time_scale, reach)
              for c in plan.checks]
    results = breaches + gos
    if stopped:
        return Verdict("NO_GO", [f"{r.id}: {r.detail}" for r in breaches if r.outcome == "breached"], results, checks)
    if not gos:  # GO is "every GO criterion met": with none, nothing was required of the soak
        return Verdict("INCONCLUSIVE", ["the plan states no GO criterion (go: []): nothing was required to call "
                                        "GO; no NO-GO criterion breached"], results, checks)
    unjudged = [r for r in breaches if r.outcome == "not_judged"]
    blind = [r for r in unjudged if time_scale <= 1 or not r.too_sparse or not clock_only(plan, r, time_scale)]
    unmet = [r for r in gos if r.outcome != "met"]
    levels = unread_levels(plan, no_go, observations, checks, time_scale)
    if unmet or blind or levels:
        return Verdict("INCONCLUSIVE", [f"{r.id}: {r.outcome}: {r.detail}" for r in unmet]
                       + [f"{r.id}: {r.detail} (a NO-GO criterion that could not be breached is not clear)"
                          for r in blind] + levels, results, checks)
    reasons = [f"all {len(gos)} GO criteria met; no NO-GO criterion breached"] + read_in_part(results)
    if unjudged:
        reasons.append(f"not judged on this compressed clock (time_scale {time_scale:g}: readings too far apart, "
                       "or over too few requests, for the window, each within the bound): " + ", ".join(f"{r.id} ({r.rule})" for r in unjudged))
    reasons += guard_missed(plan, observations, time_scale, reach)  # what the 90 % coverage bar let pass
    reasons += [f"compared ({r.id}): {line}" for r in gos for line in r.compared]  # last: what the GO compared
    return Verdict("GO", reasons, results, checks)


def guard_missed(plan: Plan, obs: list[Observation], time_scale: float = 1.0,
                 reach: float | None = None) -> list[str]:
    """What the guard missed, for a GO's reasons (one line per set of guard checks that
    missed the same readings; none when it missed nothing): ``the guard missed 140 of its
    1,440 readings due (140 soak-min, 9.7 %; longest gap 1 min: no reading between soak
    0:04 and 0:06), each of its 8 checks: ...``. The 90 % coverage bar lets a GO stand on a
    guard that missed up to a tenth of the soak (144 minutes of 1,440, or 100 in one
    stretch); the bar is unchanged, but the person signing off sees the outage. A guard
    reading is missed when no reading with a value (never taken, or ``error``) stands for
    tick ``k`` (soak minute ``k * every``, at ``time_scale``'s cadence) up to the latest
    reading (``reach``), as :func:`_due` counts the readings due. "within the 90% coverage
    bar" only when it is: a check a criterion judges met it under this GO (over all its
    readings due, the phases' too); one no criterion judges (an alert's ``connection_usage``)
    may miss half its minutes under a GO, and its line then says no bar held it."""
    if plan.guard is None:
        return []
    every = guard_every(plan, time_scale).total_seconds() / 60
    reach = _reach(obs) if reach is None else reach
    due = int(reach / every + 1e-9)
    if due <= 0:
        return []
    groups: dict[tuple[int, int, int, bool], list[str]] = {}
    # a check a criterion judges met the coverage bar over all its readings due (phase ticks
    # too) under this GO; one no criterion judges (an alert's) is held by no bar
    judged = {c for crit in plan.go + plan.no_go for c in crit.checks}
    for cid in plan.guard.checks:
        # by soak time, as _due counts them (tick k is due at soak minute k * every)
        read = {round(o.soak_s / 60 / every) for o in _series(obs, cid) if o.phase == "guard" and o.soak_s is not None}
        missing = [k for k in range(1, due + 1) if k not in read]
        if not missing:
            continue
        longest, start, run = 0, 0, 0
        for i, k in enumerate(missing):
            run = run + 1 if i and missing[i - 1] == k - 1 else 1
            if run > longest:
                longest, start = run, k - run + 1
        within = cid in judged or len(missing) / due <= 1 - plan.verdict.min_coverage + 1e-9
        groups.setdefault((len(missing), longest, start, within), []).append(cid)
    lines = []
    bar = f"{plan.verdict.min_coverage:.0%} coverage bar"
    for (n, longest, start, within), cids in groups.items():
        after = start + longest  # the first tick after the longest gap
        span = (f"no reading between soak {_clock((start - 1) * every)} and {_clock(after * every)}" if after <= due
                else f"no reading after soak {_clock((start - 1) * every)}")
        whole = len(cids) == len(plan.guard.checks) and len(cids) > 1
        who = f"each of its {len(cids)} checks" if whole else ", ".join(cids)
        what = "the guard reads" if whole else ("it reads" if len(cids) == 1 else "they read")
        held = (f"within the {bar}, but" if within else
                f"more than the {bar} allows, and no GO or NO-GO criterion judges "
                f"{'it' if len(cids) == 1 else 'them'} (the bar holds only theirs):")
        lines.append(f"the guard missed {n:,} of its {due:,} readings due ({n * every:,.0f} soak-min, "
                     f"{n / due * 100:.1f} %; longest gap {longest * every:,.0f} min: {span}), {who}: {held} "
                     f"nothing {what} was watched then")
    return lines


def clock_only(plan: Plan, r: CriterionResult, time_scale: float) -> bool:
    """Whether the ``too_sparse`` NO-GO ``r`` is sparse because of this clock: a real-time
    soak of ``plan`` reads its checks closely enough for the window (each in the guard,
    whose real-time cadence is at most the rule's largest gap) and ``time_scale``'s guard
    cadence does not. A plan without a guard, or with a slow one, cannot judge the rule on
    any clock; a clock barely compressed reads as close as real time."""
    crit = next((c for c in plan.no_go if c.id == r.id), None)
    if crit is None or plan.guard is None:
        return False
    gap = rule_kind(crit.rule).max_gap_minutes()
    if gap is None:
        return False
    real = guard_every(plan, 1.0).total_seconds() / 60
    here = guard_every(plan, time_scale).total_seconds() / 60
    # real time reads closely enough, this clock does not (time_scale 1.0001 changes nothing)
    return all(c in plan.guard.checks for c in crit.checks) and real <= gap + 1e-9 < here


def unread_levels(plan: Plan, no_go: list[Criterion], obs: list[Observation], checks: list[CheckResult],
                  time_scale: float = 1.0) -> list[str]:
    """Why a check's own ``no_go`` level keeps the verdict from GO, one line a check (none:
    it does not): the plan called that level a NO-GO, and no NO-GO criterion compares the
    check's readings with a level (a ``baseline`` or ``growth`` rule reads only their
    change), so nothing rolls back on it; a person decides. A reading beyond the level
    (status ``fail``), or the level not judged (``judge_breach`` of it as a threshold: no
    reading, too few), keeps GO away (docs/verdict.md#a-checks-own-no-go-level)."""
    read = {cid for c in no_go if c.rule.kind not in ("baseline", "growth") for cid in c.checks}
    results = {r.check_id: r for r in checks}
    lines = []
    for check in plan.checks:
        if check.no_go is None or check.id in read:
            continue
        summary = results.get(check.id)
        if summary is not None and summary.counts.get("fail", 0) > 0:
            lines.append(f"{check.id}: {summary.detail}")
            continue
        level = Criterion(id=check.id, text=f"{check.title} {check.no_go}", checks=[check.id],
                          rule=ThresholdRule(kind="threshold", op=check.no_go.op, value=check.no_go.value))
        r = judge_breach(level, "no_go", obs, plan, time_scale)
        if r.outcome != "clear":
            lines.append(f"{check.id}: its own NO-GO level {format_condition(check.no_go, check.unit)} "
                         f"{r.detail}; no NO-GO criterion of the plan compares it with a level, so nothing "
                         "else judged it (a person decides)")
    return lines


def status_of(check_expect, check_no_go, value: float) -> Status:
    """Status of one measured ``value``: ``fail`` if the check's NO-GO threshold holds,
    ``pass`` if its expectation holds, else ``warn``. (Unmeasured is ``error``.)"""
    if check_no_go is not None and check_no_go.holds(value):
        return "fail"
    return "pass" if check_expect.holds(value) else "warn"
