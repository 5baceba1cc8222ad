"""The check sensor: one task instance per (phase, check), waking at each tick.

It runs in ``reschedule`` mode: between ticks it holds no worker slot; at each wake-up
it calls :func:`migration_soak.observe.observe_due` and asks to be rescheduled at the
next tick's wall time. All state lives in the observation store, so a restarted
scheduler or a retried task resumes at the right tick.

What the grid shows: a check task that never took a reading because the soak stopped
ends ``skipped``, not ``success``; an ``error`` reading (counted as missing, never as a
pass) is a WARNING line in the task's log and the task stays green, since failing it
would stop the soak on a metrics hiccup that the verdict already accounts for.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk.bases.sensor import BaseSensorOperator
from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSkipException

from migration_soak import observe
from migration_soak.plan import load_plan
from migration_soak.store import Store


def _log_reading(log, what: str, o) -> None:
    """One log line per reading; an ``error`` reading is a WARNING naming why."""
    if o.status == "error":
        log.warning("%s tick %d: ERROR reading, counted as missing (never as a pass): %s", what, o.tick,
                    o.evidence.get("error", ""))
    else:
        log.info("%s tick %d: %s %s (%s)", what, o.tick, "n/a" if o.value is None else f"{o.value:g}", o.unit, o.status)


def _stop(log, taken: list, breach: dict) -> None:
    """The soak stopped: a task that took no reading ends skipped (it measured nothing)."""
    log.warning("soak stopped: %s", breach.get("text"))
    if not taken:
        raise AirflowSkipException(f"soak stopped before this check took a reading: {breach.get('text')}")


class CheckSensor(BaseSensorOperator):
    """Measure one check of one phase at each of its ticks.

    :param item: ``{"phase": str, "check": str}`` (mapped: one per pair of the plan's schedule)
    :param hour0: ISO-8601 UTC time the migration was verified (templated, from XCom)
    :param time_scale: speed-up of the soak clock, 1 = real time (templated, from params)
    :param plan: plan name or path (templated, from params)
    """

    template_fields = ("item", "hour0", "time_scale", "plan")
    ui_color = "#e8f4ea"

    def __init__(self, *, item, hour0: str, time_scale, plan: str, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 1)
        kwargs.setdefault("timeout", 2 * 24 * 3600)
        super().__init__(**kwargs)
        self.item = item
        self.hour0 = hour0
        self.time_scale = time_scale
        self.plan = plan

    def execute(self, context):
        plan = load_plan(self.plan)
        phase, check_id = self.item["phase"], self.item["check"]
        store = Store.from_airflow(plan.connections.store)
        progress = observe.observe_due(
            plan, store, context["run_id"], phase, check_id,
            datetime.fromisoformat(self.hour0), float(self.time_scale),
        )
        for o in progress.recorded:
            _log_reading(self.log, f"{check_id} {phase}", o)
        if progress.stopped_by is not None:
            _stop(self.log, store.observations(context["run_id"], phase=phase, check_id=check_id), progress.stopped_by)
            return {"stopped_by": progress.stopped_by.get("criterion")}
        if progress.done:
            return {"done": True}
        raise AirflowRescheduleException(progress.next_at)


class GuardSensor(BaseSensorOperator):
    """The guard: the plan's alert checks at a short cadence for the whole soak.

    Runs beside the phases. Each wake-up measures every guard check that is due (phase
    ``guard``), judges the NO-GO criteria on them at once (so a breach stops the soak
    within one guard interval) and posts each alert that starts firing to Slack, once.

    :param hour0: ISO-8601 UTC start of the soak clock (templated, from XCom)
    :param time_scale: speed-up of the soak clock (templated, from params)
    :param plan: plan name (templated, from params)
    """

    template_fields = ("hour0", "time_scale", "plan")
    ui_color = "#fde2e1"

    def __init__(self, *, hour0: str, time_scale, plan: str, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 1)
        kwargs.setdefault("timeout", 2 * 24 * 3600)
        super().__init__(**kwargs)
        self.hour0 = hour0
        self.time_scale = time_scale
        self.plan = plan

    def execute(self, context):
        from migration_soak import judge, notify

        plan = load_plan(self.plan)
        run_id = context["run_id"]
        store = Store.from_airflow(plan.connections.store)
        hour0, scale = datetime.fromisoformat(self.hour0), float(self.time_scale)
        wake_at = []
        for check_id in plan.guard.checks:
            progress = observe.observe_due(plan, store, run_id, "guard", check_id, hour0, scale)
            for o in progress.recorded:
                _log_reading(self.log, f"guard {check_id}", o)
            if progress.stopped_by is not None:
                _stop(self.log, store.observations(run_id, phase="guard"), progress.stopped_by)
                return {"stopped_by": progress.stopped_by.get("criterion")}
            if progress.next_at is not None:
                wake_at.append(progress.next_at)
        notified = {e["payload"].get("alert") for e in store.events(run_id, "alert")}
        for alert in judge.firing_alerts(plan, store.observations(run_id), scale):
            if alert.id in notified:
                continue
            text = f"ALERT {alert.text}: {alert.detail}"
            store.add_event(run_id, "alert", {"alert": alert.id, "text": text})
            notify.send(f":warning: [{plan.environment}] {text}", plan.connections.slack)
        if not wake_at:
            return {"done": True}
        raise AirflowRescheduleException(min(wake_at))
