"""Rolling back a column drop: re-add the columns, copy their values back from the backup.

Runbook (seed, "Procedimiento de Rollback en Staging", step 2). :func:`restore_columns`:
stage the dump, re-add (short ACCESS EXCLUSIVE, ``lock_timeout``, retried), copy in
batches, verify. Values written after re-adding win; idempotent and resumable; nothing
outlives the call on a pooled connection. The caller marks the ledger rolled back.

Design notes: docs/design.md#rollbackpy
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Sequence

from psycopg2 import sql

from migration_soak import archive
from migration_soak.backup import BackupRecord, tool_path, verify_backup
from migration_soak.exceptions import BackupError, RollbackError
from migration_soak.exceptions import MigrationError
from migration_soak.migrate import (LockAttempt, check_down_sql, describe_attempts, is_constant_sql, is_lock_timeout,
                                    run_with_lock_retries)
from migration_soak.pgconn import PgTarget, server_error_text

log = logging.getLogger(__name__)

SCRATCH_SCHEMA = "soak_rollback"
#: The table a ``rebuild`` builds is ``<table>`` + this suffix, with this table comment until
#: the swap: a leftover that carries it (a killed rebuild's) is dropped by the next rollback
#: of either method (:func:`drop_rebuild_leftovers`); any other table of that name is not ours.
REBUILD_NEW_SUFFIX = "_soak_new"
REBUILD_MARKER = "migration-soak rebuild in progress; dropped by the next rollback"
#: Session advisory lock (two-key form) that keeps two rollbacks from sharing the scratch
#: schema; distinct from Prisma's single-key 72707369. Released explicitly at the end.
ROLLBACK_LOCK = (0x534F414B, 1)  # "SOAK", 1
#: Keys per copy batch (one transaction each).
DEFAULT_BATCH_SIZE = 20_000
#: pg_dump's output settings (pg_dump.c, ``setup_connection``): the staged backup text was
#: written under them, so under them a restored value's ``::text`` is comparable with it
#: byte for byte (the verification's rule, ``_differs``). pg_dump leaves TimeZone and
#: bytea_output as the session has them; so do we, and ``_differs`` compares values of
#: those types as values when their text differs.
DUMP_TEXT_OUTPUT = "SET LOCAL DateStyle = 'ISO'; SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 3"
#: Base types (no typmod) whose text depends on a setting pg_dump does not pin.
_SESSION_TEXT_TYPES = ("timestamp with time zone", "bytea")
#: Transaction-local settings of each copy batch (they end with its transaction):
#: - the staged text is typed input and the batch's check compares text: pg_dump's
#:   output settings (``DUMP_TEXT_OUTPUT``);
#: - the batch's plan is index lookups on the key (staged key range -> table key -> table
#:   key): left alone, the planner hashed the batch and read the whole table twice per
#:   batch (bench/README.md#rollback_scalepy-the-rollback-at-scale-against-the-naive-path);
#: - ``synchronous_commit = off``: a batch's commit does not wait for its WAL flush. A
#:   server crash can lose the last batches committed (at most about 3 x
#:   ``wal_writer_delay``): only our own restored values, which a rerun fills again (the
#:   copy is resumable); the caller's next synchronous commit (the ledger's mark) flushes
#:   them first.
_BATCH_SETTINGS = (DUMP_TEXT_OUTPUT + "; "
                   "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
                   "SET LOCAL synchronous_commit = off")
_HEADER_LINES_MAX = 10_000
_END_OF_DATA = b"\\.\n"
_TX_IDLE = 0  # psycopg2.extensions.TRANSACTION_STATUS_IDLE


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore_columns`` restored and proved.

    Fields:
        table: ``schema.table`` restored, e.g. ``"public.users"``.
        columns: the restored columns, e.g. ``("passwordHash", "emailVerified")``.
        rows_at_backup: rows of the table in the backup.
        rows_matched: of those, rows present now (joined on the key); the others were
            deleted after the backup.
        rows_not_in_backup: rows present now with no row in the backup (inserted after
            the backup); their restored columns keep NULL/the column default.
        rows_updated: rows this call wrote (the matched rows on a first run; 0 on a
            rerun after a complete restore).
        values_restored: column values this call copied from the backup (a written
            row's columns that still held the re-added value).
        values_kept: values that differ from the backup because they were written after
            the columns were re-added; left as found (docs/design.md#rollbackpy).
        mismatches: matched rows where a restored column's value (not one written since
            the re-add) does not read back as the backup's text: still the re-added value,
            or the backup's changed by the cast to the re-added type (a narrower
            ``varchar(n)``, a rounding ``numeric``/``timestamp`` precision); always 0 in a
            returned result (``_verify`` raises instead).
        batches: copy batches run (``batch_size`` keys each).
        lock_attempts: ``LockAttempt``s of the down SQL (every try) and of the copy
            batches that hit a lock timeout (their tries); the down SQL's last one is
            ``ok``.
        duration_s: wall seconds of the whole call (re-verification included).
        stage_s: seconds spent staging the backup's rows into the scratch table.
        restore_s: seconds from the down SQL to the end of verification (retries and
            backoffs included): ``ddl_s`` <= ... <= ``restore_s``.
        ddl_s: seconds of the down SQL's successful transaction (its lock wait
            included): the longest the table was held ACCESS EXCLUSIVE by this call.
        copy_s: seconds of the batched copy.
        verify_s: seconds of the final verification.
        method: ``copy`` (``restore_columns``) or ``rebuild`` (``rebuild.rebuild_columns``:
            ``batches`` are then its catch-up rounds, ``ddl_s`` its swap).
        swap_s: ``rebuild`` only: seconds of the swap transaction (its lock wait
            included), the longest ACCESS EXCLUSIVE on the table after the down SQL; 0.0
            for ``copy``.
        topup_rows: rows whose values came from the top-up (written after the backup,
            copied just before the DDL: ``topup.py``), counted in ``rows_at_backup``.
        topup_taken_at: when the top-up's snapshot was read (ISO-8601 UTC); ``None``:
            no top-up (values written between the backup and the DDL are not restored).
    """

    table: str
    columns: tuple[str, ...]
    rows_at_backup: int
    rows_matched: int
    rows_not_in_backup: int
    rows_updated: int
    values_restored: int
    mismatches: int
    duration_s: float
    stage_s: float
    restore_s: float
    values_kept: int = 0
    batches: int = 0
    lock_attempts: tuple[LockAttempt, ...] = ()
    ddl_s: float = 0.0
    copy_s: float = 0.0
    verify_s: float = 0.0
    method: str = "copy"
    swap_s: float = 0.0
    topup_rows: int = 0
    topup_taken_at: str | None = None

    @property
    def lock_retries(self) -> int:
        """Tries repeated after a lock timeout (down SQL and copy batches)."""
        return sum(1 for a in self.lock_attempts if a.outcome == "lock_timeout")

    def to_dict(self) -> dict[str, Any]:
        """JSON types only."""
        out = dict(self.__dict__)
        out["columns"] = list(self.columns)
        out["lock_attempts"] = [a.to_dict() for a in self.lock_attempts]
        out["lock_retries"] = self.lock_retries
        return out


#: ``restore`` event payloads recorded before the counts were named for rows, not users.
_OLD_COUNT_KEYS = {"rows_at_backup": "users_at_backup", "rows_matched": "users_matched",
                   "rows_not_in_backup": "users_not_in_backup"}


def restored_count(payload: dict[str, Any], key: str) -> Any:
    """``payload[key]`` of a ``RestoreResult.to_dict()`` (``rows_at_backup``, ``rows_matched``,
    ``rows_not_in_backup``), read under its old ``users_*`` name in events stored before the
    rename; ``None`` when neither is there."""
    return payload.get(key, payload.get(_OLD_COUNT_KEYS.get(key, key)))


def restored_table(payload: dict[str, Any]) -> str:
    """The restored table's own name (``"public.users"`` -> ``"users"``), for texts that
    count rows in the table's terms; ``"the table"`` when the payload names none."""
    return str(payload.get("table") or "the table").rsplit(".", 1)[-1]


def restore_summary(payload: dict[str, Any]) -> str:
    """``restored 200000 values for 100000 of 100000 rows of users present at backup time
    or written up to the top-up ...; 0 mismatches`` from a ``RestoreResult.to_dict()`` (the
    restore event, the post-mortem): what came back, from what, and what could not."""
    t = restored_table(payload)
    text = (f"restored {payload.get('values_restored')} values for {restored_count(payload, 'rows_matched')} of "
            f"{restored_count(payload, 'rows_at_backup')} rows of {t} present at backup time")
    after = "the backup"
    if payload.get("topup_taken_at"):
        text += (f" or written up to the top-up read just before the migration ({payload['topup_taken_at']}; "
                 f"{payload.get('topup_rows', 0)} rows from it)")
        after = "the top-up"
    text += f"; {payload.get('mismatches')} mismatches"
    if not payload.get("topup_taken_at") and "topup_taken_at" in payload:  # older events have no such key
        text += "; no top-up was taken: values written between the backup and the migration are not restored"
    not_in = restored_count(payload, "rows_not_in_backup")
    if not_in:
        text += f"; {not_in} rows of {t} inserted after {after} keep NULL or the column default"
    if payload.get("values_kept"):
        text += f"; {payload['values_kept']} newer values written by the app after the re-add kept"
    return text


@dataclass(frozen=True)
class _Column:
    name: str
    type: str  # format_type(), e.g. "boolean", "character varying(255)"
    readded: str | None  # the value the down SQL gave existing rows, as text (None: NULL)


def restore_columns(
    target: PgTarget,
    backup: BackupRecord,
    pg_bin_dir: Path | None,
    *,
    down_sql: Path,
    table: str,
    columns: Sequence[str],
    key: str = "id",
    schema: str = "public",
    lock_timeout_s: float = 3.0,
    lock_retries: int = 5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    timeout_s: float = 6 * 3600.0,
    topup: Any = None,
    _sleep: Callable[[float], None] = time.sleep,
) -> RestoreResult:
    """Re-add ``columns`` of ``schema.table`` and restore their values from ``backup``.

    Args:
        target: the database to repair (a direct connection, see docs/design.md#rollbackpy).
        backup: the pre-migration ``BackupRecord``; re-verified first (read whole,
            SHA-256 equal to ``backup.sha256``, table data present).
        pg_bin_dir: folder of ``pg_restore`` (``None``: from ``PATH``).
        down_sql: the down migration that re-adds the columns, e.g.
            ``include/sql/rollback/20251202020032_update_user_schema_final.down.sql``;
            it must be re-runnable (``ADD COLUMN IF NOT EXISTS``) and runs with
            ``search_path`` = ``schema``.
        table, columns, key, schema: what to restore, joined on ``key`` (the primary
            key): the plan's ``migration.table``, ``migration.dropped_columns`` and
            ``migration.key``; no default, so no plan gets another plan's columns.
        lock_timeout_s: ``lock_timeout`` (seconds) of the down SQL's transaction and of
            each copy batch (the plan's ``migration.lock_timeout_s``).
        lock_retries: how many more times a transaction that hit ``lock_timeout_s`` is
            tried, after 0.5, 1, 2, ... s (the plan's ``migration.lock_retries``).
        batch_size: keys per copy batch (one transaction each).
        timeout_s: bound (seconds) on the ``pg_restore`` read-back.
        topup: the ``topup.TopUp`` the ``migrate`` task took just before the DDL (rows
            written after the backup: their values come from it), or ``None``.

    Rows present now but absent from the backup keep NULL/defaults; rows deleted since
    the backup stay deleted; values written after the re-add are kept (docs/design.md#rollbackpy).

    Returns a ``RestoreResult`` with ``mismatches == 0``. Raises ``RollbackError`` naming
    the step that failed (backup re-verification, staging, down SQL (also after
    ``1 + lock_retries`` lock timeouts, naming each try), missing column, a batch's
    verification, the final verification); the error carries ``lock_attempts`` (tuple of
    ``LockAttempt.to_dict()``). Up to the down SQL nothing is changed; after it, the
    columns stay re-added and the committed batches stay: a rerun completes the job.
    """
    started = time.monotonic()
    columns = tuple(columns)
    if not columns:
        raise RollbackError("no columns to restore")
    if batch_size < 1:
        raise RollbackError(f"batch_size must be at least 1, not {batch_size}")
    qualified = f"{schema}.{table}"
    if backup.path is None:
        raise RollbackError(f"backup {backup.location or '?'} has no local copy: fetch it first "
                            "(backup_storage.fetched)")
    try:
        verify_backup(backup.path, pg_bin_dir, expected_sha256=backup.sha256,
                      required_tables=(qualified,), timeout_s=timeout_s)
    except BackupError as exc:
        raise RollbackError(f"backup failed re-verification, nothing restored: {exc}") from None
    down_path = Path(down_sql)
    try:
        down_text = down_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RollbackError(f"cannot read down SQL {down_path}: {exc}") from None

    try:
        conn = target.connect()
    except Exception as exc:
        raise RollbackError(f"cannot connect to {target.describe()}: {target.scrub(str(exc)).strip()}") from None
    scratch = sql.Identifier(SCRATCH_SCHEMA, f"{table}_backup")
    tbl = sql.Identifier(schema, table)
    encoding = conn.encoding
    attempts: list[LockAttempt] = []
    locked = staging = False
    topup_rows = 0
    try:
        _lock(conn, target)
        locked = True  # from here on the scratch schema is ours to drop
        drop_rebuild_leftovers(conn, schema, table, lock_timeout_s, lock_retries, attempts, _sleep)
        staging = True  # from here on the scratch schema may exist
        t0 = time.monotonic()
        rows_streamed = _stage(conn, target, backup.path, pg_bin_dir, schema, table, key, columns, scratch, timeout_s)
        if topup is not None:
            topup_rows = _overlay(conn, scratch, schema, table, key, columns, topup)
            rows_streamed = _staged_rows(conn, scratch)
        stage_s = time.monotonic() - t0
        t1 = time.monotonic()
        ddl_s = _readd(conn, down_text, down_path, qualified, schema, lock_timeout_s, lock_retries, attempts, _sleep,
                       columns=columns)
        key_col, cols = _column_info(conn, tbl, schema, table, key, columns, down_path)
        _refuse_lossy(conn, qualified, tbl, scratch, key_col, cols)
        t2 = time.monotonic()
        batches, rows_updated, values_restored = _copy(
            conn, qualified, tbl, scratch, key_col, cols, batch_size, lock_timeout_s, lock_retries, attempts, _sleep)
        copy_s = time.monotonic() - t2
        t3 = time.monotonic()
        counts = _verify(conn, qualified, tbl, scratch, key_col, cols, rows_streamed)
        verify_s = time.monotonic() - t3
        restore_s = time.monotonic() - t1
        _drop_scratch(conn)
    except RollbackError as exc:
        if locked and staging:
            _drop_scratch_quietly(conn, lock_timeout_s)
        exc.lock_attempts = tuple(a.to_dict() for a in attempts)  # type: ignore[attr-defined]
        raise
    except Exception as exc:  # psycopg2 errors and the like
        if locked and staging:
            _drop_scratch_quietly(conn, lock_timeout_s)
        error = RollbackError(f"rollback of {qualified} failed: {target.scrub(server_error_text(exc))}")
        error.lock_attempts = tuple(a.to_dict() for a in attempts)  # type: ignore[attr-defined]
        raise error from None
    finally:
        _release(conn, target, locked, encoding)
    out = RestoreResult(
        table=qualified,
        columns=columns,
        duration_s=round(time.monotonic() - started, 3),
        stage_s=round(stage_s, 3),
        restore_s=round(restore_s, 3),
        rows_updated=rows_updated,
        values_restored=values_restored,
        batches=batches,
        lock_attempts=tuple(attempts),
        ddl_s=round(ddl_s, 3),
        copy_s=round(copy_s, 3),
        verify_s=round(verify_s, 3),
        topup_rows=topup_rows,
        topup_taken_at=topup.taken_at if topup is not None else None,
        **counts,  # type: ignore[arg-type]  # _verify's int counts
    )
    log.info("rollback of %s: %s", qualified, out.to_dict())
    return out


#: The plan's ``migration.rollback_method`` values and what each runs.
ROLLBACK_METHODS = ("copy", "rebuild")


def restore_by_method(method: str, target: PgTarget, backup: BackupRecord, pg_bin_dir: Path | None,
                      **kwargs: Any) -> RestoreResult:
    """``restore_columns`` (``method == "copy"``) or ``rebuild.rebuild_columns``
    (``"rebuild"``) with the same arguments; the one place the plan's
    ``migration.rollback_method`` is dispatched (runbook step 2, the rehearsal). Raises
    ``RollbackError`` for another method, and whatever the chosen function raises."""
    if method == "copy":
        return restore_columns(target, backup, pg_bin_dir, **kwargs)
    if method == "rebuild":
        from migration_soak.rebuild import rebuild_columns

        return rebuild_columns(target, backup, pg_bin_dir, **kwargs)
    raise RollbackError(f"unknown rollback_method {method!r} (one of {', '.join(ROLLBACK_METHODS)})")


# ----------------------------------------------------------------------- steps


def _lock(conn, target: PgTarget) -> None:
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", ROLLBACK_LOCK)
        if not cur.fetchone()[0]:
            raise RollbackError(f"another rollback is running on {target.describe()} (advisory lock {ROLLBACK_LOCK})")
    conn.autocommit = False


def _release(conn, target: PgTarget, locked: bool, encoding: str) -> None:
    """Leave nothing on the session, then close it: the advisory lock released
    explicitly, the client encoding put back (through a pooler the server connection
    outlives our client)."""
    try:
        if not conn.closed:
            if conn.get_transaction_status() != _TX_IDLE:
                conn.rollback()
            conn.autocommit = True
            if locked:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock(%s, %s)", ROLLBACK_LOCK)
            if conn.encoding != encoding:
                conn.set_client_encoding(encoding)
    except Exception as exc:  # the session is gone: so are its lock and settings
        log.warning("could not release the rollback's session cleanly: %s", target.scrub(server_error_text(exc)))
    finally:
        conn.close()


def pg_restore_data_argv(pg_restore: Path, dump: Path, schema: str, table: str) -> list[str]:
    """The exact ``pg_restore`` command line that streams one table's rows to stdout.

    ``pg_restore --data-only --schema=<schema> --table=<table> --file=- DUMP``: its
    output is a script whose data part is ``COPY schema.table (cols) FROM stdin;``, the
    rows in COPY text format, and ``\\.``. It reads the file only: no connection, no
    password. A compressed ``DUMP`` (``archive``) is not named: it is decompressed into
    the tool's stdin, which pg_restore reads forward to the table's data block.
    """
    return archive.restore_argv(_data_argv(pg_restore, schema, table), dump)


def _data_argv(pg_restore: Path, schema: str, table: str) -> list[str]:
    """``pg_restore_data_argv`` without the archive (``archive.restoring`` adds it or feeds stdin)."""
    return [str(pg_restore), "--data-only", f"--schema={schema}", f"--table={table}", "--file=-"]


def _stage(conn, target, dump: Path, pg_bin_dir, schema, table, key, columns, scratch, timeout_s) -> int:
    """Transaction 1: scratch schema, streamed COPY, key index. Returns the rows staged."""
    try:
        pg_restore = tool_path("pg_restore", pg_bin_dir)
    except BackupError as exc:
        raise RollbackError(str(exc)) from None
    argv = _data_argv(pg_restore, schema, table)
    try:
        with tempfile.TemporaryFile() as errfile, archive.restoring(argv, dump, stdout=subprocess.PIPE,
                                                                     stderr=errfile) as proc:
            try:
                assert proc.stdout is not None
                encoding, header = _read_header(proc.stdout, f"{schema}.{table}")
                _, header_cols = parse_copy_header(header)
                missing = [c for c in (key, *columns) if c not in header_cols]
                if missing:
                    raise RollbackError(f"the backup's {schema}.{table} has no column(s) {', '.join(missing)}")
                conn.set_client_encoding(encoding)  # the dump's rows are in the dump's encoding
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCRATCH_SCHEMA)))
                    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCRATCH_SCHEMA)))
                    cur.execute(
                        sql.SQL("CREATE TABLE {} ({})").format(
                            scratch,
                            sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in header_cols),
                        )
                    )
                    body = CopyBody(proc.stdout)
                    cur.copy_expert(sql.SQL("COPY {} FROM STDIN").format(scratch).as_string(conn), body)
                    if not body.finished:
                        raise RollbackError(f"pg_restore output of {schema}.{table} ended before the end-of-data marker")
                try:
                    code = proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise RollbackError(f"pg_restore of {schema}.{table} did not finish within {timeout_s:.0f} s") from None
                if code != 0:
                    errfile.seek(0)
                    tail = target.scrub(errfile.read().decode("utf-8", "replace").strip())[-1500:]
                    raise RollbackError(f"pg_restore of {schema}.{table} from {dump} failed (exit {code}): {tail}")
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
    except BackupError as exc:  # the compressed file does not decompress whole
        raise RollbackError(f"pg_restore of {schema}.{table}: {exc}") from None
    except OSError as exc:
        raise RollbackError(f"pg_restore of {schema}.{table} could not start: {exc}") from None
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(scratch))
        loaded = cur.fetchone()[0]
        if loaded != body.rows:
            raise RollbackError(f"staged {loaded} rows of {schema}.{table} but the backup streamed {body.rows}")
        cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(scratch, sql.Identifier(key)))
        cur.execute(sql.SQL("ANALYZE {}").format(scratch))
    conn.commit()
    return body.rows


def _overlay(conn, scratch, schema: str, table: str, key: str, columns: Sequence[str], topup: Any) -> int:
    """The top-up (``topup.TopUp``: the dropped columns of rows written after the backup,
    copied just before the DDL) laid over the staged backup: those rows' staged values
    replaced, rows inserted since the backup added. Returns the top-up's rows. Raises
    ``RollbackError`` when it is of another table or columns, or does not read back whole."""
    from migration_soak.increment import _copy_in
    from migration_soak.topup import open_file

    if topup.table != f"{schema}.{table}" or topup.key != key or tuple(topup.columns) != tuple(columns):
        raise RollbackError(f"the top-up {topup.location} holds {topup.table} ({topup.key}, "
                            f"{', '.join(topup.columns)}), not {schema}.{table} ({key}, {', '.join(columns)})")
    part = sql.Identifier(SCRATCH_SCHEMA, f"{table}_topup")
    cols = sql.SQL(", ").join(map(sql.Identifier, (key, *columns)))
    conn.set_client_encoding(topup.encoding)  # the COPY text's own encoding
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(
                part, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in (key, *columns))))
            _copy_in(cur, open_file(topup), sql.SQL("COPY {} FROM STDIN").format(part), topup.sha256, topup.rows)
            cur.execute(sql.SQL("DELETE FROM {s} s USING {p} t WHERE s.{k} = t.{k}").format(
                s=scratch, p=part, k=sql.Identifier(key)))
            cur.execute(sql.SQL("INSERT INTO {s} ({c}) SELECT {c} FROM {p}").format(s=scratch, c=cols, p=part))
            cur.execute(sql.SQL("DROP TABLE {}").format(part))
            cur.execute(sql.SQL("ANALYZE {}").format(scratch))
        conn.commit()
    except BackupError as exc:
        _rollback_quietly(conn)
        raise RollbackError(f"the top-up of {schema}.{table} cannot be read, nothing restored: {exc}") from None
    return int(topup.rows)


def _set_local(cur, lock_timeout_s: float, search_path: str | None = None) -> None:
    """Transaction-local settings (they end with the transaction, on any pooler)."""
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, int(lock_timeout_s * 1000))}ms",))
    if search_path is not None:
        cur.execute("SELECT set_config('search_path', %s, true)", ('"' + search_path.replace('"', '""') + '"',))


def _short_transaction(conn, step: str, body: Callable[[Any], object], *, lock_timeout_s: float, lock_retries: int,
                       attempts: list[LockAttempt], sleep: Callable[[float], None], locks: str, name: str | None = None,
                       search_path: str | None = None) -> float:
    """``body(cursor)`` alone in one transaction under ``lock_timeout`` (and ``search_path``),
    lock timeouts retried (``run_with_lock_retries`` as ``name``, default ``step``); the
    tries are appended to ``attempts``. Returns the seconds of the successful try. Raises
    ``RollbackError``: "<step> could not lock <locks> within ..." after the last lock
    timeout, "<step> failed: ..." for any other error."""

    def once() -> None:
        try:
            with conn.cursor() as cur:
                _set_local(cur, lock_timeout_s, search_path)
                body(cur)
            conn.commit()
        except Exception:
            conn.rollback()
            raise

    mine: list[LockAttempt] = []
    try:
        run_with_lock_retries(name or step, once, retries=lock_retries, attempts=mine, sleep=sleep)
    except Exception as exc:
        attempts.extend(mine)
        if is_lock_timeout(exc):
            raise RollbackError(
                f"{step} could not lock {locks} within {lock_timeout_s:g} s (lock_timeout) "
                f"in {describe_attempts(mine)}; the application holds it: retry"
            ) from None
        raise RollbackError(f"{step} failed: {server_error_text(exc)}") from None
    attempts.extend(mine)
    return mine[-1].elapsed_s


def _readd(conn, down_text, down_path, qualified, schema, lock_timeout_s, lock_retries, attempts, sleep, *,
           columns: Sequence[str]) -> float:
    """Step 2: the down SQL alone in a short transaction, lock timeouts retried.
    Returns the seconds of the successful try (the ACCESS EXCLUSIVE window).

    Before it runs, the down SQL is checked as preflight checks it (``migrate.check_down_sql``):
    no transaction control (what follows a ``COMMIT`` would run without ``lock_timeout``), no
    ``lock_timeout``/``statement_timeout`` of its own, no non-constant DEFAULT on a re-added
    ``columns`` column. Raises ``RollbackError`` naming the file and the statement (the table
    not touched), or as ``_short_transaction`` does."""
    try:
        check_down_sql(down_text, f"down SQL {down_path}", qualified[len(schema) + 1:], columns, schema)
    except MigrationError as exc:
        raise RollbackError(f"{exc}; refused before it ran: {qualified} unchanged") from None
    return _short_transaction(conn, f"down SQL {down_path.name}", lambda cur: cur.execute(down_text),
                              lock_timeout_s=lock_timeout_s, lock_retries=lock_retries, attempts=attempts,
                              sleep=sleep, locks=qualified, name="down_sql", search_path=schema)


def drop_rebuild_leftovers(conn, schema: str, table: str, lock_timeout_s: float, lock_retries: int,
                           attempts: list[LockAttempt], sleep: Callable[[float], None]) -> list[str]:
    """What a killed ``rebuild`` left, dropped before either method starts: its capture
    triggers (:func:`drop_capture_triggers`) and ``<table>_soak_new`` when it carries
    ``REBUILD_MARKER`` (a full copy of the table; any other table of that name is left
    alone), in a short transaction under ``lock_timeout`` (retried). Returns what was dropped
    (``"<table> <trigger>"``, ``"<schema>.<table>_soak_new"``). Raises ``RollbackError`` when
    a drop cannot get its lock in ``1 + lock_retries`` tries."""
    dropped = drop_capture_triggers(conn, lock_timeout_s, lock_retries, attempts, sleep)
    name = table + REBUILD_NEW_SUFFIX
    new = sql.Identifier(schema, name)
    with conn.cursor() as cur:
        cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (new.as_string(conn),))
        row = cur.fetchone()
    conn.commit()
    if row and row[0] == REBUILD_MARKER:
        def drop(cur: Any) -> None:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(new))

        _short_transaction(conn, f"dropping {schema}.{name}, a killed rebuild's table", drop,
                           lock_timeout_s=lock_timeout_s, lock_retries=lock_retries, attempts=attempts, sleep=sleep,
                           locks=f"{schema}.{name}")
        log.warning("dropped %s.%s, left by a killed rebuild", schema, name)
        dropped.append(f"{schema}.{name}")
    return dropped


def drop_capture_triggers(conn, lock_timeout_s: float, lock_retries: int, attempts: list[LockAttempt],
                          sleep: Callable[[float], None]) -> list[str]:
    """Drop the triggers whose function lives in the scratch schema (a killed
    ``rebuild``'s capture triggers, on any table), each in a short transaction under
    ``lock_timeout`` (retried): the staging's ``DROP SCHEMA ... CASCADE`` would otherwise
    drop them while queueing for their table's ACCESS EXCLUSIVE with no timeout, the
    application's reads queued behind it. Returns ``"<table> <trigger>"`` of each dropped.
    Raises ``RollbackError`` when one cannot get its lock in ``1 + lock_retries`` tries."""
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        cur.execute("""SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t
                       JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
                       WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY 1, 2""", (SCRATCH_SCHEMA,))
        found = cur.fetchall()
    conn.commit()
    dropped = []
    for table, name in found:
        statement = sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), sql.SQL(table))

        def drop(cur: Any, statement: sql.Composable = statement) -> None:
            cur.execute(statement)

        _short_transaction(conn, f"dropping the trigger {name} a killed rebuild left on {table}", drop,
                           lock_timeout_s=lock_timeout_s, lock_retries=lock_retries, attempts=attempts, sleep=sleep,
                           locks=table)
        log.warning("dropped trigger %s on %s, left by a killed rebuild", name, table)
        dropped.append(f"{table} {name}")
    return dropped


def _column_info(conn, tbl, schema, table, key, columns, down_path) -> tuple[_Column, list[_Column]]:
    """The key's and the restored columns' types, and the value the re-add gave existing rows.

    That value is read from the catalog, not worked out again: ``ADD COLUMN ... DEFAULT``
    with a non-volatile default stores the value it gave the rows already there in
    ``pg_attribute.attmissingval`` (``atthasmissing``; PostgreSQL 11+, docs "ALTER TABLE",
    Notes), written once in the down SQL's transaction; evaluating the default again later
    gives another value for ``now()``/``CURRENT_TIMESTAMP`` and matches no row. A column
    without a default was re-added NULL (``readded`` None). Called right after the down SQL
    committed.

    A column this run's down SQL did not re-add (it was never dropped: a migration that
    failed part-way; or the rebuilt table of an earlier run) has no stored missing value:
    a constant default (``migrate.is_constant_sql``) is then evaluated, as it gives the
    same value at any time.

    Raises ``RollbackError`` (nothing restored yet) when a column is missing, or has a
    non-constant default but no stored missing value: a volatile default (``gen_random_uuid()``,
    ``random()``, ``clock_timestamp()``: the table was rewritten, each row got its own
    value) or a table rewritten since the re-add; its re-added values cannot be told from
    values the application wrote."""
    qualified = f"{schema}.{table}"
    with conn.cursor() as cur:
        cur.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid),
                      a.atthasmissing, CASE WHEN a.atthasmissing THEN a.attmissingval::text END
               FROM pg_attribute a
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
                 AND a.attname = ANY(%s)""",
            (tbl.as_string(conn), [key, *columns]),
        )
        found = {name: (typ, default, hasmissing, missing) for name, typ, default, hasmissing, missing in cur.fetchall()}
        missing_cols = [c for c in (key, *columns) if c not in found]
        if missing_cols:
            raise RollbackError(
                f"{qualified} has no column(s) {', '.join(missing_cols)} after the down SQL {down_path.name}"
            )
        cols = []
        for name in columns:
            typ, default, hasmissing, missing = found[name]
            readded = None
            if hasmissing:
                # attmissingval is a one-element array of the column's type, as text;
                # read back through the type's own input (the catalog's type name).
                cur.execute(sql.SQL("SELECT (%s::{}[])[1]::text").format(sql.SQL(typ)), (missing,))
                readded = cur.fetchone()[0]
            elif default is not None and is_constant_sql(default):
                # not re-added by this run's down SQL (never dropped: a partial migration;
                # or a rebuilt table on a rerun): a constant default is the same value now
                cur.execute(sql.SQL("SELECT (({})::{})::text").format(sql.SQL(default), sql.SQL(typ)))
                readded = cur.fetchone()[0]
            elif default is not None:
                raise RollbackError(
                    f"{qualified}.{name} has a default ({default}) but no value stored for the rows the down SQL "
                    f"{down_path.name} re-added it to (pg_attribute.atthasmissing is false): a volatile default, or "
                    "the table was rewritten since; its re-added values cannot be told from values written since, "
                    "so nothing is restored: give the down SQL a constant default or none"
                )
            cols.append(_Column(name, typ, readded))
    conn.commit()
    return _Column(key, found[key][0], None), cols


def _at_readded(alias: str, col: _Column, param: str) -> sql.Composable:
    """``alias.col IS NOT DISTINCT FROM %(param)s::type``: the column still holds the value
    the re-add gave it."""
    return sql.SQL("{a}.{c} IS NOT DISTINCT FROM {p}::{t}").format(
        a=sql.Identifier(alias), c=sql.Identifier(col.name), p=sql.Placeholder(param), t=sql.SQL(col.type))


def _from_backup(col: _Column) -> sql.Composable:
    """The backup's value cast to the re-added type (``b.col::type``: an explicit cast, which
    truncates ``varchar(n)`` and rounds numerics and timestamps: never the proof)."""
    return sql.SQL("b.{c}::{t}").format(c=sql.Identifier(col.name), t=sql.SQL(col.type))


def _differs(value: sql.Composable, text: sql.Composable, col: _Column) -> sql.Composable:
    """``value`` (of the re-added type) does not read back as the backup's ``text`` (the
    staged dump text; NULL for NULL): the value's output text (``format('%s', v)``: the
    type's output function, as COPY writes it; ``v::text`` is not that for every type:
    boolean gives ``true``, not ``t``, ``char(n)`` drops trailing spaces, inet adds
    ``/32``) differs from it under ``DUMP_TEXT_OUTPUT``, so a lossy cast (``varchar(12)``,
    ``timestamp(0)``, ``numeric(10,2)``, another type) counts. For types whose text depends
    on a setting pg_dump leaves to the session (``_SESSION_TEXT_TYPES``) a differing text
    still equals when the values are equal in the unconstrained type (the same instant
    written in another time zone; bytea in escape format)."""
    differs = sql.SQL("(CASE WHEN ({v}) IS NULL THEN NULL ELSE format('%%s', {v}) END) IS DISTINCT FROM {b}").format(
        v=value, b=text)
    base = re.sub(r"\([^)]*\)", "", col.type)
    if base in _SESSION_TEXT_TYPES:
        differs = sql.SQL("({d} AND ({v}) IS DISTINCT FROM ({b})::{t})").format(d=differs, v=value, b=text,
                                                                            t=sql.SQL(base))
    return differs


def _lost(alias: str, col: _Column, param: str) -> sql.Composable:
    """Row ``alias`` (joined to staged row ``b``) holds, in ``col``, the re-added value or
    the backup's value as cast, and that does not read back as the backup's text: a value
    the restore did not give back (a value written since the re-add is neither, and kept)."""
    return sql.SQL("(({at} OR {a}.{c} IS NOT DISTINCT FROM {b}) AND {differs})").format(
        at=_at_readded(alias, col, param), a=sql.Identifier(alias), c=sql.Identifier(col.name), b=_from_backup(col),
        differs=_differs(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(col.name)),
                         sql.SQL("b.{}").format(sql.Identifier(col.name)), col))


def _needs_fill(cols: Sequence[_Column]) -> sql.Composable:
    """Live row ``u`` (joined to staged row ``b``) still holds the re-added value in a column
    where that does not read back as the backup's text: the rows a restore writes."""
    return sql.SQL(" OR ").join(
        sql.SQL("({at} AND {differs})").format(
            at=_at_readded("u", c, f"d{i}"),
            differs=_differs(sql.SQL("u.{}").format(sql.Identifier(c.name)), sql.SQL("b.{}").format(
                sql.Identifier(c.name)), c))
        for i, c in enumerate(cols)
    )


def lossy_counts(cols: Sequence[_Column]) -> sql.Composable:
    """Per column, ``count(*)`` of live rows ``u`` (joined to staged row ``b``) still at the
    re-added value whose backup value, cast to the re-added type, does not read back as the
    backup's text (truncated, rounded, another type): values a restore would lose. Run under
    ``DUMP_TEXT_OUTPUT``, params ``d<i>`` the re-added values."""
    return sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {at} AND {differs})").format(
            at=_at_readded("u", c, f"d{i}"),
            differs=_differs(_from_backup(c), sql.SQL("b.{}").format(sql.Identifier(c.name)), c))
        for i, c in enumerate(cols))


def _refuse_lossy(conn, qualified, tbl, scratch, key: _Column, cols) -> None:
    """Step 2b: before the first copy batch, refuse when the re-added type cannot hold
    every backup value (``lossy_counts``): found per batch, the batches before the first
    lossy value would stay committed. Raises ``RollbackError`` naming columns and counts,
    never a value; nothing copied, the columns stay re-added."""
    join = sql.SQL("u.{k} = b.{k}::{t}").format(k=sql.Identifier(key.name), t=sql.SQL(key.type))
    try:
        with conn.cursor() as cur:
            cur.execute(DUMP_TEXT_OUTPUT)
            cur.execute(sql.SQL("SELECT {lossy} FROM {tbl} u JOIN {scratch} b ON {join}").format(
                lossy=lossy_counts(cols), tbl=tbl, scratch=scratch, join=join),
                {f"d{i}": c.readded for i, c in enumerate(cols)})
            per_column = cur.fetchone()
    finally:
        conn.rollback()
    if any(per_column):
        raise RollbackError(
            f"restore of {qualified} refused before the copy (the columns stay re-added, nothing copied): "
            f"{sum(per_column)} backup values do not read back as the backup's in the re-added type "
            f"({describe_lost(cols, per_column)}): the cast would truncate or round them; give the column its "
            "type at backup time and rerun")


def describe_lost(cols: Sequence[_Column], counts: Sequence[int]) -> str:
    """``passwordHash: 3900 values (re-added as character varying(12))``: how many values of
    which column differ from the backup's, never the values."""
    return "; ".join(f"{c.name}: {n} value{'s' if n != 1 else ''} (re-added as {c.type})"
                     for c, n in zip(cols, counts) if n)


def _copy(conn, qualified, tbl, scratch, key: _Column, cols, batch_size, lock_timeout_s, lock_retries,
          attempts, sleep) -> tuple[int, int, int]:
    """Step 3: fill the re-added columns batch by batch. Returns (batches, rows written,
    values restored)."""
    params = {f"d{i}": c.readded for i, c in enumerate(cols)}
    k = sql.Identifier(key.name)
    join = sql.SQL("u.{k} = b.{k}::{t}").format(k=k, t=sql.SQL(key.type))
    needs_fill = _needs_fill(cols)
    # todo: the batch's rows that still need a value, locked (FOR UPDATE re-reads a row a
    # concurrent writer changed, so f<i> says whether column i still holds the re-added
    # value when we hold the row); written: those columns set from the backup, the others
    # kept; RETURNING reads the stored row (after any BEFORE trigger) to prove it: its text
    # must be the backup's (r<i>, the staged text; ``_differs``), so neither a trigger nor a
    # lossy cast to the re-added type passes.
    batch_sql = sql.SQL(
        """WITH todo AS (
               SELECT u.{k} AS k, {todo_cols}
               FROM {tbl} u JOIN {scratch} b ON {join}
               WHERE {lower}b.{k} <= %(hi)s AND ({needs_fill})
               FOR UPDATE OF u
           ), written AS (
               UPDATE {tbl} u SET {assign} FROM todo WHERE u.{k} = todo.k
               RETURNING {bad}, {filled} AS filled
           )
           SELECT count(*), coalesce(sum(filled), 0), count(*) FILTER (WHERE {any_bad}), {bad_counts}
           FROM written"""
    )
    parts = dict(
        k=k, tbl=tbl, scratch=scratch, join=join, needs_fill=needs_fill,
        todo_cols=sql.SQL(", ").join(
            sql.SQL("{b} AS {v}, b.{c} AS {r}, {at} AS {f}").format(
                b=_from_backup(c), v=sql.Identifier(f"v{i}"), c=sql.Identifier(c.name), r=sql.Identifier(f"r{i}"),
                at=_at_readded("u", c, f"d{i}"), f=sql.Identifier(f"f{i}"))
            for i, c in enumerate(cols)
        ),
        assign=sql.SQL(", ").join(
            sql.SQL("{c} = CASE WHEN todo.{f} THEN todo.{v} ELSE u.{c} END").format(
                c=sql.Identifier(c.name), f=sql.Identifier(f"f{i}"), v=sql.Identifier(f"v{i}"))
            for i, c in enumerate(cols)
        ),
        bad=sql.SQL(", ").join(
            sql.SQL("(todo.{f} AND {differs}) AS {bad}").format(
                f=sql.Identifier(f"f{i}"), bad=sql.Identifier(f"bad{i}"),
                differs=_differs(sql.SQL("u.{}").format(sql.Identifier(c.name)),
                                 sql.SQL("todo.{}").format(sql.Identifier(f"r{i}")), c))
            for i, c in enumerate(cols)
        ),
        any_bad=sql.SQL(" OR ").join(sql.Identifier(f"bad{i}") for i in range(len(cols))),
        bad_counts=sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(sql.Identifier(f"bad{i}"))
                                      for i in range(len(cols))),
        filled=sql.SQL(" + ").join(sql.SQL("todo.{}::int").format(sql.Identifier(f"f{i}")) for i in range(len(cols))),
    )
    # The first batch has no lower bound (any text, '' too, may be a key).
    first_batch = batch_sql.format(lower=sql.SQL(""), **parts)
    next_batch = batch_sql.format(lower=sql.SQL("b.{} > %(lo)s AND ").format(k), **parts)
    first_hi = sql.SQL("SELECT max(k) FROM (SELECT {k} AS k FROM {s} ORDER BY {k} LIMIT %s) x").format(k=k, s=scratch)
    next_hi = sql.SQL("SELECT max(k) FROM (SELECT {k} AS k FROM {s} WHERE {k} > %s ORDER BY {k} LIMIT %s) x").format(
        k=k, s=scratch)

    batches = rows = values = 0
    lo: str | None = None
    while True:
        with conn.cursor() as cur:
            if lo is None:
                cur.execute(first_hi, (batch_size,))
            else:
                cur.execute(next_hi, (lo, batch_size))
            hi = cur.fetchone()[0]
        conn.commit()
        if hi is None:
            return batches, rows, values
        batches += 1
        bounds = {"lo": lo, "hi": hi, **params}
        lo_text = "(start)" if lo is None else repr(lo)

        def once() -> tuple[int, int, int]:
            try:
                with conn.cursor() as cur:
                    _set_local(cur, lock_timeout_s)
                    cur.execute(_BATCH_SETTINGS)
                    cur.execute(first_batch if lo is None else next_batch, bounds)
                    written, filled, bad, *per_column = cur.fetchone()
                if bad:
                    raise RollbackError(
                        f"verification of {qualified} failed in copy batch {batches} (keys {lo_text} to {hi!r}), "
                        f"batch not committed: {bad} rows differ from the backup after the UPDATE "
                        f"({written} updated; values that do not read back as the backup's: "
                        f"{describe_lost(cols, per_column)}): a trigger rewrote them, or the re-added type cannot "
                        "hold them (truncated, rounded: give the column its type at backup time); the columns stay "
                        "re-added and earlier batches stay, a rerun completes the copy once the cause is gone"
                    )
                conn.commit()
                return written, filled, bad
            except BaseException:
                conn.rollback()
                raise

        mine: list[LockAttempt] = []
        try:
            written, filled, _ = run_with_lock_retries(f"copy batch {batches}", once, retries=lock_retries,
                                                       attempts=mine, sleep=sleep)
        except RollbackError:
            raise
        except Exception as exc:
            attempts.extend(mine)
            if is_lock_timeout(exc):
                raise RollbackError(
                    f"copy batch {batches} of {qualified} (keys {lo_text} to {hi!r}) could not lock its rows within "
                    f"{lock_timeout_s:g} s (lock_timeout) in {describe_attempts(mine)}; earlier batches stay, "
                    "a rerun completes the copy"
                ) from None
            raise
        if len(mine) > 1:
            attempts.extend(mine)
        rows += written
        values += filled
        lo = hi


def _verify(conn, qualified, tbl, scratch, key: _Column, cols, staged_rows) -> dict[str, int]:
    """Step 4: one snapshot over the staged copy: every value not written since the re-add
    reads back as the backup's text (``_lost``: 0 of them still at the re-added value where
    the backup differs, 0 changed by the cast to the re-added type); the counts."""
    params = {f"d{i}": c.readded for i, c in enumerate(cols)}
    join = sql.SQL("u.{k} = b.{k}::{t}").format(k=sql.Identifier(key.name), t=sql.SQL(key.type))
    lost = [_lost("u", c, f"d{i}") for i, c in enumerate(cols)]
    kept = sql.SQL(" + ").join(
        sql.SQL("(u.{c} IS DISTINCT FROM {b} AND NOT {at})::int").format(
            c=sql.Identifier(c.name), b=_from_backup(c), at=_at_readded("u", c, f"d{i}"))
        for i, c in enumerate(cols)
    )
    with conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur.execute(DUMP_TEXT_OUTPUT)
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(scratch))
        at_backup = cur.fetchone()[0]
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tbl))
        now_total = cur.fetchone()[0]
        cur.execute(
            sql.SQL("""SELECT count(*), count(*) FILTER (WHERE {any_lost}), coalesce(sum({kept}), 0), {per_column}
                       FROM {tbl} u JOIN {scratch} b ON {join}""").format(
                any_lost=sql.SQL(" OR ").join(lost), kept=kept, tbl=tbl, scratch=scratch, join=join,
                per_column=sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(x) for x in lost)),
            params,
        )
        matched, mismatches, values_kept, *per_column = cur.fetchone()
    conn.commit()
    if mismatches or at_backup != staged_rows:
        lost_text = (f" ({describe_lost(cols, per_column)}): still the re-added value, or the backup's value changed "
                     "by the cast to the re-added type (truncated, rounded) or by a trigger") if mismatches else ""
        raise RollbackError(
            f"verification of {qualified} failed: {mismatches} rows hold values that do not read back as the "
            f"backup's{lost_text} ({matched} matched, {at_backup} staged of {staged_rows}); a rerun completes a "
            "copy that stopped, a type that cannot hold the backup's values needs the column's type at backup time"
        )
    return {
        "rows_at_backup": at_backup,
        "rows_matched": matched,
        "rows_not_in_backup": now_total - matched,
        "mismatches": mismatches,
        "values_kept": int(values_kept),
    }


def _staged_rows(conn, scratch) -> int:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(scratch))
        n = int(cur.fetchone()[0])
    conn.commit()
    return n


def _drop_scratch(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCRATCH_SCHEMA)))
    conn.commit()


def _drop_scratch_quietly(conn, lock_timeout_s: float) -> None:
    """Drop the scratch schema after a failure, under ``lock_timeout`` (``CASCADE`` may
    reach a table through a trigger left behind); a failure is only logged."""
    try:
        if conn.closed:
            return
        conn.rollback()
        with conn.cursor() as cur:
            _set_local(cur, lock_timeout_s)
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCRATCH_SCHEMA)))
        conn.commit()
    except Exception:  # cleanup of a failure path: the original error matters more
        _rollback_quietly(conn)
        log.warning("could not drop scratch schema %s after a failed rollback", SCRATCH_SCHEMA, exc_info=True)


def _rollback_quietly(conn) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone: nothing is left to undo
        pass


# -------------------------------------------------------------- COPY plumbing


def _read_header(stream: IO[bytes], qualified: str) -> tuple[str, str]:
    """Read the script up to its ``COPY`` line; return (client_encoding, COPY line)."""
    encoding = "UTF8"
    for _ in range(_HEADER_LINES_MAX):
        line = stream.readline()
        if not line:
            break
        if line.startswith(b"SET client_encoding = '"):
            encoding = line.split(b"'")[1].decode("ascii")
        if line.startswith(b"COPY "):
            return encoding, line.decode("utf-8" if encoding.upper() in ("UTF8", "UTF-8") else "latin-1")
    raise RollbackError(f"the backup has no COPY data for {qualified}")


class CopyBody:
    """A read-only file object over the rows of one ``COPY ... FROM stdin`` block.

    Wraps the binary stdout of ``pg_restore -f -`` positioned after the ``COPY`` line;
    ``read(size)`` returns whole data lines (COPY text format escapes newlines inside
    values, so a row is one line) and reports end of file at the ``\\.`` end-of-data
    line, which is consumed but not passed on. Memory stays bounded by ``size`` plus one
    row. ``rows`` counts the rows passed on; ``finished`` says the marker was seen.
    """

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self.rows = 0
        self.finished = False

    def read(self, size: int = -1) -> bytes:
        if self.finished:
            return b""
        want = size if size and size > 0 else 1 << 16
        chunks: list[bytes] = []
        got = 0
        while got < want:
            line = self._stream.readline()
            if not line:  # truncated stream: COPY gets EOF; the caller checks `finished`
                break
            if line == _END_OF_DATA:
                self.finished = True
                break
            chunks.append(line)
            got += len(line)
            self.rows += 1
        return b"".join(chunks)

    def readline(self, size: int = -1) -> bytes:
        if self.finished:
            return b""
        line = self._stream.readline()
        if not line or line == _END_OF_DATA:
            self.finished = bool(line)
            return b""
        self.rows += 1
        return line


def parse_copy_header(line: str) -> tuple[str, list[str]]:
    """``("schema.table", [columns])`` of a ``COPY schema.table (c1, "C2") FROM stdin;`` line.

    Understands double-quoted identifiers with ``""`` escapes, as pg_dump writes them.
    Raises ``RollbackError`` on anything else.
    """
    text = line.rstrip("\n")
    pos = 0

    def fail() -> RollbackError:
        return RollbackError(f"unexpected COPY header in the backup: {text[:200]!r}")

    def ident() -> str:
        nonlocal pos
        if pos < len(text) and text[pos] == '"':
            pos += 1
            out = []
            while pos < len(text):
                ch = text[pos]
                if ch == '"':
                    if pos + 1 < len(text) and text[pos + 1] == '"':
                        out.append('"')
                        pos += 2
                        continue
                    pos += 1
                    return "".join(out)
                out.append(ch)
                pos += 1
            raise fail()
        start = pos
        while pos < len(text) and (text[pos].isalnum() or text[pos] in "_$"):
            pos += 1
        if start == pos:
            raise fail()
        return text[start:pos]

    def expect(token: str) -> None:
        nonlocal pos
        if not text.startswith(token, pos):
            raise fail()
        pos += len(token)

    expect("COPY ")
    name = ident()
    if text.startswith(".", pos):
        pos += 1
        name = f"{name}.{ident()}"
    expect(" (")
    cols = [ident()]
    while text.startswith(", ", pos):
        pos += 2
        cols.append(ident())
    expect(") FROM stdin;")
    if pos != len(text):
        raise fail()
    return name, cols
