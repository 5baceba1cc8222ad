"""Run a whole soak on the local staging stack: ``make demo [SCENARIO=legacy-code]``.

Starts a fresh staging stack (embedded PostgreSQL seeded with 100 000 users, the demo
gateway and Authorizer under steady load, a database host exporter) and a local Slack
stand-in, then runs the real DAG with ``airflow dags test`` on a compressed clock and
prints what a person would look for: the verdict and its deciding criterion, the
report's path, the rollback's figures, the Slack messages. Scenarios other than
``healthy`` and ``legacy-code`` inject their faults on the soak clock
(``demo/faults.py``). ``run_soak`` is also what the end-to-end tests call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import sqlalchemy as sa

from demo.faults import SCENARIOS, Timeline, base_scenario
from demo.human import Approver
from demo.slack_sink import SlackSink
from demo.stack import Stack, airflow_connections

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from migration_soak.store import Store  # noqa: E402


@dataclass
class SoakOutcome:
    """What one demo soak produced: the run id, its store events by kind, Slack messages,
    the wall seconds of the ``airflow dags test`` run, and the login status afterwards."""

    run_id: str | None
    events: dict[str, dict] = field(default_factory=dict)
    slack: list[str] = field(default_factory=list)
    soak_seconds: float = 0.0
    login_status_after: int | None = None
    log_path: Path | None = None
    stack_info: dict = field(default_factory=dict)
    exit_code: int = 0
    all_events: list[dict] = field(default_factory=list)
    human_answer: tuple[str, str] | None = None
    human_error: str | None = None

    @property
    def decision(self) -> str | None:
        verdict = self.events.get("verdict")
        return verdict["payload"]["decision"] if verdict else None


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for an Airflow CLI with a project-local home, DAGs and plugins."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        "XDG_RUNTIME_DIR": str(home / "runtime"),
    }


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def ensure_airflow_db(home: Path) -> None:
    """``airflow db migrate`` once for this home (SQLite, as ``airflow standalone`` uses)."""
    if (home / "airflow.db").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([_airflow(), "db", "migrate"], env={**os.environ, **airflow_env(home)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _store_engine(info: dict) -> sa.Engine:
    db = info["store"]
    return sa.create_engine(sa.URL.create("postgresql+psycopg2", username=db["user"], password=db["password"],
                                          host=db["host"], port=db["port"], database=db["database"]))


def _start_faults_at_hour0(info: dict, scenario: str, time_scale: float, stop: threading.Event) -> Timeline | None:
    """Wait (in a thread) for the run's hour 0 in the store, then play the scenario's faults."""
    steps = SCENARIOS[scenario]
    if not steps:
        return None
    timeline = Timeline(info["gateway_url"], info["staging"], steps)

    def wait_then_run():
        engine = _store_engine(info)
        try:
            while not stop.is_set():
                try:
                    with engine.connect() as conn:
                        hour0 = conn.execute(sa.text(
                            "SELECT payload->>'hour0' FROM soak_events WHERE kind = 'hour0' ORDER BY id DESC LIMIT 1")).scalar()
                except sa.exc.ProgrammingError:  # the store's tables do not exist yet
                    hour0 = None
                except sa.exc.OperationalError:  # the stack is stopping: the run ended before hour 0
                    return
                if hour0:
                    timeline.run(hour0, time_scale)
                    return
                time.sleep(0.2)
        finally:
            engine.dispose()

    threading.Thread(target=wait_then_run, name="fault-starter", daemon=True).start()
    return timeline


def run_soak(workdir: Path, scenario: str = "healthy", time_scale: float = 300.0, users: int = 100_000,
             plan: str = "default", fresh: bool = True, on_inconclusive: str = "rollback",
             human_choice: str | None = None) -> SoakOutcome:
    """Start the stack, run the DAG once with ``airflow dags test``, collect the outcome.

    ``workdir`` holds the stack, the Airflow home and the run's log. ``fresh`` drops the
    previous staging data so the migration is pending again. ``scenario``: a key of
    ``demo.faults.SCENARIOS``. ``on_inconclusive``: the run's param (an unattended demo
    rolls back); with ``human_choice`` ("GO" or "Roll back") the run asks and a person
    answers through a real ``airflow api-server``.
    """
    workdir = Path(workdir).resolve()
    if fresh:
        shutil.rmtree(workdir / "stack", ignore_errors=True)
    home = workdir / "airflow"
    ensure_airflow_db(home)
    log_path = workdir / "airflow-run.log"
    if human_choice is not None:
        on_inconclusive = "ask"
    conf = {"plan": plan, "environment": "staging", "time_scale": time_scale, "require_sign_off": False,
            "on_inconclusive": on_inconclusive}
    stop = threading.Event()
    with SlackSink() as sink, Stack.running(workdir / "stack", scenario=base_scenario(scenario), users=users) as info:
        env = {**os.environ, **airflow_env(home), **airflow_connections(info),
               "AIRFLOW_CONN_SOAK_SLACK": sink.airflow_connection(),
               "SOAK_APP_LOG": info["app_log"], "SOAK_DB_LOG": info["db_log"],
               "PATH": os.pathsep.join([info["pg_bin_dir"], os.environ.get("PATH", "")])}
        timeline = _start_faults_at_hour0(info, scenario, time_scale, stop)
        approver = Approver(env, "migration_soak", human_choice, log_path=workdir / "api-server.log") \
            if human_choice else None
        began = time.monotonic()
        try:
            if approver:
                approver.__enter__()
            with log_path.open("w") as log:
                proc = subprocess.run([_airflow(), "dags", "test", "migration_soak", "--conf", json.dumps(conf)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        finally:
            stop.set()
            if timeline:
                timeline.stop()
            if approver:
                approver.__exit__(None, None, None)
        outcome = SoakOutcome(run_id=None, soak_seconds=time.monotonic() - began, log_path=log_path,
                              stack_info=info, exit_code=proc.returncode,
                              human_answer=approver.answered if approver else None,
                              human_error=approver.error if approver else None)
        engine = _store_engine(info)
        try:
            store = Store(engine)
            with engine.connect() as conn:
                run_id = conn.execute(sa.text("SELECT run_id FROM soak_events ORDER BY id DESC LIMIT 1")).scalar()
            outcome.run_id = run_id
            if run_id:
                outcome.all_events = store.events(run_id)
                outcome.events = {e["kind"]: e for e in reversed(outcome.all_events)}  # the first of each kind
        except sa.exc.ProgrammingError:  # the run failed before it created the store's tables
            pass
        finally:
            engine.dispose()
        outcome.slack = list(sink.messages)
        try:
            resp = requests.post(info["gateway_url"] + "/auth/login", json={"email": "user1@example.test"}, timeout=10)
            outcome.login_status_after = resp.status_code
        except requests.RequestException:
            outcome.login_status_after = None
    return outcome


def summary(outcome: SoakOutcome) -> list[str]:
    """The lines the demo prints."""
    ev = outcome.events
    lines = []
    if outcome.decision is None:
        # Why: the failed task's Slack message carries its error.
        lines.append(f"verdict: none: the run stopped before deciding; see {outcome.log_path}")
        lines += ["slack: " + text.replace("\n", " | ")[:600] for text in outcome.slack]
        return lines
    reasons = "; ".join(ev["verdict"]["payload"]["reasons"])
    shown = outcome.decision.replace("NO_GO", "NO-GO")
    lines.append(f"verdict: {shown}" + (f" ({reasons})" if outcome.decision != "GO" else ""))
    if "no_go" in ev:
        lines.append(f"deciding criterion: {ev['no_go']['payload']['criterion']} (the soak stopped there)")
    if "human_decision" in ev:
        lines.append(f"human decision: {ev['human_decision']['payload']['text']}")
    for e in outcome.all_events:
        if e["kind"] in ("alert", "prisma_status"):
            lines.append(f"{e['kind'].replace('_', ' ')}: {e['payload']['text']}")
        elif e["kind"] == "backup":
            lines.append(f"backup: {e['payload']['text']}")
    if "report" in ev:
        lines.append(f"report: {ev['report']['payload']['path']}")
    if "restore" in ev:
        r = ev["restore"]["payload"]
        status = "completed" if "rollback_completed" in ev else "INCOMPLETE"
        lines.append(f"rollback: {status}")
        lines.append(f"restored: {r['values_restored']} values of {r['users_matched']} users; "
                     f"{r['users_matched']}/{r['users_at_backup']} users present at backup time match, "
                     f"{r['mismatches']} mismatches")
        if "rollback_completed" in ev:
            lines.append(f"post-mortem: {ev['rollback_completed']['payload']['post_mortem']}")
        lines.append(f"/auth/login after rollback: HTTP {outcome.login_status_after}")
    lines.append(f"soak wall time: {outcome.soak_seconds:.0f} s (airflow dags test); log: {outcome.log_path}")
    for text in outcome.slack:
        lines.append("slack: " + text.replace("\n", " | ")[:300])
    return lines


def _positive(text: str) -> float:
    """argparse type: a number > 0 (the soak clock's speed-up)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="healthy", choices=sorted(SCENARIOS))
    parser.add_argument("--on-inconclusive", default="rollback", choices=["rollback", "go"],
                        help="what the unattended demo does with an INCONCLUSIVE verdict")
    parser.add_argument("--human-choice", choices=["GO", "Roll back"],
                        help="ask in the UI on INCONCLUSIVE and answer through the API server")
    parser.add_argument("--time-scale", type=_positive, default=300.0, help="soak clock speed-up (300: 24 h in 4.8 min)")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--workdir", default=str(ROOT / ".state" / "demo"))
    args = parser.parse_args(argv)
    print(f"demo: scenario {args.scenario}, time_scale {args.time_scale:g}, {args.users} users; "
          f"running the DAG (about {24 * 3600 / args.time_scale / 60:.0f} min of soak)...", flush=True)
    outcome = run_soak(Path(args.workdir), args.scenario, args.time_scale, args.users,
                       on_inconclusive=args.on_inconclusive, human_choice=args.human_choice)
    for line in summary(outcome):
        print(line)
    return 0 if outcome.decision else 1


if __name__ == "__main__":
    sys.exit(main())
