"""The results report's sections, one builder each, in the order ``report.md.j2`` shows them.

Each builder reads a :class:`~migration_soak.report_run.Run` and returns the text (a line,
a list of Markdown list items, or the table rows) its template section prints. Values are
in the checks' units as people read them (``format_value``); times UTC.
"""

from __future__ import annotations

import statistics
from typing import Any

from migration_soak.judge import (
    CheckResult,
    CriterionResult,
    baseline_of,
    drop_times,
    format_change,
    format_condition,
    format_value,
    plural,
    read_in_part,
)
from migration_soak.plan import BaselineRule, Check, Plan
from migration_soak.report_checks import criterion_window, degradation_change, sampled_ids
from migration_soak.rules import Base, Baseline, disjoint_windows, dropped_note, limits_range, soak_minutes
from migration_soak.store import RunClock
from migration_soak.report_run import (
    Run,
    count_text,
    counts,
    deciding_check,
    is_log_count,
    log_lines,
    on_soak_clock,
    rule_of,
    scheduled_in,
    unjudged,
    values_of,
)
from migration_soak.report_text import (
    LABELS,
    MARK,
    OUTCOME_WORDS,
    clock_kind,
    duration,
    label,
    mask,
    notified,
    short_duration,
    soak_clock,
    soak_length,
    span,
    ticks,
    unit_name,
    utc,
    wall_length,
    when,
    who,
)
from migration_soak.store import Observation

# --- the top: banner, checkbox, monitoring period ----------------------------------------------


def guard_cadence(plan: Plan, time_scale: float) -> str:
    """How often the guard read its checks in this run (``clock.guard_every``: the plan's
    ``every_minutes``, floored at ``min_wall_seconds`` of wall time on a fast clock)."""
    from migration_soak.clock import guard_every

    if plan.guard is None:
        return "never (the plan has no guard)"
    nominal = plan.guard.every_minutes
    used = guard_every(plan, time_scale).total_seconds() / 60
    if abs(used - nominal) < 1e-9:
        return f"every {nominal:g} soak-min"
    return (f"every {used:g} soak-min (the plan's {nominal:g} min, floored at {plan.guard.min_wall_seconds:g} s of "
            f"wall time at time_scale {time_scale:g})")


def guard_span(run: Run) -> str:
    """After :func:`guard_cadence`: over what the guard read, from its readings and the stop:
    `` for the whole soak``, `` until the soak stopped at hour0 tick 0 (3 readings)``, or
    ``, but took no reading: the soak stopped at ... before its first`` ("" without a guard).
    A guard that missed readings (``judge.guard_missed``, the GO's reason) did not read "for
    the whole soak": ``for the whole soak but for the readings it missed: it missed 1 of its
    96 readings due (...)`` (the healthy demo's guard missed soak 5:45-6:15 while the note
    above the table said it read every 15 soak-min for the whole soak)."""
    from migration_soak.judge import guard_missed
    from migration_soak.report_run import on_soak_clock

    if run.plan.guard is None:
        return ""
    n = sum(1 for o in run.after if o.phase == "guard")
    where = f"the soak stopped at {run.stop_where}" if run.stop else ""
    if n == 0:
        return f", but took no reading: {where} before its first" if where else ", but took no reading"
    if where:
        return f" until {where} ({plural(n, 'reading')})"
    missed = guard_missed(run.plan, on_soak_clock(run), run.time_scale or 1.0)
    if missed:
        return " for the whole soak but for the readings it missed: " + "; ".join(
            "it " + line.removeprefix("the guard ") for line in missed)
    return " for the whole soak"


def banner(plan: Plan, time_scale: float) -> str | None:
    """The compressed/stretched clock warning; ``None`` in real time."""
    if time_scale == 1:
        return None
    soak_h = plan.soak_hours()
    kind = clock_kind(time_scale)
    what = (f"demonstration evidence, not a {soak_length(soak_h, adjective=True)} soak" if time_scale > 1 else
            "not the plan's soak: its cadences and windows are soak time, so its readings were "
            f"{1 / time_scale:g} times further apart in wall time than the plan's")
    return (f"⚠️ **{kind} clock ({soak_length(soak_h)} in {wall_length(soak_h * 3600 / time_scale)}): {what}.** "
            f"time_scale {time_scale:g}: one soak hour took {short_duration(3600 / time_scale)} of wall time."
            + "".join(f" {note}" for note in wall_windows(plan, time_scale))
            + " Nothing here approves going to production.")


def wall_windows(plan: Plan, time_scale: float) -> list[str]:
    """Per ``sql`` check counting a window of wall time (``window_minutes``: "in the last
    hour") on a compressed clock: how much soak time that window spans, so its readings
    reach back before the migration (the SQL's ``NOW() - INTERVAL`` does not scale)."""
    by_window: dict[float, list[str]] = {}  # one sentence per window, naming every check counting it
    for check in plan.checks:
        window = getattr(check.source, "window_minutes", None)
        if window and time_scale > 1:
            by_window.setdefault(float(window), []).append(f"`{check.id}`")
    notes = []
    for window, ids in by_window.items():
        soak_min = window * time_scale
        reach = ("every reading includes events from before the migration" if soak_min >= plan.soak_hours() * 60
                 else f"readings in the first {duration(soak_min * 60)} of soak time include events from "
                      "before the migration")
        who = ids[0] if len(ids) == 1 else ", ".join(ids[:-1]) + f" and {ids[-1]}"
        notes.append(f"{who} {'counts' if len(ids) == 1 else 'count'} the last {window:g} wall minutes "
                     f"({'its' if len(ids) == 1 else 'their'} SQL): on this clock {duration(soak_min * 60)} of soak "
                     f"time, so {reach}.")
    return notes


def checkbox(run: Run, time_scale: float) -> str:
    """The seed's task as a checkbox, ticked only for a whole real-time soak decided GO/proceed."""
    plan = run.plan
    task = f"Run `{plan.migration.name}` in {plan.environment} with {plan.soak_hours():g} hours of monitoring"
    outcome = (run.decision or {}).get("payload", {})
    missing = []
    if time_scale != 1:
        missing.append(f"{clock_kind(time_scale)} clock, time_scale {time_scale:g}")
    if run.stop:
        missing.append(f"soak stopped at {run.stop_where}")
    elif not run.complete:
        missing.append("the soak did not reach its last hour")
    if not run.decision:
        missing.append("no final decision recorded")
    elif not (outcome.get("outcome") == "GO" and outcome.get("action") == "proceed"):
        missing.append(f"final decision {outcome.get('outcome')} ({outcome.get('action')})")
    return f"- [x] {task}" if not missing else f"- [ ] {task}: not done ({'; '.join(missing)})"


def _soak_time(run: Run, time_scale: float) -> str:
    """How much soak time the readings covered, on which clock."""
    if run.clock0 is None:
        return (f"the soak clock never started: the soak stopped during the Hora 0 checks ({run.stop_where})"
                if run.stop else "the soak clock never started")
    soak = (f"soak clock started {when(run.clock0)}; soak time covered {soak_clock(run.reached or 0.0)} of "
            f"{run.plan.soak_hours():g} h")
    if run.stop:
        soak += f" (stopped at {run.stop_where})"
    if time_scale != 1:
        soak += f", on a {clock_kind(time_scale)} clock (time_scale {time_scale:g})"
    gaps = [(a, b) for a, b in run.plan.phase_gaps() if a < (run.reached or 0.0)]
    if gaps:
        soak += ("; no phase read soak hours " + ", ".join(f"{a:g}-{b:g}" for a, b in gaps)
                 + " (the plan's phases leave them out: only the guard and readings that count since their "
                 "previous one cover them)")
    return soak


def period(run: Run, time_scale: float) -> dict[str, str]:
    """``{"text": wall-time period, "soak": soak time covered}`` ("" when nothing was monitored)."""
    start, end = run.start, run.end
    if start is None or end is None:
        return {"text": "no reading after the migration: nothing was monitored"
                        + (f" (migration verified {when(start)})" if start else ""), "soak": ""}
    until = "the stop (NO-GO)" if run.stop and end == run.stop["at"] else "the last reading"
    text = (f"{when(start)} to {when(end)}: {duration((end - start).total_seconds())} of wall time, from the "
            f"migration verified (hour 0) to {until}")
    return {"text": text, "soak": _soak_time(run, time_scale)}


# --- the decision -------------------------------------------------------------------------------


def _go_closing(run: Run, p: dict) -> str:
    """The closing line of a GO/proceed decision: an approval only on a real-time clock and
    only when every human gate of the plan (runbook "Criterios de Éxito") was approved. A
    person's GO over another verdict is named as such on every clock (the noisy demo with
    --human-choice GO closed "✅ GO on a compressed clock ..." over an INCONCLUSIVE verdict,
    on the report and the soak view's decision card, while Slack said "GO by Anonymous over
    an INCONCLUSIVE verdict")."""
    person = p.get("overridden_by") or p.get("by")
    via = "" if run.verdict.decision == "GO" else f" (by {who(person)} on an {run.verdict.decision} verdict)"
    if run.time_scale != 1:
        what = ("✅ GO" if not via else
                f"⚠️ GO by {who(person)} over an {run.verdict.decision} verdict, not the judge's GO,")
        return (f"{what} on a {clock_kind(run.time_scale or 0)} clock (time_scale {run.time_scale:g}): "
                "demonstration evidence only, not an approval for production; that takes a real-time soak "
                "(time_scale 1)")
    if not run.plan.human_gates or gate_ok(run):
        return f"✅ APPROVED to proceed to production{via}"
    what = ("GO on the measured criteria" if run.verdict.decision == "GO" else
            f"GO by {who(person)} over an {run.verdict.decision} verdict")
    return (f"❔ {what}; not approved for production: "
            + "; ".join(f"{g.text}: {gate_state(run)}" for g in run.plan.human_gates))


def final(run: Run) -> dict[str, str]:
    """``{"line": the final decision, "closing": the report's last line}`` from the ``decision`` event."""
    if run.decision is None:
        return {"line": "no final decision was recorded when this report was written",
                "closing": "❔ No final decision recorded: the judge's verdict alone approves nothing."}
    p = run.decision["payload"]
    outcome, action = p.get("outcome"), p.get("action")
    line = (f"**{outcome}**, action **{action}**, decided by {who(p.get('by'))} at {when(run.decision['at'])}: "
            f"{p.get('reason', '')}")
    mark = f"{'❌' if outcome == 'NO_GO' else '❔'} {str(outcome).replace('_', '-')}: not approved"
    if outcome == "GO" and action == "proceed":
        closing = _go_closing(run, p)
    elif action == "rollback":
        closing = f"{mark}; {rollback_state(run)}"
    else:
        closing = f"{mark}; the migration is kept (action {action}), which is not a GO"
    return {"line": line, "closing": closing}


def reading(run: Run, c: CriterionResult, d: dict, with_time: bool = True) -> str:
    """``critical_errors` = **13** at hour0 tick 0, 2026-01-01 12:00:09 UTC``."""
    cid = deciding_check(c, d)
    unit = run.results[cid].unit if cid in run.results else ""
    text = f"`{cid}` = **{format_value(d.get('value'), unit)}** at {d['phase']} tick {d['tick']}"
    if with_time:
        text += f", {when(utc(d.get('measured_at')))}"
    if "derived" in d:
        if c.rule.startswith("count"):
            text += f" ({format_value(d['derived'], unit)} in the window)"
        elif c.rule.startswith("degradation"):
            text += f" ({_degradation(run, c, d)})"
        elif c.rule.startswith("growth"):
            text += f" ({format_change(d['derived'])} growth)"
    return text


def _degradation(run: Run, c: CriterionResult, d: dict, short: bool = False) -> str:
    """A degradation's deciding figure with the window it belongs to (report_checks.degradation_change)."""
    cid = deciding_check(c, d)
    return degradation_change(d["derived"], baseline_of(run.observations, cid),
                              criterion_window(run.plan, c.id, on_soak_clock(run), cid),
                              run.results[cid].unit if cid in run.results else "", short)


def _breach_line(run: Run, c: CriterionResult) -> str:
    """A breached NO-GO criterion and its deciding reading (and whether it stopped the soak)."""
    head = f"❌ `{c.id}` \"{c.text}\" (rule: {rule_of(run.plan, c)})"
    if not c.deciding:
        return f"{head}: {c.detail}"
    more = f", the last of {len(c.deciding)} consecutive readings from {when(utc(c.deciding[0].get('measured_at')))}" \
        if len(c.deciding) > 1 else ""
    stop = ": **this stopped the soak**" if c is run.stop_criterion and run.stop else ""
    return f"{head}: deciding reading {reading(run, c, c.deciding[-1])}{more}{stop}"


def _unmet_line(run: Run, c: CriterionResult) -> str:
    """A GO criterion not met, with its deciding readings if any."""
    deciding = "; ".join(reading(run, c, d) for d in c.deciding)
    return (f"{MARK[c.outcome]} `{c.id}` \"{c.text}\": {OUTCOME_WORDS[c.outcome]}: "
            + (f"deciding reading {deciding}; " if deciding and c.outcome != "not_judged" else "")
            + c.detail.removeprefix("not judged: "))


def deciding(run: Run) -> list[str]:
    """What decided the verdict: breached NO-GO criteria (the stop first), or unmet GO ones;
    the verdict's own reasons when no criterion decided it (a migration that failed
    part-way, tasks that failed after the migration)."""
    v = run.verdict
    marks = {"NO_GO": "❌", "INCONCLUSIVE": "❔"}
    if v.decision == "NO_GO":
        breached = sorted(run.breached(), key=lambda c: c is not run.stop_criterion)  # stable: the stop first
        return [_breach_line(run, c) for c in breached] or [f"{marks['NO_GO']} {r}" for r in v.reasons]
    unjudged = [c for c in v.criteria if c.kind == "no_go" and c.outcome == "not_judged"]
    if v.decision == "INCONCLUSIVE":
        return ([_unmet_line(run, c) for c in v.criteria if c.kind == "go" and c.outcome != "met"]
                + [_unmet_line(run, c) for c in unjudged]) or [f"{marks['INCONCLUSIVE']} {r}" for r in v.reasons]
    partly = [f"⚠️ {line}" for line in read_in_part(v.criteria)]  # met / clear on windows that left hours unread
    if not unjudged:
        return [f"✅ every GO criterion met and no NO-GO criterion breached ({len(v.criteria)} criteria judged)"] + partly
    return ([f"✅ every GO criterion met and no NO-GO criterion breached ({len(v.criteria) - len(unjudged)} of "
             f"{len(v.criteria)} criteria judged)"] + partly
            + [f"{_unmet_line(run, c)}: not holding this compressed clock's GO back, every reading being within "
               "the bound (a real-time soak judges it)" for c in unjudged])


# --- human gates ----------------------------------------------------------------------------------


def gate_ok(run: Run) -> bool:
    """The QA sign-off approved."""
    return bool(run.sign_off and run.sign_off["payload"].get("state") == "approved")


def gate_mark(run: Run) -> str:
    """✅ the QA sign-off approved, ❌ rejected or timed out (not a GO), ❔ not asked or unanswered."""
    if gate_ok(run):
        return "✅"
    state = (run.sign_off or {}).get("payload", {}).get("state")
    return "❌" if state in ("rejected", "timed_out") else "❔"


def gate_state(run: Run) -> str:
    """The QA sign-off's state: approved by / rejected (comment) / timed out / not asked."""
    if run.sign_off is None:
        return "not asked"
    p = run.sign_off["payload"]
    state, comment = p.get("state"), (p.get("comment") or "").strip()
    at = when(run.sign_off["at"])
    if state == "approved":
        return f"approved by {who(p.get('by'))} at {at}" + (f" (\"{comment}\")" if comment else "")
    if state == "rejected":
        return f"rejected by {who(p.get('by'))} at {at} (\"{comment or 'no comment'}\")"
    if state == "timed_out":
        return f"timed out: nobody answered within {run.plan.verdict.sign_off_timeout_hours:g} h"
    return f"{state or 'unknown state'}"


def _question_line(run: Run) -> str | None:
    """The INCONCLUSIVE question (GO / Roll back): who answered, the timeout, or not asked."""
    if run.human:
        p = run.human["payload"]
        chosen = ", ".join(p.get("chosen") or []) or "nothing"
        if p.get("timed_out") or not p.get("by"):
            return (f"INCONCLUSIVE question (GO / Roll back): timed out after "
                    f"{run.plan.verdict.human_timeout_hours:g} h; the default \"{chosen}\" applied")
        return (f"INCONCLUSIVE question (GO / Roll back): \"{chosen}\" chosen by {who(p.get('by'))} at "
                f"{when(run.human['at'])}")
    if run.verdict.decision == "INCONCLUSIVE":
        return "INCONCLUSIVE question (GO / Roll back): not asked"
    return None


def human_gates(run: Run) -> list[str]:
    """The plan's human gates and the INCONCLUSIVE question, with their answers."""
    lines = [f"{g.text}: {gate_state(run)}" for g in run.plan.human_gates]
    if not run.plan.human_gates and run.sign_off:
        lines.append(f"QA sign-off: {gate_state(run)}")
    question = _question_line(run)
    return lines + ([question] if question else [])


# --- "Resultados" ---------------------------------------------------------------------------------


def _check_figures(run: Run, c: CriterionResult, cid: str, r: CheckResult) -> str:
    """``login_p95`: 114 readings, 200–215 ms + 4 baseline (median 202 ms)`` for one check."""
    errors = r.counts["error"]
    text = f"`{cid}`: {plural(sum(r.counts.values()), 'reading')}" + (f" ({errors} not measured)" if errors else "")
    vals = values_of(run.after, cid)
    if vals and not is_log_count(run.plan, cid):
        text += f", {span(min(vals), max(vals), r.unit)}"
    base = r.by_phase.get("baseline")
    if c.rule.startswith("degradation"):
        b = baseline_of(run.observations, cid)
        pooled = b.pooled if isinstance(b, Base) else None
        text += ("; no baseline" if not base or b is None else
                 f" + {sum(base.values())} baseline (median {format_value(b, r.unit)})" if pooled is None else
                 f" + {sum(base.values())} baseline (p{pooled.quantile * 100:g} of their {pooled.requests:,.0f} "
                 f"requests {format_value(b, r.unit)})")
    if is_log_count(run.plan, cid):  # each series (guard, phases) reads every line once: never their sum
        text += f", {format_value(log_lines(run, cid)[0], 'count')} log lines"
    sampled = sampled_ids([o for o in run.after if o.check_id == cid])
    if sampled is not None:  # "100 % de usuarios": the readings looked up a sample, say how big
        text += f", {sampled[0]:,} sampled ids in all (not every row)"
    return text


def figures(run: Run, c: CriterionResult) -> str:
    """The readings a criterion read, counted as in the per-check table."""
    return "; ".join(_check_figures(run, c, cid, run.results[cid]) for cid in c.checks if cid in run.results)


def _log_count_lines(run: Run) -> list[str]:
    """Log lines matched per ``logs`` check a ``window_count`` criterion reads (plan order)."""
    counted: list[str] = []
    for crit in run.plan.no_go + run.plan.go:
        for cid in crit.checks:
            if crit.rule.kind == "window_count" and is_log_count(run.plan, cid) and cid not in counted:
                counted.append(cid)
    lines = []
    for cid in counted:
        n, readings, failed = log_lines(run, cid)
        note = f"; {plural(failed, 'reading')} failed, so at least this many" if failed else ""
        mark = "✅" if n == 0 and readings and not failed else "❌" if n else "❔"
        lines.append(f"{mark} **{n:,}** log lines matched `{cid}` ({run.plan.check(cid).title}) in "
                     f"{plural(readings, 'reading')} after the migration{note}")
    return lines


def _go_line(run: Run, c: CriterionResult) -> str:
    if unjudged(run, c):
        return (f"{MARK['not_measured']} {c.text}: not met, not judged: the soak stopped at {run.stop_where} "
                f"first ({figures(run, c)})")
    return f"{MARK[c.outcome]} {c.text}: {OUTCOME_WORDS[c.outcome]} ({figures(run, c)}){_in_part(c)}"


def _in_part(c: CriterionResult) -> str:
    """``; read in part: <check>: <readings whose windows cover ...>`` for a met / clear
    criterion whose readings of a fixed window left soak hours unread ("" otherwise)."""
    return f"; read in part: {'; '.join(c.unread)}" if c.outcome in ("met", "clear") and c.unread else ""


def _no_go_total(run: Run) -> str:
    breached = run.breached()
    total = sum(1 for c in run.verdict.criteria if c.kind == "no_go")
    unjudged = [c for c in run.verdict.criteria if c.kind == "no_go" and c.outcome == "not_judged"]
    mark = "❌" if breached else MARK["not_judged"] if unjudged else "✅"
    partly = [c for c in run.verdict.criteria if c.kind == "no_go" and c.outcome == "clear" and c.unread]
    return (f"{mark} NO-GO criteria breached: {len(breached)} of {total}"
            + (": " + ", ".join(f"`{c.id}`" for c in breached) if breached else "")
            + (f"; not judged: {len(unjudged)} (" + ", ".join(f"`{c.id}`" for c in unjudged) + ")" if unjudged else "")
            + "".join(f"; `{c.id}` clear{_in_part(c)}" for c in partly))


def results(run: Run) -> list[str]:
    """The seed's "Resultados" list: log lines counted, each GO criterion with figures, the
    NO-GO criteria breached, the human gates."""
    return (_log_count_lines(run)
            + [_go_line(run, c) for c in run.verdict.criteria if c.kind == "go"]
            + [_no_go_total(run)]
            + [f"{gate_mark(run)} {g.text}: {gate_state(run)}" for g in run.plan.human_gates])


# --- final metrics ---------------------------------------------------------------------------------


def _reading_totals(run: Run) -> str:
    obs, after = run.observations, run.after
    base = sum(1 for o in obs if o.phase == "baseline")
    guard = sum(1 for o in after if o.phase == "guard")
    errors = sum(1 for o in obs if o.status == "error")
    return (f"Readings recorded: {len(obs)}: {len(after)} after the migration ({len(after) - guard} scheduled, "
            f"{guard} guard) + {base} baseline; {errors} could not be measured (error)")


def counted_readings(after: list[Observation], check_id: str) -> list[Observation]:
    """``check_id``'s readings in ``after`` that carry counts (``evidence``
    ``denominator``/``numerator`` of a ``counter_ratio``), in one series: the guard's
    readings and the phases' each count every request once (each starts where its own
    series last read), so the one that saw more is taken, never both; readings that count
    a window of wall time only where the windows do not overlap (``rules.disjoint_windows``)."""
    best: tuple[float, list[Observation]] = (0.0, [])
    for guard in (True, False):
        counted = [o for o in disjoint_windows([o for o in after if o.check_id == check_id
                                                and (o.phase == "guard") == guard])
                   if "denominator" in (o.evidence or {})]
        total = sum(float(o.evidence["denominator"]) for o in counted)
        if total > best[0]:
            best = (total, counted)
    return best[1]


def counted_requests(after: list[Observation], check_id: str) -> tuple[float, float, int]:
    """(requests, failed, readings) summed over :func:`counted_readings`."""
    counted = counted_readings(after, check_id)
    total = sum(float(o.evidence["denominator"]) for o in counted)
    failed = sum(float(o.evidence["numerator"]) for o in counted) if total else 0.0
    return total, failed, len(counted)


def request_lines(run: Run, seen: str, with_readings: bool = True) -> list[str]:
    """One line per plan ``report.requests`` entry with counted requests, e.g.
    ``Authentication requests seen after the migration: 10,000, 20 answered 5xx (0.2%),
    over 4 readings``; ``seen`` says when (``after the migration``). The report's final
    metrics use it; the post-mortem's impact names the span counted instead
    (``report_postmortem._requests_impact``). With ``with_readings``, the requests before
    the first reading's window are named as not counted, as the post-mortem names them (when
    every window's start is known): a series' first window starts at a page scraped after the
    migration, after the verification and hour 0's wait, so "seen after the migration: 5,243,
    0 answered 5xx" left out the first seconds of the migrated schema (the legacy-code demo's
    first 2 s, where 5 of its 9 failed logins were)."""
    from migration_soak.report_postmortem import _went_live, _window

    went_live = _went_live(run) if with_readings else None
    lines = []
    for headline in run.plan.report.requests:
        counted = counted_readings(run.after, headline.check)
        total = sum(float(o.evidence["denominator"]) for o in counted)
        if total:
            failed = sum(float(o.evidence["numerator"]) for o in counted)
            starts = [_window(o)[0] for o in counted]
            first = min(s for s in starts if s is not None) if all(s is not None for s in starts) else None
            head = (f"; not counted: the requests from {when(went_live[0])}{went_live[1]} until {when(first)}, "
                    f"{duration((first - went_live[0]).total_seconds())}: the first reading's window starts there"
                    if first is not None and went_live is not None and first > went_live[0] else "")
            lines.append(f"{headline.label} seen {seen}: {total:,.0f}, {failed:,.0f} {headline.failed} "
                         f"({format_value(failed / total, 'ratio')})"
                         + (f", over {plural(len(counted), 'reading')}" if with_readings else "") + head)
    return lines


def _noise_floors(plan: Plan) -> dict[str, BaselineRule]:
    """Per check a ``baseline`` rule reads: that rule with the check's largest ``min_delta``
    and the ``window_minutes`` of the last such rule."""
    rules: dict[str, BaselineRule] = {}
    for crit in plan.go + plan.no_go:
        if isinstance(crit.rule, BaselineRule):
            for cid in crit.checks:
                floor = max(rules[cid].floor(cid) if cid in rules else 0.0, crit.rule.floor(cid))
                rules[cid] = crit.rule.model_copy(update={"min_delta": floor})
    return rules


def _recent_vs_baseline(r: CheckResult, mine: list[Observation], b: float, rule: BaselineRule) -> str:
    """What the relative rules compared last: ``; p95 of the last 60 soak minutes' 6,000
    requests (histogram buckets pooled) 212 ms: +10.6 ms (+5.26%) vs baseline, beyond the
    baseline's 100 ms to 200 ms bucket`` or, for readings without histograms, ``; median
    of the last 60 soak minutes' 61 readings 212 ms: ...`` (``mine``: measured readings on
    the soak clock, in schedule order)."""
    kind = Baseline(rule)
    floor, window = rule.floor(r.check_id), kind.window(mine, b)
    stretch = kind.stretch_note(mine, b)
    latest = kind.latest_window(mine, b)
    if latest is not None:
        p = latest
        what = (f"{_quantile_word(mine)} of the {p.requests:,.0f} requests counted by the last {window:g} soak "
                f"minutes' {plural(p.readings, 'reading')}{' but its slowest' + dropped_note(p, r.unit) if p.trimmed else ''} (histogram "
                f"buckets pooled; 95 % limits {limits_range(p, r.unit)}{stretch})")
        m = p.value
    else:
        last = mine[-1]
        recent = [o.value for o in mine if o.value is not None and 0 <= soak_minutes(o, last) <= window]
        m = statistics.median(recent)
        what = (f"median of the last {window:g} soak minutes' {plural(len(recent), 'reading')}"
                + (f" ({stretch[2:]})" if stretch else ""))
    delta = m - b
    notes = []
    if latest is not None and isinstance(b, Base) and b.pooled is not None:
        lo, hi = b.pooled.bucket
        shown = Baseline._change(latest, b, floor)
        notes.append(f"change shown at 95 %: {format_change(shown)}" if shown else
                     f"no change shown at 95 % out of the baseline's {format_value(lo, r.unit)} to "
                     f"{format_value(hi, r.unit)} bucket")
    if floor:
        notes.append(f"{'within' if abs(delta) < floor else 'beyond'} the {format_value(floor, r.unit)} noise floor")
    return (f"; {what} {format_value(m, r.unit)}: {'+' if delta > 0 else ''}{format_value(delta, r.unit)}"
            + (f" ({format_change(delta / b)})" if b else "") + " vs baseline"
            + "".join(f", {n}" for n in notes))


def _quantile_word(mine: list[Observation]) -> str:
    q = (mine[-1].evidence or {}).get("quantile") if mine else None
    return f"p{float(q) * 100:g}" if isinstance(q, (int, float)) else "quantile"


def _baseline_line(run: Run, cid: str, rule: BaselineRule) -> str | None:
    """One baseline-compared check: its range, last value, the baseline as the relative rules
    compare with it (the baseline's requests pooled, or its readings' median) and the last
    window as they read it."""
    r = run.results.get(cid)
    start = run.clock0 or run.verified
    scale = run.time_scale
    clocked = [o if o.soak_s is not None or start is None or not scale else o.on_clock(RunClock(start, scale))
               for o in run.observations if o.check_id == cid]
    mine = sorted((o for o in clocked if o.phase != "baseline" and o.value is not None and o.status != "error"),
                  key=lambda o: o.scheduled_at)
    if r is None or not mine:
        return None
    vals = [o.value for o in mine if o.value is not None]
    text = (f"{r.title}: {plural(len(vals), 'reading')}, {span(min(vals), max(vals), r.unit)}, "
            f"last {format_value(vals[-1], r.unit)}")
    b = baseline_of(clocked, cid)
    if b is None:
        return text + "; no baseline measured"
    text += f"; {Baseline(rule).base_text(b, r.unit)}, measured before the migration"
    if scale and all(o.soak_s is not None for o in mine):  # soak minutes need the clock's speed
        text += _recent_vs_baseline(r, mine, b, rule)
    return text


def _first_last_lines(run: Run) -> list[str]:
    """First, last and range of the checks the plan's ``report.trends`` names (watched for drift)."""
    lines = []
    for trend in run.plan.report.trends:
        cid, label = trend.check, trend.label or run.plan.check(trend.check).title
        r = run.results.get(cid)
        vals = [o.value for o in sorted(run.after, key=lambda o: o.scheduled_at)
                if o.check_id == cid and o.value is not None and o.status != "error"]
        if r and vals:
            lines.append(f"{label}: first {format_value(vals[0], r.unit)}, last {format_value(vals[-1], r.unit)}, "
                         f"range {span(min(vals), max(vals), r.unit)} ({plural(len(vals), 'reading')})")
    return lines


def final_metrics(run: Run) -> list[str]:
    """Totals, the plan's counted requests, baseline-compared checks, drift checks."""
    baseline_lines = [_baseline_line(run, cid, rule) for cid, rule in _noise_floors(run.plan).items()]
    return ([_reading_totals(run)] + request_lines(run, "after the migration") + [line for line in baseline_lines if line]
            + _first_last_lines(run))


# --- backup, migration, lint, rehearsal ------------------------------------------------------------


def backup(run: Run) -> dict[str, Any] | None:
    """The last backup: where, size (MiB), sha256, seconds, and ``topup``: the top-up taken
    just before the migration (``topup.py``), as a phrase ("" when none was recorded), with
    the values it could not keep when the run recorded a ``topup_gap`` (``Run.topup_gap``);
    ``None`` if no backup was recorded."""
    p = run.payload("backup")
    if not p:
        return None
    t = run.payload("topup")
    topup = (f"; just before the migration, the dropped columns of {t.get('rows', 0)} rows written since the backup "
             f"were kept too (top-up read {t.get('taken_at')}, `{t.get('location')}`)" if t else "")
    if run.topup_gap:
        topup += "; " + run.topup_gap
    return {"where": p.get("location") or p.get("path"), "size": format_value(float(p.get("size_bytes") or 0), "bytes"),
            "sha256": p.get("sha256", ""), "seconds": float(p.get("duration_s") or 0), "topup": topup}


def migration(run: Run) -> str | None:
    """What the migration applied and when it was verified; ``None``: not applied. A
    ``migrate`` run again after its DDL (cleared in the UI) records "nothing pending"
    last: the line names what the run applied, from the last event that applied any."""
    found = [e["payload"] for e in run.events if e["kind"] == "migrate" and e.get("payload")]
    if not found:
        return None
    p = next((q for q in reversed(found) if q.get("applied")), found[-1])
    text = ", ".join(f"`{m}` applied" for m in p.get("applied", [])) or "nothing pending"
    if run.verified:
        text += f"; verified {when(run.verified)} (hour 0)"
    return text


def rehearsal(run: Run) -> str:
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


# --- the per-check table and the criteria table -----------------------------------------------------


def _phase_cell(run: Run, cid: str, r: CheckResult, check: Check | None, phase: str) -> str:
    """One table cell: ``8 (8/0/0/0) 12–15 ms``, ``not reached``, ``0 (missing)`` or ``·``."""
    by_status = r.by_phase.get(phase)
    if by_status:
        vals = [o.value for o in run.observations if o.check_id == cid and o.phase == phase and o.value is not None]
        return count_text(by_status) + (f" {span(min(vals), max(vals), r.unit)}" if vals else "")
    if check is not None and scheduled_in(run.plan, cid, phase):
        return "not reached" if run.stop else "0 (missing)"
    return "·"


def _beyond_level(r: CheckResult) -> bool:
    """Readings beyond the check's own NO-GO level that decided no NO-GO (report_checks.fail_detail)."""
    return r.outcome == "breached" and not r.detail.startswith("decided NO-GO")


def _outcome_cell(run: Run, cid: str, r: CheckResult) -> str:
    if r.outcome == "not_measured":
        return f"{MARK[r.outcome]} {r.detail}"
    if _beyond_level(r):  # "❌ breached" beside "NO-GO criteria breached: 0 of 8" (the noisy demo) read as a NO-GO
        return f"{MARK[r.outcome]} beyond its NO-GO level{_not_breached_by(run, cid)}"
    outcome = f"{MARK[r.outcome]} {OUTCOME_WORDS[r.outcome]}"
    if r.outcome == "breached":
        outcome += " (decided NO-GO)"
    if r.outcome == "met" and r.unread:  # windows that left soak hours unread (judge.window_coverage)
        outcome += f" on {r.unread}"
    return outcome


def rows(run: Run) -> list[dict]:
    """The per-check table: one cell per phase, baseline and guard in their own columns."""
    after_phases = [p for p in run.phases if p != "baseline"]
    out = []
    for cid, r in run.results.items():
        check = next((c for c in run.plan.checks if c.id == cid), None)
        out.append({
            "id": cid, "title": check.title if check else r.title, "unit": unit_name(r.unit),
            "expect": format_condition(check.expect, r.unit) if check else "-",
            "no_go": format_condition(check.no_go, r.unit) if check and check.no_go else "-",
            "cells": [_phase_cell(run, cid, r, check, p) for p in run.phases],
            "total": count_text(counts(r.by_phase, after_phases)), "outcome": _outcome_cell(run, cid, r),
        })
    return out


def criteria(run: Run) -> list[dict]:
    """The criteria tables' rows: mark, outcome words, the readings' figures, the rule."""
    out = []
    for c in run.verdict.criteria:
        skipped = unjudged(run, c)
        out.append({"mark": MARK["not_measured"] if skipped else MARK[c.outcome],
                    "outcome": "not met (soak stopped first)" if skipped else OUTCOME_WORDS[c.outcome],
                    "figures": figures(run, c), "rule": rule_of(run.plan, c), "c": c})
    return out


def check_lines(run: Run, charts: dict[str, str]) -> list[str]:
    """One line per check: outcome, detail, the rule's source, its chart (relative link)."""
    lines = []
    for cid, r in run.results.items():
        link = f" Chart: [{cid}.png]({charts[cid]})" if cid in charts else ""
        detail = r.detail + (_not_breached_by(run, cid) if _beyond_level(r) else "")
        lines.append(f"**`{cid}`** {r.title}: {MARK[r.outcome]} {detail}. Source of the rule: {r.rule}.{link}")
    return lines


# --- incidents, alerts, the stop -----------------------------------------------------------------------

IncidentKey = tuple[str, str, str, str]  # check id, phase, status (fail/error), error message


def _incident_groups(run: Run) -> dict[IncidentKey, list[Observation]]:
    """``fail`` and ``error`` readings grouped by check, phase, status and error message
    (its timestamps left out: ``judge.drop_times``)."""
    groups: dict[IncidentKey, list[Observation]] = {}
    for o in sorted(run.observations, key=lambda o: (o.scheduled_at, o.check_id)):
        if o.status == "fail":
            key = (o.check_id, o.phase, "fail", "")
        elif o.status == "error":
            # without its timestamps: each missed tick's message holds its own, and 40 missed
            # ticks were 40 lines of "(1 reading, ...)"; the line says the first and last time
            key = (o.check_id, o.phase, "error", drop_times(str(o.evidence.get("error", "no reason recorded")))[:200])
        else:
            continue
        groups.setdefault(key, []).append(o)
    return groups


def _beyond_no_go(run: Run, cid: str, unit: str, obs: list[Observation]) -> str:
    """What ``fail`` readings were, and the NO-GO criteria that read them without breaching."""
    vals = [o.value for o in obs if o.value is not None]
    check = next((c for c in run.plan.checks if c.id == cid), None)
    level = f" (NO-GO level {format_condition(check.no_go, unit)})" if check and check.no_go else ""
    what = f"beyond the NO-GO level: {span(min(vals), max(vals), unit)}{level}"
    return what + _not_breached_by(run, cid)


def _not_breached_by(run: Run, cid: str) -> str:
    """``; no NO-GO criterion breached by them (...)`` when NO-GO criteria read ``cid`` and
    none was breached by its readings; else ""."""
    judged = [c for c in run.verdict.criteria if c.kind == "no_go" and cid in c.checks]
    if not judged or any(c.outcome == "breached" and cid in {deciding_check(c, d) for d in c.deciding}
                         for c in judged):
        return ""
    return "; no NO-GO criterion breached by them (" + ", ".join(
        f"`{c.id}` {OUTCOME_WORDS[c.outcome]}" for c in judged) + ")"


def _incident_line(run: Run, key: IncidentKey, obs: list[Observation]) -> str:
    cid, phase, status, message = key
    t0, t1 = min(o.measured_at for o in obs), max(o.measured_at for o in obs)
    times = when(t0) if t0 == t1 else f"{when(t0)} to {t1:%H:%M:%S} UTC"
    many = "s" if len(obs) > 1 else ""
    what = _beyond_no_go(run, cid, obs[0].unit, obs) if status == "fail" else f"not measured: {mask(message)}"
    return (f"`{cid}` {phase} tick{many} {ticks([o.tick for o in obs])} ({len(obs)} reading{many}, {times}): "
            f"{what}")


def incidents(run: Run) -> list[str]:
    """Every ``fail`` and ``error`` reading, grouped by check, phase and message, first first."""
    groups = sorted(_incident_groups(run).items(), key=lambda kv: kv[1][0].measured_at)
    return [_incident_line(run, key, obs) for key, obs in groups]


def no_incidents(run: Run) -> str:
    """The incidents list's one line when it is empty: ``none``, or under a NO-GO decided by a
    criterion's rule on readings within their checks' own levels (a degradation, a growth, a
    count in a window), what that "none" does not mean: a NO-GO stop right above a bare
    "none" read as a contradiction."""
    breached = run.breached()
    if not breached:
        return "none"
    rules = ", ".join(f"`{c.id}` ({rule_of(run.plan, c)})" for c in breached)
    return ("none: every reading was measured and none was beyond its check's own NO-GO level; the NO-GO above was "
            f"decided by the rule of {rules}, not by such a level")


def alerts(run: Run) -> list[str]:
    """``<time>: <alert id>: <masked text>`` per alert, at its first ``alert`` event, then
    whether Slack got it when the events say: `` (team notified)``, `` (Slack notification
    FAILED)``; an alert posted again after refusals (observe.ALERT_TRIES) is one line:
    `` (Slack refused 2 posts; team notified at <time>)`` or `` (Slack notification FAILED,
    3 posts)``."""
    posts: dict[str, list[dict]] = {}
    for e in run.events:
        if e["kind"] == "alert":
            posts.setdefault(str(e["payload"].get("alert", "")), []).append(e)
    lines = []
    for alert, tries in posts.items():
        first = tries[0]
        said = notified(first["payload"])
        if len(tries) > 1:
            refused = sum(1 for e in tries if e["payload"].get("notified") is False)
            accepted = next((e for e in tries if e["payload"].get("notified") is True), None)
            said = (f"Slack refused {refused} post{'s' if refused != 1 else ''}; team notified at "
                    f"{when(accepted['at'])}" if accepted else f"Slack notification FAILED, {len(tries)} posts")
        lines.append(f"{when(first['at'])}: {alert}: {mask(str(first['payload'].get('text', '')))}"
                     + (f" ({said})" if said else ""))
    return lines


def stop(run: Run) -> str | None:
    """``<time>: <masked text>`` of the NO-GO stop; ``None`` if the soak was not stopped."""
    if not run.stop:
        return None
    return f"{when(run.stop['at'])}: {mask(str(run.stop['payload'].get('text', '')))}"


# --- the rollback ------------------------------------------------------------------------------------


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def rollback_state(run: Run) -> str:
    """Rolled back, under way (last step), or decided and not started."""
    done, started = run.first("rollback_completed"), run.first("rollback_started")
    if done:
        return f"rolled back (completed {when(done['at'])})"
    if started:
        steps = run.rollback_events()
        return (f"rollback under way when this was written (started {when(started['at'])}, last step: "
                f"{_lower_first(label(steps[-1]))} at {when(steps[-1]['at'])})")
    return "rollback decided, not started when this was written"


def rollback_lines(run: Run) -> list[str]:
    """``<time>: <label>: <masked text>`` per rollback event."""
    lines = []
    for e in run.rollback_events():
        name = LABELS["rollback_restart"] if e["kind"] == "restart" else label(e)
        text = mask(str(e["payload"].get("text", "")))
        lines.append(f"{when(e['at'])}: {name}" + (f": {text}" if text else ""))
    return lines


def rollback_duration(run: Run) -> str | None:
    """Wall time from the rollback's start to its completion (or its last step); ``None``: not started."""
    started, done = run.first("rollback_started"), run.first("rollback_completed")
    if not started:
        return None
    if done:
        return f"{duration((done['at'] - started['at']).total_seconds())} (rollback started to rollback completed)"
    steps = run.rollback_events()
    health = next((e for e in reversed(steps) if e["kind"] == "health"), None)
    if health is not None and health["payload"].get("ok") is True:
        # Runbook "Rollback", step 5 passed: what is left is step 6, the post-mortem, which
        # records rollback_completed once it is written (so it never reads it itself).
        return (f"{duration((health['at'] - started['at']).total_seconds())} to the post-rollback health check "
                "passing (steps 1-5 done; step 6, the post-mortem, is written last)")
    if len(steps) == 1:
        return "not completed when this was written (only its start is recorded)"
    return (f"not completed when this was written; {duration((steps[-1]['at'] - started['at']).total_seconds())} "
            f"from its start to the last recorded step")


# --- chart marks ------------------------------------------------------------------------------------

#: Per check: the (phase, tick, label) readings that decided a NO-GO.
DecidingMarks = dict[str, list[tuple[str, int, str]]]


def _derived_label(run: Run, c: CriterionResult, d: dict) -> str:
    """The derived figure of a deciding reading as its chart labels it (``+48% vs baseline``)."""
    if "derived" not in d:
        return ""
    if c.rule.startswith("degradation"):
        return _degradation(run, c, d, short=True)
    if c.rule.startswith("growth"):
        return f"{format_change(d['derived'])} growth"
    if c.rule.startswith("count"):
        return f"{format_value(d['derived'], 'count')} in the window"
    return ""


def _stop_hours(run: Run) -> float | None:
    """Soak hour of the stop (0 when the soak clock never started); ``None``: not stopped or unknown."""
    if not run.stop:
        return None
    if run.clock0 is None or run.stop_where and run.stop_where.startswith("hour0"):
        return 0.0
    if run.time_scale:
        return max(0.0, (run.stop["at"] - run.clock0).total_seconds() * run.time_scale / 3600)
    return None


def chart_marks(run: Run) -> tuple[DecidingMarks, float | None, str]:
    """Deciding readings per check, and the stop's soak hour and label for the charts."""
    marks: DecidingMarks = {}
    for c in run.breached():
        if c.deciding:
            d = c.deciding[-1]
            marks.setdefault(deciding_check(c, d), []).append((d["phase"], d["tick"], _derived_label(run, c, d)))
    label = ""
    if run.stop:
        label = "NO-GO stop" + (", then rollback" if run.first("rollback_started") else "")
    return marks, _stop_hours(run), label

