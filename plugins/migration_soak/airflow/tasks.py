"""The DAG's tasks: thin TaskFlow glue over runbook.py, decision.py and notify.py.

Every task reloads the plan named by the run's ``plan`` param (plans are small files),
talks to the store for results and passes only small values through XCom. The package's
errors become failed tasks through :func:`failing`.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from migration_soak import decision as decision_mod
from migration_soak import notify, runbook, sources
from migration_soak.backup import BackupRecord
from migration_soak.backup_storage import fetched, plan_root, probe, take_kept_backup
from migration_soak.clock import check_time_scale
from migration_soak.exceptions import (BackupError, LintError, MigrationError, PlanError, RehearsalError, RollbackError,
                                       SoakError)
from migration_soak.judge import Verdict
from migration_soak.migrate import MigrationBackend, verify_applied
from migration_soak.pgconn import PgTarget
from migration_soak.plan import Plan, load_plan
from migration_soak.report import safe_name
from migration_soak.sources.data_loss import record_baseline
from migration_soak.sources.sql import run_readonly
from migration_soak.store import Store

log = logging.getLogger(__name__)


@contextmanager
def failing(*errors: type[Exception], prefix: str = "", suffix: str = "") -> Iterator[None]:
    """On ``errors``, fail the task without retry: ``AirflowFailException(prefix + str(exc) +
    suffix)``. Other exceptions propagate unchanged (the failure callback names their class)."""
    try:
        yield
    except errors as exc:
        raise AirflowFailException(f"{prefix}{exc}{suffix}") from exc


def _ctx() -> tuple[Any, Plan, str, Store]:
    """The task's context, the run's plan, run id and store; raises ``PlanError``."""
    ctx = get_current_context()
    plan = load_plan(ctx["params"]["plan"])
    return ctx, plan, ctx["run_id"], Store.from_airflow(plan.connections.store)


def _direct(plan: Plan) -> PgTarget:
    """The staging database for DDL, dumps and locks: ``staging_direct``, else ``staging``."""
    return PgTarget.from_airflow(plan.connections.staging_direct or plan.connections.staging)


def _backend(plan: Plan, target: PgTarget | None = None) -> MigrationBackend:
    return runbook.backend(plan, target or _direct(plan))


def _query(plan: Plan) -> runbook.Query:
    return lambda sql: run_readonly(plan.connections.staging, sql)[1]


def _http(conn_id: str, endpoint: str, method: str = "GET", **options: Any) -> int:
    """The HTTP status of ``endpoint`` on connection ``conn_id`` (``options``: HttpHook's extra_options)."""
    # Imported here, not at the top: the HTTP provider adds ~0.15-0.3 s to every DAG parse
    # (measured on top of this package's modules), and only three tasks call it.
    from airflow.providers.http.hooks.http import HttpHook

    return HttpHook(method=method, http_conn_id=conn_id).run(endpoint, extra_options=options).status_code


def _confirm_with_prisma(plan: Plan, run_id: str, store: Store, expect: Literal["applied", "pending"]) -> None:
    with failing(MigrationError):
        runbook.confirm_with_prisma(run_id, store, runbook.prisma(plan, _direct(plan)), plan.migration.name, expect)


def _verdict(ctx: Any) -> Verdict:
    return Verdict.from_dict(ctx["ti"].xcom_pull(task_ids="judge_soak", key="verdict"))


def _answer(ctx: Any, task_id: str) -> decision_mod.Answer | None:
    return decision_mod.Answer.from_hitl(ctx["ti"].xcom_pull(task_ids=task_id))


@task
def plan_error(error: str) -> None:
    """The only task of a plan that does not parse: fails the run with the plan's error."""
    raise AirflowFailException(f"the plan is invalid, nothing was done: {error}")


@task
def load() -> str:
    """Check the plan, trigger form and backup storage; create the store; ``runbook.admit``. Returns the plan name."""
    ctx = get_current_context()
    params = ctx["params"]
    with failing(PlanError):
        plan = load_plan(params["plan"])
    store = Store.from_airflow(plan.connections.store)
    store.create_schema()  # first: ``release`` (which always runs) reads the lease table
    with failing(BackupError, ValueError):
        check_time_scale(params["time_scale"])
        probe(plan_root(plan))  # an unusable backup_location fails now, not after the baseline hour
    with failing(SoakError):
        runbook.admit(plan, ctx["run_id"], store, environment=params["environment"], plan_param=params["plan"])
    return plan.name


@task(trigger_rule="all_done")
def release() -> None:
    """Give the environment back, however the run went (it always runs, before ``conclude``)."""
    try:
        ctx, plan, run_id, store = _ctx()
    except PlanError as exc:  # the plan never loaded, so no lease was taken
        log.info("no lease to release: the plan does not load (%s)", exc)
        return
    if store.release_lease(plan.environment, run_id):
        log.info("environment %s released by %s", plan.environment, run_id)


@task
def preflight() -> dict:
    """``runbook.preflight``; returns ``{"migrations": {name: state}}``."""
    ctx, plan, run_id, store = _ctx()
    field = "connections.staging_direct" if plan.connections.staging_direct else "connections.staging"
    with failing(MigrationError, LintError):
        return runbook.preflight(plan, run_id, store, direct=_direct(plan), direct_field=field,
                                 migrations=_backend(plan), query=_query(plan),
                                 health_status=lambda c: _http(c, "/health", check_response=False, timeout=10))


@task
def backup() -> dict:
    """``pg_dump`` staging and read it back whole (Hora 0 step 1); returns the backup record."""
    ctx, plan, run_id, store = _ctx()
    with failing(BackupError, prefix="backup failed, the migration will not start: "):
        record = take_kept_backup(_direct(plan), plan_root(plan), runbook.pg_bin_dir(plan),
                                  label=f"pre_{safe_name(run_id)}", conn_id=plan.connections.backup_storage,
                                  required_tables=runbook.backup_required_tables(plan))
    store.add_event(run_id, "backup", runbook.backup_event(record))
    return record.to_dict()


@task
def rehearse(backup_record: dict) -> dict:
    """``runbook.rehearse`` before staging is touched; skipped when disabled or too big."""
    ctx, plan, run_id, store = _ctx()
    if not plan.rehearsal.enabled:
        text = "rollback not rehearsed: rehearsal.enabled is false in the plan"
        store.add_event(run_id, "rehearsal", {"status": "disabled", "text": text})
        raise AirflowSkipException(text)
    server = PgTarget.from_airflow(plan.rehearsal.connection) if plan.rehearsal.connection else None
    with failing(RehearsalError, BackupError, prefix="rollback rehearsal failed at ",
                 suffix="; staging was not touched"):
        result = runbook.rehearse(plan, run_id, store, fetch=lambda: fetched(BackupRecord.from_dict(backup_record)),
                                  staging=_direct(plan), pg_bin_dir=runbook.pg_bin_dir(plan), server=server,
                                  backend_for=lambda target: _backend(plan, target))
    if result.status == "skipped":
        raise AirflowSkipException(result.text)
    return result.to_dict()


@task
def migrate(backup_record: dict) -> dict:
    """``runbook.deploy`` (Hora 0 step 2); takes the backup record only to run after it."""
    ctx, plan, run_id, store = _ctx()
    with failing(MigrationError, prefix="migration failed: "):
        return runbook.deploy(run_id, store, _backend(plan))


@task
def verify(_migrated: dict) -> str:
    """Hora 0 step 3, migration verified; returns when (ISO-8601, UTC): the hour-0 checks' tick."""
    ctx, plan, run_id, store = _ctx()
    m = plan.migration
    with failing(MigrationError):
        verify_applied(_direct(plan), m.name, m.table, tuple(m.dropped_columns))
    _confirm_with_prisma(plan, run_id, store, "applied")
    return runbook.moment(store, run_id, "verified", "at", "migration verified: ledger row finished, columns gone")


@task
def start_clock() -> str:
    """Hour 0 (ISO-8601, UTC), after the Hora 0 checklist; skipped when a NO-GO stopped the soak."""
    ctx, plan, run_id, store = _ctx()
    breach = store.no_go(run_id)
    if breach is not None:
        raise AirflowSkipException(f"the soak stopped at hour 0, the clock does not start: {breach.get('text')}")
    lead = float(ctx["params"].get("clock_lead_s", 0) or 0)
    return runbook.moment(store, run_id, "hour0", "hour0",
                          "Hora 0 checklist done; the soak clock starts" + (f" in {lead:g} s" if lead else ""),
                          lead_s=lead)


@task
def start_baseline() -> str:
    """Start the baseline window before the migration; returns its origin (ISO-8601, UTC)."""
    ctx, plan, run_id, store = _ctx()
    return runbook.moment(store, run_id, "baseline_start", "at", "baseline measurements start")


@task(trigger_rule="none_failed")  # after a rehearsal that passed or was skipped (it says why)
def fingerprint(_rehearsal: dict | None) -> dict:
    """Fingerprints before the migration (NO-GO "Cualquier pérdida de datos"); ``{"recorded": n}``."""
    ctx, plan, run_id, store = _ctx()
    if not store.events(run_id, "fingerprint") and any(c.source.kind == "fingerprint" for c in plan.checks):
        record_baseline(plan, run_id, store, PgTarget.from_airflow(plan.connections.staging))
    return {"recorded": len(store.events(run_id, "fingerprint"))}


def _restart(kind: str, text: str) -> int:
    """The plan's restart action, recorded as event ``kind``; its HTTP status (raises on non-2xx)."""
    ctx, plan, run_id, store = _ctx()
    status = _http(plan.restart.connection, plan.restart.endpoint, plan.restart.method, timeout=60)
    store.add_event(run_id, kind, {"status": status, "text": text})
    return status


@task
def restart_apps(_hour0: str) -> int:
    """Restart the applications so they drop cached schema (Checklist Hora 0)."""
    return _restart("restart", "applications restarted")


@task.branch(trigger_rule="none_failed")  # after skipped check tasks (no reading), never after a failed one
def judge_soak() -> list[str]:
    """``runbook.judge_soak``; INCONCLUSIVE goes to a person when ``on_inconclusive`` is ``ask``."""
    ctx, plan, run_id, store = _ctx()
    verdict = runbook.judge_soak(plan, run_id, store, float(ctx["params"]["time_scale"]))
    log.info("verdict: %s: %s", verdict.decision, "; ".join(verdict.reasons))
    ctx["ti"].xcom_push(key="verdict", value=verdict.to_dict())
    if verdict.decision == "INCONCLUSIVE" and ctx["params"]["on_inconclusive"] == "ask":
        notify.send(notify.inconclusive_text(plan, verdict.reasons), plan.connections.slack)
        return ["human_decision"]
    return ["ask_sign_off"]


@task.branch(trigger_rule="none_failed_min_one_success")
def ask_sign_off() -> list[str]:
    """``decision.candidate``; asks for the QA sign-off only when the run is about to claim GO."""
    ctx, plan, run_id, store = _ctx()
    human = _answer(ctx, "human_decision")
    if human is not None:
        store.add_event(run_id, "human_decision", decision_mod.human_event(human))
    verdict = _verdict(ctx)
    before = decision_mod.candidate(verdict.decision, human, ctx["params"]["on_inconclusive"], verdict.reasons)
    ctx["ti"].xcom_push(key="candidate", value=before.to_dict())
    if decision_mod.needs_sign_off(before, bool(ctx["params"]["require_sign_off"])):
        return ["sign_off", "decide"]  # decide waits for sign_off, its other upstream
    return ["decide"]


@task.branch(trigger_rule="none_failed_min_one_success")
def decide() -> list[str]:
    """``decision.decide``, recorded as the run's single ``decision`` event: report or rollback."""
    ctx, plan, run_id, store = _ctx()
    before = decision_mod.Decision(**ctx["ti"].xcom_pull(task_ids="ask_sign_off", key="candidate"))
    require = bool(ctx["params"]["require_sign_off"])
    sign_off = _answer(ctx, "sign_off") if decision_mod.needs_sign_off(before, require) else None
    if sign_off is not None:
        store.add_event(run_id, "sign_off", decision_mod.sign_off_event(sign_off))
    final = decision_mod.decide(before, require, sign_off, plan.verdict.on_sign_off_rejected)
    store.add_event(run_id, "decision", decision_mod.decision_event(final))
    log.info("decision: %s", final)
    return ["rollback.notify_rollback"] if final.action == "rollback" else ["report"]


def write_report() -> str:
    """``runbook.write_report`` for the current run; returns its path."""
    ctx, plan, run_id, store = _ctx()
    path = runbook.write_report(plan, run_id, store, _verdict(ctx), float(ctx["params"]["time_scale"]))
    log.info("report: %s", path)
    return str(path)


@task
def report() -> str:
    """The report when the migration stays; only then, after any sign-off, Slack hears "verdict: GO"."""
    ctx, plan, run_id, store = _ctx()
    path = write_report()
    notify.send(notify.decision_text(plan, runbook.recorded_decision(store, run_id), float(ctx["params"]["time_scale"]),
                                     Path(path).name), plan.connections.slack)
    return path


@task
def notify_rollback() -> None:
    """Slack: "ROLLBACK INITIATED - Reason: ..." (rollback step 1)."""
    ctx, plan, run_id, store = _ctx()
    text = notify.rollback_reason(runbook.recorded_decision(store, run_id))
    store.add_event(run_id, "rollback_started", {"text": text})
    notify.send(notify.rollback_text(plan, text), plan.connections.slack)


@task
def restore() -> dict:
    """``runbook.restore`` (rollback step 2) from the backup recorded by ``backup``."""
    ctx, plan, run_id, store = _ctx()
    record = BackupRecord.from_dict(store.events(run_id, "backup")[-1]["payload"] | {})
    # The backup may have been taken on another worker: fetched from its storage.
    with failing(BackupError, prefix="rollback cannot read the backup, nothing restored: "), \
            failing(RollbackError, prefix="restore failed: "):
        return runbook.restore(plan, run_id, store, fetch=lambda: fetched(record), direct=_direct(plan),
                               pg_bin_dir=runbook.pg_bin_dir(plan))


@task
def mark_ledger(_restored: dict) -> None:
    """``runbook.mark_rolled_back`` and Prisma's agreement (rollback step 3)."""
    ctx, plan, run_id, store = _ctx()
    with failing(MigrationError, prefix=f"marking {plan.migration.name} rolled back: "):
        runbook.mark_rolled_back(plan, run_id, store, _backend(plan), _direct(plan))
    _confirm_with_prisma(plan, run_id, store, "pending")


@task
def restart_after_rollback() -> int:
    """Restart the applications on the restored schema (step 4)."""
    return _restart("rollback_restart", "applications restarted after rollback")


@task
def health(_restarted: int) -> dict:
    """``runbook.post_rollback_health`` (step 5); returns its results."""
    ctx, plan, run_id, store = _ctx()
    with failing(RollbackError):
        return runbook.post_rollback_health(plan, run_id, store, query=_query(plan),
                                            measure=lambda check: sources.measure(check, plan).value)


@task
def post_mortem(_health: dict) -> str:
    """The report plus ``runbook.write_post_mortem`` (step 6); returns the post-mortem's path."""
    ctx, plan, run_id, store = _ctx()
    path = runbook.write_post_mortem(plan, run_id, store, _verdict(ctx), write_report())
    notify.send(notify.rollback_done_text(plan, path.name), plan.connections.slack)
    return str(path)


@task
def conclude() -> str:
    """Success only for a GO that completed; otherwise fail with ``decision.failure``."""
    ctx, plan, run_id, store = _ctx()
    final = runbook.recorded_decision(store, run_id)
    why = decision_mod.failure(final, report_written=bool(store.events(run_id, "report")),
                               rollback_completed=bool(store.events(run_id, "rollback_completed")))
    if why is not None:
        raise AirflowFailException(why)
    assert final is not None  # failure() names a missing decision
    return final.outcome
