"""migration_soak: take one schema migration through a staging soak, then GO or roll back.

Backup -> migrate deploy -> verify -> restart apps -> hour-0 checks -> the phased checks
(one sensor per phase and check, waking at each tick) -> decide -> GO (sign-off,
report) or the rollback group -> conclude. The plan (``include/plans/<plan>.yaml``)
says what is measured and judged; this file only wires tasks. No I/O at import.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, TaskGroup, dag
from airflow.providers.standard.operators.hitl import ApprovalOperator

from migration_soak import notify
from migration_soak.airflow import tasks as t
from migration_soak.airflow.operators import CheckSensor

CHECK_ARGS = dict(
    hour0="{{ ti.xcom_pull(task_ids='verify') }}",
    time_scale="{{ params.time_scale }}",
    plan="{{ params.plan }}",
    map_index_template="{{ task.item['phase'] }} · {{ task.item['check'] }}",
)


@dag(
    dag_id="migration_soak",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["migration", "soak", "postgres"],
    default_args={
        "owner": "platform",
        "retries": 0,
        "on_failure_callback": notify.on_task_failure,
    },
    doc_md=__doc__,
    params={
        "plan": Param("default", type="string", pattern=r"^[A-Za-z0-9_./-]+$",
                      description="Plan name under include/plans/ (or a path to a plan YAML)."),
        "environment": Param("staging", type="string", enum=["staging", "preprod", "dev"],
                             description="Must match the plan's environment."),
        "time_scale": Param(1.0, type="number", exclusiveMinimum=0, maximum=100000,
                            description="Soak clock speed-up: 1 = real time (24 h); 360 = 24 h in 4 minutes."),
        "require_sign_off": Param(False, type="boolean",
                                  description="Ask a person to approve in the UI before GO (QA sign-off)."),
    },
)
def migration_soak():
    hour0_items = t.load()
    soak_items = t.schedule(hour0_items)
    record = t.backup()
    soak_items >> t.preflight() >> record
    restarted = t.restart_apps(t.verify(t.migrate(record)))

    hour0_checks = CheckSensor.partial(task_id="hour0_checks", **CHECK_ARGS).expand(item=hour0_items)
    soak_checks = CheckSensor.partial(task_id="soak_checks", **CHECK_ARGS).expand(item=soak_items)
    restarted >> hour0_checks >> soak_checks

    decision = t.decide()
    soak_checks >> decision

    with TaskGroup("go") as go:
        sign_off = ApprovalOperator(
            task_id="sign_off",
            subject="Approve GO for production?",
            body="The soak met every GO criterion. QA sign-off and no related support tickets (seed GO criteria).",
            response_timeout=timedelta(hours=24),
        )
        report = t.report()
        sign_off >> report

    with TaskGroup("rollback") as rollback:
        restored = t.restore()
        t.notify_rollback() >> restored
        restarted_again = t.restart_after_rollback()
        t.mark_ledger(restored) >> restarted_again
        t.post_mortem(t.health(restarted_again))

    # The branch picks among its direct downstreams: sign_off, report, notify_rollback.
    decision >> [sign_off, report, rollback]
    [go, rollback] >> t.conclude()


migration_soak()
