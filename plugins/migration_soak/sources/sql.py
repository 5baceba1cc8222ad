"""``sql`` source: the seed's validation queries, run read-only on the staging database.

Each query runs in a read-only transaction with transaction-local settings, one
statement at a time with the settings checked after each, and is
rolled back (``run_readonly``); files that would escape it are refused first by
``sources.sql_guard``. Not for hostile authors: give the role only ``SELECT``.

Design notes: docs/design.md#sourcessqlpy
"""

from __future__ import annotations

import contextvars
import logging
import re
from contextlib import contextmanager
from typing import Any, Iterator

from migration_soak.exceptions import MeasurementError
from migration_soak.pgconn import APPLICATION_NAME, PgTarget
from migration_soak.plan import SQL_DIR, Check, SqlSource
from migration_soak.sources import Measurement, SourceContext, spec_of, sql_guard

log = logging.getLogger(__name__)

#: ``statement_timeout`` of every check query, in milliseconds (PostgreSQL docs,
#: "statement_timeout": the server cancels a statement running longer, SQLSTATE 57014).
#: Read at each call, so tests may monkeypatch it; ``run_readonly`` also takes it as a
#: parameter.
STATEMENT_TIMEOUT_MS = 30_000
_EXEC_TIME = re.compile(r"Execution Time: ([0-9.]+) ms")
_READ_ONLY_VIOLATION = "25006"
_QUERY_CANCELED = "57014"


#: Open connections by connection id while :func:`one_connection` is active (``None``: a
#: connection per transaction).
_REUSED: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("migration_soak_sql_reused",
                                                                                 default=None)


@contextmanager
def one_connection(held: dict[str, Any] | None = None) -> Iterator[None]:
    """Within the block (one thread), :func:`readonly_transaction` opens one connection per
    connection id and reuses it for each transaction, closing them all at the end: the
    guard's SQL checks of one wake-up share one login (8 ms each on a local server). Each
    reading keeps its own read-only transaction, ``statement_timeout`` and application
    name, all transaction-local and rolled back; a connection that fails its rollback is
    dropped and the next reading opens another.

    ``held``: ``{conn_id: connection}`` that the caller keeps between blocks (the guard's
    trigger, for its life: one login a trigger instead of one a wake-up); its connections
    are reused and left open at the end, idle and outside any transaction, and the caller
    closes them (:func:`close_held`). A held connection the server or the network closed
    meanwhile is replaced at its next use (:func:`readonly_transaction`)."""
    if _REUSED.get() is not None:  # nested: the outer block owns the connections
        yield
        return
    token = _REUSED.set(held if held is not None else {})
    try:
        yield
    finally:
        opened = _REUSED.get() or {}
        _REUSED.reset(token)
        if held is None:
            close_held(opened)


def close_held(held: dict[str, Any]) -> None:
    """Close and forget the connections of ``held`` (see :func:`one_connection`); never raises."""
    for conn in list(held.values()):
        _close_quietly(conn)
    held.clear()


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection: nothing left to do
        pass


def _timeout_ms(given: int | None) -> int:
    """``given``, else ``STATEMENT_TIMEOUT_MS`` (read now: tests monkeypatch it); ``ValueError`` unless positive."""
    timeout_ms = int(STATEMENT_TIMEOUT_MS if given is None else given)
    if timeout_ms <= 0:
        raise ValueError(f"statement_timeout_ms must be positive (0 would disable the timeout), got {timeout_ms}")
    return timeout_ms


@contextmanager
def readonly_transaction(conn_id: str | PgTarget, statement_timeout_ms: int | None = None) -> Iterator[Any]:
    """A cursor in a read-only transaction on the Postgres connection ``conn_id``, or on a
    ``PgTarget`` (a database without an Airflow connection: the rollback rehearsal's
    scratch copy; its own psycopg2 connection, never kept by :func:`one_connection`).

    ``statement_timeout_ms``: milliseconds before the server cancels a statement
    (default ``STATEMENT_TIMEOUT_MS``, read at each call); ``ValueError`` unless positive.
    Uses ``PostgresHook`` (psycopg 3 or psycopg2). Every setting is transaction-local and
    the transaction is always rolled back and the connection closed (kept open for the
    next transaction inside :func:`one_connection`), so nothing is left on a pooled server
    connection. Connection failures propagate as the driver raises
    them (``sources.measure`` turns them into a ``MeasurementError``).
    """
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    timeout_ms = _timeout_ms(statement_timeout_ms)
    # A PgTarget's connection is its own (never kept): only Airflow connection ids are shared.
    key = conn_id if isinstance(conn_id, str) else ""
    reused = _REUSED.get() if isinstance(conn_id, str) else None
    # Any: a psycopg2 or psycopg 3 connection; the provider's CompatConnection protocol
    # does not declare rollback() or close(), which both drivers have.
    conn: Any = reused.get(key) if reused is not None else None
    began = False
    if conn is not None:
        try:  # a connection kept from an earlier transaction: the server may have closed it since
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION READ ONLY")
            began = True
        except Exception:  # noqa: BLE001 - dropped (idle timeout, restart, network): a new login
            log.info("connection %s kept from an earlier reading is gone; opening another", key)
            if reused is not None:
                reused.pop(key, None)
            _close_quietly(conn)
            conn = None
    if conn is None:
        if isinstance(conn_id, PgTarget):
            conn = conn_id.connect()
        else:
            conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
            if reused is not None:
                reused[key] = conn
    try:
        with conn.cursor() as cur:
            if not began:
                # First statement of the implicit transaction (psycopg2 and psycopg 3 alike).
                cur.execute("SET TRANSACTION READ ONLY")
            # LOCAL: both end with our rollback, so the next client of a pooled server
            # connection never inherits them. The name keeps the soak's own queries out of
            # the database log's slow-query checks (the same name as PgTarget and the
            # pg_dump/pg_restore children).
            # set_config(..., true) is SET LOCAL; one statement for both saves a round trip
            # (the guard runs two readings a minute for 24 h).
            cur.execute("SELECT set_config('statement_timeout', %s, true), set_config('application_name', %s, true)",
                        (str(timeout_ms), APPLICATION_NAME))
            yield cur
    finally:
        kept = False
        try:
            conn.rollback()
            kept = reused is not None and reused.get(key) is conn
        finally:
            if not kept:
                if reused is not None and reused.get(key) is conn:
                    del reused[key]
                conn.close()


def run_readonly(conn_id: str | PgTarget, sql: str, *, statement_timeout_ms: int | None = None) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` read-only on the Postgres connection ``conn_id`` (or a ``PgTarget``: the
    rollback rehearsal's scratch copy runs its validation queries here too, with the same
    timeout and read-back); returns (columns, rows) of its last statement that returns rows
    (``([], [])`` when none does).

    ``statement_timeout_ms``: milliseconds before the server cancels a statement
    (default ``STATEMENT_TIMEOUT_MS``). The transaction is :func:`readonly_transaction`'s.

    The file runs one top-level statement at a time (split by PostgreSQL's grammar,
    ``sql_guard.texts``), under a savepoint. After each statement the soak's settings
    (:data:`WATCHED`: ``statement_timeout``, ``transaction_read_only``,
    ``application_name``, the role) must be as the soak set them: a statement that changed
    one (through a function ``sql_guard`` cannot see into) fails the reading before the
    next statement starts, so no statement runs without the soak's ``statement_timeout``
    whatever the file calls (the statement that changed it was already bounded: the
    server arms the timeout when a statement starts). The rollback undoes the change.

    Raises ``MeasurementError`` when ``sql`` is refused before it runs
    (``sql_guard.check``: ``query refused before it ran: statement N of M (line L: ...):
    why``; nothing is sent to the database), when a statement changed the soak's settings
    (``query refused: statement N of M (...) changed ...``), and when the database refuses
    or cancels the query: a write (``... in a read-only transaction``, SQLSTATE 25006),
    the timeout (SQLSTATE 57014), any other SQL error (with its SQLSTATE and first line).
    Connection failures propagate as the driver raises them (``sources.measure`` turns
    them into a ``MeasurementError``).
    """
    timeout_ms = _timeout_ms(statement_timeout_ms)
    try:
        sql_guard.check(sql)
        texts = sql_guard.texts(sql)
    except sql_guard.UnsafeSql as exc:
        raise MeasurementError(f"query refused before it ran: {exc}") from None
    columns: list[str] = []
    rows: list[tuple] = []
    with readonly_transaction(conn_id, timeout_ms) as cur:
        # the transaction's start (changes if the file ends it), our advisory locks and
        # the soak's settings as set for this transaction
        began, locks_before, settings = _session_state(cur)
        cur.execute("SAVEPOINT migration_soak_check")
        failure: MeasurementError | None = None
        changed: str | None = None
        locks_after: set[tuple] = locks_before
        now = began
        try:
            for number, text in enumerate(texts, start=1):
                cur.execute(text)
                if cur.description:
                    columns = [d.name for d in cur.description]
                    rows = cur.fetchall()
                # One round trip a statement: after the last one it is also the final check.
                now, locks_after, after = _session_state(cur)
                changed = _changed_settings(settings, after)
                if changed or now != began:
                    if changed:
                        stmt = sql_guard.statements(sql)[number - 1]
                        changed = f"{stmt.describe(len(texts))} changed {changed}"
                    break
        except Exception as exc:
            code = _sqlstate(exc)
            if code is None:
                raise
            failure = MeasurementError(_describe_sql_error(code, exc, timeout_ms))
            # Back to before the file, so what it left can still be looked at.
            cur.execute("ROLLBACK TO SAVEPOINT migration_soak_check")
            now, locks_after, _ = _session_state(cur)
        if now != began:
            raise MeasurementError(
                "query refused: it ended the soak's read-only transaction (COMMIT/ROLLBACK/END in the "
                "SQL file); whatever it did inside that transaction may have been committed"
            )
        leaked = _release_new_session_locks(cur, locks_after - locks_before)
        if changed:
            raise MeasurementError(
                f"query refused: {changed}, which the soak sets for its read-only transaction (through a "
                "function the guard cannot see into): no reading is taken from a file that turns the soak's "
                "settings off; the rest of the file did not run and the rollback undid the change"
                + (f" (it also took session-level advisory lock(s) {leaked}, released again)" if leaked else "")
            )
        if leaked:
            raise MeasurementError(
                f"query refused: it took session-level advisory lock(s) {leaked}, which outlive the "
                "transaction on a pooled connection (released again); use pg_advisory_xact_lock"
            )
        if failure is not None:
            raise failure
    return columns, rows


#: The settings a check file must leave as the soak set them (``readonly_transaction``),
#: read after each of its statements; the role too (``SET ROLE`` through a function).
WATCHED = ("statement_timeout", "transaction_read_only", "application_name", "role")

# One row per advisory lock our backend holds (one row of NULLs when none), each with the
# transaction's now() and the WATCHED settings: one round trip before the file and one
# after each of its statements.
_SESSION_STATE = ("SELECT now()::text, current_setting('statement_timeout'), current_setting('transaction_read_only'), "
                  "current_setting('application_name'), current_user::text, "
                  "l.classid::bigint, l.objid::bigint, l.objsubid, l.mode FROM (SELECT 1) o "
                  "LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted")
_SETTINGS = slice(1, 1 + len(WATCHED))


def _session_state(cur: Any) -> tuple[str, set[tuple], tuple[str, ...]]:
    """``(now() as text, {(classid, objid, objsubid, mode)}: the advisory locks our backend
    holds, the WATCHED settings' values)``."""
    cur.execute(_SESSION_STATE)
    rows = cur.fetchall()
    first = rows[0]
    return first[0], {tuple(r[_SETTINGS.stop:]) for r in rows if r[_SETTINGS.stop] is not None}, tuple(first[_SETTINGS])


def _changed_settings(before: tuple[str, ...], after: tuple[str, ...]) -> str | None:
    """``"statement_timeout '300ms' -> '0'"`` (each WATCHED setting that differs), else ``None``."""
    diffs = [f"{name} {a!r} -> {b!r}" for name, a, b in zip(WATCHED, before, after) if a != b]
    return ", ".join(diffs) or None


def _release_new_session_locks(cur: Any, new: set[tuple]) -> list[str]:
    """Release ``new``: the advisory locks our backend holds now and did not hold before the
    file ran; returns the keys of those that were session-level (transaction-level ones end
    with the rollback: ``pg_advisory_unlock`` does not release those and returns false)."""
    released = []
    for classid, objid, objsubid, mode in sorted(new):
        shared = "_shared" if mode == "ShareLock" else ""
        if objsubid == 1:  # one bigint key: high and low halves
            key = (classid << 32) | objid
            args: tuple = (key - (1 << 64) if key >= 1 << 63 else key,)
        else:  # two int4 keys
            args = tuple(v - (1 << 32) if v >= 1 << 31 else v for v in (classid, objid))
        params = "%s::bigint" if len(args) == 1 else "%s::int, %s::int"
        call = f"SELECT pg_advisory_unlock{shared}({params})"
        count = 0
        while count < 10_000:
            cur.execute(call, args)
            if not cur.fetchone()[0]:
                break
            count += 1
        if count:
            released.append(", ".join(map(str, args)))
    return released


def _sqlstate(exc: Exception) -> str | None:
    """SQLSTATE of a server error: ``pgcode`` (psycopg2) or ``sqlstate`` (psycopg 3)."""
    return getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None)


def _describe_sql_error(code: str, exc: Exception, timeout_ms: int) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if code == _READ_ONLY_VIOLATION:
        return f"query refused: check queries run read-only ({first}; SQLSTATE {code})"
    if code == _QUERY_CANCELED:
        return f"query cancelled after statement_timeout {timeout_ms} ms ({first}; SQLSTATE {code})"
    return f"query failed: {first} (SQLSTATE {code})"


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Run the check's ``.sql`` file on ``ctx.staging`` and take its value (see ``SqlSource``
    and :func:`value_of`). A scheduled reading (``ctx`` with run, store, phase and tick)
    shares the file's result with every check reading that file at that tick
    (``Store.shared_result``: one query per SQL file per tick); cells are kept as JSON
    (numbers, text). Evidence adds ``query_measured_at`` and ``query_run_by`` then.

    Raises ``MeasurementError`` for an empty result or a NULL cell, and when the query is
    refused or cancelled (see ``run_readonly``), naming the check and the file.
    """
    src = spec_of(check, SqlSource)
    conn_id = ctx.need_staging(check)
    sql = (SQL_DIR / src.sql).read_text(encoding="utf-8")

    def run() -> dict[str, Any]:
        columns, rows = run_readonly(conn_id, sql)
        return {"columns": columns, "rows": [[_jsonable(v) for v in r] for r in rows]}

    try:
        if not _shared(check, ctx):
            result = run()
            shared: dict[str, Any] = {}
        else:
            result, measured_at, ran = ctx.store.shared_result(ctx.run_id, src.sql, ctx.phase, ctx.tick, run)
            shared = {"query_measured_at": measured_at.isoformat(), "query_run_by": "this check" if ran else
                      "another check of the same tick (one query per SQL file per tick)"}
    except MeasurementError as exc:
        raise MeasurementError(f"{check.id}: {src.sql}: {exc}") from None
    m = value_of(check, result["columns"], [tuple(r) for r in result["rows"]])
    return Measurement(m.value, {**m.evidence, **shared}) if shared else m


def _shared(check: Check, ctx: SourceContext) -> bool:
    """Whether this reading shares its file's result: a scheduled reading in a run whose
    phase has another check reading the same file (else there is no one to share with)."""
    if ctx.run_id is None or ctx.store is None or ctx.phase is None or ctx.tick is None or ctx.plan is None:
        return False
    src = spec_of(check, SqlSource)
    readers = [c for c in ctx.plan.checks_in(ctx.phase)
               if isinstance(c.source, SqlSource) and c.source.sql == src.sql]
    return len(readers) > 1


def value_of(check: Check, columns: list[str], rows: list[tuple]) -> Measurement:
    """The check's value from its query's result (see ``SqlSource``): a cell, the row count,
    an ``EXPLAIN ANALYZE`` "Execution Time" (ms) or a ratio of two cells (0..1).

    Raises ``MeasurementError`` for an empty result, a NULL cell or a missing column.
    Also used by the rollback rehearsal (``rehearsal.py``) on its scratch database.
    """
    src = spec_of(check, SqlSource)
    if src.measure == "explain_ms":
        return _explain_ms(check, src, rows)
    evidence: dict[str, Any] = {"sql": src.sql, "columns": columns, "rows": [[_jsonable(v) for v in r] for r in rows[:20]]}
    if src.measure == "rows":
        return Measurement(float(len(rows)), evidence)
    if not rows:
        raise MeasurementError(f"{check.id}: {src.sql} returned no row")
    row = dict(zip(columns, rows[0]))
    if src.measure == "ratio":
        num, den = _ratio(check, src, columns, row)
        if src.window_minutes is not None:
            # event counts: the rules judge the rate by their 95 % limits (rules._counts)
            evidence.update(numerator=num, denominator=den, window_s=src.window_minutes * 60)
        return Measurement(num / den, evidence)
    if src.window_minutes is not None:  # a count of the window's events: judge.window_coverage reads it
        evidence["window_s"] = src.window_minutes * 60
    return Measurement(_cell(check, src, columns, row), evidence)


def _explain_ms(check: Check, src: SqlSource, rows: list[tuple]) -> Measurement:
    """The "Execution Time" (ms) of an ``EXPLAIN ANALYZE`` output (one line per row); the
    evidence keeps the plan's last 2000 characters. Raises ``MeasurementError`` without one."""
    plan_text = "\n".join(r[0] for r in rows)
    found = _EXEC_TIME.search(plan_text)
    if not found:
        raise MeasurementError(f"{check.id}: no 'Execution Time' in the EXPLAIN ANALYZE output")
    return Measurement(float(found.group(1)), {"sql": src.sql, "plan": plan_text[-2000:]})


def _ratio(check: Check, src: SqlSource, columns: list[str], row: dict[str, Any]) -> tuple[float, float]:
    """``(numerator, denominator)`` of the first ``row`` (column name -> cell). Raises
    ``MeasurementError`` when either is missing or NULL, or the denominator is 0."""
    # Plan validation requires both names for a ratio; a missing one reads as absent.
    num = row.get(src.numerator) if src.numerator else None
    den = row.get(src.denominator) if src.denominator else None
    if num is None or den is None:
        raise MeasurementError(f"{check.id}: columns {src.numerator!r}/{src.denominator!r} not in {columns}")
    if den == 0:
        raise MeasurementError(f"{check.id}: {src.denominator} is 0, the ratio is undefined")
    return float(num), float(den)


def _cell(check: Check, src: SqlSource, columns: list[str], row: dict[str, Any]) -> float:
    """The cell of ``src.column`` (default: the first column) of the first ``row``. Raises
    ``MeasurementError`` when the column is missing or the cell is NULL."""
    column = src.column or columns[0]
    if column not in row:
        raise MeasurementError(f"{check.id}: column {column!r} not in {columns}")
    if row[column] is None:
        raise MeasurementError(f"{check.id}: {column} is NULL")
    return float(row[column])


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
