"""The QA sign-off question (builder.py's ``sign_off`` HITL task): its body is built at run
time from the recorded verdict and decision, so it never tells QA more than was decided."""

from __future__ import annotations

from migration_soak import decision, notify
from migration_soak.airflow.builder import build_dag
from migration_soak.plan import load_plan

PLAN = load_plan("default")
OVERRIDE = decision.candidate("INCONCLUSIVE", decision.Answer("GO", "alice"), "ask",
                              ["go_cache_hit_rate: not_met: 0.42 at regular tick 3"])


def test_sign_off_question_does_not_claim_go_criteria_met_after_a_person_overrode_inconclusive():
    """(review h-claims) ask_sign_off asks QA after a person chose GO on an INCONCLUSIVE
    verdict; the question QA reads must not say the soak met its GO criteria."""
    assert decision.needs_sign_off(OVERRIDE, True)  # QA is asked after the override...
    dag = build_dag("default", load_plan("default"))
    body = dag.get_task("sign_off").body
    # ...and must not be told, unconditionally, that the soak met its GO criteria.
    assert "met its GO criteria" not in body, body


def test_the_question_names_who_overrode_which_verdict_and_why_it_was_inconclusive():
    body = notify.sign_off_question(PLAN, OVERRIDE, 1.0)
    assert "met its GO criteria" not in body
    assert "INCONCLUSIVE" in body and "alice" in body and "go_cache_hit_rate: not_met" in body
    assert "compressed" not in body
    assert "Equipo de QA aprueba testing manual" in body and "No hay tickets de soporte" in body


def test_the_question_after_a_judges_go_says_so_and_names_a_compressed_clock():
    before = decision.candidate("GO", None, "ask", ["all 8 GO criteria met"])
    body = notify.sign_off_question(PLAN, before, 1.0)
    assert "The judge's verdict is GO: all 8 GO criteria met" in body and "overrode" not in body
    fast = notify.sign_off_question(PLAN, before, 300.0)
    assert "compressed clock x300: demonstration evidence, not a 24-hour soak" in fast


def test_the_question_on_any_other_clock_says_approving_is_not_an_approval_for_production():
    """(review3) QA was asked to approve a GO on a compressed or stretched clock with the
    clock named but not what approving it means; Slack's GO and the report say it approves
    nothing for production."""
    before = decision.candidate("GO", None, "ask", ["all 8 GO criteria met"])
    for scale in (300.0, 0.5):
        body = notify.sign_off_question(PLAN, before, scale)
        assert "it is not an approval for production, which takes a real-time soak (time_scale 1)" in body, body
    assert "not an approval" not in notify.sign_off_question(PLAN, before, 1.0)


def test_the_sign_off_body_is_a_template_of_what_ask_sign_off_pushed():
    """Airflow renders HITLOperator's ``body`` (a template field) when the task runs: the
    body pulls the question ask_sign_off built from the recorded verdict and decision."""
    task = build_dag("default", PLAN).get_task("sign_off")
    assert "body" in task.template_fields
    assert "xcom_pull(task_ids='ask_sign_off', key='sign_off_question')" in task.body


class _TI:
    def __init__(self, pushed):
        self.pushed = pushed

    def xcom_pull(self, task_ids, key="return_value"):
        return self.pushed.get((task_ids, key))


def test_the_rendered_body_is_the_pushed_question_and_claims_nothing_without_one():
    task = build_dag("default", PLAN).get_task("sign_off")
    question = notify.sign_off_question(PLAN, OVERRIDE, 300.0)
    rendered = task.render_template(task.body, {"ti": _TI({("ask_sign_off", "sign_off_question"): question})})
    assert rendered == question
    assert "alice overrode it and chose GO" in rendered and "compressed clock x300" in rendered
    empty = task.render_template(task.body, {"ti": _TI({})})
    assert "could not be built" in empty and "GO criteria" not in empty
