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
    """How one check fared over the soak, for the report: ``coverage`` 0..1, counts per
    status, ``min``/``max``/``last`` in the check's ``unit`` (``None`` if nothing measured)."""

    check_id: str
    title: str
    unit: str
    rule: str
    outcome: Literal["met", "not_met", "breached", "not_enough_data"]
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


def _breach_value(o: Observation, op: str) -> float:
    """The value a NO-GO bound is compared with: a count-based ratio's confident lower limit."""
    ev = o.evidence or {}
    if o.unit == "ratio" and op in (">", ">=") and "numerator" in ev and "denominator" in ev:
        return wilson_lower(float(ev["numerator"]), float(ev["denominator"]))
    return o.value


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
        return [(o, sum(p.value for p in series if 0 <= _minutes(p.scheduled_at, o.scheduled_at, time_scale) < rule.minutes))
                for o in series]
    if kind == "baseline":
        if base is None or base == 0:
            return []
        points = []
        for o in series:
            window = [p.value for p in series
                      if 0 <= _minutes(p.scheduled_at, o.scheduled_at, time_scale) <= rule.window_minutes]
            m = statistics.median(window)
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


def rule_text(rule) -> str:
    """Human form of a rule, e.g. ``sustained > 0.01 for 5 min``."""
    if rule.kind == "threshold":
        return f"{rule.op} {rule.value:g}"
    if rule.kind == "sustained":
        return f"{rule.op} {rule.value:g} sustained for {rule.minutes:g} min"
    if rule.kind == "window_count":
        return f"count {rule.op} {rule.value:g} " + (f"in any {rule.minutes:g} min" if rule.minutes else "over the soak")
    if rule.kind == "baseline":
        return f"degradation vs baseline {rule.op} {rule.value:.0%} (noise floor {rule.min_delta:g})"
    return (f"growth {rule.op} {rule.value:.0%} per {rule.per_minutes:g} min"
            + (f", sustained {rule.minutes:g} min" if rule.minutes else ""))


def _describe(o: Observation, derived: float | None = None) -> dict:
    d = {"phase": o.phase, "tick": o.tick, "value": o.value, "status": o.status, "measured_at": o.measured_at.isoformat()}
    if derived is not None and derived != o.value:
        d["derived"] = derived
    return d


def detect(rule, series: list[Observation], base: float | None, time_scale: float) -> list[tuple[Observation, float]] | None:
    """The points that show the rule's condition is met (as a NO-GO/alert reads it), or None.

    ``sustained`` and ``growth`` with ``minutes``: a run of consecutive points, at least
    two, spanning ``minutes`` of soak time. Others: the first point that meets it.
    """
    cond = _cond(rule)
    points = _points(rule, series, base, time_scale, confident=True)
    needs_span = rule.kind == "sustained" or (rule.kind == "growth" and rule.minutes)
    if not needs_span:
        hit = next(((o, v) for o, v in points if cond.holds(v)), None)
        return [hit] if hit else None
    run: list[tuple[Observation, float]] = []
    for o, v in points:
        run = run + [(o, v)] if cond.holds(v) else []
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
    for cid in crit.checks:
        series = _series(obs, cid)
        base = baseline_of(obs, cid)
        hit = detect(crit.rule, series, base, time_scale)
        if hit:
            last_o, last_v = hit[-1]
            unit = series[0].unit if series else ""
            shown = f"{last_v:.1%}" if crit.rule.kind in ("baseline", "growth") else f"{last_v:g} {unit}"
            detail = (f"{cid}: {rule_text(crit.rule)} met: {shown} at {last_o.phase} tick {last_o.tick}"
                      + (f" ({len(hit)} consecutive observations)" if len(hit) > 1 else "")
                      + (f"; baseline {base:g} {unit}" if crit.rule.kind == "baseline" else ""))
            return CriterionResult(crit.id, kind, crit.text, rule_text(crit.rule), "breached", detail, list(crit.checks),
                                   [_describe(o, v) for o, v in hit])
    counts = ", ".join(f"{cid}: {len(_series(obs, cid))} obs" for cid in crit.checks)
    note = "; no baseline measured" if crit.rule.kind == "baseline" and all(baseline_of(obs, c) is None for c in crit.checks) else ""
    return CriterionResult(crit.id, kind, crit.text, rule_text(crit.rule), "clear", f"not met by the data ({counts}){note}",
                           list(crit.checks))


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
            shown = f"{v:.1%}" if crit.rule.kind in ("baseline", "growth") else f"{v:g} {unit}"
            details.append(f"{cid}: {shown} at {o.phase} tick {o.tick} does not meet {rule_text(crit.rule)}")
            deciding.append(_describe(o, v))
            outcome = "not_met"
        elif stopped:
            details.append(f"{cid}: soak stopped early")
            outcome = "not_met" if outcome == "met" else outcome
        elif coverage < min_cov or n_points == 0:
            errors = len([o for o in obs if o.check_id == cid and o.status == "error"])
            why = "no baseline measured" if crit.rule.kind == "baseline" and base is None else \
                f"{measured} of {expected} scheduled observations measured (coverage {coverage:.0%} < {min_cov:.0%}; {errors} errors)"
            details.append(f"{cid}: {why}")
            if outcome == "met":
                outcome = "not_enough_data"
        else:
            values = [v for _, v in _points(crit.rule, series, base, time_scale)]
            if crit.rule.kind in ("baseline", "growth"):
                rng = f"{min(values):.1%}..{max(values):.1%}"
            else:
                rng = f"{min(values):g}..{max(values):g} {unit}"
            details.append(f"{cid}: {n_points} points {rule_text(crit.rule)} (range {rng}, coverage {coverage:.0%})")
    return CriterionResult(crit.id, "go", crit.text, rule_text(crit.rule), outcome, "; ".join(details), list(crit.checks),
                           deciding)


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

def summarize_check(plan: Plan, check: Check, obs: list[Observation], stopped: bool) -> CheckResult:
    """Counts and ranges of one check's observations after the migration (for the report)."""
    mine = sorted((o for o in obs if o.check_id == check.id and o.phase not in PHASES_NOT_SCHEDULED),
                  key=lambda o: o.scheduled_at)
    counts = {s: sum(1 for o in mine if o.status == s) for s in ("pass", "warn", "fail", "error")}
    values = [o.value for o in mine if o.status != "error" and o.value is not None]
    expected = len(mine) if stopped else expected_observations(plan, check.id)
    coverage = len(values) / expected if expected else 0.0
    common = dict(check_id=check.id, title=check.title, unit=check.unit, rule=check.rule, expected=expected,
                  measured=len(values), errors=counts["error"], coverage=coverage, counts=counts,
                  min=min(values) if values else None, max=max(values) if values else None,
                  last=values[-1] if values else None)
    fails = [o for o in mine if o.status == "fail"]
    warns = [o for o in mine if o.status == "warn"]
    if fails:
        o = fails[0]
        return CheckResult(outcome="breached", detail=f"{o.value:g} {check.unit} at {o.phase} tick {o.tick} meets {check.no_go}",
                           deciding=_describe(o), **common)
    if not stopped and coverage < plan.verdict.min_coverage:
        return CheckResult(outcome="not_enough_data", detail=f"{len(values)} of {expected} measured ({coverage:.0%})", **common)
    if warns:
        o = warns[0]
        return CheckResult(outcome="not_met", detail=f"expected {check.expect} {check.unit}, got {o.value:g} at {o.phase} tick {o.tick}",
                           deciding=_describe(o), **common)
    rng = f"{min(values):g}..{max(values):g}" if values else "n/a"
    return CheckResult(outcome="met", detail=f"all {len(values)} observations {check.expect} {check.unit} (range {rng})", **common)


def judge(plan: Plan, observations: list[Observation], time_scale: float = 1.0) -> Verdict:
    """The verdict of a soak from all its observations (see the module doc).

    ``time_scale`` converts wall time between observations into soak time for the rules
    that speak of minutes.
    """
    go, no_go = implicit_criteria(plan)
    breaches = [judge_breach(c, "no_go", observations, time_scale) for c in no_go]
    stopped = any(r.outcome == "breached" for r in breaches)
    gos = [judge_go(plan, c, observations, time_scale, stopped) for c in go]
    checks = [summarize_check(plan, c, observations, stopped) for c in plan.checks]
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
