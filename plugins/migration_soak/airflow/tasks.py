"""The DAG's tasks: thin TaskFlow glue over runbook.py, lifecycle.py, decision.py and notify.py
(the rollback group's are in ``rollback_tasks.py``).

Every task reloads the plan named by the run's ``plan`` param (plans are small files),
talks to the store for results and passes only small values through XCom. What a task
reads from Airflow is in ``context.py``; the package's errors become failed tasks
through :func:`~migration_soak.airflow.context.failing`.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from migration_soak import decision as decision_mod
from migration_soak import lifecycle, notify, runbook
from migration_soak.airflow.context import (answer, backend, dag_run_key, direct, direct_field, failing, http, identity,
                                            plan_identity, query, run_context, staging_context)
from migration_soak.airflow.context import verdict as pushed_verdict
from migration_soak.backup import BackupRecord
from migration_soak.backup_storage import fetched, plan_root, probe, take_kept_backup
from migration_soak.exceptions import (BackupError, LintError, MigrationError, PlanError, RehearsalError, SoakError,
                                       SoakStopped)
from migration_soak.pgconn import PgTarget
from migration_soak.plan import load_plan
from migration_soak.report import safe_name
from migration_soak.store import Store

__all__ = ["failing"]  # tests and callers import it from here too

log = logging.getLogger(__name__)


@task
def plan_error(error: str) -> None:
    """The only task of a plan that does not parse: fails the run with the plan's error."""
    raise AirflowFailException(f"the plan is invalid, nothing was done: {error}")


@task
def load() -> str:
    """``lifecycle.open_run``: plan, trigger form and backup storage checked, lease taken; returns the plan name."""
    ctx = get_current_context()
    params = ctx["params"]
    with failing(PlanError):
        plan = load_plan(params["plan"])
    with failing(SoakError, ValueError):
        lifecycle.open_run(plan, ctx["run_id"], Store.from_airflow(plan.connections.store),
                           environment=params["environment"], plan_param=params["plan"],
                           time_scale=params["time_scale"], probe=lambda: probe(plan_root(plan)),
                           identify=lambda: identity(plan), identify_plan=plan_identity,
                           clock_lead_s=params.get("clock_lead_s", 0), dag_run=dag_run_key(ctx))
    return plan.name


@task(trigger_rule="all_done")
def release() -> None:
    """Give the staging database back, however the run went (it always runs, before ``conclude``)."""
    try:
        ctx, plan, run_id, store = run_context()
    except PlanError as exc:  # the plan never loaded, so no lease was taken
        log.info("no lease to release: the plan does not load (%s)", exc)
        return
    if store.release_lease(run_id, ctx["params"]["plan"], dag_run=dag_run_key(ctx)):
        log.info("the staging database of environment %s released by %s", plan.environment, run_id)


@task
def preflight() -> dict:
    """``runbook.preflight``; returns ``{"migrations": {name: state}}``."""
    ctx, plan, run_id, store = run_context()
    with failing(MigrationError, LintError):
        return runbook.preflight(plan, run_id, store, direct=direct(plan), direct_field=direct_field(plan),
                                 migrations=backend(plan), query=query(plan),
                                 health_status=lambda c: http(c, "/health", check_response=False, timeout=10))


@task
def backup() -> dict:
    """``pg_dump`` staging and read it back whole (Hora 0 step 1); returns the backup record."""
    ctx, plan, run_id, store = run_context()
    with failing(BackupError, prefix="backup failed, the migration will not start: "):
        record = take_kept_backup(direct(plan), plan_root(plan), runbook.pg_bin_dir(plan),
                                  label=f"pre_{safe_name(run_id)}", conn_id=plan.connections.backup_storage,
                                  required_tables=runbook.backup_required_tables(plan))
    store.add_event(run_id, "backup", runbook.backup_event(record))
    return record.to_dict()


@task
def rehearse(backup_record: dict) -> dict:
    """``runbook.rehearse`` before staging is touched; skipped when disabled or too big."""
    ctx, plan, run_id, store = run_context()
    disabled = lifecycle.rehearsal_disabled(plan, run_id, store)
    if disabled:
        raise AirflowSkipException(disabled)
    server = PgTarget.from_airflow(plan.rehearsal.connection) if plan.rehearsal.connection else None
    with failing(RehearsalError, BackupError, prefix="rollback rehearsal failed at ",
                 suffix="; staging was not touched"):
        result = runbook.rehearse(plan, run_id, store, fetch=lambda: fetched(BackupRecord.from_dict(backup_record)),
                                  staging=direct(plan), pg_bin_dir=runbook.pg_bin_dir(plan), server=server,
                                  backend_for=lambda target: backend(plan, target))
    if result.status == "skipped":
        raise AirflowSkipException(result.text)
    return result.to_dict()


@task
def migrate(_fingerprinted: dict) -> dict:
    """``runbook.mark_logs``, ``runbook.take_topup`` (the dropped columns of rows written
    since the backup's watermark), then ``runbook.deploy`` (Hora 0 step 2); runs after the
    fingerprint task."""
    ctx, plan, run_id, store = staging_context("migrate")
    runbook.mark_logs(plan, run_id, store)
    with failing(BackupError, prefix="top-up failed, the migration will not start: "):
        runbook.take_topup(plan, run_id, store, direct(plan))
    with failing(MigrationError, prefix="migration failed: "):
        return runbook.deploy(run_id, store, backend(plan), plan)


@task
def verify(_migrated: dict) -> str:
    """``lifecycle.verify`` (Hora 0 step 3); returns when (ISO-8601, UTC): the hour-0 checks' tick."""
    ctx, plan, run_id, store = run_context()
    with failing(MigrationError):
        return lifecycle.verify(plan, run_id, store, direct(plan), runbook.prisma(plan, direct(plan)))


@task
def start_clock() -> str:
    """``lifecycle.start_clock``: hour 0 (ISO-8601, UTC); skipped when a NO-GO stopped the soak."""
    ctx, plan, run_id, store = run_context()
    try:
        return lifecycle.start_clock(store, run_id, float(ctx["params"].get("clock_lead_s", 0) or 0))
    except SoakStopped as exc:
        raise AirflowSkipException(str(exc)) from exc


@task
def start_baseline() -> str:
    """Start the baseline window before the migration; returns its origin (ISO-8601, UTC)."""
    ctx, plan, run_id, store = run_context()
    return runbook.moment(store, run_id, "baseline_start", "at", "baseline measurements start")


@task(trigger_rule="none_failed")  # after a rehearsal that passed or was skipped (it says why)
def fingerprint(_rehearsal: dict | None) -> dict:
    """``lifecycle.record_fingerprints`` before the migration; ``{"recorded": n}``."""
    ctx, plan, run_id, store = run_context()
    return {"recorded": lifecycle.record_fingerprints(plan, run_id, store,
                                                      PgTarget.from_airflow(plan.connections.staging))}


def restart(kind: str, text: str) -> int:
    """``lifecycle.restart``: the plan's restart action; its HTTP status (raises on non-2xx)."""
    ctx, plan, run_id, store = staging_context(kind)
    return lifecycle.restart(plan, run_id, store, kind, text, partial(http, timeout=60))


@task
def restart_apps(_hour0: str) -> int:
    """Restart the applications so they drop cached schema (Checklist Hora 0)."""
    return restart("restart", "applications restarted")


@task.branch(trigger_rule="all_done")
def judge_soak() -> list[str]:
    """``runbook.judge_soak``; INCONCLUSIVE goes to a person when ``on_inconclusive`` is ``ask``.

    Runs whatever happened upstream: once ``migrate`` succeeded, a task that failed after it
    (``verify``, ``restart_apps``, a check task out of retries) must not leave the columns
    dropped with no decision; the soak is judged on what it read and is at best
    INCONCLUSIVE (``runbook.judge_soak``'s ``failed``). When ``migrate`` did not succeed it
    reads the table first: a column it drops already gone (a migration that committed part
    of its change) is a NO-GO and a rollback; else the migration was not applied, there is
    nothing to judge or roll back, and it skips (``conclude`` fails the run). When ``migrate``
    never ran (``load`` refused the run because another holds staging, ``preflight`` failed
    because the migration is already applied) it skips without reading the table: columns
    gone then are another run's doing, never this run's to roll back."""
    ctx, plan, run_id, store = run_context()
    states = task_states(ctx)
    partial: list[str] = []
    if states.get("migrate") not in ("success", "failed"):
        # migrate never ran (load refused the run, preflight failed, ...): columns gone now
        # were dropped by another run (one soaking staging, or an earlier GO), not this one.
        raise AirflowSkipException(f"this run did not start the migration (migrate: {states.get('migrate') or 'not run'}"
                                   "): nothing of its own to judge or roll back")
    if states.get("migrate") != "success":
        partial = runbook.dropped_already(plan, query(plan))
        if not partial:
            raise AirflowSkipException(f"the migration was not applied (migrate: {states.get('migrate') or 'not run'}; "
                                       "every column it drops is still there): nothing to judge or roll back")
    failed = sorted(tid for tid, state in states.items() if state in ("failed", "upstream_failed"))
    verdict = runbook.judge_soak(plan, run_id, store, float(ctx["params"]["time_scale"]), failed=failed,
                                 partial=partial)
    log.info("verdict: %s: %s", verdict.decision, "; ".join(verdict.reasons))
    ctx["ti"].xcom_push(key="verdict", value=verdict.to_dict())
    if lifecycle.asks_a_person(verdict, ctx["params"]["on_inconclusive"]):
        time_scale = float(ctx["params"]["time_scale"])
        ctx["ti"].xcom_push(key="human_question", value=notify.inconclusive_question(plan, verdict.reasons, time_scale))
        notify.send(notify.inconclusive_text(plan, verdict.reasons, time_scale), plan.connections.slack)
        return ["human_decision"]
    return ["ask_sign_off"]


def task_states(ctx) -> dict[str, str]:
    """``{task_id: state}`` of this DAG run's task instances (the Execution API's
    ``get_task_states``); states as Airflow names them (``success``, ``failed``, ...)."""
    ti = ctx["ti"]
    found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
    return {str(k): str(getattr(v, "value", v)) for k, v in (found.get(ti.run_id) or {}).items()}


@task.branch(trigger_rule="none_failed_min_one_success")
def ask_sign_off() -> list[str]:
    """``lifecycle.candidate``; asks for the QA sign-off only when the run is about to claim GO."""
    ctx, plan, run_id, store = run_context()
    before = lifecycle.candidate(store, run_id, pushed_verdict(ctx), answer(ctx, "human_decision"),
                                 ctx["params"]["on_inconclusive"])
    ctx["ti"].xcom_push(key="candidate", value=before.to_dict())
    if decision_mod.needs_sign_off(before, bool(ctx["params"]["require_sign_off"])):
        ctx["ti"].xcom_push(key="sign_off_question",
                            value=notify.sign_off_question(plan, before, float(ctx["params"]["time_scale"])))
        return ["sign_off", "decide"]  # decide waits for sign_off, its other upstream
    return ["decide"]


@task.branch(trigger_rule="none_failed_min_one_success")
def decide() -> list[str]:
    """``lifecycle.decide``, recorded as the run's single ``decision`` event: report or rollback."""
    ctx, plan, run_id, store = run_context()
    before = decision_mod.Decision(**ctx["ti"].xcom_pull(task_ids="ask_sign_off", key="candidate"))
    with failing(SoakError):
        final = lifecycle.decide(plan, store, run_id, before, bool(ctx["params"]["require_sign_off"]),
                                 answer(ctx, "sign_off"))
    log.info("decision: %s", final)
    return ["rollback.notify_rollback"] if final.action == "rollback" else ["report"]


def write_report() -> str:
    """``runbook.write_report`` for the current run; returns its path."""
    ctx, plan, run_id, store = run_context()
    path = runbook.write_report(plan, run_id, store, pushed_verdict(ctx), float(ctx["params"]["time_scale"]))
    log.info("report: %s", path)
    return str(path)


@task
def report() -> str:
    """The report when the migration stays; only then, after any sign-off, Slack hears the GO
    (``notify.decision_text``: whose GO, and whether the human gates approved it)."""
    ctx, plan, run_id, store = run_context()
    path = write_report()
    signed = store.events(run_id, "sign_off")
    notify.send(notify.decision_text(plan, runbook.recorded_decision(store, run_id), float(ctx["params"]["time_scale"]),
                                     Path(path).name, sign_off=signed[-1]["payload"] if signed else None),
                plan.connections.slack)
    return path


@task
def conclude() -> str:
    """``lifecycle.conclude``: success only for a GO that completed, else fail with ``decision.failure``."""
    ctx, plan, run_id, store = run_context()
    with failing(SoakError):
        return lifecycle.conclude(store, run_id, plan=ctx["params"]["plan"], dag_run=dag_run_key(ctx))
