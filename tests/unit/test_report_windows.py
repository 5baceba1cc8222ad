"""The report, the post-mortem, Slack and the soak view say how much of the soak readings of
"the last hour" read: ``workflow_error_rate`` counts the last hour's executions at each
tick, so on a real-time clock the passive phase (a reading every 4 hours, hours 8-24) reads
4 of its 16 hours. The verdict keeps the runbook's schedule as its rule, but no "met" or
"clear" is shown without the hours its readings never read (judge.window_coverage)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from migration_soak import notify, report
from migration_soak.airflow import soak_view as sv
from migration_soak.decision import candidate
from migration_soak.report_run import analyse
from migration_soak.report_sections import chart_marks

from test_report import PLAN, event, go_run

UNREAD = ("18 readings whose 60-min windows cover 12:00 of 24:00 soak hours (hours 8-11, 12-15, 16-19 and 20-23 "
          "not read: the passive phase reads the last hour every 4 hours)")


def windowed_run(scale, sign_off=None):
    """A healthy whole soak whose workflow_error_rate readings count the last hour's
    executions (200 failed of 10 000: 2 %, as the sql source records them), judged on the
    run's clock; the verdict, the sign-off and the decision recorded (a GO's reason is the
    verdict's; a rejection rolled back)."""
    verdict, obs, events = go_run(scale, sign_off, readings=lambda obs: [
        replace(o, value=0.02, evidence={"numerator": 200, "denominator": 10_000, "window_s": 3600})
        if o.check_id == "workflow_error_rate" else o for o in obs])
    decision = events[-1]
    if decision["payload"]["outcome"] == "GO":
        decision["payload"]["reason"] = "; ".join(verdict.reasons)
    else:
        for k, kind in enumerate(("rollback_started", "restore", "health"), start=1):
            events.append(event(kind, decision["at"] + timedelta(seconds=k), ok=True))
    return verdict, obs, events


def _line(text: str, *needles: str) -> str:
    return next(line for line in text.splitlines() if all(n in line for n in needles))


def test_a_real_time_report_says_which_soak_hours_a_met_and_a_clear_did_not_read():
    """Before: "✅ Todos los workflows críticos funcionando: met (`workflow_error_rate`: 18
    readings, 2%)", the check's row "✅ met" and "✅ NO-GO criteria breached: 0 of 8", with
    12 of the soak's 24 hours read by no reading."""
    verdict, obs, events = windowed_run(1.0)
    assert verdict.decision == "GO"
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    # the verdict's reasons and what decided it
    assert f"- read in part: workflow_error_rate: {UNREAD} (no_go_workflows, go_workflows)" in text
    assert f"- ⚠️ read in part: workflow_error_rate: {UNREAD} (no_go_workflows, go_workflows)" in text
    # "Resultados"
    assert (f"- ✅ Todos los workflows críticos funcionando: met (`workflow_error_rate`: 18 readings, 2%); read in "
            f"part: workflow_error_rate: {UNREAD}") in text
    assert f"NO-GO criteria breached: 0 of 8; `no_go_workflows` clear; read in part: workflow_error_rate: {UNREAD}" \
        in text
    # the per-check table's outcome cell and the check's line
    row = _line(text, "| `workflow_error_rate`")
    assert row.endswith(f"| ✅ met on {UNREAD} |"), row
    assert f"met on {UNREAD}. Source of the rule" in _line(text, "**`workflow_error_rate`**")
    # the criteria tables: the judge's figures
    assert f"met on {UNREAD}" in _line(text, "| `go_workflows`")
    assert f"clear on {UNREAD}" in _line(text, "| `no_go_workflows`")


def test_slack_and_the_sign_off_question_carry_the_unread_hours():
    verdict, _, _ = windowed_run(1.0)
    before = candidate(verdict.decision, None, "ask", verdict.reasons)
    slack = notify.decision_text(PLAN, before, 1.0, "soak-run.md", {"state": "approved", "by": "alice"})
    assert f"verdict: GO: all 8 GO criteria met; no NO-GO criterion breached; read in part: workflow_error_rate: " \
           f"{UNREAD} (no_go_workflows, go_workflows); approved for production" in slack, slack
    assert UNREAD in notify.sign_off_question(PLAN, before, 1.0)


def test_the_post_mortem_of_a_rejected_go_says_what_the_go_did_not_read():
    """QA rejected a GO: the post-mortem's "Why" repeats what decided the verdict, and "every
    GO criterion met" must not stand there without the hours never read."""
    verdict, obs, events = windowed_run(1.0, {"state": "rejected", "by": "bob", "comment": "checkout broken"})
    text = report.render_postmortem(PLAN, "run", verdict, obs, events)
    assert "every GO criterion met" in text
    assert f"- ⚠️ read in part: workflow_error_rate: {UNREAD} (no_go_workflows, go_workflows)" in text, text


def test_the_soak_view_shows_the_unread_hours_with_the_criteria_and_the_check():
    verdict, obs, events = windowed_run(1.0)
    snap = sv.Snapshot("migration_soak", "run", "success", {"time_scale": 1.0}, events[-1]["at"] + timedelta(minutes=1),
                       plan=PLAN, time_scale=1.0, events=events, tasks={"conclude": "success"}, observations=obs)
    snap.verdict = sv.shown_verdict(snap, verdict)
    snap.analysis = analyse(PLAN, snap.verdict, obs, events, 1.0)
    snap.marks = chart_marks(snap.analysis)
    details = {c["id"]: c["detail"] for c in sv.summary(snap)["criteria"]}
    assert f"met on {UNREAD}" in details["go_workflows"] and f"clear on {UNREAD}" in details["no_go_workflows"]
    page = sv._criteria_section(snap) + sv._checks_section(snap, "")
    assert page.count("12:00 of 24:00 soak hours") >= 3, page  # both criteria and the check's card


def test_a_compressed_report_says_nothing_more():
    """At ×300 one wall hour covers the soak: the texts are as before (the banner says the rest)."""
    verdict, obs, events = windowed_run(300.0)
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    assert "read in part" not in text and "soak hours" not in text
    assert "| ✅ met |" in _line(text, "| `workflow_error_rate`")


def test_counts_of_the_last_hour_say_which_soak_hours_they_did_not_read():
    """executions_last_hour and recent_executions count the last hour's executions too (the
    SQL's NOW() - INTERVAL '1 hour'), but without window_minutes their readings carried no
    window: a real-time report said "✅ met" for executions_last_hour, read every 4 hours in
    the passive phase, with no word of the 12 passive hours no reading saw."""
    from migration_soak.sources.sql import value_of

    columns = {"executions_last_hour": "executions_last_hour", "recent_executions": "total_executions"}
    evidence = {cid: value_of(PLAN.check(cid), [col], [(120,)]).evidence for cid, col in columns.items()}
    assert {cid: e.get("window_s") for cid, e in evidence.items()} == {cid: 3600 for cid in columns}
    verdict, obs, events = go_run(1.0, readings=lambda obs: [
        replace(o, evidence=evidence[o.check_id]) if o.check_id in columns else o for o in obs])
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    for cid in columns:
        row = _line(text, f"| `{cid}`")
        assert "✅ met on" in row and "readings whose 60-min windows cover" in row and "not read" in row, row
    verdict, obs, events = go_run(300.0, readings=lambda obs: [
        replace(o, evidence=evidence[o.check_id]) if o.check_id in columns else o for o in obs])
    compressed = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    assert _line(compressed, "| `executions_last_hour`").endswith("| ✅ met |")  # every wall hour spans the soak
