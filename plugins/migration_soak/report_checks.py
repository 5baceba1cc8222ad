"""How each check fared over the soak: one :class:`~migration_soak.judge.CheckResult` per check.

Report work: the judge decides on criteria; this says, per check, what its readings were
and which outcome the report shows (``judge.judge`` also fills ``Verdict.checks`` with it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from migration_soak.judge import (
    below,
    PHASES_NOT_SCHEDULED,
    CheckResult,
    CriterionResult,
    _describe,  # the judge's form of a deciding reading: the report shows the same
    _series,
    baseline_of,
    end_unread,
    expected_observations,
    implicit_criteria,
    latest_minute,
    main_cause,
    not_measured,
    format_change,
    format_condition,
    format_value,
    plural,
    read_partly,
    short_of_readings,
    window_coverage,
)
from migration_soak.plan import BaselineRule, Check, Plan, ThresholdRule
from migration_soak.rules import Base, Baseline, Threshold, format_apart
from migration_soak.store import Observation

_STATUSES = ("pass", "warn", "fail", "error")
Outcome = Literal["met", "not_met", "breached", "not_enough_data", "not_measured", "partial"]


@dataclass(frozen=True)
class _Tally:
    """One check's readings counted: ``after`` the migration (every phase but the
    baseline) in schedule order, their measured ``values`` (check unit), and the
    figures :class:`CheckResult` carries."""

    after: list[Observation]
    values: list[float]
    counts: dict[str, int]
    by_phase: dict[str, dict[str, int]]
    measured: int
    expected: int
    coverage: float


def tally(plan: Plan, check: Check, obs: Sequence[Observation]) -> _Tally:
    """Count ``check``'s readings in ``obs`` (any check's; others are ignored)."""
    mine = sorted((o for o in obs if o.check_id == check.id), key=lambda o: o.scheduled_at)
    after = [o for o in mine if o.phase != "baseline"]
    counts = {s: sum(1 for o in after if o.status == s) for s in _STATUSES}
    values = [o.value for o in after if o.status != "error" and o.value is not None]
    measured = _measured(after)
    expected = expected_observations(plan, check.id)
    return _Tally(after, values, counts, _by_phase(mine), measured, expected, measured / expected if expected else 0.0)


def _measured(after: list[Observation]) -> int:
    """Scheduled readings with a value (guard and baseline readings are extra: they never count for coverage)."""
    return sum(1 for o in after if o.phase not in PHASES_NOT_SCHEDULED and o.status != "error" and o.value is not None)


def _by_phase(mine: list[Observation]) -> dict[str, dict[str, int]]:
    """Status counts per phase, phases in order of first reading."""
    by_phase: dict[str, dict[str, int]] = {}
    for o in mine:
        by_phase.setdefault(o.phase, dict.fromkeys(_STATUSES, 0))[o.status] += 1
    return by_phase


def sampled_ids(after: Sequence[Observation]) -> tuple[int, int] | None:
    """``(ids looked up, readings)`` of a sampling check (evidence ``sampled``:
    ``authorizer_sync``), or None for other checks."""
    counted = [int((o.evidence or {})["sampled"]) for o in after
               if o.status != "error" and isinstance((o.evidence or {}).get("sampled"), int)]
    return (sum(counted), len(counted)) if counted else None


def proof_note(after: Sequence[Observation]) -> str:
    """What the readings of a check that reads two ways proved (``data_loss``: evidence
    ``reading`` ``values`` or ``keys``), e.g. "2 exact readings (...); 9 key-only readings
    (...)"; a sampling check's sample (:func:`sampled_ids`); "" for other checks. A
    key-only reading is never counted as proving values."""
    kinds = {"values": 0, "keys": 0}
    for o in after:
        kind = (o.evidence or {}).get("reading") if o.status != "error" else None
        if kind in kinds:
            kinds[kind] += 1
    sampled = sampled_ids(after)
    if sampled is not None:
        return f"a sample: {sampled[0]:,} ids looked up over {plural(sampled[1], 'reading')}, not every row"
    if not any(kinds.values()):
        return ""
    parts = []
    if kinds["values"]:
        parts.append(f"{plural(kinds['values'], 'exact reading')} (every row and every preserved value compared "
                     "with the pre-migration fingerprint)")
    if kinds["keys"]:
        parts.append(f"{plural(kinds['keys'], 'key-only reading')} (rows only: they prove no row was lost, "
                     "not that the values are intact)")
    return "; ".join(parts)


def _result(check: Check, t: _Tally, outcome: Outcome, detail: str, deciding: dict | None = None,
            unread: str = "") -> CheckResult:
    note = proof_note(t.after)
    if note:
        detail = f"{detail}; {note}"
    if unread:
        detail = f"{detail}; met on {unread}"
    return CheckResult(
        check_id=check.id, title=check.title, unit=check.unit, rule=check.rule, outcome=outcome,
        expected=t.expected, measured=t.measured, errors=t.counts["error"], coverage=t.coverage, counts=t.counts,
        min=min(t.values) if t.values else None, max=max(t.values) if t.values else None,
        last=t.values[-1] if t.values else None, detail=detail, deciding=deciding, by_phase=t.by_phase,
        unread=unread,
    )


def decided_by(check: Check, breaches: Sequence[CriterionResult]) -> tuple[CriterionResult, dict] | None:
    """The last deciding reading of ``check`` among breached criteria, with its criterion."""
    decided = [(r, d) for r in breaches if r.outcome == "breached" for d in r.deciding if d.get("check_id") == check.id]
    return decided[-1] if decided else None


def criterion_window(plan: Plan, criterion_id: str, obs: Sequence[Observation] = (),
                     check_id: str = "") -> float | None:
    """The soak minutes of a plan criterion's window (a degradation's 60 min; with ``obs``
    and ``check_id``, as its rule compared that check's readings: 600 soak-min at x300,
    ``rules.Baseline.window``), or None."""
    crit = next((x for x in list(plan.go) + list(plan.no_go) + list(plan.alerts) if x.id == criterion_id), None)
    rule = getattr(crit, "rule", None)
    if isinstance(rule, BaselineRule) and obs and check_id:
        return Baseline(rule).window(_series(list(obs), check_id), baseline_of(list(obs), check_id))
    window = getattr(rule, "window_minutes", None)
    return float(window) if window else None


def degradation_change(derived: float, base: float | None, window: float | None, unit: str,
                       short: bool = False) -> str:
    """A degradation rule's figure at its deciding reading: the change of the median of the
    readings of the ``window`` minutes ending there from the baseline median ``base``
    (rules.Baseline), not the reading's own change: the slow-auth demo's 195 ms on a 4.75 ms
    baseline is +4,005%, the +3,426% shown is its 60-min median's, 167 ms. ``median of the 60
    min ending there 167 ms: +3,426% vs the baseline median 4.75 ms`` (``short``: ``60-min
    median 167 ms: +3,426% vs baseline 4.75 ms``, the charts' legend); ``+3,426% vs
    baseline`` when the baseline or the window is unknown. Against a pooled p95
    (``rules.Base.pooled``) the change is the one the 95 % limits show (rules.Baseline._change):
    ``p95 of the 600 min ending there at least 35.7 ms (its lower 95 % limit): +43% over the
    baseline p95's upper limit 25 ms`` (``short``: ``600-min p95 >= 35.7 ms: +43% vs baseline
    p95 <= 25 ms``)."""
    change = format_change(derived)
    if not window or not base or not derived:
        return f"{change} vs baseline"
    if isinstance(base, Base) and base.pooled is not None:
        up = derived > 0
        limit = base.pooled.high if up else base.pooled.low
        if limit and math.isfinite(limit):
            shown, lim = format_value(limit * (1 + derived), unit), format_value(limit, unit)
            if short:
                return (f"{window:g}-min p95 {'>=' if up else '<='} {shown}: {change} vs baseline p95 "
                        f"{'<=' if up else '>='} {lim}")
            return (f"p95 of the {window:g} min ending there at {'least' if up else 'most'} {shown} (its "
                    f"{'lower' if up else 'upper'} 95 % limit): {change} {'over' if up else 'under'} the baseline "
                    f"p95's {'upper' if up else 'lower'} limit {lim}")
    median, baseline = format_value(base * (1 + derived), unit), format_value(base, unit)
    if short:
        return f"{window:g}-min median {median}: {change} vs baseline {baseline}"
    return f"median of the {window:g} min ending there {median}: {change} vs the baseline median {baseline}"


def decided_detail(check: Check, r: CriterionResult, d: dict, base: float | None = None,
                   window: float | None = None) -> str:
    """``decided NO-GO <criterion> (<rule>): <value> (<derived>) at <phase> tick <n>``
    (``base``, ``window``: a degradation's baseline median and window, ``degradation_change``)."""
    shown = format_apart(d["value"], check.no_go.value, format_value, check.unit) if check.no_go else \
        format_value(d["value"], check.unit)
    if "derived" in d and r.rule.startswith("degradation"):
        shown += f" ({degradation_change(d['derived'], base, window, check.unit)})"
    elif "derived" in d and r.rule.startswith("count"):
        shown += f" ({format_value(d['derived'], check.unit)} in the window)"
    return f"decided NO-GO {r.id} ({r.rule}): {shown} at {d['phase']} tick {d['tick']}"


def fail_detail(check: Check, fails: list[Observation], decides: bool = True) -> str:
    """The first reading beyond the NO-GO level; ``decides`` False: no NO-GO criterion of
    the plan compares the check with a level, and the text says what the level does then
    (judge.unread_levels).
    Raises ``ValueError`` if the check has no level."""
    if check.no_go is None:
        raise ValueError(f"{check.id}: a fail reading but no NO-GO level")
    o = fails[0]
    more = f" ({plural(len(fails), 'reading')})" if len(fails) > 1 else ""
    unread = "" if decides else ("; no NO-GO criterion of the plan compares this check with a level: it cannot "
                                 "roll back, and keeps the verdict from GO (a person decides)")
    shown = format_apart(o.value, check.no_go.value, format_value, check.unit) if o.value is not None else "n/a"
    return (f"{shown} at {o.phase} tick {o.tick} meets its NO-GO level "
            f"{format_condition(check.no_go, check.unit)}{more}{unread}")


def unmeasured_detail(t: _Tally, stopped: bool | str) -> str:
    """Why a check has no value: failed readings and their cause (``judge.main_cause``), the
    stop, or nothing recorded."""
    errors = t.counts["error"]
    why = [f"{plural(errors, 'reading')} failed{main_cause([o for o in t.after if o.status == 'error'])}"] \
        if errors else []
    if isinstance(stopped, str):
        why.append(f"soak stopped at {stopped}")
    elif stopped:
        why.append("soak stopped early")
    elif not errors:
        why.append("no reading recorded")
    return f"not measured ({'; '.join(why)})"


def warn_detail(check: Check, t: _Tally, warns: list[Observation]) -> str:
    o = warns[0]
    return (f"{len(warns)} of {plural(len(t.after), 'reading')} outside expected "
            f"{format_condition(check.expect, check.unit)}; first {format_value(o.value, check.unit)} "
            f"at {o.phase} tick {o.tick}")


def value_range(check: Check, values: list[float]) -> str:
    """``value 3 ms`` or ``range 3 ms to 5 ms``."""
    lo, hi = format_value(min(values), check.unit), format_value(max(values), check.unit)
    return f"value {lo}" if min(values) == max(values) else f"range {lo} to {hi}"


def partial_detail(check: Check, t: _Tally, stopped: bool | str) -> str:
    where = f" at {stopped}" if isinstance(stopped, str) else ""
    return (f"as expected ({format_condition(check.expect, check.unit)}) in the "
            f"{plural(len(t.values), 'reading')} before the soak stopped{where}; {t.measured} of "
            f"{t.expected} scheduled readings taken ({value_range(check, t.values)})")


def summarize_check(plan: Plan, check: Check, obs: Sequence[Observation], stopped: bool | str,
                    breaches: Sequence[CriterionResult] = (), time_scale: float = 1.0,
                    reach: float | None = None) -> CheckResult:
    """One check over the soak, for the report (see :class:`CheckResult`).

    ``stopped``: the soak stopped early (a string says where, e.g. ``hour0 tick 0``);
    ``reach``: the soak minute of the run's latest reading after the migration
    (``judge.latest_minute`` of ``obs``, computed when None). ``breaches``: breached NO-GO criteria, whose deciding readings of this check make it
    ``breached`` even when each reading alone was only a ``warn``. A check without a
    measured value is ``not_measured``, never ``met``. The first that applies wins:
    decided a NO-GO, a ``fail`` reading, no value, a ``warn`` reading, stopped, short of
    ``min_coverage``, the end unread (``judge.end_unread``) or log left unread
    (``judge.read_partly``), a count ratio's pooled counts
    that do not show the expectation (``rules.Threshold.unshown``), met. A ``met`` on
    readings of a fixed window that leave soak hours unread on the run's ``time_scale``
    says which (``judge.window_coverage``; ``unread``).
    """
    t = tally(plan, check, obs)
    decided = decided_by(check, breaches)
    if decided:
        return _result(check, t, "breached", decided_detail(check, *decided, base=baseline_of(list(obs), check.id),
                                                            window=criterion_window(plan, decided[0].id, obs, check.id)),
                       deciding=decided[1])
    fails = [o for o in t.after if o.status == "fail"]
    if fails:
        decides = any(check.id in c.checks for c in implicit_criteria(plan)[1]
                      if c.rule.kind not in ("baseline", "growth"))  # as judge.unread_levels
        return _result(check, t, "breached", fail_detail(check, fails, decides), deciding=_describe(fails[0]))
    if not t.values:
        return _result(check, t, "not_measured", unmeasured_detail(t, stopped))
    warns = [o for o in t.after if o.status == "warn"]
    if warns:
        return _result(check, t, "not_met", warn_detail(check, t, warns), deciding=_describe(warns[0]))
    if stopped:
        return _result(check, t, "partial", partial_detail(check, t, stopped))
    if t.coverage < plan.verdict.min_coverage:
        return _result(check, t, "not_enough_data", f"{t.measured} of {t.expected} scheduled readings measured "
                                                    f"({below(t.coverage, plan.verdict.min_coverage)})"
                                                    f"{not_measured(list(obs), check.id)}")
    # the check's readings (t.after) against those due by the run's latest reading of any check
    short = short_of_readings(plan, check.id, t.after, time_scale, plan.verdict.min_coverage,
                              latest_minute(obs) if reach is None else reach)
    if short is not None:  # the readings due, the guard's included: what the NO-GO side asks (judge._go_check)
        return _result(check, t, "not_enough_data", f"{short}{not_measured(list(obs), check.id)}")
    valued = [o for o in t.after if o.value is not None and o.status != "error"]
    unread = end_unread(plan, check.id, valued, None) or read_partly(valued, check.expect.op)
    if unread is not None:
        return _result(check, t, "not_enough_data", unread)
    if check.expect.op in ("<", "<=", ">", ">="):  # a count ratio's readings must show it, as the judge asks
        unshown = Threshold(ThresholdRule(kind="threshold", op=check.expect.op, value=check.expect.value)).unshown(valued)
        if unshown is not None:
            return _result(check, t, "not_enough_data", unshown)
    cov = window_coverage(plan, check.id, [o for o in valued if o.value is not None and math.isfinite(o.value)], time_scale)
    return _result(check, t, "met", f"all {plural(len(t.values), 'reading')} "
                                    f"{format_condition(check.expect, check.unit)} ({value_range(check, t.values)})",
                   unread=cov.text() if cov is not None and not cov.full else "")
