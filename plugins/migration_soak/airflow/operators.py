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
            s = progress.stopped_by
            self.log.warning("soak stopped: NO-GO breach by %s at %s tick %d", s.check_id, s.phase, s.tick)
            return {"stopped_by": s.check_id}
        if progress.done:
            return {"done": True}
        raise AirflowRescheduleException(progress.next_at)
