"""Faults of the orchestrator itself, with the real Airflow components (not ``dag.test()``).

The demo stack (embedded PostgreSQL, gateway, Authorizer) and ``airflow api-server``,
``dag-processor``, ``scheduler`` and ``triggerer`` run as separate processes
(``demo.airflow_local``) on a PostgreSQL metadata database, with the small plan
``tests/faults/plans/restart.yaml`` (DAG ``migration_soak__restart``: two checks, one
phase of 6 ticks of 15 soak-minutes; ``TIME_SCALE`` 45 puts a tick every 20 s).

Issue 4, fault list:

- the scheduler and the triggerer are killed (SIGKILL, with every process they forked)
  mid-soak and started again: the soak resumes at the right tick, every scheduled tick of
  every check has exactly one observation, the ticks that fell in the outage are measured
  late within the grace or recorded as ``error`` "missed" (never invented), later ticks
  pass and the run reaches a verdict;
- a second run of the same plan and environment while one is active is not started:
  ``max_active_runs=1`` keeps it queued with no task started; once the first run is gone
  the second one's ``load`` refuses (the staging database's lease is still held).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from demo.airflow_local import AirflowLocal, postgres_metadata_url
from demo.slack_sink import SlackSink
from demo.stack import Stack, airflow_connections
from migration_soak.observe import LATE_GRACE
from migration_soak.plan import load_plan
from migration_soak.store import Store

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
PLAN_FILE = HERE / "plans" / "restart.yaml"
PLAN = load_plan(str(PLAN_FILE))
DAG_ID = "migration_soak__restart"
TIME_SCALE = 45.0  # a 15-minute tick every 20 s of wall time
TICK_S = PLAN.phase("soak").every_minutes * 60 / TIME_SCALE
CONF = {"plan": "restart", "environment": "staging", "time_scale": TIME_SCALE, "require_sign_off": False,
        "on_inconclusive": "rollback"}


@contextmanager
def soak_environment(tmp_path: Path):
    """The demo stack, a Slack stand-in and the four Airflow components; yields
    ``(airflow, store, timings)``."""
    with SlackSink() as sink, Stack.running(tmp_path / "stack", users=2000) as info:
        env = {**airflow_connections(info), "AIRFLOW_CONN_SOAK_SLACK": sink.airflow_connection(),
               "SOAK_APP_LOG": info["app_log"], "SOAK_DB_LOG": info["db_log"],
               "PATH": os.pathsep.join([info["pg_bin_dir"], os.environ.get("PATH", "")]),
               "MIGRATION_SOAK_PLANS_DIR": str(HERE / "plans")}
        db = info["store"]
        engine = sa.create_engine(sa.URL.create("postgresql+psycopg2", username=db["user"], password=db["password"],
                                                host=db["host"], port=db["port"], database=db["database"]))
        began = time.monotonic()
        try:
            with AirflowLocal(tmp_path / "airflow", env, sql_alchemy_conn=postgres_metadata_url(info["store"])) as af:
                timings = dict(af.timings, components_up_s=time.monotonic() - began)
                timings["dag_parsed_s"] = af.wait_for_dag(DAG_ID)
                af.unpause(DAG_ID)
                yield af, Store(engine), timings
        finally:
            engine.dispose()


def _soak_ticks(store: Store, run_id: str) -> dict[str, set[int]]:
    try:
        observations = store.observations(run_id, phase="soak")
    except sa.exc.ProgrammingError:  # the run's load task has not created the tables yet
        return {}
    seen: dict[str, set[int]] = {}
    for o in observations:
        seen.setdefault(o.check_id, set()).add(o.tick)
    return seen


def _wait(predicate, timeout: float, what: str, every: float = 0.5):
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


def _busy(af: AirflowLocal, run_id: str) -> list[str]:
    return [t for t, s in af.task_states(DAG_ID, run_id).items() if s in ("queued", "scheduled", "running")]


def _report(tmp_path: Path, name: str, data: dict) -> None:
    """Timings for the record: printed (``pytest -s``) and kept next to the logs."""
    text = json.dumps(data, indent=1, default=str)
    (tmp_path / f"{name}.json").write_text(text)
    print(f"\n{name}: {text}")


def test_scheduler_and_triggerer_killed_mid_soak_resume_at_the_right_tick(tmp_path):
    soak_checks = [c.id for c in PLAN.checks_in("soak")]
    n_ticks = len(PLAN.phase("soak").tick_offsets())
    with soak_environment(tmp_path) as (af, store, timings):
        run_id = af.trigger(DAG_ID, CONF)
        # Let two ticks of every check land, then crash between ticks (no task in flight:
        # a task killed mid-run is a different fault, see the module's report).
        _wait(lambda: all({1, 2} <= _soak_ticks(store, run_id).get(c, set()) for c in soak_checks),
              300, "two soak ticks of every check")
        _wait(lambda: not _busy(af, run_id), 30, "a moment with no task in flight", every=0.2)
        killed_at = datetime.now(timezone.utc)
        af.kill("scheduler")
        af.kill("triggerer")
        before = {c: set(t) for c, t in _soak_ticks(store, run_id).items()}
        # Down across more than two ticks: the first tick of the outage is past its
        # successor's time + grace by the restart (missed), the next one is late.
        time.sleep(2.25 * TICK_S)
        during = _soak_ticks(store, run_id)
        restarted_at = datetime.now(timezone.utc)
        mark = time.monotonic()
        af.start("scheduler")
        af.start("triggerer")
        _wait(lambda: len(_soak_ticks(store, run_id).get(soak_checks[0], set())) > len(before[soak_checks[0]]),
              120, "the first observation after the restart")
        timings["restart_to_first_observation_s"] = time.monotonic() - mark
        run = af.wait_for_run(DAG_ID, run_id, timeout=600)
        tis = af.task_instances(DAG_ID, run_id)
        states = {t["task_id"]: t["state"] for t in tis}
        timings["task_run_s"] = {t["task_id"]: t["duration"] and round(t["duration"], 2) for t in tis
                                 if t["state"] == "success"}
        observations = store.observations(run_id)
        verdict = store.events(run_id, "verdict")
        hour0 = datetime.fromisoformat(store.events(run_id, "hour0")[0]["payload"]["hour0"])

    # Nothing was measured while the scheduler was down.
    assert during == before, (before, during)
    lateness = {}
    for check_id in soak_checks:
        mine = sorted((o for o in observations if o.check_id == check_id and o.phase == "soak"), key=lambda o: o.tick)
        # Every scheduled tick exactly once (the store's unique key forbids a second row).
        assert [o.tick for o in mine] == list(range(1, n_ticks + 1)), [o.tick for o in mine]
        assert len([o for o in observations if o.check_id == check_id and o.phase == "hour0"]) == 1
        for o in mine:
            # Ticks are where hour 0 and the clock put them: the soak resumed at the right tick.
            assert abs((o.scheduled_at - (hour0 + timedelta(seconds=o.tick * TICK_S))).total_seconds()) < 0.01
            successor_at = o.scheduled_at + timedelta(seconds=TICK_S)
            lateness[f"{check_id}#{o.tick}"] = round((o.measured_at - o.scheduled_at).total_seconds(), 2)
            if o.scheduled_at < killed_at:
                assert o.status == "pass", o
            elif o.scheduled_at <= restarted_at:  # due during the outage
                assert o.measured_at >= restarted_at, o
                if o.status == "error":
                    assert o.value is None and o.evidence["error"].startswith("missed"), o
                    assert successor_at + LATE_GRACE < o.measured_at, o
                else:
                    assert o.status == "pass" and o.value is not None, o
                    assert o.measured_at <= successor_at + LATE_GRACE, o
            else:
                assert o.status == "pass", o
        outage = [o for o in mine if killed_at <= o.scheduled_at <= restarted_at]
        assert len(outage) >= 2, "the outage must span at least two ticks"
        assert outage[0].status == "error", "the first tick of a 45 s outage is missed"
    assert verdict, "the run reached no verdict"
    assert run["state"] == "success", (run["state"], states)
    assert verdict[0]["payload"]["decision"] == "GO", verdict[0]["payload"]
    _report(tmp_path, "scheduler_restart", {**timings, "tick_s": TICK_S, "killed_at": killed_at,
                                            "restarted_at": restarted_at, "lateness_s": lateness})


def test_second_run_while_one_is_active_is_refused(tmp_path):
    with soak_environment(tmp_path) as (af, store, timings):
        first = af.trigger(DAG_ID, CONF)
        _wait(lambda: af.run(DAG_ID, first)["state"] == "running", 60, "the first run running")
        second = af.trigger(DAG_ID, CONF)
        # While the first run works (backup, migration, checks), the second never starts.
        _wait(lambda: af.task_states(DAG_ID, first).get("start_clock") == "success", 180, "the first run's hour 0")
        watched_until = time.monotonic() + 1.5 * TICK_S
        while time.monotonic() < watched_until:
            assert af.run(DAG_ID, first)["state"] == "running"
            assert af.run(DAG_ID, second)["state"] == "queued"
            assert not any(af.task_states(DAG_ID, second).values()), af.task_states(DAG_ID, second)
            time.sleep(1)
        assert store.events(second) == []
        # The first run ends (here: marked failed by an operator, so its release task never
        # ran); the second starts, and its load refuses: the staging database is still held.
        af.api("PATCH", f"/dags/{DAG_ID}/dagRuns/{first}", json={"state": "failed"})
        run = af.wait_for_run(DAG_ID, second, timeout=180)
        states = af.task_states(DAG_ID, second)
        second_events = [e["kind"] for e in store.events(second)]
        ti = {t["task_id"]: t for t in af.task_instances(DAG_ID, second)}
        log = (tmp_path / "airflow" / "logs" / f"dag_id={DAG_ID}" / f"run_id={second}" / "task_id=load"
               / "attempt=1.log").read_text(errors="replace")
    assert run["state"] == "failed"
    assert states["load"] == "failed", states
    assert states["preflight"] in ("upstream_failed", None) and states["backup"] in ("upstream_failed", None), states
    assert "backup" not in second_events and "migrate" not in second_events, second_events
    assert ti["load"]["try_number"] == 1
    assert f"is being soaked by run {first}" in log
