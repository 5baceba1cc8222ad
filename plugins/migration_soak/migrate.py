"""Deploying Prisma migrations with Prisma's own ledger semantics, without Node.

Runbook (seed, "Hora 0", steps 2-3): ``prisma migrate deploy`` then ``migrate status``.
``LedgerBackend`` does what ``migrate deploy`` does (rules from prisma-engines
``apply_migrations.rs`` and ``checksum.rs``), plus two things Prisma does not (issue 9):
nothing session-wide, and lock timeouts retried.

Design notes: docs/design.md#migratepy
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar, runtime_checkable

from migration_soak.exceptions import MigrationError
from migration_soak.pgconn import PLAN_SCHEMA, PgTarget, server_error_text, split_table

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

#: SQLSTATE ``lock_not_available``: ``lock_timeout`` expired (or ``NOWAIT`` failed).
LOCK_NOT_AVAILABLE = "55P03"
#: Backoff between lock attempts: ``LOCK_BACKOFF_BASE_S * 2**(n-1)`` seconds after the
#: n-th failed attempt, at most ``LOCK_BACKOFF_CAP_S``.
LOCK_BACKOFF_BASE_S = 0.5
LOCK_BACKOFF_CAP_S = 30.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class LockAttempt:
    """One try of a lock-bounded transaction (a migration script, the rollback's down SQL,
    a rollback copy batch).

    Fields:
        step: what was tried, e.g. the migration name, ``"down_sql"``, ``"copy batch 3"``.
        attempt: 1-based number of the try.
        outcome: ``ok``, ``lock_timeout`` (SQLSTATE 55P03: the lock was not granted within
            ``lock_timeout``; the transaction rolled back) or ``error`` (anything else;
            not retried).
        elapsed_s: seconds the try took; for ``lock_timeout`` that is the time spent
            waiting for the lock (about one ``lock_timeout``).
        backoff_s: seconds slept after it before the next try (0 when none followed).
        error: the server's message for ``lock_timeout``/``error``, else ``None``.
    """

    step: str
    attempt: int
    outcome: str
    elapsed_s: float
    backoff_s: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON types only."""
        return dict(self.__dict__)


def is_lock_timeout(exc: BaseException) -> bool:
    """True for a PostgreSQL ``lock_not_available`` error (SQLSTATE 55P03)."""
    return getattr(exc, "pgcode", None) == LOCK_NOT_AVAILABLE


def lock_backoff_s(failed_attempt: int) -> float:
    """Seconds to wait after the ``failed_attempt``-th lock timeout (1-based)."""
    return min(LOCK_BACKOFF_CAP_S, LOCK_BACKOFF_BASE_S * 2 ** (failed_attempt - 1))


def run_with_lock_retries(
    step: str,
    attempt_once: Callable[[], _T],
    *,
    retries: int,
    attempts: list[LockAttempt],
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Run ``attempt_once()`` until it does not fail with a lock timeout, at most
    ``1 + retries`` times; every try is appended to ``attempts``.

    ``attempt_once`` runs one whole transaction that sets its own ``lock_timeout``
    (``set_config('lock_timeout', ..., true)``) and leaves the connection idle when it
    raises (rolled back). A lock timeout is retried after ``lock_backoff_s(n)``; any other
    error is recorded and raised at once; the last lock timeout is raised when the tries
    are exhausted (callers name the attempts in their error: ``describe_attempts``).
    """
    number = 0
    while True:
        number += 1
        started = time.monotonic()
        try:
            result = attempt_once()
        except Exception as exc:
            elapsed = round(time.monotonic() - started, 3)
            message = _first_line(exc)
            if is_lock_timeout(exc) and number <= retries:
                backoff = lock_backoff_s(number)
                attempts.append(LockAttempt(step, number, "lock_timeout", elapsed, backoff, message))
                log.warning("%s: lock timeout after %.2f s (attempt %d of %d); retrying in %.1f s",
                            step, elapsed, number, retries + 1, backoff)
                sleep(backoff)
                continue
            attempts.append(LockAttempt(step, number, "lock_timeout" if is_lock_timeout(exc) else "error",
                                        elapsed, 0.0, message))
            raise
        attempts.append(LockAttempt(step, number, "ok", round(time.monotonic() - started, 3)))
        return result


def describe_attempts(attempts: Sequence[LockAttempt]) -> str:
    """``"3 attempts: 1 lock timeout after 3.00 s, backoff 0.5 s; 2 lock timeout ...; 3 ok in 0.02 s"``."""
    parts = []
    for a in attempts:
        if a.outcome == "ok":
            parts.append(f"{a.attempt} ok in {a.elapsed_s:.2f} s")
        else:
            text = f"{a.attempt} {a.outcome.replace('_', ' ')} after {a.elapsed_s:.2f} s"
            parts.append(text + (f", backoff {a.backoff_s:g} s" if a.backoff_s else ""))
    return f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}: " + "; ".join(parts)


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
    ``duration_s`` (seconds, whole deploy including the lock wait), ``attempts`` (every
    run of a migration script, in order, as ``LockAttempt``: one ``ok`` per applied
    migration, preceded by its ``lock_timeout`` tries when it had to be retried).
    """

    applied: tuple[str, ...]
    already_applied: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    duration_s: float = 0.0
    attempts: tuple[LockAttempt, ...] = ()

    @property
    def lock_retries(self) -> int:
        """How many script runs were repeated after a lock timeout."""
        return sum(1 for a in self.attempts if a.outcome == "lock_timeout")

    def to_dict(self) -> dict[str, Any]:
        """JSON types only."""
        return {
            "applied": list(self.applied),
            "already_applied": list(self.already_applied),
            "warnings": list(self.warnings),
            "duration_s": self.duration_s,
            "attempts": [a.to_dict() for a in self.attempts],
            "lock_retries": self.lock_retries,
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
            ``?schema=``, default ``public``); the script's ``search_path`` (set for its
            transaction only).
        lock_timeout_s: PostgreSQL ``lock_timeout`` (seconds) of each run of a migration
            script (set for its transaction only), so an ``ALTER TABLE`` waiting for its
            lock fails after this long instead of queueing the application's queries
            behind it indefinitely (PostgreSQL docs, "lock_timeout"; default 10 s; the
            plan's ``migration.lock_timeout_s``).
        lock_retries: how many more times a script that failed with a lock timeout is
            run (after ``lock_backoff_s`` seconds: 0.5, 1, 2, 4, ...), before its row is
            left failed (the plan's ``migration.lock_retries``; 0: no retry).
        advisory_lock_wait_s: how long to wait for Prisma's advisory lock (seconds;
            Prisma's own timeout is 10 s).
        before_script: ``{migration name: callable(cursor)}`` run inside that
            migration's transaction, after its ``lock_timeout`` is set and before its
            script (``topup.Closing``: the last top-up, under the lock the DDL needs);
            not for a script with its own ``BEGIN``/``COMMIT``. Its lock timeout is retried
            as the script's. A hook with an ``on_commit()`` method has it called once that
            transaction committed (a later migration of the deploy may still fail).

    Give it a direct connection (not through PgBouncer in transaction mode): the advisory
    lock is a session lock, as in Prisma (``directUrl``).
    """

    target: PgTarget
    migrations_dir: Path
    schema: str = "public"
    lock_timeout_s: float = 10.0
    lock_retries: int = 5
    advisory_lock_wait_s: float = 10.0
    before_script: dict[str, Callable[[Any], None]] = field(default_factory=dict, repr=False)
    _poll_s: float = field(default=0.1, repr=False)
    _sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

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
        NULL with the error in ``logs``, and later migrations are not attempted), also
        after ``1 + lock_retries`` lock timeouts. A P3018 error carries the script's
        attempts as ``lock_attempts`` (a tuple of ``LockAttempt.to_dict()``) and names
        them in its message.
        """
        started = time.monotonic()
        local = self._local_migrations()
        self._check_provider()
        conn = self._connect()
        applied: list[str] = []
        warnings: list[str] = []
        attempts: list[LockAttempt] = []
        locked = False
        try:
            self._acquire_lock(conn)
            locked = True
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
            for mig in pending:  # before any of them runs: nothing recorded, nothing changed
                check_own_timeouts(_decoded(mig), f"{mig.path}")
            for mig in pending:
                self._apply(conn, mig, attempts)
                applied.append(mig.name)
        finally:
            self._release(conn, locked)
        result = DeployResult(tuple(applied), already, tuple(warnings), round(time.monotonic() - started, 3),
                              tuple(attempts))
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
        locked = False
        try:
            self._acquire_lock(conn)
            locked = True
            if not self._ledger_exists(conn):
                raise MigrationError(f"no {LEDGER_TABLE} table in schema {self.schema} of {self.target.describe()}")
            with conn.cursor() as cur:
                # A failed row: exactly what `prisma migrate resolve --rolled-back` writes.
                cur.execute(
                    f"UPDATE {self._ledger} SET rolled_back_at = now() "
                    "WHERE migration_name = %s AND rolled_back_at IS NULL AND finished_at IS NULL",
                    (name,),
                )
                resolved = cur.rowcount
                # A finished row: only its absence reads as pending to `migrate status` too.
                cur.execute(
                    f"DELETE FROM {self._ledger} WHERE migration_name = %s AND rolled_back_at IS NULL "
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
            self._release(conn, locked)
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
        conn.autocommit = True  # one statement, one transaction (as Prisma's ledger writes)
        return conn

    @property
    def _ledger(self) -> str:
        """The ledger's schema-qualified name: no statement depends on ``search_path``."""
        return f'{_quote_ident(self.schema)}."{LEDGER_TABLE}"'

    def _release(self, conn, locked: bool) -> None:
        """Give the connection back clean: Prisma's advisory lock released explicitly
        (through a pooler, closing our client would leave it held by the server
        connection), then closed. Nothing else is session-wide."""
        try:
            if locked and not conn.closed:
                if conn.get_transaction_status() != _TX_IDLE:
                    conn.rollback()
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (PRISMA_ADVISORY_LOCK_KEY,))
                    if not cur.fetchone()[0]:
                        log.warning("advisory lock %s was not held at release", PRISMA_ADVISORY_LOCK_KEY)
        except Exception as exc:  # the session is gone: so is its lock
            log.warning("could not release advisory lock %s: %s", PRISMA_ADVISORY_LOCK_KEY,
                        self.target.scrub(str(exc)).strip())
        finally:
            conn.close()

    def _reset_settings(self, conn) -> None:
        """``RESET`` the session settings a script with its own transactions got."""
        try:
            if not conn.closed:
                with conn.cursor() as cur:
                    cur.execute("RESET lock_timeout; RESET search_path")
        except Exception as exc:  # the session is gone: so are its settings
            log.warning("could not reset the session settings: %s", self.target.scrub(str(exc)).strip())

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
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self._ledger,))
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
            cur.execute(LEDGER_DDL.replace(f'CREATE TABLE "{LEDGER_TABLE}"', f"CREATE TABLE {self._ledger}", 1))
        log.info("created %s in schema %s", LEDGER_TABLE, self.schema)

    def _rows(self, conn) -> list[_Row]:
        with conn.cursor() as cur:
            cur.execute(
                f"""SELECT id, checksum, finished_at, migration_name, logs, rolled_back_at,
                           started_at, applied_steps_count
                    FROM {self._ledger} ORDER BY started_at ASC"""
            )
            return [_Row(*row) for row in cur.fetchall()]

    def _apply(self, conn, mig: _Local, attempts: list[LockAttempt]) -> None:
        """Apply one migration: record it started, run its script (retrying lock
        timeouts), record it finished; or leave the row failed and raise P3018."""
        script = _decoded(mig)
        row_id = str(uuid.uuid4())
        lock_timeout = f"{max(1, int(self.lock_timeout_s * 1000))}ms"
        with conn.cursor() as cur:
            # The settings tried first, transaction-local (autocommit: they end with this
            # statement): a value PostgreSQL refuses fails here, before the ledger row.
            try:
                cur.execute("SELECT set_config('lock_timeout', %s, true), set_config('search_path', %s, true)",
                            (lock_timeout, _quote_ident(self.schema)))
            except Exception as exc:
                raise MigrationError(
                    f"migration {mig.name} not started, nothing recorded in {LEDGER_TABLE}: PostgreSQL refuses "
                    f"lock_timeout {lock_timeout} (lock_timeout_s {self.lock_timeout_s:g}) or search_path "
                    f"{self.schema!r}: {_first_line(exc)}") from None
            # Prisma's record_migration_started: committed before the script runs.
            cur.execute(
                f"INSERT INTO {self._ledger} (id, checksum, started_at, migration_name) VALUES (%s, %s, now(), %s)",
                (row_id, mig.checksum, mig.name),
            )
        log.info("applying %s", mig.name)
        mine: list[LockAttempt] = []
        # A script with its own BEGIN/COMMIT may have committed part of itself before a
        # lock timeout: running it again is not safe, so it gets one try. Its settings
        # must outlive its COMMITs, so they are session settings, reset right after it.
        own_tx = _ends_its_own_transaction(script)
        retries = 0 if own_tx else self.lock_retries
        with conn.cursor() as cur:
            # On the script's first line (line numbers in error messages stay the
            # script's); transaction-local unless the script commits on its own.
            prefix = cur.mogrify(
                "SELECT set_config('lock_timeout', %s, %s), set_config('search_path', %s, %s); ",
                (lock_timeout, not own_tx, _quote_ident(self.schema), not own_tx),
            ).decode(_python_encoding(conn))

        before = None if own_tx else self.before_script.get(mig.name)
        if before is not None:
            with conn.cursor() as cur:  # after the hook: its lock_timeout (what is left of it) stands
                hooked = cur.mogrify("SELECT set_config('search_path', %s, true); ",
                                     (_quote_ident(self.schema),)).decode(_python_encoding(conn))

        def run_script() -> None:
            try:
                with conn.cursor() as cur:
                    if before is not None:  # one explicit transaction: the hook, then the script
                        cur.execute("BEGIN")
                        cur.execute(prefix)
                        before(cur)
                    # No parameters: psycopg2 sends the text as one simple query, which
                    # the server runs in one implicit transaction.
                    cur.execute((prefix if before is None else hooked) + script)
                    if before is not None:
                        cur.execute("COMMIT")
                        committed = getattr(before, "on_commit", None)
                        if callable(committed):  # the hook's work now stands with the script's
                            committed()
            except Exception:
                if not conn.closed and conn.get_transaction_status() != _TX_IDLE:
                    with conn.cursor() as cur:  # a script with its own BEGIN left a transaction open
                        cur.execute("ROLLBACK")
                raise
            finally:
                if own_tx:
                    self._reset_settings(conn)

        try:
            run_with_lock_retries(mig.name, run_script, retries=retries, attempts=mine, sleep=self._sleep)
        except Exception as exc:
            attempts.extend(mine)
            logs = _error_logs(exc)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"UPDATE {self._ledger} SET logs = %s WHERE id = %s", (logs, row_id))
            except Exception as log_exc:  # the session died with the script (server gone)
                # The row stays failed (finished_at NULL), only without logs: still P3009.
                log.error("could not write the error of %s to %s: %s", mig.name, LEDGER_TABLE,
                          self.target.scrub(str(log_exc)).strip())
            retried = ""
            if len(mine) > 1 or is_lock_timeout(exc):
                retried = (f"\nLock attempts (lock_timeout {self.lock_timeout_s:g} s, lock_retries "
                           f"{retries}): {describe_attempts(mine)}")
                if own_tx:
                    retried += " (not retried: the script has its own BEGIN/COMMIT)"
            error = MigrationError(
                f"P3018: migration {mig.name} failed to apply; new migrations cannot be applied before "
                f"the error is recovered from (fix it, then mark it rolled back or applied).\n"
                f"Migration name: {mig.name}{retried}\n\n{logs}"
            )
            error.lock_attempts = tuple(a.to_dict() for a in mine)  # type: ignore[attr-defined]
            raise error from None
        attempts.extend(mine)
        with conn.cursor() as cur:
            cur.execute(
                f"UPDATE {self._ledger} SET applied_steps_count = applied_steps_count + 1 WHERE id = %s",
                (row_id,),
            )
            cur.execute(f"UPDATE {self._ledger} SET finished_at = now() WHERE id = %s", (row_id,))


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


def destroyed_by(script: str, schema: str = "public") -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """What ``script`` destroys, parsed by PostgreSQL's grammar (pglast): ``(columns,
    tables)``, each column ``(schema, table, column)`` of an ``ALTER TABLE ... DROP
    COLUMN``, each table ``(schema, table)`` of a ``DROP TABLE``, also inside a ``DO``
    block (function bodies do not run with the migration).

    An unqualified name is in the schema the script's ``search_path`` points to at that
    statement: ``schema`` (the backend's: both run the script with ``search_path`` =
    ``schema``, ``public``) until the script changes it with ``SET [LOCAL] search_path``
    or ``set_config('search_path', ...)`` to one literal schema, which is then followed.
    Raises ``MigrationError`` when the script does not parse, a ``DO`` block cannot be
    read (:func:`_do_block_sql`), or an unqualified name is dropped after the script set a
    ``search_path`` whose schema for it the SQL does not decide (several schemas,
    ``$user``, ``RESET``/``DEFAULT``, a computed value, a ``DO`` block that mentions
    ``search_path``): the error names that statement and asks for qualified names."""
    path = _SearchPath(schema)
    return _destroyed(script, path)


@dataclass
class _SearchPath:
    """The schema unqualified names resolve to in a migration script, as far as its SQL
    says: ``schema``, or ``None`` with ``why`` (the statement that made it unknown)."""

    schema: str | None
    why: str = ""

    def of(self, qualifier: str | None, what: str) -> str:
        if qualifier:
            return qualifier
        if self.schema is None:
            raise MigrationError(
                f"the migration runs {self.why} and then {what} without a schema: which schema that name is in "
                "depends on the search_path, which the SQL does not decide, so what it drops cannot be held "
                "to migration.table; qualify the table name (schema.table) or set search_path to one schema")
        return self.schema

    def unknown(self, why: str) -> None:
        self.schema, self.why = None, why

    def set_to(self, value: str, statement: str) -> None:
        """``value``: a ``search_path`` string (``'app'``, ``'"App", public'``)."""
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if len(parts) == 1 and parts[0] != "$user":
            name = parts[0]
            self.schema = name[1:-1].replace('""', '"') if name.startswith('"') and name.endswith('"') else name.lower()
        else:
            self.unknown(statement)


def _destroyed(script: str, path: _SearchPath) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    from pglast import parse_sql
    from pglast.enums import AlterTableType, ObjectType
    from pglast.parser import ParseError

    try:
        statements = parse_sql(script)
    except ParseError as exc:
        raise MigrationError(f"the migration's SQL does not parse: {exc}") from None
    columns: list[tuple[str, str, str]] = []
    tables: list[tuple[str, str]] = []
    for raw in statements:
        st: Any = raw.stmt
        start = raw.stmt_location or 0
        text = _shown(script[start:start + raw.stmt_len] if raw.stmt_len else script[start:], 80)
        if type(st).__name__ == "DoStmt":  # runs with the migration: what it drops counts
            body_mentions_path = "search_path" in _do_block_text(st).lower()
            for query in _do_block_sql(st):
                more_columns, more_tables = _destroyed(query, path)
                columns += more_columns
                tables += more_tables
            if body_mentions_path:  # PERFORM set_config(...), an assignment, EXECUTE: not followed
                path.unknown(f"a DO block that mentions search_path ({text})")
        elif type(st).__name__ == "VariableSetStmt" and (st.name or "").lower() == "search_path":
            kind = st.kind.name
            values = [_literal(a) for a in st.args or ()]
            if kind == "VAR_SET_VALUE" and values and all(isinstance(v, str) for v in values):
                path.set_to(", ".join(_quoted_if_needed(v) for v in values), text)
            else:
                path.unknown(text)
        elif type(st).__name__ == "VariableSetStmt" and st.kind.name == "VAR_RESET_ALL":
            path.unknown(text)
        elif type(st).__name__ == "AlterTableStmt" and st.objtype == ObjectType.OBJECT_TABLE:
            drops = [c.name for c in st.cmds or () if c.subtype == AlterTableType.AT_DropColumn]
            if drops:
                where = (path.of(st.relation.schemaname, text), st.relation.relname)
                columns += [(*where, c) for c in drops]
        elif type(st).__name__ == "DropStmt" and st.removeType == ObjectType.OBJECT_TABLE:
            for name in st.objects:
                parts = [p.sval for p in name]
                tables.append((path.of(parts[-2] if len(parts) > 1 else None, text), parts[-1]))
        for call in _calls(st, "set_config"):
            args: Sequence[Any] = call.get("args") or ()
            setting = _literal_dict(args[0]) if args else None
            if not isinstance(setting, str):
                path.unknown(f"{text} (set_config with a computed setting name)")
            elif setting.lower() == "search_path":
                value = _literal_dict(args[1]) if len(args) > 1 else None
                if isinstance(value, str):
                    path.set_to(value, text)
                else:
                    path.unknown(text)
    return columns, tables


def _literal(node: Any) -> Any:
    """The value of a pglast ``A_Const`` string node, else ``None``."""
    return _literal_dict(node(skip_none=True)) if node is not None else None


def _literal_dict(arg: Any) -> Any:
    """The string of a literal (``'x'``, ``'x'::text``) in pglast's dict form, else ``None``."""
    while isinstance(arg, dict) and arg.get("@") == "TypeCast":
        arg = arg.get("arg")
    if isinstance(arg, dict) and arg.get("@") == "A_Const":
        val = arg.get("val") or {}
        if val.get("@") == "String":
            return val.get("sval")
    return None


def _quoted_if_needed(name: str) -> str:
    """A ``SET search_path`` argument (already an identifier's value) as a search_path item."""
    return name if name == "$user" else '"' + name.replace('"', '""') + '"'


def _calls(node: Any, name: str) -> list[dict]:
    """Every call of the built-in function ``name`` (bare or ``pg_catalog.``) under ``node``."""
    found = []
    stack = [node(skip_none=True)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("@") == "FuncCall":
                parts = [p.get("sval", "") for p in item.get("funcname") or () if isinstance(p, dict)]
                if parts and parts[-1].lower() == name and (len(parts) == 1 or parts[0].lower() == "pg_catalog"):
                    found.append(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def _do_block_text(st: Any) -> str:
    """The body of a ``DO`` block as written."""
    return "\n".join(a.arg.sval for a in st.args or () if a.defname == "as")


def _do_block_sql(st: Any) -> list[str]:
    """The static SQL statements of a ``DO`` block (PL/pgSQL, parsed by pglast). Raises
    ``MigrationError`` when what it drops cannot be read: another language, or dynamic SQL
    (``EXECUTE``) that mentions ``DROP``."""
    import json
    import re

    from pglast import parse_plpgsql

    args = {a.defname: a.arg.sval for a in st.args or ()}
    language = args.get("language", "plpgsql")
    if language != "plpgsql":
        raise MigrationError(f"the migration has a DO block in {language}: what it drops cannot be read")
    body = args.get("as", "")
    tag = "$soak_do$"
    while tag in body:
        tag = tag[:-1] + "x$"
    try:
        tree = parse_plpgsql(f"CREATE FUNCTION soak_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}")
    except Exception as exc:  # noqa: BLE001 - pglast's errors: the server would refuse the block too
        raise MigrationError(f"the migration's DO block does not parse: {exc}") from None
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "PLpgSQL_stmt_execsql":
                    found.append(value["sqlstmt"]["PLpgSQL_expr"]["query"])
                elif key.startswith("PLpgSQL_stmt_dyn") and re.search(r"\bdrop\b", json.dumps(value), re.I):
                    raise MigrationError("the migration's DO block runs dynamic SQL (EXECUTE) that mentions DROP: "
                                         "what it drops cannot be read, so the plan's dropped_columns cannot be "
                                         "checked against it")
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(tree)
    return found


def check_drops(script: str, table: str, dropped_columns: Sequence[str]) -> None:
    """The plan's ``migration.table`` and ``dropped_columns`` against what the migration's
    ``script`` destroys (:func:`destroyed_by`): the rollback restores those columns of that
    table from the backup and nothing else, so a column it drops and the plan does not
    list would come back with the down SQL's default instead of its values, with "0
    mismatches" (only the listed columns are compared). Raises ``MigrationError`` naming
    the field and the column: one dropped and not listed, one listed and not dropped, a
    column of another table, a dropped table."""
    schema, name = split_table(table)
    columns, tables = destroyed_by(script, PLAN_SCHEMA)
    others = [f"{s}.{t}.{c}" for s, t, c in columns if (s, t) != (schema, name)]
    if tables or others:
        what = ", ".join([f"table {s}.{t}" for s, t in tables] + [f"column {x}" for x in others])
        raise MigrationError(f"migration.table is {table!r}, but the migration drops {what}: the rollback can restore "
                             f"only the dropped_columns of {table!r}")
    dropped = [c for _, _, c in columns]
    unlisted = [c for c in dropped if c not in dropped_columns]
    if unlisted:
        raise MigrationError(f"migration.dropped_columns {list(dropped_columns)} leaves out {unlisted}, which the "
                             "migration drops: the rollback would bring them back empty (the down SQL's default), "
                             "not with their values")
    kept = [c for c in dropped_columns if c not in dropped]
    if kept:
        raise MigrationError(f"migration.dropped_columns lists {kept}, which the migration does not drop "
                             f"(it drops {dropped or 'no column'} of {table!r})")


#: Settings a migration or down SQL may not touch: the soak sets them itself for the DDL's
#: transaction (``migration.lock_timeout_s``), and a script's own value would replace it for
#: the rest of the script (``SET lock_timeout = 0`` lets the DDL queue the application's
#: queries without bound; a session-level ``SET`` outlives the transaction on a pooled
#: server connection). PostgreSQL docs, "SET" and "set_config".
OWN_TIMEOUTS = ("lock_timeout", "statement_timeout")


def _statements(script: str, what: str) -> list[tuple[dict, str]]:
    """``script``'s top-level statements as ``(parse tree as JSON dict, statement text)``,
    parsed by PostgreSQL's grammar (pglast; locations are UTF-8 byte offsets). Raises
    ``MigrationError`` naming ``what`` when it does not parse."""
    import json

    from pglast.parser import ParseError, parse_sql_json

    try:
        tree = json.loads(parse_sql_json(script))
    except ParseError as exc:
        at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else -1  # pglast: (message, index)
        line = ""
        if 0 <= at <= len(script):
            number = script.count("\n", 0, at) + 1
            line = f" (line {number}: {_shown(script.splitlines()[number - 1] if script.splitlines() else '')})"
        raise MigrationError(f"{what} does not parse: {exc}{line}") from None
    data = script.encode("utf-8")
    out = []
    for raw in tree.get("stmts", ()):
        start = raw.get("stmt_location", 0)
        length = raw.get("stmt_len", 0) or len(data) - start
        out.append((raw["stmt"], data[start:start + length].decode("utf-8", "replace").strip()))
    return out


def _shown(statement: str, limit: int = 120) -> str:
    text = " ".join(statement.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _nodes(node: Any, kind: str):
    """Every ``{kind: ...}`` value under the JSON parse tree ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == kind:
                yield value
            yield from _nodes(value, kind)
    elif isinstance(node, list):
        for item in node:
            yield from _nodes(item, kind)


def _body_text(stmt: dict) -> str | None:
    """The body of a ``DO`` block or ``CREATE FUNCTION``/``PROCEDURE`` (its ``AS`` text),
    else ``None``."""
    for kind, key in (("DoStmt", "args"), ("CreateFunctionStmt", "options")):
        if kind in stmt:
            parts = []
            for elem in _nodes(stmt[kind].get(key, []), "DefElem"):
                if elem.get("defname") == "as":
                    parts += [s.get("sval", "") for s in _nodes(elem.get("arg"), "String")]
            return "\n".join(parts)
    return None


def own_timeout_statements(script: str, what: str = "the script") -> list[str]:
    """The statements of ``script`` that set or reset ``lock_timeout`` or
    ``statement_timeout`` (:data:`OWN_TIMEOUTS`), each as its text: ``SET``/``SET LOCAL``/
    ``RESET`` of them and ``RESET ALL`` (also as a function's ``SET`` clause or in ``ALTER
    ROLE/DATABASE ... SET``), a ``set_config()`` call naming one of them or whose setting
    name is not a literal, and a ``DO`` block or function body that mentions either name
    (PL/pgSQL and dynamic SQL are not followed: any mention counts). Parsed by
    PostgreSQL's grammar (pglast). Raises ``MigrationError`` naming ``what`` when the
    script does not parse."""
    import re

    found = []
    for stmt, text in _statements(script, what):
        hit = False
        # ALTER ROLE/DATABASE ... SET holds its VariableSetStmt unwrapped, as "setstmt".
        for node in [*_nodes(stmt, "VariableSetStmt"), *_nodes(stmt, "setstmt")]:
            if node.get("kind") == "VAR_RESET_ALL" or str(node.get("name", "")).lower() in OWN_TIMEOUTS:
                hit = True
        for call in _nodes(stmt, "FuncCall"):
            name = [s.get("sval") for s in _nodes(call.get("funcname", []), "String")]
            if name and str(name[-1]).lower() == "set_config":
                first = (call.get("args") or [{}])[0]
                setting = first.get("A_Const", {}).get("sval", {}).get("sval")
                if setting is None or setting.strip().lower() in OWN_TIMEOUTS:
                    hit = True
        body = _body_text(stmt)
        if body is not None and re.search(r"\b(lock_timeout|statement_timeout)\b", _code_only(body, strings=False),
                                          re.I):
            hit = True
        if hit:
            found.append(text)
    return found


def check_own_timeouts(script: str, what: str) -> None:
    """Refuse a script (``what`` names it: the file) that sets ``lock_timeout`` or
    ``statement_timeout`` itself (:func:`own_timeout_statements`): the soak runs every DDL
    transaction with ``lock_timeout = migration.lock_timeout_s`` (the product rule "no DDL
    may queue the application longer than one ``lock_timeout``"), and a later ``SET`` in
    the script would replace it. Raises ``MigrationError`` naming ``what`` and the first
    such statement, or when the script does not parse."""
    found = own_timeout_statements(script, what)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise MigrationError(
            f"{what} sets its own timeout: {_shown(found[0])}{more}; the soak runs the DDL with lock_timeout = "
            "migration.lock_timeout_s, which this would replace: remove the statement (set "
            "migration.lock_timeout_s instead)")


def transaction_statements(script: str, what: str = "the script") -> list[str]:
    """The transaction-control statements of ``script`` (``BEGIN``, ``COMMIT``,
    ``ROLLBACK``, ``SAVEPOINT``, ``PREPARE TRANSACTION``, ...) at top level, and ``DO``
    blocks or procedure bodies that ``COMMIT``/``ROLLBACK`` (text search), each as its
    text. Raises ``MigrationError`` naming ``what`` when the script does not parse."""
    import re

    found = []
    for stmt, text in _statements(script, what):
        body = _body_text(stmt) if "DoStmt" in stmt else None
        if "TransactionStmt" in stmt or (body is not None and re.search(r"\b(commit|rollback)\b", _code_only(body),
                                                                        re.I)):
            found.append(text)
    return found


def _is_constant(expr: dict) -> bool:
    """A literal, possibly cast (``false``, ``'x'::text``, ``NULL``, ``-1``), or an array
    of them (``ARRAY[]::text[]``)."""
    while "TypeCast" in expr:
        expr = expr["TypeCast"].get("arg", {})
    if "A_ArrayExpr" in expr:
        return all(_is_constant(e) for e in expr["A_ArrayExpr"].get("elements", []))
    return "A_Const" in expr


def is_constant_sql(expression: str) -> bool:
    """Whether the SQL ``expression`` (e.g. ``pg_get_expr`` of a column default) is a
    constant in :func:`_is_constant`'s sense; False when it does not parse."""
    try:
        stmts = _statements(f"SELECT ({expression})", "the expression")
    except MigrationError:
        return False
    targets = stmts[0][0].get("SelectStmt", {}).get("targetList", []) if len(stmts) == 1 else []
    return len(targets) == 1 and _is_constant(targets[0].get("ResTarget", {}).get("val", {}))


def _code_only(body: str, strings: bool = True) -> str:
    """A procedural body without its comments (and, with ``strings``, its string literals):
    a word in a comment or a notice is not a statement."""
    import re

    pattern = r"--[^\n]*|/\*.*?\*/" + (r"|'(?:[^']|'')*'" if strings else "")
    return re.sub(pattern, " ", body, flags=re.S)


def readded_defaults(script: str, table: str, columns: Sequence[str], schema: str = "public",
                     what: str = "the down SQL") -> list[tuple[str, str]]:
    """``(column, DEFAULT expression)`` of each ``ALTER TABLE table ADD COLUMN`` in
    ``script`` that re-adds one of ``columns`` with a DEFAULT that is not a constant (a
    literal, possibly cast): ``now()``, ``CURRENT_TIMESTAMP``, ``gen_random_uuid()``... The
    rollback tells a row the re-add filled from one the application wrote by the value
    the re-add gave existing rows (``pg_attribute.attmissingval``); a volatile default
    rewrites the table under ACCESS EXCLUSIVE and gives every row another value, a
    stable one gives a value no one can name in advance. An unqualified table is in
    ``schema`` (the down SQL runs with ``search_path`` = ``schema``). Raises
    ``MigrationError`` naming ``what`` when the script does not parse."""
    want_schema, want_table = split_table(table, schema)
    found = []
    for stmt, text in _statements(script, what):
        for alter in _nodes(stmt, "AlterTableStmt"):
            rel = alter.get("relation", {})
            if (rel.get("schemaname") or want_schema, rel.get("relname")) != (want_schema, want_table):
                continue
            for cmd in _nodes(alter.get("cmds", []), "AlterTableCmd"):
                col = cmd.get("def", {}).get("ColumnDef")
                if cmd.get("subtype") != "AT_AddColumn" or not col or col.get("colname") not in columns:
                    continue
                for con in _nodes(col.get("constraints", []), "Constraint"):
                    expr = con.get("raw_expr")
                    if con.get("contype") == "CONSTR_DEFAULT" and expr and not _is_constant(expr):
                        found.append((col["colname"], _default_text(text, col["colname"])))
    return found


def _default_text(statement: str, column: str) -> str:
    """The DEFAULT clause's text of ``column`` in ``statement`` (for the message)."""
    import re

    at = statement.find(f'"{column}"')
    at = statement.find(column) if at < 0 else at
    match = re.search(r"\bDEFAULT\s+(.*?)(?=,\s*ADD\b|\s+NOT\s+NULL\b|\s+NULL\b|\s+CHECK\b|\s+REFERENCES\b|"
                      r"\s+UNIQUE\b|\s+PRIMARY\b|\s+COLLATE\b|\s*;|\s*$)", statement[max(at, 0):], re.I | re.S)
    return " ".join(match.group(1).split()) if match else "?"


def check_down_sql(script: str, what: str, table: str, columns: Sequence[str], schema: str = "public") -> None:
    """The rollback's down SQL (``what`` names the file) before it runs, in preflight and
    again in the rollback: it parses (PostgreSQL's grammar, pglast); it has no
    transaction control (a ``COMMIT`` would end the transaction that carries
    ``lock_timeout``: what follows would queue the application without bound); it sets
    no ``lock_timeout``/``statement_timeout`` (:func:`check_own_timeouts`); it re-adds
    none of ``columns`` of ``table`` with a DEFAULT that is not a constant
    (:func:`readded_defaults`). Raises ``MigrationError`` naming the file and the
    statement, column or expression."""
    tx = transaction_statements(script, what)
    if tx:
        raise MigrationError(
            f"{what} has its own transaction control: {_shown(tx[0])}; the rollback runs the down SQL as one "
            "transaction with lock_timeout = migration.lock_timeout_s, and what follows a COMMIT would run without "
            "it: remove BEGIN/COMMIT/ROLLBACK")
    check_own_timeouts(script, what)
    bad = readded_defaults(script, table, columns, schema, what)
    if bad:
        column, expr = bad[0]
        raise MigrationError(
            f"{what} re-adds {table}.{column} with DEFAULT {expr}, not a constant (a volatile or stable default: "
            "it rewrites the table under ACCESS EXCLUSIVE, or gives existing rows a value the rollback cannot tell "
            "from the application's writes): give the column a literal default (e.g. false, 'x'::text) or none")


# -------------------------------------------------------------------- internals


def _ends_its_own_transaction(script: str) -> bool:
    """True when the script has a top-level transaction statement (``BEGIN``, ``COMMIT``,
    ``ROLLBACK``, ``SAVEPOINT``...), parsed by PostgreSQL's grammar (pglast). A script the
    parser rejects counts as not: the server rejects it too, before running any of it."""
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        return any(type(raw.stmt).__name__ == "TransactionStmt" for raw in parse_sql(script))
    except ParseError:
        return False


def _decoded(mig: _Local) -> str:
    try:
        return mig.script.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MigrationError(f"{mig.path} is not UTF-8: {exc}") from None


def _first_line(exc: BaseException) -> str:
    """The server's primary message and SQLSTATE, values removed (``pgconn.server_error_text``:
    a ``LockAttempt`` goes into events and reports), or the first line of ``str(exc)``."""
    return server_error_text(exc)


def _python_encoding(conn) -> str:
    """Python's codec for the connection's client encoding (what psycopg2 encodes with)."""
    from psycopg2.extensions import encodings

    return encodings.get(conn.encoding, "utf-8")


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
    """One state per migration that has a local folder or a ledger row, in name order.

    ``rows``: the whole ledger ordered by ``started_at`` (as ``_rows`` reads it)."""
    by_name = _rows_by_name(rows)
    local_by_name = {m.name: m for m in local}
    names = sorted(set(local_by_name) | set(by_name))
    return [_state_of(name, local_by_name.get(name), by_name.get(name, [])) for name in names]


def _rows_by_name(rows: Sequence[_Row]) -> dict[str, list[_Row]]:
    """The ledger rows grouped by ``migration_name``, each group in ``rows``' order."""
    by_name: dict[str, list[_Row]] = {}
    for r in rows:
        by_name.setdefault(r.migration_name, []).append(r)
    return by_name


def _state_of(name: str, mig: _Local | None, mine: Sequence[_Row]) -> MigrationState:
    """The state of migration ``name`` from its local folder (``None``: missing locally)
    and its ledger rows (``started_at`` order; empty: pending, no ledger fields)."""
    state, row = _deciding_row(mine)
    checksum = mig.checksum if mig else None
    if row is None:
        return MigrationState(name=name, checksum=checksum, state=state, local=mig is not None)
    return MigrationState(
        name=name,
        checksum=checksum,
        state=state,
        started_at=row.started_at,
        finished_at=row.finished_at,
        rolled_back_at=row.rolled_back_at,
        applied_steps_count=row.applied_steps_count,
        logs=row.logs,
        db_checksum=row.checksum,
        modified=_is_modified(mig, row, state),
        local=mig is not None,
    )


def _deciding_row(mine: Sequence[_Row]) -> tuple[str, _Row | None]:
    """``(state, row)`` of one migration from its ledger rows in ``started_at`` order.

    The latest row that is neither finished nor rolled back: ``failed`` (it blocks
    deploys); else the latest row not rolled back: ``applied``; else the latest row:
    ``rolled_back``; no rows: ``pending`` and ``None``."""
    live = [r for r in mine if r.rolled_back_at is None]
    failed = [r for r in live if r.finished_at is None]
    if failed:
        return FAILED, failed[-1]
    if live:
        return APPLIED, live[-1]
    if mine:
        return ROLLED_BACK, mine[-1]
    return PENDING, None


def _is_modified(mig: _Local | None, row: _Row, state: str) -> bool:
    """Prisma's "was modified after it was applied": an ``applied`` migration whose local
    ``migration.sql`` no longer matches the row's checksum (``checksum_matches``); never
    for a row without a checksum or a migration missing locally."""
    if state != APPLIED or mig is None or not row.checksum:
        return False
    return not checksum_matches(mig.script, row.checksum)
