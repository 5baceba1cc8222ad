"""The run's bookkeeping between the runbook's steps, as plain functions over the store.

What the DAG's tasks decide and record besides the runbook's own steps (runbook.py):
opening the run, starting the soak clock, the pre-migration fingerprints, turning the
verdict and people's answers into the run's single decision (decision.py), starting the
rollback and the run's conclusion. No Airflow: ``airflow/tasks.py`` passes in what it
reads from the task's context and turns the errors raised here into failed or skipped
tasks (``SoakStopped`` skips).
"""

from __future__ import annotations

from typing import Any, Callable

from migration_soak import decision, notify, runbook
from migration_soak.backup import BackupRecord
from migration_soak.clock import check_clock_lead, check_time_scale
from migration_soak.decision import Answer, Decision
from migration_soak.exceptions import SoakError, SoakStopped
from migration_soak.judge import Verdict
from migration_soak.migrate import verify_applied
from migration_soak.pgconn import PgTarget
from migration_soak.plan import Plan
from migration_soak.prisma_cli import PrismaCliBackend
from migration_soak.sources.data_loss import record_baseline
from migration_soak.store import Store, other_dag_run


def open_run(plan: Plan, run_id: str, store: Store, *, environment: str, plan_param: str, time_scale: Any,
             probe: Callable[[], object], identify: runbook.Identify, identify_plan: runbook.IdentifyPlan,
             clock_lead_s: Any = 0.0, dag_run: str | None = None) -> None:
    """Create the store's tables (first: ``release``, which always runs, reads the lease
    table), check the trigger form's ``time_scale`` and ``clock_lead_s`` (``ValueError``:
    ``start_clock`` reads the lead only after the migration) and the backup storage
    (``probe()``: an unusable ``backup_location`` fails now, not after the baseline hour;
    ``BackupError``), then ``runbook.admit`` (``PlanError``/``SoakError``; ``identify``,
    ``identify_plan``: the staging database's identity, the lease's key; ``dag_run``: which
    Airflow dag run this is, ``context.dag_run_key``)."""
    store.create_schema()
    check_time_scale(time_scale, plan)  # the soak within MAX_SOAK_HOURS of wall time: any clock holds it
    check_clock_lead(clock_lead_s)
    probe()
    runbook.admit(plan, run_id, store, environment=environment, plan_param=plan_param, identify=identify,
                  identify_plan=identify_plan, dag_run=dag_run)


def rehearsal_disabled(plan: Plan, run_id: str, store: Store) -> str | None:
    """When the plan disables the rehearsal: why, recorded as the ``rehearsal`` event; else None."""
    if plan.rehearsal.enabled:
        return None
    text = "rollback not rehearsed: rehearsal.enabled is false in the plan"
    store.add_event(run_id, "rehearsal", {"status": "disabled", "text": text})
    return text


def verify(plan: Plan, run_id: str, store: Store, direct: PgTarget, cli: PrismaCliBackend | None) -> str:
    """Hora 0 step 3: the ledger row finished and the dropped columns gone on ``direct``, and
    the real Prisma CLI (``cli``, if the plan has a project) agrees; recorded once as the
    ``verified`` event. Returns when (ISO-8601, UTC): the hour-0 checks' tick. ``MigrationError``."""
    m = plan.migration
    verify_applied(direct, m.name, m.table, tuple(m.dropped_columns))
    runbook.confirm_with_prisma(run_id, store, cli, m.name, "applied")
    return runbook.moment(store, run_id, "verified", "at", "migration verified: ledger row finished, columns gone")


def restart(plan: Plan, run_id: str, store: Store, kind: str, text: str,
            http: Callable[[str, str, str], int]) -> int:
    """The plan's restart action (``http(connection, endpoint, method)`` -> HTTP status,
    raising on non-2xx), recorded as event ``kind``; returns the status."""
    status = http(plan.restart.connection, plan.restart.endpoint, plan.restart.method)
    store.add_event(run_id, kind, {"status": status, "text": text})
    return status


def start_clock(store: Store, run_id: str, lead_s: float) -> str:
    """Hour 0 (ISO-8601, UTC), ``lead_s`` wall seconds from now, recorded once as the
    ``hour0`` event; ``SoakStopped`` when a NO-GO already stopped the soak."""
    breach = store.no_go(run_id)
    if breach is not None:
        raise SoakStopped(f"the soak stopped at hour 0, the clock does not start: {breach.get('text')}")
    return runbook.moment(store, run_id, "hour0", "hour0",
                          "Hora 0 checklist done; the soak clock starts" + (f" in {lead_s:g} s" if lead_s else ""),
                          lead_s=lead_s)


def record_fingerprints(plan: Plan, run_id: str, store: Store, staging: PgTarget) -> int:
    """The pre-migration fingerprints of the plan's ``fingerprint`` checks, taken once per
    run (NO-GO "Cualquier pérdida de datos"); returns how many the run holds."""
    if not store.events(run_id, "fingerprint") and any(c.source.kind == "fingerprint" for c in plan.checks):
        record_baseline(plan, run_id, store, staging)
    return len(store.events(run_id, "fingerprint"))


def asks_a_person(verdict: Verdict, on_inconclusive: str) -> bool:
    """Whether the verdict goes to a person: INCONCLUSIVE with ``on_inconclusive`` ``ask``."""
    return verdict.decision == "INCONCLUSIVE" and on_inconclusive == "ask"


def candidate(store: Store, run_id: str, verdict: Verdict, human: Answer | None, on_inconclusive: str) -> Decision:
    """``decision.candidate``, after recording the person's answer (if any) as the
    ``human_decision`` event."""
    if human is not None:
        store.add_event(run_id, "human_decision", decision.human_event(human))
    return decision.candidate(verdict.decision, human, on_inconclusive, verdict.reasons)


def decide(plan: Plan, store: Store, run_id: str, before: Decision, require_sign_off: bool,
           sign_off: Answer | None) -> Decision:
    """``decision.decide``, recorded as the run's single ``decision`` event (after the
    ``sign_off`` event when the sign-off was asked and answered).

    Once the run started rolling back (a ``rollback_started`` event: ``decide`` or the
    questions before it cleared and answered again in the UI), only a rollback may be
    decided again: the migration is no longer applied, so a GO or a keep would claim a
    migration that is not there (``SoakError``, nothing recorded)."""
    if not decision.needs_sign_off(before, require_sign_off):
        sign_off = None
    final = decision.decide(before, require_sign_off, sign_off, plan.verdict.on_sign_off_rejected)
    started = store.events(run_id, "rollback_started")
    if started and final.action != "rollback":
        raise SoakError(f"this run already started rolling back ({started[0]['payload'].get('text')}): the migration "
                        f"is no longer applied, so a new decision ({final.outcome.replace('_', '-')}, {final.action}: "
                        f"{final.reason}) cannot stand; trigger a new run to soak it again")
    if sign_off is not None:
        store.add_event(run_id, "sign_off", decision.sign_off_event(sign_off))
    store.add_event(run_id, "decision", decision.decision_event(final))
    return final


def start_rollback(plan: Plan, store: Store, run_id: str, send: Callable[[str], bool]) -> bool:
    """Rollback step 1: "ROLLBACK INITIATED - Reason: ..." sent to the team (``send(message)``:
    ``notify.send``, True when Slack accepted it), then recorded as the ``rollback_started``
    event with ``notified``: what Slack said, so the report never says "team notified" for a
    message Slack never got. Returns ``notified``."""
    text = notify.rollback_reason(runbook.recorded_decision(store, run_id))
    sent = bool(send(notify.rollback_text(plan, text)))
    store.add_event(run_id, "rollback_started", {"text": text, "notified": sent})
    return sent


def kept_backup(store: Store, run_id: str) -> BackupRecord:
    """The backup the run's ``backup`` step kept (its last ``backup`` event)."""
    return BackupRecord.from_dict(store.events(run_id, "backup")[-1]["payload"] | {})


def conclude(store: Store, run_id: str, plan: str | None = None, dag_run: str | None = None) -> str:
    """The run's outcome when it is green (a GO whose report was written after it: a
    report of an earlier decision, before a question was cleared and answered again in the
    UI, is not this GO's); else ``SoakError`` with ``decision.failure``'s reason. ``plan``
    (the plan param) and ``dag_run`` (``context.dag_run_key``): a run id of this plan
    claimed by another Airflow dag run (this one deleted and triggered again, refused by
    ``load``) is never concluded from that run's decision."""
    claim = store.run_claim(run_id) if plan is not None and dag_run is not None else None
    if claim is not None and claim["plan"] == plan and other_dag_run(claim, dag_run):
        raise SoakError(f"run id {run_id!r} of plan {plan} belongs to another Airflow run (created "
                        f"{claim['dag_run'] or 'before dag runs were recorded'}): this run, created {dag_run}, was refused and decided nothing; "
                        "that run's decision is not its outcome")
    final = runbook.recorded_decision(store, run_id)
    kinds = [e["kind"] for e in store.events(run_id)]
    decided = max((i for i, k in enumerate(kinds) if k == "decision"), default=-1)
    why = decision.failure(final, report_written="report" in kinds[decided + 1:],
                           rollback_completed=bool(store.events(run_id, "rollback_completed")))
    if why is not None:
        raise SoakError(why)
    assert final is not None  # failure() names a missing decision
    return final.outcome
