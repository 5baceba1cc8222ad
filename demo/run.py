"""Run a whole soak on the local staging stack: ``make demo [SCENARIO=legacy-code]``.

Starts a fresh staging stack (embedded PostgreSQL seeded with 100 000 users, the demo
gateway and Authorizer under steady load, a database host exporter) and a local Slack
stand-in, then runs the real DAG on a compressed clock and prints what a person would
look for: the final decision (and the judge's verdict when a
person or a policy changed it), the deciding criterion, the report's path, the
rollback's figures, the Slack messages. Scenarios other than ``healthy`` and
``legacy-code`` inject their faults on the soak clock (``demo/faults.py``).
``run_soak`` is also what the end-to-end tests call.

Two runners (``--runner``): ``airflow`` (``make demo RUNNER=airflow``) starts the real
Airflow components (``demo.ui.Deployment``: ``api-server``, ``scheduler``,
``dag-processor``, ``triggerer``, LocalExecutor, metadata on the stack's PostgreSQL),
triggers the DAG through the REST API, answers people's questions through the same API
server, and shows progress while it waits (``demo.progress``); tasks run concurrently, as
in production, and the check tasks take their readings in the triggerer. ``dags-test``
(the default of ``make demo``, the CLI and ``run_soak``) replays the DAG with ``airflow
dags test``, one task at a time, in one process; the demo shows the same progress, read
from the store while it waits. It stays the
default because on 2 cores the real components' own load shares the CPU with the demo
app: a healthy soak in the test suite said NO-GO on a login p95 the machine had raised
(docs/demo.md, "Where the wall time goes").

Exit codes (the run's final ``decision`` event, never the judge's verdict alone):
0 GO (the run succeeded), 1 NO-GO (a breached criterion, or a rejected / unanswered
QA sign-off), 2 INCONCLUSIVE (rolled back or kept), 3 the run stopped before a decision
(or failed after it: the failing task's error is printed), 130 / 143 interrupted by
Ctrl-C / SIGTERM (every child stopped: Airflow, the API server, the app, PostgreSQL), 64
a bad argument (usage printed; nothing started). ``make demo`` itself exits 2 on anything but 0 (GNU make); its "Error N" line and the
demo's last line carry the demo's code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn

import requests
import sqlalchemy as sa

from demo import private_dir
from demo import workdir_lock
from demo.faults import SCENARIOS, Timeline, base_scenario
from demo.human import Approver, stop_tree
from demo.progress import DEFAULT_PHASES, SoakState, make_reporter, read_store, soak_state
from demo.slack_sink import SlackSink
from demo.stack import Stack, airflow_connections

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from migration_soak.clock import TIME_SCALE_MAX, check_time_scale  # noqa: E402
from migration_soak.notify import clock_caveat  # noqa: E402
from migration_soak.rollback import restored_count, restored_table  # noqa: E402
from migration_soak.store import Store  # noqa: E402

#: The demo's exit codes (see the module docstring); a bad argument exits ``EXIT_USAGE``
#: (sysexits' EX_USAGE), not argparse's 2, which would read as INCONCLUSIVE.
EXIT_GO, EXIT_NO_GO, EXIT_INCONCLUSIVE, EXIT_NO_DECISION, EXIT_USAGE = 0, 1, 2, 3, 64
EXIT_MEANING = {EXIT_GO: "GO", EXIT_NO_GO: "NO-GO", EXIT_INCONCLUSIVE: "INCONCLUSIVE",
                EXIT_NO_DECISION: "no final decision"}
SIGN_OFF_OPTIONS = {"approve": "Approve", "reject": "Reject"}
#: ``run_soak``'s runners: the real components, or ``airflow dags test``.
RUNNER_AIRFLOW, RUNNER_DAGS_TEST, RUNNER_CELERY = "airflow", "dags-test", "celery"
RUNNERS = (RUNNER_AIRFLOW, RUNNER_DAGS_TEST, RUNNER_CELERY)
#: The runners on the real components (``demo.ui.Deployment``) and their executor.
EXECUTOR_OF = {RUNNER_AIRFLOW: "local", RUNNER_CELERY: "celery"}
#: The ``airflow`` runner's LocalExecutor task slots: ~40 check tasks start at once when the
#: soak clock starts (each holds a slot only until it defers to the triggerer).
PARALLELISM = 12
#: Wall seconds from the end of the Hora 0 checklist to hour 0 (the run's ``clock_lead_s``),
#: per runner: the ~80 check tasks must be waiting in the triggerer before their first tick
#: (3 s after hour 0 at 300x). ``airflow dags test`` starts them one by one after the clock
#: anyway. LocalExecutor (tasks forked from a scheduler that pre-imported the DAG's modules,
#: demo/preload): the intensive tasks were all deferred 4.4 s after start_clock on 2 cores.
#: Celery: workers in their own namespaces parse cold; the trigger form's default, 10 s.
CLOCK_LEAD_S = {RUNNER_DAGS_TEST: 0.0, RUNNER_AIRFLOW: 8.0, RUNNER_CELERY: 10.0}
RUNNER_TEXT = {RUNNER_AIRFLOW: "scheduler, triggerer, LocalExecutor", RUNNER_DAGS_TEST: "airflow dags test",
               RUNNER_CELERY: "scheduler, triggerer, CeleryExecutor, 2 workers in their own network namespaces, "
                              "backups in S3"}


def dag_id_for(plan: str) -> str:
    """``migration_soak`` for the default plan, ``migration_soak__<name>`` for others: the
    same rule as ``migration_soak.airflow.builder.dag_id_for`` (not imported: that would
    import Airflow, and its configuration, into the demo's own process)."""
    return "migration_soak" if plan == "default" else f"migration_soak__{plan}"


# --- Ctrl-C / SIGTERM ----------------------------------------------------------------------

class Interrupted(BaseException):
    """Ctrl-C or SIGTERM reached the demo: everything it started is being stopped.
    A ``BaseException``, so no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_SIGNALS = {"signum": None, "raised": False, "shield": 0}


def _on_signal(signum, frame) -> None:
    """Raise ``Interrupted`` once, in the main thread, unless a cleanup is running (then
    the cleanup finishes first, and ``_shielded`` raises when it ends). Later signals are
    noted only: a second Ctrl-C never cuts a cleanup short."""
    if _SIGNALS["signum"] is None:
        _SIGNALS["signum"] = signum
        # said at once: stopping `airflow dags test` may take its 20 s SIGTERM grace, and a
        # demo that printed nothing for 15-35 s after Ctrl-C looked hung
        print(f"\ndemo: {signal.Signals(signum).name} received: stopping everything the demo started (up to "
              "about 30 s; a second Ctrl-C does not cut the cleanup short)...", file=sys.stderr, flush=True)
    if _SIGNALS["shield"] or _SIGNALS["raised"]:
        return
    _SIGNALS["raised"] = True
    raise Interrupted(signum)


@contextmanager
def _shielded():
    """A cleanup section a signal does not interrupt (it is raised at the end instead)."""
    _SIGNALS["shield"] += 1
    try:
        yield
    finally:
        _SIGNALS["shield"] -= 1
        if not _SIGNALS["shield"] and _SIGNALS["signum"] is not None and not _SIGNALS["raised"]:
            _SIGNALS["raised"] = True
            raise Interrupted(_SIGNALS["signum"])


def install_signal_handlers() -> None:
    """Turn Ctrl-C and SIGTERM into ``Interrupted`` (the CLI does; ``run_soak`` cleans up
    on any exception either way)."""
    _SIGNALS.update(signum=None, raised=False, shield=0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _run_child(args: list[str], **kwargs) -> int:
    """Run a command in its own session; on any exception (an interrupt) stop it and every
    process it forked before re-raising. Returns its exit code."""
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        return proc.wait()
    except BaseException:
        with _shielded():
            stop_tree(proc)
        raise


# --- the outcome -----------------------------------------------------------------------------

@dataclass
class SoakOutcome:
    """What one demo soak produced.

    ``run_id``: the Airflow run (also the store's run id); ``events``: the store's events
    of that run, the first of each kind; ``all_events``: all of them in order;
    ``decision``: the payload of the run's final ``decision`` event (``outcome``,
    ``action``, ``by``, ``reason``, ``text``) or ``None`` when the run stopped before
    deciding; ``run_state``: the DAG run's final state and ``task_states`` every task
    instance's (from the run's Airflow metadata database); ``task_errors``: ``(task_id,
    message)`` of each task that failed with an exception, in order (task_id ``None``: an
    error outside any task, e.g. a refused trigger form); ``exit_code``: of ``airflow dags
    test`` (the ``airflow`` runner: 0 when the run succeeded, else 1);
    ``exit_code_for_user``: the demo's (module docstring). ``runner``: ``airflow`` or
    ``dags-test``; ``soak_seconds``: wall seconds from the run's start (the trigger, or
    ``airflow dags test``'s start) to its end. The ``airflow`` runner also fills
    ``task_instances`` (the REST API's, with ``start_date`` / ``end_date``), ``timings``
    (wall seconds: ``stack_s``, ``airflow_s``, ``dags_s``) and ``progress`` (the last state
    shown); ``log_path`` is then the task logs' folder (the host's: the triggerer's part).
    The ``celery`` runner also fills ``log_dirs`` (the host's and each worker's task logs),
    ``workers`` (worker name -> its address, which task instances' ``hostname`` holds) and
    ``s3_objects`` (key -> sha256 of every object in the backup bucket at the end).
    ``observations``: the run's observations in the store (``migration_soak.store.Observation``).
    """

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
    dag_id: str = "migration_soak"
    decision: dict | None = None
    run_state: str | None = None
    task_states: dict[str, str | None] = field(default_factory=dict)
    task_errors: list[tuple[str | None, str]] = field(default_factory=list)
    sign_off_answer: tuple[str, str] | None = None
    runner: str = RUNNER_DAGS_TEST
    task_instances: list[dict] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    progress: SoakState | None = None
    log_dirs: list[Path] = field(default_factory=list)
    workers: dict[str, str] = field(default_factory=dict)
    s3_objects: dict[str, str] = field(default_factory=dict)
    observations: list = field(default_factory=list)

    @property
    def verdict(self) -> str | None:
        """The judge's verdict (``GO`` / ``NO_GO`` / ``INCONCLUSIVE``), before any person or
        policy: what the data showed, not what the run decided (see ``decision``)."""
        verdict = self.events.get("verdict")
        return verdict["payload"]["decision"] if verdict else None

    @property
    def exit_code_for_user(self) -> int:
        """0 GO (and the run succeeded), 1 NO-GO, 2 INCONCLUSIVE, 3 no final decision, or
        a GO whose run then failed (a GO must mean GO)."""
        if not self.decision:
            return EXIT_NO_DECISION
        outcome = self.decision.get("outcome")
        if outcome == "GO":
            succeeded = (self.run_state == "success" if self.run_state is not None
                         else self.exit_code == 0 and "report" in self.events)
            return EXIT_GO if succeeded and self.decision.get("action") == "proceed" else EXIT_NO_DECISION
        return {"NO_GO": EXIT_NO_GO, "INCONCLUSIVE": EXIT_INCONCLUSIVE}.get(outcome, EXIT_NO_DECISION)

    @property
    def failed_tasks(self) -> list[str]:
        return [tid for tid, state in self.task_states.items() if state == "failed"]


# --- Airflow -----------------------------------------------------------------------------------

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
    try:
        code = _run_child([_airflow(), "db", "migrate"], env={**os.environ, **airflow_env(home)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if code:
            raise subprocess.CalledProcessError(code, "airflow db migrate")
    except BaseException:  # half migrated: the next run starts over
        (home / "airflow.db").unlink(missing_ok=True)
        raise


def _metadata_url(env: dict[str, str], home: Path) -> str:
    return env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{home / 'airflow.db'}"


def _last_dag_run(url: str, dag_id: str) -> tuple[int, str, str | None] | None:
    """``(id, run_id, state)`` of the newest run of ``dag_id`` in the metadata database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT id, run_id, state FROM dag_run WHERE dag_id = :d ORDER BY id DESC "
                                       "LIMIT 1"), {"d": dag_id}).first()
        return tuple(row) if row else None
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def read_run_states(url: str, dag_id: str, run_id: str) -> tuple[str | None, dict[str, str | None]]:
    """The run's final state and every task instance's (``task_id``, or ``task_id[i]`` for
    a mapped one), from the Airflow metadata database ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            run_state = conn.execute(sa.text("SELECT state FROM dag_run WHERE dag_id = :d AND run_id = :r"),
                                     {"d": dag_id, "r": run_id}).scalar()
            rows = conn.execute(sa.text("SELECT task_id, map_index, state FROM task_instance "
                                        "WHERE dag_id = :d AND run_id = :r ORDER BY task_id, map_index"),
                                {"d": dag_id, "r": run_id}).all()
    finally:
        engine.dispose()
    return run_state, {(tid if idx is None or idx < 0 else f"{tid}[{idx}]"): state for tid, idx, state in rows}


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_STARTING = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*): (.*)$")


def _exception_message(block: list[str]) -> str | None:
    """The last ``module.Class: message`` line of a traceback block and its continuation
    lines (a multi-line message), with the class's module dropped."""
    for i in range(len(block) - 1, -1, -1):
        line = block[i]
        m = _EXCEPTION.match(line)
        if m and not line.startswith(("Traceback", "During handling", "The above exception")) and \
                re.search(r"(Error|Exception|Exit|Timeout|Interrupt|Failure)\w*$", m.group(1)):
            rest = []
            for more in block[i + 1:]:
                if not more.strip() or more.startswith((" ", "Traceback", "During handling", "The above exception")):
                    break
                rest.append(more)
            return "\n".join([f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2)}", *rest[:20]])
    return None


def task_errors(log_text: str) -> list[tuple[str | None, str]]:
    """``(task_id, error)`` for each task of an ``airflow dags test`` log that failed with an
    exception, in order; when none did, the log's last exception (task_id ``None``)."""
    lines = log_text.splitlines()
    errors: list[tuple[str | None, str]] = []
    current: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _STARTING.search(line)
        if m:
            current = m.group(1)
        if "Task failed with exception" in line:
            j = i + 1
            while j < len(lines) and not _TIMESTAMP.match(lines[j]):
                j += 1
            message = _exception_message(lines[i + 1:j])
            if message:
                errors.append((current, message))
            i = j
            continue
        i += 1
    if not errors:
        last = _exception_message([ln for ln in lines if not _TIMESTAMP.match(ln)])
        if last:
            errors.append((None, last))
    return errors


# --- the run ------------------------------------------------------------------------------------

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
                    if not stop.is_set():
                        timeline.run(hour0, time_scale)
                    return
                stop.wait(0.2)
        except Exception:  # the stack went away under us: nothing to play any more
            return
        finally:
            engine.dispose()

    threading.Thread(target=wait_then_run, name="fault-starter", daemon=True).start()
    return timeline


def run_soak(workdir: Path, scenario: str = "healthy", time_scale: float = 300.0, users: int = 100_000,
             plan: str = "default", fresh: bool = True, on_inconclusive: str = "rollback",
             human_choice: str | None = None, require_sign_off: bool = False, sign_off: str | None = None,
             sign_off_comment: str = "", plans_dir: Path | None = None, extra_conf: dict | None = None,
             serve_ui: bool = False, progress: Callable[[str], None] | None = None,
             runner: str = RUNNER_DAGS_TEST, watch: Callable[[SoakState], None] | None = None,
             poll_s: float = 1.0, parallelism: int = PARALLELISM,
             chaos: Callable[..., None] | None = None, pin_queues: dict[str, str] | None = None,
             worker_concurrency: int = 4) -> SoakOutcome:
    """Start the stack, run the DAG once, collect the outcome.

    ``runner``: ``dags-test`` (default) runs it with ``airflow dags test``; ``airflow``
    starts the real components and triggers it through the REST API (module doc).
    ``workdir`` holds the stack, the Airflow home and the run's log. ``fresh`` drops the
    previous staging data so the migration is pending again. ``scenario``: a key of
    ``demo.faults.SCENARIOS``. ``plan``: the plan's name (DAG ``dag_id_for(plan)``);
    ``plans_dir``: the plans folder (``MIGRATION_SOAK_PLANS_DIR`` of the run).
    ``on_inconclusive``: the run's param (an unattended demo rolls back); with
    ``human_choice`` ("GO" or "Roll back") the run asks and a person answers through a real
    ``airflow api-server``. ``require_sign_off``: the run param; ``sign_off`` ("approve" |
    "reject") answers the ``sign_off`` question through the same API server, with
    ``sign_off_comment``. ``extra_conf``: more run params (override the above).
    ``serve_ui``: start the API server even with nothing to answer (a person answers in the
    UI; ``progress`` is told its address). ``progress``: called with one line at each step.
    ``watch`` (``airflow`` runner): called every ``poll_s`` seconds while the run is
    active with its ``demo.progress.SoakState``, and once with the final one.
    ``parallelism`` (``airflow`` runner): the LocalExecutor's task slots.
    ``celery`` runner (``demo.celery_cluster``): ``worker_concurrency`` slots per worker,
    ``pin_queues`` (task id -> ``worker_<name>``) pins tasks to a worker, and ``chaos(deployment,
    run_id, stop)`` runs in a thread from the trigger to the run's end (``stop``: a
    ``threading.Event`` set then) to inject faults: kill a worker, restart Redis.

    Whatever happens (an exception, Ctrl-C), every process it started is stopped before it
    returns or raises: ``airflow dags test`` or the Airflow components and their task
    processes, the API server, the app, PostgreSQL.
    """
    if sign_off is not None and sign_off not in SIGN_OFF_OPTIONS:
        raise ValueError(f"sign_off must be one of {sorted(SIGN_OFF_OPTIONS)} or None, got {sign_off!r}")
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    say = progress or (lambda line: None)
    workdir = Path(workdir).resolve()
    dag_id = dag_id_for(plan)
    if human_choice is not None:
        on_inconclusive = "ask"
    conf = {"plan": plan, "environment": "staging", "time_scale": time_scale, "require_sign_off": require_sign_off,
            "on_inconclusive": on_inconclusive,
            "clock_lead_s": CLOCK_LEAD_S[runner], **(extra_conf or {})}
    answers: dict[str, tuple[str, dict | None]] = {}
    if human_choice is not None:
        answers["human_decision"] = (human_choice, None)
    if sign_off is not None:
        answers["sign_off"] = (SIGN_OFF_OPTIONS[sign_off], {"comment": sign_off_comment})
    if runner in EXECUTOR_OF:
        return _run_on_components(workdir, scenario, users, plan, dag_id, conf, answers, fresh=fresh,
                                  plans_dir=plans_dir, say=say, watch=watch, poll_s=poll_s, parallelism=parallelism,
                                  runner=runner, chaos=chaos, pin_queues=pin_queues,
                                  worker_concurrency=worker_concurrency)

    if fresh:
        shutil.rmtree(workdir / "stack", ignore_errors=True)
    home = workdir / "airflow"
    ensure_airflow_db(home)
    private_dir(home / "runtime")  # airflow_env's XDG_RUNTIME_DIR: platformdirs wants it 0700
    log_path = workdir / "airflow-run.log"

    stop = threading.Event()
    stack = Stack(workdir / "stack", scenario=base_scenario(scenario), users=users)
    sink = SlackSink()
    approver: Approver | None = None
    timeline: Timeline | None = None
    proc: subprocess.Popen | None = None
    sink.__enter__()
    try:
        info = stack.start()
        say(f"stack up ({users} users, scenario {scenario}); app log: {info['app_log']}")
        env = {**os.environ, **airflow_env(home), **airflow_connections(info),
               "AIRFLOW_CONN_SOAK_SLACK": sink.airflow_connection(),
               "SOAK_APP_LOG": info["app_log"], "SOAK_DB_LOG": info["db_log"],
               "PATH": os.pathsep.join([info["pg_bin_dir"], os.environ.get("PATH", "")])}
        if plans_dir is not None:
            env["MIGRATION_SOAK_PLANS_DIR"] = str(Path(plans_dir).resolve())
        metadata = _metadata_url(env, home)
        before = _last_dag_run(metadata, dag_id)
        timeline = _start_faults_at_hour0(info, scenario, float(conf["time_scale"]), stop)
        if answers or serve_ui:
            approver = Approver(env, dag_id, answers=answers, log_path=workdir / "api-server.log").__enter__()
            say(f"airflow api-server at {approver.url} (Required actions); its log: {workdir / 'api-server.log'}")
        began = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.Popen([_airflow(), "dags", "test", dag_id, "--conf", json.dumps(conf)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
            say(f"airflow dags test {dag_id} running (pid {proc.pid}); log: {log_path}")
            if watch is None:
                returncode = proc.wait()
            else:
                returncode, last_state = _wait_watching(proc, metadata, dag_id, before, info,
                                                        float(conf["time_scale"]), plan_phases(plan, plans_dir),
                                                        watch, poll_s)
        soak_seconds = time.monotonic() - began
        with _shielded():
            stop.set()
            if timeline:
                timeline.stop()
            if approver:
                approver.close()
            stop_tree(proc)  # anything it left behind
        outcome = SoakOutcome(run_id=None, soak_seconds=soak_seconds, log_path=log_path, stack_info=info,
                              exit_code=returncode, dag_id=dag_id,
                              human_answer=approver.answers_given.get("human_decision") if approver else None,
                              sign_off_answer=approver.answers_given.get("sign_off") if approver else None,
                              human_error=approver.error if approver else None,
                              progress=last_state if watch is not None else None)
        last = _last_dag_run(metadata, dag_id)
        if last and (before is None or last[0] > before[0]):
            outcome.run_id = last[1]
            try:
                outcome.run_state, outcome.task_states = read_run_states(metadata, dag_id, last[1])
            except sa.exc.SQLAlchemyError:
                outcome.run_state = last[2]
        outcome.task_errors = task_errors(log_path.read_text(errors="replace"))
        _read_outcome_from_store(outcome, info, newest_if_unknown=last is None)
        outcome.slack = list(sink.messages)
        outcome.login_status_after = _login_status(info)
        return outcome
    finally:
        with _shielded():
            stop.set()
            if proc is not None:
                stop_tree(proc)
            if approver is not None:
                approver.close()
            if timeline is not None:
                timeline.stop()
            stack.stop()
            sink.__exit__(None, None, None)


def _wait_watching(proc: subprocess.Popen, metadata: str, dag_id: str, before: tuple | None, info: dict,
                   time_scale: float, phases: list[tuple[str, float, float]], watch: Callable[[SoakState], None],
                   poll_s: float) -> tuple[int, SoakState | None]:
    """Wait for ``airflow dags test`` (``proc``) while showing its run's progress: every
    ``poll_s`` seconds, ``watch`` gets the state read from the store, once the run
    (newer than ``before`` in the metadata database ``metadata``) exists. Returns the exit
    status and the last state shown (``None`` if none was)."""
    engine = _store_engine(info)
    run_id: str | None = None
    state: SoakState | None = None
    try:
        while True:
            returncode = proc.poll()
            if run_id is None:
                last = _last_dag_run(metadata, dag_id)
                if last and (before is None or last[0] > before[0]):
                    run_id = last[1]
            if run_id is not None:
                try:
                    events, counts = read_store(engine, run_id)
                except sa.exc.OperationalError:  # the store did not answer this time: show it next time
                    events = None
                if events is not None:
                    final = _last_dag_run(metadata, dag_id) if returncode is not None else None
                    run_state = final[2] if final and final[1] == run_id else None
                    state = soak_state(events, counts, datetime.now(timezone.utc), time_scale, phases, run_state)
                    watch(state)
            if returncode is not None:
                return returncode, state
            time.sleep(poll_s)
    finally:
        engine.dispose()


def _read_outcome_from_store(outcome: SoakOutcome, info: dict, newest_if_unknown: bool = False) -> None:
    """Fill ``outcome``'s events and decision from the store (``run_id``: the newest
    run's there when unknown and ``newest_if_unknown``)."""
    engine = _store_engine(info)
    try:
        store = Store(engine)
        if outcome.run_id is None and newest_if_unknown:  # the metadata DB could not be read
            with engine.connect() as conn:
                outcome.run_id = conn.execute(sa.text(
                    "SELECT run_id FROM soak_events ORDER BY id DESC LIMIT 1")).scalar()
        if outcome.run_id:
            outcome.all_events = store.events(outcome.run_id)
            outcome.observations = store.observations(outcome.run_id)
            outcome.events = {e["kind"]: e for e in reversed(outcome.all_events)}  # the first of each kind
            decisions = [e for e in outcome.all_events if e["kind"] == "decision"]
            outcome.decision = decisions[-1]["payload"] if decisions else None
    except sa.exc.ProgrammingError:  # the run failed before it created the store's tables
        pass
    finally:
        engine.dispose()


def _login_status(info: dict) -> int | None:
    """HTTP status of a login on the staging app now (``None``: no answer)."""
    try:
        return requests.post(info["gateway_url"] + "/auth/login", json={"email": "user1@example.test"},
                             timeout=10).status_code
    except requests.RequestException:
        return None


# --- the real components ------------------------------------------------------------------------

def plan_phases(plan: str, plans_dir: Path | None = None) -> list[tuple[str, float, float]]:
    """(name, start hour, end hour) of the plan's soak phases, for the progress display;
    the default plan's when the plan does not load (the run then says why)."""
    from migration_soak.plan import load_plan

    try:
        loaded = load_plan(str(Path(plans_dir or ROOT / "include" / "plans").resolve() / f"{plan}.yaml"))
        return [(p.name, float(p.start_hour), float(p.end_hour)) for p in loaded.phases]
    except Exception:  # a broken plan: the run fails and says why; the display keeps a shape
        return list(DEFAULT_PHASES)


def _map_index(ti: dict) -> int:
    index = ti.get("map_index")
    return -1 if index is None else int(index)


def logged_task_errors(log_dirs: Path | list[Path], dag_id: str, run_id: str,
                       task_instances: list[dict]) -> list[tuple[str | None, str]]:
    """``(task_id, "Class: message")`` of each failed task instance, in the order they
    ended, from the exception in its last try's log (``<log_dir>/dag_id=…/run_id=…/
    task_id=…/attempt=N.log``, JSON lines, in the first of ``log_dirs`` that has it: each
    Celery worker keeps its own); a failed task without one is left out."""
    errors = []
    dirs = [log_dirs] if isinstance(log_dirs, Path) else list(log_dirs)
    failed = [ti for ti in task_instances if ti.get("state") == "failed"]
    for ti in sorted(failed, key=lambda ti: ti.get("end_date") or ""):
        lines = None
        for log_dir in dirs:
            folder = log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
            if _map_index(ti) >= 0:
                folder = folder / f"map_index={ti['map_index']}"
            path = folder / f"attempt={ti.get('try_number') or 1}.log"
            try:
                lines = path.read_text(errors="replace").splitlines()
                break
            except OSError:
                continue
        if lines is None:
            continue
        message = None
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == "Task failed with exception" and \
                    entry.get("error_detail"):
                exc = entry["error_detail"][0]  # the exception raised; causes follow it
                message = f"{str(exc.get('exc_type', 'Exception')).rsplit('.', 1)[-1]}: {exc.get('exc_value', '')}"
        if message:
            errors.append((ti["task_id"], message))
    return errors


def all_task_instances(af, dag_id: str, run_id: str, page: int = 100) -> list[dict]:
    """Every task instance of the run from the REST API, page by page (the API server
    returns at most ``api.maximum_page_limit``, 100, per request)."""
    found: list[dict] = []
    while True:
        body = af.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                      params={"limit": page, "offset": len(found), "order_by": "id"}).json()
        rows = body.get("task_instances", [])
        found.extend(rows)
        if not rows or len(found) >= body.get("total_entries", 0):
            return found


def _refusal(exc: requests.HTTPError) -> str:
    """What the API server said when it refused a trigger (its ``detail``)."""
    resp = exc.response
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text if resp is not None else str(exc)
    return f"the trigger was refused: HTTP {resp.status_code if resp is not None else '?'}: {detail}"


def _run_on_components(workdir: Path, scenario: str, users: int, plan: str, dag_id: str, conf: dict,
                       answers: dict[str, tuple[str, dict | None]], *, fresh: bool, plans_dir: Path | None,
                       say: Callable[[str], None], watch: Callable[[SoakState], None] | None,
                       poll_s: float, parallelism: int, runner: str = RUNNER_AIRFLOW,
                       chaos: Callable[..., None] | None = None, pin_queues: dict[str, str] | None = None,
                       worker_concurrency: int = 4) -> SoakOutcome:
    """``run_soak`` with the real components (``runner="airflow"`` or ``"celery"``)."""
    from demo.airflow_local import FINISHED
    from demo.ui import S3_BUCKET, USERNAME, Deployment

    time_scale = float(conf["time_scale"])
    stop = threading.Event()
    deployment = Deployment(workdir, users=users, scenario=base_scenario(scenario), plans_dir=plans_dir,
                            unpause=[dag_id], fresh=fresh, parallelism=parallelism,
                            say=lambda line: None if line.startswith("slack: ") else say(line),
                            executor=EXECUTOR_OF[runner], pin_queues=pin_queues, worker_concurrency=worker_concurrency)
    approver: Approver | None = None
    timeline: Timeline | None = None
    engine: sa.Engine | None = None
    chaos_thread: threading.Thread | None = None
    try:
        deployment.__enter__()
        af, info, t = deployment.airflow, deployment.info, deployment.timings
        workers = {name: w.address for name, w in deployment.workers.items()}
        say(f"stack up in {t['stack_s']:.0f} s; Airflow up in {t['airflow_s'] + t['dags_s']:.0f} s: api-server "
            f"{af.base} (login {USERNAME}, password in {af.passwords_file}), scheduler, dag-processor, "
            f"triggerer, " + (f"CeleryExecutor, workers {workers} (network namespaces), Redis {deployment.redis.url}"
                              if workers else "LocalExecutor") + f"; logs: {af.log_dir}")
        outcome = SoakOutcome(run_id=None, runner=runner, log_path=af.home / "logs", stack_info=info,
                              dag_id=dag_id, exit_code=1, timings=dict(t), log_dirs=deployment.log_dirs(),
                              workers=workers)
        timeline = _start_faults_at_hour0(info, scenario, time_scale, stop)
        if answers:
            approver = Approver({}, dag_id, answers=answers, server=af).__enter__()
        began = time.monotonic()
        try:
            outcome.run_id = af.trigger(dag_id, conf)
        except requests.HTTPError as exc:
            outcome.task_errors = [(None, _refusal(exc))]
        if outcome.run_id:
            say(f"triggered {dag_id} through the REST API: run {outcome.run_id}")
            if chaos is not None:
                chaos_thread = threading.Thread(target=chaos, args=(deployment, outcome.run_id, stop),
                                                name="chaos", daemon=True)
                chaos_thread.start()
            engine = _store_engine(info)
            phases = plan_phases(plan, plans_dir)
            run: dict = {}
            checked = 0.0
            while True:
                if time.monotonic() - checked >= 2:
                    checked = time.monotonic()
                    dead = deployment.dead_components()
                    if dead:
                        raise RuntimeError(f"{', '.join(dead)} exited during the run; see {af.log_dir}")
                try:  # every poll: the soak wall time ends when the run does, not up to 2 s later
                    run = af.run(dag_id, outcome.run_id)
                except requests.RequestException:  # a busy API server: ask again next time
                    pass
                finished = run.get("state") in FINISHED
                if watch is not None or finished:
                    try:
                        events, counts = read_store(engine, outcome.run_id)
                    except sa.exc.OperationalError:  # the store did not answer this time: show it next time
                        events = None
                    if events is not None:
                        outcome.progress = soak_state(events, counts, datetime.now(timezone.utc), time_scale,
                                                      phases, run.get("state"))
                        if watch is not None:
                            watch(outcome.progress)
                if finished:
                    break
                time.sleep(poll_s)
            outcome.soak_seconds = time.monotonic() - began
            outcome.run_state = run["state"]
            outcome.exit_code = 0 if run["state"] == "success" else 1
            outcome.task_instances = all_task_instances(af, dag_id, outcome.run_id)
            outcome.task_states = {(ti["task_id"] if _map_index(ti) < 0 else f"{ti['task_id']}[{ti['map_index']}]"):
                                   ti["state"] for ti in outcome.task_instances}
            outcome.task_errors = logged_task_errors(deployment.log_dirs(), dag_id, outcome.run_id,
                                                     outcome.task_instances)
        else:
            outcome.soak_seconds = time.monotonic() - began
        with _shielded():
            stop.set()
            if timeline:
                timeline.stop()
            if approver:
                approver.close()
            if chaos_thread is not None:
                chaos_thread.join(timeout=60)
        if deployment.s3 is not None:
            outcome.s3_objects = deployment.s3.sha256_of_objects(S3_BUCKET)
        if approver:
            outcome.human_answer = approver.answers_given.get("human_decision")
            outcome.sign_off_answer = approver.answers_given.get("sign_off")
            outcome.human_error = approver.error
        _read_outcome_from_store(outcome, info)
        outcome.slack = list(deployment.slack)
        outcome.login_status_after = _login_status(info)
        return outcome
    finally:
        with _shielded():
            stop.set()
            if engine is not None:
                engine.dispose()
            if approver is not None:
                approver.close()
            if timeline is not None:
                timeline.stop()
            deployment.close()


# --- what the demo prints ---------------------------------------------------------------------------

def _shown(outcome: str | None) -> str:
    return (outcome or "none").replace("NO_GO", "NO-GO")


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word and marked."""
    line = text.replace("\n", " | ")
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return f"{cut} ... ({len(line) - len(cut)} more characters: see the report)"


def summary(outcome: SoakOutcome, clock: str = "") -> list[str]:
    """The lines the demo prints. ``clock``: ``notify.clock_caveat`` of the run's clock ("" in
    real time), said on a GO's first line: a compressed GO is demonstration evidence, and the
    NO-GO criteria it could not judge on that clock are named there too, as Slack and the
    report name them."""
    ev = outcome.events
    lines: list[str] = []
    code = outcome.exit_code_for_user
    decision, verdict = outcome.decision, outcome.verdict
    reasons = "; ".join(ev["verdict"]["payload"]["reasons"]) if "verdict" in ev else ""
    if decision is None:
        lines.append("verdict: none: the run stopped before its final decision"
                     + (f" (the judge's verdict was {_shown(verdict)}; nothing was decided on it)" if verdict else ""))
    elif code == EXIT_NO_DECISION:  # GO was decided, but the run did not succeed: not a GO
        lines.append(f"verdict: none: GO was decided ({decision.get('reason')}), but the run then failed "
                     f"(state {outcome.run_state}); this is not a GO")
    else:
        by_judge = decision.get("by") == "judge" and verdict == decision.get("outcome")
        detail = (reasons if decision.get("outcome") != "GO" else "") if by_judge else decision.get("reason", "")
        judged = decision.get("verdict") or verdict  # the judge's verdict the decision started from
        person = decision.get("overridden_by") or (
            str(decision.get("by", "")).removeprefix("person:")
            if str(decision.get("by", "")).startswith("person:") and judged not in (None, "", "GO") else "")
        if decision.get("outcome") == "GO" and person:
            # a person's GO over the judge's verdict is a decision, never "verdict: GO" (as on
            # Slack: notify.decision_text); the judge's own verdict follows on its line
            lines.append(f"decision: GO by {person} over the judge's {_shown(judged)} verdict{clock}"
                         + (f" ({detail})" if detail else ""))
        elif decision.get("outcome") == "GO":
            # what the GO did not judge or watch, as Slack says it: the NO-GO criteria this clock
            # could not judge, criteria met on readings that left hours unread, what the guard missed
            unjudged = [r for r in (ev["verdict"]["payload"]["reasons"] if "verdict" in ev else [])
                        if r.startswith(("not judged", "read in part", "the guard missed")) and r not in detail]
            detail = "; ".join(([detail] if detail else []) + unjudged)
            lines.append(f"verdict: GO{clock}" + (f": {detail}" if detail else ""))  # as Slack words it
        else:
            lines.append(f"verdict: {_shown(decision.get('outcome'))}" + (f" ({detail})" if detail else ""))
    if decision is not None and verdict and not (decision.get("by") == "judge" and verdict == decision.get("outcome")):
        lines.append(f"judge's verdict: {_shown(verdict)}" + (f" ({reasons})" if verdict != "GO" and reasons else ""))
    if decision is not None:
        lines.append(f"decision: {decision.get('action')}, decided by {decision.get('by')}")
    if "no_go" in ev:
        lines.append(f"deciding criterion: {ev['no_go']['payload']['criterion']} (the soak stopped there)")
    elif "sign_off" in ev and ev["sign_off"]["payload"].get("state") != "approved":
        lines.append(f"deciding criterion: the QA sign-off ({ev['sign_off']['payload'].get('state')}), "
                     "a GO criterion of the runbook")
    if "human_decision" in ev:
        lines.append(f"human decision: {ev['human_decision']['payload']['text']}")
    if "sign_off" in ev:
        lines.append(f"sign-off: {ev['sign_off']['payload']['text']}")
    for e in outcome.all_events:
        if e["kind"] == "lint":  # the summary line; the report lists each finding and why it is accepted
            lines.append(f"lint: {e['payload']['text'].splitlines()[0]}")
        elif e["kind"] in ("alert", "prisma_status"):
            lines.append(f"{e['kind'].replace('_', ' ')}: {e['payload']['text']}")
        elif e["kind"] == "backup":
            lines.append(f"backup: {e['payload']['text']}")
        elif e["kind"] in ("rehearsal", "rehearsal_failed"):  # before the migration (docs/rehearsal.md)
            step = f"failed at {e['payload'].get('step')}: " if e["kind"] == "rehearsal_failed" else ""
            lines.append(f"rehearsal: {step}{e['payload']['text']}")
    if "report" in ev:
        lines.append(f"report: {ev['report']['payload']['path']}")
    if "restore" in ev:
        r = ev["restore"]["payload"]
        status = "completed" if "rollback_completed" in ev else "INCOMPLETE"
        lines.append(f"rollback: {status}")
        matched, table = restored_count(r, "rows_matched"), restored_table(r)
        lines.append(f"restored: {r['values_restored']} values in {matched} rows of {table}; "
                     f"{matched}/{restored_count(r, 'rows_at_backup')} rows of {table} present at backup time match, "
                     f"{r['mismatches']} mismatches")
        if "rollback_completed" in ev:
            lines.append(f"post-mortem: {ev['rollback_completed']['payload']['post_mortem']}")
        if "health" in ev:  # step 5, with what decided the NO-GO read again (runbook.read_again_text)
            lines.append("post-rollback health: " + str(ev["health"]["payload"].get("text", ""))
                         .removeprefix("post-rollback health "))
        lines.append(f"/auth/login after rollback: HTTP {outcome.login_status_after}")
    elif "rollback_started" in ev:
        lines.append("rollback: INCOMPLETE (started, nothing restored)")
    real = outcome.runner in EXECUTOR_OF
    if code == EXIT_NO_DECISION:
        if outcome.task_errors:
            task_id, message = outcome.task_errors[0]
            if task_id or not real:
                where = f"task {task_id} failed" if task_id else "airflow dags test failed"
                lines.append(f"error: {where}: {_one_line(message, 1000)}")
            else:  # the real runner's own error: a refused trigger
                lines.append(f"error: {_one_line(message, 1000)}")
        elif real:
            lines.append(f"error: the run ended {outcome.run_state or 'unknown'}; see the task logs in "
                         f"{outcome.log_path}")
        else:
            lines.append(f"error: airflow dags test exited {outcome.exit_code}; see {outcome.log_path}")
        if outcome.failed_tasks:
            lines.append(f"failed tasks: {', '.join(outcome.failed_tasks)}")
    if outcome.human_error:
        lines.append(f"api-server answer: {outcome.human_error}")
    if real:
        lines.append(f"soak wall time: {outcome.soak_seconds:.0f} s (real components: {RUNNER_TEXT[outcome.runner]}; "
                     f"trigger to end of run); task logs: {outcome.log_path}")
    else:
        lines.append(f"soak wall time: {outcome.soak_seconds:.0f} s (airflow dags test); log: {outcome.log_path}")
    for text in outcome.slack:
        lines.append("slack: " + _one_line(text, 600))  # the verdict's message whole: it says what a GO did not judge
    lines.append(f"exit: {code} ({EXIT_MEANING[code]}; run {outcome.run_id or 'not created'}, "
                 f"state {outcome.run_state or 'unknown'})")
    return lines


def _time_scale(text: str) -> float:
    """argparse type: the soak clock's speed-up, in the demo's range [1, TIME_SCALE_MAX]
    (the DAG's own check, ``clock.check_time_scale``, then at least 1: below 1 stretches the
    plan's soak beyond real time; a value such as 1e-9 started the whole stack for a run
    ``load`` then refused). The error names the demo's range, not the DAG's (0, 100000]:
    that range invited 0.5, then refused it, and said "past 24 h" whatever ``--plan``'s soak."""
    try:
        scale = check_time_scale(float(text))
    except ValueError:
        scale = None
    if scale is None or scale < 1:
        got = f"{scale:g}, which stretches the plan's soak beyond real time" if scale is not None else repr(text)
        raise argparse.ArgumentTypeError(f"time_scale must be a number in [1, {TIME_SCALE_MAX}] for the demo (1 is "
                                         f"real time, 300 runs a 24 h soak in 4.8 min), got {got}")
    return scale


def _at_least_1(name: str) -> Callable[[str], int]:
    """argparse type: a whole number of ``name``, at least 1 (the error names both)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be at least 1, got {value}")
        return value
    return parse


#: How many users to seed; the airflow runner's LocalExecutor task slots.
_users, _parallelism = _at_least_1("users"), _at_least_1("parallelism")


def _known_plan(parser: argparse.ArgumentParser, plan: str, plans_dir: str | None):
    """``--plan`` names a plan file that loads (else exit 64 with the plan's own error:
    the unknown name and the known ones, or the broken file's field and value); returns it."""
    from migration_soak.exceptions import PlanError
    from migration_soak.plan import load_plan

    folder = Path(plans_dir) if plans_dir else None
    try:
        return load_plan(str(folder / f"{plan}.yaml") if folder else plan)
    except PlanError as exc:
        parser.error(f"--plan {plan!r}: {exc}")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m demo.run", description=__doc__.splitlines()[0],
                     epilog="exit: 0 GO, 1 NO-GO, 2 INCONCLUSIVE, 3 no final decision "
                            "(the failing task's error is printed), 64 a bad argument, 130/143 interrupted")
    parser.add_argument("--scenario", default="healthy", choices=sorted(SCENARIOS))
    parser.add_argument("--on-inconclusive", choices=["rollback", "go"],
                        help="what the unattended demo does with an INCONCLUSIVE verdict (default rollback)")
    parser.add_argument("--human-choice", choices=["GO", "Roll back"],
                        help="ask in the UI on INCONCLUSIVE and answer through the API server")
    parser.add_argument("--require-sign-off", action="store_true",
                        help="the run param require_sign_off: a GO needs the QA sign-off (without --sign-off, "
                             "answer it yourself in the UI of the API server the demo starts)")
    parser.add_argument("--sign-off", choices=sorted(SIGN_OFF_OPTIONS),
                        help="answer the sign-off question through the API server (implies --require-sign-off)")
    parser.add_argument("--sign-off-comment", help="the sign-off's comment (default: 'demo: approved' / "
                                                   "'demo: rejected on purpose')")
    parser.add_argument("--time-scale", type=_time_scale, default=300.0,
                        help=f"soak clock speed-up in [1, {TIME_SCALE_MAX}] (300: 24 h in 4.8 min)")
    parser.add_argument("--users", type=_users, default=100_000)
    parser.add_argument("--plan", default="default", help="plan name (DAG migration_soak[__<plan>])")
    parser.add_argument("--plans-dir", help="plans folder (MIGRATION_SOAK_PLANS_DIR; default include/plans)")
    parser.add_argument("--workdir", default=str(ROOT / ".state" / "demo"))
    parser.add_argument("--runner", default=RUNNER_DAGS_TEST, choices=RUNNERS,
                        help="airflow: the real components (api-server, scheduler, dag-processor, triggerer, "
                             "LocalExecutor), triggered through the REST API, with progress; dags-test: "
                             "`airflow dags test`, one task at a time; celery: the real components with the "
                             "CeleryExecutor, 2 workers in their own network namespaces, backups in S3 "
                             "(demo/celery_cluster.py; root)")
    parser.add_argument("--parallelism", type=_parallelism, default=PARALLELISM,
                        help=f"the airflow runner's LocalExecutor task slots (default {PARALLELISM})")
    args = parser.parse_args(argv)
    loaded = _known_plan(parser, args.plan, args.plans_dir)  # before anything starts: seeding takes a minute
    # flags the run would drop without a word: the comment of an answer the demo does not
    # give, an unattended policy for a question it asks
    if args.sign_off_comment is not None and args.sign_off is None:
        parser.error("--sign-off-comment needs --sign-off approve|reject: without it you answer the sign-off in the "
                     "UI, with your own comment")
    if args.on_inconclusive is not None and args.human_choice is not None:
        parser.error(f"--on-inconclusive {args.on_inconclusive}: with --human-choice the run asks on INCONCLUSIVE "
                     "(on_inconclusive ask) and answers it; give one of the two")
    if args.on_inconclusive is None:
        args.on_inconclusive = "rollback"
    require_sign_off = args.require_sign_off or args.sign_off is not None
    comment = args.sign_off_comment
    if comment is None and args.sign_off:
        comment = "demo: approved" if args.sign_off == "approve" else "demo: rejected on purpose"

    held = ExitStack()  # the working folder, until the demo ends (demo/workdir_lock.py)
    try:
        held.enter_context(workdir_lock.hold(args.workdir))
    except workdir_lock.WorkdirBusy as exc:
        parser.error(str(exc))
    install_signal_handlers()
    real = args.runner in EXECUTOR_OF
    reporter = make_reporter()
    say = reporter.say
    try:
        print(f"demo: scenario {args.scenario}, time_scale {args.time_scale:g}, {args.users} users"
              + (f", sign-off required ({args.sign_off or 'answer it in the UI'})" if require_sign_off else "")
              + f"; running the DAG on {RUNNER_TEXT[args.runner]} (about {24 * 3600 / args.time_scale / 60:.0f} min "
                "of soak)...", flush=True)
        outcome = run_soak(Path(args.workdir), args.scenario, args.time_scale, args.users, plan=args.plan,
                           on_inconclusive=args.on_inconclusive, human_choice=args.human_choice,
                           require_sign_off=require_sign_off, sign_off=args.sign_off, sign_off_comment=comment or "",
                           plans_dir=Path(args.plans_dir) if args.plans_dir else None,
                           serve_ui=require_sign_off and args.sign_off is None, progress=say, runner=args.runner,
                           watch=reporter.update, parallelism=args.parallelism)
        with _shielded():
            reporter.close()
            for line in summary(outcome, clock=clock_caveat(loaded, args.time_scale)):
                print(line)
            sys.stdout.flush()
        return outcome.exit_code_for_user
    except Interrupted as exc:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        reporter.close(final=False)
        started = "the Airflow components and their tasks" if real else "airflow dags test, the api-server"
        print(f"demo: interrupted by {exc}; no verdict. Stopped everything it had started ({started}, "
              "the app, PostgreSQL)", flush=True)
        return 128 + exc.signum
    finally:  # the process ends now: a late Ctrl-C must not print a traceback
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        held.close()

if __name__ == "__main__":
    sys.exit(main())
