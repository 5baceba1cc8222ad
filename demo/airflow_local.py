"""Real Airflow 3.3 components as local subprocesses, for fault tests and demos.

``airflow dags test`` runs a DAG in one process; what a scheduler outage does to a soak
needs the real thing: ``airflow scheduler``, ``triggerer``, ``dag-processor`` and
``api-server`` (which also serves the Execution API the LocalExecutor's task processes
talk to), each its own process with its log under ``<home>/component-logs/``::

    with AirflowLocal(home, env, sql_alchemy_conn=postgres_metadata_url(info)) as af:
        af.wait_for_dag("migration_soak__restart")
        af.unpause("migration_soak__restart")
        run_id = af.trigger("migration_soak__restart", {"time_scale": 45})
        af.kill("scheduler"); af.start("scheduler")
        af.wait_for_run(dag_id, run_id)

The metadata database: SQLite (``airflow standalone``'s default) takes one writer at a
time, and four components plus task processes write to it; give a PostgreSQL URL
(``postgres_metadata_url`` creates a database on the demo stack's embedded server)
for anything that runs more than one component. Each component runs in its own process
group: ``kill`` sends SIGKILL to the whole group (the component and the processes it
forked, like a crashed container), ``stop`` sends SIGTERM and waits.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

import requests

from demo import private_dir

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")
FINISHED = {"success", "failed"}


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_metadata_url(db: dict, database: str = "airflow_meta") -> str:
    """Create ``database`` (if missing) on the server of ``db`` (a stack info entry:
    host, port, user, password) and return its SQLAlchemy URL. The URL holds the
    password: pass it in an environment, never print it."""
    import psycopg2

    conn = psycopg2.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                            dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{database}"')
    finally:
        conn.close()
    from urllib.parse import quote

    return (f"postgresql+psycopg2://{quote(db['user'], safe='')}:{quote(db['password'], safe='')}"
            f"@{db['host']}:{db['port']}/{database}")


class AirflowLocal:
    """Airflow components of one project-local ``AIRFLOW_HOME``.

    ``env``: extra environment for every component (connections, ``PATH``, plan folder).
    ``sql_alchemy_conn``: the metadata database (default: SQLite in ``home``).
    ``components``: started on ``__enter__`` (after ``airflow db migrate``).
    ``host``: the API server's address (127.0.0.1; the Celery cluster gives the host's
    address on its workers' network, ``demo.celery_cluster``), also in ``base`` and the
    Execution API URL the task processes call.
    ``nice``: every component (and the task processes it forks) runs at that niceness
    (``nice -n``; 0: as this process).
    ``timings`` records seconds: ``db_migrate_s``, ``<component>_start_s`` (process start
    to ready, where readiness is observable: the API server answering).
    """

    def __init__(self, home: Path | str, env: dict[str, str] | None = None, sql_alchemy_conn: str | None = None,
                 components: Iterable[str] = COMPONENTS, parallelism: int = 4, port: int | None = None,
                 host: str = "127.0.0.1", nice: int = 0):
        self.home = Path(home).resolve()
        self.nice = nice
        self.host = host
        self.port = port or _free_port()
        self.base = f"http://{host}:{self.port}"
        self.components = tuple(components)
        self.log_dir = self.home / "component-logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.timings: dict[str, float] = {}
        self._token: str | None = None
        self._starts: dict[str, int] = {}
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            # Every component signs and checks the task processes' tokens with one secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
            # An idle loop sleeps 1 s by default; each of the ~20 tasks that run one after
            # another around the soak clock waited up to that long to be queued.
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
            # demo/preload: the harness's airflow_local_settings.py (the DAG's modules
            # pre-imported before tasks fork; the Celery queue pins): its doc
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT), str(ROOT / "demo" / "preload")]),
            "XDG_RUNTIME_DIR": str(self.home / "runtime"),
            **(env or {}),
        }
        if sql_alchemy_conn:
            self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = sql_alchemy_conn

    # --- lifecycle -------------------------------------------------------------------
    def __enter__(self) -> "AirflowLocal":
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        private_dir(self.home / "runtime")  # XDG_RUNTIME_DIR: platformdirs wants it 0700
        try:
            self.migrate_db()
            for name in self.components:
                self.start(name)
            if "api-server" in self.components:
                self.wait_for_api()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop every component still running (SIGTERM, then SIGKILL of its group)."""
        for name in list(self.procs):
            self.stop(name)

    def migrate_db(self) -> None:
        """``airflow db migrate`` (output in ``component-logs/db-migrate.log``)."""
        began = time.monotonic()
        with open(self.log_dir / "db-migrate.log", "w") as log:
            subprocess.run([_airflow(), "db", "migrate"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                           check=True, cwd=ROOT, timeout=600)
        self.timings["db_migrate_s"] = time.monotonic() - began

    def start(self, name: str) -> subprocess.Popen:
        """Start ``airflow <name>`` in its own process group; its log is appended to
        ``component-logs/<name>.log`` (restarts are separated by a marker line)."""
        if name not in COMPONENTS:
            raise ValueError(f"unknown component {name!r}; one of {COMPONENTS}")
        if self.running(name):
            raise RuntimeError(f"{name} is already running (pid {self.procs[name].pid})")
        self._starts[name] = self._starts.get(name, 0) + 1
        log = open(self.log_dir / f"{name}.log", "a")
        log.write(f"\n===== start {self._starts[name]} of {name} at {time.strftime('%H:%M:%S')} =====\n")
        log.flush()
        args = [_airflow(), name]
        if name == "api-server":
            args += ["--host", self.host, "--port", str(self.port)]
        if self.nice:  # the component and what it forks run below the staging stack (``nice``)
            args = ["nice", "-n", str(self.nice), *args]
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                            start_new_session=True)
        log.close()
        return self.procs[name]

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str) -> None:
        """SIGKILL the component and every process of its group (a crash: no cleanup)."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self, name: str, timeout: float = 30) -> None:
        """SIGTERM the component (a clean shutdown), SIGKILL its group after ``timeout``."""
        proc = self.procs.get(name)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
        self.kill(name)

    def log_text(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- REST API --------------------------------------------------------------------
    def wait_for_api(self, timeout: float = 180) -> None:
        """Wait until the API server hands out a token (simple auth manager, all admins)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if not self.running("api-server"):
                raise RuntimeError("the API server exited; see " + str(self.log_dir / "api-server.log"))
            try:
                r = self.request_token()
                if r.ok:
                    self._token = r.json()["access_token"]
                    # The Execution API (Cadwyn) builds its versioned routes on its first
                    # request, ~4 s on 2 cores: take that here, not in the run's first task.
                    requests.get(f"{self.base}/execution/health", timeout=60)
                    self.timings["api_server_ready_s"] = time.monotonic() - began
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the API server did not answer within {timeout:g} s")

    def request_token(self) -> requests.Response:
        """One ``/auth/token`` request (all admins: no credentials needed)."""
        return requests.get(f"{self.base}/auth/token", timeout=5)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A call on ``/api/v2`` + ``path``, authenticated; raises on HTTP errors."""
        if self._token is None:
            self.wait_for_api()
        r = requests.request(method, f"{self.base}/api/v2{path}",
                             headers={"Authorization": f"Bearer {self._token}"}, timeout=30, **kwargs)
        r.raise_for_status()
        return r

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> float:
        """Wait until the dag-processor has serialized ``dag_id``; returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                self.api("GET", f"/dags/{dag_id}/details")
                return time.monotonic() - began
            except requests.HTTPError:
                time.sleep(1)
        errors = self.api("GET", "/importErrors").json()
        raise TimeoutError(f"{dag_id} not parsed within {timeout:g} s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Trigger a run (like ``airflow dags trigger --conf``); returns its run id."""
        r = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return r.json()["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (task_id, state, try_number, start_date, end_date...)."""
        r = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return r.json()["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900, states: set[str] = FINISHED) -> dict:
        """Wait until the run's state is one of ``states``; returns the run."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            run = self.run(dag_id, run_id)
            if run["state"] in states:
                return run
            time.sleep(1)
        raise TimeoutError(f"{run_id} still {run['state']} after {timeout:g} s: {self.task_states(dag_id, run_id)}")
