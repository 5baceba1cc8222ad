"""What the DAG's tasks (``tasks.py``) read from Airflow: the task's context with the run's
plan and store, the plan's connections, the XCom of earlier tasks, an HTTP call; and
:func:`failing`, which turns the package's errors into failed tasks.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from migration_soak import runbook
from migration_soak.decision import Answer
from migration_soak.exceptions import SoakError
from migration_soak.identity import DatabaseIdentity, identify
from migration_soak.judge import Verdict
from migration_soak.migrate import MigrationBackend
from migration_soak.pgconn import PgTarget
from migration_soak.plan import Plan, load_plan
from migration_soak.sources.sql import run_readonly
from migration_soak.store import DagRunKey, Store


@contextmanager
def failing(*errors: type[Exception], prefix: str = "", suffix: str = "") -> Iterator[None]:
    """On ``errors``, fail the task without retry: ``AirflowFailException(prefix + str(exc) +
    suffix)``. Other exceptions propagate unchanged (the failure callback names their class)."""
    try:
        yield
    except errors as exc:
        raise AirflowFailException(f"{prefix}{exc}{suffix}") from exc


def run_context() -> tuple[Any, Plan, str, Store]:
    """The task's context, the run's plan, run id and store; raises ``PlanError``."""
    ctx = get_current_context()
    plan = load_plan(ctx["params"]["plan"])
    return ctx, plan, ctx["run_id"], Store.from_airflow(plan.connections.store)


def staging_context(task: str) -> tuple[Any, Plan, str, Store]:
    """:func:`run_context` of a task that changes staging (``task``: what it does), after
    making sure the run holds the staging database's lease (``runbook.hold``): a task of a
    finished run cleared in the UI fails, naming the run that soaks that database now,
    before touching anything."""
    ctx, plan, run_id, store = run_context()
    with failing(SoakError):
        runbook.hold(plan, run_id, store, ctx["params"]["plan"], f"this run's {task} does not touch it",
                     identify=lambda: identity(plan), identify_plan=plan_identity, dag_run=dag_run_key(ctx))
    return ctx, plan, run_id, store


def dag_run_key(ctx: Any) -> DagRunKey | None:
    """Which Airflow dag run the task belongs to, beyond its run id (``store.DagRunKey``):
    its ``run_after`` (ISO 8601), set when it is created and kept when it is cleared, with
    its ``start_date`` and ``clear_number``: a REST trigger may re-create a deleted run with
    its run id AND its ``run_after``, never with its start (``runbook.admit``). None when the
    context has no dag run."""
    run = ctx.get("dag_run") if hasattr(ctx, "get") else None
    when: Any = getattr(run, "run_after", None)
    if when is None:
        return None
    started = getattr(run, "start_date", None)
    clears = getattr(run, "clear_number", None)
    return DagRunKey(when.isoformat() if isinstance(when, datetime) else str(when),
                     started if isinstance(started, datetime) else None,
                     clears if isinstance(clears, int) else None)


def identity(plan: Plan) -> DatabaseIdentity:
    """The staging database the plan changes (:func:`direct`), as its server names it: the
    lease's key (``identity.identify``; ``SoakError`` when it cannot be read)."""
    return identify(direct(plan), direct_field(plan))


def plan_identity(name: str) -> DatabaseIdentity:
    """:func:`identity` of plan ``name`` (a lease taken before the upgrade names only its plan)."""
    return identity(load_plan(name))


def direct(plan: Plan) -> PgTarget:
    """The staging database for DDL, dumps and locks: ``staging_direct``, else ``staging``."""
    return PgTarget.from_airflow(plan.connections.staging_direct or plan.connections.staging)


def direct_field(plan: Plan) -> str:
    """The plan field naming :func:`direct`'s connection (in the pooler check's message)."""
    return "connections.staging_direct" if plan.connections.staging_direct else "connections.staging"


def backend(plan: Plan, target: PgTarget | None = None) -> MigrationBackend:
    """The plan's migration backend on ``target`` (default: :func:`direct`)."""
    return runbook.backend(plan, target or direct(plan))


def query(plan: Plan) -> runbook.Query:
    """The read-only query on the plan's ``staging`` connection."""
    return lambda sql: run_readonly(plan.connections.staging, sql)[1]


def http(conn_id: str, endpoint: str, method: str = "GET", **options: Any) -> int:
    """The HTTP status of ``endpoint`` on connection ``conn_id`` (``options``: HttpHook's extra_options)."""
    # Imported here, not at the top: the HTTP provider adds ~0.15-0.3 s to every DAG parse
    # (measured on top of this package's modules), and only three tasks call it.
    from airflow.providers.http.hooks.http import HttpHook

    return HttpHook(method=method, http_conn_id=conn_id).run(endpoint, extra_options=options).status_code


def verdict(ctx: Any) -> Verdict:
    """The verdict ``judge_soak`` pushed."""
    return Verdict.from_dict(ctx["ti"].xcom_pull(task_ids="judge_soak", key="verdict"))


def answer(ctx: Any, task_id: str) -> Answer | None:
    """A person's answer to the question task ``task_id`` asked (None: never asked)."""
    return Answer.from_hitl(ctx["ti"].xcom_pull(task_ids=task_id))
