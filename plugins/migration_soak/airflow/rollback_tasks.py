"""The rollback group's tasks (runbook "Procedimiento de Rollback en Staging", steps 1-6):
thin TaskFlow glue over runbook.py and lifecycle.py, like ``tasks.py``."""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException

from migration_soak import lifecycle, notify, runbook, sources
from migration_soak.airflow.context import backend, direct, direct_field, failing, query, run_context, staging_context
from migration_soak.airflow.context import verdict as pushed_verdict
from migration_soak.airflow.tasks import restart, write_report
from migration_soak.backup_storage import fetched
from migration_soak.exceptions import BackupError, MigrationError, RollbackError
from migration_soak.rollback import restore_summary as rollback_summary

log = logging.getLogger(__name__)


@task
def notify_rollback() -> None:
    """``lifecycle.start_rollback``: Slack "ROLLBACK INITIATED - Reason: ..." (rollback step 1),
    recorded with whether Slack accepted it. An unreachable Slack does not stop the rollback."""
    ctx, plan, run_id, store = staging_context("notify_rollback")
    if not lifecycle.start_rollback(plan, store, run_id, lambda text: notify.send(text, plan.connections.slack)):
        log.warning("rollback started; the Slack notification was not accepted (see the warning above)")


#: Tries of ``restore`` after the first: a worker lost mid-restore (SIGKILL, a node gone) is
#: failed by the scheduler once its heartbeat times out, and the retry, on any worker, redoes
#: it safely (rollback.py re-adds only missing columns and copies back only values still
#: missing; tests/e2e/test_soak.py kills the worker running it).
RESTORE_RETRIES = 2


@task(retries=RESTORE_RETRIES, retry_delay=timedelta(seconds=5))
def restore() -> dict:
    """``runbook.restore`` (rollback step 2) from the backup recorded by ``backup``."""
    ctx, plan, run_id, store = staging_context("restore")
    done = runbook.restored_already(plan, run_id, store, query(plan))
    if done is not None:
        log.warning("this run's restore already completed and the columns are there: nothing copied again (values "
                    "written since the rollback are the application's); its result: %s", rollback_summary(done))
        return done
    record = lifecycle.kept_backup(store, run_id)
    # The backup may have been taken on another worker: fetched from its storage.
    with failing(BackupError, prefix="rollback cannot read the backup, nothing restored: "), \
            failing(RollbackError, prefix="restore failed: "):
        return runbook.restore(plan, run_id, store, fetch=lambda: fetched(record), direct=direct(plan),
                               pg_bin_dir=runbook.pg_bin_dir(plan), direct_field=direct_field(plan))


@task
def mark_ledger(_restored: dict) -> None:
    """``runbook.mark_rolled_back`` and Prisma's agreement (rollback step 3)."""
    ctx, plan, run_id, store = staging_context("mark_ledger")
    missing = runbook.dropped_already(plan, query(plan))
    if missing:  # restore marked success in the UI, or the columns dropped again since
        raise AirflowFailException(
            f"marking {plan.migration.name} rolled back: {plan.migration.table} still lacks {', '.join(missing)} "
            f"(restore did not give {'it' if len(missing) == 1 else 'them'} back: was it marked success?); the ledger "
            "is left as it is")
    with failing(MigrationError, prefix=f"marking {plan.migration.name} rolled back: "):
        runbook.mark_rolled_back(plan, run_id, store, backend(plan), direct(plan))
    with failing(MigrationError):
        runbook.confirm_with_prisma(run_id, store, runbook.prisma(plan, direct(plan)), plan.migration.name, "pending")


@task
def restart_after_rollback() -> int:
    """Restart the applications on the restored schema (step 4)."""
    return restart("rollback_restart", "applications restarted after rollback")


@task
def health(_restarted: int) -> dict:
    """``runbook.post_rollback_health`` (step 5); returns its results."""
    ctx, plan, run_id, store = run_context()
    # what decided a NO-GO, read again (runbook.rechecks); no verdict pushed: nothing to read again
    pushed = ctx["ti"].xcom_pull(task_ids="judge_soak", key="verdict")
    recheck = runbook.rechecks(plan, pushed_verdict(ctx)) if pushed else {}
    with failing(RollbackError):
        return runbook.post_rollback_health(plan, run_id, store, query=query(plan),
                                            measure=lambda check: sources.measure(check, plan).value, recheck=recheck)


@task
def post_mortem(_health: dict) -> str:
    """The report plus ``runbook.write_post_mortem`` (step 6); returns the post-mortem's path."""
    ctx, plan, run_id, store = run_context()
    path = runbook.write_post_mortem(plan, run_id, store, pushed_verdict(ctx), write_report())
    health = store.events(run_id, "health")
    notify.send(notify.rollback_done_text(plan, path.name, health[-1]["payload"] if health else None),
                plan.connections.slack)
    return str(path)
