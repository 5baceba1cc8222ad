"""The results report and the post-mortem on synthetic runs of the default plan: a NO-GO
at hour 0, a healthy compressed soak, a real-time GO; every figure must reconcile."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from migration_soak import report
from migration_soak.clock import guard_every
from migration_soak.judge import judge, status_of
from migration_soak.plan import load_plan
from migration_soak.store import Observation, RunClock

PLAN = load_plan("default")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # the migration verified: hour 0
HOUR0_CHECKS = timedelta(seconds=8)  # wall time the Hora 0 checks take before the soak clock starts

GOOD = {
    "users_without_authorizer_id": 0, "deprecated_columns_absent": 0, "auth_query_time": 0.21, "recent_executions": 90,
    "auth_error_rate": 0.0002, "login_p95": 212.4, "verify_p95": 8.3, "connection_usage": 0.12, "db_cpu": 0.2,
    "db_memory": 0.31, "db_disk_io": 0.05, "cache_hit_rate": 0.97, "auth_success_rate": 0.999, "login_p50": 5.2,
    "login_p99": 40.7, "verify_p50": 3.1, "active_sessions": 100, "request_rate": 1200, "login_error_rate": 0,
    "verify_error_rate": 0, "workflow_api_error_rate": 0, "app_memory": 102_236_160.0, "gateway_health": 1,
    "authorizer_health": 1, "total_users": 100_000, "executions_last_hour": 90, "workflow_error_rate": 0.02,
    "critical_errors": 0, "app_log_errors": 0, "deprecated_column_mentions": 0, "undefined_column_errors": 0,
    "null_authorizer_errors": 0, "db_slow_queries": 0, "db_errors": 0, "authorizer_errors": 0, "authorizer_sync": 0,
    "data_loss": 0, "incremental_backup": 1,
}
CRITICAL_LINES = [
    '2026-03-02 09:00:03 ERROR column "passwordHash" does not exist (password=***)',
    '2026-03-02 09:00:04 CRITICAL undefined column users.emailVerified Authorization: Bearer ***',
]


def reading(check_id, phase, tick, at, value, evidence=None, status=None) -> Observation:
    check = PLAN.check(check_id)
    if status is None:
        status = "error" if value is None else status_of(check.expect, check.no_go, value)
    ev = dict(evidence or {})
    if value is None:
        ev.setdefault("error", "connection refused")
    elif check_id == "auth_error_rate":
        ev.setdefault("numerator", round(value * 5000))
        ev.setdefault("denominator", 5000)
    return Observation("run", phase, check_id, tick, at, at + timedelta(seconds=1), value, check.unit, status, ev)


def event(kind_, when, **payload):
    return {"kind": kind_, "at": when, "payload": {"text": payload.pop("text", kind_), **payload}}


def baseline(scale):
    start = T0 - timedelta(minutes=90) / scale
    return [reading(cid, "baseline", k, start + timedelta(minutes=15 * k) / scale, GOOD[cid] * 0.95)
            for cid in PLAN.baseline.checks for k in range(1, 5)]


def early_events(scale):
    return [
        event("preflight", T0 - timedelta(minutes=100) / scale),
        event("baseline_start", T0 - timedelta(minutes=90) / scale, at=(T0 - timedelta(minutes=90) / scale).isoformat()),
        event("backup", T0 - timedelta(seconds=20), size_bytes=7_340_032, sha256="ab" * 32, duration_s=1.7,
              location="file:///backups/pre_run.dump", path=None),
        event("migrate", T0 - timedelta(seconds=5), applied=[PLAN.migration.name]),
        event("verified", T0, at=T0.isoformat()),
        event("restart", T0 + timedelta(seconds=1), status=200, text="applications restarted"),
    ]


def full_soak(scale, values=None):
    """Every scheduled and guard reading of a healthy soak, the baseline, the events."""
    values = {**GOOD, **(values or {})}
    clock0 = T0 + HOUR0_CHECKS
    obs = baseline(scale)
    for phase, cid in PLAN.schedule():
        if phase == "hour0":
            obs.append(reading(cid, "hour0", 0, T0, values[cid]))
            continue
        for k, off in enumerate(PLAN.phase(phase).tick_offsets(), start=1):
            obs.append(reading(cid, phase, k, clock0 + off / scale, values[cid]))
    every = guard_every(PLAN, scale)  # the guard's cadence on this clock: 1 soak-min in real time, 15 at 300
    for k in range(1, int(timedelta(hours=24) / every) + 1):
        for cid in PLAN.guard.checks:
            obs.append(reading(cid, "guard", k, clock0 + every * k / scale, values[cid]))
    events = early_events(scale) + [event("hour0", clock0, hour0=clock0.isoformat())]
    return obs, events


def go_run(scale, sign_off=None, readings=None):
    """A whole soak judged GO (``readings``: a function of the observations applied first),
    the verdict, any ``sign_off`` and the decision recorded."""
    obs, events = full_soak(scale)
    if readings is not None:
        obs = readings(obs)
    verdict = judge(PLAN, [o.on_clock(RunClock(T0 + HOUR0_CHECKS, scale)) for o in obs], scale)
    end = T0 + timedelta(hours=24) / scale + timedelta(seconds=20)
    events.append(event("verdict", end, **verdict.to_dict()))
    if sign_off:
        events.append(event("sign_off", end + timedelta(minutes=5), **sign_off))
    decided = end + timedelta(minutes=6)
    if sign_off and sign_off["state"] != "approved":
        events.append(event("decision", decided, outcome="NO_GO", action="rollback", by=f"person:{sign_off['by']}",
                            reason=f"QA rejected the sign-off: {sign_off['comment']}"))
    else:
        by = f"person:{sign_off['by']}" if sign_off else "judge"
        events.append(event("decision", decided, outcome="GO", action="proceed", by=by,
                            reason="every GO criterion met; no NO-GO criterion breached"))
    return verdict, obs, events


def nogo_hour0_run(scale=300.0):
    """Critical errors in the log right after the migration: NO-GO at hour 0, rolled back."""
    obs = baseline(scale)
    for cid in [c.id for c in PLAN.checks_in("hour0")]:
        value, ev = GOOD[cid], {}
        if cid == "critical_errors":
            value, ev = 13, {"reader": "file", "lines_read": 500, "matches": 13, "samples": CRITICAL_LINES}
        obs.append(reading(cid, "hour0", 0, T0, value, ev))
    obs.append(reading("login_p95", "guard", 1, T0 + timedelta(seconds=3), None))  # in flight when the soak stopped
    verdict = judge(PLAN, [o.on_clock(RunClock(T0, scale)) for o in obs])  # no hour 0: the clock from `verified`
    stop = T0 + timedelta(seconds=6)
    t = stop + timedelta(seconds=2)
    events = early_events(scale) + [
        event("no_go", stop, criterion="no_go_critical_errors_per_hour", detail="critical_errors: 13",
              text="NO-GO: no_go_critical_errors_per_hour"),
        event("verdict", t, **verdict.to_dict()),
        event("decision", t + timedelta(seconds=1), outcome="NO_GO", action="rollback", by="judge",
              reason="a NO-GO criterion was breached"),
        event("rollback_started", t + timedelta(seconds=2), text="ROLLBACK INITIATED - Reason: NO_GO"),
        event("restore", t + timedelta(seconds=9), table="public.users", values_restored=200_000,
              rows_matched=100_000, rows_at_backup=100_000, mismatches=0,
              text="restored 200000 values for 100000 of 100000 rows of users"),
        event("ledger", t + timedelta(seconds=10), migrations={PLAN.migration.name: "rolled_back"},
              text=f"{PLAN.migration.name} is rolled_back again"),
        event("prisma_status", t + timedelta(seconds=12), expect="pending", agrees=True, kind="pending",
              text="after the rollback, prisma migrate status says pending"),
        event("rollback_restart", t + timedelta(seconds=13), status=200, text="applications restarted after rollback"),
        event("health", t + timedelta(seconds=15), ok=True, columns_back=["emailVerified", "passwordHash"],
              text="post-rollback health ok"),
    ]
    return verdict, obs, events


def table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """(header cells, {check id: cells}) of the per-check table."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("| check |"))
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = {}
    for line in lines[i + 2:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows[re.match(r"`(\w+)`", cells[0]).group(1)] = cells
    return header, rows


def n(cell: str) -> int:
    """Readings in a table cell (``8 (8/0/0/0) ...``); 0 for ``·`` / ``not reached``."""
    m = re.match(r"(\d+) \((\d+)/(\d+)/(\d+)/(\d+)\)", cell)
    return int(m.group(1)) if m else 0


def bad(cell: str) -> int:
    m = re.match(r"(\d+) \((\d+)/(\d+)/(\d+)/(\d+)\)", cell)
    return int(m.group(4)) + int(m.group(5)) if m else 0


# --- NO-GO at hour 0 ------------------------------------------------------------------------------

def test_nogo_at_hour0_says_not_measured_never_met_and_the_real_period():
    verdict, obs, events = nogo_hour0_run()
    assert verdict.decision == "NO_GO"
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    header, rows = table(text)
    unmeasured = [cid for cid in rows if not any(o.check_id == cid and o.phase != "baseline" for o in obs)]
    assert len(unmeasured) > 20
    for cid in unmeasured:
        assert rows[cid][-1].endswith("not measured (soak stopped at hour0 tick 0)"), rows[cid]
        assert "met" not in rows[cid][-1].replace("not measured", "")
    assert not re.search(r"✅ met", text)
    assert "coverage 0%" not in text and "-0.0 min" not in text
    assert "2026-03-02 09:00:00 UTC to 2026-03-02 09:00:06 UTC: 6 s of wall time" in text
    assert "The soak clock never started: the soak stopped during the Hora 0 checks (hour0 tick 0)" in text
    # the deciding reading is named, with its rule and time, and the log lines are counted
    assert "`critical_errors` = **13** at hour0 tick 0, 2026-03-02 09:00:01 UTC" in text
    assert "count > 5 in any 60 min" in text
    assert "**13** log lines matched `critical_errors`" in text
    assert "critical errors (NO-GO breaches)" not in text
    assert rows["critical_errors"][-1] == "❌ breached (decided NO-GO)"
    assert "- [ ] Run" in text and "- [x]" not in text
    # on a compressed clock the GO table does not read as a production go-ahead
    assert "**GO criteria (on this clock: demonstration only, not for production)**" in text
    assert "proceed to production" not in text
    assert "**GO: proceed to production if**" in report.render_report(PLAN, "run", verdict, obs, events, 1.0)


def test_rollback_section_lists_rollback_events_only():
    verdict, obs, events = nogo_hour0_run()
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    section = text.split("## Rollback", 1)[1].split("**Decision:**")[0]
    items = [line for line in section.splitlines() if line.startswith("- ")]
    assert items[0].startswith("- 2026-03-02 09:00:10 UTC: Rollback started")
    assert len(items) == 6 and "Hora 0" not in section and "applications restarted\n" not in section
    assert "Applications restarted after the rollback" in section
    # no rollback_completed yet, but the health check (step 5) passed: only the post-mortem is left
    assert "13 s to the post-rollback health check passing (steps 1-5 done" in section
    assert "**Decision:** ❌ NO-GO: not approved; rollback under way" in text


# --- compressed clock, approvals, human gates ------------------------------------------------------

def test_compressed_go_has_the_banner_and_never_says_approved():
    verdict, obs, events = go_run(300.0)
    assert verdict.decision == "GO", verdict.reasons
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    assert text.splitlines()[2].startswith("> ⚠️ **compressed clock (24 h in 4.8 min): demonstration evidence, "
                                           "not a 24-hour soak.**")
    assert "approved to proceed to production" not in text.lower()
    assert "- [ ] Run `20251202020032_update_user_schema_final` in staging with 24 hours of monitoring: not done " \
           "(compressed clock, time_scale 300)" in text
    assert "Equipo de QA aprueba testing manual: not asked" in text
    assert "**Final decision:** **GO**, action **proceed**, decided by the judge" in text
    # the guard read every 15 soak-min: the 5- and 10-minute windows were not judged, and say so
    assert "✅ every GO criterion met and no NO-GO criterion breached (14 of 16 criteria judged)" in text
    assert ("- ❔ `no_go_db_cpu` \"Database CPU > 90% sostenido por > 10 minutos\": not judged: db_cpu: 110 "
            "readings, typically 15 soak-min apart: readings at most 5 min apart (what a 10-min window needs) cover 0 "
            "of 1,440 soak-min: not holding this compressed clock's GO back") in text
    assert "- ❔ NO-GO criteria breached: 0 of 8; not judged: 2 (`no_go_auth_error_rate`, `no_go_db_cpu`)" in text
    row = next(line for line in text.splitlines() if line.startswith("| ") and "`no_go_auth_error_rate`" in line)
    assert row.startswith("| ❔ |") and "| not judged |" in row


def test_real_time_go_judges_every_no_go_criterion():
    """The guard every soak-minute covers every sustained window: nothing is left unjudged."""
    verdict, obs, events = go_run(1.0)
    assert verdict.decision == "GO" and verdict.reasons == ["all 8 GO criteria met; no NO-GO criterion breached"]
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    assert "not judged" not in text and "✅ NO-GO criteria breached: 0 of 8" in text


def test_real_time_go_may_say_approved_and_names_the_sign_off():
    sign = {"state": "approved", "by": "alice", "comment": "manual tests pass"}
    verdict, obs, events = go_run(1.0, sign_off=sign)
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    assert "compressed clock" not in text
    assert "**Decision:** ✅ APPROVED to proceed to production" in text
    assert "- [x] Run `20251202020032_update_user_schema_final` in staging with 24 hours of monitoring" in text
    assert 'Equipo de QA aprueba testing manual: approved by alice at 2026-03-03 09:05:20 UTC ("manual tests pass")' in text
    assert "24:00 of 24 h" in text


def test_a_rejected_sign_off_is_shown_and_is_no_approval():
    sign = {"state": "rejected", "by": "bob", "comment": "login page broken"}
    verdict, obs, events = go_run(1.0, sign_off=sign)
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    assert 'rejected by bob at 2026-03-03 09:05:20 UTC ("login page broken")' in text
    assert "approved to proceed" not in text.lower()
    assert "**Final decision:** **NO_GO**, action **rollback**, decided by bob" in text
    assert "**Judge's verdict** (what the data shows): **GO**" in text


def test_without_a_decision_event_the_report_says_so():
    verdict, obs, events = go_run(1.0)
    text = report.render_report(PLAN, "run", verdict, obs, [e for e in events if e["kind"] != "decision"], 1.0)
    assert "no final decision was recorded" in text and "approved to proceed" not in text.lower()


# --- figures reconcile ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["nogo", "go"])
def test_counts_reconcile_table_criteria_totals_and_incidents(case):
    if case == "nogo":
        verdict, obs, events = nogo_hour0_run()
    else:
        verdict, obs, events = go_run(300.0)
        # an outage of login_p95 in the guard and a breach of the users check, still counted once
        obs = [reading(o.check_id, o.phase, o.tick, o.scheduled_at, None) if (o.check_id, o.phase) == ("login_p95", "guard")
               and o.tick in (3, 4) else o for o in obs]
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    header, rows = table(text)
    phases = header[4:-2]
    assert "baseline" in phases and "guard" in phases
    after = [p for p in phases if p != "baseline"]
    total = 0
    for cid, cells in rows.items():
        by_phase = dict(zip(phases, cells[4:-2]))
        assert sum(n(by_phase[p]) for p in after) == n(cells[-2]), cid  # "after the migration" adds up
        want = {p: sum(1 for o in obs if o.check_id == cid and o.phase == p) for p in phases}
        assert {p: n(c) for p, c in by_phase.items()} == want, cid
        total += n(cells[-2]) + n(by_phase["baseline"])
    assert total == len(obs)
    m = re.search(r"Readings recorded: (\d+): (\d+) after the migration \((\d+) scheduled, (\d+) guard\) \+ (\d+) baseline",
                  text)
    assert int(m.group(1)) == len(obs) == int(m.group(2)) + int(m.group(5))
    assert int(m.group(4)) == sum(n(cells[header.index("guard")]) for cells in rows.values())
    # the criteria count the same readings as the table
    for cid, count in re.findall(r"`(\w+)`: (\d+) readings", text.split("## Criteria")[1].split("## Checks")[0]):
        assert int(count) == n(rows[cid][-2]), cid
    # every fail/error reading is an incident, and each incident is counted in the table
    incidents = text.split("**Readings beyond a NO-GO level or not measured**")[1].split("##")[0]
    listed = sum(int(k) for k in re.findall(r"\((\d+) readings?, ", incidents))
    in_table = sum(bad(c) for cells in rows.values() for c in cells[4:-2])
    assert listed == in_table == sum(1 for o in obs if o.status in ("fail", "error"))
    if case == "go":
        assert "`login_p95` guard ticks 3–4 (2 readings" in incidents


def test_units_read_as_people_read_them():
    verdict, obs, events = go_run(300.0)
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    assert not re.search(r"\d[eE][+-]\d", text)
    _, rows = table(text)
    assert rows["app_memory"][1] == "MiB" and "97.5 MiB" in rows["app_memory"][6]
    assert rows["auth_error_rate"][2] == "< 0.1%" and rows["auth_error_rate"][3] == "> 1%"
    assert "0.02%" in rows["auth_error_rate"][6]
    assert rows["login_p95"][3] == "> 1,000 ms" and "212 ms" in rows["login_p95"][6]
    assert "7 MiB" in text  # the backup's size
    assert ("/auth/login response time p95: 114 readings, 212 ms, last 212 ms; baseline median 202 ms of 4 readings, "
            "measured before the migration; median of the last 600 soak minutes' 44 readings (window 600 soak-min (10 h): "
            "the 60 min stretched to 120 wall s on this x300 clock) 212 ms: +10.6 ms (+5.26%) "
            "vs baseline\n") in text  # the p95s have no fixed noise floor any more


def test_format_value_never_uses_e_notation():
    from migration_soak.judge import format_value

    assert format_value(102_236_160.0, "bytes") == "97.5 MiB"
    assert format_value(0.0002, "ratio") == "0.02%" and format_value(0.97123, "ratio") == "97.1%"
    assert format_value(1234.6, "ms") == "1,235 ms" and format_value(0.213, "ms") == "0.213 ms"
    assert format_value(1e-9, "ratio") == "<0.0001%"
    assert format_value(100_000, "count") == "100,000" and format_value(1, "up") == "up"
    assert format_value(1e12, "per_minute") == "1,000,000,000,000/min"


# --- the post-mortem -------------------------------------------------------------------------------

def test_postmortem_timeline_in_time_order_with_evidence_and_durations():
    verdict, obs, events = nogo_hour0_run()
    events = events + [event("rollback_completed", T0 + timedelta(seconds=30), post_mortem="x.md")]
    shuffled = events[::-1]  # whatever order they come in
    text = report.render_postmortem(PLAN, "run", verdict, obs, shuffled)
    section = text.split("## Timeline (UTC)")[1].split("## Follow-up")[0]
    timeline = [line for line in section.splitlines() if line.startswith("- ")]
    times = [line[2:25] for line in timeline]
    assert times == sorted(times)
    labels = [line.split(": ")[1] for line in timeline]
    assert labels.index("Migration verified (hour 0)") < labels.index("Deciding reading") < labels.index(
        "NO-GO, the soak stops") < labels.index("Rollback started") < labels.index("Rollback completed")
    assert "Hora 0 checks done" not in text  # no hour0 event: the soak clock never started
    assert labels[labels.index("Migration verified (hour 0)") + 1] == "Applications restarted (Hora 0)"
    assert labels.count("Applications restarted after the rollback") == 1
    # the deciding evidence: masked log lines quoted
    assert f"[critical_errors hour0 tick 0] {CRITICAL_LINES[0]}" in text
    assert "```text" in text
    assert "Detection: 6 s from the migration verified (2026-03-02 09:00:00 UTC) to the NO-GO" in text
    assert "Rollback: 20 s (rollback started to rollback completed)" in text
    assert "Total: 30 s from the migration verified to the rollback completed" in text
    assert "Restored 200000 values for 100000 of 100000 rows of users present at backup time" in text


def test_postmortem_masks_secrets_in_log_lines():
    verdict, obs, events = nogo_hour0_run()
    leaky = [Observation(**{**o.__dict__, "evidence": {**o.evidence, "samples": ["login failed password=hunter2"]}})
             if o.check_id == "critical_errors" else o for o in obs]
    text = report.render_postmortem(PLAN, "run", verdict, leaky, events)
    assert "hunter2" not in text and "password=***" in text


def test_charts_are_linked_and_a_failure_to_draw_never_costs_the_report(tmp_path, monkeypatch):
    verdict, obs, events = nogo_hour0_run()
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0, chart_dir=tmp_path / "charts-run")
    assert "[critical_errors.png](charts-run/critical_errors.png)" in text
    assert (tmp_path / "charts-run" / "critical_errors.png").is_file()
    from migration_soak import charts

    monkeypatch.setattr(charts, "render", lambda *a, **k: 1 / 0)
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0, chart_dir=tmp_path / "c2")
    assert "charts could not be drawn: ZeroDivisionError" in text and "**Decision:**" in text


def test_real_time_go_without_sign_off_says_the_gates_were_not_approved():
    verdict, obs, events = go_run(1.0)
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    closing = text.split("**Decision:**")[1]
    assert "❔ GO on the measured criteria; not approved for production: " in closing
    assert "APPROVED" not in closing
    assert "Equipo de QA aprueba testing manual: not asked" in closing


def test_the_lint_findings_and_the_accepted_ones_with_their_reasons_are_listed():
    from migration_soak import lint

    verdict, obs, events = go_run(300.0)
    linted = lint.check(PLAN, [PLAN.migration.name])  # the real squawk on the default migration
    events.insert(0, event("lint", T0, **linted.to_dict()))
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    line = next(t for t in text.splitlines() if t.startswith("**Migration lint (squawk"))
    assert f"{len(linted.findings)} findings, {len(linted.accepted)} accepted by the plan, 0 not accepted" in line
    assert "- accepted `ban-drop-column` (20251202020032_update_user_schema_final line 9): The purpose" in text
    without = report.render_report(PLAN, "run", *go_run(300.0), 300.0)
    assert next(t for t in without.splitlines() if t.startswith("**Migration lint")).endswith("not run")


def test_the_rollback_rehearsal_line_says_what_was_rehearsed_or_why_not():
    from migration_soak.rehearsal import RehearsalResult

    def line(*extra):
        verdict, obs, events = go_run(300.0)
        events[:0] = list(extra)
        text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
        return next(t for t in text.splitlines() if t.startswith("**Rollback rehearsal:**"))

    passed = RehearsalResult(status="passed", database_bytes=9 << 20, restore_s=1.5, migrate_s=0.2, rollback_s=2.0,
                             verify_s=0.4, total_s=4.4, rows_at_backup=100, values_restored=200, mismatches=0)
    assert line(event("rehearsal", T0, **passed.to_dict())) == (
        "**Rollback rehearsal:** Rollback rehearsed: 200 values restored, 0 mismatches, 4.4 s (restore 1.5 s, "
        "migrate 0.2 s, rollback 2.0 s, verify 0.4 s) (also the estimate of a real rollback's duration)")
    skipped = RehearsalResult(status="skipped", database_bytes=5 << 30, reason="staging is 5120 MiB, above "
                              "rehearsal.max_database_mb 4096 MiB")
    assert line(event("rehearsal", T0, **skipped.to_dict())).endswith(
        "Rollback not rehearsed: staging is 5120 MiB, above rehearsal.max_database_mb 4096 MiB")
    assert line(event("rehearsal_failed", T0, step="rollback", text="rollback: syntax error")).endswith(
        "failed at rollback: rollback: syntax error")
    assert line().endswith("not run")


def test_what_decided_a_rejected_go_names_the_sign_off_first():
    """Demo healthy with --sign-off reject: the final decision was NO-GO (QA rejected), but the
    report's "What decided it" listed only "✅ every GO criterion met ...", the judge's GO."""
    sign = {"state": "rejected", "by": "bob", "comment": "login page broken"}
    verdict, obs, events = go_run(300.0, sign_off=sign)
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    decided = text.split("**What decided it:**\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert decided[0].startswith("- ❌ The QA sign-off was rejected by bob at ")
    assert decided[0].endswith(": the final decision is NO-GO, rollback")
    assert decided[1] == "- The judge's verdict was GO; what decided it follows"
    assert decided[2].startswith("- ✅ every GO criterion met")
    go_text = report.render_report(PLAN, "run", *go_run(300.0), 300.0)
    assert go_text.split("**What decided it:**\n", 1)[1].startswith("- ✅ every GO criterion met")
    approved = report.render_report(PLAN, "run", *go_run(1.0, sign_off={"state": "approved", "by": "alice",
                                                                         "comment": "ok"}), 1.0)
    assert approved.split("**What decided it:**\n", 1)[1].startswith("- ✅ every GO criterion met")


def test_a_rejected_sign_off_is_marked_not_met_in_the_results():
    """The results listed "❔ Equipo de QA aprueba testing manual: rejected by ...": a rejected
    gate is decided, not unknown."""
    sign = {"state": "rejected", "by": "bob", "comment": "login page broken"}
    text = report.render_report(PLAN, "run", *go_run(300.0, sign_off=sign), 300.0)
    assert "- ❌ Equipo de QA aprueba testing manual: rejected by bob at " in text
    assert "- ❔ Equipo de QA aprueba testing manual: not asked" in report.render_report(PLAN, "run", *go_run(300.0), 300.0)


def test_the_report_says_what_the_performance_rules_compared():
    """The p95s recorded their requests per bucket: the report names the baseline's pooled
    p95 (not a median of readings), the last hour's pooled p95, and the bucket that bounds
    what the histogram can show, where the runbook's template asks "latencia p95: XXXms"."""
    def with_histograms(obs):
        buckets = [[0.1, 80], [0.2, 100], ["+Inf", 100]]  # 80 requests under 100 ms, 20 in 100-200 ms
        return [Observation(**{**o.__dict__, "value": 175.0, "status": "pass",
                               "evidence": {"observations": 100, "quantile": 0.95, "buckets": buckets}})
                if o.check_id == "login_p95" and o.value is not None else o for o in obs]

    verdict, obs, events = go_run(300.0, readings=with_histograms)
    assert verdict.decision == "GO", verdict.reasons
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    line = next(x for x in text.splitlines() if x.startswith("- /auth/login response time p95:"))
    assert ("; baseline p95 175 ms of 400 requests (95 % limits 164 ms to 186 ms; 4 baseline readings, their histogram "
            "buckets pooled), in the 100 ms to 200 ms bucket, measured before the migration; p95 of the 4,000 requests "
            "counted by the last 600 soak minutes' 40 readings (histogram buckets pooled; 95 % limits "
            "172 ms to 178 ms; window 600 soak-min (10 h): the 60 min stretched to 120 wall s on this x300 clock) "
            "175 ms: 0 ms (0%) "
            "vs baseline, no change shown at 95 % out of the baseline's 100 ms to 200 ms bucket") in line, line
    assert "`login_p95`: " in text and " + 4 baseline (p95 of their 400 requests 175 ms)" in text
