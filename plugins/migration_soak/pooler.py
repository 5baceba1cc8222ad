"""Is there a transaction pooler (PgBouncer, RDS Proxy, Supavisor...) in front of a database?

DDL, ``pg_dump`` and Prisma's advisory lock need one server session (STYLE.md,
"PgBouncer in transaction mode"); the soak refuses to migrate through a pooled
connection. Detection compares ``pg_backend_pid()`` across two clients' transactions.
Operations: docs/operations.md#pooled-and-direct-connections.

Design notes: docs/design.md#poolerpy
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
