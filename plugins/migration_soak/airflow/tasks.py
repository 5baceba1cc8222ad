"""The DAG's tasks: thin TaskFlow glue over the plain modules of the package.

Every task reloads the plan named by the run's ``plan`` param (plans are small files),
talks to the store for results and passes only small values through XCom.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from migration_soak import decision as decision_mod
from migration_soak import notify
from migration_soak.exceptions import BackupError, MigrationError, PlanError
from migration_soak.plan import SQL_DIR, Plan, load_plan
from migration_soak.store import Store

log = logging.getLogger(__name__)


def _ctx():
    ctx = get_current_context()
    return ctx, load_plan(ctx["params"]["plan"]), ctx["run_id"]


def _store(plan: Plan) -> Store:
    return Store.from_airflow(plan.connections.store)


def _staging(plan: Plan):
    """The staging database as the checks reach it (possibly through a pooler)."""
    from migration_soak.pgconn import PgTarget

    return PgTarget.from_airflow(plan.connections.staging)


def _direct_field(plan: Plan) -> str:
    return "connections.staging_direct" if plan.connections.staging_direct else "connections.staging"


def _direct(plan: Plan):
    """The staging database for DDL, dumps and locks: ``staging_direct``, else ``staging``."""
    from migration_soak.pgconn import PgTarget

    return PgTarget.from_airflow(plan.connections.staging_direct or plan.connections.staging)


def _bin_dir(plan: Plan) -> Path | None:
    return plan.path(plan.pg_bin_dir) if plan.pg_bin_dir else None


def _moment(plan: Plan, run_id: str, kind: str, key: str, text: str) -> str:
    """The time (ISO-8601, UTC) recorded as the run's event ``kind`` under ``payload[key]``,
    recorded now when there is none: a retried task keeps the first time, so a clock
    computed from it never restarts."""
    store = _store(plan)
    known = store.events(run_id, kind)
    if known:
        return known[0]["payload"][key]
    at = datetime.now(timezone.utc).isoformat()
    store.add_event(run_id, kind, {key: at, "text": text})
    return at


def _attempts(exc: Exception) -> list[dict]:
    """The lock-timeout attempts a ``MigrationError``/``RollbackError`` carries, as dicts."""
    return [a.to_dict() for a in getattr(exc, "lock_attempts", ()) or ()]


def _prisma(plan: Plan, target=None):
    """The real Prisma CLI in the plan's ``prisma_project`` on ``target`` (default:
    staging, direct), or ``None`` without a project."""
    from migration_soak.prisma_cli import PrismaCliBackend

    m = plan.migration
    if not m.prisma_project:
        return None
    return PrismaCliBackend(target or _direct(plan), plan.path(m.prisma_project), timeout_s=m.prisma_timeout_s,
                            migrations_dir=plan.path(m.migrations_dir))


def _backend(plan: Plan, target=None):
    """The plan's ``MigrationBackend`` (``LedgerBackend`` or the Prisma CLI) on ``target``
    (default: staging, direct)."""
    from migration_soak.migrate import LedgerBackend

    m = plan.migration
    if m.backend == "prisma_cli":
        return _prisma(plan, target)
    return LedgerBackend(target or _direct(plan), plan.path(m.migrations_dir), lock_timeout_s=m.lock_timeout_s,
                         lock_retries=m.lock_retries)


def _confirm_with_prisma(plan: Plan, run_id: str, expect: str) -> None:
    """Seed "Hora 0" / rollback step 3, ``npx prisma migrate status``: the real CLI must
    agree (``expect`` ``applied`` or ``pending``); recorded as a ``prisma_status`` event.
    Fails the task with the CLI's own state otherwise. No-op without ``prisma_project``."""
    from migration_soak.prisma_cli import confirm_status

    cli = _prisma(plan)
    if cli is None:
        return
    try:
        outcome = confirm_status(cli, plan.migration.name, expect)
    except MigrationError as exc:
        _store(plan).add_event(run_id, "prisma_status", {"expect": expect, "agrees": False, "text": str(exc)[:500]})
        raise AirflowFailException(str(exc)) from exc
    _store(plan).add_event(run_id, "prisma_status", {
        "expect": expect, "agrees": True, "kind": outcome.kind, "migrations": outcome.migrations,
        "text": f"after the {'deploy' if expect == 'applied' else 'rollback'}, prisma migrate status says "
                f"{outcome.kind}" + (f" ({', '.join(outcome.migrations)})" if outcome.migrations else "")})


@task
def plan_error(error: str) -> None:
    """The only task of a plan that does not parse: fails the run with the plan's error."""
    raise AirflowFailException(f"the plan is invalid, nothing was done: {error}")


@task
def load() -> str:
    """Validate the plan, the trigger form and the backup storage; create the store's
    tables; take the environment's lease. Returns the plan name."""
    from migration_soak.backup_storage import plan_root, probe
    from migration_soak.clock import check_time_scale

    ctx = get_current_context()
    params = ctx["params"]
    try:
        plan = load_plan(params["plan"])
    except PlanError as exc:
        raise AirflowFailException(str(exc)) from exc
    store = _store(plan)
    store.create_schema()  # first: ``release`` (which always runs) reads the lease table
    try:
        check_time_scale(params["time_scale"])
        probe(plan_root(plan))  # an unusable backup_location fails now, not after the baseline hour
    except (BackupError, ValueError) as exc:
        raise AirflowFailException(str(exc)) from exc
    if params["environment"] != plan.environment:
        raise AirflowFailException(
            f"environment: the plan {plan.name!r} is for {plan.environment!r}, the run asked for {params['environment']!r}"
        )
    lease = store.take_lease(plan.environment, ctx["run_id"], params["plan"])
    if lease["run_id"] != ctx["run_id"]:
        # One soak per environment: two runs would migrate, judge and roll back each other.
        raise AirflowFailException(
            f"environment {plan.environment!r} is being soaked by run {lease['run_id']} (plan {lease['plan']}, "
            f"since {lease['taken_at']:%Y-%m-%d %H:%M UTC}); this run is refused")
    return plan.name


@task(trigger_rule="all_done")
def release() -> None:
    """Give the environment back, however the run went (it always runs, before ``conclude``).

    A run whose plan does not load never took a lease: nothing to give back."""
    try:
        ctx, plan, run_id = _ctx()
    except PlanError as exc:
        log.info("no lease to release: the plan does not load (%s)", exc)
        return
    if _store(plan).release_lease(plan.environment, run_id):
        log.info("environment %s released by %s", plan.environment, run_id)


@task
def preflight() -> dict:
    """Before touching anything: connections reachable, the connection for DDL not behind a
    transaction pooler (``pooler.py``), the migration pending, no user without
    ``authorizerId`` (seed "Pre-requisitos" and query 1). Fails the run otherwise."""
    from migration_soak.sources import sql as sql_source

    from migration_soak.pooler import require_direct

    ctx, plan, run_id = _ctx()
    try:
        # DDL, dumps and advisory locks behind a transaction pooler leak into the app's sessions.
        require_direct(_direct(plan), _direct_field(plan))
        states = {s.name: s.state for s in _backend(plan).status()}
    except MigrationError as exc:
        raise AirflowFailException(f"migration status: {exc}") from exc
    if plan.migration.name not in states:
        raise AirflowFailException(f"migration {plan.migration.name!r} not found in {plan.migration.migrations_dir}")
    if states[plan.migration.name] not in ("pending", "rolled_back"):
        raise AirflowFailException(
            f"migration {plan.migration.name!r} is {states[plan.migration.name]}, not pending: nothing to soak"
        )
    _lint(plan, run_id, [n for n, st in states.items() if st in ("pending", "rolled_back")])
    _, rows = sql_source.run_readonly(plan.connections.staging, (SQL_DIR / "users_without_authorizer_id.sql").read_text())
    if rows[0][0] != 0:
        raise AirflowFailException(f"{rows[0][0]} users have no authorizerId: the migration must not start")
    from airflow.providers.http.hooks.http import HttpHook

    for conn_id in {plan.connections.gateway, plan.connections.authorizer}:
        resp = HttpHook(method="GET", http_conn_id=conn_id).run("/health", extra_options={"check_response": False, "timeout": 10})
        if resp.status_code != 200:
            raise AirflowFailException(f"{conn_id}: /health answered {resp.status_code} before the migration")
    _store(plan).add_event(run_id, "preflight", {"migrations": states, "text": "all prerequisites hold"})
    return {"migrations": states}


def _lint(plan: Plan, run_id: str, pending: list[str]) -> None:
    """squawk over every pending migration (deploy applies them all); findings the plan does
    not accept with a reason fail the run (lint.py). Recorded as the ``lint`` event."""
    from migration_soak import lint
    from migration_soak.exceptions import LintError

    try:
        linted = lint.check(plan, pending)
    except LintError as exc:
        if exc.result is not None:
            _store(plan).add_event(run_id, "lint", exc.result.to_dict())
        raise AirflowFailException(str(exc)) from exc
    _store(plan).add_event(run_id, "lint", linted.to_dict())


@task
def backup() -> dict:
    """``pg_dump`` the staging database and read it back whole; any failure stops the run
    before the migration (seed, Hora 0 step 1). Returns the backup record."""
    from migration_soak.backup_storage import plan_root, take_kept_backup
    from migration_soak.report import safe_name

    ctx, plan, run_id = _ctx()
    try:
        record = take_kept_backup(_direct(plan), plan_root(plan), _bin_dir(plan), label=f"pre_{safe_name(run_id)}",
                                  conn_id=plan.connections.backup_storage)
    except BackupError as exc:
        raise AirflowFailException(f"backup failed, the migration will not start: {exc}") from exc
    payload = record.to_dict()
    _store(plan).add_event(run_id, "backup", {**payload, "text": (
        f"{record.size_bytes} bytes, sha256 {record.sha256[:12]}, kept at {record.location}"
        + (" (reused)" if record.reused else ""))})
    return payload


@task
def rehearse(backup_record: dict) -> dict:
    """Rehearse the rollback on a scratch copy of the backup before staging is touched
    (rehearsal.py; seed pre-requisite "Plan de rollback revisado y aprobado"). A failure
    stops the run before the migration, naming the step."""
    from migration_soak.backup import BackupRecord
    from migration_soak.backup_storage import fetched
    from migration_soak.exceptions import RehearsalError
    from migration_soak.pgconn import PgTarget
    from migration_soak.rehearsal import rehearse as run_rehearsal

    ctx, plan, run_id = _ctx()
    store = _store(plan)
    if not plan.rehearsal.enabled:
        text = "rollback not rehearsed: rehearsal.enabled is false in the plan"
        store.add_event(run_id, "rehearsal", {"status": "disabled", "text": text})
        raise AirflowSkipException(text)
    server = PgTarget.from_airflow(plan.rehearsal.connection) if plan.rehearsal.connection else None
    record = BackupRecord.from_dict(backup_record)
    try:
        with fetched(record) as local:
            result = run_rehearsal(plan, _direct(plan), local, _bin_dir(plan), run_id=run_id,
                                   backend_for=lambda target: _backend(plan, target), server=server)
    except (RehearsalError, BackupError) as exc:
        step = getattr(exc, "step", "restore")
        store.add_event(run_id, "rehearsal_failed", {"step": step, "text": str(exc)[:2000]})
        raise AirflowFailException(f"rollback rehearsal failed at {exc}; staging was not touched") from exc
    store.add_event(run_id, "rehearsal", result.to_dict())
    if result.status == "skipped":
        raise AirflowSkipException(result.text)
    return result.to_dict()


@task
def migrate(backup_record: dict) -> dict:
    """Apply pending migrations with Prisma's ``migrate deploy`` semantics (Hora 0 step 2).

    Takes the backup record only to order itself after a verified backup."""
    ctx, plan, run_id = _ctx()
    try:
        result = _backend(plan).deploy()
    except MigrationError as exc:
        _store(plan).add_event(run_id, "migrate_failed", {"text": str(exc)[:2000], "lock_attempts": _attempts(exc)})
        raise AirflowFailException(f"migration failed: {exc}") from exc
    payload = result.to_dict()
    waits = [a for a in payload.get("attempts", []) if a.get("outcome") == "lock_timeout"]
    _store(plan).add_event(run_id, "migrate", {**payload, "text": f"applied {payload.get('applied')}"
                                               + (f" after {len(waits)} lock timeout(s), retried" if waits else "")})
    return payload


@task
def verify(_migrated: dict) -> str:
    """Ledger row finished and deprecated columns gone (Hora 0 step 3, "Schema validado").

    Returns the time of verification (ISO-8601, UTC): the hour-0 checks' tick."""
    from migration_soak.migrate import verify_applied

    ctx, plan, run_id = _ctx()
    m = plan.migration
    try:
        verify_applied(_direct(plan), m.name, m.table, tuple(m.dropped_columns))
    except MigrationError as exc:
        raise AirflowFailException(str(exc)) from exc
    _confirm_with_prisma(plan, run_id, "applied")
    return _moment(plan, run_id, "verified", "at", "migration verified: ledger row finished, columns gone")


@task
def start_clock() -> str:
    """Start the soak clock once the Hora 0 checklist has run; returns hour 0 (ISO-8601, UTC).

    Every phase tick is computed from it (seed: the phases count hours from the end of
    "Hora 0"). A retried task returns the recorded time: the clock never restarts.
    Skipped when a NO-GO already stopped the soak at hour 0: the phases never start.
    """
    ctx, plan, run_id = _ctx()
    breach = _store(plan).no_go(run_id)
    if breach is not None:
        raise AirflowSkipException(f"the soak stopped at hour 0, the clock does not start: {breach.get('text')}")
    return _moment(plan, run_id, "hour0", "hour0", "Hora 0 checklist done; the soak clock starts")


@task
def start_baseline() -> str:
    """Start the baseline window before the migration; returns its origin (ISO-8601, UTC)."""
    ctx, plan, run_id = _ctx()
    return _moment(plan, run_id, "baseline_start", "at", "baseline measurements start")


@task(trigger_rule="none_failed")  # after a rehearsal that passed or was skipped (it says why)
def fingerprint(_rehearsal: dict | None) -> dict:
    """Row counts and fingerprints of the preserved columns before the migration, for the
    data-loss checks (seed NO-GO "Cualquier pérdida de datos detectada")."""
    from migration_soak.sources.data_loss import record_baseline

    ctx, plan, run_id = _ctx()
    store = _store(plan)
    if not store.events(run_id, "fingerprint") and any(c.source.kind == "fingerprint" for c in plan.checks):
        record_baseline(plan, run_id, store, _staging(plan))
    return {"recorded": len(store.events(run_id, "fingerprint"))}


def restart_apps_now(plan: Plan) -> int:
    """Call the plan's restart action; returns the HTTP status. Raises on a non-2xx answer."""
    from airflow.providers.http.hooks.http import HttpHook

    r = plan.restart
    resp = HttpHook(method=r.method, http_conn_id=r.connection).run(r.endpoint, extra_options={"timeout": 60})
    return resp.status_code


@task
def restart_apps(_hour0: str) -> int:
    """Restart the applications so they drop cached schema (Checklist Hora 0)."""
    ctx, plan, run_id = _ctx()
    status = restart_apps_now(plan)
    _store(plan).add_event(run_id, "restart", {"status": status, "text": "applications restarted"})
    return status


@task.branch(trigger_rule="none_failed")
def judge_soak() -> list[str]:
    """Judge the soak from the store alone; an INCONCLUSIVE verdict goes to a person when
    the run's ``on_inconclusive`` is ``ask``. Runs when check tasks were skipped (the soak
    stopped before they took a reading), never after a failed one."""
    from migration_soak.judge import judge

    ctx, plan, run_id = _ctx()
    store = _store(plan)
    verdict = judge(plan, store.observations(run_id), float(ctx["params"]["time_scale"]))
    store.add_event(run_id, "verdict", {**verdict.to_dict(), "text": f"{verdict.decision}: {'; '.join(verdict.reasons)}"})
    log.info("verdict: %s: %s", verdict.decision, "; ".join(verdict.reasons))
    ctx["ti"].xcom_push(key="verdict", value=verdict.to_dict())
    if verdict.decision == "INCONCLUSIVE" and ctx["params"]["on_inconclusive"] == "ask":
        notify.send(notify.inconclusive_text(plan, verdict.reasons), plan.connections.slack)
        return ["human_decision"]
    return ["ask_sign_off"]


def _answer(ctx, task_id: str) -> decision_mod.Answer | None:
    return decision_mod.Answer.from_hitl(ctx["ti"].xcom_pull(task_ids=task_id))


@task.branch(trigger_rule="none_failed_min_one_success")
def ask_sign_off() -> list[str]:
    """The decision before any sign-off (verdict, a person's answer on INCONCLUSIVE, the
    unattended policy); asks for the QA sign-off only when the run is about to claim GO."""
    ctx, plan, run_id = _ctx()
    human = _answer(ctx, "human_decision")
    if human is not None:
        _store(plan).add_event(run_id, "human_decision", {
            "chosen": [human.chosen], "by": human.by, "timed_out": human.timed_out,
            "text": "nobody answered in time: roll back" if human.timed_out else f"{human.by} chose {human.chosen}"})
    verdict = _verdict(ctx)
    before = decision_mod.candidate(verdict.decision, human, ctx["params"]["on_inconclusive"], verdict.reasons)
    ctx["ti"].xcom_push(key="candidate", value=before.to_dict())
    if decision_mod.needs_sign_off(before, bool(ctx["params"]["require_sign_off"])):
        return ["sign_off", "decide"]  # decide waits for sign_off, its other upstream
    return ["decide"]


@task.branch(trigger_rule="none_failed_min_one_success")
def decide() -> list[str]:
    """The final branch: GO (report) or the rollback group, recorded as the run's single
    ``decision`` event (decision.py). A rejected or unanswered sign-off is never a GO."""
    ctx, plan, run_id = _ctx()
    store = _store(plan)
    before = decision_mod.Decision(**ctx["ti"].xcom_pull(task_ids="ask_sign_off", key="candidate"))
    require = bool(ctx["params"]["require_sign_off"])
    sign_off = _answer(ctx, "sign_off") if decision_mod.needs_sign_off(before, require) else None
    if sign_off is not None:
        state = "timed_out" if sign_off.timed_out else \
            "approved" if sign_off.chosen == decision_mod.APPROVE_OPTION else "rejected"
        store.add_event(run_id, "sign_off", {"state": state, "by": sign_off.by, "comment": sign_off.comment,
                                             "text": f"QA sign-off {state.replace('_', ' ')}"
                                                     + (f" by {sign_off.by}" if sign_off.by else "")
                                                     + (f": {sign_off.comment}" if sign_off.comment else "")})
    final = decision_mod.decide(before, require, sign_off, plan.verdict.on_sign_off_rejected)
    store.add_event(run_id, "decision", {**final.to_dict(), "text": (
        f"{final.outcome.replace('_', '-')}, {final.action}: {final.reason} (decided by {final.by})")})
    log.info("decision: %s", final)
    return ["rollback.notify_rollback"] if final.action == "rollback" else ["report"]


def _decision(plan: Plan, run_id: str) -> decision_mod.Decision | None:
    """The run's final decision from the store (recorded once by ``decide``)."""
    events = _store(plan).events(run_id, "decision")
    if not events:
        return None
    payload = {k: v for k, v in events[-1]["payload"].items() if k != "text"}
    return decision_mod.Decision(**payload)


def _verdict(ctx):
    from migration_soak.judge import Verdict

    return Verdict.from_dict(ctx["ti"].xcom_pull(task_ids="judge_soak", key="verdict"))


def write_report() -> str:
    """Render and write the results report of the current run; returns its path."""
    from migration_soak import report

    ctx, plan, run_id = _ctx()
    store = _store(plan)
    text = report.render_report(plan, run_id, _verdict(ctx), store.observations(run_id), store.events(run_id),
                                float(ctx["params"]["time_scale"]),
                                chart_dir=plan.path(plan.report_location) / f"charts-{report.safe_name(run_id)}")
    path = report.write(plan.path(plan.report_location), f"soak-{report.safe_name(run_id)}.md", text)
    store.add_event(run_id, "report", {"path": str(path), "text": f"report written to {path}"})
    log.info("report: %s", path)
    return str(path)


@task
def report() -> str:
    """The results report when the migration stays (GO, or kept without a GO); only then,
    after any sign-off, does Slack hear "verdict: GO"."""
    ctx, plan, run_id = _ctx()
    path = write_report()
    final = _decision(plan, run_id)
    notify.send(notify.decision_text(plan, final, float(ctx["params"]["time_scale"]), Path(path).name),
                plan.connections.slack)
    return path


@task
def notify_rollback() -> None:
    """Slack: "ROLLBACK INITIATED - Reason: ..." (rollback step 1)."""
    ctx, plan, run_id = _ctx()
    final = _decision(plan, run_id)
    text = f"ROLLBACK INITIATED - Reason: {final.outcome}: {final.reason}"
    _store(plan).add_event(run_id, "rollback_started", {"text": text})
    notify.send(f":rotating_light: [{plan.environment}] {plan.migration.name}: {text}", plan.connections.slack)


@task
def restore() -> dict:
    """Re-add the dropped columns and copy every value back from the backup (step 2)."""
    from migration_soak.backup import BackupRecord
    from migration_soak.backup_storage import fetched
    from migration_soak.exceptions import RollbackError
    from migration_soak.rollback import restore_columns

    ctx, plan, run_id = _ctx()
    store = _store(plan)
    record = BackupRecord.from_dict(store.events(run_id, "backup")[-1]["payload"] | {})
    m = plan.migration
    try:  # the backup may have been taken on another worker: fetch it from its storage
        with fetched(record) as local:
            result = restore_columns(_direct(plan), local, _bin_dir(plan), table=m.table,
                                     columns=tuple(m.dropped_columns), key=m.key, down_sql=plan.path(m.down_sql),
                                     lock_timeout_s=m.lock_timeout_s, lock_retries=m.lock_retries)
    except BackupError as exc:
        raise AirflowFailException(f"rollback cannot read the backup, nothing restored: {exc}") from exc
    except RollbackError as exc:
        store.add_event(run_id, "restore_failed", {"text": str(exc)[:2000], "lock_attempts": _attempts(exc)})
        raise AirflowFailException(f"restore failed: {exc}") from exc
    payload = result.to_dict()
    store.add_event(run_id, "restore", {**payload, "text": (
        f"restored {payload['values_restored']} values for {payload['users_matched']} of "
        f"{payload['users_at_backup']} users present at backup time; {payload['mismatches']} mismatches"
        + (f"; {payload['values_kept']} newer values written by the app kept" if payload.get("values_kept") else "")
        + f"; ACCESS EXCLUSIVE only for the {payload.get('ddl_s', 0):.2f} s re-add, then "
          f"{payload.get('batches', 0)} row-locked batches")})
    return payload


@task
def mark_ledger(_restored: dict) -> None:
    """Mark the migration rolled back so it reads as pending again (step 3)."""
    from migration_soak.migrate import LedgerBackend

    ctx, plan, run_id = _ctx()
    backend = _backend(plan)
    try:
        backend.mark_rolled_back(plan.migration.name)
        # Our own reading of the ledger, whatever the backend: the record of the rollback.
        states = {s.name: s.state for s in LedgerBackend(_direct(plan), plan.path(plan.migration.migrations_dir)).status()}
    except MigrationError as exc:
        raise AirflowFailException(f"marking {plan.migration.name} rolled back: {exc}") from exc
    _store(plan).add_event(run_id, "ledger", {"migrations": states, "removed_rows": getattr(backend, "removed_rows", []),
                                             "text": f"{plan.migration.name} is {states[plan.migration.name]} again"})
    _confirm_with_prisma(plan, run_id, "pending")


@task
def restart_after_rollback() -> int:
    """Restart the applications on the restored schema (step 4)."""
    ctx, plan, run_id = _ctx()
    status = restart_apps_now(plan)
    _store(plan).add_event(run_id, "rollback_restart", {"status": status, "text": "applications restarted after rollback"})
    return status


@task
def health(_restarted: int) -> dict:
    """The system is back where it was (step 5): health endpoints answer and the columns exist."""
    from migration_soak import sources

    ctx, plan, run_id = _ctx()
    results = {}
    for check in plan.checks:
        if check.source.kind == "http":
            results[check.id] = sources.measure(check, plan).value
    from migration_soak.sources.sql import run_readonly

    cols = [r[0] for r in run_readonly(plan.connections.staging,
                                       (SQL_DIR / "deprecated_columns_present.sql").read_text())[1]]
    results["columns_back"] = sorted(cols)
    ok = all(v == 1.0 for k, v in results.items() if k != "columns_back") and \
        sorted(cols) == sorted(plan.migration.dropped_columns)
    _store(plan).add_event(run_id, "health", {**results, "ok": ok, "text": f"post-rollback health {'ok' if ok else 'FAILED'}"})
    if not ok:
        raise AirflowFailException(f"post-rollback health failed: {results}")
    return results


@task
def post_mortem(_health: dict) -> str:
    """The report plus a post-mortem under ``incidents/`` (step 6)."""
    from migration_soak import report as report_mod

    ctx, plan, run_id = _ctx()
    store = _store(plan)
    report_path = write_report()
    text = report_mod.render_postmortem(plan, run_id, _verdict(ctx), store.observations(run_id), store.events(run_id))
    path = report_mod.write(plan.path(plan.report_location) / "incidents",
                            f"{datetime.now(timezone.utc):%Y-%m-%d}-{plan.environment}-rollback-{report_mod.safe_name(run_id)}.md", text)
    store.add_event(run_id, "rollback_completed", {"post_mortem": str(path), "report": report_path,
                                                   "text": "rollback completed"})
    notify.send(f":white_check_mark: [{plan.environment}] rollback of {plan.migration.name} completed; "
                f"post-mortem {path.name}", plan.connections.slack)
    return str(path)


@task
def conclude() -> str:
    """The run's state: success only for a GO that completed (decision GO and proceed, the
    report written); otherwise fail with the reasons, after the rollback is done."""
    ctx, plan, run_id = _ctx()
    final = _decision(plan, run_id)
    if final is None:
        raise AirflowFailException("the soak reached no decision: see the failed task above")
    store = _store(plan)
    if final.is_go:
        if not store.events(run_id, "report"):
            raise AirflowFailException("GO was decided but the report was not written (task report failed): "
                                       "not a GO until it is")
        return final.outcome
    if final.action == "rollback":
        done = bool(store.events(run_id, "rollback_completed"))
        raise AirflowFailException(f"{final.outcome.replace('_', '-')}: {final.reason}; rollback "
                                   + ("completed" if done else "NOT completed: see the failed rollback task"))
    raise AirflowFailException(f"{final.outcome.replace('_', '-')}, migration kept without a GO: {final.reason}")
