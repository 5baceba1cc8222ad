"""What happened in one run, read once from its events and observations (:func:`analyse`).

Every section of the report and the post-mortem reads this :class:`Run`, so they count the
same readings and name the same stop. Times are aware UTC datetimes; soak time is hours
from the soak clock's hour 0 (the ``hour0`` event).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from migration_soak.judge import CheckResult, CriterionResult, Verdict, plural, rule_text
from migration_soak.plan import Check, Plan
from migration_soak.report_checks import summarize_check
from migration_soak.report_text import ROLLBACK_KINDS, STATUSES, UTC, utc
from migration_soak.store import Observation, RunClock

#: Units a check may have; readings of a check the plan lost keep theirs if it is one.
UNITS = ("count", "ratio", "ms", "bytes", "seconds", "up", "rows", "per_minute")


@dataclass
class Run:
    """Facts of one run derived from its events and observations (all times UTC)."""

    plan: Plan
    verdict: Verdict
    observations: list[Observation]
    events: list[dict[str, Any]]  # in time order, ``at`` as aware datetimes
    time_scale: float | None
    verified: datetime | None = None
    clock0: datetime | None = None
    stop: dict | None = None
    stop_criterion: CriterionResult | None = None
    stop_where: str | None = None
    decision: dict | None = None
    sign_off: dict | None = None
    human: dict | None = None
    results: dict[str, CheckResult] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)

    def first(self, kind: str) -> dict | None:
        return next((e for e in self.events if e["kind"] == kind), None)

    def last(self, kind: str) -> dict | None:
        return next((e for e in reversed(self.events) if e["kind"] == kind), None)

    def payload(self, kind: str) -> dict | None:
        """The last ``kind`` event's payload (``None``: no such event, or an empty payload)."""
        return (self.last(kind) or {}).get("payload")

    @property
    def topup_gap(self) -> str:
        """The ``topup_gap`` event's text when it is the run's last word on its top-ups
        (``runbook.deploy``: values written between the top-up and the migration's lock are
        not restorable), else "" (no gap, or a closing top-up kept after it)."""
        last = next((e for e in reversed(self.events) if e["kind"] in ("topup", "topup_gap")), None)
        return str((last.get("payload") or {}).get("text") or "") if last and last["kind"] == "topup_gap" else ""

    @property
    def after(self) -> list[Observation]:
        """Readings after the migration (every phase but the baseline)."""
        return [o for o in self.observations if o.phase != "baseline"]

    @property
    def start(self) -> datetime | None:
        """Hour 0 of the migration: the ``verified`` event, else the hour-0 readings' tick."""
        if self.verified:
            return self.verified
        hour0 = [o.scheduled_at for o in self.observations if o.phase == "hour0"]
        after = [o.measured_at for o in self.after]
        return min(hour0) if hour0 else (min(after) if after else None)

    @property
    def last_reading(self) -> datetime | None:
        after = [o.measured_at for o in self.after]
        return max(after) if after else None

    @property
    def end(self) -> datetime | None:
        ends = [t for t in (self.last_reading, self.stop["at"] if self.stop else None) if t]
        return max(ends) if ends else None

    def soak_hours_of(self, o: Observation) -> float | None:
        """Soak hours from hour 0 of a reading by its schedule (hour 0 readings: 0)."""
        if o.phase == "hour0":
            return 0.0
        if o.phase == "baseline" or self.clock0 is None or not self.time_scale:
            return None
        return (o.scheduled_at - self.clock0).total_seconds() * self.time_scale / 3600

    @property
    def reached(self) -> float | None:
        """The furthest soak hour a reading was scheduled at (``None``: clock never started)."""
        hours = [h for h in (self.soak_hours_of(o) for o in self.after) if h is not None]
        return max(hours) if hours and self.clock0 is not None else (0.0 if hours else None)

    @property
    def complete(self) -> bool:
        """The soak ran its whole length: not stopped, the last scheduled hour reached."""
        return (self.stop is None and self.clock0 is not None and self.reached is not None
                and self.reached >= self.plan.soak_hours() - 1e-6)

    def rollback_events(self) -> list[dict]:
        """Rollback events only, in time order (``restart``/``prisma_status`` after its start)."""
        started = self.first("rollback_started")
        if started is None:
            return []
        i = self.events.index(started)
        return [e for e in self.events[i:] if e["kind"] in ROLLBACK_KINDS]

    def observation(self, d: dict, check_id: str | None = None) -> Observation | None:
        """The stored reading a verdict's ``deciding`` entry names."""
        cid = d.get("check_id") or check_id
        return next((o for o in self.observations if (o.check_id, o.phase, o.tick) == (cid, d["phase"], d["tick"])), None)

    def breached(self) -> list[CriterionResult]:
        """The verdict's breached NO-GO criteria, in verdict order."""
        return [c for c in self.verdict.criteria if c.kind == "no_go" and c.outcome == "breached"]


def normalize(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with aware ``at`` (``None`` if missing or unreadable), a ``payload`` dict, sorted
    by time (stable: the store's order breaks ties; events without a time go last). A
    ``topup_gap`` that repeats the one before it for the same top-up (a retried ``migrate``
    task recorded it again before ``runbook._topup_gap`` kept it to one) is left out: one gap."""
    out = []
    for i, e in enumerate(events):
        out.append({**e, "at": utc(e.get("at")), "payload": e.get("payload") or {}, "_i": i})
    far = datetime.max.replace(tzinfo=UTC)
    kept, last = [], None
    for e in sorted(out, key=lambda e: (e["at"] or far, e["_i"])):
        if e["kind"] in ("topup", "topup_gap"):
            if (e["kind"] == "topup_gap" and last is not None and last["kind"] == "topup_gap"
                    and last["payload"].get("text") == e["payload"].get("text")):
                continue
            last = e
        kept.append(e)
    return kept


def _event_time(e: dict | None, key: str) -> datetime | None:
    """The time a payload says (``key``), else when the event was recorded."""
    if e is None:
        return None
    return utc(e["payload"].get(key)) or e["at"]


def _find_stop(run: Run) -> None:
    """Set the stop (``no_go`` event), the criterion that made it, and where it happened."""
    breached = run.breached()
    run.stop = run.first("no_go")
    if run.stop:
        named = run.stop["payload"].get("criterion")
        run.stop_criterion = next((c for c in breached if c.id == named), breached[0] if breached else None)
    elif run.verdict.decision == "NO_GO" and breached:
        run.stop_criterion = breached[0]
    if run.stop_criterion and run.stop_criterion.deciding:
        d = run.stop_criterion.deciding[-1]
        run.stop_where = f"{d['phase']} tick {d['tick']}"
    elif run.stop:
        fails = sorted((o for o in run.after if o.status == "fail"), key=lambda o: o.measured_at)
        run.stop_where = f"{fails[0].phase} tick {fails[0].tick}" if fails else "an unknown tick"


def _ghost(cid: str, unit: str) -> Check:
    """A stand-in for a check the plan no longer has (its readings are listed, not judged)."""
    return Check.model_validate({
        "id": cid, "title": f"{cid} (not in the plan)", "unit": unit if unit in UNITS else "count",
        "source": {"kind": "http", "connection": "none"}, "expect": {"op": ">=", "value": 0},
        "phases": [], "rule": "not in the plan",
    })


def on_soak_clock(run: Run) -> list[Observation]:
    """The run's readings with their soak times (as Store.clock: readings of a window are
    placed on the soak clock from hour 0, else from the verified migration, at the run's
    ``time_scale``); those already on a clock as they are."""
    scale = run.time_scale or 1.0
    start = run.clock0 or run.verified
    return [o if o.soak_s is not None or start is None else o.on_clock(RunClock(start, scale))
            for o in run.observations]


def _summaries(run: Run, stopped: bool | str) -> dict[str, CheckResult]:
    """Per check of the plan (plan order), then per unknown check id (sorted): its summary."""
    breached = run.breached()
    scale = run.time_scale or 1.0  # the post-mortem's clock is inferred later; it shows no check's "met"
    clocked = on_soak_clock(run)
    results = {check.id: summarize_check(run.plan, check, clocked, stopped, breached, scale)
               for check in run.plan.checks}
    known = {c.id for c in run.plan.checks}
    for cid in sorted({o.check_id for o in run.observations} - known):  # readings of checks the plan no longer has
        unit = next(o.unit for o in run.observations if o.check_id == cid)
        r = summarize_check(run.plan, _ghost(cid, unit), run.observations, stopped, breached)
        results[cid] = replace(r, outcome="not_enough_data", deciding=None,
                               detail=f"{plural(sum(r.counts.values()), 'reading')} of a check the plan does not "
                                      "have: not judged")
    return results


def _phases(plan: Plan, observations: list[Observation]) -> list[str]:
    """Table columns: baseline (if any), hour0, the plan's phases, guard (if any), others."""
    seen = {o.phase for o in observations}
    phases = (["baseline"] if plan.baseline or "baseline" in seen else []) + ["hour0"] + [p.name for p in plan.phases]
    phases += ["guard"] if plan.guard or "guard" in seen else []
    return phases + sorted(seen - set(phases))


def analyse(plan: Plan, verdict: Verdict, observations: list[Observation], events: list[dict[str, Any]],
            time_scale: float | None) -> Run:
    """Read a run once: hour 0, the stop, the decision, one summary per check."""
    run = Run(plan, verdict, list(observations), normalize(events), time_scale)
    run.verified = _event_time(run.first("verified"), "at")
    run.clock0 = _event_time(run.first("hour0"), "hour0")
    _find_stop(run)
    run.decision = run.last("decision")
    run.sign_off = run.last("sign_off")
    run.human = run.last("human_decision")
    stopped: bool | str = (run.stop_where or True) if run.stop else False  # only a recorded stop stopped the soak
    run.results = _summaries(run, stopped)
    run.phases = _phases(plan, observations)
    return run


# --- lookups the sections share ------------------------------------------------------------------

def rule_of(plan: Plan, c: CriterionResult) -> str:
    """A criterion's rule in its checks' unit (``> 10%``, not ``> 0.1``), from the plan."""
    crit = next((x for x in list(plan.go) + list(plan.no_go) + list(plan.alerts) if x.id == c.id), None)
    if crit is None:
        return c.rule
    try:
        return rule_text(crit.rule, plan.check(crit.checks[0]).unit)
    except KeyError:
        return c.rule


def unjudged(run: Run, c: CriterionResult) -> bool:
    """A GO criterion the stop left unjudged: not met, but by no reading of its own."""
    return bool(run.stop) and c.kind == "go" and c.outcome == "not_met" and not c.deciding


def deciding_check(c: CriterionResult, d: dict) -> str:
    """The check a deciding entry belongs to (older verdicts did not record it)."""
    if d.get("check_id"):
        return d["check_id"]
    head = c.detail.split(":", 1)[0]
    return head if head in c.checks else c.checks[0]


def is_log_count(plan: Plan, check_id: str) -> bool:
    """The check counts log lines (a ``logs`` source); ``False`` for checks not in the plan."""
    try:
        return plan.check(check_id).source.kind == "logs"
    except KeyError:
        return False


def log_lines(run: Run, check_id: str) -> tuple[int, int, int]:
    """(matching log lines, readings, failed readings) of a ``logs`` check after the migration.

    Lines: the larger of the guard's sum and the phases' sum (each series reads every line
    once; adding them would count each line twice, see ``rules.WindowCount``), from each
    reading's ``matches`` (its value, except for a ``per_minute`` check, whose value is its
    busiest minute)."""
    mine = [o for o in run.after if o.check_id == check_id]
    lines = max(sum((o.evidence or {}).get("matches", o.value) for o in mine
                    if o.value is not None and (o.phase == "guard") == guard)
                for guard in (True, False))
    return int(lines), len(mine), sum(1 for o in mine if o.status == "error")


def scheduled_in(plan: Plan, check_id: str, phase: str) -> bool:
    try:
        return any(c.id == check_id for c in plan.checks_in(phase))
    except KeyError:
        return False


def counts(by_phase: dict[str, dict[str, int]], phases: list[str]) -> dict[str, int]:
    """Status counts summed over ``phases``."""
    return {s: sum(by_phase.get(p, {}).get(s, 0) for p in phases) for s in STATUSES}


def count_text(by_status: dict[str, int]) -> str:
    """``12 (10/1/0/1)``: readings (pass/warn/fail/error)."""
    return f"{sum(by_status.values())} ({'/'.join(str(by_status[s]) for s in STATUSES)})"


def values_of(observations: list[Observation], check_id: str, phase: str | None = None) -> list[float]:
    """Measured values of ``check_id`` (in ``phase`` if given), ``error`` readings left out."""
    return [o.value for o in observations if o.check_id == check_id and (phase is None or o.phase == phase)
            and o.value is not None and o.status != "error"]
