"""The check sensor: one task instance per (phase, check), waking at each tick.

It runs in ``reschedule`` mode: between ticks it holds no worker slot; at each wake-up
it calls :func:`migration_soak.observe.observe_due` and asks to be rescheduled at the
next tick's wall time. All state lives in the observation store, so a restarted
scheduler or a retried task resumes at the right tick.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk.bases.sensor import BaseSensorOperator
from airflow.sdk.exceptions import AirflowRescheduleException

from migration_soak import observe
from migration_soak.plan import load_plan
from migration_soak.store import Store


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
            shown = "n/a" if o.value is None else f"{o.value:g} {o.unit}"
            self.log.info("%s %s tick %d: %s (%s) %s", check_id, phase, o.tick, shown, o.status,
                          o.evidence.get("error", ""))
        if progress.stopped_by is not None:
            self.log.warning("soak stopped: %s", progress.stopped_by.get("text"))
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
                self.log.info("guard %s tick %d: %s (%s) %s", check_id, o.tick, o.value, o.status, o.evidence.get("error", ""))
            if progress.stopped_by is not None:
                self.log.warning("soak stopped: %s", progress.stopped_by.get("text"))
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
