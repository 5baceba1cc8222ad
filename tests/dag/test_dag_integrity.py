"""DAG integrity: it imports without errors and without I/O, and has the binding shape."""

import socket

import pytest
from airflow.dag_processing.dagbag import DagBag

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def dag():
    real_connect = socket.socket.connect

    def no_network(self, *a, **kw):  # any connection at parse time is a defect
        raise AssertionError(f"network I/O at DAG import: {a}")

    socket.socket.connect = no_network
    try:
        bag = DagBag(str(ROOT / "dags"))
    finally:
        socket.socket.connect = real_connect
    assert bag.import_errors == {}
    return bag.dags["migration_soak"]


def test_every_task_has_an_owner_retries_only_where_idempotent_and_a_failure_callback(dag):
    from migration_soak.airflow.builder import CHECK_RETRIES
    from migration_soak.airflow.rollback_tasks import RESTORE_RETRIES
    from migration_soak.airflow.sensors import CheckSensor, GuardSensor

    for task in dag.tasks:
        assert task.owner == "platform", task.task_id
        if isinstance(task, (CheckSensor, GuardSensor)):
            # idempotent by tick (the store), so a retry resumes; it never re-measures a tick
            assert task.retries == CHECK_RETRIES, task.task_id
        elif task.task_id == "rollback.restore":
            # idempotent and resumable (rollback.py): a worker lost mid-restore is redone
            # (tests/e2e/test_soak.py kills the worker running it)
            assert task.retries == RESTORE_RETRIES >= 1, task.task_id
        else:
            assert task.retries == 0, task.task_id  # a retried migration or rollback must be deliberate
        assert task.on_failure_callback, task.task_id


def test_shape_backup_migrate_verify_then_checks_then_branch(dag):
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    up = lambda tid: {t.task_id for t in dag.task_dict[tid].upstream_list}  # noqa: E731
    # the baseline is measured before the backup; the fingerprint between backup and migration
    assert up("start_baseline") == {"preflight"}
    assert up("backup") == {f"baseline.{c}" for c in plan.baseline.checks}
    assert up("rehearse") == {"backup"}  # the rollback rehearsed before staging is touched
    assert up("fingerprint") == {"rehearse"}
    assert up("migrate") == {"fingerprint"}
    assert up("verify") == {"migrate"}
    # every check visible by name in the grid: one task per phase and check
    for phase in ["hour0", "intensive", "regular", "passive"]:
        for check in plan.checks_in(phase):
            assert f"{phase}.{check.id}" in dag.task_dict
    assert up("hour0.auth_error_rate") == {"restart_apps"}
    assert up("start_clock") == {f"hour0.{c.id}" for c in plan.checks_in("hour0")}
    assert up("intensive.login_p95") == {"start_clock"}
    # every phase starts with the clock and waits for its own first tick (no phase waits
    # for the previous one to end: its tasks would start only when its first tick is due)
    assert up("regular.login_p95") == up("passive.login_p95") == {"start_clock"}
    # ready together, started in the order of their first tick (the guard with the first)
    weight = lambda tid: dag.task_dict[tid].priority_weight  # noqa: E731
    assert weight("guard") == weight("intensive.login_p95") > weight("regular.login_p95") > weight("passive.login_p95")
    assert dag.task_dict["passive.login_p95"].weight_rule == "absolute"
    # the guard runs beside the phases; the judge waits for all of them
    assert up("guard") == {"start_clock"}
    assert up("judge_soak") == {f"{p.name}.{c.id}" for p in plan.phases for c in plan.checks_in(p.name)} | {"guard"}
    # it runs whatever failed upstream: after the migration, a failure is judged (at best INCONCLUSIVE), not
    # left with the columns dropped and no decision; before it, judge_soak skips itself
    assert dag.task_dict["judge_soak"].trigger_rule == "all_done"
    assert dag.task_dict["fingerprint"].trigger_rule == "none_failed"  # after a rehearsal skipped above its size limit
    down = lambda tid: {t.task_id for t in dag.task_dict[tid].downstream_list}  # noqa: E731
    assert down("judge_soak") == {"human_decision", "ask_sign_off"}
    assert up("ask_sign_off") == {"judge_soak", "human_decision"}
    assert down("ask_sign_off") == {"sign_off", "decide"}
    assert up("decide") == {"ask_sign_off", "sign_off"}
    # the final branch: GO (the report) or the rollback group, nothing else
    assert down("decide") == {"report", "rollback.notify_rollback"}
    rollback = [t for t in dag.task_dict if t.startswith("rollback.")]
    assert set(rollback) == {"rollback.notify_rollback", "rollback.restore", "rollback.mark_ledger",
                             "rollback.restart_after_rollback", "rollback.health", "rollback.post_mortem"}
    assert up("release") == {"report", "rollback.post_mortem"}
    assert dag.task_dict["release"].trigger_rule == "all_done"  # the environment is given back whatever happened
    assert up("conclude") == {"release"}


def test_check_tasks_are_deferrable_sensors_with_a_real_timeout(dag):
    from migration_soak.airflow.sensors import DEFAULT_TIMEOUT_S, CheckSensor, GuardSensor
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    sensors = [t for t in dag.tasks if isinstance(t, (CheckSensor, GuardSensor))]
    phases = ["baseline", "hour0"] + [p.name for p in plan.phases]
    assert len(sensors) == sum(len(plan.checks_in(p)) for p in phases) + 1
    # they wait deferred (a trigger in the triggerer), never in reschedule mode
    assert not any(s.reschedule for s in sensors)
    assert all(s.timeout == DEFAULT_TIMEOUT_S for s in sensors)
    checks = [s for s in sensors if isinstance(s, CheckSensor)]
    assert {(s.phase, s.check_id) for s in checks} == {(p, c.id) for p in phases for c in plan.checks_in(p)}
    assert all(s.task_id.endswith("." + s.check_id) for s in checks)


def test_human_questions_default_to_the_safe_answer_on_timeout(dag):
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    human, sign_off = dag.task_dict["human_decision"], dag.task_dict["sign_off"]
    assert human.defaults == ["Roll back"] and sign_off.defaults == ["Reject"]
    assert sign_off.options == ["Approve", "Reject"] and "comment" in sign_off.params
    assert sign_off.response_timeout.total_seconds() == plan.verdict.sign_off_timeout_hours * 3600
    assert human.assigned_users is None and sign_off.assigned_users is None  # the default plan names nobody


def test_the_qa_sign_off_is_answered_only_by_the_users_the_plan_names():
    from migration_soak.airflow.builder import build_dag
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    verdict = plan.verdict.model_copy(update={"sign_off_by": ["qa-lead", "qa-2"], "decided_by": ["oncall"]})
    dag = build_dag("default", plan.model_copy(update={"verdict": verdict}))
    assert dag.task_dict["sign_off"].assigned_users == [{"id": "qa-lead", "name": "qa-lead"},
                                                        {"id": "qa-2", "name": "qa-2"}]
    assert dag.task_dict["human_decision"].assigned_users == [{"id": "oncall", "name": "oncall"}]


def test_trigger_form_params(dag):
    params = dag.params
    assert set(params.keys()) == {"plan", "environment", "time_scale", "clock_lead_s", "require_sign_off",
                                  "on_inconclusive"}
    assert params["plan"] == "default"
    assert params["environment"] == "staging"
    assert params["time_scale"] == 1.0
    assert params["clock_lead_s"] == 10.0


def test_an_invalid_plan_file_does_not_hide_the_other_soaks(tmp_path):
    """A typo in one plan must not take every soak DAG down (all plans are built by the
    one DAG file): the broken plan's DAG only fails with the plan's error."""
    import shutil

    from airflow.sdk.exceptions import AirflowFailException

    from migration_soak.airflow.builder import build_all
    from migration_soak.plan import PLANS_DIR

    shutil.copy(PLANS_DIR / "default.yaml", tmp_path / "default.yaml")
    text = (PLANS_DIR / "default.yaml").read_text()
    (tmp_path / "canary.yaml").write_text(text.replace("report_location:", "report_locaton:"))
    dags = build_all(tmp_path)
    assert set(dags) == {"migration_soak", "migration_soak__canary"}
    assert len(dags["migration_soak"].tasks) > 40  # the whole soak
    broken = dags["migration_soak__canary"]
    assert [t.task_id for t in broken.tasks] == ["plan_error"] and "plan-error" in broken.tags
    assert "report_locaton" in broken.doc_md
    with pytest.raises(AirflowFailException, match=r"canary.yaml: report_locaton: Extra inputs are not permitted"):
        broken.get_task("plan_error").python_callable(*broken.get_task("plan_error").op_args)


def test_a_plan_whose_dag_cannot_be_built_does_not_hide_the_other_soaks(tmp_path, monkeypatch):
    """Only a PlanError got the stand-in: any other error while building one plan's DAG
    (a phase called 'rollback' and a check named twice in baseline.checks both raised
    DuplicateTaskIdFound before the plan refused them) escaped build_all, and the DAG file
    lost every soak DAG, the default one too."""
    import shutil

    from airflow.sdk.exceptions import AirflowFailException

    from migration_soak.airflow import builder
    from migration_soak.plan import PLANS_DIR

    shutil.copy(PLANS_DIR / "default.yaml", tmp_path / "default.yaml")
    shutil.copy(PLANS_DIR / "default.yaml", tmp_path / "odd.yaml")
    real = builder.build_dag

    def build(stem, plan):
        if stem == "odd":
            raise KeyError("something no plan rule foresaw")
        return real(stem, plan)

    monkeypatch.setattr(builder, "build_dag", build)
    dags = builder.build_all(tmp_path)
    assert set(dags) == {"migration_soak", "migration_soak__odd"}
    assert len(dags["migration_soak"].tasks) > 40
    broken = dags["migration_soak__odd"]
    assert [t.task_id for t in broken.tasks] == ["plan_error"]
    with pytest.raises(AirflowFailException, match=r"odd.yaml: its DAG could not be built: KeyError: 'something no "
                                                    r"plan rule foresaw'"):
        broken.get_task("plan_error").python_callable(*broken.get_task("plan_error").op_args)
