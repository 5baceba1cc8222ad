"""Deploying Prisma migrations with Prisma's own ledger semantics, without Node.

The runbook (seed, "Hora 0", steps 2-3) runs ``npx prisma migrate deploy`` then
``npx prisma migrate status``. ``LedgerBackend`` does what ``migrate deploy`` does, so
``prisma migrate status`` agrees with us afterwards (DESIGN.md, "ledger"). The rules come
from prisma-engines ``schema-engine/core/src/commands/apply_migrations.rs``, the SQL
connector's migration persistence and ``schema-connector/src/checksum.rs``:

* the ledger is ``_prisma_migrations`` in the target schema, created when missing with
  Prisma's exact DDL; on a non-empty schema without a ledger Prisma refuses (P3005);
* one session holds ``pg_advisory_lock(72707369)`` for the whole run (Prisma waits
  10 s, then fails with P1002);
* any row with ``finished_at IS NULL AND rolled_back_at IS NULL`` is a failed migration
  and blocks every deploy (P3009);
* a migration (folder of ``migrations_dir`` with ``migration.sql``, in name order) is
  pending when no ledger row with ``rolled_back_at IS NULL`` names it;
* applying one: insert the row (uuid4 ``id``, ``checksum`` = hex SHA-256 of the
  ``migration.sql`` bytes, ``started_at`` now, ``applied_steps_count`` 0) and commit;
  run the whole script as one simple-query string (PostgreSQL runs a multi-statement
  simple query in one implicit transaction, so a failing script leaves nothing behind);
  on success ``applied_steps_count = applied_steps_count + 1`` then
  ``finished_at = now()``; on error ``logs`` gets the error text, ``finished_at`` stays
  NULL (failed state) and the deploy stops (P3018);
* a checksum that differs from the file (ignoring CRLF/LF differences, as Prisma does)
  means the migration was modified after it was applied: a warning, not an error.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from migration_soak.exceptions import MigrationError
from migration_soak.pgconn import PgTarget

log = logging.getLogger(__name__)

#: Prisma's advisory lock key for migrations on PostgreSQL (prisma-engines, SQL
#: connector ``acquire_lock``: ``SELECT pg_advisory_lock(72707369)``).
PRISMA_ADVISORY_LOCK_KEY = 72707369
LEDGER_TABLE = "_prisma_migrations"

#: Prisma's DDL for the ledger on PostgreSQL (``migrate deploy`` creates it when missing).
LEDGER_DDL = """CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);"""

_TX_IDLE = 0  # psycopg2.extensions.TRANSACTION_STATUS_IDLE

APPLIED, PENDING, FAILED, ROLLED_BACK = "applied", "pending", "failed", "rolled_back"


@dataclass(frozen=True)
class MigrationState:
    """One migration as ``status()`` sees it.

    Fields:
        name: folder name, e.g. ``"20251202020032_update_user_schema_final"``.
        checksum: hex SHA-256 of the local ``migration.sql`` (``None`` when the folder is
            missing locally but the ledger has it).
        state: ``applied`` (a finished row not rolled back), ``failed`` (a row with
            neither ``finished_at`` nor ``rolled_back_at``: blocks deploys, P3009),
            ``rolled_back`` (only rolled-back rows: deploy applies it again, so it reads
            as pending) or ``pending`` (no row).
        started_at / finished_at / rolled_back_at: of the ledger row that decides the
            state (the live row, else the latest rolled-back one); ``None`` when pending.
        applied_steps_count: of that row (Prisma writes 1 on success, 0 otherwise).
        logs: of that row (the error text of a failed attempt).
        db_checksum: the ledger row's checksum.
        modified: the applied file no longer matches ``db_checksum`` (Prisma's "was
            modified after it was applied" warning).
        local: the folder exists in ``migrations_dir``.
    """

    name: str
    checksum: str | None
    state: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rolled_back_at: datetime | None = None
    applied_steps_count: int = 0
    logs: str | None = None
    db_checksum: str | None = None
    modified: bool = False
    local: bool = True

    @property
    def is_pending(self) -> bool:
        """True when ``deploy()`` would apply it (``pending`` or ``rolled_back``)."""
        return self.state in (PENDING, ROLLED_BACK) and self.local

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (times as ISO 8601 strings)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        out["is_pending"] = self.is_pending
        return out


@dataclass(frozen=True)
class DeployResult:
    """What one ``deploy()`` did.

    Fields: ``applied`` (names applied now, in order), ``already_applied`` (names that
    were applied before), ``warnings`` (human-readable, e.g. modified migrations),
    ``duration_s`` (seconds, whole deploy including the lock wait).
    """

    applied: tuple[str, ...]
    already_applied: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON types only."""
        return {
            "applied": list(self.applied),
            "already_applied": list(self.already_applied),
            "warnings": list(self.warnings),
            "duration_s": self.duration_s,
        }


@runtime_checkable
class MigrationBackend(Protocol):
    """How the soak deploys and un-deploys a migration (``LedgerBackend`` here; a backend
    that shells out to ``npx prisma`` would fit the same shape)."""

    def status(self) -> list[MigrationState]:
        """Every local migration (and ledger-only ones) with its state, in name order."""
        ...

    def deploy(self) -> DeployResult:
        """Apply every pending migration in name order; raise ``MigrationError`` on failure."""
        ...

    def mark_rolled_back(self, name: str) -> int:
        """Mark the migration's live ledger rows rolled back; return how many rows changed."""
        ...


def migration_checksum(script: bytes) -> str:
    """Prisma's checksum: lower-case hex SHA-256 of the ``migration.sql`` bytes."""
    return hashlib.sha256(script).hexdigest()


def checksum_matches(script: bytes, checksum: str) -> bool:
    """Prisma's ``script_matches_checksum``: equal as-is, with CRLF->LF or LF->CRLF.

    Git may rewrite line endings, so Prisma accepts any of the three. Old Prisma versions
    stored checksums without zero padding (prisma-engines issue 1887): a checksum that
    is not 64 characters long is compared in that form.
    """
    variants = (script, script.replace(b"\r\n", b"\n"), script.replace(b"\n", b"\r\n"))
    for variant in variants:
        digest = hashlib.sha256(variant).digest()
        rendered = digest.hex() if len(checksum) in (0, 64) else "".join(f"{b:x}" for b in digest)
        if rendered == checksum:
            return True
    return False


@dataclass(frozen=True)
class _Local:
    name: str
    path: Path
    script: bytes

    @property
    def checksum(self) -> str:
        return migration_checksum(self.script)


@dataclass(frozen=True)
class _Row:
    id: str
    checksum: str
    finished_at: datetime | None
    migration_name: str
    logs: str | None
    rolled_back_at: datetime | None
    started_at: datetime
    applied_steps_count: int


@dataclass
class LedgerBackend:
    """``prisma migrate deploy``/``status``/``resolve --rolled-back`` against ``target``.

    Args:
        target: the database.
        migrations_dir: Prisma's ``migrations`` folder (``<name>/migration.sql`` folders
            and ``migration_lock.toml``).
        schema: the schema holding the app's tables and the ledger (Prisma's
            ``?schema=``, default ``public``); the session's ``search_path``.
        lock_timeout_s: PostgreSQL ``lock_timeout`` (seconds) of the DDL session, so an
            ``ALTER TABLE`` waiting for its lock fails after this long instead of
            queueing the application's queries behind it indefinitely (PostgreSQL docs,
            "lock_timeout"; default 10 s).
        advisory_lock_wait_s: how long to wait for Prisma's advisory lock (seconds;
            Prisma's own timeout is 10 s).
    """

    target: PgTarget
    migrations_dir: Path
    schema: str = "public"
    lock_timeout_s: float = 10.0
    advisory_lock_wait_s: float = 10.0
    _poll_s: float = field(default=0.1, repr=False)

    # ----------------------------------------------------------------- public

    def status(self) -> list[MigrationState]:
        """Per migration: name, checksum, state, times; in name order.

        Reads the ledger without creating it or taking the advisory lock (like
        ``prisma migrate status``). Ledger rows whose folder is missing locally are
        listed too, with ``local=False``. Raises ``MigrationError`` when the database
        cannot be read.
        """
        local = self._local_migrations()
        conn = self._connect()
        try:
            rows = self._rows(conn) if self._ledger_exists(conn) else []
        finally:
            conn.close()
        return _states(local, rows)

    def deploy(self) -> DeployResult:
        """Apply every pending migration, in name order, the way ``prisma migrate deploy`` does.

        Returns a ``DeployResult`` (a second call with nothing pending applies nothing).
        Raises ``MigrationError`` when: the advisory lock is not free within
        ``advisory_lock_wait_s`` (P1002); ``migration_lock.toml`` names another provider
        (P3019); the schema is not empty but has no ledger (P3005); a failed migration is
        in the ledger (P3009); a script fails (P3018: its row keeps ``finished_at``
        NULL with the error in ``logs``, and later migrations are not attempted).
        """
        started = time.monotonic()
        local = self._local_migrations()
        self._check_provider()
        conn = self._connect()
        applied: list[str] = []
        warnings: list[str] = []
        try:
            self._acquire_lock(conn)
            self._initialize(conn)
            rows = self._rows(conn)
            _refuse_failed(rows)
            live = {r.migration_name: r for r in rows if r.rolled_back_at is None}
            for mig in local:
                row = live.get(mig.name)
                if row is not None and row.checksum and not checksum_matches(mig.script, row.checksum):
                    text = f"The migration `{mig.name}` was modified after it was applied."
                    log.warning("%s (ledger checksum %s, file %s)", text, row.checksum, mig.checksum)
                    warnings.append(text)
            pending = [m for m in local if m.name not in live]
            already = tuple(m.name for m in local if m.name in live)
            for mig in pending:
                self._apply(conn, mig)
                applied.append(mig.name)
        finally:
            conn.close()  # ends the session: releases the advisory lock
        result = DeployResult(tuple(applied), already, tuple(warnings), round(time.monotonic() - started, 3))
        log.info("deploy of %s: applied %s; already applied %d", self.target.describe(),
                 ", ".join(applied) or "nothing", len(already))
        return result

    def mark_rolled_back(self, name: str) -> int:
        """Make ``name`` pending again after our rollback undid it; return the rows changed.

        A failed row (``finished_at`` NULL) gets ``rolled_back_at = now()``, as ``prisma
        migrate resolve --rolled-back`` does. A finished row is removed from the ledger;
        its content, with ``rolled_back_at`` = now, is kept in ``self.removed_rows``
        (JSON-able dicts) for the soak's record (the DAG stores it with the run's events). Why removed: the real
        ``prisma migrate status`` (6.19) counts every ledger row as applied, rolled back or
        not, so only a missing row reads as pending to both ``status`` and ``deploy``
        (checked against the CLI in ``tests/integration/test_prisma_cli.py``).
        ``resolve --rolled-back`` cannot do the second: it accepts only failed migrations.
        Idempotent: a second call changes 0 rows. Takes the advisory lock like any ledger
        writer. Raises ``MigrationError`` when the ledger is missing or the lock is not free.
        """
        conn = self._connect()
        try:
            self._acquire_lock(conn)
            if not self._ledger_exists(conn):
                raise MigrationError(f"no {LEDGER_TABLE} table in schema {self.schema} of {self.target.describe()}")
            with conn.cursor() as cur:
                # A failed row: exactly what `prisma migrate resolve --rolled-back` writes.
                cur.execute(
                    f'UPDATE "{LEDGER_TABLE}" SET rolled_back_at = now() '
                    "WHERE migration_name = %s AND rolled_back_at IS NULL AND finished_at IS NULL",
                    (name,),
                )
                resolved = cur.rowcount
                # A finished row: only its absence reads as pending to `migrate status` too.
                cur.execute(
                    f'DELETE FROM "{LEDGER_TABLE}" WHERE migration_name = %s AND rolled_back_at IS NULL '
                    "RETURNING id, checksum, finished_at, migration_name, logs, started_at, applied_steps_count, now()",
                    (name,),
                )
                cols = ("id", "checksum", "finished_at", "migration_name", "logs", "started_at",
                        "applied_steps_count", "rolled_back_at")
                self.removed_rows = [
                    {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in zip(cols, row)}
                    for row in cur.fetchall()
                ]
                count = resolved + len(self.removed_rows)
        finally:
            conn.close()
        log.info("ledger: %s rolled back, %d row(s) moved out of the ledger", name, count)
        return count

    # ---------------------------------------------------------------- helpers

    def _connect(self):
        try:
            conn = self.target.connect()
        except Exception as exc:
            raise MigrationError(
                f"cannot connect to {self.target.describe()}: {self.target.scrub(str(exc)).strip()}"
            ) from None
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT set_config('search_path', %s, false)", (_quote_ident(self.schema),))
            cur.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(self.lock_timeout_s * 1000)}ms",))
        return conn

    def _local_migrations(self) -> list[_Local]:
        root = Path(self.migrations_dir)
        if not root.is_dir():
            raise MigrationError(f"migrations folder {root} does not exist")
        found = []
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            script = entry / "migration.sql"
            if not script.is_file():
                raise MigrationError(f"P3015: could not find the migration file at {script}")
            found.append(_Local(entry.name, script, script.read_bytes()))
        return found

    def _check_provider(self) -> None:
        lock = Path(self.migrations_dir) / "migration_lock.toml"
        if not lock.is_file():
            return
        for line in lock.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "provider":
                provider = value.strip().strip('"')
                if provider not in ("postgresql", "postgres"):
                    raise MigrationError(
                        f"P3019: {lock} says provider {provider!r}, but the target is PostgreSQL"
                    )

    def _acquire_lock(self, conn) -> None:
        """Take Prisma's advisory lock, polling every ``_poll_s`` seconds for at most
        ``advisory_lock_wait_s`` seconds (prisma-engines waits 10 s, then P1002).

        The error names who holds the lock (pid, ``application_name``, client address,
        since when: ``pg_locks`` joined to ``pg_stat_activity``), so an operator can tell
        a concurrent deploy from a stuck session."""
        started = time.monotonic()
        deadline = started + self.advisory_lock_wait_s
        with conn.cursor() as cur:
            while True:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (PRISMA_ADVISORY_LOCK_KEY,))
                if cur.fetchone()[0]:
                    return
                if time.monotonic() >= deadline:
                    holders = _advisory_lock_holders(cur)
                    raise MigrationError(
                        "P1002: timed out trying to acquire a postgres advisory lock "
                        f"(SELECT pg_advisory_lock({PRISMA_ADVISORY_LOCK_KEY})) on {self.target.describe()} "
                        f"after {time.monotonic() - started:.1f} s (limit {self.advisory_lock_wait_s:g} s): "
                        "another migrate deploy (Prisma or a soak run) holds it"
                        + (f"; held by {holders}" if holders else "")
                    )
                time.sleep(self._poll_s)

    def _ledger_exists(self, conn) -> bool:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{_quote_ident(self.schema)}.\"{LEDGER_TABLE}\"",))
            return bool(cur.fetchone()[0])

    def _initialize(self, conn) -> None:
        if self._ledger_exists(conn):
            return
        with conn.cursor() as cur:
            cur.execute(
                """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')""",
                (self.schema,),
            )
            relations = cur.fetchone()[0]
            cur.execute(
                """SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                   WHERE n.nspname = %s AND t.typtype IN ('e', 'd')""",
                (self.schema,),
            )
            types = cur.fetchone()[0]
            if relations or types:
                raise MigrationError(
                    f"P3005: schema {self.schema} of {self.target.describe()} is not empty "
                    f"({relations} relations, {types} types) but has no {LEDGER_TABLE} table; "
                    "baseline it first (prisma migrate resolve --applied)"
                )
            cur.execute(LEDGER_DDL)
        log.info("created %s in schema %s", LEDGER_TABLE, self.schema)

    def _rows(self, conn) -> list[_Row]:
        with conn.cursor() as cur:
            cur.execute(
                f"""SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at,
                           started_at, applied_steps_count
                    FROM "{LEDGER_TABLE}" ORDER BY started_at ASC"""
            )
            return [_Row(*row) for row in cur.fetchall()]

    def _apply(self, conn, mig: _Local) -> None:
        try:
            script = mig.script.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{mig.path} is not UTF-8: {exc}") from None
        row_id = str(uuid.uuid4())
        with conn.cursor() as cur:
            # Prisma's record_migration_started: committed before the script runs.
            cur.execute(
                f'INSERT INTO "{LEDGER_TABLE}" (id, checksum, started_at, migration_name) VALUES (%s, %s, now(), %s)',
                (row_id, mig.checksum, mig.name),
            )
        log.info("applying %s", mig.name)
        try:
            with conn.cursor() as cur:
                # No parameters: psycopg2 sends the text as one simple query, which the
                # server runs in one implicit transaction.
                cur.execute(script)
        except Exception as exc:
            logs = _error_logs(exc)
            try:
                if conn.get_transaction_status() != _TX_IDLE:
                    with conn.cursor() as cur:  # a script with its own BEGIN left a transaction open
                        cur.execute("ROLLBACK")
                with conn.cursor() as cur:
                    cur.execute(f'UPDATE "{LEDGER_TABLE}" SET logs = %s WHERE id = %s', (logs, row_id))
            except Exception as log_exc:  # the session died with the script (server gone)
                # The row stays failed (finished_at NULL), only without logs: still P3009.
                log.error("could not write the error of %s to %s: %s", mig.name, LEDGER_TABLE,
                          self.target.scrub(str(log_exc)).strip())
            raise MigrationError(
                f"P3018: migration {mig.name} failed to apply; new migrations cannot be applied before "
                f"the error is recovered from (fix it, then mark it rolled back or applied).\n"
                f"Migration name: {mig.name}\n\n{logs}"
            ) from None
        with conn.cursor() as cur:
            cur.execute(
                f'UPDATE "{LEDGER_TABLE}" SET applied_steps_count = applied_steps_count + 1 WHERE id = %s',
                (row_id,),
            )
            cur.execute(f'UPDATE "{LEDGER_TABLE}" SET finished_at = now() WHERE id = %s', (row_id,))


def verify_applied(
    target: PgTarget,
    name: str,
    table: str,
    dropped_columns: Sequence[str],
    schema: str = "public",
) -> datetime:
    """Check that migration ``name`` is in effect: runbook "Hora 0" step 3 and query 2.

    The ledger must have a finished, not rolled-back row for ``name``, and none of
    ``dropped_columns`` may remain on ``schema.table`` in ``information_schema.columns``
    (seed, "Queries de Validación" 2: expected 0 rows).

    Returns that row's ``finished_at`` (hour 0 of the soak). Raises ``MigrationError``
    naming what is wrong (no ledger, not applied, failed, columns still present).
    """
    try:
        conn = target.connect()
    except Exception as exc:
        raise MigrationError(f"cannot connect to {target.describe()}: {target.scrub(str(exc)).strip()}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f'{_quote_ident(schema)}."{LEDGER_TABLE}"',))
            if not cur.fetchone()[0]:
                raise MigrationError(f"no {LEDGER_TABLE} table in schema {schema} of {target.describe()}")
            cur.execute(
                f"""SELECT finished_at, logs FROM {_quote_ident(schema)}."{LEDGER_TABLE}"
                    WHERE migration_name = %s AND rolled_back_at IS NULL
                    ORDER BY started_at DESC LIMIT 1""",
                (name,),
            )
            row = cur.fetchone()
            if row is None:
                raise MigrationError(f"migration {name} is not applied (no live row in {LEDGER_TABLE})")
            finished_at, logs = row
            if finished_at is None:
                raise MigrationError(f"migration {name} is in failed state: {(logs or '').strip()[:500]}")
            cur.execute(
                """SELECT column_name FROM information_schema.columns
                   WHERE table_schema = %s AND table_name = %s AND column_name = ANY(%s)
                   ORDER BY column_name""",
                (schema, table, list(dropped_columns)),
            )
            present = [r[0] for r in cur.fetchall()]
            if present:
                raise MigrationError(
                    f"migration {name} is recorded as applied but {schema}.{table} still has "
                    f"column(s) {', '.join(present)}"
                )
        return finished_at
    finally:
        conn.close()


# -------------------------------------------------------------------- internals


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _error_logs(exc: Exception) -> str:
    """Prisma-like error text for ``logs``: SQLSTATE and the server's message."""
    code = getattr(exc, "pgcode", None)
    message = (getattr(exc, "pgerror", None) or str(exc)).strip()
    if code:
        return f"Database error code: {code}\n\nDatabase error:\n{message}"
    return f"Database error:\n{message}"


def _advisory_lock_holders(cur) -> str:
    """Who holds Prisma's advisory lock: ``pid 123 (application_name 'x', client
    127.0.0.1, state idle, since 2026-...)``; empty when it cannot be read."""
    try:
        cur.execute(
            """SELECT a.pid, a.application_name, host(a.client_addr), a.state, a.backend_start
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0
                 AND l.objid = %s AND l.objsubid = 1 AND l.pid <> pg_backend_pid()""",
            (PRISMA_ADVISORY_LOCK_KEY,),
        )
        rows = cur.fetchall()
    except Exception:  # a diagnostic: never hide the timeout behind it
        return ""
    return "; ".join(
        f"pid {pid} (application_name {app!r}, client {client or 'local socket'}, state {state}, "
        f"session since {since:%Y-%m-%d %H:%M:%S %Z})"
        for pid, app, client, state, since in rows
    )


def _refuse_failed(rows: Sequence[_Row]) -> None:
    failed = [r for r in rows if r.finished_at is None and r.rolled_back_at is None]
    if not failed:
        return
    details = []
    for row in failed:
        logs = (row.logs or "").strip()
        suffix = f" with the following logs:\n{logs}" if logs else ""
        details.append(f"The `{row.migration_name}` migration started at {row.started_at} failed{suffix}")
    raise MigrationError(
        "P3009: migrate found failed migrations in the target database, new migrations will not be "
        "applied. Resolve them first (roll back or finish them, then mark the ledger).\n" + "\n".join(details)
    )


def _states(local: Sequence[_Local], rows: Sequence[_Row]) -> list[MigrationState]:
    by_name: dict[str, list[_Row]] = {}
    for row in rows:
        by_name.setdefault(row.migration_name, []).append(row)
    names = sorted({m.name for m in local} | set(by_name))
    local_by_name = {m.name: m for m in local}
    states = []
    for name in names:
        mig = local_by_name.get(name)
        mine = by_name.get(name, [])  # ordered by started_at
        live = [r for r in mine if r.rolled_back_at is None]
        failed = [r for r in live if r.finished_at is None]
        if failed:
            row = failed[-1]
            state = FAILED
        elif live:
            row = live[-1]
            state = APPLIED
        elif mine:
            row = mine[-1]
            state = ROLLED_BACK
        else:
            row = None
            state = PENDING
        modified = bool(
            mig is not None and row is not None and state == APPLIED and row.checksum
            and not checksum_matches(mig.script, row.checksum)
        )
        states.append(
            MigrationState(
                name=name,
                checksum=mig.checksum if mig else None,
                state=state,
                started_at=row.started_at if row else None,
                finished_at=row.finished_at if row else None,
                rolled_back_at=row.rolled_back_at if row else None,
                applied_steps_count=row.applied_steps_count if row else 0,
                logs=row.logs if row else None,
                db_checksum=row.checksum if row else None,
                modified=modified,
                local=mig is not None,
            )
        )
    return states
