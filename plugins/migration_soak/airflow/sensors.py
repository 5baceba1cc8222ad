"""The soak's sensors: one task per (phase, check), and the guard; they wait deferred.

``CheckSensor`` defers to a ``CheckTrigger``, ``GuardSensor`` to a ``GuardTrigger``
(``airflow/triggers.py``); all state lives in the store, so a restart or a retry resumes
at the right tick. ``timeout`` is enforced awake and deferred. Under ``dag.test()`` the
sensors reschedule instead of deferring (``waits_in_line``). Rules: docs/guard.md.

Design notes: docs/design.md#airflowsensorspy
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk.bases.sensor import BaseSensorOperator
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    DownstreamTasksSkipped,
)

from migration_soak import clock, observe
from migration_soak.airflow.triggers import CheckTrigger, GuardTrigger, log_reading
from migration_soak.plan import Plan, load_plan
from migration_soak.store import Store

#: Default ``timeout``: wall seconds a sensor may still be waiting after its last tick.
DEFAULT_TIMEOUT_S = 3600.0


def waits_in_line(context) -> bool:
    """True under ``dag.test()`` (it names the run's triggering user ``dag_test``): there a
    deferred task's trigger runs in line and blocks every other task until it fires, so
    the sensors reschedule instead (there is no scheduler there, so no race #71172)."""
    return getattr(context["dag_run"], "triggering_user_name", None) == "dag_test"


class SoakSensor(BaseSensorOperator):
    """Base of the soak's sensors: the soak clock, the store, the deadline and the wait.

    :param hour0: ISO-8601 UTC origin of the task's ticks (templated, from XCom)
    :param time_scale: speed-up of the soak clock, 1 = real time (templated, from params)
    :param plan: plan name or path (templated, from params)
    :param timeout: wall seconds the task may still wait after its last scheduled tick
        (module doc); ``soft_fail`` makes a timeout a skip
    """

    template_fields = ("hour0", "time_scale", "plan")

    def __init__(self, *, hour0: str, time_scale, plan: str, timeout: float = DEFAULT_TIMEOUT_S, **kwargs):
        kwargs.setdefault("poke_interval", 1)  # unused: the soak clock says when to wake
        super().__init__(timeout=timeout, **kwargs)
        self.hour0 = hour0
        self.time_scale = time_scale
        self.plan = plan

    # -- what subclasses say ----------------------------------------------------------------
    def last_tick_at(self, plan: Plan, origin: datetime, scale: float) -> datetime:
        """Wall time of the task's last scheduled tick."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _clock(self) -> tuple[Plan, Store, datetime, float]:
        plan = load_plan(self.plan)
        return plan, Store.from_airflow(plan.connections.store), datetime.fromisoformat(self.hour0), float(self.time_scale)

    def deadline(self, plan: Plan, origin: datetime, scale: float) -> datetime:
        """When the task times out: ``timeout`` after its last tick."""
        return self.last_tick_at(plan, origin, scale) + timedelta(seconds=self.timeout)

    def _timed_out(self, deadline: datetime, what: str) -> None:
        message = (f"{what}: timed out at {deadline.isoformat()} ({self.timeout:g} s after its last tick) with "
                   f"work left: the soak was not observed as planned (scheduler, triggerer or workers down?)")
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)

    def wait(self, context, trigger, until: datetime, deadline: datetime, what: str):
        """Wait until ``until``: deferred to ``trigger`` (with the deadline as the deferral's
        timeout), or by rescheduling under ``dag.test()``."""
        now = datetime.now(timezone.utc)
        if now >= deadline:
            self._timed_out(deadline, what)
        if waits_in_line(context):
            raise AirflowRescheduleException(until)
        self.defer(trigger=trigger, method_name="execute_complete", timeout=deadline - now)

    def end_done(self, store: Store, run_id: str, phase: str, check_id: str | None) -> None:
        """Every tick is recorded: end success, or failed (no retry) when every reading was
        an error (``observe.unmeasured``): the verdict counts them as missing either way."""
        text = observe.unmeasured(store, run_id, phase, check_id)
        if text is not None:
            raise AirflowFailException(text)

    def stop(self, context, store: Store, took: bool, breach: dict) -> None:
        """The soak stopped. A task that took no reading ends skipped; one that did ends
        success and skips the check tasks that never took a reading and are not running
        (later phases would otherwise each start a worker only to skip themselves)."""
        self.log.warning("soak stopped: %s", breach.get("text"))
        if not took:
            raise AirflowSkipException(f"soak stopped before this check took a reading: {breach.get('text')}")
        pairs = observe.measured_pairs(store, context["run_id"])
        idle = sorted(t.task_id for t in self.dag.tasks
                      if isinstance(t, CheckSensor) and t.task_id != self.task_id and (t.phase, t.check_id) not in pairs)
        if idle:
            self.log.info("skipping %d check tasks that took no reading: %s", len(idle), ", ".join(idle))
            raise DownstreamTasksSkipped(tasks=idle)


class CheckSensor(SoakSensor):
    """Measure one check of one phase at each of its ticks.

    :param phase: the phase (``baseline``, ``hour0`` or a plan phase)
    :param check_id: the plan's check
    """

    ui_color = "#e8f4ea"

    def __init__(self, *, phase: str, check_id: str, **kwargs):
        super().__init__(**kwargs)
        self.phase = phase
        self.check_id = check_id

    def last_tick_at(self, plan: Plan, origin: datetime, scale: float) -> datetime:
        return clock.ticks(plan, self.phase, origin, scale)[-1].at

    def execute(self, context) -> None:
        plan, store, origin, scale = self._clock()
        what = f"{self.check_id} {self.phase}"
        deadline = self.deadline(plan, origin, scale)
        if datetime.now(timezone.utc) > deadline:
            self._timed_out(deadline, what)
        trigger = CheckTrigger(context["run_id"], self.plan, origin, scale, plan.connections.store, self.phase,
                               self.check_id)
        if waits_in_line(context):
            progress = observe.observe_due(plan, store, context["run_id"], self.phase, self.check_id, origin, scale)
        else:
            # Straight to the triggerer, even with a tick due: there a reading costs a thread
            # for milliseconds, here it holds a worker slot (a first scrape window waits
            # 3 s) while 40 other check tasks queue to start at the same moment.
            breach = store.no_go(context["run_id"])
            if breach is None:
                self.wait(context, trigger, datetime.now(timezone.utc), deadline, what)
                return
            progress = observe.Progress(True, None, [], stopped_by=breach)
        for o in progress.recorded:
            log_reading(self.log, what, o)
        if progress.stopped_by is not None:
            mine = progress.recorded or store.observations(context["run_id"], phase=self.phase, check_id=self.check_id)
            self.stop(context, store, bool(mine), progress.stopped_by)
            return
        if progress.done or progress.next_at is None:  # not done always has a next tick
            self.end_done(store, context["run_id"], self.phase, self.check_id)
            return
        self.wait(context, trigger, progress.next_at, deadline, what)

    def execute_complete(self, context, event: Any = None) -> None:
        """The trigger handed back the NO-GO it recorded (``{"kind": "no_go"}``): stop the
        check tasks that never started. Any other event: measure what is due and wait on."""
        if isinstance(event, dict) and event.get("kind") == "no_go":
            plan, store, origin, scale = self._clock()
            self.stop(context, store, True, {"criterion": event.get("criterion"), "text": event.get("text")})
            return
        if isinstance(event, dict) and event.get("kind") == "unmeasured":
            raise AirflowFailException(event.get("text"))
        self.execute(context)


class GuardSensor(SoakSensor):
    """The guard: the plan's guard checks at the guard cadence for the whole soak, judged on
    every reading against the NO-GO criteria and the alerts (docs/guard.md). Runs beside
    the phases; posts each alert that starts firing to Slack, once per run."""

    ui_color = "#fde2e1"

    def last_tick_at(self, plan: Plan, origin: datetime, scale: float) -> datetime:
        return clock.soak_end(plan, origin, scale)

    def execute(self, context) -> None:
        if waits_in_line(context):
            self._poke(context)
            return
        self._defer(context)

    def execute_complete(self, context, event: Any = None) -> None:
        """The guard trigger handed back: alerts to post (then wait again), or the NO-GO it
        recorded (stop the soak)."""
        kind = event.get("kind") if isinstance(event, dict) else None
        plan, store, origin, scale = self._clock()
        run_id = context["run_id"]
        if kind == "alerts":
            self._post(plan, store, run_id, event["alerts"])
            self._defer(context)
        elif kind == "unmeasured":
            raise AirflowFailException(event.get("text"))
        elif kind == "no_go":
            self.stop(context, store, True, {"criterion": event.get("criterion"), "text": event.get("text")})

    def _defer(self, context) -> None:
        plan, store, origin, scale = self._clock()
        trigger = GuardTrigger(context["run_id"], self.plan, origin, scale, plan.connections.store)
        self.wait(context, trigger, clock.soak_end(plan, origin, scale), self.deadline(plan, origin, scale), "guard")

    def _poke(self, context) -> None:
        """One wake-up on the worker (under ``dag.test()``): what the trigger does, in line."""
        plan, store, origin, scale = self._clock()
        run_id = context["run_id"]
        progress = observe.guard_due(plan, store, run_id, origin, scale)
        for o in progress.recorded:
            log_reading(self.log, f"guard {o.check_id}", o)
        if progress.stopped_by is not None:
            took = bool(progress.recorded) or any(p == "guard" for p, _ in observe.measured_pairs(store, run_id))
            self.stop(context, store, took, progress.stopped_by)
            return
        self._post(plan, store, run_id, progress.alerts)
        if progress.next_at is None:
            self.end_done(store, run_id, "guard", None)
            return
        self.wait(context, None, progress.next_at, self.deadline(plan, origin, scale), "guard")

    def _post(self, plan: Plan, store: Store, run_id: str, alerts: list[dict]) -> None:
        """Post each alert that is not settled to Slack, then record it (``alert`` event) with
        ``notified``: whether Slack accepted it. An alert Slack accepted is posted once; one it
        refused is posted again at the next wake-ups, ``observe.ALERT_TRIES`` times in all."""
        from migration_soak import notify

        settled = observe.alerts_settled(store, run_id)
        for alert in alerts:
            if alert["alert"] in settled:
                continue
            sent = notify.send(f":warning: [{plan.environment}] {alert['text']}", plan.connections.slack)
            store.add_event(run_id, "alert", {"alert": alert["alert"], "text": alert["text"], "notified": sent})
            self.log.warning("%s", alert["text"])
