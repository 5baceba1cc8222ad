"""A real PgBouncer in front of the embedded PostgreSQL server, for tests.

Debian's ``pgbouncer`` package (``.ci/run`` installs it; 1.18 on bookworm) is started as a
non-daemon child listening on ``127.0.0.1:<free port>``, by default in transaction
pooling mode with one server connection per (database, user) pool: the next pooled
client gets the *same* server connection, so anything a client leaves behind on it
(a session ``SET``, an advisory lock, prepared state) is seen by the next one. That is
the topology of hosted staging databases (Supabase, Railway, Neon, RDS Proxy, most
Kubernetes setups); see issue 9.

Usage::

    with PgBouncer(pg.host, pg.port, "postgres", pg.password, workdir=tmp) as bouncer:
        pooled = bouncer.target("staging")        # a PgTarget through the pooler
        conn = pooled.connect()

or the ``pgbouncer`` fixture in ``tests/integration/conftest.py`` (session scope, in front
of ``pg_server``, every database through the wildcard entry).

Authentication: clients log in to PgBouncer with ``auth_type`` (``scram-sha-256`` by
default: the embedded server's ``pg_hba.conf`` asks TCP clients for SCRAM, and PgBouncer
needs the plain password in its ``auth_file`` to log in to the server that way). The
password is written only to ``userlist.txt`` (mode 0600, created exclusively), never to
argv, the ini file or a log.

Running as root: PgBouncer refuses to (``FATAL PgBouncer should not run as root``). We
start it as root with ``-u <user>`` (the ``postgres`` system user when it exists, else
``nobody``): it reads its ini and userlist and binds the port as root, then switches
user. Its log goes to its stderr, which the parent writes to ``<workdir>/pgbouncer.log``,
so the unprivileged process never needs to open a file under pytest's 0700 temporary
folders. Not running as root, it runs as the current user without ``-u``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping

import psycopg2

from demo.postgres import free_port
from migration_soak.pgconn import PgTarget

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
#: PgBouncer's admin console database (``SHOW POOLS``, ``SHOW SERVERS``...); the harness
#: makes its user an ``admin_users`` entry.
ADMIN_DB = "pgbouncer"


def _run_as_user() -> str | None:
    """The Unix user PgBouncer switches to when we are root, else ``None``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists for pgbouncer -u")


def _quote(value: str) -> str:
    """A userlist.txt field: double-quoted, inner double quotes doubled."""
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """A PgBouncer child process in front of one PostgreSQL server.

    Args:
        host, port: the PostgreSQL server PgBouncer connects to.
        user, password: the role clients (and PgBouncer, to the server) log in as.
        database: ``"*"`` (default) routes every database name through a wildcard entry;
            a name makes PgBouncer serve only that database.
        pool_mode: ``"transaction"`` (default), ``"session"`` or ``"statement"``.
        pool_size: server connections per (database, user) pool (``default_pool_size``);
            1 (default) hands the next client the same server connection.
        workdir: folder for ``pgbouncer.ini``, ``userlist.txt`` (0600) and
            ``pgbouncer.log``; created if missing.
        auth_type: ``"scram-sha-256"`` (default) or ``"md5"``.
        extra_users: more ``{user: password}`` logins (e.g. an application role), each
            with pools of its own.

    Use as a context manager: ``__enter__`` starts PgBouncer and waits until a client
    can log in through it (``RuntimeError`` with the log's tail when it does not within
    ``timeout_s``); ``__exit__`` stops it (SIGTERM, then SIGKILL after 5 s).
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str = "*",
        pool_mode: str = "transaction",
        pool_size: int = 1,
        workdir: Path | None = None,
        *,
        auth_type: str = "scram-sha-256",
        extra_users: Mapping[str, str] | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        if workdir is None:
            raise ValueError("workdir is required")
        if pool_mode not in ("transaction", "session", "statement"):
            raise ValueError(f"unknown pool_mode {pool_mode!r}")
        self.server_host = host
        self.server_port = int(port)
        self.user = user
        self.password = password
        self.database = database
        self.pool_mode = pool_mode
        self.pool_size = int(pool_size)
        self.workdir = Path(workdir).resolve()
        self.auth_type = auth_type
        self.extra_users = dict(extra_users or {})
        self.timeout_s = timeout_s
        self.host = "127.0.0.1"
        self.port: int = 0
        self.process: subprocess.Popen | None = None

    # -- files ---------------------------------------------------------------------

    @property
    def ini_path(self) -> Path:
        return self.workdir / "pgbouncer.ini"

    @property
    def userlist_path(self) -> Path:
        return self.workdir / "userlist.txt"

    @property
    def log_path(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server = f"host={self.server_host} port={self.server_port}"
        if self.database == "*":
            databases = f"* = {server}\n"
        else:
            databases = f"{self.database} = {server} dbname={self.database}\n"
        self.ini_path.write_text(
            "; written by tests/pgbouncer.py\n"
            "[databases]\n"
            f"{databases}"
            "\n[pgbouncer]\n"
            f"listen_addr = {self.host}\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            f"auth_type = {self.auth_type}\n"
            f"auth_file = {self.userlist_path}\n"
            f"admin_users = {self.user}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            "max_client_conn = 200\n"
            "server_check_delay = 0\n"
            # JDBC and some drivers send it; psycopg doesn't, harmless to accept.
            "ignore_startup_parameters = extra_float_digits\n"
            "log_connections = 0\n"
            "log_disconnections = 0\n"
            "log_pooler_errors = 1\n"
            "stats_period = 3600\n"
        )
        if self.userlist_path.exists():
            self.userlist_path.unlink()
        fd = os.open(self.userlist_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for name, secret in {self.user: self.password, **self.extra_users}.items():
                handle.write(f"{_quote(name)} {_quote(secret)}\n")

    # -- process -------------------------------------------------------------------

    def start(self) -> "PgBouncer":
        if self.process is not None:
            raise RuntimeError("pgbouncer already started")
        if not Path(PGBOUNCER).exists():
            raise RuntimeError("pgbouncer is not installed (apt-get install -y pgbouncer)")
        self.port = free_port()
        self._write_files()
        argv = [PGBOUNCER]
        run_as = _run_as_user()
        if run_as:
            argv += ["-u", run_as]
        argv.append(str(self.ini_path))
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        probe_db = self.database if self.database != "*" else "postgres"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
                conn = self.target(probe_db).connect(connect_timeout=3)
                try:
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                finally:
                    conn.close()
                return
            except (OSError, psycopg2.OperationalError) as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer did not accept logins in {self.timeout_s:g}s ({last}): {self._log_tail()}")

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM, SIGKILL after 5 s); a stopped one is left alone."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> "PgBouncer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients -------------------------------------------------------------------

    def target(self, database: str, user: str | None = None) -> PgTarget:
        """``database`` through the pooler as a ``PgTarget`` (``user`` defaults to the
        harness's user; another must be in ``extra_users``)."""
        user = user or self.user
        password = self.password if user == self.user else self.extra_users[user]
        return PgTarget(host=self.host, port=self.port, database=database, user=user, password=password)

    def admin(self, command: str) -> list[tuple]:
        """Run an admin console command (``SHOW SERVERS``, ``SHOW POOLS``...) and return its rows."""
        conn = self.target(ADMIN_DB).connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(command)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def __repr__(self) -> str:
        return (f"PgBouncer({self.host}:{self.port} -> {self.server_host}:{self.server_port}, "
                f"pool_mode={self.pool_mode}, pool_size={self.pool_size})")
