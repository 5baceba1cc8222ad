"""The judge: plan + observations -> verdict. Pure; reads nothing but its arguments.

The plan states the seed's "Criterios de Éxito" as criteria (``go`` and ``no_go``), each a
rule over one or more checks' observations (see the rule models in ``plan.py``):

- a **NO-GO** criterion is ``breached`` when its rule is met by the data; missing data
  can never breach it, and never clears a GO either;
- a **GO** criterion is ``met`` when its rule holds on every data point *and* each of its
  checks measured at least ``min_coverage`` of its scheduled observations; ``error``
  observations count as missing. Otherwise it is ``not_met`` (the data says no) or
  ``not_enough_data``.

A ratio measured from counts (``numerator``/``denominator`` in its evidence, e.g. 5xx
over requests in a scrape window) breaches a NO-GO or alert bound only when the bound is
below its 95 % Wilson lower confidence limit: one failed request out of 45 is 2.2 % but
proves nothing, and a soak is not rolled back on noise. GO criteria read the measured
value itself.

Verdict: ``NO_GO`` if any NO-GO criterion is breached; ``GO`` if every GO criterion is
met; else ``INCONCLUSIVE`` (a person decides). A metrics outage therefore neither aborts
nor passes a soak: it makes it inconclusive.

A plan without criteria gets the implicit ones: every check's ``expect`` as a GO
threshold and its ``no_go`` as a NO-GO threshold.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Literal

from migration_soak.plan import Check, Condition, Criterion, Plan, ThresholdRule
from migration_soak.store import Observation

Decision = Literal["GO", "NO_GO", "INCONCLUSIVE"]
Outcome = Literal["met", "not_met", "breached", "clear", "not_enough_data"]
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


@dataclass(frozen=True)
class CriterionResult:
    """One criterion judged: ``kind`` go / no_go / alert, the ``outcome``, a one-line
    ``detail`` with the figures, and the observations that decided it (``deciding``)."""

    id: str
    kind: str
    text: str
    rule: str
    outcome: Outcome
    detail: str
    checks: list[str]
    deciding: list[dict] = field(default_factory=list)


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

def _minutes(a: datetime, b: datetime, time_scale: float) -> float:
    """Soak minutes from wall time ``a`` to ``b``."""
    return (b - a).total_seconds() * time_scale / 60.0


def _series(obs: list[Observation], check_id: str) -> list[Observation]:
    """Measured observations of a check after the migration, in time order."""
    return sorted((o for o in obs if o.check_id == check_id and o.phase != "baseline" and o.value is not None
                   and o.status != "error"), key=lambda o: o.scheduled_at)


def baseline_of(obs: list[Observation], check_id: str) -> float | None:
    """Median of the check's baseline observations (before the migration), if any."""
    values = [o.value for o in obs if o.check_id == check_id and o.phase == "baseline" and o.value is not None]
    return statistics.median(values) if values else None


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
    """(numerator, denominator) of a count-based ratio compared by ``>``/``>=``, else None."""
    ev = o.evidence or {}
    if o.unit == "ratio" and op in (">", ">=") and "numerator" in ev and "denominator" in ev:
        return float(ev["numerator"]), float(ev["denominator"])
    return None


def _breach_value(o: Observation, op: str) -> float:
    """The value a NO-GO bound is compared with: a count-based ratio's confident lower limit."""
    counts = _counts(o, op)
    return wilson_lower(*counts) if counts else o.value


def _clears(rule, o: Observation) -> bool:
    """Whether a reading that does not show the rule's condition shows it does not hold: a
    count-based ratio only when its confident upper limit is within the bound (0 errors in
    50 requests does not show an error rate under 1 %; in 5 000 it does). A reading that
    shows neither is no evidence: inside a ``sustained`` window it is a gap."""
    counts = _counts(o, rule.op)
    return counts is None or not _cond(rule).holds(wilson_upper(*counts))


def _windows(series: list[Observation], time_scale: float, minutes: float, closed: bool):
    """Each reading of ``series`` (in scheduled-time order) with the readings of the
    ``minutes`` of soak time that end at it: those scheduled ``0 <= age < minutes`` before
    it (``<=`` when ``closed``). Two pointers: linear in the readings, which matters with a
    guard reading every minute for 24 hours."""
    start = 0
    for i, o in enumerate(series):
        while start < i and (_minutes(series[start].scheduled_at, o.scheduled_at, time_scale) > minutes if closed
                             else _minutes(series[start].scheduled_at, o.scheduled_at, time_scale) >= minutes):
            start += 1
        end = i + 1  # readings scheduled at the same time as ``o`` belong to its window too
        while end < len(series) and series[end].scheduled_at == o.scheduled_at:
            end += 1
        yield o, series[start:end]


def _points(rule, series: list[Observation], base: float | None, time_scale: float,
            confident: bool = False) -> list[tuple[Observation, float]]:
    """The data points a rule compares: (observation, derived value). ``confident``: compare
    count-based ratios by their lower confidence limit (for breaches)."""
    kind = rule.kind
    if kind in ("threshold", "sustained"):
        return [(o, _breach_value(o, rule.op) if confident else o.value) for o in series]
    if kind == "window_count":
        if rule.minutes is None:
            return [(series[-1], sum(o.value for o in series))] if series else []
        return [(o, sum(p.value for p in window)) for o, window in _windows(series, time_scale, rule.minutes, False)]
    if kind == "baseline":
        if base is None or base == 0:
            return []
        points = []
        for o, window in _windows(series, time_scale, rule.window_minutes, True):
            m = statistics.median(p.value for p in window)
            points.append((o, 0.0 if abs(m - base) < rule.min_delta else (m - base) / base))
        return points
    if kind == "growth":
        # A rate: spans are between the times the readings were *taken*. A late reading
        # (its tick's wake-up came late) holds a later value; timing it by its schedule
        # would inflate the growth before it and deflate the growth after it (seen in CI
        # on the compressed clock: 60 %/h read as 19.9 %/h next to a reading 12 min late).
        points = []
        for i, o in enumerate(series):
            earlier = [p for p in series[:i] if _minutes(p.measured_at, o.measured_at, time_scale) >= rule.per_minutes]
            if earlier and earlier[-1].value:
                ref = earlier[-1]
                span = _minutes(ref.measured_at, o.measured_at, time_scale)
                # compound rate per period: 2 h at +20 %/h is x1.44, not x1.40
                ratio = o.value / ref.value
                points.append((o, ratio ** (rule.per_minutes / span) - 1 if ratio > 0 else -1.0))
        return points
    raise ValueError(f"unknown rule kind {kind!r}")


def _cond(rule) -> Condition:
    return Condition(op=rule.op, value=rule.value)


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


def format_value(value: float | None, unit: str) -> str:
    """A reading as people read it: ``ratio`` 0..1 in %, ``bytes`` in MiB, ``ms``/``seconds``
    with their unit, ``up`` as up/down, counts as integers; ``n/a`` for ``None``."""
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{_num(value * 100)}%"
    if unit == "percent":
        return f"{_num(value)}%"
    if unit == "bytes":
        return f"{_num(value / 2**20)} MiB"
    if unit == "ms":
        return f"{_num(value)} ms"
    if unit == "seconds":
        return f"{_num(value)} s"
    if unit == "per_minute":
        return f"{_num(value)}/min"
    if unit == "up" and value in (0, 1):
        return "up" if value == 1 else "down"
    if unit in ("count", "rows") and float(value).is_integer():
        return f"{int(value):,}"
    return _num(value, 4)


def format_change(ratio: float) -> str:
    """A relative change (0.079 -> ``+7.9%``)."""
    return ("+" if ratio > 0 else "") + f"{_num(ratio * 100)}%"


def format_condition(cond: Condition, unit: str) -> str:
    """``< 0.001`` on a ratio -> ``< 0.1%``."""
    return f"{cond.op} {format_value(cond.value, unit)}"


def rule_text(rule, unit: str = "") -> str:
    """Human form of a rule in the checks' ``unit``, e.g. ``> 1% sustained for 5 min``."""
    v = format_value(getattr(rule, "value", None), unit)
    if rule.kind == "threshold":
        return f"{rule.op} {v}"
    if rule.kind == "sustained":
        return f"{rule.op} {v} sustained for {rule.minutes:g} min"
    if rule.kind == "window_count":
        return f"count {rule.op} {v} " + (f"in any {rule.minutes:g} min" if rule.minutes else "over the soak")
    if rule.kind == "baseline":
        floor = format_value(rule.min_delta, unit) if unit else f"{rule.min_delta:g}"
        return (f"degradation vs baseline {rule.op} {rule.value:.0%} over {rule.window_minutes:g} min; "
                f"changes under {floor} are noise")
    return (f"growth {rule.op} {rule.value:.0%} per {rule.per_minutes:g} min"
            + (f", sustained {rule.minutes:g} min" if rule.minutes else ""))


def plural(n: int, word: str) -> str:
    """``1 reading``, ``2 readings``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def _unit_of(obs: list[Observation], check_id: str) -> str:
    return next((o.unit for o in obs if o.check_id == check_id), "")


def _shown(rule, value: float, unit: str) -> str:
    """A rule's data point: a relative change for baseline and growth rules, else the value."""
    return format_change(value) if rule.kind in ("baseline", "growth") else format_value(value, unit)


def _describe(o: Observation, derived: float | None = None) -> dict:
    d = {"check_id": o.check_id, "phase": o.phase, "tick": o.tick, "value": o.value, "status": o.status,
         "measured_at": o.measured_at.isoformat()}
    if derived is not None and derived != o.value:
        d["derived"] = derived
    return d


def max_gap_minutes(rule) -> float | None:
    """The longest soak-time gap a windowed rule accepts between two consecutive readings
    of its window: half the window for ``sustained`` (a shorter good spell could hide in a
    longer gap), None (no limit) for every other kind."""
    return rule.minutes / 2 if rule.kind == "sustained" else None


def detect(rule, series: list[Observation], base: float | None, time_scale: float) -> list[tuple[Observation, float]] | None:
    """The points that show the rule's condition is met (as a NO-GO/alert reads it), or None.

    ``sustained``: every reading of the window breaches and the window is covered by
    readings: a run of consecutive readings, at least two, spanning ``minutes`` of soak
    time, none more than :func:`max_gap_minutes` (half the window) after the one before.
    A missing or ``error`` reading is a gap, and so is a count-based ratio that is
    confidently neither above nor within the bound (``_clears``: e.g. a reading seconds
    after another, over a few requests); a gap too long starts the run again, so a window
    the readings do not cover is never judged breached (with 15-minute phase ticks alone,
    a 5-minute window is never covered: the guard's readings cover it).
    ``growth`` with ``minutes``: a run of consecutive growth points spanning ``minutes``.
    Each point is already a rate over at least ``per_minutes`` since an earlier reading, and
    consecutive points' spans always join, so no gap rule applies.
    Others: the first point that meets it. Times are scheduled times (the soak clock's).
    """
    cond = _cond(rule)
    points = _points(rule, series, base, time_scale, confident=True)
    needs_span = rule.kind == "sustained" or (rule.kind == "growth" and rule.minutes)
    if not needs_span:
        hit = next(((o, v) for o, v in points if cond.holds(v)), None)
        return [hit] if hit else None
    gap = max_gap_minutes(rule)
    run: list[tuple[Observation, float]] = []
    for o, v in points:
        if not cond.holds(v):
            if _clears(rule, o):
                run = []
            continue  # too few requests to say either way: a gap, not a good reading
        if run and gap is not None and _minutes(run[-1][0].scheduled_at, o.scheduled_at, time_scale) > gap + 1e-9:
            run = []  # the window is not covered: start again from this reading
        run.append((o, v))
        if len(run) >= 2 and _minutes(run[0][0].scheduled_at, run[-1][0].scheduled_at, time_scale) >= rule.minutes:
            return run
    return None


def holds_throughout(rule, series: list[Observation], base: float | None, time_scale: float):
    """(all points meet the rule, the first point that does not, number of points)."""
    cond = _cond(rule)
    points = _points(rule, series, base, time_scale)
    bad = next(((o, v) for o, v in points if not cond.holds(v)), None)
    return bad is None, bad, len(points)


# --- criteria -------------------------------------------------------------------------------

def expected_observations(plan: Plan, check_id: str) -> int:
    """Scheduled observations of a check over the whole soak: hour 0 and each phase tick it is in."""
    return sum(1 if p == "hour0" else len(plan.phase(p).tick_offsets()) for p, c in plan.schedule() if c == check_id)


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


def judge_breach(crit, kind: str, obs: list[Observation], time_scale: float) -> CriterionResult:
    """A NO-GO criterion (or an alert): ``breached`` when any of its checks shows the rule, else ``clear``."""
    unit0 = _unit_of(obs, crit.checks[0])
    for cid in crit.checks:
        series = _series(obs, cid)
        base = baseline_of(obs, cid)
        hit = detect(crit.rule, series, base, time_scale)
        if hit:
            last_o, last_v = hit[-1]
            unit = series[0].unit if series else ""
            what = "in the window ending" if crit.rule.kind == "window_count" else "at"
            detail = (f"{cid}: {_shown(crit.rule, last_v, unit)} {what} {last_o.phase} tick {last_o.tick} "
                      f"meets {rule_text(crit.rule, unit)}"
                      + (f" ({len(hit)} consecutive readings" + (
                          f", at most {_num(max_gap_minutes(crit.rule))} min apart" if crit.rule.kind == "sustained" else "")
                         + ")" if len(hit) > 1 else "")
                      + (f"; baseline {format_value(base, unit)}" if crit.rule.kind == "baseline" else ""))
            return CriterionResult(crit.id, kind, crit.text, rule_text(crit.rule, unit), "breached", detail,
                                   list(crit.checks), [_describe(o, v) for o, v in hit])
    counts = ", ".join(f"{cid}: {plural(len(_series(obs, cid)), 'reading')} with a value" for cid in crit.checks)
    note = "; no baseline measured" if crit.rule.kind == "baseline" and all(baseline_of(obs, c) is None for c in crit.checks) else ""
    return CriterionResult(crit.id, kind, crit.text, rule_text(crit.rule, unit0), "clear",
                           f"no breach ({counts}){note}", list(crit.checks))


def judge_go(plan: Plan, crit: Criterion, obs: list[Observation], time_scale: float, stopped: bool) -> CriterionResult:
    """A GO criterion: ``met`` only with enough data and the rule holding throughout."""
    min_cov = crit.min_coverage if crit.min_coverage is not None else plan.verdict.min_coverage
    details, deciding, outcome = [], [], "met"
    for cid in crit.checks:
        series = _series(obs, cid)
        measured = len([o for o in series if o.phase not in PHASES_NOT_SCHEDULED])
        expected = expected_observations(plan, cid)
        coverage = measured / expected if expected else 0.0
        base = baseline_of(obs, cid)
        ok, bad, n_points = holds_throughout(crit.rule, series, base, time_scale)
        unit = plan.check(cid).unit
        if not ok:
            o, v = bad
            details.append(f"{cid}: {_shown(crit.rule, v, unit)} at {o.phase} tick {o.tick} does not meet "
                           f"{rule_text(crit.rule, unit)}")
            deciding.append(_describe(o, v))
            outcome = "not_met"
        elif stopped:
            details.append(f"{cid}: soak stopped early ({measured} of {expected} scheduled readings taken)")
            outcome = "not_met" if outcome == "met" else outcome
        elif coverage < min_cov or n_points == 0:
            errors = len([o for o in obs if o.check_id == cid and o.status == "error" and o.phase != "baseline"])
            why = "no baseline measured" if crit.rule.kind == "baseline" and base is None else \
                (f"{measured} of {expected} scheduled readings measured (coverage {coverage:.0%} < {min_cov:.0%}; "
                 f"{errors} errors)")
            details.append(f"{cid}: {why}")
            if outcome == "met":
                outcome = "not_enough_data"
        else:
            values = [v for _, v in _points(crit.rule, series, base, time_scale)]
            rng = f"{_shown(crit.rule, min(values), unit)} to {_shown(crit.rule, max(values), unit)}"
            extra = ""
            if crit.rule.kind == "baseline":
                extra = f"; baseline {format_value(base, unit)}, changes under {format_value(crit.rule.min_delta, unit)} count as 0"
            details.append(f"{cid}: {n_points} points {rule_text(crit.rule, unit)} (range {rng}, "
                           f"coverage {coverage:.0%}{extra})")
    return CriterionResult(crit.id, "go", crit.text, rule_text(crit.rule, plan.check(crit.checks[0]).unit), outcome,
                           "; ".join(details), list(crit.checks), deciding)


def no_go_breaches(plan: Plan, obs: list[Observation], time_scale: float, checks: set[str] | None = None) -> list[CriterionResult]:
    """Breached NO-GO criteria (those reading any of ``checks``, or all): the stop signal."""
    _, no_go = implicit_criteria(plan)
    results = [judge_breach(c, "no_go", obs, time_scale) for c in no_go if checks is None or set(c.checks) & checks]
    return [r for r in results if r.outcome == "breached"]


def firing_alerts(plan: Plan, obs: list[Observation], time_scale: float, checks: set[str] | None = None) -> list[CriterionResult]:
    """Alerts whose rule the data meets now (reading any of ``checks``, or all)."""
    results = [judge_breach(a, "alert", obs, time_scale) for a in plan.alerts if checks is None or set(a.checks) & checks]
    return [r for r in results if r.outcome == "breached"]


# --- per-check summary for the report -----------------------------------------------------------

def stop_point(breaches: list[CriterionResult]) -> str | None:
    """Where the first breached NO-GO criterion stopped the soak, e.g. ``hour0 tick 0``."""
    for r in breaches:
        if r.outcome == "breached" and r.deciding:
            return f"{r.deciding[-1]['phase']} tick {r.deciding[-1]['tick']}"
    return None


def summarize_check(plan: Plan, check: Check, obs: list[Observation], stopped: bool | str,
                    breaches: list[CriterionResult] = ()) -> CheckResult:
    """One check over the soak, for the report (see :class:`CheckResult`).

    ``stopped``: the soak stopped early (a string says where, e.g. ``hour0 tick 0``);
    ``breaches``: breached NO-GO criteria, whose deciding readings of this check make it
    ``breached`` even when each reading alone was only a ``warn``. A check without a
    measured value is ``not_measured``, never ``met``.
    """
    mine = sorted((o for o in obs if o.check_id == check.id), key=lambda o: o.scheduled_at)
    by_phase: dict[str, dict[str, int]] = {}
    for o in mine:
        by_phase.setdefault(o.phase, dict.fromkeys(("pass", "warn", "fail", "error"), 0))[o.status] += 1
    after = [o for o in mine if o.phase != "baseline"]
    counts = {s: sum(1 for o in after if o.status == s) for s in ("pass", "warn", "fail", "error")}
    values = [o.value for o in after if o.status != "error" and o.value is not None]
    measured = sum(1 for o in after if o.phase not in PHASES_NOT_SCHEDULED and o.status != "error" and o.value is not None)
    expected = expected_observations(plan, check.id)
    coverage = measured / expected if expected else 0.0
    common = dict(check_id=check.id, title=check.title, unit=check.unit, rule=check.rule, expected=expected,
                  measured=measured, errors=counts["error"], coverage=coverage, counts=counts,
                  min=min(values) if values else None, max=max(values) if values else None,
                  last=values[-1] if values else None, by_phase=by_phase)
    fmt = lambda v: format_value(v, check.unit)  # noqa: E731
    decided = [(r, d) for r in breaches if r.outcome == "breached" for d in r.deciding if d.get("check_id") == check.id]
    if decided:
        r, d = decided[-1]
        shown = format_value(d["value"], check.unit)
        if "derived" in d and r.rule.startswith("degradation"):
            shown += f" ({format_change(d['derived'])} vs baseline)"
        elif "derived" in d and r.rule.startswith("count"):
            shown += f" ({format_value(d['derived'], check.unit)} in the window)"
        return CheckResult(outcome="breached", detail=f"decided NO-GO {r.id} ({r.rule}): {shown} at {d['phase']} tick "
                                                      f"{d['tick']}", deciding=d, **common)
    fails = [o for o in after if o.status == "fail"]
    warns = [o for o in after if o.status == "warn"]
    if fails:
        o = fails[0]
        return CheckResult(outcome="breached", detail=f"{fmt(o.value)} at {o.phase} tick {o.tick} meets its NO-GO level "
                                                      f"{format_condition(check.no_go, check.unit)}"
                                                      + (f" ({plural(len(fails), 'reading')})" if len(fails) > 1 else ""),
                           deciding=_describe(o), **common)
    if not values:
        why = [f"{plural(counts['error'], 'reading')} failed"] if counts["error"] else []
        why.append(f"soak stopped at {stopped}" if isinstance(stopped, str) else
                   "soak stopped early" if stopped else "no reading recorded" if not counts["error"] else "")
        return CheckResult(outcome="not_measured", detail=f"not measured ({'; '.join(w for w in why if w)})", **common)
    if warns:
        o = warns[0]
        return CheckResult(outcome="not_met", detail=f"{len(warns)} of {plural(len(after), 'reading')} outside expected "
                                                     f"{format_condition(check.expect, check.unit)}; first {fmt(o.value)} "
                                                     f"at {o.phase} tick {o.tick}",
                           deciding=_describe(o), **common)
    rng = f"value {fmt(min(values))}" if min(values) == max(values) else f"range {fmt(min(values))} to {fmt(max(values))}"
    if stopped:
        where = f" at {stopped}" if isinstance(stopped, str) else ""
        return CheckResult(outcome="partial", detail=f"as expected ({format_condition(check.expect, check.unit)}) in the "
                                                     f"{plural(len(values), 'reading')} before the soak stopped{where}; {measured} of "
                                                     f"{expected} scheduled readings taken ({rng})", **common)
    if coverage < plan.verdict.min_coverage:
        return CheckResult(outcome="not_enough_data", detail=f"{measured} of {expected} scheduled readings measured "
                                                             f"({coverage:.0%} < {plan.verdict.min_coverage:.0%}); "
                                                             f"{counts['error']} errors", **common)
    return CheckResult(outcome="met", detail=f"all {plural(len(values), 'reading')} {format_condition(check.expect, check.unit)} "
                                             f"({rng})", **common)


def judge(plan: Plan, observations: list[Observation], time_scale: float = 1.0) -> Verdict:
    """The verdict of a soak from all its observations (see the module doc).

    ``time_scale`` converts wall time between observations into soak time for the rules
    that speak of minutes.
    """
    go, no_go = implicit_criteria(plan)
    breaches = [judge_breach(c, "no_go", observations, time_scale) for c in no_go]
    stopped = any(r.outcome == "breached" for r in breaches)
    gos = [judge_go(plan, c, observations, time_scale, stopped) for c in go]
    checks = [summarize_check(plan, c, observations, stop_point(breaches) or stopped, breaches)
              for c in plan.checks]
    results = breaches + gos
    if stopped:
        return Verdict("NO_GO", [f"{r.id}: {r.detail}" for r in breaches if r.outcome == "breached"], results, checks)
    unmet = [r for r in gos if r.outcome != "met"]
    if unmet:
        return Verdict("INCONCLUSIVE", [f"{r.id}: {r.outcome}: {r.detail}" for r in unmet], results, checks)
    return Verdict("GO", [f"all {len(gos)} GO criteria met; no NO-GO criterion breached"], results, checks)


def status_of(check_expect, check_no_go, value: float) -> str:
    """Status of one measured ``value``: ``fail`` if the check's NO-GO threshold holds,
    ``pass`` if its expectation holds, else ``warn``. (Unmeasured is ``error``.)"""
    if check_no_go is not None and check_no_go.holds(value):
        return "fail"
    return "pass" if check_expect.holds(value) else "warn"
