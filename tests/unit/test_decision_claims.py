"""What the decision and its Slack message claim when a person overrode the judge."""

from __future__ import annotations

from migration_soak import decision, notify
from migration_soak.plan import load_plan

PLAN = load_plan("default")
REASONS = ["go_cache_hit_rate: not_met: 0.42 at regular tick 3"]


def test_slack_go_after_a_person_overrode_inconclusive_does_not_say_verdict_go():
    """(review h-claims) The judge said INCONCLUSIVE; a person chose GO. Slack must not say
    "verdict: GO" and must keep what was inconclusive."""
    before = decision.candidate("INCONCLUSIVE", decision.Answer("GO", "alice"), "ask", REASONS)
    final = decision.decide(before, False, None, "rollback")
    text = notify.decision_text(PLAN, final, 1.0, "soak-run.md")
    assert "verdict: GO" not in text, text
    assert "go_cache_hit_rate" in text, text


def test_the_override_keeps_the_judges_verdict_and_reasons_through_the_sign_off():
    before = decision.candidate("INCONCLUSIVE", decision.Answer("GO", "alice"), "ask", REASONS)
    assert (before.verdict, before.overridden_by) == ("INCONCLUSIVE", "alice")
    assert before.reason == f"alice chose GO on an INCONCLUSIVE verdict: {REASONS[0]}"
    final = decision.decide(before, True, decision.Answer("Approve", "qa"), "rollback")
    assert (final.verdict, final.overridden_by, final.by) == ("INCONCLUSIVE", "alice", "person:qa")
    assert decision.Decision.from_event(decision.decision_event(final)) == final
    text = notify.decision_text(PLAN, final, 300.0, "soak-run.md")
    assert "decision: GO by alice over an INCONCLUSIVE verdict (compressed clock x300: demonstration" in text, text
    assert REASONS[0] in text and "QA sign-off approved by qa" in text


def test_a_decision_event_recorded_before_the_verdict_was_kept_still_reads_back():
    old = {"outcome": "GO", "action": "proceed", "by": "person:ana", "reason": "ana chose GO on an INCONCLUSIVE verdict",
           "text": "GO, proceed: ..."}
    d = decision.Decision.from_event(old)
    assert (d.verdict, d.overridden_by) == ("", "")
    assert "verdict: GO" not in notify.decision_text(PLAN, d, 1.0, "r.md")  # not known to be the judge's GO
