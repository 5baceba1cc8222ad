"""The results report and the post-mortem, as Markdown (Jinja2 templates in ``templates/``).

The report follows the seed's "Documentación de Resultados": the monitoring period, the
results, the final metrics, incidents and the decision. It says no more than was measured
or decided ("a GO must mean GO"):

- every figure comes from the observations and events it is given, counted once per
  check and phase (baseline and guard readings in their own columns), so the per-check
  table, the criteria, the incidents and the totals add up;
- a check without a reading is "not measured", never met; a compressed clock is said at
  the top and never reads as an approval for production;
- the decision is the run's final ``decision`` event (after people's answers), shown next
  to the judge's verdict; the rollback section lists rollback events only.

On a rollback, a post-mortem is written as the seed's rollback step 6 asks
("docs/incidents/YYYY-MM-DD-staging-rollback.md"): deciding evidence (masked log lines),
the timeline in time order, impact and durations.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from migration_soak.judge import (
    CheckResult,
    CriterionResult,
    Verdict,
    format_change,
    format_condition,
    format_value,
    plural,
    rule_text,
    summarize_check,
)
from migration_soak.plan import Check, Plan
from migration_soak.store import Observation

log = logging.getLogger(__name__)

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
UTC = timezone.utc
STATUSES = ("pass", "warn", "fail", "error")
#: Marks of a check's or criterion's outcome.
MARK = {"met": "✅", "clear": "✅", "not_met": "❌", "breached": "❌", "not_enough_data": "❔",
        "not_measured": "⏹️", "partial": "◐"}
OUTCOME_WORDS = {"met": "met", "clear": "clear", "not_met": "not met", "breached": "breached",
                 "not_enough_data": "not enough data", "not_measured": "not measured",
                 "partial": "as expected until the stop"}
#: Event kinds of the rollback group (``restart``/``prisma_status`` only after ``rollback_started``).
ROLLBACK_KINDS = ("rollback_started", "restore", "ledger", "prisma_status", "rollback_restart", "restart", "health",
                  "rollback_completed")
LABELS = {
    "preflight": "Pre-flight checks passed",
    "baseline_start": "Baseline readings started (before the migration)",
    "backup": "Backup taken and read back",
    "fingerprint": "Data fingerprint taken",
    "migrate": "Migration applied",
    "migrate_failed": "Migration FAILED",
    "prisma_status": "prisma migrate status",
    "verified": "Migration verified (hour 0)",
    "restart": "Applications restarted (Hora 0)",
    "hour0": "Hora 0 checks done, the soak clock starts",
    "alert": "Alert fired",
    "no_go": "NO-GO, the soak stops",
    "verdict": "Judge's verdict",
    "human_decision": "A person answered the INCONCLUSIVE question",
    "sign_off": "QA sign-off",
    "decision": "Final decision",
    "report": "Report written",
    "rollback_started": "Rollback started, team notified",
    "restore": "Columns and values restored from the backup",
    "ledger": "Migration marked rolled back in the ledger",
    "rollback_restart": "Applications restarted after the rollback",
    "health": "Post-rollback health check",
    "rollback_completed": "Rollback completed",
}


# --- small formatting helpers ----------------------------------------------------------------

def _utc(value: Any) -> datetime | None:
    """A datetime (or ISO-8601 text) as an aware UTC datetime; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(at: datetime | None) -> str:
    """``2026-01-01 12:00:09 UTC``."""
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "n/a"


def duration(seconds: float) -> str:
    """Wall time as people say it: ``8 s``, ``4.9 min``, ``2 h 05 min``."""
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def soak_clock(hours: float) -> str:
    """Soak time from hour 0: ``0:45``, ``24:00``."""
    minutes = round(hours * 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _span(lo: float, hi: float, unit: str) -> str:
    """``12–15 ms`` (one unit), or the single value."""
    a, b = format_value(lo, unit), format_value(hi, unit)
    if a == b:
        return a
    for suffix in (" ms", " s", " MiB", "%", "/min"):
        if a.endswith(suffix) and b.endswith(suffix):
            a = a[: -len(suffix)]
            break
    return f"{a}–{b}"


def _ticks(ticks: list[int]) -> str:
    """``3–5, 8`` from [3, 4, 5, 8]."""
    ticks = sorted(set(ticks))
    runs, start = [], None
    for i, t in enumerate(ticks):
        start = t if start is None else start
        if i + 1 == len(ticks) or ticks[i + 1] != t + 1:
            runs.append(str(t) if start == t else f"{start}–{t}")
            start = None
    return ", ".join(runs)


def _who(by: Any) -> str:
    """A decider as people read it: ``person:alice`` -> ``alice``."""
    if isinstance(by, dict):
        by = by.get("name") or by.get("id")
    if not by:
        return "nobody (timed out)"
    by = str(by)
    if by == "judge":
        return "the judge"
    if by == "timeout":
        return "the timeout (nobody answered)"
    if by.startswith("person:"):
        return by.removeprefix("person:")
    if by.startswith("policy:"):
        return f"the policy `{by.removeprefix('policy:')}`"
    return by


def _mask(text: str) -> str:
    from migration_soak.sources.logs import mask

    return mask(text)


# --- what happened: events, counts, the stop -------------------------------------------------

@dataclass
class _Run:
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


def _normalize(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events with aware ``at``, sorted by time (stable: the store's order breaks ties)."""
    out = []
    for i, e in enumerate(events):
        at = _utc(e.get("at"))
        out.append({**e, "at": at, "payload": e.get("payload") or {}, "_i": i})
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(out, key=lambda e: (e["at"] or far, e["_i"]))


def _rule(plan: Plan, c: CriterionResult) -> str:
    """A criterion's rule in its checks' unit (``> 10%``, not ``> 0.1``), from the plan."""
    crit = next((x for x in list(plan.go) + list(plan.no_go) + list(plan.alerts) if x.id == c.id), None)
    if crit is None:
        return c.rule
    try:
        return rule_text(crit.rule, plan.check(crit.checks[0]).unit)
    except KeyError:
        return c.rule


def _unjudged(run: "_Run", c: CriterionResult) -> bool:
    """A GO criterion the stop left unjudged: not met, but by no reading of its own."""
    return bool(run.stop) and c.kind == "go" and c.outcome == "not_met" and not c.deciding


def _deciding_check(c: CriterionResult, d: dict) -> str:
    """The check a deciding entry belongs to (older verdicts did not record it)."""
    if d.get("check_id"):
        return d["check_id"]
    head = c.detail.split(":", 1)[0]
    return head if head in c.checks else c.checks[0]


def _analyse(plan: Plan, verdict: Verdict, observations: list[Observation], events: list[dict[str, Any]],
             time_scale: float | None) -> _Run:
    run = _Run(plan, verdict, list(observations), _normalize(events), time_scale)
    verified = run.first("verified")
    if verified:
        run.verified = _utc(verified["payload"].get("at")) or verified["at"]
    hour0 = run.first("hour0")
    if hour0:
        run.clock0 = _utc(hour0["payload"].get("hour0")) or hour0["at"]
    run.stop = run.first("no_go")
    breached = [c for c in verdict.criteria if c.kind == "no_go" and c.outcome == "breached"]
    if run.stop:
        named = run.stop["payload"].get("criterion")
        run.stop_criterion = next((c for c in breached if c.id == named), breached[0] if breached else None)
    elif verdict.decision == "NO_GO" and breached:
        run.stop_criterion = breached[0]
    if run.stop_criterion and run.stop_criterion.deciding:
        d = run.stop_criterion.deciding[-1]
        run.stop_where = f"{d['phase']} tick {d['tick']}"
    elif run.stop:
        fails = sorted((o for o in run.after if o.status == "fail"), key=lambda o: o.measured_at)
        run.stop_where = f"{fails[0].phase} tick {fails[0].tick}" if fails else "an unknown tick"
    run.decision = run.last("decision")
    run.sign_off = run.last("sign_off")
    run.human = run.last("human_decision")
    stopped: bool | str = (run.stop_where or True) if run.stop else False  # only a recorded stop stopped the soak
    known = {c.id for c in plan.checks}
    for check in plan.checks:
        run.results[check.id] = summarize_check(plan, check, run.observations, stopped, breached)
    for cid in sorted({o.check_id for o in observations} - known):  # readings of checks the plan no longer has
        unit = next(o.unit for o in observations if o.check_id == cid)
        ghost = Check(id=cid, title=f"{cid} (not in the plan)", unit=unit if unit in _UNITS else "count",
                      source={"kind": "http", "connection": "none"}, expect={"op": ">=", "value": 0},
                      phases=[], rule="not in the plan")
        r = summarize_check(plan, ghost, run.observations, stopped, breached)
        run.results[cid] = replace(r, outcome="not_enough_data", deciding=None,
                                   detail=f"{plural(sum(r.counts.values()), 'reading')} of a check the plan does not "
                                          "have: not judged")
    seen = {o.phase for o in observations}
    run.phases = (["baseline"] if plan.baseline or "baseline" in seen else []) + ["hour0"] + [p.name for p in plan.phases]
    run.phases += ["guard"] if plan.guard or "guard" in seen else []
    run.phases += sorted(seen - set(run.phases))
    return run


_UNITS = ("count", "ratio", "ms", "bytes", "seconds", "up", "rows", "per_minute")


def _scheduled_in(plan: Plan, check_id: str, phase: str) -> bool:
    try:
        return any(c.id == check_id for c in plan.checks_in(phase))
    except KeyError:
        return False


def _counts(by_phase: dict[str, dict[str, int]], phases: list[str]) -> dict[str, int]:
    return {s: sum(by_phase.get(p, {}).get(s, 0) for p in phases) for s in STATUSES}


def _count_text(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} ({'/'.join(str(counts[s]) for s in STATUSES)})"


# --- sections ----------------------------------------------------------------------------------

def _clock_kind(time_scale: float) -> str:
    return "compressed" if time_scale > 1 else "stretched"


def _banner(plan: Plan, time_scale: float) -> str | None:
    if time_scale == 1:
        return None
    soak_h = plan.soak_hours()
    wall_min = soak_h * 60 / time_scale
    took = f"{wall_min:.1f} min" if wall_min < 120 else f"{wall_min / 60:.1f} h"
    kind = _clock_kind(time_scale)
    return (f"⚠️ **{kind} clock ({soak_h:g} h in {took}): demonstration evidence, not a {soak_h:g}-hour soak.** "
            f"time_scale {time_scale:g}: one soak hour took {duration(3600 / time_scale)} of wall time. "
            f"Nothing here approves going to production.")


def _checkbox(run: _Run, time_scale: float) -> str:
    plan = run.plan
    task = f"Run `{plan.migration.name}` in {plan.environment} with {plan.soak_hours():g} hours of monitoring"
    outcome = (run.decision or {}).get("payload", {})
    missing = []
    if time_scale != 1:
        missing.append(f"{_clock_kind(time_scale)} clock, time_scale {time_scale:g}")
    if run.stop:
        missing.append(f"soak stopped at {run.stop_where}")
    elif not run.complete:
        missing.append("the soak did not reach its last hour")
    if not run.decision:
        missing.append("no final decision recorded")
    elif not (outcome.get("outcome") == "GO" and outcome.get("action") == "proceed"):
        missing.append(f"final decision {outcome.get('outcome')} ({outcome.get('action')})")
    return f"- [x] {task}" if not missing else f"- [ ] {task}: not done ({'; '.join(missing)})"


def _period(run: _Run, time_scale: float) -> dict[str, str]:
    start, end = run.start, run.end
    if start is None or end is None:
        return {"text": "no reading after the migration: nothing was monitored"
                        + (f" (migration verified {when(start)})" if start else ""), "soak": ""}
    until = "the stop (NO-GO)" if run.stop and end == run.stop["at"] else "the last reading"
    text = (f"{when(start)} to {when(end)}: {duration((end - start).total_seconds())} of wall time, from the "
            f"migration verified (hour 0) to {until}")
    soak_h = run.plan.soak_hours()
    if run.clock0 is None:
        soak = (f"the soak clock never started: the soak stopped during the Hora 0 checks ({run.stop_where})"
                if run.stop else "the soak clock never started")
    else:
        reached = run.reached or 0.0
        soak = f"soak clock started {when(run.clock0)}; soak time covered {soak_clock(reached)} of {soak_h:g} h"
        if run.stop:
            soak += f" (stopped at {run.stop_where})"
        if time_scale != 1:
            soak += f", on a {_clock_kind(time_scale)} clock (time_scale {time_scale:g})"
    return {"text": text, "soak": soak}


def _reading(run: _Run, c: CriterionResult, d: dict, with_time: bool = True) -> str:
    """``critical_errors` = **13** at hour0 tick 0, 2026-01-01 12:00:09 UTC``."""
    cid = _deciding_check(c, d)
    unit = run.results[cid].unit if cid in run.results else ""
    text = f"`{cid}` = **{format_value(d.get('value'), unit)}** at {d['phase']} tick {d['tick']}"
    if with_time:
        text += f", {when(_utc(d.get('measured_at')))}"
    if "derived" in d:
        if c.rule.startswith("count"):
            text += f" ({format_value(d['derived'], unit)} in the window)"
        elif c.rule.startswith(("degradation", "growth")):
            text += f" ({format_change(d['derived'])}" + (" vs baseline)" if c.rule.startswith("degradation") else " growth)")
    return text


def _deciding(run: _Run) -> list[str]:
    """What decided the verdict: breached NO-GO criteria (the stop first), or unmet GO ones."""
    v = run.verdict
    lines = []
    if v.decision == "NO_GO":
        breached = [c for c in v.criteria if c.kind == "no_go" and c.outcome == "breached"]
        breached.sort(key=lambda c: c is not run.stop_criterion)
        for c in breached:
            d = c.deciding[-1] if c.deciding else None
            head = f"❌ `{c.id}` \"{c.text}\" (rule: {_rule(run.plan, c)})"
            if d is None:
                lines.append(f"{head}: {c.detail}")
                continue
            more = f", the last of {len(c.deciding)} consecutive readings from {when(_utc(c.deciding[0].get('measured_at')))}" \
                if len(c.deciding) > 1 else ""
            stop = ": **this stopped the soak**" if c is run.stop_criterion and run.stop else ""
            lines.append(f"{head}: deciding reading {_reading(run, c, d)}{more}{stop}")
    elif v.decision == "INCONCLUSIVE":
        for c in v.criteria:
            if c.kind == "go" and c.outcome != "met":
                deciding = "; ".join(_reading(run, c, d) for d in c.deciding)
                lines.append(f"{MARK[c.outcome]} `{c.id}` \"{c.text}\": {OUTCOME_WORDS[c.outcome]}: "
                             + (f"deciding reading {deciding}; " if deciding else "") + c.detail)
    else:
        lines.append(f"✅ every GO criterion met and no NO-GO criterion breached ({len(v.criteria)} criteria judged)")
    return lines


def _figures(run: _Run, c: CriterionResult) -> str:
    """The readings a criterion read, counted as in the per-check table."""
    parts = []
    for cid in c.checks:
        r = run.results.get(cid)
        if r is None:
            continue
        n = sum(r.counts.values())
        errors = r.counts["error"]
        text = f"`{cid}`: {plural(n, 'reading')}" + (f" ({plural(errors, 'error')})" if errors else "")
        vals = [o.value for o in run.after if o.check_id == cid and o.value is not None and o.status != "error"]
        if vals and not _is_log_count(run.plan, cid):
            text += f", {_span(min(vals), max(vals), r.unit)}"
        base = r.by_phase.get("baseline")
        if c.rule.startswith("degradation"):
            bvals = [o.value for o in run.observations if o.check_id == cid and o.phase == "baseline" and o.value is not None]
            text += (f" + {sum(base.values())} baseline (median {format_value(statistics.median(bvals), r.unit)})"
                     if base and bvals else "; no baseline")
        if _is_log_count(run.plan, cid):
            lines = sum(o.value for o in run.after if o.check_id == cid and o.value is not None)
            text += f", {format_value(lines, 'count')} log lines"
        parts.append(text)
    return "; ".join(parts)


def _is_log_count(plan: Plan, check_id: str) -> bool:
    try:
        return plan.check(check_id).source.kind == "logs"
    except KeyError:
        return False


def _log_lines(run: _Run, check_id: str) -> tuple[int, int, int]:
    """(matching log lines, readings, failed readings) of a ``logs`` check after the migration.

    Lines: the larger of the guard's sum and the phases' sum (each series reads every line
    once; adding them would count each line twice, see ``rules.WindowCount``)."""
    mine = [o for o in run.after if o.check_id == check_id]
    lines = max(sum(o.value for o in mine if o.value is not None and (o.phase == "guard") == guard)
                for guard in (True, False))
    return int(lines), len(mine), sum(1 for o in mine if o.status == "error")


def _results(run: _Run) -> list[str]:
    """The seed's "Resultados" list: log lines counted, then each GO criterion with figures."""
    lines = []
    counted = []
    for crit in run.plan.no_go + run.plan.go:
        for cid in crit.checks:
            if crit.rule.kind == "window_count" and _is_log_count(run.plan, cid) and cid not in counted:
                counted.append(cid)
    for cid in counted:
        n, readings, failed = _log_lines(run, cid)
        title = run.plan.check(cid).title
        note = f"; {plural(failed, 'reading')} failed, so at least this many" if failed else ""
        lines.append(f"{'✅' if n == 0 and readings and not failed else '❌' if n else '❔'} **{n:,}** log lines matched "
                     f"`{cid}` ({title}) in {plural(readings, 'reading')} after the migration{note}")
    for c in run.verdict.criteria:
        if c.kind != "go":
            continue
        if _unjudged(run, c):
            lines.append(f"{MARK['not_measured']} {c.text}: not met, not judged: the soak stopped at {run.stop_where} "
                         f"first ({_figures(run, c)})")
        else:
            lines.append(f"{MARK[c.outcome]} {c.text}: {OUTCOME_WORDS[c.outcome]} ({_figures(run, c)})")
    breached = [c for c in run.verdict.criteria if c.kind == "no_go" and c.outcome == "breached"]
    total = sum(1 for c in run.verdict.criteria if c.kind == "no_go")
    lines.append(f"{'❌' if breached else '✅'} NO-GO criteria breached: {len(breached)} of {total}"
                 + (": " + ", ".join(f"`{c.id}`" for c in breached) if breached else ""))
    for g in run.plan.human_gates:
        lines.append(f"{'✅' if _gate_ok(run) else '❔'} {g.text}: {_gate_state(run)}")
    return lines


def _gate_ok(run: _Run) -> bool:
    return bool(run.sign_off and run.sign_off["payload"].get("state") == "approved")


def _gate_state(run: _Run) -> str:
    """The QA sign-off's state: approved by / rejected (comment) / timed out / not asked."""
    if run.sign_off is None:
        return "not asked"
    p = run.sign_off["payload"]
    state, comment = p.get("state"), (p.get("comment") or "").strip()
    at = when(run.sign_off["at"])
    if state == "approved":
        return f"approved by {_who(p.get('by'))} at {at}" + (f" (\"{comment}\")" if comment else "")
    if state == "rejected":
        return f"rejected by {_who(p.get('by'))} at {at} (\"{comment or 'no comment'}\")"
    if state == "timed_out":
        return f"timed out: nobody answered within {run.plan.verdict.sign_off_timeout_hours:g} h"
    return f"{state or 'unknown state'}"


def _rehearsal(run: _Run) -> str:
    """The rehearsal line: what was rehearsed, or why it was not (``rehearsal.py``)."""
    failed = run.last("rehearsal_failed")
    if failed:
        return f"failed at {failed['payload'].get('step')}: {failed['payload'].get('text')}"
    done = run.last("rehearsal")
    if not done:
        return "not run"
    text = done["payload"].get("text", "")
    return text[:1].upper() + text[1:] + (" (also the estimate of a real rollback's duration)"
                                           if done["payload"].get("status") == "passed" else "")


def _human_gates(run: _Run) -> list[str]:
    lines = [f"{g.text}: {_gate_state(run)}" for g in run.plan.human_gates]
    if not run.plan.human_gates and run.sign_off:
        lines.append(f"QA sign-off: {_gate_state(run)}")
    if run.human:
        p = run.human["payload"]
        chosen = ", ".join(p.get("chosen") or []) or "nothing"
        if p.get("timed_out") or not p.get("by"):
            lines.append(f"INCONCLUSIVE question (GO / Roll back): timed out after {run.plan.verdict.human_timeout_hours:g} h; "
                         f"the default \"{chosen}\" applied")
        else:
            lines.append(f"INCONCLUSIVE question (GO / Roll back): \"{chosen}\" chosen by {_who(p.get('by'))} at "
                         f"{when(run.human['at'])}")
    elif run.verdict.decision == "INCONCLUSIVE":
        lines.append("INCONCLUSIVE question (GO / Roll back): not asked")
    return lines


def _final(run: _Run) -> dict[str, str]:
    """The final decision (``decision`` event) and the closing line of the report."""
    if run.decision is None:
        return {"line": "no final decision was recorded when this report was written",
                "closing": "❔ No final decision recorded: the judge's verdict alone approves nothing."}
    p = run.decision["payload"]
    outcome, action = p.get("outcome"), p.get("action")
    line = (f"**{outcome}**, action **{action}**, decided by {_who(p.get('by'))} at {when(run.decision['at'])}: "
            f"{p.get('reason', '')}")
    if outcome == "GO" and action == "proceed":
        if run.time_scale == 1:
            via = "" if run.verdict.decision == "GO" else f" (by {_who(p.get('by'))} on a {run.verdict.decision} verdict)"
            closing = f"✅ APPROVED to proceed to production{via}"
            if run.plan.human_gates and not _gate_ok(run):
                closing += ("; the human gates were not approved (" + "; ".join(
                    f"{g.text}: {_gate_state(run)}" for g in run.plan.human_gates) + ")")
        else:
            closing = (f"✅ GO on a {_clock_kind(run.time_scale or 0)} clock (time_scale {run.time_scale:g}): "
                       "demonstration evidence only, not an approval for production; that takes a real-time soak "
                       "(time_scale 1)")
    elif action == "rollback":
        closing = f"{'❌' if outcome == 'NO_GO' else '❔'} {str(outcome).replace('_', '-')}: not approved; {_rollback_state(run)}"
    else:
        closing = (f"{'❌' if outcome == 'NO_GO' else '❔'} {str(outcome).replace('_', '-')}: not approved; the migration "
                   f"is kept (action {action}), which is not a GO")
    return {"line": line, "closing": closing}


def _rollback_state(run: _Run) -> str:
    done, started = run.first("rollback_completed"), run.first("rollback_started")
    if done:
        return f"rolled back (completed {when(done['at'])})"
    if started:
        steps = run.rollback_events()
        return (f"rollback under way when this was written (started {when(started['at'])}, last step: "
                f"{LABELS.get(steps[-1]['kind'], steps[-1]['kind']).lower()} at {when(steps[-1]['at'])})")
    return "rollback decided, not started when this was written"


def _rollback_lines(run: _Run) -> list[str]:
    lines = []
    for e in run.rollback_events():
        label = LABELS.get(e["kind"], e["kind"])
        if e["kind"] == "restart":
            label = LABELS["rollback_restart"]
        text = _mask(str(e["payload"].get("text", "")))
        lines.append(f"{when(e['at'])}: {label}" + (f": {text}" if text else ""))
    return lines


def _rollback_duration(run: _Run) -> str | None:
    started, done = run.first("rollback_started"), run.first("rollback_completed")
    if not started:
        return None
    if done:
        return f"{duration((done['at'] - started['at']).total_seconds())} (rollback started to rollback completed)"
    steps = run.rollback_events()
    if len(steps) == 1:
        return "not completed when this was written (only its start is recorded)"
    return (f"not completed when this was written; {duration((steps[-1]['at'] - started['at']).total_seconds())} "
            f"from its start to the last recorded step")


def _rows(run: _Run) -> list[dict]:
    """The per-check table: one cell per phase, baseline and guard in their own columns."""
    after_phases = [p for p in run.phases if p != "baseline"]
    rows = []
    for cid, r in run.results.items():
        check = next((c for c in run.plan.checks if c.id == cid), None)
        cells = []
        for p in run.phases:
            counts = r.by_phase.get(p)
            if counts:
                vals = [o.value for o in run.observations if o.check_id == cid and o.phase == p and o.value is not None]
                text = _count_text(counts) + (f" {_span(min(vals), max(vals), r.unit)}" if vals else "")
            elif check is not None and _scheduled_in(run.plan, cid, p):
                text = "not reached" if run.stop else "0 (missing)"
            else:
                text = "·"
            cells.append(text)
        if r.outcome == "not_measured":
            outcome = f"{MARK[r.outcome]} {r.detail}"
        else:
            outcome = f"{MARK[r.outcome]} {OUTCOME_WORDS[r.outcome]}"
            if r.outcome == "breached" and r.detail.startswith("decided NO-GO"):
                outcome += " (decided NO-GO)"
        rows.append({
            "id": cid, "title": check.title if check else r.title, "unit": _unit_name(r.unit),
            "expect": format_condition(check.expect, r.unit) if check else "-",
            "no_go": format_condition(check.no_go, r.unit) if check and check.no_go else "-",
            "cells": cells, "total": _count_text(_counts(r.by_phase, after_phases)), "outcome": outcome,
        })
    return rows


def _unit_name(unit: str) -> str:
    return {"ratio": "%", "bytes": "MiB", "per_minute": "per min", "up": "up/down", "seconds": "s"}.get(unit, unit)


def _incidents(run: _Run) -> list[str]:
    """Every ``fail`` and ``error`` reading, grouped by check, phase and message."""
    groups: dict[tuple, list[Observation]] = {}
    for o in sorted(run.observations, key=lambda o: (o.scheduled_at, o.check_id)):
        if o.status == "fail":
            key = (o.check_id, o.phase, "fail", "")
        elif o.status == "error":
            key = (o.check_id, o.phase, "error", str(o.evidence.get("error", "no reason recorded"))[:200])
        else:
            continue
        groups.setdefault(key, []).append(o)
    lines = []
    for (cid, phase, status, message), obs in sorted(groups.items(), key=lambda kv: kv[1][0].measured_at):
        unit = obs[0].unit
        t0, t1 = min(o.measured_at for o in obs), max(o.measured_at for o in obs)
        times = when(t0) if t0 == t1 else f"{when(t0)} to {t1:%H:%M:%S} UTC"
        ticks = f"tick{'s' if len(obs) > 1 else ''} {_ticks([o.tick for o in obs])}"
        if status == "fail":
            vals = [o.value for o in obs]
            check = next((c for c in run.plan.checks if c.id == cid), None)
            level = f" (NO-GO level {format_condition(check.no_go, unit)})" if check and check.no_go else ""
            what = f"beyond the NO-GO level: {_span(min(vals), max(vals), unit)}{level}"
            judged = [c for c in run.verdict.criteria if c.kind == "no_go" and cid in c.checks]
            if judged and not any(c.outcome == "breached" and cid in {_deciding_check(c, d) for d in c.deciding}
                                  for c in judged):
                what += "; no NO-GO criterion breached by them (" + ", ".join(
                    f"`{c.id}` {OUTCOME_WORDS[c.outcome]}" for c in judged) + ")"
        else:
            what = f"not measured: {_mask(message)}"
        lines.append(f"`{cid}` {phase} {ticks} ({len(obs)} reading{'s' if len(obs) > 1 else ''}, {times}): {what}")
    return lines


def _final_metrics(run: _Run) -> list[str]:
    obs = run.observations
    base = [o for o in obs if o.phase == "baseline"]
    after = run.after
    guard = [o for o in after if o.phase == "guard"]
    errors = sum(1 for o in obs if o.status == "error")
    lines = [f"Readings recorded: {len(obs)}: {len(after)} after the migration ({len(after) - len(guard)} scheduled, "
             f"{len(guard)} guard) + {len(base)} baseline; {errors} could not be measured (error)"]
    auth = [o for o in after if o.check_id == "auth_error_rate" and "denominator" in (o.evidence or {})]
    total = sum(float(o.evidence["denominator"]) for o in auth)
    if total:
        failed = sum(float(o.evidence["numerator"]) for o in auth)
        lines.append(f"Authentication requests seen after the migration: {total:,.0f}, {failed:,.0f} answered 5xx "
                     f"({format_value(failed / total, 'ratio')}), over {plural(len(auth), 'reading')}")
    floors = {}
    for crit in run.plan.go + run.plan.no_go:
        if crit.rule.kind == "baseline":
            for cid in crit.checks:
                floors[cid] = (max(floors.get(cid, (0.0, 0.0))[0], crit.rule.min_delta), crit.rule.window_minutes)
    for cid, (floor, window) in floors.items():
        r = run.results.get(cid)
        mine = sorted((o for o in after if o.check_id == cid and o.value is not None and o.status != "error"),
                      key=lambda o: o.scheduled_at)
        bvals = [o.value for o in base if o.check_id == cid and o.value is not None]
        if r is None or not mine:
            continue
        vals = [o.value for o in mine]
        text = (f"{r.title}: {plural(len(vals), 'reading')}, {_span(min(vals), max(vals), r.unit)}, "
                f"last {format_value(vals[-1], r.unit)}")
        if not bvals:
            lines.append(text + "; no baseline measured")
            continue
        b = statistics.median(bvals)
        text += f"; baseline median {format_value(b, r.unit)} ({plural(len(bvals), 'reading')} before the migration)"
        if run.time_scale:
            last = mine[-1].scheduled_at
            recent = [o.value for o in mine if (last - o.scheduled_at).total_seconds() * run.time_scale / 60 <= window]
            m = statistics.median(recent)
            delta = m - b
            noise = "within" if abs(delta) < floor else "beyond"
            text += (f"; median of the last {window:g} soak minutes {format_value(m, r.unit)}: "
                     f"{'+' if delta > 0 else ''}{format_value(delta, r.unit)}"
                     + (f" ({format_change(delta / b)})" if b else "")
                     + f" vs baseline, {noise} the {format_value(floor, r.unit)} noise floor")
        lines.append(text)
    for cid, label in (("cache_hit_rate", "Cache hit rate"), ("app_memory", "API gateway memory"),
                       ("recent_executions", "Workflow executions in the last hour")):
        r = run.results.get(cid)
        vals = [o.value for o in sorted(after, key=lambda o: o.scheduled_at)
                if o.check_id == cid and o.value is not None and o.status != "error"]
        if r and vals:
            lines.append(f"{label}: first {format_value(vals[0], r.unit)}, last {format_value(vals[-1], r.unit)}, "
                         f"range {_span(min(vals), max(vals), r.unit)} ({plural(len(vals), 'reading')})")
    return lines


def _check_lines(run: _Run, charts: dict[str, str]) -> list[str]:
    lines = []
    for cid, r in run.results.items():
        link = f" Chart: [{cid}.png]({charts[cid]})" if cid in charts else ""
        lines.append(f"**`{cid}`** {r.title}: {MARK[r.outcome]} {r.detail}. Source of the rule: {r.rule}.{link}")
    return lines


def _chart_marks(run: _Run) -> tuple[dict[str, list[tuple[str, int, str]]], float | None, str]:
    """Deciding readings per check, and the stop's soak hour and label for the charts."""
    deciding: dict[str, list[tuple[str, int, str]]] = {}
    for c in run.verdict.criteria:
        if c.kind == "no_go" and c.outcome == "breached" and c.deciding:
            d = c.deciding[-1]
            extra = ""
            if "derived" in d and c.rule.startswith("degradation"):
                extra = f"{format_change(d['derived'])} vs baseline"
            elif "derived" in d and c.rule.startswith("growth"):
                extra = f"{format_change(d['derived'])} growth"
            elif "derived" in d and c.rule.startswith("count"):
                extra = f"{format_value(d['derived'], 'count')} in the window"
            deciding.setdefault(_deciding_check(c, d), []).append((d["phase"], d["tick"], extra))
    stop_h, label = None, ""
    if run.stop:
        if run.clock0 is None or run.stop_where and run.stop_where.startswith("hour0"):
            stop_h = 0.0
        elif run.time_scale:
            stop_h = max(0.0, (run.stop["at"] - run.clock0).total_seconds() * run.time_scale / 3600)
        label = "NO-GO stop" + (", then rollback" if run.first("rollback_started") else "")
    return deciding, stop_h, label


# --- the two documents -------------------------------------------------------------------------

def render_report(
    plan: Plan,
    run_id: str,
    verdict: Verdict,
    observations: list[Observation],
    events: list[dict[str, Any]],
    time_scale: float,
    chart_dir: Path | None = None,
) -> str:
    """The results report as Markdown.

    ``events``: the run's store events (``verified``, ``hour0``, ``no_go``, ``sign_off``,
    ``decision``, rollback events, ...; ``at`` in UTC); ``time_scale``: the run's clock
    speed (1 = real time). With ``chart_dir``, one PNG per check is written there and
    linked relative to the report's folder (``chart_dir``'s parent).
    """
    run = _analyse(plan, verdict, observations, events, time_scale)
    charts: dict[str, str] = {}
    chart_note = None
    if chart_dir is not None and observations:
        try:
            from migration_soak import charts as charts_mod

            deciding, stop_h, stop_label = _chart_marks(run)
            written = charts_mod.render(plan, observations, run.clock0 or run.start, time_scale, Path(chart_dir),
                                        deciding=deciding, stop_hours=stop_h, stop_label=stop_label)
            charts = {cid: f"{Path(chart_dir).name}/{p.name}" for cid, p in written.items()}
        except Exception as exc:  # charts illustrate; they never cost the report
            log.warning("charts not drawn: %s", exc, exc_info=True)
            chart_note = f"charts could not be drawn: {type(exc).__name__}: {exc}"
    backup = (run.last("backup") or {}).get("payload")
    migrate = (run.last("migrate") or {}).get("payload")
    migration = None
    if migrate:
        migration = ", ".join(f"`{m}` applied" for m in migrate.get("applied", [])) or "nothing pending"
        if run.verified:
            migration += f"; verified {when(run.verified)} (hour 0)"
    final = _final(run)
    lint = (run.last("lint") or {}).get("payload")
    return _ENV.get_template("report.md.j2").render(
        lint=lint, rehearsal=_rehearsal(run),
        plan=plan, run_id=run_id, banner=_banner(plan, time_scale), checkbox=_checkbox(run, time_scale),
        period=_period(run, time_scale), verdict=verdict, verdict_reasons=verdict.reasons, final=final,
        deciding=_deciding(run), human_gates=_human_gates(run), results=_results(run),
        final_metrics=_final_metrics(run),
        backup=backup and {"where": backup.get("location") or backup.get("path"),
                           "size": format_value(float(backup.get("size_bytes") or 0), "bytes"),
                           "sha256": backup.get("sha256", ""), "seconds": float(backup.get("duration_s") or 0)},
        migration=migration, phases=run.phases, rows=_rows(run), cell=_cell,
        criteria=[{"mark": MARK["not_measured"] if _unjudged(run, c) else MARK[c.outcome],
                   "outcome": "not met (soak stopped first)" if _unjudged(run, c) else OUTCOME_WORDS[c.outcome],
                   "figures": _figures(run, c), "rule": _rule(plan, c), "c": c} for c in verdict.criteria],
        checks=_check_lines(run, charts), chart_note=chart_note, incidents=_incidents(run),
        alerts=[f"{when(e['at'])}: {e['payload'].get('alert', '')}: {_mask(str(e['payload'].get('text', '')))}"
                for e in run.events if e["kind"] == "alert"],
        stop=run.stop and f"{when(run.stop['at'])}: {_mask(str(run.stop['payload'].get('text', '')))}",
        rollback=_rollback_lines(run), rollback_duration=_rollback_duration(run),
    )


def _evidence_lines(run: _Run) -> tuple[list[str], list[str]]:
    """(masked log lines, other figures) behind the deciding readings; log lines from the
    soak's other ``logs`` readings when the deciding check is not a log check."""
    samples: list[str] = []
    figures: list[str] = []
    c = run.stop_criterion
    deciding = [(c, d) for d in c.deciding] if c else []
    for crit, d in deciding:
        cid = _deciding_check(crit, d)
        o = run.observation(d, cid)
        if o is None:
            continue
        ev = o.evidence or {}
        for line in ev.get("samples") or []:
            samples.append(f"[{cid} {o.phase} tick {o.tick}] {line}")
        shown = {k: v for k, v in ev.items() if k in ("numerator", "denominator", "lines_read", "matches", "error",
                                                      "query", "metric", "file", "skipped_bytes")}
        if shown:
            figures.append(f"`{cid}` {o.phase} tick {o.tick}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if not samples:
        for o in sorted(run.after, key=lambda o: o.measured_at):
            if _is_log_count(run.plan, o.check_id) and o.value:
                samples += [f"[{o.check_id} {o.phase} tick {o.tick}] {line}" for line in (o.evidence or {}).get("samples") or []]
    return [_mask(s).replace("```", "'''")[:400] for s in samples[:10]], [_mask(f) for f in figures]


def _infer_scale(run: _Run) -> float | None:
    """The clock's speed from a reading's schedule (soak offset / wall offset): a phase
    reading from the soak clock's hour 0, else a baseline reading from the baseline's start."""
    start = run.first("baseline_start")
    origin = _utc(start["payload"].get("at")) or start["at"] if start else None
    if origin and run.plan.baseline:
        for o in run.observations:
            wall = (o.scheduled_at - origin).total_seconds()
            if o.phase == "baseline" and wall > 0:
                return round(o.tick * run.plan.baseline.every_minutes * 60 / wall, 3)
    if run.clock0 is None:
        return None
    for o in run.after:
        if o.phase in [p.name for p in run.plan.phases]:
            offsets = run.plan.phase(o.phase).tick_offsets()
            wall = (o.scheduled_at - run.clock0).total_seconds()
            if 0 < o.tick <= len(offsets) and wall > 0:
                return round(offsets[o.tick - 1].total_seconds() / wall, 3)
    return None


def render_postmortem(
    plan: Plan,
    run_id: str,
    verdict: Verdict,
    observations: list[Observation],
    events: list[dict[str, Any]],
) -> str:
    """The post-mortem of a rolled-back soak as Markdown (seed, rollback step 6): why, the
    deciding evidence (masked log lines), impact, durations, and the timeline (UTC)."""
    run = _analyse(plan, verdict, observations, events, None)
    run.time_scale = _infer_scale(run)
    started, done = run.first("rollback_started"), run.first("rollback_completed")
    day = (run.stop or started or run.decision or {"at": datetime.now(UTC)})["at"]
    durations = []
    if run.stop and run.start:
        durations.append(f"Detection: {duration((run.stop['at'] - run.start).total_seconds())} from the migration "
                         f"verified ({when(run.start)}) to the NO-GO ({when(run.stop['at'])})")
        if run.clock0:
            wall = (run.stop["at"] - run.clock0).total_seconds()
            soak = f", soak time {soak_clock(wall * run.time_scale / 3600)}" if run.time_scale and run.time_scale != 1 else ""
            durations.append(f"Detection on the soak clock: {duration(wall)} of wall time from the soak clock's hour 0 "
                             f"at {when(run.clock0)}{soak}")
    elif run.decision and run.start:
        durations.append(f"Decision: {duration((run.decision['at'] - run.start).total_seconds())} from the migration "
                         f"verified to the final decision (no NO-GO stop)")
    rb = _rollback_duration(run)
    durations.append(f"Rollback: {rb}" if rb else "Rollback: not started when this was written")
    if run.start:
        end = done or (run.rollback_events() or [None])[-1]
        if end:
            durations.append(f"Total: {duration((end['at'] - run.start).total_seconds())} from the migration verified "
                             f"to {'the rollback completed' if done else 'the last rollback step recorded'}")
    impact = []
    if run.start and (done or started):
        until = done or run.rollback_events()[-1]
        impact.append(f"The migrated schema was live in {plan.environment} from {when(run.start)} until the rollback "
                      f"({when(until['at'])}): {duration((until['at'] - run.start).total_seconds())}")
    auth = [o for o in run.after if o.check_id == "auth_error_rate" and "denominator" in (o.evidence or {})]
    total = sum(float(o.evidence["denominator"]) for o in auth)
    if total:
        failed = sum(float(o.evidence["numerator"]) for o in auth)
        impact.append(f"Authentication requests seen meanwhile: {total:,.0f}, {failed:,.0f} answered 5xx "
                      f"({format_value(failed / total, 'ratio')})")
    for cid in [c for c in run.results if _is_log_count(plan, c)]:
        n, readings, failed = _log_lines(run, cid)
        if n:
            impact.append(f"`{cid}` ({plan.check(cid).title}): {n:,} log lines in {plural(readings, 'reading')}")
    decided = sorted({_deciding_check(c, d) for c in verdict.criteria if c.kind == "no_go" and c.outcome == "breached"
                      for d in c.deciding})
    if decided:
        impact.append("Checks that decided the NO-GO: " + ", ".join(f"`{c}`" for c in decided))
    bad = sorted({o.check_id for o in run.after if o.status in ("fail", "warn")} - set(decided))
    if bad:
        impact.append("Other checks outside their expected range at some reading: " + ", ".join(f"`{c}`" for c in bad))
    restore = (run.last("restore") or {}).get("payload")
    if restore:
        impact.append(f"Restored {restore.get('values_restored')} values for {restore.get('users_matched')} of "
                      f"{restore.get('users_at_backup')} users present at backup time; {restore.get('mismatches')} mismatches")
    health = (run.last("health") or {}).get("payload")
    if health:
        impact.append(f"Post-rollback health: {'ok' if health.get('ok') else 'FAILED'}"
                      + (f"; columns back: {', '.join(health['columns_back'])}" if health.get("columns_back") else ""))
    samples, figures = _evidence_lines(run)
    timeline = []
    after_start = run.events.index(started) if started else len(run.events)
    for pos, e in enumerate(run.events):
        label = LABELS.get(e["kind"], e["kind"])
        if e["kind"] in ("restart", "prisma_status") and pos > after_start:
            label = LABELS["rollback_restart"] if e["kind"] == "restart" else "prisma migrate status after the rollback"
        text = _mask(str(e["payload"].get("text", "")))
        text = "" if text == e["kind"] else text
        timeline.append({"at": e["at"], "label": label, "text": text[:300] + ("…" if len(text) > 300 else "")})
    c = run.stop_criterion
    if c and c.deciding:
        for d in c.deciding[-1:]:
            at = _utc(d.get("measured_at"))
            if at:
                timeline.append({"at": at, "label": "Deciding reading",
                                 "text": _reading(run, c, d, with_time=False).replace("**", "")})
    timeline.sort(key=lambda t: t["at"] or datetime.max.replace(tzinfo=UTC))
    return _ENV.get_template("postmortem.md.j2").render(
        plan=plan, run_id=run_id, verdict=verdict, date=f"{day:%Y-%m-%d}", final=_final(run),
        scale=run.time_scale, deciding=_deciding(run), samples=samples, figures=figures,
        stop_where=run.stop_where, impact=impact, durations=durations,
        timeline=[{**t, "at": when(t["at"])} for t in timeline],
    )


def safe_name(run_id: str) -> str:
    """A file-name-safe form of an Airflow run id."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)


def write(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``folder/name`` (folders created); returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
