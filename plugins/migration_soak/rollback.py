"""Rolling back a column drop: re-add the columns, copy their values back from the backup.

Runbook (seed, "Procedimiento de Rollback en Staging", step 2) runs a rollback script
when a NO-GO criterion is met; "Cualquier pérdida de datos" is itself a NO-GO. A
``DROP COLUMN`` cannot be undone by SQL: the down migration only re-adds empty columns,
so the values come back from the pre-migration backup, restored into a scratch schema
and copied with ``UPDATE ... FROM`` joined on the primary key, with an index on the key
(STYLE.md, "PostgreSQL facts").

Two transactions:

1. **stage** (touches no application table): ``soak_rollback."<table>_backup"`` is
   created with one ``text`` column per column of the dump's ``COPY`` header, filled by
   streaming ``pg_restore --data-only --table=<table> -f - DUMP`` straight into
   ``COPY ... FROM STDIN`` (constant memory), indexed on the key and analyzed;
2. **restore** (short): the down SQL, the ``UPDATE`` with casts to the column types read
   from the catalog after re-adding, the counts and the ``IS DISTINCT FROM``
   verification; committed only when the verification finds 0 mismatches; the scratch
   schema is dropped in the same transaction.

The ledger is not touched here: after a successful restore the caller marks the
migration rolled back (``LedgerBackend.mark_rolled_back``), so a crash in between leaves
a state that a rerun repairs (this function is idempotent).
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Sequence

from psycopg2 import sql

from migration_soak.backup import BackupRecord, tool_path, verify_backup
from migration_soak.exceptions import BackupError, RollbackError
from migration_soak.pgconn import PgTarget

log = logging.getLogger(__name__)

SCRATCH_SCHEMA = "soak_rollback"
#: Session advisory lock (two-key form) that keeps two rollbacks from sharing the scratch
#: schema; distinct from Prisma's single-key 72707369.
ROLLBACK_LOCK = (0x534F414B, 1)  # "SOAK", 1
_HEADER_LINES_MAX = 10_000
_END_OF_DATA = b"\\.\n"


@dataclass(frozen=True)
class RestoreResult:
    """What ``restore_columns`` restored and proved.

    Fields:
        table: ``schema.table`` restored, e.g. ``"public.users"``.
        columns: the restored columns, e.g. ``("passwordHash", "emailVerified")``.
        users_at_backup: rows of the table in the backup.
        users_matched: of those, rows present now (joined on the key); the others were
            deleted after the backup.
        users_not_in_backup: rows present now with no row in the backup (inserted after
            the backup); their restored columns keep NULL/the column default.
        rows_updated: rows the ``UPDATE`` wrote (equals ``users_matched``).
        values_restored: column values written: ``rows_updated * len(columns)``.
        mismatches: matched rows where any restored column ``IS DISTINCT FROM`` the
            backup's value after the cast; always 0 in a returned result.
        duration_s: wall seconds of the whole call (re-verification included).
        stage_s: seconds spent staging the backup's rows into the scratch table.
        restore_s: seconds of the restore transaction (down SQL, UPDATE, checks).
    """

    table: str
    columns: tuple[str, ...]
    users_at_backup: int
    users_matched: int
    users_not_in_backup: int
    rows_updated: int
    values_restored: int
    mismatches: int
    duration_s: float
    stage_s: float
    restore_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON types only."""
        out = dict(self.__dict__)
        out["columns"] = list(self.columns)
        return out


def restore_columns(
    target: PgTarget,
    backup: BackupRecord,
    pg_bin_dir: Path | None,
    *,
    down_sql: Path,
    table: str = "users",
    columns: Sequence[str] = ("passwordHash", "emailVerified"),
    key: str = "id",
    schema: str = "public",
    lock_timeout_s: float = 10.0,
    timeout_s: float = 6 * 3600.0,
) -> RestoreResult:
    """Re-add ``columns`` of ``schema.table`` and restore their values from ``backup``.

    Args:
        target: the database to repair.
        backup: the pre-migration ``BackupRecord``; re-verified first (read whole,
            SHA-256 equal to ``backup.sha256``, table data present).
        pg_bin_dir: folder of ``pg_restore`` (``None``: from ``PATH``).
        down_sql: the down migration that re-adds the columns, e.g.
            ``include/sql/rollback/20251202020032_update_user_schema_final.down.sql``;
            it must be re-runnable (``ADD COLUMN IF NOT EXISTS``).
        table, columns, key, schema: what to restore, joined on ``key`` (the primary
            key).
        lock_timeout_s: ``lock_timeout`` (seconds) of the restore transaction, so a
            blocked ``ALTER TABLE`` fails fast instead of queueing the application.
        timeout_s: bound (seconds) on the ``pg_restore`` read-back.

    Rows present now but absent from the backup keep NULL/defaults; rows deleted since
    the backup stay deleted. Idempotent: a second run writes the same values and
    returns the same counts. Values written by the application after the first run are
    overwritten by a second run.

    Returns a ``RestoreResult`` with ``mismatches == 0``. Raises ``RollbackError`` naming
    the step that failed (backup re-verification, staging, missing column, lock
    timeout, verification mismatches); nothing of the restore transaction is committed
    then.
    """
    started = time.monotonic()
    columns = tuple(columns)
    if not columns:
        raise RollbackError("no columns to restore")
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
    locked = False
    try:
        _lock(conn, target)
        locked = True  # from here on the scratch schema is ours to drop
        t0 = time.monotonic()
        rows_streamed = _stage(conn, target, backup.path, pg_bin_dir, schema, table, key, columns, scratch, timeout_s)
        stage_s = time.monotonic() - t0
        t1 = time.monotonic()
        result = _restore(conn, target, down_text, down_path, schema, table, columns, key, scratch,
                          lock_timeout_s, rows_streamed)
        restore_s = time.monotonic() - t1
    except RollbackError:
        if locked:
            _drop_scratch_quietly(conn)
        raise
    except Exception as exc:  # psycopg2 errors and the like
        if locked:
            _drop_scratch_quietly(conn)
        raise RollbackError(f"rollback of {qualified} failed: {target.scrub(str(exc)).strip()}") from None
    finally:
        conn.close()
    out = RestoreResult(
        table=qualified,
        columns=columns,
        duration_s=round(time.monotonic() - started, 3),
        stage_s=round(stage_s, 3),
        restore_s=round(restore_s, 3),
        **result,
    )
    log.info("rollback of %s: %s", qualified, out.to_dict())
    return out


# ----------------------------------------------------------------------- steps


def _lock(conn, target: PgTarget) -> None:
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", ROLLBACK_LOCK)
        if not cur.fetchone()[0]:
            raise RollbackError(f"another rollback is running on {target.describe()} (advisory lock {ROLLBACK_LOCK})")
    conn.autocommit = False


def pg_restore_data_argv(pg_restore: Path, dump: Path, schema: str, table: str) -> list[str]:
    """The exact ``pg_restore`` command line that streams one table's rows to stdout.

    ``pg_restore --data-only --schema=<schema> --table=<table> --file=- DUMP``: its
    output is a script whose data part is ``COPY schema.table (cols) FROM stdin;``, the
    rows in COPY text format, and ``\\.``. It reads the file only: no connection, no
    password.
    """
    return [str(pg_restore), "--data-only", f"--schema={schema}", f"--table={table}", "--file=-", str(dump)]


def _stage(conn, target, dump: Path, pg_bin_dir, schema, table, key, columns, scratch, timeout_s) -> int:
    """Transaction 1: scratch schema, streamed COPY, key index. Returns the rows staged."""
    try:
        pg_restore = tool_path("pg_restore", pg_bin_dir)
    except BackupError as exc:
        raise RollbackError(str(exc)) from None
    argv = pg_restore_data_argv(pg_restore, dump, schema, table)
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL)
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
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(scratch))
        loaded = cur.fetchone()[0]
        if loaded != body.rows:
            raise RollbackError(f"staged {loaded} rows of {schema}.{table} but the backup streamed {body.rows}")
        cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(scratch, sql.Identifier(key)))
        cur.execute(sql.SQL("ANALYZE {}").format(scratch))
    conn.commit()
    return body.rows


def _restore(conn, target, down_text, down_path, schema, table, columns, key, scratch, lock_timeout_s, staged_rows):
    """Transaction 2: down SQL, UPDATE ... FROM, counts, verification, drop scratch."""
    qualified = f"{schema}.{table}"
    tbl = sql.Identifier(schema, table)
    with conn.cursor() as cur:
        cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_timeout_s * 1000)}ms",))
        cur.execute("SELECT set_config('search_path', %s, true)", ('"' + schema.replace('"', '""') + '"',))
        # Typed input of the dump's text: pg_dump writes dates in ISO.
        cur.execute("SET LOCAL DateStyle = 'ISO'")
        cur.execute("SET LOCAL IntervalStyle = 'postgres'")
        try:
            cur.execute(down_text)
        except Exception as exc:
            code = getattr(exc, "pgcode", None)
            if code == "55P03":
                raise RollbackError(
                    f"down SQL {down_path.name} could not lock {qualified} within {lock_timeout_s:g} s "
                    "(lock_timeout); the application holds it: retry"
                ) from None
            raise RollbackError(f"down SQL {down_path.name} failed: {str(exc).strip()}") from None
        cur.execute(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod)
               FROM pg_attribute a
               WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
                 AND a.attname = ANY(%s)""",
            (tbl.as_string(conn), [key, *columns]),
        )
        types = dict(cur.fetchall())
        missing = [c for c in (key, *columns) if c not in types]
        if missing:
            raise RollbackError(
                f"{qualified} has no column(s) {', '.join(missing)} after the down SQL {down_path.name}"
            )
        join = sql.SQL("u.{k} = b.{k}::{t}").format(k=sql.Identifier(key), t=sql.SQL(types[key]))
        assignments = sql.SQL(", ").join(
            sql.SQL("{c} = b.{c}::{t}").format(c=sql.Identifier(c), t=sql.SQL(types[c])) for c in columns
        )
        cur.execute(
            sql.SQL("UPDATE {tbl} u SET {assign} FROM {scratch} b WHERE {join}").format(
                tbl=tbl, assign=assignments, scratch=scratch, join=join
            )
        )
        rows_updated = cur.rowcount
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(scratch))
        at_backup = cur.fetchone()[0]
        cur.execute(sql.SQL("SELECT count(*) FROM {tbl} u JOIN {scratch} b ON {join}").format(
            tbl=tbl, scratch=scratch, join=join))
        matched = cur.fetchone()[0]
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tbl))
        now_total = cur.fetchone()[0]
        differs = sql.SQL(" OR ").join(
            sql.SQL("u.{c} IS DISTINCT FROM b.{c}::{t}").format(c=sql.Identifier(c), t=sql.SQL(types[c]))
            for c in columns
        )
        cur.execute(sql.SQL("SELECT count(*) FROM {tbl} u JOIN {scratch} b ON {join} WHERE {differs}").format(
            tbl=tbl, scratch=scratch, join=join, differs=differs))
        mismatches = cur.fetchone()[0]
        if mismatches or rows_updated != matched or at_backup != staged_rows:
            raise RollbackError(
                f"verification of {qualified} failed, nothing committed: {mismatches} rows differ from the backup "
                f"after the UPDATE ({rows_updated} updated, {matched} matched, {at_backup} staged of {staged_rows})"
            )
        cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCRATCH_SCHEMA)))
    conn.commit()
    return {
        "users_at_backup": at_backup,
        "users_matched": matched,
        "users_not_in_backup": now_total - matched,
        "rows_updated": rows_updated,
        "values_restored": rows_updated * len(columns),
        "mismatches": mismatches,
    }


def _drop_scratch_quietly(conn) -> None:
    try:
        if conn.closed:
            return
        conn.rollback()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCRATCH_SCHEMA)))
    except Exception:  # cleanup of a failure path: the original error matters more
        log.warning("could not drop scratch schema %s after a failed rollback", SCRATCH_SCHEMA, exc_info=True)


# -------------------------------------------------------------- COPY plumbing


def _read_header(stream: BinaryIO, qualified: str) -> tuple[str, str]:
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

    def __init__(self, stream: BinaryIO):
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
