"""Which database a connection reaches, as the PostgreSQL server itself says: what the
soak's lease is keyed on (``runbook.admit``/``hold``, ``store.take_lease``).

Two plans may name the same staging database differently: another environment name,
another Airflow connection, ``localhost`` against ``127.0.0.1``, a DNS alias, a pooler
in front. The lease must follow the database the soak changes, so the key is read from
the server: its ``system_identifier`` (``pg_control_system()``: one value per cluster,
kept across restarts, dumps and renames of hosts) and ``current_database()`` (the real
name, whatever alias a pooler gave it). A role without ``EXECUTE`` on
``pg_control_system()`` (PUBLIC has it by default; some operators revoke it) falls back to
the address and port the server answers on (``inet_server_addr()``), then, on a Unix
socket, to the target's host and port: weaker keys, said so in the key itself.

Design notes: docs/design.md#identitypy
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from migration_soak.exceptions import SoakError
from migration_soak.pgconn import PgTarget


@dataclass(frozen=True)
class DatabaseIdentity:
    """One database as the server names it.

    ``key``: the lease key, ``"<server>/<database>"`` with ``<server>`` one of
    ``system <system_identifier>``, ``address <ip>:<port>`` or ``host <host>:<port>``
    (strongest first). ``database``: ``current_database()``.
    ``reached_as``: ``user@host:port/database`` of the connection that read it (no
    password; :meth:`PgTarget.describe`). None of them holds a secret.
    """

    key: str
    database: str
    reached_as: str

    @property
    def strong(self) -> bool:
        """True when ``key`` is the server's ``system`` identifier (not its address or host)."""
        return self.key.startswith("system ")

    @property
    def role(self) -> str:
        """The role of the connection that read it (``reached_as``'s ``user``)."""
        return self.reached_as.rsplit("@", 1)[0]

    def __str__(self) -> str:
        server = self.key.rsplit("/", 1)[0]
        return f"database {self.database!r} of PostgreSQL {server} (reached as {self.reached_as})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def identify(target: PgTarget, field: str) -> DatabaseIdentity:
    """The identity of ``target``'s database, read on one autocommit connection (nothing
    set, no lock taken; safe through a transaction pooler). ``field``: the plan field
    naming the connection, for the message. Raises ``SoakError`` when it cannot be read."""
    import psycopg2

    try:
        conn = target.connect()
    except psycopg2.Error as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SoakError(f"{field}: cannot connect to {target.describe()} to read which database it is (the "
                        f"lease follows the database): {target.scrub(first)}") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), host(inet_server_addr()), inet_server_port()")
            database, addr, port = cur.fetchone()
            try:
                cur.execute("SELECT system_identifier::text FROM pg_control_system()")
                system = cur.fetchone()[0]
            except psycopg2.errors.InsufficientPrivilege:
                system = None
    except psycopg2.Error as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise SoakError(f"{field}: cannot read which database {target.describe()} is: {target.scrub(first)}") from None
    finally:
        conn.close()
    if system:
        server = f"system {system}"
    elif addr:
        server = f"address {addr}:{port}"
    else:
        server = f"host {target.host}:{target.port}"
    return DatabaseIdentity(key=f"{server}/{database}", database=database, reached_as=target.describe())
