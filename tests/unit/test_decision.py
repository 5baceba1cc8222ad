"""The run's decision (decision.py): every path of the DAG's tail as a pure function."""

import pytest

from migration_soak.decision import Answer, Decision, candidate, decide, needs_sign_off

APPROVE = Answer("Approve", "qa.lead", "manual tests passed")
REJECT = Answer("Reject", "qa.lead", "checkout page broken")
TIMED_OUT = Answer("Reject", None)  # the scheduler applied the default


def final(verdict, human=None, on_inconclusive="ask", require=False, sign_off=None, policy="rollback",
          reasons=None) -> Decision:
    return decide(candidate(verdict, human, on_inconclusive, reasons), require, sign_off, policy)


def test_go_without_sign_off_is_go():
    d = final("GO")
    assert (d.outcome, d.action, d.is_go) == ("GO", "proceed", True)


def test_go_with_approved_sign_off_is_go_and_names_the_approver():
    d = final("GO", require=True, sign_off=APPROVE)
    assert d.is_go and d.by == "person:qa.lead" and "approved by qa.lead" in d.reason


@pytest.mark.parametrize("answer, reason", [
    (REJECT, "QA rejected the sign-off: checkout page broken"),
    (TIMED_OUT, "the QA sign-off timed out without an answer"),
    (None, "the QA sign-off was required but never answered"),
])
def test_a_required_sign_off_that_is_not_approved_is_never_a_go(answer, reason):
    d = final("GO", require=True, sign_off=answer)
    assert (d.outcome, d.action, d.reason) == ("NO_GO", "rollback", reason)
    kept = final("GO", require=True, sign_off=answer, policy="keep")
    assert (kept.outcome, kept.action, kept.is_go) == ("NO_GO", "keep", False)


def test_no_go_rolls_back_and_never_asks_for_sign_off():
    before = candidate("NO_GO", None, "ask")
    assert not needs_sign_off(before, True)
    d = decide(before, True, None, "rollback")
    assert (d.outcome, d.action, d.by) == ("NO_GO", "rollback", "judge")


def test_inconclusive_person_go_is_go_and_still_needs_the_sign_off():
    before = candidate("INCONCLUSIVE", Answer("GO", "oncall"), "ask")
    assert before.is_go and needs_sign_off(before, True)
    assert decide(before, True, REJECT, "rollback").action == "rollback"
    assert decide(before, False, None, "rollback").is_go


@pytest.mark.parametrize("human, policy, outcome, action", [
    (Answer("Roll back", "oncall"), "ask", "INCONCLUSIVE", "rollback"),
    (Answer("Roll back", None), "ask", "INCONCLUSIVE", "rollback"),  # nobody answered: safe default
    (None, "rollback", "INCONCLUSIVE", "rollback"),
    (None, "go", "INCONCLUSIVE", "keep"),  # unattended "go" keeps the migration but is no GO
])
def test_inconclusive_without_a_person_s_go_is_never_a_go(human, policy, outcome, action):
    d = final("INCONCLUSIVE", human, policy, require=True)
    assert (d.outcome, d.action, d.is_go) == (outcome, action, False)


def test_answer_from_the_hitl_operator_result():
    result = {"chosen_options": ["Reject"], "params_input": {"comment": " flaky login "},
              "responded_by_user": {"id": "7", "name": "qa.lead"}, "responded_at": "2026-12-03T10:00:00Z"}
    assert Answer.from_hitl(result) == Answer("Reject", "qa.lead", "flaky login")
    assert Answer.from_hitl({"chosen_options": ["Reject"], "params_input": {}, "responded_by_user": None}).timed_out
    assert Answer.from_hitl(None) is None


def test_unknown_inputs_are_refused_with_the_field_and_value():
    with pytest.raises(ValueError, match="verdict must be GO, NO_GO or INCONCLUSIVE, got 'MAYBE'"):
        candidate("MAYBE", None, "ask")
    with pytest.raises(ValueError, match="on_inconclusive must be ask, rollback or go, got 'wait'"):
        candidate("INCONCLUSIVE", None, "wait")
    with pytest.raises(ValueError, match="on_sign_off_rejected must be rollback or keep, got 'ignore'"):
        decide(candidate("GO", None, "ask"), True, APPROVE, "ignore")


def test_the_judge_s_reasons_travel_into_the_decision():
    d = final("NO_GO", reasons=None)
    assert d.reason == "a NO-GO criterion was breached"
    d = decide(candidate("NO_GO", None, "ask", ["no_go_performance: login_p95 +404 %"]), False, None, "rollback")
    assert d.reason == "no_go_performance: login_p95 +404 %"


# ------------------------------------------------------------------ the events the DAG records


def test_the_human_answer_event_says_who_chose_or_that_nobody_did():
    from migration_soak.decision import human_event

    assert human_event(Answer("GO", "ana")) == {"chosen": ["GO"], "by": "ana", "timed_out": False,
                                                "text": "ana chose GO"}
    assert human_event(Answer("Roll back", None))["text"] == "nobody answered in time: roll back"


@pytest.mark.parametrize("answer, state, text", [
    (APPROVE, "approved", "QA sign-off approved by qa.lead: manual tests passed"),
    (REJECT, "rejected", "QA sign-off rejected by qa.lead: checkout page broken"),
    (TIMED_OUT, "timed_out", "QA sign-off timed out"),
    (Answer("Reject", "qa.lead"), "rejected", "QA sign-off rejected by qa.lead"),
])
def test_the_sign_off_event_states_approved_rejected_or_timed_out(answer, state, text):
    from migration_soak.decision import sign_off_event

    event = sign_off_event(answer)
    assert (event["state"], event["by"], event["comment"], event["text"]) == (state, answer.by, answer.comment, text)


def test_the_decision_event_reads_back_as_the_same_decision():
    from migration_soak.decision import decision_event

    d = final("INCONCLUSIVE", Answer("Roll back", "ana"))
    event = decision_event(d)
    assert event["text"] == "INCONCLUSIVE, rollback: ana chose to roll back (decided by person:ana)"
    assert Decision.from_event(event) == d


@pytest.mark.parametrize("decision, report, rolled_back, why", [
    (None, False, False, "the soak reached no decision: see the failed task above"),
    (Decision("GO", "proceed", "judge", "ok"), True, False, None),
    (Decision("GO", "proceed", "judge", "ok"), False, False,
     "GO was decided but the report was not written (task report failed): not a GO until it is"),
    (Decision("NO_GO", "rollback", "judge", "errors 2%"), True, True, "NO-GO: errors 2%; rollback completed"),
    (Decision("NO_GO", "rollback", "judge", "errors 2%"), True, False,
     "NO-GO: errors 2%; rollback NOT completed: see the failed rollback task"),
    (Decision("INCONCLUSIVE", "keep", "policy:on_inconclusive=go", "kept"), True, False,
     "INCONCLUSIVE, migration kept without a GO: kept"),
    (Decision("NO_GO", "keep", "person:qa", "rejected"), True, False, "NO-GO, migration kept without a GO: rejected"),
])
def test_the_run_is_green_only_for_a_go_whose_report_was_written(decision, report, rolled_back, why):
    from migration_soak.decision import failure

    assert failure(decision, report_written=report, rollback_completed=rolled_back) == why
