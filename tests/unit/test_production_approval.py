"""Only a real-time GO whose every human gate (runbook "Criterios de Éxito": QA manual
testing, no support tickets) was approved is "APPROVED to proceed to production"."""

from __future__ import annotations

from migration_soak import decision, notify, report

from test_report import PLAN, go_run

APPROVED = {"state": "approved", "by": "qa.lead", "comment": "manual tests passed"}


def _slack(verdict, scale=1.0, sign_off=None, require=False):
    before = decision.candidate("GO", None, "ask", verdict.reasons)
    answer = decision.Answer("Approve", sign_off["by"], sign_off["comment"]) if sign_off else None
    return notify.decision_text(PLAN, decision.decide(before, require, answer, "rollback"), scale, "soak-run.md",
                                sign_off=sign_off)


def test_real_time_go_without_the_qa_sign_off_is_not_approved_for_production():
    """(review h-claims) With require_sign_off off (the default), a real-time GO's report
    closed "APPROVED to proceed to production" and Slack said "verdict: GO: all 8 GO
    criteria met" with no word that the two human GO criteria were never asked."""
    verdict, obs, events = go_run(1.0)
    text = report.render_report(PLAN, "run", verdict, obs, events, 1.0)
    closing = text.split("**Decision:**")[1]
    final = decision.decide(decision.candidate("GO", None, "ask", verdict.reasons), False, None, "rollback")
    slack = notify.decision_text(PLAN, final, 1.0, "soak-run.md")
    problems = []
    if "APPROVED to proceed to production" in closing:
        problems.append(f"report: {closing.strip()}")
    if "sign-off" not in slack and "not asked" not in slack and "QA" not in slack:
        problems.append(f"slack: {slack}")
    assert not problems, problems


def test_the_go_without_gates_names_each_gate_and_its_state_in_report_and_slack():
    verdict, obs, events = go_run(1.0)
    closing = report.render_report(PLAN, "run", verdict, obs, events, 1.0).split("**Decision:**")[1]
    gates = "; ".join(f"{g.text}: not asked" for g in PLAN.human_gates)
    assert f"GO on the measured criteria; not approved for production: {gates}" in closing, closing
    slack = _slack(verdict)
    assert "GO on the measured criteria: all 8 GO criteria met" in slack, slack
    assert f"; not approved for production: {gates}; report soak-run.md" in slack, slack
    assert "verdict: GO" not in slack and "APPROVED" not in slack


def test_a_real_time_go_with_the_sign_off_approved_is_approved_for_production():
    verdict, obs, events = go_run(1.0, sign_off=APPROVED)
    closing = report.render_report(PLAN, "run", verdict, obs, events, 1.0).split("**Decision:**")[1]
    assert "✅ APPROVED to proceed to production" in closing and "not approved" not in closing
    slack = _slack(verdict, sign_off=APPROVED, require=True)
    assert "verdict: GO: " in slack and "approved for production" in slack and "not approved" not in slack, slack


def test_a_compressed_go_is_never_approved_whatever_the_gates():
    verdict, obs, events = go_run(300.0, sign_off=APPROVED)
    closing = report.render_report(PLAN, "run", verdict, obs, events, 300.0).split("**Decision:**")[1]
    assert "APPROVED" not in closing and "not an approval for production" in closing
    slack = _slack(verdict, 300.0, sign_off=APPROVED, require=True)
    assert "demonstration evidence, not a 24-hour soak" in slack and "approved for production" not in slack.replace(
        "not approved for production", "")


def test_a_stretched_go_is_never_approved_on_slack_as_in_the_report():
    """A stretched clock (time_scale below 1, admitted down to the plan's soak in 168 h of
    wall time, clock.slowest_time_scale) is not the plan's soak either: the report closed
    "GO on a stretched clock (time_scale 0.5): demonstration evidence only, not an approval
    for production", while Slack said "verdict: GO (stretched clock x0.5: not the plan's
    soak, ...): all 8 GO criteria met ..." with no word of approval or of the QA sign-off
    never asked (a real-time GO names it: "not approved for production: ... not asked"):
    notify.gates_text left it out, as if the caveat said "demonstration evidence", which only
    the compressed clock's does."""
    verdict, obs, events = go_run(0.5)
    closing = report.render_report(PLAN, "run", verdict, obs, events, 0.5).split("**Decision:**")[1]
    assert "APPROVED" not in closing and "not an approval for production" in closing
    for sign_off in (None, APPROVED):
        slack = _slack(verdict, 0.5, sign_off=sign_off, require=sign_off is not None)
        assert "stretched clock x0.5" in slack, slack
        assert "not an approval for production" in slack, slack
        assert "approved for production" not in slack.replace("not approved for production", ""), slack
