"""The tasks' glue run in-process on a fake context and store: what they record, push,
branch to, post to Slack and fail with (the texts the DAG's runs show)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from migration_soak import notify, runbook
from migration_soak.airflow import context as c
from migration_soak.airflow import rollback_tasks as rb
from migration_soak.airflow import tasks as t
from migration_soak.decision import APPROVE_OPTION, Decision, decision_event
from migration_soak.exceptions import MigrationError
from migration_soak.plan import load_plan
from tests.unit.test_runbook import STAGING, FakeStore

PLAN = load_plan("default")


class FakeTI:
    def __init__(self, xcoms: dict | None = None):
        self.xcoms = dict(xcoms or {})
        self.pushed: dict[str, object] = {}

    def xcom_pull(self, task_ids, key="return_value"):
        return self.xcoms.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[key] = value


@pytest.fixture
def run(monkeypatch):
    """A run of the default plan on a FakeStore; Slack messages collected in ``run.posted``."""
    store, ti = FakeStore(), FakeTI()
    ctx = {"params": {"plan": "default", "environment": "staging", "time_scale": 1.0, "require_sign_off": True,
                      "on_inconclusive": "ask"}, "run_id": "r1", "ti": ti}
    monkeypatch.setattr(t, "get_current_context", lambda: ctx)
    monkeypatch.setattr(c, "get_current_context", lambda: ctx)
    monkeypatch.setattr(t.Store, "from_airflow", classmethod(lambda cls, conn_id: store))
    monkeypatch.setattr(c, "identity", lambda plan: STAGING)
    monkeypatch.setattr(t, "identity", lambda plan: STAGING)
    posted: list[str] = []
    monkeypatch.setattr(notify, "send", lambda text, conn_id=None, **kw: posted.append(text) or True)
    store.ti, store.posted = ti, posted
    return store


def test_decide_records_the_sign_off_and_the_decision_and_branches(run):
    run.ti.xcoms[("ask_sign_off", "candidate")] = Decision("GO", "proceed", "judge", "all met").to_dict()
    run.ti.xcoms[("sign_off", "return_value")] = {"chosen_options": ["Reject"], "responded_by_user": {"name": "qa"},
                                                  "params_input": {"comment": "broken"}}
    assert t.decide.function() == ["rollback.notify_rollback"]
    assert run.kinds() == ["sign_off", "decision"]
    assert run.recorded[0][2]["text"] == "QA sign-off rejected by qa: broken"
    assert run.recorded[1][2]["text"] == ("NO-GO, rollback: QA rejected the sign-off: broken "
                                          "(decided by person:qa)")
    rb.notify_rollback.function()
    reason = "ROLLBACK INITIATED - Reason: NO_GO: QA rejected the sign-off: broken"
    assert run.recorded[-1] == ("r1", "rollback_started", {"text": reason, "notified": True})
    assert run.posted == [f":rotating_light: [staging] {PLAN.migration.name}: {reason}"]


@pytest.mark.parametrize("on_rejected", ["rollback", "keep"])
def test_a_decide_cleared_after_the_rollback_started_cannot_turn_it_into_go_or_keep(run, monkeypatch, on_rejected):
    # Found by review: QA rejected, the rollback gave the columns back; then the operator
    # cleared sign_off (and its downstream) in the UI and QA approved: decide recorded GO,
    # report posted "verdict: GO" and conclude turned the run green for a migration that
    # is no longer applied.
    rejected = Decision("NO_GO", "rollback", "person:qa", "QA rejected the sign-off: broken", "GO")
    run.add_event("r1", "decision", decision_event(rejected))
    run.add_event("r1", "rollback_started", {"text": "ROLLBACK INITIATED - Reason: NO_GO: broken", "notified": True})
    run.add_event("r1", "rollback_completed", {})
    run.ti.xcoms[("ask_sign_off", "candidate")] = Decision("GO", "proceed", "judge", "all met", "GO").to_dict()
    run.ti.xcoms[("sign_off", "return_value")] = {"chosen_options": [APPROVE_OPTION], "responded_by_user": "qa"}
    plan = PLAN.model_copy(update={"verdict": PLAN.verdict.model_copy(update={"on_sign_off_rejected": on_rejected})})
    monkeypatch.setattr(t, "load_plan", lambda name: plan)
    monkeypatch.setattr(c, "load_plan", lambda name: plan)
    with pytest.raises(AirflowFailException) as err:
        t.decide.function()
    assert str(err.value) == (
        "this run already started rolling back (ROLLBACK INITIATED - Reason: NO_GO: broken): the migration is no "
        "longer applied, so a new decision (GO, proceed: all met; QA sign-off approved by qa) cannot stand; trigger a "
        "new run to soak it again")
    assert runbook.recorded_decision(run, "r1") == rejected
    with pytest.raises(AirflowFailException, match="^NO-GO: QA rejected the sign-off: broken; rollback completed$"):
        t.conclude.function()
    # The same decision again (the rollback group re-run, which is idempotent) is allowed.
    run.ti.xcoms[("sign_off", "return_value")] = {"chosen_options": ["Reject"], "responded_by_user": "qa",
                                                  "params_input": {"comment": "broken"}}
    if on_rejected == "rollback":
        assert t.decide.function() == ["rollback.notify_rollback"]


def test_the_rollback_goes_on_when_slack_is_down_and_its_start_says_so(run, monkeypatch):
    run.add_event("r1", "decision", decision_event(Decision("NO_GO", "rollback", "judge", "errors 2%")))
    monkeypatch.setattr(notify, "send", lambda text, conn_id=None, **kw: False)  # what send says when Slack is down
    rb.notify_rollback.function()
    assert run.recorded[-1] == ("r1", "rollback_started", {"text": "ROLLBACK INITIATED - Reason: NO_GO: errors 2%",
                                                           "notified": False})


def test_an_approved_go_goes_to_the_report(run):
    run.ti.xcoms[("ask_sign_off", "candidate")] = Decision("GO", "proceed", "judge", "all met").to_dict()
    run.ti.xcoms[("sign_off", "return_value")] = {"chosen_options": [APPROVE_OPTION], "responded_by_user": "qa"}
    assert t.decide.function() == ["report"]
    assert runbook.recorded_decision(run, "r1") == Decision("GO", "proceed", "person:qa", "all met; QA sign-off "
                                                                                          "approved by qa")


@pytest.mark.parametrize("events, message", [
    ([], "the soak reached no decision: see the failed task above"),
    ([("decision", decision_event(Decision("NO_GO", "rollback", "judge", "errors 2%"))), ("rollback_completed", {})],
     "NO-GO: errors 2%; rollback completed"),
    ([("decision", decision_event(Decision("GO", "proceed", "judge", "ok")))],
     "GO was decided but the report was not written (task report failed): not a GO until it is"),
])
def test_conclude_fails_with_the_reason(run, events, message):
    for kind, payload in events:
        run.add_event("r1", kind, payload)
    with pytest.raises(AirflowFailException) as err:
        t.conclude.function()
    assert str(err.value) == message


def test_conclude_wants_the_report_of_the_last_decision_not_an_earlier_one(run):
    # Found by review: QA rejected with on_sign_off_rejected=keep, so report wrote the
    # report of that NO-GO; the operator cleared sign_off, QA approved, decide recorded GO,
    # and the report task failed this time: conclude found the earlier report event and
    # turned the run green for a GO whose report (and Slack GO) never came.
    kept = Decision("NO_GO", "keep", "person:qa", "QA rejected the sign-off: wait for the fix", "GO")
    run.add_event("r1", "decision", decision_event(kept))
    run.add_event("r1", "report", {"path": "x"})
    run.add_event("r1", "decision", decision_event(Decision("GO", "proceed", "person:qa", "ok", "GO")))
    with pytest.raises(AirflowFailException, match="^GO was decided but the report was not written"):
        t.conclude.function()
    run.add_event("r1", "report", {"path": "y"})
    assert t.conclude.function() == "GO"


def test_conclude_succeeds_for_a_go_with_its_report(run):
    run.add_event("r1", "decision", decision_event(Decision("GO", "proceed", "judge", "ok")))
    run.add_event("r1", "report", {"path": "x"})
    assert t.conclude.function() == "GO"


def test_preflight_fails_the_task_with_the_runbook_message(run, monkeypatch):
    def refuse(*a, **kw):
        raise MigrationError("3 users have no authorizerId: the migration must not start")

    monkeypatch.setattr(t, "direct", lambda plan: None)
    monkeypatch.setattr(c, "direct", lambda plan: None)
    monkeypatch.setattr(runbook, "preflight", refuse)
    with pytest.raises(AirflowFailException, match="^3 users have no authorizerId: the migration must not start$"):
        t.preflight.function()


def test_health_fails_the_task_when_a_column_is_missing(run, monkeypatch):
    monkeypatch.setattr(rb.sources, "measure", lambda check, plan: type("M", (), {"value": 1.0})())
    monkeypatch.setattr(c, "run_readonly", lambda conn_id, sql: (["column_name"], [("passwordHash",)]))
    with pytest.raises(AirflowFailException) as err:
        rb.health.function(200)
    assert str(err.value) == ("post-rollback health failed: {'gateway_health': 1.0, 'authorizer_health': 1.0, "
                              "'columns_back': ['passwordHash']}")
    assert run.recorded[-1][1] == "health" and run.recorded[-1][2]["ok"] is False


def test_ask_sign_off_pushes_the_question_built_from_the_verdict_and_the_person_s_go(run):
    """The sign_off task's body pulls this: after a person's GO over an INCONCLUSIVE verdict
    it names the person and what was inconclusive, never "met its GO criteria"."""
    from migration_soak.judge import Verdict

    run.ti.xcoms[("judge_soak", "verdict")] = Verdict("INCONCLUSIVE", ["go_cache_hit_rate: not_met: 0.42"], [],
                                                      []).to_dict()
    run.ti.xcoms[("human_decision", "return_value")] = {"chosen_options": ["GO"], "responded_by_user": "alice"}
    assert t.ask_sign_off.function() == ["sign_off", "decide"]
    question = run.ti.pushed["sign_off_question"]
    assert "**alice overrode it and chose GO**" in question and "go_cache_hit_rate: not_met: 0.42" in question
    assert "met its GO criteria" not in question


def test_the_report_task_tells_slack_the_sign_off_it_recorded(run, monkeypatch):
    monkeypatch.setattr(t, "write_report", lambda: "/reports/soak-r1.md")
    run.add_event("r1", "sign_off", {"state": "approved", "by": "qa", "comment": "", "text": "approved"})
    run.add_event("r1", "decision", decision_event(Decision("GO", "proceed", "person:qa", "all met; QA sign-off "
                                                            "approved by qa", "GO")))
    t.report.function()
    assert run.posted == [f":large_green_circle: [staging] soak of `{PLAN.migration.name}` verdict: GO: all met; QA "
                          "sign-off approved by qa; approved for production (Equipo de QA aprueba testing manual: "
                          "approved by qa; No hay tickets de soporte relacionados: approved by qa); report soak-r1.md"]


@pytest.mark.parametrize("lead", [float("nan"), -1.0, 601.0, "10", True])
def test_load_refuses_a_clock_lead_that_start_clock_cannot_use_before_anything_touches_staging(run, monkeypatch, lead):
    # Found by review: NaN passes the Param's JSON schema (NaN < 0 and NaN > 600 are both
    # false) and `airflow dags trigger -c '{"clock_lead_s": NaN}'` sends it; load did not
    # look at clock_lead_s, so backup and migrate ran and start_clock failed after the
    # columns were dropped ("cannot convert float NaN to integer").
    monkeypatch.setattr(t, "probe", lambda root: None)
    monkeypatch.setattr(t, "plan_root", lambda plan: None)
    run.create_schema = lambda: None
    ctx = t.get_current_context()
    ctx["params"]["clock_lead_s"] = lead
    with pytest.raises(AirflowFailException) as err:
        t.load.function()
    assert str(err.value) == f"clock_lead_s must be a number of seconds in [0, 600], got {lead!r}"
    assert run.lease is None  # refused before the lease, like time_scale
    ctx["params"]["clock_lead_s"] = 0
    assert t.load.function() == PLAN.name and run.lease["run_id"] == "r1"


def test_mark_ledger_refuses_when_the_columns_are_not_back(run, monkeypatch):
    # Found by review: restore marked success in the UI (it hung on a lock) restored
    # nothing; mark_ledger then marked the migration rolled back in _prisma_migrations, so
    # the ledger and `prisma migrate status` said "pending" while users had no
    # passwordHash/emailVerified: a green task and a ledger claiming a rollback not done.
    marked: list[str] = []
    monkeypatch.setattr(rb, "direct", lambda plan: None)
    monkeypatch.setattr(rb, "backend", lambda plan: None)
    monkeypatch.setattr(runbook, "mark_rolled_back", lambda *a, **kw: marked.append("ledger"))
    monkeypatch.setattr(runbook, "confirm_with_prisma", lambda *a, **kw: marked.append("prisma"))
    monkeypatch.setattr(rb, "query", lambda plan: lambda text: [("emailVerified",)])
    with pytest.raises(AirflowFailException) as err:
        rb.mark_ledger.function(None)
    assert str(err.value) == (f"marking {PLAN.migration.name} rolled back: users still lacks passwordHash (restore "
                              "did not give it back: was it marked success?); the ledger is left as it is")
    assert marked == []
    monkeypatch.setattr(rb, "query", lambda plan: lambda text: [("emailVerified",), ("passwordHash",)])
    rb.mark_ledger.function({"mismatches": 0})
    assert marked == ["ledger", "prisma"]


def test_judge_soak_asks_a_person_with_the_clock_named_in_the_question_and_on_slack(run, monkeypatch):
    """(h-ui) The human_decision body pulls this: at time_scale 300 it says the soak is
    demonstration evidence, as the sign-off question does."""
    from migration_soak.judge import Verdict

    run.ti.xcoms.clear()
    monkeypatch.setitem(c.get_current_context()["params"], "time_scale", 300.0)
    monkeypatch.setattr(t, "task_states", lambda ctx: {"migrate": "success"})
    monkeypatch.setattr(runbook, "judge_soak", lambda *a, **kw: Verdict("INCONCLUSIVE", ["go_x: not_met: 0.4"], [], []))
    assert t.judge_soak.function() == ["human_decision"]
    question = run.ti.pushed["human_question"]
    assert "compressed clock x300: demonstration evidence, not a 24-hour soak" in question
    assert "\n- go_x: not_met: 0.4" in question
    assert "compressed clock x300" in run.posted[-1] and "Required actions" in run.posted[-1]


def test_health_reads_again_what_decided_the_no_go(run, monkeypatch):
    """sync-drift: step 5 reads users_without_authorizer_id again; the task glue hands it the
    verdict judge_soak pushed (none pushed: nothing read again, as the test above)."""
    from migration_soak.judge import CriterionResult, Verdict

    run.ti.xcoms[("judge_soak", "verdict")] = Verdict("NO_GO", ["x"], [CriterionResult(
        "no_go_users_without_authorizer_id", "no_go", "t", "> 0", "breached", "", ["users_without_authorizer_id"],
        [{"check_id": "users_without_authorizer_id", "phase": "guard", "tick": 12, "value": 5.0}])]).to_dict()
    monkeypatch.setattr(rb.sources, "measure", lambda check, plan: type("M", (), {
        "value": 5.0 if check.id == "users_without_authorizer_id" else 1.0})())
    monkeypatch.setattr(c, "run_readonly", lambda conn_id, sql: (["column_name"], [("passwordHash",), ("emailVerified",)]))
    rb.health.function(200)
    payload = run.recorded[-1][2]
    assert payload["ok"] is True and "read again after the rollback: `users_without_authorizer_id` 5, still meets " \
        "the NO-GO > 0" in payload["text"], payload
