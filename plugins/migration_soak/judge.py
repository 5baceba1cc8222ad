"""The judge: plan + observations -> verdict. Pure; reads nothing but its arguments.

Per check (seed, "Criterios de Éxito (Go/No-Go para Producción)"):

- ``breached``: some observation met the check's NO-GO rule (status ``fail``).
- ``not_enough_data``: fewer than ``verdict.min_coverage`` of its scheduled
  observations hold a measured value; ``error`` observations count as missing, so a
  metrics outage can never turn into a GO.
- ``not_met``: measured enough, never breached, but some value missed the expected
  range (status ``warn``): the GO criterion is not met either.
- ``met``: every observation passed.

Verdict: ``NO_GO`` if any check is breached; else ``INCONCLUSIVE`` if any is
``not_enough_data`` or ``not_met``; else ``GO``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from migration_soak.plan import Plan
from migration_soak.store import Observation

Decision = Literal["GO", "NO_GO", "INCONCLUSIVE"]
Outcome = Literal["met", "not_met", "breached", "not_enough_data"]


@dataclass(frozen=True)
class CheckResult:
    """How one check fared over the soak, with the figures that decided it.

    ``coverage`` is a ratio 0..1; ``min``/``max``/``last`` are in the check's ``unit``
    (``None`` when nothing was measured); ``deciding`` describes the observation that
    decided a breach or miss (phase, tick, value, measured_at).
    """

    check_id: str
    title: str
    unit: str
    rule: str
    outcome: Outcome
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
class Verdict:
    """The decision and one :class:`CheckResult` per check; ``reasons`` are one line each."""

    decision: Decision
    reasons: list[str]
    checks: list[CheckResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-able form (for XCom and the store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        """Inverse of :meth:`to_dict`."""
        return cls(data["decision"], list(data["reasons"]), [CheckResult(**c) for c in data["checks"]])


def expected_observations(plan: Plan, check_id: str) -> int:
    """Scheduled observations of a check over the whole soak: hour 0 plus each phase tick."""
    return 1 + sum(len(plan.phase(p).tick_offsets()) for p, c in plan.schedule() if c == check_id and p != "hour0")


def _describe(o: Observation) -> dict:
    return {"phase": o.phase, "tick": o.tick, "value": o.value, "status": o.status, "measured_at": o.measured_at.isoformat()}


def judge_check(plan: Plan, check_id: str, obs: list[Observation], stopped_early: bool) -> CheckResult:
    """Judge one check from its observations (any order). See the module doc for the rules.

    ``stopped_early``: the soak was cut short by a NO-GO, so missing ticks after the stop
    are not held against coverage.
    """
    check = plan.check(check_id)
    obs = sorted(obs, key=lambda o: o.measured_at)
    counts = {s: sum(1 for o in obs if o.status == s) for s in ("pass", "warn", "fail", "error")}
    values = [o.value for o in obs if o.status != "error" and o.value is not None]
    measured = len(values)
    expected = len(obs) if stopped_early else expected_observations(plan, check_id)
    coverage = measured / expected if expected else 0.0
    fails = [o for o in obs if o.status == "fail"]
    warns = [o for o in obs if o.status == "warn"]
    unit = check.unit
    common = dict(
        check_id=check.id, title=check.title, unit=unit, rule=check.rule, expected=expected, measured=measured,
        errors=counts["error"], coverage=coverage, counts=counts,
        min=min(values) if values else None, max=max(values) if values else None, last=values[-1] if values else None,
    )
    if fails:
        first = fails[0]
        detail = (f"NO-GO rule {check.no_go} {unit} breached: {first.value:g} {unit} at {first.phase} "
                  f"tick {first.tick} ({len(fails)} breaching observation(s))")
        return CheckResult(outcome="breached", detail=detail, deciding=_describe(first), **common)
    if not stopped_early and coverage < plan.verdict.min_coverage:
        detail = (f"{measured} of {expected} scheduled observations measured (coverage {coverage:.0%} < "
                  f"{plan.verdict.min_coverage:.0%}); {counts['error']} error(s)")
        last_error = next((o for o in reversed(obs) if o.status == "error"), None)
        return CheckResult(outcome="not_enough_data", detail=detail,
                           deciding=_describe(last_error) if last_error else None, **common)
    if warns:
        worst = warns[0]
        detail = (f"expected {check.expect} {unit}, got {worst.value:g} {unit} at {worst.phase} tick {worst.tick} "
                  f"({len(warns)} observation(s) outside the expected range)")
        return CheckResult(outcome="not_met", detail=detail, deciding=_describe(worst), **common)
    if stopped_early and measured == 0:
        return CheckResult(outcome="not_enough_data", detail="no value measured before the soak stopped", **common)
    rng = f"{common['min']:g}..{common['max']:g}" if values else "n/a"
    return CheckResult(outcome="met", detail=f"all {measured} observations {check.expect} {unit} (range {rng})", **common)


def judge(plan: Plan, observations: list[Observation]) -> Verdict:
    """The verdict of a soak from all its observations (see the module doc)."""
    by_check: dict[str, list[Observation]] = {c.id: [] for c in plan.checks}
    for o in observations:
        if o.check_id in by_check:
            by_check[o.check_id].append(o)
    stopped_early = any(o.status == "fail" for o in observations)
    results = [judge_check(plan, cid, obs, stopped_early) for cid, obs in by_check.items()]
    breached = [r for r in results if r.outcome == "breached"]
    if breached:
        return Verdict("NO_GO", [f"{r.check_id}: {r.detail}" for r in breached], results)
    unsure = [r for r in results if r.outcome in ("not_enough_data", "not_met")]
    if unsure:
        return Verdict("INCONCLUSIVE", [f"{r.check_id}: {r.outcome}: {r.detail}" for r in unsure], results)
    return Verdict("GO", [f"all {len(results)} checks met their expected values for the whole soak"], results)


def status_of(check_expect, check_no_go, value: float) -> str:
    """Status of one measured ``value``: ``fail`` if the NO-GO rule holds, ``pass`` if the
    expectation holds, else ``warn``. (An unmeasured value is ``error``, decided by the caller.)"""
    if check_no_go is not None and check_no_go.holds(value):
        return "fail"
    return "pass" if check_expect.holds(value) else "warn"
