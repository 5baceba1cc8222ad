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


def test_every_task_has_an_owner_no_retries_and_a_failure_callback(dag):
    for task in dag.tasks:
        assert task.owner == "platform", task.task_id
        assert task.retries == 0, task.task_id  # a retried migration or rollback must be deliberate
        assert task.on_failure_callback, task.task_id


def test_shape_backup_migrate_verify_then_checks_then_branch(dag):
    up = lambda tid: {t.task_id for t in dag.task_dict[tid].upstream_list}  # noqa: E731
    assert up("migrate") == {"backup"}
    assert up("verify") == {"migrate"}
    assert up("backup") == {"preflight"}
    assert up("hour0_checks") >= {"restart_apps"}
    assert up("soak_checks") >= {"hour0_checks"}
    assert up("decide") == {"soak_checks"}
    assert {t.task_id for t in dag.task_dict["decide"].downstream_list} == {"go.sign_off", "go.report", "rollback.notify_rollback"}
    rollback = [t for t in dag.task_dict if t.startswith("rollback.")]
    assert set(rollback) == {"rollback.notify_rollback", "rollback.restore", "rollback.mark_ledger",
                             "rollback.restart_after_rollback", "rollback.health", "rollback.post_mortem"}
    assert up("conclude") == {"go.report", "rollback.post_mortem"}


def test_check_tasks_wait_in_reschedule_mode(dag):
    from migration_soak.airflow.operators import CheckSensor

    for tid in ("hour0_checks", "soak_checks"):
        assert dag.task_dict[tid].operator_class is CheckSensor
        assert "mode" not in dag.task_dict[tid].partial_kwargs  # nothing overrides the default below
    sensor = CheckSensor(task_id="probe", item={}, hour0="", time_scale=1, plan="default")
    assert sensor.reschedule  # frees the worker slot between ticks


def test_trigger_form_params(dag):
    params = dag.params
    assert set(params.keys()) == {"plan", "environment", "time_scale", "require_sign_off"}
    assert params["plan"] == "default"
    assert params["time_scale"] == 1.0
