"""Build the soak DAG from a plan: the plan's phases become task groups of check tasks.

backup -> rollback rehearsal -> migrate deploy -> verify -> restart apps -> hour-0 checks -> start the clock
-> phase groups in order (one sensor per check, waking at each tick) -> judge_soak
-> [human_decision on INCONCLUSIVE] -> ask_sign_off -> [sign_off] -> decide (branch)
-> report | the rollback group -> release -> conclude (green only for a GO; docs/verdict.md).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import DAG, Param, TaskGroup

from migration_soak import notify
from migration_soak.airflow import rollback_tasks as rb
from migration_soak.airflow import tasks as t
from migration_soak.clock import CLOCK_LEAD_MAX_S, TIME_SCALE_MAX, slowest_time_scale
from migration_soak.decision import APPROVE_OPTION, GO_OPTION, REJECT_OPTION, ROLLBACK_OPTION
from migration_soak.airflow.sensors import CheckSensor, GuardSensor
from migration_soak.exceptions import PlanError
from migration_soak.plan import MAX_SOAK_HOURS, Plan, load_plan

log = logging.getLogger(__name__)


#: Default wall seconds between ``start_clock`` and hour 0 (the ``clock_lead_s`` param):
#: time for ~40 check tasks to start and wait before the first tick. With none, on 2 cores
#: at time_scale 300, the real scheduler missed intensive ticks 1-2 (due 1-2 s after hour 0)
#: while it started them; at time_scale 1 it is 10 s of a 24 h soak.
CLOCK_LEAD_S = 10.0

#: Retries of a check task (see ``build_dag``); every other task runs once.
CHECK_RETRIES = 2


#: The sign-off question's body if ask_sign_off pushed none (it always does before asking):
#: it claims nothing about the soak.
NO_QUESTION = ("The question could not be built: read the judge_soak and ask_sign_off task logs (the verdict and "
               "who decided GO) before answering. Rejecting is not a GO.")


#: The INCONCLUSIVE question's body if judge_soak pushed none (it always does before asking).
NO_HUMAN_QUESTION = ("The question could not be built: read the judge_soak task log (the verdict and its reasons) "
                     "before answering. Roll back is the safe answer.")


def dag_id_for(plan_stem: str) -> str:
    """``migration_soak`` for the default plan, ``migration_soak__<name>`` for others."""
    return "migration_soak" if plan_stem == "default" else f"migration_soak__{plan_stem}"


def unusable_name(path: Path) -> str | None:
    """Why the plan file ``path`` cannot have a DAG (its name makes no valid dag id:
    Airflow allows letters, digits, ``_``, ``-`` and ``.``, at most 250 characters), or None.
    Such a file is left out (no DAG can stand in for it) and reported as an import error of
    ``dags/migration_soak_plan_errors.py``; the other plans' DAGs stay."""
    dag_id = dag_id_for(path.stem)
    if re.fullmatch(r"[\w.-]{1,250}", dag_id):  # Airflow's KEY_REGEX (Unicode letters allowed) and its 250
        return None
    return (f"its name makes the DAG id {dag_id!r}, which Airflow refuses (letters, digits, '_', '-' and '.' only, "
            "at most 250 characters): rename the file")


def build_dag(plan_stem: str, plan: Plan) -> DAG:
    """The DAG of one plan. ``plan_stem`` is the plan file's name without ``.yaml``."""
    with DAG(
        dag_id=dag_id_for(plan_stem),
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["migration", "soak", plan.environment],
        default_args={"owner": "platform", "retries": 0, "on_failure_callback": notify.on_task_failure},
        doc_md=f"**{plan.name}**: {plan.description}\n\nPlan file: `include/plans/{plan_stem}.yaml`.",
        params={
            "plan": Param(plan_stem, type="string", enum=[plan_stem],
                          description="The plan this DAG was built from (include/plans/<plan>.yaml)."),
            "environment": Param(plan.environment, type="string", enum=[plan.environment],
                                 description="The environment the plan soaks."),
            # Bounds under allOf, not as the schema's own minimum / maximum: Airflow 3.3's
            # trigger form gives those to its number field, which clamps a value beyond them
            # on blur (time_scale 100001 ran at 100000, unsaid); under allOf the form sends
            # what was typed and Airflow's validation of the params refuses it, naming the
            # param and the bound, as it refuses time_scale 0 (exclusiveMinimum: not clamped).
            "time_scale": Param(1.0, type="number", exclusiveMinimum=0, allOf=[{"maximum": TIME_SCALE_MAX}],
                                description=_time_scale_text(plan)),
            "clock_lead_s": Param(CLOCK_LEAD_S, type="number", allOf=[{"minimum": 0, "maximum": CLOCK_LEAD_MAX_S}],
                                  description="Wall seconds from the end of the Hora 0 checklist to hour 0 of the "
                                              "soak clock, so every check task is waiting before its first tick "
                                              f"({_first_tick_text(plan)})."),
            "require_sign_off": Param(False, type="boolean",
                                      description="Ask QA to approve in the UI before GO; a rejected or unanswered "
                                                  f"sign-off is not a GO ({plan.verdict.on_sign_off_rejected})."),
            "on_inconclusive": Param(plan.verdict.on_inconclusive, type="string", enum=["ask", "rollback", "go"],
                                     values_display=_on_inconclusive_labels(plan),
                                     description="When the verdict is INCONCLUSIVE: ask a person in the UI, or "
                                                 "decide unattended; an unattended go keeps the migration but is "
                                                 "never a GO (the run fails)."),
        },
    ) as dag:
        loaded = t.load()
        record = t.backup()
        checked = t.preflight()
        loaded >> checked
        # Check tasks may retry (the only tasks that do): they rebuild their state from the
        # store (one reading per tick), so a retry after a lost worker or a store hiccup
        # resumes at the right tick. They wait deferred (sensors.py), not in reschedule mode.
        common: dict[str, Any] = dict(time_scale="{{ params.time_scale }}", plan="{{ params.plan }}",
                                      retries=CHECK_RETRIES, retry_delay=timedelta(seconds=2), weight_rule="absolute")
        if plan.baseline:
            started = t.start_baseline()
            with TaskGroup("baseline", tooltip="before the migration: the reference for relative rules") as baseline:
                for check in plan.checks_in("baseline"):
                    CheckSensor(task_id=check.id, phase="baseline", check_id=check.id,
                                hour0="{{ ti.xcom_pull(task_ids='start_baseline') }}", doc_md=check.rule, **common)
            checked >> started >> baseline >> record
        else:
            checked >> record
        hour0_at = t.verify(t.migrate(t.fingerprint(t.rehearse(record))))
        restarted = t.restart_apps(hour0_at)

        with TaskGroup("hour0", tooltip="Checklist Hora 0: right after the migration and the restart") as hour0:
            for check in plan.checks_in("hour0"):
                CheckSensor(task_id=check.id, phase="hour0", check_id=check.id,
                            hour0="{{ ti.xcom_pull(task_ids='verify') }}", doc_md=check.rule, **common)
        clock = t.start_clock()
        restarted >> hour0 >> clock
        # Every phase starts with the clock and waits deferred for its first tick: chained
        # phases started the next phase's tasks on workers at the moment its first tick
        # was due, and on 2 cores at time_scale 300 all of them missed it.
        # They all become ready at once; the scheduler starts the phase whose first tick
        # comes first (and the guard) first (absolute priority weights, higher first).
        groups = []
        first = {p.name: rank for rank, p in enumerate(sorted(plan.phases, key=lambda p: p.start_hour))}
        for phase in plan.phases:
            with TaskGroup(phase.name, tooltip=f"every {phase.every_minutes:g} min, hours "
                           f"{phase.start_hour:g}-{phase.end_hour:g}") as group:
                for check in plan.checks_in(phase.name):
                    CheckSensor(task_id=check.id, phase=phase.name, check_id=check.id,
                                hour0="{{ ti.xcom_pull(task_ids='start_clock') }}", doc_md=check.rule,
                                priority_weight=len(plan.phases) + 1 - first[phase.name], **common)
            clock >> group
            groups.append(group)

        judged = t.judge_soak()
        (groups or [clock]) >> judged
        if plan.guard:
            guard = GuardSensor(task_id="guard", hour0="{{ ti.xcom_pull(task_ids='start_clock') }}",
                                doc_md="Alertas Críticas, every %g soak-min (at least %g s apart) for the whole soak"
                                       % (plan.guard.every_minutes, plan.guard.min_wall_seconds),
                                priority_weight=len(plan.phases) + 1, **common)
            clock >> guard >> judged
        human = HITLOperator(
            task_id="human_decision",
            subject=f"The soak of {plan.migration.name} is INCONCLUSIVE: GO or roll back?",
            # Rendered when the task runs: the question judge_soak built from its verdict and
            # the run's clock (notify.inconclusive_question).
            body="{{ ti.xcom_pull(task_ids='judge_soak', key='human_question') or '" + NO_HUMAN_QUESTION + "' }}",
            options=[GO_OPTION, ROLLBACK_OPTION],
            defaults=[ROLLBACK_OPTION],  # no answer in time: the safe way back
            response_timeout=timedelta(hours=plan.verdict.human_timeout_hours),
            assigned_users=_users(plan.verdict.decided_by),
        )
        ask = t.ask_sign_off()
        judged >> [human, ask]
        human >> ask
        sign_off = HITLOperator(
            task_id="sign_off",
            subject=f"QA sign-off: approve GO for {plan.migration.name}?",
            # Rendered when the task runs (``body`` is a template field): the question
            # ask_sign_off built from the recorded verdict and decision (notify.sign_off_question).
            body="{{ ti.xcom_pull(task_ids='ask_sign_off', key='sign_off_question') or '" + NO_QUESTION + "' }}",
            options=[APPROVE_OPTION, REJECT_OPTION],
            defaults=[REJECT_OPTION],  # applied by the scheduler when nobody answers in time
            params={"comment": Param("", type="string", description="Why (required reading for a rejection)")},
            response_timeout=timedelta(hours=plan.verdict.sign_off_timeout_hours),
            assigned_users=_users(plan.verdict.sign_off_by),  # only QA's answer is the QA sign-off
        )
        decision = t.decide()
        # ask_sign_off always picks decide; decide waits for sign_off when it was asked.
        ask >> [sign_off, decision]
        sign_off >> decision

        report = t.report()
        with TaskGroup("rollback") as rollback:
            restored = rb.restore()
            rb.notify_rollback() >> restored
            restarted_again = rb.restart_after_rollback()
            rb.mark_ledger(restored) >> restarted_again
            rb.post_mortem(rb.health(restarted_again))

        # The final branch picks among its direct downstreams: report or notify_rollback.
        decision >> [report, rollback]
        [report, rollback] >> t.release() >> t.conclude()
    return dag


def _time_scale_text(plan: Plan) -> str:
    """The trigger form's ``time_scale`` description: the plan's own soak length, and what
    a compressed run proves (report_sections.banner's words)."""
    from migration_soak.report_text import soak_length, wall_length

    hours = plan.soak_hours()
    length = soak_length(hours)
    return (f"Soak clock speed-up: 1 = real time, the plan's {length} soak; 300 = {length} in "
            f"{wall_length(hours * 3600 / 300)}. Above 1 the run is demonstration evidence, not a "
            f"{soak_length(hours, adjective=True)} soak, "
            f"and never an approval for production. At least {slowest_time_scale(plan):g} (below 1 the soak is "
            f"stretched: at most {MAX_SOAK_HOURS} h of wall time, refused by the run's load task otherwise), at most "
            f"{TIME_SCALE_MAX:,}: a value beyond is refused, never run at the bound.")


def _first_tick_text(plan: Plan, time_scale: float = 300) -> str:
    """When the plan's first tick after hour 0 falls on a ``time_scale`` clock (its phases'
    first ticks, the guard's cadence on that clock): the form said "the first intensive tick
    is 1 s after hour 0" for every plan, 3 s in the default plan at 300x."""
    from migration_soak.clock import guard_every

    firsts = [p.tick_offsets()[0] for p in plan.phases if p.tick_offsets()]
    if plan.guard is not None:
        firsts.append(guard_every(plan, time_scale))
    minute = min(firsts).total_seconds() / 60
    return (f"on a {time_scale:g}x clock the plan's first tick (soak minute {minute:g}) is "
            f"{round(minute * 60 / time_scale, 1):g} s after hour 0")


def _on_inconclusive_labels(plan: Plan) -> dict[str, str]:
    """What the trigger form's ``on_inconclusive`` dropdown shows for each value
    (decision.candidate)."""
    return {"ask": f"ask a person in Required actions (no answer in {plan.verdict.human_timeout_hours:g} h: "
                   "Roll back)",
            "rollback": "roll back unattended",
            "go": "keep the migration unattended: INCONCLUSIVE, never a GO (the run fails)"}


def _users(ids: list[str]) -> list[Any] | None:
    """``assigned_users`` of a HITL task: only these Airflow users may answer (None: anyone
    who may act on the run's tasks)."""
    return [{"id": u, "name": u} for u in ids] or None


def build_plan_error_dag(plan_stem: str, error: str) -> DAG:
    """The stand-in DAG of a plan file that does not parse: same dag id, one task
    ``plan_error`` that fails with ``error`` (which names the file, field and value).

    Why not raise here: every plan is built by the one DAG file, so an import error would
    hide every soak DAG, including one whose run is half way through its 24 hours (its
    tasks would fail to load on the workers). The broken plan keeps its dag id instead,
    and ``dags/migration_soak_plan_errors.py`` raises the same error as an import error
    of its own file (the UI's "DAG Import Errors", ``airflow dags list-import-errors``).
    """
    with DAG(
        dag_id=dag_id_for(plan_stem),
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        tags=["migration", "soak", "plan-error"],
        default_args={"owner": "platform", "retries": 0},
        doc_md=f"**The plan file `{plan_stem}.yaml` is invalid**; fix it (also listed in the DAG import "
               f"errors, against `migration_soak_plan_errors.py`):\n\n```\n{error}\n```",
    ) as dag:
        t.plan_error(error)
    return dag


def build_all(plans_dir: Path | None = None) -> dict[str, DAG]:
    """One DAG per ``<plans_dir>/*.yaml`` (default ``migration_soak.plan.PLANS_DIR``,
    read at call time), keyed by dag id.

    A plan that does not load (``PlanError``) gets ``build_plan_error_dag`` and an error
    log line; the other plans' DAGs are built as usual. The same files' errors are the
    import error of ``dags/migration_soak_plan_errors.py``.
    """
    from migration_soak import plan as plan_module

    dags = {}
    for path in sorted((plans_dir or plan_module.PLANS_DIR).glob("*.yaml")):
        why = unusable_name(path)
        if why is not None:
            log.error("plan %s has no DAG: %s", path, why)
            continue
        try:
            dags[dag_id_for(path.stem)] = build_dag(path.stem, load_plan(path))
        except PlanError as exc:
            log.error("plan %s is invalid, its DAG only reports the error: %s", path, exc)
            dags[dag_id_for(path.stem)] = build_plan_error_dag(path.stem, str(exc))
        except Exception as exc:  # noqa: BLE001 - one plan's DAG must not take every soak DAG down
            # a plan that loads but whose DAG does not build (a rule the plan does not know
            # of yet): the same stand-in, naming the file and the error
            log.exception("plan %s loads but its DAG could not be built; its DAG only reports the error", path)
            dags[dag_id_for(path.stem)] = build_plan_error_dag(
                path.stem, f"{path}: its DAG could not be built: {type(exc).__name__}: {exc}")
    return dags
