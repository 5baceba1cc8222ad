"""The INCONCLUSIVE question (builder.py's ``human_decision`` HITL task) and its Slack
notice: built at run time from the verdict and the run's clock, so a person choosing GO
on a compressed clock is told it is demonstration evidence, not a 24-hour soak (as the
QA sign-off question already was)."""

from __future__ import annotations

from migration_soak import notify
from migration_soak.airflow.builder import build_dag
from migration_soak.plan import load_plan

PLAN = load_plan("default")
REASONS = ["go_auth_error_rate: not_met: 0.5% at regular tick 3", "no_go_db_cpu: not judged"]


class _TI:
    def __init__(self, pushed):
        self.pushed = pushed

    def xcom_pull(self, task_ids, key="return_value"):
        return self.pushed.get((task_ids, key))


def test_the_question_on_a_compressed_clock_says_it_is_demonstration_evidence():
    """(h-ui) At time_scale 300 Required actions read 'The soak of ... is INCONCLUSIVE: GO
    or roll back?' and the judge's reasons, nothing else: a 4.8-minute soak asked for a GO
    as if it were the 24-hour one; the sign-off question named the clock, this did not."""
    task = build_dag("default", PLAN).get_task("human_decision")
    question = notify.inconclusive_question(PLAN, REASONS, 300.0)
    rendered = task.render_template(task.body, {"ti": _TI({("judge_soak", "human_question"): question})})
    assert "compressed clock x300: demonstration evidence, not a 24-hour soak" in rendered, rendered
    assert "not an approval for production" in rendered
    for reason in REASONS:  # one Markdown list item each, not run together in one paragraph
        assert f"\n- {reason}" in rendered, rendered
    assert "**Roll back**" in rendered and "4 h" in rendered  # the default when nobody answers


def test_the_question_in_real_time_names_no_clock_and_slack_carries_the_caveat():
    question = notify.inconclusive_question(PLAN, REASONS, 1.0)
    assert "compressed" not in question and "INCONCLUSIVE" in question
    assert "compressed clock x300: demonstration evidence" in notify.inconclusive_text(PLAN, REASONS, 300.0)
    assert "compressed" not in notify.inconclusive_text(PLAN, REASONS, 1.0)


def test_without_a_pushed_question_the_body_claims_nothing():
    task = build_dag("default", PLAN).get_task("human_decision")
    empty = task.render_template(task.body, {"ti": _TI({})})
    assert "could not be built" in empty and "GO criteria" not in empty


def test_the_question_on_a_stretched_clock_says_it_is_not_an_approval_either():
    """(review3) On a stretched clock (time_scale below 1, allowed down to 168 h of wall
    time) the question said nothing of approval, as if a GO there approved production."""
    question = notify.inconclusive_question(PLAN, REASONS, 0.5)
    assert "stretched clock x0.5" in question and "not an approval for production" in question, question
    assert "not an approval" not in notify.inconclusive_question(PLAN, REASONS, 1.0)
