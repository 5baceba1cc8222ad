"""Is there a transaction pooler (PgBouncer, RDS Proxy, Supavisor...) in front of a database?

DDL, ``pg_dump`` and Prisma's advisory lock need one server session for their whole
run: behind a transaction-mode pooler a session setting or an advisory lock stays on a
server connection that the next client (the application) inherits, and consecutive
transactions of one client may land on different servers (STYLE.md, "PgBouncer in
transaction mode"; Prisma asks for a direct ``directUrl`` for migrations for the same
reason). The soak sends those through ``connections.staging_direct`` and refuses to
migrate when the connection it would use for them is pooled.

Detection, from the server's own backend pids (``pg_backend_pid()``): on a direct
connection a client keeps one backend for its life and two clients never share one.
Two clients A and B each ask in separate transactions (A, B, A, A); a pooler shows as A's
backend changing between its transactions or B answering from A's backend. A
session-mode pooler passes this test, and is harmless here: it gives each client its own
server until it disconnects.
"""

from __future__ import annotations

from migration_soak.exceptions import MigrationError
from migration_soak.pgconn import PgTarget

_PROBES = 3  # transactions of client A; more makes a busy pooler likelier to show


def detect(target: PgTarget) -> str | None:
    """A one-line description of the pooling seen on ``target``, or ``None`` when every
    probe answered as a direct connection does. Raises ``psycopg2.Error`` when the
    database cannot be reached."""
    first = target.connect()
    second = target.connect()
    try:
        first.autocommit = second.autocommit = True  # one transaction per statement
        a = [_pid(first)]
        b = _pid(second)
        a += [_pid(first) for _ in range(_PROBES - 1)]
    finally:
        first.close()
        second.close()
    if len(set(a)) > 1:
        return (f"one client's transactions ran on different server backends (pids {sorted(set(a))}): "
                "a transaction-mode pooler")
    if b in a:
        return f"two clients were served by the same server backend (pid {b}): a transaction-mode pooler"
    return None


def require_direct(target: PgTarget, field: str) -> None:
    """Refuse (``MigrationError``) to run DDL, dumps and advisory locks through ``target``
    when it is pooled or unreachable. ``field``: the plan field that named it, for the message."""
    import psycopg2

    try:
        found = detect(target)
    except psycopg2.Error as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise MigrationError(f"{field}: cannot connect to {target.describe()}: {target.scrub(first)}") from None
    if found:
        raise MigrationError(
            f"{field} ({target.describe()}) goes through a connection pooler: {found}. Migrations, backups "
            "and the rollback need one server session for their whole run (settings and advisory locks would "
            "leak to the application's pooled connections). Set connections.staging_direct to an Airflow "
            "connection that reaches PostgreSQL directly (Prisma's directUrl), and keep connections.staging "
            "on the pooler for the checks.")


def _pid(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])
