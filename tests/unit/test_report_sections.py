"""Each builder of the report and the post-mortem on a few hand-made readings and events:
given these, this section says that (report_sections, report_postmortem, report_run)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from migration_soak import report_postmortem as pm
from migration_soak import report_sections as sections
from migration_soak.report import render_report
from migration_soak.judge import CriterionResult, Verdict, status_of
from migration_soak.plan import Report, RequestCount, Trend, load_plan
from migration_soak.report_run import Run, analyse, log_lines
from migration_soak.store import Observation

PLAN = load_plan("default")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # the migration verified


def obs(cid: str, phase: str, tick: int, minutes: float, value: float | None, status: str | None = None,
        **evidence) -> Observation:
    """A reading ``minutes`` of wall time after T0 (status from the plan's levels)."""
    check = PLAN.check(cid)
    if status is None:
        status = "error" if value is None else status_of(check.expect, check.no_go, value)
    at = T0 + timedelta(minutes=minutes)
    return Observation("r", phase, cid, tick, at, at + timedelta(seconds=1), value, check.unit, status, evidence)


def ev(kind: str, minutes: float, **payload) -> dict:
    return {"kind": kind, "at": T0 + timedelta(minutes=minutes), "payload": payload}


def crit(cid: str, kind: str, outcome: str, checks: list[str], rule: str = "threshold > 0", deciding=(),
         detail: str = "") -> CriterionResult:
    return CriterionResult(cid, kind, f"text of {cid}", rule, outcome, detail, checks, list(deciding))


def run_of(observations=(), events=(), criteria=(), decision: str = "GO", scale: float | None = 1.0) -> Run:
    return analyse(PLAN, Verdict(decision, [], list(criteria)), list(observations), list(events), scale)


NO_GO_STOP = [ev("verified", 0, at=T0.isoformat()), ev("no_go", 0.1, criterion="no_go_critical_errors_per_hour",
                                                       text="NO-GO password=hunter2")]
CRITICAL = crit("no_go_critical_errors_per_hour", "no_go", "breached", ["critical_errors"], "count > 5 in any 60 min",
                [{"check_id": "critical_errors", "phase": "hour0", "tick": 0, "value": 13, "derived": 13,
                  "measured_at": (T0 + timedelta(seconds=5)).isoformat()}])


# --- the top --------------------------------------------------------------------------------------

def test_banner_only_off_real_time_and_says_how_long_a_soak_hour_took():
    assert sections.banner(PLAN, 1.0) is None
    text = sections.banner(PLAN, 300.0)
    assert text.startswith("⚠️ **compressed clock (24 h in 4.8 min): demonstration evidence, not a 24-hour soak.**")
    assert "one soak hour took 12 s of wall time" in text
    assert sections.banner(PLAN, 0.5).startswith("⚠️ **stretched clock (24 h in 48.0 h): not the plan's soak: its "
                                                  "cadences and windows are soak time, so its readings were 2 times "
                                                  "further apart in wall time than the plan's.**")
    # the SQL's "last hour" is wall time: on this clock it spans the whole soak and more
    assert ("`recent_executions`, `executions_last_hour` and `workflow_error_rate` count the last 60 wall minutes "
            "(their SQL): on this clock 300 h 00 min of soak time, so every reading includes events from before the "
            "migration.") in text
    assert "before the migration" in sections.banner(PLAN, 4.0) and "workflow_error_rate" not in \
        sections.banner(PLAN, 0.5)


def test_checkbox_lists_every_reason_the_task_is_not_done():
    stopped = run_of([obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, [CRITICAL], "NO_GO", 300.0)
    assert sections.checkbox(stopped, 300.0).endswith(
        "24 hours of monitoring: not done (compressed clock, time_scale 300; soak stopped at hour0 tick 0; "
        "no final decision recorded)")
    kept = run_of([obs("login_p95", "hour0", 0, 0, 200.0)], [ev("decision", 5, outcome="INCONCLUSIVE", action="keep")])
    assert sections.checkbox(kept, 1.0).endswith(
        "not done (the soak did not reach its last hour; final decision INCONCLUSIVE (keep))")


def test_period_without_readings_and_with_a_stop_before_the_soak_clock():
    empty = run_of(events=[ev("verified", 0, at=T0.isoformat())])
    assert sections.period(empty, 1.0) == {
        "text": "no reading after the migration: nothing was monitored (migration verified 2026-03-02 09:00:00 UTC)",
        "soak": ""}
    stopped = run_of([obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, [CRITICAL], "NO_GO")
    p = sections.period(stopped, 1.0)
    assert p["text"] == ("2026-03-02 09:00:00 UTC to 2026-03-02 09:00:06 UTC: 6 s of wall time, from the migration "
                         "verified (hour 0) to the stop (NO-GO)")
    assert p["soak"] == "the soak clock never started: the soak stopped during the Hora 0 checks (hour0 tick 0)"


def test_soak_time_names_the_hours_no_phase_read():
    """A plan whose phases leave a stretch out still "covers 24:00 of 24 h": the line says which."""
    gapped = PLAN.model_copy(update={"phases": [PLAN.phases[0], PLAN.phases[1].model_copy(update={"end_hour": 6.0}),
                                                PLAN.phases[2]]})
    assert gapped.phase_gaps() == [(6.0, 8.0)] and PLAN.phase_gaps() == []
    late = gapped.phases[2].tick_offsets()[-1]
    reading = obs("login_p95", gapped.phases[2].name, len(gapped.phases[2].tick_offsets()), late.total_seconds() / 60,
                  200.0)
    started = [ev("verified", 0, at=T0.isoformat()), ev("hour0", 0, at=T0.isoformat())]
    run = analyse(gapped, Verdict("GO", [], []), [reading], started, 1.0)
    assert sections.period(run, 1.0)["soak"].endswith(
        "soak time covered 24:00 of 24 h; no phase read soak hours 6-8 (the plan's phases leave them out: only the "
        "guard and readings that count since their previous one cover them)")
    early = analyse(gapped, Verdict("GO", [], []), [obs("login_p95", "hour0", 0, 0, 200.0)], started, 1.0)
    assert "no phase read" not in sections.period(early, 1.0)["soak"]  # the gap lies beyond what was reached


# --- the decision ------------------------------------------------------------------------------------

def test_a_persons_go_on_a_compressed_clock_closes_as_a_persons_go():
    """noisy demo, --human-choice GO, time_scale 300: the judge said INCONCLUSIVE, Anonymous
    chose GO, and the report (and the soak view's decision card) closed "✅ GO on a compressed
    clock (time_scale 300): demonstration evidence only", as if the judge had said GO."""
    events = [ev("decision", 5, outcome="GO", action="proceed", by="person:Anonymous", reason="why",
                 verdict="INCONCLUSIVE", overridden_by="Anonymous")]
    closing = sections.final(run_of(events=events, decision="INCONCLUSIVE", scale=300.0))["closing"]
    assert closing.startswith("⚠️ GO by Anonymous over an INCONCLUSIVE verdict, not the judge's GO, on a compressed "
                              "clock (time_scale 300): demonstration evidence only, not an approval for production")
    assert not closing.startswith("✅")


@pytest.mark.parametrize("payload, scale, closing", [
    (None, 1.0, "❔ No final decision recorded: the judge's verdict alone approves nothing."),
    ({"outcome": "GO", "action": "proceed", "by": "judge"}, 300.0,
     "✅ GO on a compressed clock (time_scale 300): demonstration evidence only"),
    ({"outcome": "INCONCLUSIVE", "action": "keep", "by": "timeout"}, 1.0,
     "❔ INCONCLUSIVE: not approved; the migration is kept (action keep), which is not a GO"),
    ({"outcome": "NO_GO", "action": "rollback", "by": "judge"}, 1.0,
     "❌ NO-GO: not approved; rollback decided, not started when this was written"),
])
def test_final_closing_line_approves_only_a_real_time_go(payload, scale, closing):
    events = [ev("decision", 5, reason="why", **payload)] if payload else []
    final = sections.final(run_of(events=events, scale=scale))
    assert final["closing"].startswith(closing)
    if payload:
        assert final["line"].startswith(f"**{payload['outcome']}**, action **{payload['action']}**, decided by the ")


def test_deciding_puts_the_stop_first_and_names_a_breach_without_readings():
    other = crit("no_go_workflows", "no_go", "breached", ["workflow_error_rate"], detail="workflow_error_rate: 30%")
    run = run_of([obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, [other, CRITICAL], "NO_GO")
    first, second = sections.deciding(run)
    assert first.startswith("❌ `no_go_critical_errors_per_hour`")
    assert ("deciding reading `critical_errors` = **13** at hour0 tick 0, 2026-03-02 09:00:05 UTC (13 in the window): "
            "**this stopped the soak**") in first
    assert second.endswith("(rule: > 10%): workflow_error_rate: 30%")


def test_deciding_on_an_inconclusive_verdict_lists_the_unmet_go_criteria_only():
    run = run_of(criteria=[crit("go_a", "go", "met", ["login_p95"]),
                           crit("go_b", "go", "not_enough_data", ["login_p95"], detail="3 of 19")], decision="INCONCLUSIVE")
    assert sections.deciding(run) == ['❔ `go_b` "text of go_b": not enough data: 3 of 19']


def test_human_gates_say_the_question_timed_out_or_was_not_asked():
    timed_out = run_of(events=[ev("human_decision", 9, chosen=["Roll back"], timed_out=True)], decision="INCONCLUSIVE")
    lines = sections.human_gates(timed_out)
    assert lines[0] == "Equipo de QA aprueba testing manual: not asked"
    assert lines[-1] == ('INCONCLUSIVE question (GO / Roll back): timed out after 4 h; the default "Roll back" applied')
    assert sections.human_gates(run_of(decision="INCONCLUSIVE"))[-1].endswith("not asked")
    assert not any("INCONCLUSIVE" in line for line in sections.human_gates(run_of()))


# --- results and metrics ----------------------------------------------------------------------------

def test_results_count_log_lines_once_the_larger_of_the_guard_and_the_phases():
    readings = [obs("critical_errors", "guard", 1, 1, 3), obs("critical_errors", "guard", 2, 2, 4),
                obs("critical_errors", "regular", 1, 3, 5), obs("critical_errors", "regular", 2, 4, None)]
    run = run_of(readings)
    assert log_lines(run, "critical_errors") == (7, 4, 1)
    assert sections.results(run)[0] == (
        "❌ **7** log lines matched `critical_errors` (Critical errors in the application log) in "
        "4 readings after the migration; 1 reading failed, so at least this many")


def test_criteria_figures_count_log_lines_once_too():
    """The criteria table's figures agree with the results' count: the hour-0 reading's 5
    lines and the guard's 16 (which began before it) are the same lines, not 21 (a new
    user's legacy-code run)."""
    readings = [obs("critical_errors", "hour0", 0, 0.1, 5), obs("critical_errors", "guard", 1, 0.2, 16)]
    run = run_of(readings, criteria=[CRITICAL], decision="NO_GO")
    assert sections.figures(run, CRITICAL) == "`critical_errors`: 2 readings, 16 log lines"


def test_results_name_the_no_go_criteria_not_judged():
    run = run_of(criteria=[crit("no_go_db_cpu", "no_go", "not_judged", ["db_cpu"]),
                           crit("no_go_workflows", "no_go", "clear", ["workflow_error_rate"])])
    assert "❔ NO-GO criteria breached: 0 of 2; not judged: 1 (`no_go_db_cpu`)" in sections.results(run)


def test_results_end_with_the_no_go_total_and_the_human_gates():
    run = run_of(criteria=[CRITICAL, crit("no_go_workflows", "no_go", "clear", ["workflow_error_rate"])],
                 decision="NO_GO")
    lines = sections.results(run)
    assert "❌ NO-GO criteria breached: 1 of 2: `no_go_critical_errors_per_hour`" in lines
    assert lines[-2:] == ["❔ Equipo de QA aprueba testing manual: not asked",
                          "❔ No hay tickets de soporte relacionados: not asked"]


def test_final_metrics_totals_requests_and_a_check_without_baseline():
    readings = [obs("auth_error_rate", "intensive", k, k, 0.002, numerator=10, denominator=5000) for k in (1, 2)]
    readings += [obs("login_p95", "intensive", 1, 1, 210.0), obs("login_p95", "baseline", 1, -30, None)]
    lines = sections.final_metrics(run_of(readings))
    assert lines[0] == ("Readings recorded: 4: 3 after the migration (3 scheduled, 0 guard) + 1 baseline; "
                        "1 could not be measured (error)")
    assert lines[1] == ("Authentication requests seen after the migration: 10,000, 20 answered 5xx (0.2%), "
                        "over 2 readings")
    assert any(line.startswith("/auth/login response time p95: 1 reading, 210 ms, last 210 ms; no baseline measured")
               for line in lines)


def test_the_report_names_the_requests_before_the_first_window_as_not_counted():
    """Healthy demo: 'Authentication requests seen after the migration: 5,243, 0 answered 5xx
    (0%)', yet the first reading's window starts after the verification and hour 0's wait
    (the legacy-code demo: 2 s after the migration applied, where 5 of its 9 failed logins
    were). The post-mortem named that span as not counted (f6f45fd); the report now does too."""
    def counted(k):
        return obs("auth_error_rate", "intensive", k, k, 0.0, numerator=0, denominator=500,
                   window_from=(T0 + timedelta(minutes=k - 1)).isoformat())
    applied = [ev("migrate", -1, applied=["m1"]), ev("verified", -0.5, at=T0.isoformat())]
    lines = sections.final_metrics(run_of([counted(1), counted(2)], applied))
    assert ("Authentication requests seen after the migration: 1,000, 0 answered 5xx (0%), over 2 readings; "
            "not counted: the requests from 2026-03-02 08:59:00 UTC (the migration applied) until 2026-03-02 "
            "09:00:00 UTC, 60 s: the first reading's window starts there") in lines, lines
    # a window's start unknown: nothing claimed either way
    lines = sections.final_metrics(run_of([obs("auth_error_rate", "intensive", 1, 1, 0.0, numerator=0,
                                               denominator=500)], applied))
    assert "Authentication requests seen after the migration: 500, 0 answered 5xx (0%), over 1 reading" in lines


def test_requests_the_guard_and_the_phases_both_counted_are_counted_once():
    """Each series counts every request since its own previous reading: adding the guard's
    to the phases' would claim twice the traffic (a demo report said 10,411 for ~5,200)."""
    readings = [obs("auth_error_rate", "intensive", k, 15 * k, 0.0, numerator=0, denominator=2500) for k in (1, 2)]
    readings += [obs("auth_error_rate", "guard", k, k, 0.0, numerator=1 if k == 3 else 0, denominator=170)
                 for k in range(1, 31)]
    lines = sections.final_metrics(run_of(readings))
    assert "Authentication requests seen after the migration: 5,100, 1 answered 5xx (0.0196%), over 30 readings" in lines


def test_the_headline_requests_come_from_the_plan_not_a_check_id():
    readings = [obs("login_error_rate", "regular", 1, 60, 0.01, numerator=3, denominator=300),
                obs("auth_error_rate", "regular", 1, 60, 0.002, numerator=10, denominator=5000)]
    other = PLAN.model_copy(update={"report": Report(requests=[
        RequestCount(check="login_error_rate", label="Logins", failed="failed with 5xx")])})
    run = analyse(other, Verdict("GO", [], []), readings, [], 1.0)
    assert sections.request_lines(run, "meanwhile", with_readings=False) == [
        "Logins seen meanwhile: 300, 3 failed with 5xx (1%)"]
    none = analyse(PLAN.model_copy(update={"report": Report()}), Verdict("GO", [], []), readings, [], 1.0)
    assert sections.request_lines(none, "after the migration") == []


def test_the_drift_lines_are_the_plans_report_trends():
    readings = [obs("app_memory", "regular", k, 60 * k, 100e6 + k * 1e6) for k in (1, 2, 3)]
    lines = sections.final_metrics(run_of(readings))
    assert [line for line in lines if line.startswith("API gateway memory: first ")] == [
        "API gateway memory: first 96.3 MiB, last 98.2 MiB, range 96.3–98.2 MiB (3 readings)"]
    titled = PLAN.model_copy(update={"report": Report(trends=[Trend(check="app_memory")])})
    lines = sections.final_metrics(analyse(titled, Verdict("GO", [], []), readings, [], 1.0))
    assert any(line.startswith(f"{PLAN.check('app_memory').title}: first ") for line in lines)
    none = PLAN.model_copy(update={"report": Report()})
    assert not any(" first " in line for line in sections.final_metrics(analyse(none, Verdict("GO", [], []), readings,
                                                                                [], 1.0)))


def test_backup_migration_and_rehearsal_lines():
    assert sections.backup(run_of()) is None and sections.migration(run_of()) is None
    run = run_of(events=[ev("backup", -1, path="/b.dump", size_bytes=3 * 2**20, sha256="ab", duration_s=1.25),
                         ev("migrate", 0, applied=[]), ev("verified", 0, at=T0.isoformat()),
                         ev("rehearsal_failed", -5, step="restore", text="boom")])
    assert sections.backup(run) == {"where": "/b.dump", "size": "3 MiB", "sha256": "ab", "seconds": 1.25, "topup": ""}
    topped = run_of(events=[ev("backup", -1, path="/b.dump", size_bytes=1, sha256="ab", duration_s=1.0),
                            ev("topup", -0.5, rows=3, taken_at="2026-03-02T08:59:30+00:00", location="/t/topup.copy.zst")])
    assert sections.backup(topped)["topup"] == (
        "; just before the migration, the dropped columns of 3 rows written since the backup were kept too (top-up "
        "read 2026-03-02T08:59:30+00:00, `/t/topup.copy.zst`)")
    assert sections.migration(run) == "nothing pending; verified 2026-03-02 09:00:00 UTC (hour 0)"
    assert sections.rehearsal(run) == "failed at restore: boom"
    assert sections.rehearsal(run_of()) == "not run"


def test_the_migration_line_keeps_what_was_applied_when_migrate_ran_again():
    # Found by review: migrate cleared in the UI and run again after its DDL finds nothing
    # pending and records a second migrate event; the report read the last one and said
    # "Migration: nothing pending" for the run that dropped the columns.
    name = PLAN.migration.name
    run = run_of(events=[ev("migrate", 0, applied=[name]), ev("migrate", 30, applied=[]),
                         ev("verified", 0, at=T0.isoformat())])
    assert sections.migration(run) == f"`{name}` applied; verified 2026-03-02 09:00:00 UTC (hour 0)"


# --- the tables -----------------------------------------------------------------------------------------

def test_rows_cells_say_missing_not_reached_or_not_scheduled():
    run = run_of([obs("login_p95", "intensive", 1, 1, 210.0), obs("login_p95", "intensive", 2, 2, None)])
    row = next(r for r in sections.rows(run) if r["id"] == "login_p95")
    cells = dict(zip(run.phases, row["cells"]))
    assert cells["intensive"] == "2 (1/0/0/1) 210 ms"
    assert cells["regular"] == "0 (missing)" and row["total"] == "2 (1/0/0/1)"
    assert row["unit"] == "ms" and row["expect"] == "< 500 ms" and row["no_go"] == "> 1,000 ms"
    stopped = run_of([obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, [CRITICAL], "NO_GO")
    row = next(r for r in sections.rows(stopped) if r["id"] == "login_p95")
    assert dict(zip(stopped.phases, row["cells"]))["regular"] == "not reached"
    backup_row = next(r for r in sections.rows(stopped) if r["id"] == "incremental_backup")
    assert dict(zip(stopped.phases, backup_row["cells"]))["intensive"] == "·"


def test_criteria_rows_mark_a_go_the_stop_left_unjudged():
    go = crit("go_auth_error_rate", "go", "not_met", ["auth_error_rate"])
    run = run_of([obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, [CRITICAL, go], "NO_GO")
    row = next(r for r in sections.criteria(run) if r["c"] is go)
    assert row["mark"] == "⏹️" and row["outcome"] == "not met (soak stopped first)"
    assert row["rule"] == "< 0.1%" and row["figures"] == "`auth_error_rate`: 0 readings"


def test_check_lines_link_the_charts_drawn():
    run = run_of([obs("login_p95", "intensive", 1, 1, 210.0)])
    lines = sections.check_lines(run, {"login_p95": "charts-r/login_p95.png"})
    line = next(t for t in lines if t.startswith("**`login_p95`**"))
    assert line.endswith("Chart: [login_p95.png](charts-r/login_p95.png)")
    assert not any("Chart:" in t for t in lines if not t.startswith("**`login_p95`**"))


# --- incidents, alerts, stop, rollback ------------------------------------------------------------------

def test_incidents_group_fails_by_tick_and_say_no_criterion_breached_by_them():
    readings = [obs("auth_error_rate", "guard", k, k, 0.05) for k in (3, 4, 5, 8)]
    readings += [obs("login_p95", "regular", 1, 60, None, error="token=abc refused")]
    run = run_of(readings, criteria=[crit("no_go_auth_error_rate", "no_go", "clear", ["auth_error_rate"])])
    fail, error = sections.incidents(run)
    assert fail.startswith("`auth_error_rate` guard ticks 3–5, 8 (4 readings, 2026-03-02 09:03:01 UTC to 09:08:01 UTC)")
    assert fail.endswith("beyond the NO-GO level: 5% (NO-GO level > 1%); no NO-GO criterion breached by them "
                         "(`no_go_auth_error_rate` clear)")
    assert error.startswith("`login_p95` regular tick 1 (1 reading, ") and "not measured: token=***" in error


def test_no_incident_under_a_no_go_stop_says_the_stop_is_its_criterion_not_a_level():
    """slow-auth demo: NO-GO on login_p95's degradation (195 ms, its own level > 1 000 ms), and
    under "NO-GO stop" the report said "Readings beyond a NO-GO level or not measured: none"."""
    readings = [obs("critical_errors", "hour0", 0, 0, 13)]
    run = run_of(readings, NO_GO_STOP, [CRITICAL], "NO_GO", 300.0)
    assert sections.incidents(run) == []
    assert sections.no_incidents(run) == (
        "none: every reading was measured and none was beyond its check's own NO-GO level; the NO-GO above was "
        "decided by the rule of `no_go_critical_errors_per_hour` (count > 5 in any 60 min), not by such a level")
    text = render_report(PLAN, "r", Verdict("NO_GO", [], [CRITICAL]), readings, NO_GO_STOP, 300.0)
    section = text.split("**Readings beyond a NO-GO level or not measured**")[1].split("##")[0]
    assert "- none\n" not in section and "- none: every reading was measured" in section
    # no NO-GO: nothing to explain
    assert sections.no_incidents(run_of([obs("critical_errors", "hour0", 0, 0, 0)])) == "none"


def test_a_degradation_names_the_window_median_its_change_belongs_to():
    """slow-auth demo: "deciding reading `login_p95` = 195 ms ... (+3,426% vs baseline)" on a
    4.75 ms baseline, where 195 ms is +4,005%: +3,426% is the window median's (167 ms) change.
    At time_scale 300 that window is 600 soak-min (rules.Baseline.window: 120 wall seconds);
    the report read the readings off the soak clock and said 60."""
    readings = [obs("login_p95", "baseline", k, -60 + 15 * k, 4.75) for k in range(4)]
    readings += [obs("login_p95", "intensive", 6, 90, 195.0)]
    decided = {"check_id": "login_p95", "phase": "intensive", "tick": 6, "value": 195.0, "derived": 34.26,
               "measured_at": (T0 + timedelta(minutes=90)).isoformat()}
    perf = crit("no_go_performance", "no_go", "breached", ["login_p95", "verify_p95", "auth_query_time"],
                "degradation", [decided])
    stop = [ev("verified", 0, at=T0.isoformat()), ev("no_go", 90, criterion="no_go_performance", text="NO-GO")]
    run = run_of(readings, stop, [perf], "NO_GO", 300.0)
    line = pm.why(run)[0]
    assert ("deciding reading `login_p95` = **195 ms** at intensive tick 6, 2026-03-02 10:30:00 UTC (median of the "
            "600 min ending there 167 ms: +3,426% vs the baseline median 4.75 ms)") in line, line
    marks, _, _ = sections.chart_marks(run)
    assert marks == {"login_p95": [("intensive", 6, "600-min median 167 ms: +3,426% vs baseline 4.75 ms")]}
    # a growth keeps its own figure: it is the reading's own change per hour
    grow = crit("no_go_memory_leak", "no_go", "breached", ["app_memory"], "growth",
                [{**decided, "check_id": "app_memory", "value": 1284.0, "derived": 0.393}])
    assert "(+39.3% growth)" in sections.reading(run_of(criteria=[grow], decision="NO_GO"), grow, grow.deciding[0])


def test_a_check_beyond_its_level_that_breached_no_criterion_is_not_called_breached():
    """noisy demo: 22 auth_error_rate readings beyond its 1 % level, none sustained long enough
    for no_go_auth_error_rate (not judged), "NO-GO criteria breached: 0 of 8", and the per-check
    table's outcome said "❌ breached", its line "meets its NO-GO level" and nothing more."""
    readings = [obs("auth_error_rate", "guard", k, k, 0.0339) for k in (4, 6, 8)]
    run = run_of(readings, criteria=[crit("no_go_auth_error_rate", "no_go", "not_judged", ["auth_error_rate"])],
                 decision="INCONCLUSIVE")
    row = next(r for r in sections.rows(run) if r["id"] == "auth_error_rate")
    assert row["outcome"] == ("❌ beyond its NO-GO level; no NO-GO criterion breached by them "
                              "(`no_go_auth_error_rate` not judged)"), row["outcome"]
    line = next(t for t in sections.check_lines(run, {}) if t.startswith("**`auth_error_rate`**"))
    assert "meets its NO-GO level > 1% (3 readings); no NO-GO criterion breached by them " \
        "(`no_go_auth_error_rate` not judged)." in line, line
    # the check that decided a NO-GO keeps its words
    decided = {"check_id": "auth_error_rate", "phase": "guard", "tick": 8, "value": 0.0339,
               "measured_at": (T0 + timedelta(minutes=8)).isoformat()}
    stop = run_of(readings, criteria=[crit("no_go_auth_error_rate", "no_go", "breached", ["auth_error_rate"],
                                           deciding=[decided])], decision="NO_GO")
    assert next(r for r in sections.rows(stop) if r["id"] == "auth_error_rate")["outcome"] == \
        "❌ breached (decided NO-GO)"


def test_an_unattended_rollback_of_an_inconclusive_soak_is_not_its_reasons_twice():
    """metrics-outage demo: "What decided it" and the post-mortem's "Why" opened with "❌
    INCONCLUSIVE, rollback, decided by the policy `on_inconclusive=rollback`: INCONCLUSIVE,
    rolled back unattended: " and the judge's nine reasons (2 800 characters), then "The
    judge's verdict was INCONCLUSIVE; what decided it follows" and the same nine again; and
    ❌ marked an INCONCLUSIVE."""
    reasons = ["go_auth_error_rate: not_enough_data: auth_error_rate: 17 of 19", "no_go_db_cpu: not judged: db_cpu"]
    crits = [crit("go_auth_error_rate", "go", "not_enough_data", ["auth_error_rate"], detail="17 of 19"),
             crit("no_go_db_cpu", "no_go", "not_judged", ["db_cpu"], detail="not judged: db_cpu")]
    decided = ev("decision", 5, outcome="INCONCLUSIVE", action="rollback", by="policy:on_inconclusive=rollback",
                 reason="INCONCLUSIVE, rolled back unattended: " + "; ".join(reasons))
    run = analyse(PLAN, Verdict("INCONCLUSIVE", reasons, crits), [], [decided], 300.0)
    lines = pm.why(run)
    assert lines[0] == ("❔ INCONCLUSIVE, rollback, decided by the policy `on_inconclusive=rollback`: INCONCLUSIVE, "
                        "rolled back unattended"), lines[0]
    assert lines[1] == "The judge's verdict was INCONCLUSIVE; what decided it follows"
    assert sum(reasons[0].split(": ")[-1] in line for line in lines) == 1  # "17 of 19" once
    # a person's GO over it: their words, then the judge's reasons once
    chose = ev("decision", 5, outcome="GO", action="proceed", by="person:ana",
               reason="ana chose GO on an INCONCLUSIVE verdict: " + "; ".join(reasons))
    lines = pm.why(analyse(PLAN, Verdict("INCONCLUSIVE", reasons, crits), [], [chose], 300.0))
    assert lines[0] == "⚠️ GO, proceed, decided by ana: ana chose GO on an INCONCLUSIVE verdict", lines[0]


def test_alerts_and_the_stop_are_masked():
    run = run_of(events=NO_GO_STOP + [ev("alert", 0.05, alert="high_auth_error_rate", text="password=hunter2")])
    assert sections.alerts(run) == ["2026-03-02 09:00:03 UTC: high_auth_error_rate: password=***"]
    assert sections.stop(run) == "2026-03-02 09:00:06 UTC: NO-GO password=***"
    assert sections.stop(run_of()) is None


def test_rollback_lines_duration_and_state_from_the_rollback_events_only():
    events = [ev("restart", 0.5, text="hora 0 restart"), ev("rollback_started", 1, text="go back"),
              ev("restart", 1.5, text="")]
    run = run_of(events=events)
    assert sections.rollback_lines(run) == ["2026-03-02 09:01:00 UTC: Rollback started: go back",
                                            "2026-03-02 09:01:30 UTC: Applications restarted after the rollback"]
    assert sections.rollback_duration(run) == ("not completed when this was written; 30 s from its start to the last "
                                               "recorded step")
    with_ledger = run_of(events=events[:2] + [ev("ledger", 1.2, text="rolled_back")])
    assert sections.rollback_state(with_ledger) == (
        "rollback under way when this was written (started 2026-03-02 09:01:00 UTC, last step: migration marked "
        "rolled back in the ledger at 2026-03-02 09:01:12 UTC)")
    only_start = run_of(events=events[:2])
    assert sections.rollback_duration(only_start) == "not completed when this was written (only its start is recorded)"
    assert sections.rollback_duration(run_of()) is None
    # the post-mortem is step 6: written once step 5, the health check, passed, and before
    # rollback_completed is recorded; a failed health check is not "done"
    healthy = run_of(events=events + [ev("health", 2, ok=True, text="post-rollback health ok")])
    assert sections.rollback_duration(healthy) == ("60 s to the post-rollback health check passing (steps 1-5 "
                                                   "done; step 6, the post-mortem, is written last)")
    failed = run_of(events=events + [ev("health", 2, ok=False, text="post-rollback health FAILED")])
    assert sections.rollback_duration(failed).startswith("not completed when this was written; 60 s")


def test_chart_marks_name_the_deciding_readings_and_the_stop_hour():
    growth = crit("no_go_memory_leak", "no_go", "breached", ["app_memory"], "growth > 20% per 60 min",
                  [{"check_id": "app_memory", "phase": "intensive", "tick": 2, "value": 1.0, "derived": 0.25}])
    events = [ev("hour0", 0, hour0=T0.isoformat()), ev("no_go", 30, criterion="no_go_memory_leak"),
              ev("rollback_started", 31)]
    run = run_of(events=events, criteria=[growth], decision="NO_GO", scale=2.0)
    marks, stop_h, label = sections.chart_marks(run)
    assert marks == {"app_memory": [("intensive", 2, "+25% growth")]}
    assert stop_h == pytest.approx(1.0) and label == "NO-GO stop, then rollback"
    assert sections.chart_marks(run_of()) == ({}, None, "")


# --- the post-mortem ------------------------------------------------------------------------------------

def test_infer_scale_from_the_baseline_else_from_a_phase_reading():
    start = ev("baseline_start", -60, at=(T0 - timedelta(minutes=60)).isoformat())
    run = run_of([obs("login_p95", "baseline", 2, -50, 200.0)], [start], scale=None)
    assert pm.infer_scale(run) == 3.0  # tick 2 of 15 min = 30 soak minutes in 10 wall minutes
    run = run_of([obs("login_p95", "intensive", 1, 5, 200.0)], [ev("hour0", 0, hour0=T0.isoformat())], scale=None)
    assert pm.infer_scale(run) == 3.0  # intensive tick 1 = 15 soak minutes in 5 wall minutes
    assert pm.infer_scale(run_of([obs("login_p95", "intensive", 1, 5, 200.0)], scale=None)) is None


def test_durations_detection_on_the_soak_clock_and_no_rollback():
    events = [ev("verified", -1, at=(T0 - timedelta(minutes=1)).isoformat()), ev("hour0", 0, hour0=T0.isoformat()),
              ev("no_go", 6, criterion="x")]
    run = run_of(events=events, scale=300.0)
    assert pm.durations(run) == [
        "Detection: 7.0 min from the migration verified (2026-03-02 08:59:00 UTC) to the NO-GO stop recorded at "
        "2026-03-02 09:06:00 UTC",
        "Detection on the soak clock: the deciding reading's soak time is unknown; the NO-GO stop was recorded "
        "6.0 min of wall time after the soak clock's hour 0 at 2026-03-02 09:00:00 UTC (soak time 30:00 when the "
        "stop was recorded)",
        "Rollback: not started when this was written",
    ]


def test_impact_names_deciding_and_other_checks_and_the_rollback_outcome():
    readings = [obs("critical_errors", "hour0", 0, 0, 13), obs("login_p95", "intensive", 1, 1, 700.0)]
    events = NO_GO_STOP + [ev("rollback_started", 1), ev("health", 2, ok=False),
                           ev("rollback_completed", 3)]
    lines = pm.impact(run_of(readings, events, [CRITICAL], "NO_GO"))
    assert lines[0] == ("The migrated schema was live in staging from 2026-03-02 09:00:00 UTC until the rollback "
                        "(2026-03-02 09:03:00 UTC): 3.0 min")
    assert "Checks that decided the NO-GO: `critical_errors`" in lines
    assert "Other checks outside their expected range at some reading: `login_p95`" in lines
    assert lines[-1] == "Post-rollback health: FAILED"


def test_evidence_lines_are_masked_defused_and_at_most_ten():
    samples = [f"```line {i} password=hunter2" for i in range(12)]
    readings = [obs("critical_errors", "hour0", 0, 0, 13, samples=samples, lines_read=500, reader="file")]
    lines, figures = pm.evidence_lines(run_of(readings, NO_GO_STOP, [CRITICAL], "NO_GO"))
    assert len(lines) == 10 and lines[0] == "[critical_errors hour0 tick 0] '''line 0 password=***"
    assert figures == ["`critical_errors` hour0 tick 0: lines_read 500"]


def test_evidence_falls_back_to_other_log_readings_when_the_deciding_check_is_not_a_log_check():
    perf = crit("no_go_performance", "no_go", "breached", ["login_p95"], "degradation",
                [{"check_id": "login_p95", "phase": "intensive", "tick": 1, "value": 900.0, "derived": 0.5}])
    readings = [obs("login_p95", "intensive", 1, 1, 900.0), obs("critical_errors", "regular", 1, 2, 2, samples=["E1"]),
                obs("critical_errors", "regular", 2, 3, 0, samples=["not matched"])]
    lines, figures = pm.evidence_lines(run_of(readings, [ev("no_go", 2, criterion="no_go_performance")], [perf], "NO_GO"))
    assert lines == ["[critical_errors regular tick 1] E1"] and figures == []


def test_timeline_relabels_rollback_restarts_and_adds_the_deciding_reading_in_time_order():
    events = NO_GO_STOP + [ev("restart", -0.5, text="restart"), ev("rollback_started", 1, text="rb"),
                           ev("restart", 2, text="restart"), {"kind": "late", "payload": {}}]
    timeline = pm.timeline(run_of([obs("critical_errors", "hour0", 0, 0, 13)], events[::-1], [CRITICAL], "NO_GO"))
    labels = [t["label"] for t in timeline]
    assert labels == ["Applications restarted (Hora 0)", "Migration verified (hour 0)", "Deciding reading",
                      "NO-GO, the soak stops", "Rollback started",
                      "Applications restarted after the rollback", "late"]
    assert timeline[2]["text"] == "`critical_errors` = 13 at hour0 tick 0 (13 in the window)"
    assert timeline[-1]["at"] == "n/a" and timeline[0]["text"] == ""  # text equal to its kind says nothing


# --- the run's analysis ----------------------------------------------------------------------------------

def test_analyse_finds_the_stop_where_and_lists_ghost_checks_and_odd_phases():
    ghost = Observation("r", "extra", "old_check", 1, T0, T0, 4.0, "weird", "pass")
    run = run_of([obs("auth_error_rate", "guard", 2, 2, 0.05), ghost],
                 [ev("no_go", 3, criterion="gone")], decision="NO_GO")
    assert run.stop_criterion is None and run.stop_where == "guard tick 2"  # the first fail reading
    assert run.phases[-2:] == ["guard", "extra"] and run.phases[0] == "baseline"
    r = run.results["old_check"]
    assert r.outcome == "not_enough_data" and r.unit == "count"
    assert r.detail == "1 reading of a check the plan does not have: not judged"


def test_the_guard_cadence_is_the_one_the_run_used():
    """At time_scale 300 the default guard's 1 soak-minute is floored at 3 s of wall time:
    the report says 15 soak-minutes (a new user's run read "every 1 min" while the guard
    read 96 times a check, not 1 440)."""
    assert sections.guard_cadence(PLAN, 1.0) == "every 1 soak-min"
    assert sections.guard_cadence(PLAN, 300.0) == ("every 15 soak-min (the plan's 1 min, floored at 3 s of wall time "
                                                   "at time_scale 300)")
    assert sections.guard_cadence(PLAN.model_copy(update={"guard": None}), 300.0) == "never (the plan has no guard)"


def test_impact_counts_the_schema_live_from_the_migration_applied_not_verified():
    """The app failed on the dropped columns between the migration applied and its verification
    (legacy-code demo: errors at 05:10:02.6, verified 05:10:04): the schema was live from the
    ``migrate`` event, not from hour 0."""
    events = [ev("migrate", -2, applied=["m1"])] + NO_GO_STOP + [ev("rollback_started", 1), ev("rollback_completed", 3)]
    lines = pm.impact(run_of([obs("critical_errors", "hour0", 0, 0, 13)], events, [CRITICAL], "NO_GO"))
    assert lines[0] == ("The migrated schema was live in staging from 2026-03-02 08:58:00 UTC (the migration applied) "
                        "until the rollback (2026-03-02 09:03:00 UTC): 5.0 min")


def test_the_guard_is_not_said_to_have_read_the_whole_soak_when_it_missed_readings():
    """Healthy demo (time_scale 300): the GO's reasons said "the guard missed 1 of its 96
    readings due (...; no reading between soak 5:45 and 6:15)", yet the note above the
    per-check table said the guard read its checks "every 15 soak-min ... for the whole soak"."""
    started = [ev("verified", 0, at=T0.isoformat()), ev("hour0", 0, at=T0.isoformat())]
    every_check = [obs(cid, "guard", k, k, 0.0 if cid != "login_p95" else 5.0)
                   for cid in PLAN.guard.checks for k in (1, 2, 4, 5)]
    run = run_of(every_check, started)
    span = sections.guard_span(run)
    assert not span.endswith("for the whole soak")
    assert span.startswith(" for the whole soak but for the readings it missed: it missed 1 of its 5 readings due "
                           "(1 soak-min, 20.0 %; longest gap 1 min: no reading between soak 0:02 and 0:04)"), span
    whole = run_of([obs(cid, "guard", k, k, 0.0 if cid != "login_p95" else 5.0)
                    for cid in PLAN.guard.checks for k in (1, 2, 3)], started)
    assert sections.guard_span(whole) == " for the whole soak"


def test_the_guard_is_not_said_to_have_read_the_whole_soak_when_it_stopped_first():
    """legacy-code demo: the soak stopped at hour0 tick 0, every guard cell "not reached",
    yet the per-check table's note said the guard read its checks "for the whole soak"."""
    stopped = run_of([obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, [CRITICAL], "NO_GO")
    assert stopped.stop_where == "hour0 tick 0"
    assert sections.guard_span(stopped) == ", but took no reading: the soak stopped at hour0 tick 0 before its first"
    guarded = run_of([obs("critical_errors", "hour0", 0, 0, 13), obs("login_p95", "guard", 1, 1, 5.0),
                      obs("login_p95", "guard", 2, 2, 5.0)], NO_GO_STOP, [CRITICAL], "NO_GO")
    assert sections.guard_span(guarded) == " until the soak stopped at hour0 tick 0 (2 readings)"
    assert sections.guard_span(run_of([obs("login_p95", "guard", 1, 1, 5.0)])) == " for the whole soak"
    assert sections.guard_span(run_of()) == ", but took no reading"
    assert "for the whole soak" not in render_report(PLAN, "r", Verdict("NO_GO", [], [CRITICAL]),
                                                     [obs("critical_errors", "hour0", 0, 0, 13)], NO_GO_STOP, 300.0)


def test_banner_of_a_clock_faster_than_a_minute_a_day_gives_its_real_figures():
    """(h-ui) At time_scale 100 000 (the form's maximum) the Soak tab and the report read
    'compressed clock (24 h in 0.0 min) ... one soak hour took 0 s of wall time': the soak
    took 0.86 s, a soak hour 36 ms."""
    text = sections.banner(PLAN, 100_000.0)
    assert "0.0 min" not in text and "took 0 s" not in text, text
    assert text.startswith("⚠️ **compressed clock (24 h in 0.86 s): demonstration evidence"), text
    assert "one soak hour took 36 ms of wall time" in text, text
    assert sections.banner(PLAN, 3000.0).startswith("⚠️ **compressed clock (24 h in 29 s)")  # under a minute


GAP = ("values of passwordHash, emailVerified written between the top-up (2026-03-02T08:59:30+00:00) and the "
       "migration's lock are not restored by a rollback: the Prisma CLI runs the DDL in a transaction of its own")


def test_the_backup_line_says_which_values_the_top_up_left_out():
    """A ``topup_gap`` (Prisma CLI backend, or a closing top-up past its lock budget) left
    values written between the top-up and the DDL out of every backup: the report's backup
    line said only that the top-up's rows 'were kept too', as if the backup were whole."""
    events = [ev("backup", -1, path="/b.dump", size_bytes=1, sha256="ab", duration_s=1.0),
              ev("topup", -0.5, rows=3, taken_at="2026-03-02T08:59:30+00:00", location="/t/topup.copy.zst"),
              ev("topup_gap", -0.4, why="the Prisma CLI runs the DDL in a transaction of its own", text=GAP)]
    line = sections.backup(run_of(events=events))["topup"]
    assert line.endswith("; " + GAP[:1].upper() + GAP[1:]) or line.endswith("; " + GAP), line
    # a closing top-up recorded after the gap (a later, successful try) is the run's last word: no gap
    closed = events + [ev("topup", -0.3, rows=4, taken_at="2026-03-02T08:59:40+00:00", location="/t/c.copy.zst",
                          closing=True)]
    assert "not restored" not in sections.backup(run_of(events=closed))["topup"]


def test_the_schema_was_live_until_the_restore_gave_the_columns_back_not_until_the_last_rollback_step():
    """legacy-code demo: migrate 11:35:54, the restore (columns and values back) 11:36:04, the
    post-mortem 'until the rollback (11:36:06): 12 s', the ledger mark, Prisma's status, the
    restart and the health check counted as schema downtime."""
    events = [ev("migrate", -2, applied=["m1"])] + NO_GO_STOP + [
        ev("rollback_started", 1), ev("restore", 2, values_restored=10, rows_matched=5, rows_at_backup=5, mismatches=0),
        ev("ledger", 2.5), ev("health", 2.8, ok=True), ev("rollback_completed", 3)]
    lines = pm.impact(run_of([obs("critical_errors", "hour0", 0, 0, 13)], events, [CRITICAL], "NO_GO"))
    assert lines[0] == ("The migrated schema was live in staging from 2026-03-02 08:58:00 UTC (the migration applied) "
                        "until the rollback's restore gave its columns and values back (2026-03-02 09:02:00 UTC): "
                        "4.0 min"), lines[0]
