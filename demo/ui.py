"""``make airflow``: the Airflow 3.3 UI on the local staging stack, until Ctrl-C.

Starts the staging stack (``demo.stack``: embedded PostgreSQL 18 seeded with users, the
demo gateway and Authorizer under steady load, the database host exporter), a local
Slack stand-in whose messages are printed here, and the real Airflow components
(``demo.airflow_local``: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``,
LocalExecutor) with their metadata database on the same embedded PostgreSQL. Unpauses
the soak DAGs, prints the URL and the login, and stays up until Ctrl-C or SIGTERM, which
stops every process it started, PostgreSQL included.

Login: Airflow's simple auth manager with one user, ``admin``, whose password is
generated at each start and printed (and kept in ``<workdir>/airflow/passwords.json``,
mode 0600). Not the "all admins" mode: there every request is let in, and the soak
view's own login check could not be seen.

Each start is a fresh deployment (``--workdir``, default ``.state/airflow``): a newly
seeded staging database and an empty Airflow.

``Deployment`` is also what the browser tests (``tests/browser/``) start.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import requests

from demo import workdir_lock
from demo.airflow_local import AirflowLocal, postgres_metadata_url
from demo.slack_sink import SlackSink
from demo.load import DEFAULT_RATE
from demo.stack import SCENARIOS, Stack, airflow_connections

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 8080
USERNAME = "admin"
SOAK_DAG = "migration_soak"
EXECUTORS = ("local", "celery")
S3_BUCKET = "soak-backups"
S3_CONN_ID = "soak_s3"


def s3_plans(source: Path, target: Path) -> Path:
    """Copies of the plans in ``source`` in ``target`` keeping their backups in the local S3
    server (``backup_location: s3://soak-backups/<plan>``, ``connections.backup_storage:
    soak_s3``); every other field as it was. Returns ``target``."""
    import yaml

    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        plan = yaml.safe_load(path.read_text())
        if isinstance(plan, dict):  # a broken plan is copied as it is: its DAG says why
            plan["backup_location"] = f"s3://{S3_BUCKET}/{path.stem}"
            plan.setdefault("connections", {})["backup_storage"] = S3_CONN_ID
            (target / path.name).write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
        else:
            shutil.copy(path, target / path.name)
    return target


class LoginAirflow(AirflowLocal):
    """``AirflowLocal`` behind the simple auth manager's login: one admin user with a
    known password (written to ``passwords_file`` before the API server starts)."""

    def __init__(self, home: Path | str, env: dict[str, str], password: str, **kwargs):
        self.password = password
        self.passwords_file = Path(home).resolve() / "passwords.json"
        env = {**env,
               "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
               "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
               "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file)}
        super().__init__(home, env, **kwargs)

    def __enter__(self) -> "LoginAirflow":
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.passwords_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({USERNAME: self.password}, f)
        super().__enter__()
        return self

    def request_token(self) -> requests.Response:
        """A token for the admin's password (the simple auth manager's login)."""
        return requests.post(f"{self.base}/auth/token", json={"username": USERNAME, "password": self.password},
                             timeout=5)


def port_or_free(port: int) -> int:
    """``port`` when nothing listens on it on 127.0.0.1, else a free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class PrintedMessages(list):
    """The Slack stand-in's messages, each also handed to ``say`` as it arrives."""

    def __init__(self, say: Callable[[str], None]):
        super().__init__()
        self.say = say

    def append(self, text) -> None:
        super().append(text)
        self.say("slack: " + str(text).replace("\n", " | ")[:400])


class Deployment:
    """The staging stack, a Slack stand-in and the Airflow components, as one context.

    ``workdir``: state (``stack/``, ``airflow/``), removed first when ``fresh``.
    ``port``: the API server's (``None``: a free one). ``plans_dir``: the plans folder
    (``MIGRATION_SOAK_PLANS_DIR``; default ``include/plans``). ``prepare(deployment)``:
    called once the stack is up (``deployment.info``), before Airflow starts; returns more
    environment (connections of databases it made). ``env``: more environment for every component. ``server``: an
    already running ``EmbeddedPostgres`` for the stack (left running). ``unpause``: dag
    ids to wait for and unpause (default: ``migration_soak``, then every soak DAG listed).
    After ``__enter__``: ``info`` (the stack), ``airflow`` (a ``LoginAirflow``),
    ``url``, ``password``, ``slack`` (messages), ``timings``.

    ``executor="celery"``: the CeleryExecutor deployment of ``demo.celery_cluster`` instead of
    the LocalExecutor: Redis, two Celery workers (``workers``, ``worker_concurrency`` slots
    each) in their own network namespaces (``network``), every host service listening on
    the host's address on their network, and backups in S3 (``s3``, a ``demo.s3.LocalS3``):
    the plans are copied to ``<workdir>/plans`` with ``backup_location:
    s3://soak-backups/<plan>`` and ``connections.backup_storage: soak_s3``. ``pin_queues``
    (task id -> Celery queue; worker ``w`` consumes ``default`` and ``worker_<w>``) pins
    tasks to a worker through a cluster policy.
    """

    def __init__(self, workdir: Path | str, *, port: int | None = None, users: int = 100_000,
                 scenario: str = "healthy", rate: float = DEFAULT_RATE, plans_dir: Path | str | None = None,
                 prepare: Callable[["Deployment"], dict[str, str]] | None = None, env: dict[str, str] | None = None,
                 unpause: list[str] | None = None, fresh: bool = True, parallelism: int = 4,
                 server=None, say: Callable[[str], None] | None = None, executor: str = "local",
                 pin_queues: dict[str, str] | None = None, worker_concurrency: int = 4):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
        self.executor, self.pin_queues, self.worker_concurrency = executor, dict(pin_queues or {}), worker_concurrency
        self.network = None
        self.redis = None
        self.s3 = None
        self.workers: dict = {}
        self.workdir = Path(workdir).resolve()
        self.port = port
        self.users, self.scenario, self.rate = users, scenario, rate
        self.plans_dir = Path(plans_dir).resolve() if plans_dir else None
        self.prepare, self.extra_env, self.to_unpause = prepare, env or {}, unpause
        self.fresh, self.parallelism, self.server = fresh, parallelism, server
        self.say = say or (lambda line: None)
        self.password = secrets.token_urlsafe(12)
        self.sink = SlackSink()
        self.sink.messages = PrintedMessages(self.say)
        self.stack: Stack | None = None
        self.airflow: LoginAirflow | None = None
        self.info: dict = {}
        self.timings: dict[str, float] = {}

    @property
    def slack(self) -> list[str]:
        return self.sink.messages

    @property
    def url(self) -> str:
        return self.airflow.base if self.airflow else ""

    def __enter__(self) -> "Deployment":
        began = time.monotonic()
        if self.fresh:
            for sub in ("stack", "airflow"):
                shutil.rmtree(self.workdir / sub, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            bind: dict = {}
            if self.executor == "celery":
                self._start_network()
                bind = {"bind_host": self.network.host, "clients": (self.network.cidr,)}
            self.sink.__enter__()
            self.stack = Stack(self.workdir / "stack", scenario=self.scenario, users=self.users, rate=self.rate,
                               server=self.server, **bind)
            self.say(f"starting the staging stack ({self.users} users, scenario {self.scenario})...")
            self.info = self.stack.start()
            self.timings["stack_s"] = time.monotonic() - began
            env = {**airflow_connections(self.info), "AIRFLOW_CONN_SOAK_SLACK": self.sink.airflow_connection(),
                   "SOAK_APP_LOG": self.info["app_log"], "SOAK_DB_LOG": self.info["db_log"],
                   "PATH": os.pathsep.join([self.info["pg_bin_dir"], os.environ.get("PATH", "")])}
            if self.executor == "celery":
                self.plans_dir = s3_plans(self.plans_dir or ROOT / "include" / "plans", self.workdir / "plans")
                env[self.s3.env_var(S3_CONN_ID)] = self.s3.connection_json()
                if self.pin_queues:  # applied by demo/preload/airflow_local_settings.py's task_policy
                    env["SOAK_PIN_QUEUES"] = json.dumps(self.pin_queues)
            if self.plans_dir:
                env["MIGRATION_SOAK_PLANS_DIR"] = str(self.plans_dir)
            if self.prepare:
                env.update(self.prepare(self))
            env.update(self.extra_env)
            mark = time.monotonic()
            self.say("starting Airflow (db migrate, api-server, scheduler, dag-processor, triggerer)...")
            metadata = postgres_metadata_url(self.info["store"])
            more: dict = {}
            if self.executor == "celery":
                from demo.celery_cluster import WORKER_NICE, celery_env

                env.update(celery_env(self.network, self.redis, metadata))
                more["host"] = self.network.host
                # Airflow's own processes stand in for hosts of their own, as the workers do
                # (celery_cluster.WORKER_NICE): below the staging apps whose latency the soak
                # measures (CI of 505ec1b: the healthy soak's login p95 +17 % over hours 0-10,
                # its slow readings in the hour-0 burst of scheduling and the chaos)
                more["nice"] = WORKER_NICE
            self.airflow = LoginAirflow(self.workdir / "airflow", env, self.password, sql_alchemy_conn=metadata,
                                        port=self.port, parallelism=self.parallelism, **more)
            self.airflow.__enter__()
            if self.executor == "celery":
                self._start_workers()
            self.timings["airflow_s"] = time.monotonic() - mark
            mark = time.monotonic()
            wanted = self.to_unpause or [SOAK_DAG]
            for dag_id in wanted:
                self.airflow.wait_for_dag(dag_id)
            if self.to_unpause is None:  # every soak DAG the plans folder builds
                dags = self.airflow.api("GET", "/dags", params={"dag_id_pattern": SOAK_DAG, "limit": 100}).json()
                wanted = sorted({d["dag_id"] for d in dags["dags"]} | set(wanted))
            for dag_id in wanted:
                self.airflow.unpause(dag_id)
            self.timings["dags_s"] = time.monotonic() - mark
            self.timings["total_s"] = time.monotonic() - began
            return self
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def _start_network(self) -> None:
        """The workers' network, then Redis and the S3 server on the host's address there."""
        from demo.celery_cluster import Redis, WorkerNetwork
        from demo.s3 import LocalS3

        self.network = WorkerNetwork().__enter__()
        if self.network.removed_leftovers:
            self.say(f"removed what a crashed run left: {', '.join(self.network.removed_leftovers)}")
        self.sink = SlackSink(host=self.network.host)
        self.sink.messages = PrintedMessages(self.say)
        self.redis = Redis(self.workdir / "redis", self.network.host)
        self.redis.start()
        self.s3 = LocalS3(self.workdir / "s3", host=self.network.host)
        self.s3.start()
        self.s3.create_bucket(S3_BUCKET)

    def _start_workers(self) -> None:
        """One ``demo.celery_cluster.CeleryWorker`` per namespace, each on its own copy."""
        from demo.celery_cluster import CeleryWorker

        mark = time.monotonic()
        env = {k: v for k, v in self.airflow.env.items() if k not in ("AIRFLOW_HOME", "MIGRATION_SOAK_PLANS_DIR")}
        for name in self.network.workers:
            worker = CeleryWorker(name, self.workdir / "workers" / name, self.network, env,
                                  queues=("default", f"worker_{name}"), concurrency=self.worker_concurrency,
                                  plans_dir=self.plans_dir)
            worker.prepare()
            worker.start()
            self.workers[name] = worker
        for worker in self.workers.values():
            worker.wait_ready()
        self.timings["workers_s"] = time.monotonic() - mark

    def log_dirs(self) -> list[Path]:
        """Where task logs are: the host's (the triggerer's part) and each worker's own."""
        dirs = [self.airflow.home / "logs"] if self.airflow else []
        return dirs + [w.log_dir for w in self.workers.values()]

    def close(self) -> None:
        """Stop Airflow (every component and its task processes, the Celery workers), the
        stack (PostgreSQL included), the Slack stand-in, Redis, the S3 server and the
        workers' network; idempotent."""
        for worker in self.workers.values():  # all at once (Celery's warm shutdown); then each is waited for
            worker.terminate()
        for worker in self.workers.values():
            worker.stop(timeout_s=10)
        if self.airflow is not None:
            for proc in self.airflow.procs.values():  # all at once; close() then waits for each
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            self.airflow.close()
            self.airflow = None
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        if self.sink._thread.is_alive():  # shutdown() waits forever for a loop never started
            self.sink.__exit__(None, None, None)
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self.network is not None:
            self.network.close()
            self.network = None

    def dead_components(self) -> list[str]:
        return [n for n in (self.airflow.components if self.airflow else ()) if not self.airflow.running(n)]


def main(argv: list[str] | None = None) -> int:
    from demo.run import Interrupted, _shielded, install_signal_handlers

    parser = argparse.ArgumentParser(prog="python -m demo.ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the API server's port (default {DEFAULT_PORT}; a free one if it is taken)")
    parser.add_argument("--users", type=int, default=100_000, help="users seeded into staging")
    parser.add_argument("--scenario", default="healthy", choices=SCENARIOS,
                        help="the staging app's behaviour (legacy-code: it still reads passwordHash)")
    parser.add_argument("--workdir", default=str(ROOT / ".state" / "airflow"))
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="celery: Redis and two Celery workers in their own network namespaces, backups in a "
                             "local S3 server (demo/celery_cluster.py; needs root and redis-server)")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(f"airflow: {line}", flush=True)

    held = ExitStack()  # the working folder, until the UI stops (demo/workdir_lock.py)
    try:
        held.enter_context(workdir_lock.hold(args.workdir))
    except workdir_lock.WorkdirBusy as exc:
        parser.error(str(exc))
    install_signal_handlers()
    deployment = Deployment(args.workdir, port=port_or_free(args.port), users=args.users, scenario=args.scenario,
                            say=say, executor=args.executor)
    try:
        try:
            deployment.__enter__()
            af = deployment.airflow
            print(f"""
Airflow {_version()} is up: {af.base}
login: {USERNAME} / {deployment.password}
       (simple auth manager, one admin user; a new password at each start, also in {af.passwords_file})
DAG:   {af.base}/dags/{SOAK_DAG}  (unpaused) -> Trigger: the form is the DAG's params; try time_scale 300
       (24 h of soak in 4.8 min; 1 = a real 24 h soak)
soaks: {af.base}/soak/ (the Soak tab of each run)   staging stack: {deployment.info['gateway_url']}
logs:  {af.log_dir}/   ready in {deployment.timings['total_s']:.0f} s{_celery_lines(deployment)}
Ctrl-C stops everything (Airflow, the stack, PostgreSQL).""", flush=True)
            reported: set[str] = set()
            while True:
                time.sleep(1)
                for name in deployment.dead_components():
                    if name not in reported:
                        reported.add(name)
                        say(f"{name} exited; see {af.log_dir / (name + '.log')}")
        finally:
            with _shielded():
                say("stopping...")
                deployment.close()
    except Interrupted as exc:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        say(f"stopped by {exc}: Airflow, the staging stack and PostgreSQL are down")
        return 0
    except Exception as exc:
        say(f"failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        held.close()


def _celery_lines(deployment: Deployment) -> str:
    """The Celery cluster's part of the banner (nothing for the LocalExecutor)."""
    if not deployment.workers:
        return ""
    workers = ", ".join(f"{w.celery_hostname} (namespace {deployment.network.namespaces[n]}, log {w.log_path})"
                        for n, w in deployment.workers.items())
    return (f"\ncelery: broker {deployment.redis.url}; workers {workers}"
            f"\nS3:    {deployment.s3.endpoint_url}, bucket {S3_BUCKET} (backups; connection {S3_CONN_ID})")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("apache-airflow")
    except Exception:
        return "3"


if __name__ == "__main__":
    sys.exit(main())
