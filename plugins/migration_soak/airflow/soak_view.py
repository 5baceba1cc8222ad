"""The soak view: a live page per soak run inside the Airflow UI (issue 12).

A FastAPI app the API server mounts at ``/soak`` (registered by
``plugins/soak_view_plugin.py``). The verdict and criteria are the ones ``judge_soak``
recorded; before it did, a provisional ``judge.judge()`` (with the failed tasks, as
``judge_soak`` counts them), labelled so. Charts from ``charts.py``. Every route requires
an Airflow user and read access to the run's DAG. Read-only: metadata database, store, report files.

Design notes: docs/design.md#airflowsoak_viewpy
"""

from __future__ import annotations

import hashlib
import html
import io
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse, Response

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag

log = logging.getLogger(__name__)

UTC = timezone.utc
#: Seconds between two refreshes of an active run's page.
REFRESH_S = 5
#: A run's data is read once for the page and the chart requests that follow it.
SNAPSHOT_TTL_S = 2.0
ACTIVE_STATES = {"queued", "running"}
SOAK_DAG_PREFIX = "migration_soak"

OUTCOME = {  # (label, css class) of a criterion's outcome, by kind
    ("no_go", "breached"): ("breached", "bad"), ("no_go", "clear"): ("clear", "good"),
    ("no_go", "not_judged"): ("not judged", "wait"),
    ("alert", "breached"): ("firing", "warn"), ("alert", "clear"): ("quiet", "good"),
    ("alert", "not_judged"): ("not judged", "wait"),
    ("go", "met"): ("met", "good"), ("go", "not_met"): ("not met", "bad"),
    ("go", "not_enough_data"): ("not enough data", "wait"),
}
CHECK_OUTCOME = {"met": "good", "partial": "good", "not_met": "warn", "breached": "bad", "not_enough_data": "wait",
                 "not_measured": "wait"}
EVENT_CLASS = {"no_go": "bad", "migrate_failed": "bad", "rehearsal_failed": "bad", "rollback_started": "bad",
               "restore_failed": "bad", "alert": "warn", "rehearsal": "key", "lint": "key",
               "decision": "key", "verdict": "key", "human_decision": "key", "sign_off": "key",
               "rollback_completed": "key", "report": "key"}


# --- reading a run -------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """Everything the page and the charts of one run show, read at ``taken``."""

    dag_id: str
    run_id: str
    state: str | None
    conf: dict
    taken: datetime
    plan: Any = None
    plan_error: str | None = None
    time_scale: float = 1.0
    observations: list = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    verdict: Any = None  # judge.Verdict: the recorded one once judge_soak ran, else provisional
    analysis: Any = None  # report._Run: the report's own reading of the run (chart marks, hour 0)
    marks: tuple = ({}, None, "")
    tasks: dict[str, str | None] = field(default_factory=dict)
    store_error: str | None = None
    run_after: datetime | None = None  # the dag run's: whose claim the run id's evidence is (store.run_claim)
    started: datetime | None = None  # the dag run's start_date and clear_number (store.DagRunKey)
    clears: int | None = None
    foreign: str | None = None  # why the run id's evidence is another dag run's, not shown (_claimed_by_another)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def first(self, kind: str) -> dict | None:
        return next((e for e in self.events if e["kind"] == kind), None)

    def last(self, kind: str) -> dict | None:
        return next((e for e in reversed(self.events) if e["kind"] == kind), None)


_CACHE: OrderedDict[tuple[str, str], tuple[float, Snapshot]] = OrderedDict()
_CHARTS: OrderedDict[tuple, bytes] = OrderedDict()
_LOCK = threading.Lock()
_DRAW = threading.Lock()  # one chart at a time: matplotlib's font cache is shared


def _plan_name(dag_id: str, conf: dict) -> str:
    name = conf.get("plan")
    if isinstance(name, str) and name:
        return name
    return "default" if dag_id == SOAK_DAG_PREFIX else dag_id.removeprefix(f"{SOAK_DAG_PREFIX}__")


def _plain(state: Any) -> str | None:
    """A state enum member's value (``TaskInstanceState.SUCCESS`` -> ``"success"``), or as is."""
    return state.value if hasattr(state, "value") else state


def _dag_run(dag_id: str, run_id: str) -> tuple[str | None, dict, dict[str, str | None], datetime | None,
                                                datetime | None, int | None] | None:
    """(state, conf, task states, run_after, start_date, clear_number) of a run from
    Airflow's metadata database, or None."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(select(DagRun.state, DagRun.conf, DagRun.run_after, DagRun.start_date,
                                     DagRun.clear_number).where(
            DagRun.dag_id == dag_id, DagRun.run_id == run_id)).first()
        if row is None:
            return None
        tis = session.execute(select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
            TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all()
    state = _plain(row[0])
    tasks = {(t if i is None or i < 0 else f"{t}[{i}]"): _plain(s) for t, i, s in tis}
    return state, dict(row[1] or {}), tasks, row[2], row[3], row[4]


def read_snapshot(dag_id: str, run_id: str) -> Snapshot:
    """Read a run (cached for ``SNAPSHOT_TTL_S``); raises 404 for an unknown run."""
    key = (dag_id, run_id)
    now = time.monotonic()
    with _LOCK:
        hit = _CACHE.get(key)
        if hit and now - hit[0] < SNAPSHOT_TTL_S:
            return hit[1]
    found = _dag_run(dag_id, run_id)
    if found is None:
        raise HTTPException(404, f"no run {run_id!r} of DAG {dag_id!r}")
    state, conf, tasks, run_after, started, clears = found
    snap = Snapshot(dag_id, run_id, state, conf, datetime.now(UTC), tasks=tasks, run_after=run_after,
                    started=started, clears=clears)
    _load_soak(snap)
    with _LOCK:
        _CACHE[key] = (now, snap)
        _CACHE.move_to_end(key)
        while len(_CACHE) > 32:
            _CACHE.popitem(last=False)
    return snap


def _load_soak(snap: Snapshot) -> None:
    """Plan, observations, events and the judge's verdict of ``snap``'s run."""
    import sqlalchemy as sa

    from migration_soak import report
    from migration_soak.clock import check_time_scale
    from migration_soak.judge import judge
    from migration_soak.plan import load_plan
    from migration_soak.store import Store

    try:
        snap.plan = load_plan(_plan_name(snap.dag_id, snap.conf))
    except Exception as exc:  # a broken plan: the page says so
        snap.plan_error = f"{type(exc).__name__}: {exc}"
        return
    try:  # the run param as judge_soak reads it (the DAG's Param default is 1)
        snap.time_scale = check_time_scale(float(snap.conf.get("time_scale", 1.0)))
    except (TypeError, ValueError):
        snap.time_scale = 1.0
    try:
        store = Store.from_airflow(snap.plan.connections.store)
        snap.foreign = _claimed_by_another(snap, store.run_claim(snap.run_id))
        if not snap.foreign:
            snap.observations = store.observations(snap.run_id, clock=store.clock(snap.run_id, snap.time_scale))
            snap.events = store.events(snap.run_id)
    except sa.exc.ProgrammingError:  # the run's load task has not created the store's tables yet
        pass
    except Exception as exc:
        snap.store_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log.warning("soak view: store of %s not readable: %s", snap.run_id, exc)
    snap.verdict = shown_verdict(snap, judge(snap.plan, snap.observations, snap.time_scale))
    snap.analysis = report._analyse(snap.plan, snap.verdict, snap.observations, snap.events, snap.time_scale)
    snap.marks = report._chart_marks(snap.analysis)


def _claimed_by_another(snap: Snapshot, claim: dict | None) -> str | None:
    """Why the store's evidence of ``snap``'s run id is not this dag run's (its id claimed
    by another dag run of the plan: one deleted and triggered again, ``runbook._claim``,
    even with the same ``run_after``: ``store.other_dag_run``), else None."""
    from migration_soak.store import DagRunKey, other_dag_run

    if claim is None or snap.run_after is None:
        return None
    if claim.get("plan") != _plan_name(snap.dag_id, snap.conf):
        return None
    ours = snap.run_after if snap.run_after.tzinfo else snap.run_after.replace(tzinfo=UTC)
    started = snap.started if snap.started is None or snap.started.tzinfo else snap.started.replace(tzinfo=UTC)
    key = DagRunKey(ours.isoformat(), started, snap.clears)
    # strict as a run's opening task (load): say less rather than show another run's evidence
    if not other_dag_run(claim, key, opening=True):
        return None
    if not other_dag_run(claim, key):
        # only its start tells it from the claimant: a run re-created with the deleted run's
        # run_after whose load has not refused it yet, or this very run set back to queued
        # (REST PATCH state: a new start, no clear), whose tasks go on measuring; its next
        # staging task records the new start. Neither is known to be refused: say which
        was = claim.get("dag_run_started")
        return (f"run id {snap.run_id!r} was claimed by an Airflow run with this run's run_after that started "
                f"{_utc_text(was) if was else 'before dag runs were recorded'}; this one started "
                f"{_utc_text(started) if started else 'at a time not known'} without being cleared since: a run "
                "re-created with the deleted run's run_after, or this run set back to queued, which cannot be told "
                "apart until one of its staging tasks records its start. The store's readings, events and verdict "
                "are not shown as this run's until then")
    return (f"run id {snap.run_id!r} belongs to another Airflow run (created "
            f"{claim.get('dag_run') or 'before dag runs were recorded'}); this one was "
            "refused and measured nothing: that run's readings, events and verdict are not shown as its own")


def _utc_text(at: datetime) -> str:
    """``2026-12-06 09:00:02 UTC`` (naive times read as UTC)."""
    return f"{(at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def failed_tasks(snap: Snapshot) -> list[str]:
    """The run's tasks that failed or could not run (``judge_soak``'s ``failed``), mapped
    ones once by name."""
    return sorted({t.split("[", 1)[0] for t, s in snap.tasks.items() if s in ("failed", "upstream_failed")})


def shown_verdict(snap: Snapshot, live: Any) -> Any:
    """The verdict the page shows: the one ``judge_soak`` recorded (the run's last
    ``verdict`` event: it also counted the failed tasks), else ``live`` (``judge()`` on
    the readings so far) after the failed tasks as ``judge_soak`` would count them: a
    provisional judgement, never the run's verdict. A recorded verdict stored without its
    results keeps ``live``'s criteria and checks, with the recorded decision and reasons."""
    from dataclasses import replace

    from migration_soak.judge import Verdict
    from migration_soak.runbook import with_failed_tasks

    recorded = snap.last("verdict")
    if recorded is None:
        # as judge_soak: failed tasks count only once the migration ran (before it, they
        # are why nothing was migrated, not tasks that failed "after the migration")
        migrated = (snap.tasks or {}).get("migrate") == "success"
        return with_failed_tasks(live, failed_tasks(snap) if migrated else [])
    p = recorded.get("payload") or {}
    if p.get("criteria") and "reasons" in p:
        try:
            return Verdict.from_dict(p)
        except (TypeError, KeyError):  # stored by another version of the judge: its decision and reasons only
            pass
    return replace(live, decision=p.get("decision"), reasons=list(p.get("reasons") or [str(p.get("text", ""))]))


# --- the soak clock -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Clock:
    """Where a run's soak clock is: ``stage`` in words, the soak ``hour`` (None before hour
    0), the ``phase``, the next tick (``next_label``, ``next_in_s``) and ``progress`` 0..1."""

    stage: str
    hour: float | None
    phase: str | None
    next_label: str | None
    next_in_s: float | None
    progress: float
    total_hours: float


def soak_clock(snap: Snapshot) -> Clock:
    """Where ``snap``'s soak clock is now (``snap.taken``): a stage before hour 0, else
    the soak hour (held at the NO-GO stop and at the soak's length), its phase and, while
    the run soaks, the next tick. Needs ``snap.plan``."""
    plan, run = snap.plan, snap.analysis
    total = plan.soak_hours()
    hour0 = run.clock0 if run else None
    if hour0 is None:
        return Clock(_stage_before_hour0(snap), None, None, None, None, 0.0, total)
    stop = snap.first("no_go")
    ended = not snap.active or stop is not None or snap.first("verdict") is not None
    hour = max(0.0, _soak_hours(snap.taken, hour0, snap.time_scale))
    if stop is not None:
        hour = min(hour, max(0.0, _soak_hours(stop["at"], hour0, snap.time_scale)))
    hour = min(hour, total)
    phase = _phase_at(plan, hour, total)
    next_label, next_in = (None, None) if ended else _next_tick(plan, hour0, snap.time_scale, snap.taken)
    stage = _stage_after_hour0(hour, total, phase, stopped=stop is not None, ended=ended)
    return Clock(stage, hour, phase, next_label, next_in, hour / total if total else 1.0, total)


def _stage_before_hour0(snap: Snapshot) -> str:
    """The clock's stage, in words, of a run whose soak clock has not started: stopped by a
    NO-GO at the hour-0 checks, ended, at the hour-0 checks, or the tasks running (at most
    four) or done so far."""
    if snap.first("no_go"):
        return "stopped at the hour-0 checks (NO-GO)"
    if not snap.active:
        return "the run ended before the soak clock started"
    if snap.first("verified"):
        return "hour-0 checks: every check once, right after the migration"
    running = [t for t, s in snap.tasks.items() if s in ("running", "deferred", "up_for_reschedule", "queued")]
    if running:
        return "before the soak: " + ", ".join(sorted(running)[:4])
    done = [k for k in ("load", "preflight", "backup", "rehearse", "migrate", "verify", "restart_apps")
            if snap.tasks.get(k) == "success"]
    return "before the soak" + (f" (done: {', '.join(done)})" if done else "")


def _stage_after_hour0(hour: float, total: float, phase: str, stopped: bool, ended: bool) -> str:
    """The clock's stage, in words, at soak ``hour`` of ``total`` hours: stopped by a NO-GO,
    complete, ended early (``ended``: the run is over or has a verdict), or soaking in
    ``phase``."""
    if stopped:
        return f"stopped by NO-GO at soak {_hhmm(hour)}"
    if ended and hour >= total - 1e-9:
        return "soak complete"
    if ended:
        return f"the run ended at soak {_hhmm(hour)}"
    return f"soaking: {phase}"


def _soak_hours(at: datetime, hour0: datetime, time_scale: float) -> float:
    """Soak hours from ``hour0`` to the wall time ``at`` on a clock ``time_scale`` times
    faster than real time; negative before hour 0."""
    return (at - hour0).total_seconds() * time_scale / 3600


def _phase_at(plan: Any, hour: float, total: float) -> str:
    """Name of the plan's phase holding soak ``hour`` (start inclusive, end exclusive);
    past the last phase's end (``hour >= total``) the last phase, in a gap the first."""
    return next((p.name for p in plan.phases if p.start_hour <= hour < p.end_hour),
                plan.phases[-1].name if hour >= total else plan.phases[0].name)


def _next_tick(plan: Any, hour0: datetime, time_scale: float, now: datetime) -> tuple[str | None, float | None]:
    """(label, seconds from ``now``) of the earliest tick of any phase after ``now``, or
    (None, None) when no tick is left."""
    from migration_soak import clock as clock_mod

    upcoming = [t for p in plan.phases for t in clock_mod.ticks(plan, p.name, hour0, time_scale) if t.at > now]
    if not upcoming:
        return None, None
    t = min(upcoming, key=lambda t: t.at)
    return f"{t.phase} tick {t.index} at soak {_hhmm(t.offset.total_seconds() / 3600)}", (t.at - now).total_seconds()


def _hhmm(hours: float) -> str:
    minutes = int(round(hours * 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --- figures for the page and for make demo ------------------------------------------------------

def summary(snap: Snapshot) -> dict:
    """The run's state as JSON: the clock, counts, every criterion and the final decision."""
    if snap.plan is None:
        return {"dag_id": snap.dag_id, "run_id": snap.run_id, "state": snap.state, "plan_error": snap.plan_error}
    c = soak_clock(snap)
    after = [o for o in snap.observations if o.phase != "baseline"]
    decision = snap.last("decision")
    verdict = snap.last("verdict")
    return {
        "dag_id": snap.dag_id, "run_id": snap.run_id, "state": snap.state, "active": snap.active,
        "plan": snap.plan.name, "time_scale": snap.time_scale,
        "clock": {"stage": c.stage, "hour": c.hour, "phase": c.phase, "next_tick": c.next_label,
                  "next_in_s": c.next_in_s, "progress": c.progress, "total_hours": c.total_hours},
        "readings": len(after), "errors": sum(1 for o in after if o.status == "error"),
        "breaches": sum(1 for o in after if o.status == "fail"),
        "judge_now": snap.verdict.decision,  # the recorded verdict once there is one, else provisional
        "verdict_provisional": verdict is None,
        "criteria": [{"id": r.id, "kind": r.kind, "outcome": r.outcome, "detail": r.detail}
                     for r in snap.verdict.criteria + _alerts(snap)],
        "recorded_verdict": verdict["payload"].get("decision") if verdict else None,
        "decision": decision and {k: decision["payload"].get(k) for k in ("outcome", "action", "by", "reason")},
        "events": len(snap.events), "store_error": snap.store_error, "foreign": snap.foreign,
    }


def _alerts(snap: Snapshot) -> list:
    from migration_soak.judge import judge_breach

    return [judge_breach(a, "alert", snap.observations) for a in snap.plan.alerts]


# --- HTML ---------------------------------------------------------------------------------------

def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


CSS = """
:root{--good:#2e7d32;--bad:#c62828;--warn:#ef6c00;--wait:#607d8b;--key:#1565c0;--line:#e0e0e0;--mut:#616161}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#212121;background:#fafafa}main{padding:16px 20px;max-width:1500px}h1{font-size:20px;margin:0 0 4px}
h2{font-size:16px;margin:22px 0 8px}a{color:var(--key)}.mut{color:var(--mut)}.row{display:flex;gap:14px;
flex-wrap:wrap}.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.row .card{flex:1 1 190px}.big{font-size:20px;font-weight:600}.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;
font-size:12px;font-weight:600;white-space:nowrap}.good{background:var(--good)}.bad{background:var(--bad)}
.warn{background:var(--warn)}.wait{background:var(--wait)}.key{background:var(--key)}.state{background:#455a64}
table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid var(--line);
padding:5px 8px;text-align:left;vertical-align:top}th{font-size:12px;color:var(--mut);font-weight:600}
td.fig{font-size:12.5px}.bar{position:relative;height:22px;background:#eceff1;border-radius:4px;overflow:hidden;
margin:8px 0 2px;min-width:420px}.seg{position:absolute;top:0;bottom:0;border-right:1px dashed #90a4ae;
font-size:11px;padding:3px 4px;color:#455a64;overflow:hidden;white-space:nowrap}.fill{position:absolute;top:0;
bottom:0;left:0;background:rgba(21,101,192,.25)}.now{position:absolute;top:0;bottom:0;width:2px;background:#1565c0}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:12px}.chart img{width:100%;
height:auto;aspect-ratio:720/288;display:block}.chart .head{display:flex;justify-content:space-between;gap:8px;
font-size:12.5px;margin-bottom:4px}.err{color:var(--bad)}code{font-size:12.5px}
.badge.prov{background:#fff;border:1.5px dashed currentColor}.prov.good{color:var(--good)}.prov.bad{color:var(--bad)}
.prov.warn{color:var(--warn)}.prov.wait{color:var(--wait)}.banner{border-color:var(--warn);background:#fff8e1;
margin-bottom:12px}.banner p{margin:0}.closing{margin-top:4px;font-weight:600}
"""

REFRESH_JS = """
<script>
(function(){
  const every = %d * 1000;
  async function refresh(){
    const live = document.getElementById('live');
    if (!live || live.dataset.active !== 'true') return;
    try {
      const r = await fetch(window.location.href, {credentials: 'same-origin', cache: 'no-store'});
      if (r.ok) {
        const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
        const fresh = doc.getElementById('live');
        if (fresh) live.replaceWith(fresh);
      }
    } catch (err) { /* the next try may work: the API server restarts, the network blips */ }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
</script>
"""


def page(title: str, body: str, refresh: bool = False) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{body}</main>{REFRESH_JS % REFRESH_S if refresh else ''}</body></html>")


def _run_path(dag_id: str, run_id: str) -> str:
    return f"/soak/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _ui_run(dag_id: str, run_id: str) -> str:
    return f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def _chart_key(snap: Snapshot, check_id: str) -> str:
    deciding, stop_h, label = snap.marks
    mine = [o for o in snap.observations if o.check_id == check_id]
    last = max((o.measured_at for o in mine), default=None)
    clock0 = snap.analysis.clock0 if snap.analysis else None
    raw = repr((len(mine), last, tuple(deciding.get(check_id, ())), stop_h, label, clock0, snap.time_scale))
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


def render_run(snap: Snapshot) -> str:
    """The run's page (``#live`` is what the refresh replaces)."""
    head = (f"<h1>Soak view: <code>{e(snap.dag_id)}</code></h1><div class=mut>run <code>{e(snap.run_id)}</code> "
            f"· <a target=_top href='{e(_ui_run(snap.dag_id, snap.run_id))}'>grid</a> "
            f"· <a target=_top href='/required_actions'>Required actions</a> · <a href='/soak/'>all soaks</a></div>")
    if snap.plan is None:
        return page(f"soak {snap.run_id}", head + f"<p class=err>The plan does not load: {e(snap.plan_error)}</p>")
    live = _live(snap)
    return page(f"soak {snap.run_id}", head + live, refresh=snap.active)


def _live(snap: Snapshot) -> str:
    """The ``#live`` part of a run's page: the cards, the phase bar, the links, the criteria,
    one chart per check and the events. Needs ``snap.plan`` and ``snap.verdict``."""
    c = soak_clock(snap)
    base = _run_path(snap.dag_id, snap.run_id)
    parts = [f"<div id=live data-active={'true' if snap.active else 'false'}>", _clock_banner(snap),
             "<div class=row>" + "".join(_cards(snap, c)) + "</div>", _bar(snap.plan, c)]
    links = _links(snap, base)
    if links:
        parts.append(f"<p>{links}</p>")
    if snap.store_error:
        parts.append(f"<p class=err>The store is not readable: {e(snap.store_error)}</p>")
    if snap.foreign:
        parts.append(f"<p class=err>{e(snap.foreign)}</p>")
    parts += [_criteria_section(snap), _checks_section(snap, base), _events_section(snap)]
    return "".join(parts)


# --- the page's cards ---------------------------------------------------------------------------

def _cards(snap: Snapshot, c: Clock) -> list[str]:
    """The cards atop the page, left to right: the Airflow run, the soak clock, the
    readings, the judge and, once recorded, the decision."""
    cards = [_run_card(snap), _clock_card(c), _readings_card(snap), _judge_card(snap)]
    decision = snap.last("decision")
    if decision:
        cards.append(_decision_card(snap, decision["payload"]))
    return cards


def _run_card(snap: Snapshot) -> str:
    """The Airflow run's state and the ``time_scale``: real time, or the plan's soak length
    in wall time on a compressed or stretched clock (a 30-minute plan at 45 is "30 min of
    soak in 40 s", never "24 h"; the banner's units, ``report_text.soak_length``)."""
    from migration_soak.report_text import clock_kind, soak_length, wall_length

    scale = snap.time_scale
    if scale == 1:
        clock = " (real time)"
    else:
        hours = snap.plan.soak_hours()
        clock = f": {clock_kind(scale)} clock: {soak_length(hours)} of soak in {wall_length(hours * 3600 / scale)}"
    return (f"<div class=card><div class=mut>Airflow run</div><div class=big><span class='badge state'>{e(snap.state)}"
            f"</span></div><div class=mut>time_scale {scale:g}{e(clock)}</div></div>")


def _clock_card(c: Clock) -> str:
    """The soak clock: soak hour of the soak's length (or not started), stage, next tick."""
    return (f"<div class=card id=clock><div class=mut>soak clock</div><div class=big>"
            f"{'soak ' + _hhmm(c.hour) + ' of ' + _hhmm(c.total_hours) if c.hour is not None else 'not started'}</div>"
            f"<div>{e(c.stage)}</div>"
            + (f"<div class=mut>next: {e(c.next_label)} (in {max(0.0, c.next_in_s or 0.0):.0f} s)</div>"
               if c.next_label else "")
            + "</div>")


def _readings_card(snap: Snapshot) -> str:
    """How many readings the run took after the migration (not ``baseline``), how many are
    ``error`` ("not measured (error)", as the report says: "34 errors" beside an error rate
    read as 34 failed requests) and how many at a NO-GO level (``fail``)."""
    after = [o for o in snap.observations if o.phase != "baseline"]
    breaches = sum(1 for o in after if o.status == "fail")
    errors = sum(1 for o in after if o.status == "error")
    return (f"<div class=card id=readings><div class=mut>readings after the migration</div>"
            f"<div class=big data-readings={len(after)}>{len(after)}</div>"
            f"<div class=mut>{errors} not measured (error) · {breaches} at a NO-GO level</div></div>")


def _judge_card(snap: Snapshot) -> str:
    """The verdict ``judge_soak`` recorded and the final decision once there is one; before
    that, the judge on the readings so far (and the failed tasks: ``snap.verdict``),
    labelled provisional and drawn as such: it is not the run's verdict."""
    recorded = snap.last("verdict")
    if recorded is not None:
        p = recorded.get("payload") or {}
        decided = snap.last("decision")
        outcome = (f"<div>final decision: {_verdict_badge(decided['payload'].get('outcome'))} "
                   f"{e(decided['payload'].get('action'))}</div>" if decided else _waiting(snap))
        return (f"<div class=card id=judge data-verdict='{e(p.get('decision'))}'><div class=mut>verdict recorded by "
                f"judge_soak</div><div class=big>{_verdict_badge(p.get('decision'))}</div>{outcome}"
                f"<div class='mut fig'>{e(_cut(str(p.get('text', '')), 240))}</div></div>")
    head = ("provisional: the judge on the readings so far" if snap.active else
            "no verdict recorded: the judge on the readings alone")
    return (f"<div class=card id=judge data-verdict=provisional><div class=mut>{head}</div><div class=big>"
            f"{_verdict_badge(snap.verdict.decision, provisional=True)}</div><div class=mut>not a verdict: "
            f"{'judge_soak records it when the soak ends' if snap.active else 'judge_soak recorded none'}</div></div>")


def _waiting(snap: Snapshot) -> str:
    """The judge card's line for a recorded verdict without a final decision: what it waits
    for (a person's answer; the QA sign-off's rejection or timeout is not a GO)."""
    asking = sorted(t for t, s in snap.tasks.items() if s == "awaiting_input")
    if "sign_off" in asking:
        return (f"<div><strong>not final: waiting for the QA sign-off (sign_off, in Required actions); a rejection, "
                f"or no answer within {snap.plan.verdict.sign_off_timeout_hours:g} h, is not a GO</strong></div>")
    if asking:
        return (f"<div><strong>not final: waiting for a person to answer {e(', '.join(asking))} in Required actions"
                "</strong></div>")
    return "<div class=mut>no final decision recorded yet</div>"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _decision_card(snap: Snapshot, payload: dict) -> str:
    """The recorded decision (a ``decision`` event's payload: outcome, action, by, reason)
    and the report's closing line for it (``report_sections.final``: a GO on a compressed
    clock is demonstration evidence only, not an approval for production)."""
    closing = _closing(snap)
    return (f"<div class=card id=decision><div class=mut>decision</div><div class=big>"
            f"{_verdict_badge(payload.get('outcome'))} {e(payload.get('action'))}</div><div class=mut>by "
            f"{e(payload.get('by'))}: {e(payload.get('reason', ''))}</div>"
            + (f"<div class=closing>{e(closing)}</div>" if closing else "") + "</div>")


def _closing(snap: Snapshot) -> str:
    """The report's closing line for the run's recorded decision, as the report words it
    ("" without the report's analysis of the run)."""
    from migration_soak.report_run import Run
    from migration_soak.report_sections import final

    return final(snap.analysis)["closing"] if isinstance(snap.analysis, Run) else ""


def _clock_banner(snap: Snapshot) -> str:
    """On a compressed or stretched clock, the report's banner (``report_sections.banner``):
    what the run's evidence is worth; "" in real time."""
    from migration_soak.report_sections import banner

    text = banner(snap.plan, snap.time_scale)
    return f"<div class='card banner' id=clock-banner>{_markdown(text)}</div>" if text else ""


# --- the page's sections ------------------------------------------------------------------------

CRITERION_KINDS = {"no_go": "NO-GO", "go": "GO", "alert": "alert"}  # heading of a criterion's kind, in the page's order


def _criteria_section(snap: Snapshot) -> str:
    """Every criterion as ``judge_soak`` recorded it, or, before its verdict, as the judge
    sees it now (provisional); then the alerts (on the readings now). NO-GO first, then GO."""
    recorded = snap.last("verdict")
    if recorded is not None:
        intro = (f"<h2 id=criteria-head>Criteria</h2><p class=mut>As <code>judge_soak</code> judged them for the "
                 f"verdict it recorded at {e(recorded['at'].strftime('%H:%M:%S') if recorded.get('at') else '?')} UTC"
                 "; the alerts on the readings now.</p>")
    else:
        intro = ("<h2 id=criteria-head>Criteria</h2><p class=mut>Provisional: computed now from the store by the same "
                 "judge as <code>judge_soak</code>, which records the verdict when the soak ends; a GO criterion needs "
                 f"{snap.plan.verdict.min_coverage:.0%} of its scheduled readings (and of the readings due, the "
                 "guard's included, as its NO-GO side), so it has <em>not enough data "
                 "yet</em> until the soak is nearly over.</p>")
    order = list(CRITERION_KINDS)
    results = sorted(snap.verdict.criteria + _alerts(snap), key=lambda r: order.index(r.kind))
    return (intro + "<table id=criteria><tr><th>state</th><th>kind</th><th>criterion</th><th>rule</th>"
            "<th>the figures that decide it</th></tr>" + "".join(_criterion_row(snap, r) for r in results) + "</table>")


def _criterion_row(snap: Snapshot, r: Any) -> str:
    """One row of the criteria table for the judge's result ``r`` (a ``CriterionResult``)."""
    from migration_soak import report

    label, cls = OUTCOME.get((r.kind, r.outcome), (r.outcome, "wait"))
    if r.outcome in ("not_enough_data", "not_judged") and snap.active and snap.last("verdict") is None:
        label += " yet"
    if r.kind != "alert":  # an alert's state is the readings now, never a verdict's
        label, cls = _undecided(snap, label, cls)
    return (f"<tr data-criterion='{e(r.id)}' data-outcome='{e(r.outcome)}'><td><span class='badge {cls}'>"
            f"{e(label)}</span></td><td>{CRITERION_KINDS[r.kind]}</td><td><code>{e(r.id)}</code><div class=mut>"
            f"{e(r.text)}</div></td><td>{e(report._rule(snap.plan, r))}</td><td class=fig>{e(r.detail)}</td></tr>")


def _undecided(snap: Snapshot, label: str, cls: str) -> tuple[str, str]:
    """A green outcome (met, clear) before ``judge_soak`` recorded a verdict: outlined as
    provisional and saying "so far" (the run ended without a verdict: "(no verdict)");
    nothing is decided until the verdict is. Other outcomes and recorded ones as they are."""
    if cls != "good" or snap.last("verdict") is not None:
        return label, cls
    return label + (" so far" if snap.active else " (no verdict)"), "prov good"


def _checks_section(snap: Snapshot, base: str) -> str:
    """One card per check with its outcome and chart: the breached checks first, then the
    unmet ones, then the rest, each group in the plan's order (``sorted`` is stable)."""
    results = {r.check_id: r for r in snap.verdict.checks}
    seen = {o.check_id for o in snap.observations}
    order = {"breached": 0, "not_met": 1}
    checks = sorted(snap.plan.checks, key=lambda ch: order.get(getattr(results.get(ch.id), "outcome", ""), 2))
    cards = "".join(_check_card(snap, base, check, results.get(check.id), check.id in seen) for check in checks)
    return "<h2>Checks</h2><div class=charts id=charts>" + cards + "</div>"


def _check_card(snap: Snapshot, base: str, check: Any, result: Any, measured: bool) -> str:
    """A check's card: its id, title, the judge's ``result`` (a ``CheckResult`` or None)
    and its chart, or "no reading yet" unless ``measured``."""
    badge = ""
    if result:
        words = result.outcome.replace("_", " ")
        if result.outcome == "breached" and not str(result.detail).startswith("decided NO-GO"):
            words = "beyond its NO-GO level"  # decided no NO-GO (report_sections._beyond_level)
        label, cls = _undecided(snap, words, CHECK_OUTCOME.get(result.outcome, "wait"))
        badge = f"<span class='badge {cls}'>{e(label)}</span>"
    if measured:
        img = (f"<img loading=lazy alt='chart of {e(check.id)}' "
               f"src='{base}/charts/{quote(check.id)}.png?v={_chart_key(snap, check.id)}'>")
    else:
        img = "<div class=mut style='padding:30px 0;text-align:center'>no reading yet</div>"
    return (f"<div class='card chart' data-check='{e(check.id)}'><div class=head><span><code>{e(check.id)}"
            f"</code> {e(check.title)}</span>{badge}</div>"
            f"<div class='mut fig' style='font-size:12px'>{e(result.detail) if result else ''}</div>{img}</div>")


def _events_section(snap: Snapshot) -> str:
    """The run's events in the store's order, then when the page was read (closes ``#live``)."""
    clock0 = snap.analysis.clock0 if snap.analysis else None
    rows = [_event_row(ev, clock0, snap.time_scale) for ev in snap.events]
    if not snap.events:
        rows.append("<tr><td colspan=4 class=mut>nothing recorded yet</td></tr>")
    return ("<h2>Events</h2><table id=events><tr><th>time (UTC)</th><th>soak</th><th>event</th><th>what</th></tr>"
            + "".join(rows)
            + f"</table><p class=mut>read {e(snap.taken.strftime('%H:%M:%S'))} UTC"
            f"{f'; refreshes every {REFRESH_S} s while the run is active' if snap.active else ''}</p></div>")


def _event_row(ev: dict, clock0: datetime | None, time_scale: float) -> str:
    """One row of the events table: wall time, soak time (``before`` hour 0; blank without
    a soak clock), kind and the payload's ``text`` (cut at 600 characters), and whether
    Slack got the message of an event that sends one (``report_text.notified``)."""
    from migration_soak.report_text import NOTIFIED_KINDS, notified

    at = ev["at"]
    soak = ""
    if clock0 is not None and at is not None:
        h = _soak_hours(at, clock0, time_scale)
        soak = _hhmm(h) if h >= 0 else "before"
    payload = ev.get("payload") or {}
    text = str(payload.get("text", ""))[:600]
    if ev["kind"] in NOTIFIED_KINDS and notified(payload):
        text += f" ({notified(payload)})"
    return (f"<tr data-kind='{e(ev['kind'])}'><td>{e(at.strftime('%H:%M:%S') if at else '')}</td>"
            f"<td>{e(soak)}</td><td><span class='badge {EVENT_CLASS.get(ev['kind'], 'state')}'>"
            f"{e(ev['kind'])}</span></td><td class=fig>{e(text)}</td></tr>")


def _verdict_badge(value: str | None, provisional: bool = False) -> str:
    """A decision's badge; ``provisional``: outlined and saying so (not a recorded verdict)."""
    if not value:
        return "<span class='badge wait'>none</span>"
    cls = {"GO": "good", "NO_GO": "bad", "INCONCLUSIVE": "warn"}.get(value, "wait")
    if provisional:
        return f"<span class='badge prov {cls}'>{e(value.replace('NO_GO', 'NO-GO'))} (provisional)</span>"
    return f"<span class='badge {cls}'>{e(value.replace('NO_GO', 'NO-GO'))}</span>"


def _bar(plan, c: Clock) -> str:
    total = c.total_hours or 1.0
    segs = "".join(f"<div class=seg style='left:{p.start_hour / total:.2%};width:{(p.end_hour - p.start_hour) / total:.2%}'>"
                   f"{e(p.name)} {p.start_hour:g}-{p.end_hour:g} h</div>" for p in plan.phases)
    fill = f"<div class=fill style='width:{c.progress:.2%}'></div><div class=now style='left:{c.progress:.2%}'></div>" \
        if c.hour is not None else ""
    return f"<div class=bar id=bar>{fill}{segs}</div>"


def _links(snap: Snapshot, base: str) -> str:
    links = []
    if snap.last("report"):
        links.append(f"<a id=report-link href='{base}/report/'>report</a>")
    done = snap.last("rollback_completed")
    if done and done["payload"].get("post_mortem"):
        links.append(f"<a id=postmortem-link href='{base}/postmortem/'>post-mortem</a>")
    pending = [t for t, s in snap.tasks.items() if s == "awaiting_input"]
    for t in pending:
        links.append(f"<a target=_top href='{e(_ui_run(snap.dag_id, snap.run_id))}/tasks/{quote(t)}/required_actions'>"
                     f"<span class='badge warn'>waiting for a person: {e(t)}</span></a>")
    return " · ".join(links)


def render_index(runs: list[tuple[str, str, str | None, datetime | None]]) -> str:
    rows = "".join(
        f"<tr><td><code>{e(d)}</code></td><td><a href='{_run_path(d, r)}'>{e(r)}</a></td>"
        f"<td><span class='badge state'>{e(s)}</span></td><td>{e(t.strftime('%Y-%m-%d %H:%M:%S') if t else '')}</td>"
        f"<td><a target=_top href='{e(_ui_run(d, r))}'>grid</a></td></tr>" for d, r, s, t in runs)
    body = ("<h1>Soaks</h1><p class=mut>The latest runs of the soak DAGs you can read. A run's own page is also the "
            "<em>Soak</em> tab of the run in the grid.</p><table id=runs><tr><th>DAG</th><th>run</th><th>state</th>"
            f"<th>started (UTC)</th><th></th></tr>{rows or '<tr><td colspan=5 class=mut>no soak run yet</td></tr>'}"
            "</table>")
    return page("Soaks", body)


def _markdown(text: str) -> str:
    try:
        from markdown_it import MarkdownIt

        return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    except ImportError:  # markdown-it-py comes with rich; without it, the text as it is
        return f"<pre>{e(text)}</pre>"


def _recorded_file(snap: Snapshot, kind: str) -> Path:
    if snap.plan is None:
        raise HTTPException(404, "the plan does not load")
    if kind == "report":
        ev = snap.last("report")
        path = ev and ev["payload"].get("path")
    else:
        ev = snap.last("rollback_completed")
        path = ev and ev["payload"].get("post_mortem")
    if not path:
        raise HTTPException(404, f"this run has no {kind} yet")
    return Path(path)


# --- the app ------------------------------------------------------------------------------------

RunAccess = [Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN))]


def create_app() -> FastAPI:
    app = FastAPI(title="Soak view", description="A live view of migration soaks (migration-soak plugin)",
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index(user: GetUserDep) -> HTMLResponse:
        """The latest soak runs of the DAGs the user may read."""
        from sqlalchemy import select

        from airflow.api_fastapi.app import get_auth_manager
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.execute(select(DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.start_date)
                                   .where(DagRun.dag_id.like(f"{SOAK_DAG_PREFIX}%"))
                                   .order_by(DagRun.id.desc()).limit(50)).all()
        manager = get_auth_manager()
        allowed: dict[str, bool] = {}
        runs = []
        for dag_id, run_id, state, started in rows:
            if dag_id not in allowed:
                allowed[dag_id] = manager.is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN,
                                                            details=DagDetails(id=dag_id), user=user)
            if allowed[dag_id]:
                runs.append((dag_id, run_id, state.value if hasattr(state, "value") else state, started))
        return HTMLResponse(render_index(runs), headers={"Cache-Control": "no-store"})

    @app.get("/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse, dependencies=RunAccess)
    def run_page(dag_id: str, run_id: str) -> HTMLResponse:
        return HTMLResponse(render_run(read_snapshot(dag_id, run_id)), headers={"Cache-Control": "no-store"})

    @app.get("/dags/{dag_id}/runs/{run_id}/state.json", dependencies=RunAccess)
    def run_state(dag_id: str, run_id: str) -> JSONResponse:
        return JSONResponse(summary(read_snapshot(dag_id, run_id)), headers={"Cache-Control": "no-store"})

    @app.get("/dags/{dag_id}/runs/{run_id}/charts/{check_id}.png", dependencies=RunAccess)
    def chart(dag_id: str, run_id: str, check_id: str) -> Response:
        snap = read_snapshot(dag_id, run_id)
        if snap.plan is None:
            raise HTTPException(404, "the plan does not load")
        try:
            check = snap.plan.check(check_id)
        except KeyError:
            raise HTTPException(404, f"no check {check_id!r} in the plan") from None
        key = (dag_id, run_id, check_id, _chart_key(snap, check_id))
        png = _CHARTS.get(key)
        if png is None:
            png = _draw(snap, check)
            with _LOCK:
                _CHARTS[key] = png
                while len(_CHARTS) > 400:
                    _CHARTS.popitem(last=False)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    def _document(dag_id: str, run_id: str, kind: str) -> HTMLResponse:
        snap = read_snapshot(dag_id, run_id)
        path = _recorded_file(snap, kind)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise HTTPException(404, f"the {kind} recorded at {path} is not readable here: {exc.strerror}") from None
        back = f"<p><a href='{_run_path(dag_id, run_id)}'>back to the soak view</a> · <code>{e(path)}</code></p>"
        return HTMLResponse(page(f"{kind} {run_id}", back + _markdown(text)), headers={"Cache-Control": "no-store"})

    @app.get("/dags/{dag_id}/runs/{run_id}/report/", response_class=HTMLResponse, dependencies=RunAccess)
    def report_page(dag_id: str, run_id: str) -> HTMLResponse:
        return _document(dag_id, run_id, "report")

    @app.get("/dags/{dag_id}/runs/{run_id}/postmortem/", response_class=HTMLResponse, dependencies=RunAccess)
    def postmortem_page(dag_id: str, run_id: str) -> HTMLResponse:
        return _document(dag_id, run_id, "post-mortem")

    @app.get("/dags/{dag_id}/runs/{run_id}/report/{folder}/{name}", dependencies=RunAccess)
    def report_chart(dag_id: str, run_id: str, folder: str, name: str) -> Response:
        """A chart the report links to: only ``charts-<run>/<check>.png`` beside the recorded report."""
        from migration_soak.report import safe_name

        snap = read_snapshot(dag_id, run_id)
        report = _recorded_file(snap, "report")
        if folder != f"charts-{safe_name(run_id)}" or not name.endswith(".png") or "/" in name or name.startswith("."):
            raise HTTPException(404, "not a chart of this run's report")
        path = report.parent / folder / name
        try:
            return Response(path.read_bytes(), media_type="image/png")
        except OSError:
            raise HTTPException(404, "no such chart") from None

    return app


def _draw(snap: Snapshot, check) -> bytes:
    from migration_soak import charts

    deciding, stop_h, label = snap.marks
    run = snap.analysis
    hour0 = (run.clock0 or run.start) if run else None
    mine = [o for o in snap.observations if o.check_id == check.id]
    with _DRAW:
        fig = charts.figure(snap.plan, check, mine, hour0 or snap.taken, snap.time_scale,
                            deciding=deciding.get(check.id, ()), stop_hours=stop_h, stop_label=label)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


app = create_app()
