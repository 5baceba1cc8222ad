"""Every path of the DAG's tail, run through the real Airflow components (issue 8, item 1).

One deployment for the whole module (``demo.airflow_local``: ``airflow api-server``,
``dag-processor``, ``scheduler``, ``triggerer``, LocalExecutor, PostgreSQL metadata
database) runs twelve soaks side by side, one per path:

==========================  ======================================================
path                        how it gets there
==========================  ======================================================
go                          healthy data, no sign-off
go_approve                  sign-off required, approved through the API server
go_reject                   sign-off required, rejected with a comment
go_timeout                  sign-off required, nobody answers: the scheduler applies
                            the default (Reject) after ``sign_off_timeout_hours``
report_failure              GO, but the plan's ``report_location`` is under a file
no_go                       one user without authorizerId after the migration
                            (no_go > 0); a later phase that never reads
restore_failure             NO-GO, and the plan's down SQL has a typo
inconclusive_ask_go         one such user with no_go > 1: INCONCLUSIVE; a person
                            answers GO through the API server
inconclusive_ask_rollback   the same; the person answers Roll back
inconclusive_go             INCONCLUSIVE, on_inconclusive=go: kept, not a GO
inconclusive_rollback       INCONCLUSIVE, on_inconclusive=rollback
restart_failure             restart_apps fails after the migration (404): judged
                            INCONCLUSIVE, rolled back by the policy
==========================  ======================================================

Each path is its own copy of ``plans/tail.yaml`` (dag ``migration_soak__tail_<path>``),
its own ``environment``, its own staging database (a ``CREATE DATABASE ... TEMPLATE``
copy of one seeded database, with its own Airflow connection: the lease is per database,
so they run at once) and its own Slack sink. The verdict comes from the data: the
test inserts users without authorizerId in a path's database once its migration has run;
the soak tick reads them four tasks later (verify, restart_apps, hour 0, start_clock).

Each test asserts the final state of every task and of the run, the run's one decision
event and what Slack was told.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
import sqlalchemy as sa
import yaml

from demo import postgres, seed
from demo.airflow_local import FINISHED, AirflowLocal, postgres_metadata_url
from demo.faults import add_users_without_authorizer_id
from demo.slack_sink import SlackSink
from demo.stack import Stack, airflow_connections
from migration_soak.plan import load_plan
from migration_soak.store import Store

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
BASE_PLAN = HERE / "plans" / "tail.yaml"
# The one soak tick (15 soak-minutes) falls 0.5 s after hour 0: every check task measures
# at its first wake-up and never reschedules. (A check task that asks to be woken at a
# tick due before the scheduler has processed its exit is failed by Airflow 3.3.2, "state
# attribute is queued", apache/airflow#71172; on 2 busy cores the scheduler lags 5-10 s.)
TIME_SCALE = 1800.0
USERS = 300
SIGN_OFF_TIMEOUT_HOURS = 0.005  # 18 s; the scheduler's sweep runs every 5 s here
RUNS_TIMEOUT_S = 600
ANSWER_AFTER_S = 15  # a question is answered once it has been pending this long (see _drive)
APPROVE_COMMENT = "manual testing passed"
REJECT_COMMENT = "password reset fails on the iOS app"

DRIFT_CHECK = "users_without_authorizer_id"  # the check the drift users show up in
OK, SKIP, FAIL, UPSTREAM = "success", "skipped", "failed", "upstream_failed"
BEFORE_THE_CHECKS = ["load", "preflight", "backup", "rehearse", "fingerprint", "migrate", "verify", "restart_apps", "start_clock"]
ROLLBACK = ["rollback.notify_rollback", "rollback.restore", "rollback.mark_ledger", "rollback.restart_after_rollback",
            "rollback.health", "rollback.post_mortem"]


def tail_states(human=SKIP, sign_off=SKIP, report=SKIP, rollback=SKIP, conclude=FAIL) -> dict[str, str]:
    """The final states of the tasks after the checks; ``rollback``: one state for the
    whole group or one per task (in ``ROLLBACK`` order)."""
    states = {"judge_soak": OK, "human_decision": human, "ask_sign_off": OK, "sign_off": sign_off, "decide": OK,
              "report": report, "release": OK, "conclude": conclude}
    states.update(zip(ROLLBACK, rollback if isinstance(rollback, list) else [rollback] * len(ROLLBACK)))
    return states


def _sign_off_times_out(plan: dict, root: Path) -> None:
    plan["verdict"]["sign_off_timeout_hours"] = SIGN_OFF_TIMEOUT_HOURS


def _report_location_under_a_file(plan: dict, root: Path) -> None:
    # The plan file itself is a regular file: nothing can be created under it.
    plan["report_location"] = str(root / "plans" / f"{plan['name']}.yaml" / "reports")


def _a_phase_after_the_stop(plan: dict, root: Path) -> None:
    # The NO-GO at the soak tick stops the soak before this phase's check reads. Its tick
    # is 8 s of wall time after the soak tick (hour 4 at TIME_SCALE 1800), not 0.5 s: on
    # a loaded 2-core CI machine (11 runs at once) the soak tick's reading and judgement
    # took longer than 0.5 s once and the late check read first. The NO-GO ends the run
    # before this tick, so the margin costs no time.
    plan["phases"].append({"name": "late", "start_hour": 4.0, "end_hour": 4.25, "every_minutes": 15})
    plan["checks"][1]["phases"] = ["hour0", "soak", "late"]


def _down_sql_with_a_typo(plan: dict, root: Path) -> None:
    good = load_plan(str(BASE_PLAN)).path(plan["migration"]["down_sql"]).read_text()
    bad = root / "typo.down.sql"
    bad.write_text(good.replace("BOOLEAN", "BOOLEN"))
    assert bad.read_text() != good
    plan["migration"]["down_sql"] = str(bad)
    # The rehearsal would catch the typo before the migration (tests/e2e/test_rehearsal.py):
    # without it, the typo reaches the real rollback, which must fail visibly.
    plan["rehearsal"] = {"enabled": False}


def _restart_endpoint_missing(plan: dict, root: Path) -> None:
    # The gateway answers 404: restart_apps fails right after the migration, and so does
    # the rollback's restart (the same endpoint).
    plan["restart"]["endpoint"] = "/admin/no-such-endpoint"


def _after_restart_apps_failed() -> dict[str, str]:
    """The tasks between restart_apps and the judge: none of them could run."""
    plan = load_plan(str(BASE_PLAN))
    return {"restart_apps": FAIL, "start_clock": UPSTREAM, **{f"{p}.{c}": UPSTREAM for p, c in plan.schedule()},
            **({"guard": UPSTREAM} if plan.guard else {})}


@dataclass(frozen=True)
class TailPath:
    """One path of the tail: how to drive it and what it must end in."""

    name: str
    tail: dict[str, str]
    run: str  # the run's final state
    verdict: str
    decision: tuple[str, str]  # (outcome, action) of the run's one decision event
    drift: int = 0  # users without authorizerId inserted after the migration
    no_go_over: int = 0  # the NO-GO threshold of those users: count > no_go_over
    on_inconclusive: str = "rollback"
    require_sign_off: bool = False
    answers: dict[str, tuple[str, dict]] = field(default_factory=dict)  # task id -> (option, params_input)
    questions: tuple[str, ...] = ()  # the HITL tasks that must ask (answered or not)
    tweak: Callable[[dict, Path], None] | None = None

    @property
    def stem(self) -> str:
        return f"tail_{self.name}"

    @property
    def dag_id(self) -> str:
        return f"migration_soak__{self.stem}"

    @property
    def says_go(self) -> bool:
        return self.run == OK


PATHS = [
    TailPath("go", tail_states(report=OK, conclude=OK), OK, "GO", ("GO", "proceed")),
    TailPath("go_approve", tail_states(sign_off=OK, report=OK, conclude=OK), OK, "GO", ("GO", "proceed"),
             require_sign_off=True, answers={"sign_off": ("Approve", {"comment": APPROVE_COMMENT})},
             questions=("sign_off",)),
    TailPath("go_reject", tail_states(sign_off=OK, rollback=OK), FAIL, "GO", ("NO_GO", "rollback"),
             require_sign_off=True, answers={"sign_off": ("Reject", {"comment": REJECT_COMMENT})},
             questions=("sign_off",)),
    TailPath("go_timeout", tail_states(sign_off=OK, rollback=OK), FAIL, "GO", ("NO_GO", "rollback"),
             require_sign_off=True, questions=("sign_off",), tweak=_sign_off_times_out),
    TailPath("report_failure", tail_states(report=FAIL), FAIL, "GO", ("GO", "proceed"),
             tweak=_report_location_under_a_file),
    TailPath("no_go", tail_states(rollback=OK), FAIL, "NO_GO", ("NO_GO", "rollback"), drift=1,
             tweak=_a_phase_after_the_stop),
    TailPath("restore_failure", tail_states(rollback=[OK, FAIL, UPSTREAM, UPSTREAM, UPSTREAM, UPSTREAM]), FAIL,
             "NO_GO", ("NO_GO", "rollback"), drift=1, tweak=_down_sql_with_a_typo),
    TailPath("inconclusive_ask_go", tail_states(human=OK, report=OK, conclude=OK), OK, "INCONCLUSIVE",
             ("GO", "proceed"), drift=1, no_go_over=1, on_inconclusive="ask",
             answers={"human_decision": ("GO", {})}, questions=("human_decision",)),
    TailPath("inconclusive_ask_rollback", tail_states(human=OK, rollback=OK), FAIL, "INCONCLUSIVE",
             ("INCONCLUSIVE", "rollback"), drift=1, no_go_over=1, on_inconclusive="ask",
             answers={"human_decision": ("Roll back", {})}, questions=("human_decision",)),
    TailPath("inconclusive_go", tail_states(report=OK), FAIL, "INCONCLUSIVE", ("INCONCLUSIVE", "keep"),
             drift=1, no_go_over=1, on_inconclusive="go"),
    TailPath("inconclusive_rollback", tail_states(rollback=OK), FAIL, "INCONCLUSIVE", ("INCONCLUSIVE", "rollback"),
             drift=1, no_go_over=1, on_inconclusive="rollback"),
    # A task failing after the migration is judged, not left with the columns dropped and
    # no decision: INCONCLUSIVE, then the policy (here: roll back; the rollback's own
    # restart fails the same way, after the columns are restored).
    TailPath("restart_failure", {**tail_states(rollback=[OK, OK, OK, FAIL, UPSTREAM, UPSTREAM]),
                                 **_after_restart_apps_failed()}, FAIL, "INCONCLUSIVE", ("INCONCLUSIVE", "rollback"),
             on_inconclusive="rollback", tweak=_restart_endpoint_missing),
]
BY_NAME = {p.name: p for p in PATHS}


def write_plan(path: TailPath, root: Path) -> Path:
    """``<root>/plans/<stem>.yaml``: the base plan with the path's changes."""
    plan = yaml.safe_load(BASE_PLAN.read_text())
    plan["name"] = plan["environment"] = path.stem
    plan["connections"].update(staging=f"staging_{path.stem}", slack=f"slack_{path.stem}")
    plan["backup_location"] = str(root / "backups" / path.stem)
    plan["report_location"] = str(root / "reports" / path.stem)
    plan["checks"][0]["no_go"]["value"] = path.no_go_over
    plan["no_go"][0]["rule"]["value"] = path.no_go_over
    if path.tweak:
        path.tweak(plan, root)
    target = root / "plans" / f"{path.stem}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(plan, sort_keys=False))
    return target


class TimedMessages(list):
    """``SlackSink.messages`` that also keeps when each message arrived (monotonic s)."""

    def __init__(self):
        super().__init__()
        self.at: list[float] = []

    def append(self, text) -> None:
        self.at.append(time.monotonic())
        super().append(text)


@dataclass
class Outcome:
    """What one path's run left: states, store records, Slack, and what the test did."""

    path: TailPath
    run_id: str
    plan_file: Path
    run_state: str | None = None
    states: dict[str, str | None] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    observations: list = field(default_factory=list)
    slack: TimedMessages | None = None
    drift_at: datetime | None = None  # when the drift users were inserted
    asked: set[str] = field(default_factory=set)
    asked_at: dict[str, float] = field(default_factory=dict)
    answered_at: dict[str, float] = field(default_factory=dict)
    slack_before_answer: dict[str, list[str]] = field(default_factory=dict)
    log_dir: Path | None = None

    def kinds(self, kind: str) -> list[dict]:
        return [e["payload"] for e in self.events if e["kind"] == kind]

    def log(self, task_id: str, chars: int | None = None) -> str:
        """The task's last attempt log (its last ``chars`` characters when given)."""
        logs = sorted((self.log_dir / f"task_id={task_id}").glob("attempt=*.log"))
        text = logs[-1].read_text(errors="replace") if logs else "(no log)"
        return text[-chars:] if chars else text


def _clone_database(server: postgres.EmbeddedPostgres, template: str, name: str) -> None:
    conn = server.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        conn.close()


def _pg_connection(db: dict, database: str) -> str:
    return json.dumps({"conn_type": "postgres", "host": db["host"], "port": db["port"], "login": db["user"],
                       "password": db["password"], "schema": database})


def _drive(af: AirflowLocal, store: Store, staging: dict, outcomes: dict[str, Outcome], timings: dict) -> None:
    """Until every run ends: insert the drift users once a run's migration has run, and
    answer the HITL questions through the API server as the UI would."""
    by_run = {o.run_id: o for o in outcomes.values()}
    pending = set(by_run)
    deadline = time.monotonic() + RUNS_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for o in outcomes.values():
            if o.path.drift and o.drift_at is None and store.events(o.run_id, "migrate"):
                add_users_without_authorizer_id(staging, database=o.path.stem, n=o.path.drift)
                o.drift_at = datetime.now(timezone.utc)
        questions = af.api("GET", "/dags/~/dagRuns/~/hitlDetails",
                           params={"response_received": "false", "limit": 100}).json()["hitl_details"]
        for q in questions:
            ti = q["task_instance"]
            o = by_run.get(ti["dag_run_id"])
            if o is None:
                continue
            o.asked.add(ti["task_id"])
            seen = o.asked_at.setdefault(ti["task_id"], time.monotonic())
            # Like a person, answer a question that has been up for a while: on Airflow 3.3.2
            # an answer that re-queues the task before the scheduler has processed the exit of
            # the worker that parked it fails the task ("state attribute is queued", the
            # defer-path variant of apache/airflow#71172); the scheduler can lag 5-10 s here.
            if ti["task_id"] in o.path.answers and ti["task_id"] not in o.answered_at \
                    and ti.get("state") == "awaiting_input" and time.monotonic() - seen >= ANSWER_AFTER_S:
                option, params_input = o.path.answers[ti["task_id"]]
                o.slack_before_answer[ti["task_id"]] = list(o.slack)
                af.api("PATCH", f"/dags/{ti['dag_id']}/dagRuns/{o.run_id}/taskInstances/{ti['task_id']}/"
                                f"{ti.get('map_index', -1)}/hitlDetails",
                       json={"chosen_options": [option], "params_input": params_input})
                o.answered_at[ti["task_id"]] = time.monotonic()
        runs = af.api("GET", "/dags/~/dagRuns", params={"limit": 100}).json()["dag_runs"]
        for run in runs:
            if run["dag_run_id"] in pending and run["state"] in FINISHED:
                pending.discard(run["dag_run_id"])
                timings["run_s"][by_run[run["dag_run_id"]].path.name] = round(
                    time.monotonic() - timings["_triggered"], 1)
        time.sleep(1)


@pytest.fixture(scope="module")
def tail(tmp_path_factory) -> dict[str, Outcome]:
    """Run all the paths at once in one deployment; returns each path's ``Outcome``."""
    root = tmp_path_factory.mktemp("tail")
    began = time.monotonic()
    timings: dict = {"run_s": {}}
    server = postgres.start(root / "pgdata")
    try:
        seed.create_staging(server, "staging", users=USERS)
        for p in PATHS:
            _clone_database(server, "staging", p.stem)
        plan_files = {p.name: write_plan(p, root) for p in PATHS}
        timings["databases_s"] = round(time.monotonic() - began, 1)
        with ExitStack() as stack:
            sinks = {}
            for p in PATHS:
                sinks[p.name] = stack.enter_context(SlackSink())
                sinks[p.name].messages = TimedMessages()
            info = stack.enter_context(Stack.running(root / "stack", users=USERS, rate=0, server=server))
            env = {**airflow_connections(info), "SOAK_APP_LOG": info["app_log"], "SOAK_DB_LOG": info["db_log"],
                   "PATH": os.pathsep.join([info["pg_bin_dir"], os.environ.get("PATH", "")]),
                   "MIGRATION_SOAK_PLANS_DIR": str(root / "plans"),
                   # the HITL response timeout is enforced by this sweep (default every 15 s)
                   "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
                   # the plans do not change during the test: one parse is enough
                   "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600"}
            for p in PATHS:
                env[f"AIRFLOW_CONN_STAGING_{p.stem.upper()}"] = _pg_connection(info["staging"], p.stem)
                env[f"AIRFLOW_CONN_SLACK_{p.stem.upper()}"] = sinks[p.name].airflow_connection()
            db = info["store"]
            engine = sa.create_engine(sa.URL.create("postgresql+psycopg2", username=db["user"], password=db["password"],
                                                    host=db["host"], port=db["port"], database=db["database"]))
            stack.callback(engine.dispose)
            store = Store(engine)
            # Created once here: eleven `load` tasks creating the tables at the same moment race.
            store.create_schema()
            mark = time.monotonic()
            af = stack.enter_context(AirflowLocal(root / "airflow", env, sql_alchemy_conn=postgres_metadata_url(db)))
            for p in PATHS:
                af.wait_for_dag(p.dag_id)
                af.unpause(p.dag_id)
            timings["airflow_up_s"] = round(time.monotonic() - mark, 1)
            outcomes = {}
            timings["_triggered"] = time.monotonic()
            for p in PATHS:
                run_id = f"tail__{p.name}__{secrets.token_hex(3)}"
                af.api("POST", f"/dags/{p.dag_id}/dagRuns", json={
                    "dag_run_id": run_id, "logical_date": None,
                    "conf": {"plan": p.stem, "environment": p.stem, "time_scale": TIME_SCALE,
                             "require_sign_off": p.require_sign_off, "on_inconclusive": p.on_inconclusive}})
                outcomes[p.name] = Outcome(p, run_id, plan_files[p.name], slack=sinks[p.name].messages,
                                           log_dir=af.home / "logs" / f"dag_id={p.dag_id}" / f"run_id={run_id}")
            _drive(af, store, info["staging"], outcomes, timings)
            timings["runs_s"] = round(time.monotonic() - timings.pop("_triggered"), 1)
            for o in outcomes.values():
                o.run_state = af.run(o.path.dag_id, o.run_id)["state"]
                o.states = af.task_states(o.path.dag_id, o.run_id)
                o.events = store.events(o.run_id)
                o.observations = store.observations(o.run_id)
                soak = [ob for ob in o.observations if (ob.phase, ob.check_id) == ("soak", DRIFT_CHECK)]
                if o.drift_at and soak:  # how much earlier than the reading the drift landed
                    timings.setdefault("drift_margin_s", {})[o.path.name] = round(
                        (soak[0].measured_at - o.drift_at).total_seconds(), 1)
    finally:
        server.stop()
    timings["total_s"] = round(time.monotonic() - began, 1)
    (root / "tail_timings.json").write_text(json.dumps(timings, indent=1))
    print(f"\ntail timings: {json.dumps(timings)}")
    return outcomes


def _expected_states(o: Outcome) -> dict[str, str]:
    plan = load_plan(str(o.plan_file))
    read = {(ob.phase, ob.check_id) for ob in o.observations}
    expected = {t: OK for t in BEFORE_THE_CHECKS}
    if not plan.rehearsal.enabled:  # skipped, saying so: nothing was rehearsed
        expected["rehearse"] = SKIP
    for phase, check in plan.schedule():
        # a check task that never took a reading (the soak stopped first) ends skipped
        expected[f"{phase}.{check}"] = OK if (phase, check) in read else SKIP
    expected.update(o.path.tail)
    return expected


@pytest.mark.parametrize("name", [p.name for p in PATHS])
def test_every_task_and_the_run_end_as_the_path_says(tail, name):
    o = tail[name]
    expected = _expected_states(o)
    wrong = {t: (o.states.get(t), want) for t, want in expected.items() if o.states.get(t) != want}
    extra = set(o.states) - set(expected)
    logs = "\n".join(f"--- {t} (got {got}, want {want}):\n{o.log(t, 2500)}" for t, (got, want) in wrong.items()
                     if got in (FAIL, UPSTREAM) or want == FAIL)
    assert not wrong and not extra, f"{name}: tasks (got, want): {wrong}; unexpected tasks {extra}\n{logs}"
    assert o.run_state == o.path.run, (name, o.run_state, o.states)


@pytest.mark.parametrize("name", [p.name for p in PATHS])
def test_the_verdict_and_the_one_decision(tail, name):
    o, p = tail[name], BY_NAME[name]
    verdicts = o.kinds("verdict")
    assert [v["decision"] for v in verdicts] == [p.verdict], verdicts
    decisions = o.kinds("decision")
    assert len(decisions) == 1, decisions
    d = decisions[0]
    assert (d["outcome"], d["action"]) == p.decision, d
    assert d["text"] and d["reason"], d
    if p.drift:  # the drift landed before the soak tick read it
        soak = [ob for ob in o.observations if (ob.phase, ob.check_id) == ("soak", DRIFT_CHECK)]
        assert soak and soak[0].value == p.drift, (soak, "the test inserted the drift users too late")
    elif name == "restart_failure":  # no check could start: the failed task decided
        assert o.observations == []
    else:  # nothing but the plan's checks decided: every scheduled reading was taken and passed
        assert len(o.observations) == len(load_plan(str(o.plan_file)).schedule())
        assert all(ob.status == "pass" for ob in o.observations), o.observations


@pytest.mark.parametrize("name", [p.name for p in PATHS])
def test_people_are_asked_only_what_the_path_needs(tail, name):
    o, p = tail[name], BY_NAME[name]
    assert o.asked == set(p.questions), o.asked
    assert set(o.answered_at) == set(p.answers)


@pytest.mark.parametrize("name", [p.name for p in PATHS])
def test_slack_says_go_only_for_a_go(tail, name):
    o, p = tail[name], BY_NAME[name]
    # the judge's GO says "verdict: GO"; a person's GO over INCONCLUSIVE "decision: GO by ..."
    go = [m for m in o.slack if "verdict: GO" in m or "decision: GO by" in m]
    if p.says_go:
        assert len(go) == 1, list(o.slack)
    else:
        assert go == [], go


def test_go_reaches_slack_only_after_the_approval(tail):
    o = tail["go_approve"]
    assert not any("verdict: GO" in m for m in o.slack_before_answer["sign_off"]), o.slack_before_answer
    at = [t for m, t in zip(o.slack, o.slack.at) if "verdict: GO" in m]
    assert at and at[0] > o.answered_at["sign_off"]
    sign_off = o.kinds("sign_off")
    assert [(s["state"], s["comment"]) for s in sign_off] == [("approved", APPROVE_COMMENT)], sign_off
    assert sign_off[0]["by"]
    d = o.kinds("decision")[0]
    assert d["by"] == f"person:{sign_off[0]['by']}", d
    assert Path(o.kinds("report")[0]["path"]).is_file()


def test_a_rejected_sign_off_is_a_no_go_with_the_comment(tail):
    o = tail["go_reject"]
    assert [(s["state"], s["comment"]) for s in o.kinds("sign_off")] == [("rejected", REJECT_COMMENT)]
    d = o.kinds("decision")[0]
    assert d["reason"] == f"QA rejected the sign-off: {REJECT_COMMENT}", d
    assert d["by"].startswith("person:"), d
    assert o.kinds("rollback_completed")


def test_an_unanswered_sign_off_times_out_into_a_no_go(tail):
    o = tail["go_timeout"]
    sign_off = o.kinds("sign_off")
    assert [(s["state"], s["by"]) for s in sign_off] == [("timed_out", None)], sign_off
    d = o.kinds("decision")[0]
    assert d["by"] == "timeout" and "timed out" in d["reason"], d
    assert o.kinds("rollback_completed")


def test_report_failure_writes_no_report_and_says_no_go(tail):
    o = tail["report_failure"]
    assert o.kinds("report") == []
    assert "NotADirectoryError" in o.log("report"), o.log("report", 2500)


def test_no_go_stops_the_checks_that_had_not_read_yet(tail):
    o = tail["no_go"]
    assert o.states["late.gateway_health"] == SKIP
    assert o.states["soak.users_without_authorizer_id"] == OK
    assert o.kinds("no_go")[0]["criterion"] == "no_go_users_without_authorizer_id"
    assert not [ob for ob in o.observations if ob.phase == "late"]
    restore = o.kinds("restore")[0]
    assert restore["rows_matched"] == restore["rows_at_backup"] == USERS and restore["mismatches"] == 0
    assert o.kinds("health")[0]["ok"] and o.kinds("rollback_completed")


def test_restore_failure_stops_the_rollback_and_says_why(tail):
    o = tail["restore_failure"]
    assert 'type \\"boolen\\" does not exist' in o.log("rollback.restore"), o.log("rollback.restore", 2500)
    assert o.kinds("restore") == [] and o.kinds("rollback_completed") == []
    assert o.kinds("rollback_started")


def test_a_task_failed_after_the_migration_is_judged_and_the_columns_come_back(tail):
    o = tail["restart_failure"]
    reason = o.kinds("verdict")[0]["reasons"][0]
    assert "restart_apps" in reason and reason.endswith("failed or could not run after the migration: the soak did "
                                                         "not run as planned"), reason
    assert o.observations == []  # nothing was read: the checks could not start
    assert [r["mismatches"] for r in o.kinds("restore")] == [0], o.kinds("restore")


def test_a_person_decides_an_inconclusive_soak(tail):
    go, back = tail["inconclusive_ask_go"], tail["inconclusive_ask_rollback"]
    assert [h["chosen"] for h in go.kinds("human_decision")] == [["GO"]]
    assert [h["chosen"] for h in back.kinds("human_decision")] == [["Roll back"]]
    for o in (go, back):
        assert o.kinds("human_decision")[0]["by"] and not o.kinds("human_decision")[0]["timed_out"]
        assert o.kinds("decision")[0]["by"].startswith("person:")
    assert go.kinds("report") and not go.kinds("rollback_started")
    assert back.kinds("rollback_completed")


def test_unattended_inconclusive_follows_the_policy(tail):
    keep, back = tail["inconclusive_go"], tail["inconclusive_rollback"]
    assert keep.kinds("decision")[0]["by"] == "policy:on_inconclusive=go"
    assert Path(keep.kinds("report")[0]["path"]).is_file() and not keep.kinds("rollback_started")
    assert back.kinds("decision")[0]["by"] == "policy:on_inconclusive=rollback"
    assert back.kinds("rollback_completed")
