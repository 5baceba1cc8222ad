"""The local staging stack: PostgreSQL 18 + seeded staging DB + gateway + Authorizer + load.

CLI::

    python -m demo.stack up   --dir .state/stack --scenario healthy [--users 100000] [--rate 50]
    python -m demo.stack down --dir .state/stack

``up`` starts everything, writes ``<dir>/stack.json`` (mode 0600), prints ``stack: up`` and
runs until SIGTERM/SIGINT, then stops everything, PostgreSQL included, and removes
``stack.json``. ``down`` signals that process and waits for it to exit.

Python::

    with Stack.running(tmp_path, scenario="legacy-code", users=2000) as info:
        requests.get(info["gateway_url"] + "/health")

``info`` (= ``stack.json``)::

    {"staging": {"host", "port", "database", "user", "password"},   # superuser on "staging"
     "store":   {"host", "port", "database", "user", "password"},   # superuser on "soak_store"
     "gateway_url": "http://127.0.0.1:<port>", "authorizer_url": "http://127.0.0.1:<port>",
     "db_metrics_url": "http://127.0.0.1:<port>",  # database host exporter, page at /metrics
     "authorizer_admin_token": str, "pg_bin_dir": str, "app_log": str (absolute path),
     "db_log": str (absolute path of PostgreSQL's log: slow statements, lock waits, errors),
     "scenario": "healthy" | "legacy-code", "pid": int}

Faults (``demo.app_config.FAULTS``) are switched at runtime on the gateway
(``POST /admin/fault``, or a ``demo.faults.Timeline``); the Authorizer's admin log follows
the gateway's faults.

The data in ``<dir>/pgdata`` is kept between runs: a second ``up`` reuses the seeded
database as it is (migrated or not). Delete the folder for a fresh staging.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from demo import postgres, seed
from demo.app_config import SCENARIOS, AppConfig, write_private_json
from demo.app_log import close_app_log, open_app_log
from demo.authorizer import AuthorizerLog, create_authorizer
from demo.gateway import Gateway
from demo.server import ServerThread
from demo.db_exporter import DbExporter
from demo.load import DEFAULT_RATE, LoadGenerator

STAGING_DATABASE = "staging"
INFO_FILE = "stack.json"
CONFIG_FILE = "app_config.json"
LOG_FILE = "app.log"


def _load_authorizer_ids(server: postgres.EmbeddedPostgres, database: str) -> list[str]:
    """Every authorizerId in staging now: the users the Authorizer knows about."""
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT "authorizerId" FROM users WHERE "authorizerId" IS NOT NULL')
            return [row[0] for row in cur]
    finally:
        conn.close()


class Stack:
    """One staging stack whose state lives in ``directory``.

    ``server``: an already running ``EmbeddedPostgres`` to use (left running on stop);
    by default the stack starts its own with data in ``<directory>/pgdata``.
    ``users``: users seeded on a first start. ``rate``: load in requests/s (0 = no load).
    ``database``: the staging database's name (tests sharing a server use their own).
    ``bind_host``: the address the apps listen on and ``info`` names, PostgreSQL included
    (which also listens on 127.0.0.1); ``clients``: the networks (CIDR) PostgreSQL lets in
    besides 127.0.0.1. The Celery cluster (``demo.celery_cluster``) gives the host's address
    on its workers' network, so the workers reach everything over that network only.
    After ``start()``, ``timings`` holds the seconds each phase took and ``seed_result``
    what the seed did.
    """

    def __init__(
        self,
        directory: Path | str,
        scenario: str = "healthy",
        users: int = 100_000,
        rate: float = DEFAULT_RATE,
        server: postgres.EmbeddedPostgres | None = None,
        database: str = STAGING_DATABASE,
        bind_host: str = "127.0.0.1",
        clients: tuple[str, ...] = (),
    ):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; one of {SCENARIOS}")
        self.directory = Path(directory).resolve()
        self.scenario = scenario
        self.users = users
        self.rate = rate
        self.server = server
        self.database = database
        self.bind_host, self.clients = bind_host, tuple(clients)
        self._own_server = server is None
        self.gateway: Gateway | None = None
        self.authorizer_log: AuthorizerLog | None = None
        self.db_exporter: DbExporter | None = None
        self.load: LoadGenerator | None = None
        self.info: dict | None = None
        self.timings: dict[str, float] = {}
        self.seed_result: seed.SeedResult | None = None
        self._servers: list[ServerThread] = []
        self._logger = None

    @classmethod
    @contextmanager
    def running(
        cls,
        directory: Path | str,
        scenario: str = "healthy",
        users: int = 100_000,
        rate: float = DEFAULT_RATE,
        server: postgres.EmbeddedPostgres | None = None,
        database: str = STAGING_DATABASE,
        bind_host: str = "127.0.0.1",
        clients: tuple[str, ...] = (),
    ) -> Iterator[dict]:
        """Start a stack, yield its info dict (the ``stack.json`` content), stop it after."""
        stack = cls(directory, scenario=scenario, users=users, rate=rate, server=server, database=database,
                    bind_host=bind_host, clients=clients)
        try:
            yield stack.start()
        finally:
            stack.stop()

    def start(self) -> dict:
        """Start everything and write ``stack.json``; returns the info dict."""
        began = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            if self._own_server:
                more = {} if self.bind_host == "127.0.0.1" else {"also_listen": (self.bind_host,),
                                                                   "clients": self.clients}
                self.server = postgres.start(self.directory / "pgdata", **more)
            self.timings["postgres_s"] = time.monotonic() - began

            mark = time.monotonic()
            self.seed_result = seed.create_staging(self.server, self.database, users=self.users)
            self.timings["seed_s"] = time.monotonic() - mark

            mark = time.monotonic()
            config_path = self.directory / CONFIG_FILE
            AppConfig(
                host=self.server.host, port=self.server.port, database=self.database,
                user=self.seed_result.app_user, password=self.seed_result.app_password,
                scenario=self.scenario,
            ).save(config_path)
            log_path = self.directory / LOG_FILE
            self._logger = open_app_log(log_path)
            admin_token = secrets.token_urlsafe(24)
            self.gateway = Gateway(config_path, self._logger)
            self.authorizer_log = AuthorizerLog()
            self.gateway.upstream_log = self.authorizer_log
            self.gateway.add_fault_listener(self.authorizer_log.apply_faults)
            server, staging_db = self.server, self.database
            authorizer = create_authorizer(
                _load_authorizer_ids(server, staging_db), admin_token, self._logger,
                log=self.authorizer_log, id_source=lambda: _load_authorizer_ids(server, staging_db),
            )
            self.db_exporter = DbExporter(server.data_dir)
            bind = {} if self.bind_host == "127.0.0.1" else {"host": self.bind_host}
            gateway_server = ServerThread(self.gateway.app, name="gateway", **bind)
            authorizer_server = ServerThread(authorizer, name="authorizer", **bind)
            exporter_server = ServerThread(self.db_exporter.app, name="db-exporter", **bind)
            for thread in (gateway_server, authorizer_server, exporter_server):
                self._servers.append(thread)
                thread.start()
            self.timings["apps_s"] = time.monotonic() - mark

            if self.rate > 0:
                self.load = LoadGenerator(getattr(gateway_server, "local_url", gateway_server.url), self.seed_result.users, rate=self.rate).start()

            database = {
                "host": self.server.host if self.bind_host == "127.0.0.1" else self.bind_host, "port": self.server.port,
                "user": postgres.SUPERUSER, "password": self.server.password,
            }
            self.info = {
                "staging": {**database, "database": self.database},
                "store": {**database, "database": seed.STORE_DATABASE},
                "gateway_url": gateway_server.url,
                "authorizer_url": authorizer_server.url,
                "db_metrics_url": exporter_server.url,
                "authorizer_admin_token": admin_token,
                "pg_bin_dir": str(postgres.bin_dir()),
                "app_log": str(log_path),
                "db_log": str(self.server.log_path),
                "scenario": self.scenario,
                "pid": os.getpid(),
            }
            write_private_json(self.directory / INFO_FILE, self.info)
            self.timings["total_s"] = time.monotonic() - began
            return self.info
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop load, apps, pool and (if the stack started it) PostgreSQL; idempotent."""
        if self.load:
            self.load.stop()
        for thread in reversed(self._servers):
            thread.stop()
        self._servers.clear()
        if self.gateway:
            self.gateway.close()
            self.gateway = None
        self.authorizer_log = None
        self.db_exporter = None
        if self._own_server and self.server is not None:
            self.server.stop()
            self.server = None
        if self._logger is not None:
            close_app_log(self._logger)
            self._logger = None
        info_path = self.directory / INFO_FILE
        if self.info is not None and info_path.exists():
            # Only our own file: another stack in the folder would have a different pid.
            try:
                if json.loads(info_path.read_text()).get("pid") == self.info["pid"]:
                    info_path.unlink()
            except (OSError, ValueError):
                pass
        self.info = None


def airflow_connections(info: dict) -> dict[str, str]:
    """The ``AIRFLOW_CONN_*`` environment variables (JSON form) for a stack's ``info``.

    ``SOAK_STAGING`` / ``SOAK_STORE``: postgres, ``schema`` = database name.
    ``SOAK_GATEWAY`` / ``SOAK_AUTHORIZER``: http, at the host of their URL; the Authorizer's admin token
    is that connection's password. ``SOAK_DB_METRICS``: http, the database host exporter
    (page at ``/metrics``), when ``info`` has a ``db_metrics_url``. The values hold secrets:
    pass them in an environment, never print them.
    """

    def pg(db: dict) -> str:
        return json.dumps({
            "conn_type": "postgres", "host": db["host"], "port": db["port"],
            "login": db["user"], "password": db["password"], "schema": db["database"],
        })

    def http(url: str, password: str | None = None) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        conn = {"conn_type": "http", "host": parts.hostname, "port": parts.port, "schema": "http"}
        if password is not None:
            conn["password"] = password
        return json.dumps(conn)

    env = {
        "AIRFLOW_CONN_SOAK_STAGING": pg(info["staging"]),
        # No pooler in the embedded stack: the direct connection is the same server.
        "AIRFLOW_CONN_SOAK_STAGING_DIRECT": pg(info["staging"]),
        "AIRFLOW_CONN_SOAK_STORE": pg(info["store"]),
        "AIRFLOW_CONN_SOAK_GATEWAY": http(info["gateway_url"]),
        "AIRFLOW_CONN_SOAK_AUTHORIZER": http(info["authorizer_url"], info["authorizer_admin_token"]),
    }
    if info.get("db_metrics_url"):
        env["AIRFLOW_CONN_SOAK_DB_METRICS"] = http(info["db_metrics_url"])
    return env


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited process that its parent has not reaped yet (a
    zombie: e.g. ``up`` started by a test's Popen) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, so split after ')'.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _read_info(directory: Path) -> dict | None:
    try:
        return json.loads((directory / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def _up(args) -> int:
    directory = Path(args.dir).resolve()
    existing = _read_info(directory)
    if existing and _pid_alive(existing.get("pid", -1)) and existing.get("pid") != os.getpid():
        print(f"stack: already running (pid {existing['pid']})", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(directory, scenario=args.scenario, users=args.users, rate=args.rate)
    stack.start()
    try:
        result = stack.seed_result
        print(
            f"stack: postgres {stack.timings['postgres_s']:.1f}s, "
            f"seed {stack.timings['seed_s']:.1f}s ({'new' if result.seeded else 'reused'}, {result.users} users), "
            f"apps {stack.timings['apps_s']:.1f}s, total {stack.timings['total_s']:.1f}s; info in {directory / INFO_FILE}",
            file=sys.stderr, flush=True,
        )
        print("stack: up", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        stack.stop()
    print("stack: down", file=sys.stderr, flush=True)
    return 0


def _down(args) -> int:
    directory = Path(args.dir).resolve()
    info = _read_info(directory)
    if not info or not _pid_alive(info.get("pid", -1)):
        print("stack: not running", file=sys.stderr)
        return 0
    pid = info["pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            print(f"stack: pid {pid} still running after {args.timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("stack: down", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.stack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack and run until SIGTERM/SIGINT")
    up.add_argument("--dir", required=True, help="state folder (pgdata, stack.json, app.log)")
    up.add_argument("--scenario", choices=SCENARIOS, default="healthy")
    up.add_argument("--users", type=int, default=100_000, help="users seeded on a first start")
    up.add_argument("--rate", type=float, default=DEFAULT_RATE, help="load in requests/s (0: none)")
    down = sub.add_parser("down", help="stop the stack running in --dir")
    down.add_argument("--dir", required=True)
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to exit")
    args = parser.parse_args(argv)
    return _up(args) if args.command == "up" else _down(args)


if __name__ == "__main__":
    sys.exit(main())
