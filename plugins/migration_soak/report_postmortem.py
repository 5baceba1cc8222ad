"""The post-mortem's sections, one builder each, in the order ``postmortem.md.j2`` shows them.

Each builder reads a :class:`~migration_soak.report_run.Run` whose ``time_scale`` is the
clock speed :func:`infer_scale` read back from the readings' schedule (``None``: unknown).
Durations are wall time; times UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from migration_soak.judge import plural
from migration_soak.report_run import Run, deciding_check, is_log_count, log_lines
from migration_soak.judge import format_value
from migration_soak.report_sections import counted_readings, deciding, gate_state, reading, rollback_duration
from migration_soak.report_text import LABELS, UTC, duration, label, mask, soak_clock, utc, when, who
from migration_soak.rollback import restore_summary


def _scale_from_baseline(run: Run) -> float | None:
    """Clock speed from the first baseline reading after the baseline's start (``baseline_start``)."""
    start = run.first("baseline_start")
    origin = (utc(start["payload"].get("at")) or start["at"]) if start else None
    if not origin or not run.plan.baseline:
        return None
    for o in run.observations:
        wall = (o.scheduled_at - origin).total_seconds()
        if o.phase == "baseline" and wall > 0:
            return round(o.tick * run.plan.baseline.every_minutes * 60 / wall, 3)
    return None


def _scale_from_phases(run: Run) -> float | None:
    """Clock speed from the first phase reading after the soak clock's hour 0."""
    if run.clock0 is None:
        return None
    names = [p.name for p in run.plan.phases]
    for o in run.after:
        if o.phase in names:
            offsets = run.plan.phase(o.phase).tick_offsets()
            wall = (o.scheduled_at - run.clock0).total_seconds()
            if 0 < o.tick <= len(offsets) and wall > 0:
                return round(offsets[o.tick - 1].total_seconds() / wall, 3)
    return None


def infer_scale(run: Run) -> float | None:
    """The clock's speed from a reading's schedule (soak offset / wall offset): a baseline
    reading from the baseline's start, else a phase reading from the soak clock's hour 0."""
    scale = _scale_from_baseline(run)
    return scale if scale is not None else _scale_from_phases(run)


def day(run: Run) -> datetime:
    """The incident's date: the stop, else the rollback's start, else the decision, else now."""
    return (run.stop or run.first("rollback_started") or run.decision or {"at": datetime.now(UTC)})["at"]


# --- why ----------------------------------------------------------------------------------------------


def _cause(run: Run) -> str | None:
    """What decided the final decision when it was not the judge's verdict alone: a QA
    sign-off rejected or timed out, a person's or the policy's choice, a decision that
    differs from the verdict (the post-mortem's "Why" and the report's "What decided it")."""
    p = (run.decision or {}).get("payload") or {}
    final = (f": the final decision is {str(p.get('outcome')).replace('_', '-')}, {p.get('action')}"
             if p else "")
    state = ((run.sign_off or {}).get("payload") or {}).get("state")
    if state in ("rejected", "timed_out"):
        return f"❌ The QA sign-off {'was ' if state == 'rejected' else ''}{gate_state(run)}{final}"
    if p and (p.get("outcome") != run.verdict.decision or (p.get("by") != "judge" and state != "approved")):
        # a person's GO over another verdict is ⚠️ (the report's "What decided it"), an INCONCLUSIVE ❔
        mark = {"GO": "⚠️", "INCONCLUSIVE": "❔"}.get(str(p.get("outcome")), "❌")
        reason = str(p.get("reason", ""))
        judged = "; ".join(run.verdict.reasons)
        if judged and reason.endswith(f": {judged}"):  # the judge's reasons follow, once (deciding)
            reason = reason.removesuffix(f": {judged}")
        return (f"{mark} {str(p.get('outcome')).replace('_', '-')}, {p.get('action')}, decided by {who(p.get('by'))}: "
                f"{reason}")
    return None


def why(run: Run) -> list[str]:
    """The post-mortem's "Why" and the report's "What decided it": what decided the final
    decision first when not the judge's verdict alone (:func:`_cause`), then what decided
    the judge's verdict (``report_sections.deciding``)."""
    cause = _cause(run)
    judged = deciding(run)
    if cause is None:
        return judged
    return [cause, f"The judge's verdict was {run.verdict.decision.replace('_', '-')}; what decided it follows"] + judged


# --- durations -------------------------------------------------------------------------------------


def _deciding_reading(run: Run):
    """The stored reading that stopped the soak (the stop criterion's last deciding entry), or None."""
    c = run.stop_criterion
    if c is None or not c.deciding:
        return None
    d = c.deciding[-1]
    return run.observation(d, deciding_check(c, d))


def _detection(run: Run, start: datetime) -> list[str]:
    """From the migration verified to the NO-GO (wall), and on the soak clock: the deciding
    reading's soak time (the report's stop point, ``stop_where``), then when the stop was
    recorded, each named; or from the migration verified to the decision."""
    if run.stop:
        lines = [f"Detection: {duration((run.stop['at'] - start).total_seconds())} from the migration "
                 f"verified ({when(start)}) to the NO-GO stop recorded at {when(run.stop['at'])}"]
        if run.clock0:
            wall = (run.stop["at"] - run.clock0).total_seconds()
            recorded = (f"the NO-GO stop was recorded {duration(wall)} of wall time after the soak clock's hour 0 "
                        f"at {when(run.clock0)}"
                        + (f" (soak time {soak_clock(wall * run.time_scale / 3600)} when the stop was recorded)"
                           if run.time_scale and run.time_scale != 1 else ""))
            o = _deciding_reading(run)
            hours = run.soak_hours_of(o) if o is not None else None
            if o is not None and hours is not None:
                lines.append(f"Detection on the soak clock: soak time {soak_clock(hours)} at the deciding reading "
                             f"({run.stop_where}, scheduled {when(o.scheduled_at)}); {recorded}")
            else:
                lines.append(f"Detection on the soak clock: the deciding reading's soak time is unknown; {recorded}")
        return lines
    if run.decision:
        return [f"Decision: {duration((run.decision['at'] - start).total_seconds())} from the migration "
                f"verified to the final decision (no NO-GO stop)"]
    return []


def _total(run: Run, start: datetime) -> list[str]:
    """From the migration verified to the rollback completed (or its last recorded step)."""
    done = run.first("rollback_completed")
    steps = run.rollback_events()
    end = done or (steps[-1] if steps else None)
    if not end:
        return []
    return [f"Total: {duration((end['at'] - start).total_seconds())} from the migration verified "
            f"to {'the rollback completed' if done else 'the last rollback step recorded'}"]


def durations(run: Run) -> list[str]:
    """Detection, rollback and total durations (wall time)."""
    start = run.start
    rb = rollback_duration(run)
    return ((_detection(run, start) if start else [])
            + [f"Rollback: {rb}" if rb else "Rollback: not started when this was written"]
            + (_total(run, start) if start else []))


# --- impact ------------------------------------------------------------------------------------------


def _schema_live(run: Run) -> list[str]:
    """How long the migrated schema was live: from the migration applied (its ``migrate``
    event; the application reads the new schema from then, before hour 0, the migration
    verified) to the rollback; from hour 0 when no ``migrate`` event names what it applied."""
    applied = run.last("migrate")
    since, label = ((applied["at"], " (the migration applied)") if applied and applied["payload"].get("applied")
                    else (run.start, ""))
    live = _live_until(run)
    if not (since and live):
        return []
    until, what = live
    return [f"The migrated schema was live in {run.plan.environment} from {when(since)}{label} until {what} "
            f"({when(until['at'])}): {duration((until['at'] - since).total_seconds())}"]


def _live_until(run: Run) -> tuple[dict, str] | None:
    """Until when the migrated schema was live, and what ended it: the rollback's restore
    (its ``restore`` event: the columns and values back), else the rollback's last step
    recorded; ``None`` before a rollback started."""
    done, started = run.first("rollback_completed"), run.first("rollback_started")
    if not (done or started):
        return None
    restored = run.last("restore") if started else None
    if restored is not None and started is not None and restored["at"] >= started["at"]:
        return restored, "the rollback's restore gave its columns and values back"
    return done or run.rollback_events()[-1], "the rollback"


def _window(o) -> tuple[datetime | None, datetime]:
    """(start, end) of the wall time a counting reading counted: its ``window_from`` (unknown
    without it) to when it scraped (``scraped_at``, else when it was measured)."""
    ev = o.evidence or {}
    return utc(ev.get("window_from")), utc(ev.get("scraped_at")) or o.measured_at


def _requests_impact(run: Run) -> list[str]:
    """The plan's ``report.requests`` counted after the migration, each with the wall time its
    readings' windows spanned, then what they did not count: the readings end at the soak's
    last one (the NO-GO stop), not where the migrated schema stopped being live (the
    restore), so "seen meanwhile" claimed the whole exposure (the legacy-code demo counted
    up to the stop; the restore came minutes later). Readings ending after the restore are
    left out (they count the restored schema's requests). Nor do they start where the
    schema went live: a series' first window starts at a page scraped after the migration
    (``sources.openmetrics``), after the verification and hour 0's wait, so the requests
    before it are named as not counted too (when every window's start is known)."""
    live = _live_until(run)
    after = [o for o in run.after if live is None or _window(o)[1] <= live[0]["at"]]
    applied = run.last("migrate")
    lines: list[str] = []
    ends: list[datetime] = []
    firsts: list[datetime | None] = []
    for headline in run.plan.report.requests:
        counted = counted_readings(after, headline.check)
        total = sum(float(o.evidence["denominator"]) for o in counted)
        if not total:
            continue
        failed = sum(float(o.evidence["numerator"]) for o in counted)
        starts = [_window(o)[0] for o in counted]
        end = max(_window(o)[1] for o in counted)
        ends.append(end)
        first = min(s for s in starts if s is not None) if all(s is not None for s in starts) else None
        firsts.append(first)
        since = (f"from {when(first)}" if first is not None  # a window's start unknown: no start claimed
                 else f"after the migration ({when(applied['at'])}), up" if applied else "after the migration, up")
        lines.append(f"{headline.label} counted {since} to {when(end)} ({plural(len(counted), 'reading')}; "
                     f"{_span_end(run, end)}): {total:,.0f}, {failed:,.0f} {headline.failed} "
                     f"({format_value(failed / total, 'ratio')})")
    went_live = _went_live(run)
    known = [f for f in firsts if f is not None]
    if known and len(known) == len(firsts) and went_live is not None and min(known) > went_live[0]:
        start = min(known)
        lines.append(f"Not counted: the requests from {when(went_live[0])}{went_live[1]} until {when(start)}, "
                     f"{duration((start - went_live[0]).total_seconds())} while the migrated schema was live: the "
                     "first reading's window starts there")
    if ends and live is not None and max(ends) < live[0]["at"]:
        until, what = live
        gap = (until["at"] - max(ends)).total_seconds()
        stop = run.stop["at"] if run.stop else None
        lines.append(f"Not counted: the requests from {when(max(ends))} until {what} ({when(until['at'])}), "
                     f"{duration(gap)} while the migrated schema was still live: "
                     + (f"no reading ended between the NO-GO stop and {when(until['at'])}" if stop is not None
                        and max(ends) <= stop else "the soak's readings end there"))
    return lines


def _went_live(run: Run) -> tuple[datetime, str] | None:
    """When the migrated schema went live, as :func:`_schema_live` says it: the migration
    applied (its ``migrate`` event), else hour 0."""
    applied = run.last("migrate")
    if applied and applied["payload"].get("applied"):
        return applied["at"], " (the migration applied)"
    return (run.start, " (hour 0)") if run.start else None


def _span_end(run: Run, end: datetime) -> str:
    """Where the counted span ends against the NO-GO stop: ``the NO-GO stop recorded at ...``."""
    if run.stop is None:
        return "the soak's last reading"
    return f"the NO-GO stop recorded at {when(run.stop['at'])}"


def _log_impact(run: Run) -> list[str]:
    """Log lines matched per ``logs`` check (checks with none left out)."""
    lines = []
    for cid in [c for c in run.results if is_log_count(run.plan, c)]:
        n, readings, _ = log_lines(run, cid)
        if n:
            lines.append(f"`{cid}` ({run.plan.check(cid).title}): {n:,} log lines in {plural(readings, 'reading')}")
    return lines


def _checks_impact(run: Run) -> list[str]:
    """The checks that decided the NO-GO, then the others outside their range at some reading."""
    decided = sorted({deciding_check(c, d) for c in run.breached() for d in c.deciding})
    bad = sorted({o.check_id for o in run.after if o.status in ("fail", "warn")} - set(decided))
    lines = []
    if decided:
        lines.append("Checks that decided the NO-GO: " + ", ".join(f"`{c}`" for c in decided))
    if bad:
        lines.append("Other checks outside their expected range at some reading: " + ", ".join(f"`{c}`" for c in bad))
    return lines


def _rollback_impact(run: Run) -> list[str]:
    """What the restore put back and whether the health check after it passed."""
    lines = []
    restore = run.payload("restore")
    if restore:
        summary = restore_summary(restore) + (f"; {run.topup_gap}" if run.topup_gap else "")
        lines.append(summary[:1].upper() + summary[1:])
    health = run.payload("health")
    if health:
        lines.append(f"Post-rollback health: {'ok' if health.get('ok') else 'FAILED'}"
                     + (f"; columns back: {', '.join(health['columns_back'])}" if health.get("columns_back") else ""))
        for cid, r in (health.get("read_again") or {}).items():
            if not isinstance(r, dict):
                continue
            if "error" in r:
                lines.append(f"Read again after the rollback: `{cid}` could not be read ({r['error']}): whether what "
                             "decided the NO-GO outlived the rollback is not known")
            elif r.get("still"):
                lines.append(f"Read again after the rollback: `{cid}` {r.get('shown')}, still meets the NO-GO "
                             f"{r.get('no_go')}: what decided the NO-GO outlived the rollback, so the migration may "
                             "not be its cause")
            else:
                lines.append(f"Read again after the rollback: `{cid}` {r.get('shown')}, no longer meets the NO-GO "
                             f"{r.get('no_go')}")
    return lines


def impact(run: Run) -> list[str]:
    """Exposure, requests and log lines seen, the checks involved, the restore and health."""
    return (_schema_live(run) + _requests_impact(run) + _log_impact(run)
            + _checks_impact(run) + _rollback_impact(run))


# --- deciding evidence -------------------------------------------------------------------------------

#: Evidence keys worth quoting next to a deciding reading.
_SHOWN = ("numerator", "denominator", "lines_read", "matches", "error", "query", "metric", "file", "skipped_bytes")


def _deciding_evidence(run: Run) -> tuple[list[str], list[str]]:
    """(log lines, figures) recorded with the stop criterion's deciding readings."""
    samples: list[str] = []
    figures: list[str] = []
    c = run.stop_criterion
    if c is None:
        return samples, figures
    for d in c.deciding:
        cid = deciding_check(c, d)
        o = run.observation(d, cid)
        if o is None:
            continue
        ev = o.evidence or {}
        samples += [f"[{cid} {o.phase} tick {o.tick}] {line}" for line in ev.get("samples") or []]
        shown = {k: v for k, v in ev.items() if k in _SHOWN}
        if shown:
            figures.append(f"`{cid}` {o.phase} tick {o.tick}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    return samples, figures


def _other_log_samples(run: Run) -> list[str]:
    """Log lines of the soak's ``logs`` readings that matched anything, first measured first."""
    samples: list[str] = []
    for o in sorted(run.after, key=lambda o: o.measured_at):
        if is_log_count(run.plan, o.check_id) and o.value:
            samples += [f"[{o.check_id} {o.phase} tick {o.tick}] {line}" for line in (o.evidence or {}).get("samples") or []]
    return samples


def samples_heading(run: Run, shown: int) -> str:
    """The heading over the ``shown`` matching log lines: how many of the lines their readings
    matched they are (a reading keeps at most ``sources.logs.SAMPLES``; the legacy-code demo
    showed 10 lines under a reading of 11 matches as if they were all of them)."""
    c = run.stop_criterion
    found = [run.observation(d, deciding_check(c, d)) for d in c.deciding] if c is not None else []
    readings = [o for o in found if o is not None and (o.evidence or {}).get("samples")]
    if not readings:
        readings = [o for o in run.after if is_log_count(run.plan, o.check_id) and o.value
                    and (o.evidence or {}).get("samples")]
    matched = sum(int((o.evidence or {}).get("matches") or 0) for o in readings)
    if matched > shown:
        return f"Matching log lines ({shown} of the {matched:,} matching lines, as the readings kept them; credentials masked):"
    return "Matching log lines (credentials masked):"


def evidence_lines(run: Run) -> tuple[list[str], list[str]]:
    """(masked log lines, other figures) behind the deciding readings; log lines from the
    soak's other ``logs`` readings when the deciding check is not a log check. At most 10
    lines of at most 400 characters; code fences defused."""
    samples, figures = _deciding_evidence(run)
    if not samples:
        samples = _other_log_samples(run)
    return [mask(s).replace("```", "'''")[:400] for s in samples[:10]], [mask(f) for f in figures]


# --- follow-up ---------------------------------------------------------------------------------------


def follow_up(run: Run) -> list[str]:
    """What is left to do, and the ledger's and Prisma's word on the migration only as the run
    recorded it after the rollback started (the ``ledger`` and ``prisma_status`` events): the
    post-mortem ended "The migration reads as pending in the ledger; `prisma migrate status`
    lists it again." whatever was read, also for a plan without ``migration.prisma_project``,
    where the CLI never runs."""
    started = run.first("rollback_started")
    after = run.events[run.events.index(started) + 1:] if started else []
    name = run.plan.migration.name
    lines = ["Fix the cause named under \"Why\" before scheduling the migration again."]
    ledger = next((e for e in reversed(after) if e["kind"] == "ledger"), None)
    if ledger is not None:
        state = (ledger["payload"].get("migrations") or {}).get(name, "unknown")
        again = ", so a deploy applies it again" if state in ("pending", "rolled_back") else ""  # runbook.APPLICABLE
        lines.append(f"The rollback marked the migration: the ledger reads {name} as {state} (recorded "
                     f"{when(utc(ledger['at']))}){again}.")
    else:
        lines.append(f"No ledger event after the rollback started: check how the ledger reads {name} before "
                     "deploying again.")
    prisma = next((e for e in reversed(after) if e["kind"] == "prisma_status"
                   and e["payload"].get("expect") == "pending"), None)
    if prisma is None:
        why = ("the plan names no migration.prisma_project" if not run.plan.migration.prisma_project
               else "no prisma_status event after the rollback started")
        lines.append(f"`prisma migrate status` was not run after the rollback ({why}): run it in your Prisma project "
                     "before scheduling the migration again.")
    elif prisma["payload"].get("agrees"):
        lines.append(f"`prisma migrate status` lists it as pending again: {mask(str(prisma['payload'].get('text', '')))} "
                     f"({when(utc(prisma['at']))}).")
    else:
        lines.append(f"`prisma migrate status` did not list it as pending: {mask(str(prisma['payload'].get('text', '')))}"
                     f" ({when(utc(prisma['at']))}).")
    return lines


# --- timeline ----------------------------------------------------------------------------------------


def _event_entry(run: Run, pos: int, e: dict, after_start: int) -> dict[str, Any]:
    """One event as a timeline entry: restarts and status checks after the rollback's start say so."""
    name = label(e)
    if e["kind"] in ("restart", "prisma_status") and pos > after_start:
        name = LABELS["rollback_restart"] if e["kind"] == "restart" else "prisma migrate status after the rollback"
    text = mask(str(e["payload"].get("text", "")))
    text = "" if text == e["kind"] else text  # an event whose text is its kind says nothing more
    return {"at": e["at"], "label": name, "text": text[:300] + ("…" if len(text) > 300 else "")}


def timeline(run: Run) -> list[dict[str, Any]]:
    """Every event and the stop's deciding reading, in time order: ``{"at", "label", "text"}``
    with ``at`` as text (``n/a`` for events without a time, listed last)."""
    started = run.first("rollback_started")
    after_start = run.events.index(started) if started else len(run.events)
    entries = [_event_entry(run, pos, e, after_start) for pos, e in enumerate(run.events)]
    c = run.stop_criterion
    if c and c.deciding:
        d = c.deciding[-1]
        at = utc(d.get("measured_at"))
        if at:
            entries.append({"at": at, "label": "Deciding reading",
                            "text": reading(run, c, d, with_time=False).replace("**", "")})
    entries.sort(key=lambda t: t["at"] or datetime.max.replace(tzinfo=UTC))
    return [{**t, "at": when(t["at"])} for t in entries]
