"""How to reach one PostgreSQL database, without Airflow objects.

``PgTarget`` is the plain connection description ``backup``, ``migrate`` and ``rollback``
take; :meth:`PgTarget.from_airflow` builds one. Password rule (STYLE.md, "PostgreSQL
facts"): only through the environment or a 0600 ``PGPASSFILE``; ``repr()`` hides it and
:meth:`PgTarget.scrub` removes it from text.

Design notes: docs/design.md#pgconnpy
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

#: Where libpq reads connection parameters from in a child process (libpq docs,
#: "Environment Variables"). We clear inherited ones so a child never mixes targets.
_LIBPQ_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE")

APPLICATION_NAME = "migration-soak"
#: Transaction-local output settings under which a value's text is the same bytes at
#: every reading and reads back to the same value (dates, intervals, time zone, floats,
#: bytea): the fingerprint's ``ROW(...)::text`` and the increments' ``COPY`` use them.
STABLE_TEXT_OUTPUT = (
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)

#: SQLSTATE classes whose primary message may quote the data that failed: 22 (data
#: exception: ``invalid input syntax for type uuid: "<the value>"``) and 23 (integrity
#: constraint violation; its key values are in DETAIL, never shown). Class P0 (PL/pgSQL
#: ``RAISE``, e.g. an application trigger's) is free text and is not shown at all.
_DATA_CLASSES = ("22", "23")
#: A quoted word right after one of these is a name, kept (``column "passwordHash"``);
#: any other quoted text in a data-class message is taken for a value.
_NAME_NOUNS = frozenset({"relation", "table", "column", "constraint", "index", "type", "encoding", "schema",
                         "function", "trigger", "sequence", "parameter", "database", "role", "domain", "view",
                         "collation", "operator", "enum"})
_HEX_BYTES = re.compile(r"0x[0-9A-Fa-f]{2}(?: 0x[0-9A-Fa-f]{2})*")


def _without_values(message: str) -> str:
    """``message`` with every quoted value replaced by ``"…"`` (from its opening quote to
    the message's last quote: a value may itself contain quotes) and byte sequences
    (``0xe2 0x82``) by ``…``; quoted names after a ``_NAME_NOUNS`` word are kept."""
    out, pos = [], 0
    while True:
        start = message.find('"', pos)
        if start < 0:
            out.append(message[pos:])
            break
        before = message[pos:start]
        words = before.split()
        end = message.find('"', start + 1)
        if words and words[-1].lower() in _NAME_NOUNS and end > start and "\n" not in message[start:end]:
            out.append(message[pos:end + 1])
            pos = end + 1
            continue
        last = message.rfind('"')
        out.append(before + '"…"')
        pos = last + 1 if last > start else len(message)
    return _HEX_BYTES.sub("…", "".join(out))


def server_error_text(exc: BaseException) -> str:
    """What may be said of a database error in an exception, a log line, an event, a
    report or Slack: the server's primary message and its SQLSTATE, e.g. ``invalid input
    syntax for type uuid: "…" (SQLSTATE 22P02)``; never DETAIL, HINT or CONTEXT (they
    quote key values, failing rows and COPY lines), quoted values removed from data-class
    messages (``_DATA_CLASSES``), PL/pgSQL ``RAISE`` text withheld; a class 42 (syntax,
    unknown name) error keeps libpq's ``LINE n: ...`` excerpt of the statement (a down
    SQL's typo must be findable; statements carry no row values). An error without
    SQLSTATE (connection lost, a client-side error): the first line of ``str(exc)``.
    Callers still pass the result through :meth:`PgTarget.scrub`."""
    code = getattr(exc, "pgcode", None)
    if not code:
        text = str(exc).strip()
        return text.splitlines()[0].strip() if text else type(exc).__name__
    primary = getattr(getattr(exc, "diag", None), "message_primary", None)
    if primary is None:  # the first line of the text libpq built: "ERROR:  <primary>"
        lines = (getattr(exc, "pgerror", None) or str(exc)).strip().splitlines()
        primary = re.sub(r"^[A-Z]+:\s+", "", lines[0]) if lines else ""
    where = ""
    if code.startswith("P0"):
        primary = "message not shown (a PL/pgSQL RAISE, e.g. a trigger's: it may quote row values)"
    elif code[:2] in _DATA_CLASSES:
        primary = _without_values(primary)
    elif code.startswith("42"):  # syntax or name error: libpq's "LINE n: ..." quotes the statement (SQL, not rows)
        line = next((x for x in (getattr(exc, "pgerror", None) or "").splitlines() if x.startswith("LINE ")), "")
        where = f" at {' '.join(line.split())[:300]}" if line else ""
    return f"{' '.join(primary.split())} (SQLSTATE {code}){where}"


@dataclass(frozen=True)
class PgTarget:
    """One database to act on: where it listens and how to log in.

    Fields:
        host: host name or IP address (or a Unix socket directory), e.g. ``"127.0.0.1"``.
        port: TCP port, e.g. ``5432``.
        database: database name.
        user: role to log in as.
        password: the role's password, or ``None`` to let libpq find one in
            ``PGPASSFILE``/``~/.pgpass`` (or fail at once when there is none: tools run
            with ``--no-password``).

    ``repr()``/``str()`` show ``password=***``; the value itself is only handed to
    psycopg2 (``connect``) and to child processes' environments (``child_env``).
    """

    host: str
    port: int
    database: str
    user: str
    password: str | None = None

    def __repr__(self) -> str:
        shown = "None" if self.password is None else "'***'"
        return self.scrub(
            f"PgTarget(host={self.host!r}, port={self.port!r}, database={self.database!r}, "
            f"user={self.user!r}, password={shown})"
        )

    __str__ = __repr__

    def describe(self) -> str:
        """``user@host:port/database``, scrubbed: safe for logs and error messages."""
        return self.scrub(f"{self.user}@{self.host}:{self.port}/{self.database}")

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the password replaced by ``***``.

        Used on every stderr tail and driver message before it goes into an exception or
        a log line. Passwords shorter than 4 characters are not replaced (they would
        mangle ordinary text); use real passwords.
        """
        if self.password and len(self.password) >= 4:
            return text.replace(self.password, "***")
        return text

    def connect(self, **kwargs: Any):
        """A new psycopg2 connection to this database.

        ``kwargs`` go to ``psycopg2.connect`` (e.g. ``connect_timeout``,
        ``application_name``, ``options``); defaults: ``connect_timeout=10`` (seconds),
        ``application_name="migration-soak"``. The password goes as a keyword argument,
        never through a DSN string we build or log.

        Raises ``psycopg2.OperationalError`` as psycopg2 does (libpq's messages do not
        contain the password; callers still pass them through :meth:`scrub`).
        """
        import psycopg2

        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "connect_timeout": 10,
            "application_name": APPLICATION_NAME,
        }
        if self.password is not None:
            params["password"] = self.password
        params.update(kwargs)
        return psycopg2.connect(**params)

    def child_env(self, base: Mapping[str, str] | None = None, passfile: Path | None = None) -> dict[str, str]:
        """The environment for a libpq client tool (``pg_dump``, ``pg_restore``, ``psql``).

        Returns a copy of ``base`` (default ``os.environ``) with inherited ``PG*``
        connection variables replaced by ``PGHOST``, ``PGPORT``, ``PGDATABASE``,
        ``PGUSER`` of this target and ``PGAPPNAME=migration-soak``; the password goes in
        as ``PGPASSWORD``, or, when ``passfile`` is given, written to that path (mode
        0600, created exclusively: it must not exist) and named by ``PGPASSFILE``.

        With ``password=None`` no password variable is set and an inherited
        ``PGPASSFILE`` is kept, so libpq falls back to the pass file; tools must run with
        ``--no-password`` so that a missing password fails at once instead of prompting.
        The command line never needs to name the target: libpq reads all of it from here
        (libpq docs, "Environment Variables" and "The Password File").
        """
        env = dict(os.environ if base is None else base)
        for name in _LIBPQ_ENV:
            env.pop(name, None)
        env.update(
            {
                "PGHOST": self.host,
                "PGPORT": str(self.port),
                "PGDATABASE": self.database,
                "PGUSER": self.user,
                "PGAPPNAME": APPLICATION_NAME,
            }
        )
        if self.password is not None:
            if passfile is not None:
                write_passfile(passfile, self)
                env["PGPASSFILE"] = str(passfile)
            else:
                env["PGPASSWORD"] = self.password
        return env

    @classmethod
    def from_airflow(cls, conn_id: str) -> "PgTarget":
        """The target described by Airflow connection ``conn_id`` (a Postgres connection).

        Reads it through ``PostgresHook(postgres_conn_id=conn_id).get_connection(conn_id)``
        (apache-airflow-providers-postgres): ``host``, ``port`` (default 5432),
        ``schema`` (the database name, as the Postgres hook uses it; the hook's
        ``database`` extra wins when set), ``login``, ``password``. Airflow is imported
        here, not at module import, so this module works without it.
        """
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id=conn_id)
        conn = hook.get_connection(conn_id)
        extra = conn.extra_dejson or {}
        database = getattr(hook, "database", None) or extra.get("database") or conn.schema or "postgres"
        return cls(
            host=conn.host or "localhost",
            port=int(conn.port or 5432),
            database=database,
            user=conn.login or "postgres",
            password=conn.password or None,
        )


def write_passfile(path: Path, target: PgTarget) -> Path:
    """Write a one-line libpq password file for ``target`` at ``path`` with mode 0600.

    The file is created exclusively (``O_EXCL``) with mode 0600 from the first byte, so
    no other user ever sees it readable. ``:`` and ``\\`` in fields are escaped as the
    libpq docs ("The Password File") require. Raises ``FileExistsError`` when ``path``
    exists and ``ValueError`` when the target has no password.
    """
    if target.password is None:
        raise ValueError("target has no password to write")

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    line = ":".join(esc(v) for v in (target.host, str(target.port), target.database, target.user, target.password))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return Path(path)


#: The schema of a plan's unqualified table name (``migration.table``, a ``fingerprint``
#: check's ``table``, an increment's ``tables``): the schema the ledger, the backup, the
#: top-up and the rollback work in. Never the connection's ``search_path``: a staging role
#: or database whose path puts another schema's ``users`` first (``ALTER ROLE ... SET
#: search_path``) would have the fingerprint read one table and the migration drop another.
PLAN_SCHEMA = "public"


def split_table(name: str, default_schema: str = PLAN_SCHEMA) -> tuple[str, str]:
    """``(schema, table)`` of a plan's table name: ``schema.table`` splits at the first dot,
    a bare ``table`` is in ``default_schema`` (``PLAN_SCHEMA``, ``public``; never whichever
    the search path finds). Names are literal (``User`` is ``"User"``). ``ValueError`` for
    an empty part. Every reader of a plan's table resolves it here."""
    schema, dot, table = name.partition(".")
    if not dot:
        schema, table = default_schema, name
    if not schema or not table:
        raise ValueError(f"table name {name!r} is not 'table' or 'schema.table'")
    return schema, table


def qualified_table(name: str) -> str:
    """``schema.table`` (unquoted, literal) of a plan's table name: ``split_table``'s answer."""
    return ".".join(split_table(name))


def table_identifier(name: str) -> str:
    """A plan's table name as SQL text, both parts quoted (``"public"."users"``), for
    ``to_regclass`` or a statement built as text: ``split_table``'s answer."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in split_table(name))
