"""Rolling back a column drop by rebuilding the table and swapping it in.

Runbook (seed, "Procedimiento de Rollback en Staging", step 2), the plan's
``migration.rollback_method: rebuild``. Same contract as ``rollback.restore_columns``
(same arguments, same ``RestoreResult``, same rule: values written after the re-add win),
but instead of ``UPDATE``-ing every row in place (every row moves, every index entry is
inserted one by one) it writes a new table once:

1. refuse, before anything changes, a table a swap would break or leave things behind on
   (views, rules, policies, publications, inheritance, partitions, foreign triggers, owned
   sequences, identity/generated columns, column grants, a tablespace, ``UNLOGGED``, ...);
2. stage the dump (``rollback._stage``), run the down SQL (``rollback._readd``);
3. install a row trigger on the live table (short transaction, ``lock_timeout``, retried)
   that records the key of every row written from then on in ``soak_rollback``;
4. in one REPEATABLE READ transaction, ``CREATE TABLE <table>_soak_new (LIKE <table> ...)``
   and ``INSERT ... SELECT`` the live rows left-joined to the staged ones; then its indexes
   (by ``pg_get_indexdef``, built by sorting) and ``ANALYZE``;
5. catch-up rounds: the captured keys are deleted from the new table and copied again from
   the live one, until a round is small;
6. the swap, one short transaction under ``lock_timeout`` (retried): ACCESS EXCLUSIVE on the
   table and on the tables whose foreign keys point to it, a last catch-up round, drop the
   trigger, rename old -> ``<table>_soak_old`` and new -> ``<table>``, indexes and
   constraints to their names, foreign keys re-created ``NOT VALID``, owner, grants,
   replica identity, comment;
7. after the commit: drop the old table's own foreign keys, ``VALIDATE CONSTRAINT`` of those
   foreign keys, the value-by-value
   verification (``rollback._verify``), drop the old table and the scratch schema.

The swap changes the table's OID (docs/design.md#rebuildpy): this is why ``copy`` stays
the plan's default.

Design notes: docs/design.md#rebuildpy
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from psycopg2 import sql

from migration_soak.backup import BackupRecord, verify_backup
from migration_soak.exceptions import BackupError, RollbackError
from migration_soak.migrate import (LOCK_NOT_AVAILABLE, LockAttempt, describe_attempts, is_lock_timeout,
                                    run_with_lock_retries)
from migration_soak.pgconn import PgTarget, server_error_text
from migration_soak.rollback import (DEFAULT_BATCH_SIZE, DUMP_TEXT_OUTPUT, SCRATCH_SCHEMA, RestoreResult, _at_readded,
                                     _Column, _column_info, _lock, _needs_fill, _overlay, _readd, _release,
                                     _set_local, _stage, _staged_rows, _verify, describe_lost, drop_rebuild_leftovers,
                                     lossy_counts)
from migration_soak.rollback import REBUILD_MARKER as MARKER
from migration_soak.rollback import REBUILD_NEW_SUFFIX as NEW_SUFFIX

log = logging.getLogger(__name__)

#: The capture trigger's name on the live table (ours: the only trigger a rebuild accepts).
CAPTURE_TRIGGER = "soak_rebuild_capture"
#: Suffix of the table swapped out (the table being built: ``NEW_SUFFIX``, marked with
#: ``MARKER`` until the swap; both from rollback.py, whose ``copy`` drops such a leftover too).
OLD_SUFFIX = "_soak_old"
#: Catch-up rounds stop when a round re-copied at most this many keys (the last round runs
#: inside the swap's ACCESS EXCLUSIVE, so it must be small).
SMALL_ROUND = 1_000
#: More rounds than this without a small one: the application writes faster than the
#: catch-up; the rebuild gives up (RollbackError) rather than hold the lock long.
MAX_ROUNDS = 30
_TEXT_SETTINGS = DUMP_TEXT_OUTPUT  # the staged text is read (and the build's check compares it) as pg_dump wrote it
_DEADLOCK_DETECTED = "40P01"


class _DeadlockRetried(Exception):
    """A deadlock with the application in one of our short lock-taking transactions (the
    swap locks the referenced tables before the table, so an application transaction that
    wrote the table and then writes one of them closes a cycle): a lock conflict like a
    lock timeout, retried the same way (``pgcode`` is lock_not_available's)."""

    pgcode = LOCK_NOT_AVAILABLE


@dataclass(frozen=True)
class _Index:
    oid: int
    name: str  # unquoted
    unique: bool
    rest: str  # pg_get_indexdef after "ON <schema>.<table> ", e.g. "USING btree (email)"
    constraint: str | None  # p/u constraint it backs (its name is the index's), else None
    contype: str | None
    deferrable: bool
    deferred: bool
    comment: str | None
    constraint_comment: str | None = None  # COMMENT ON CONSTRAINT (the index's comment is another object)

    @property
    def temp_name(self) -> str:
        return f"soak_new_ix_{self.oid}"

    @property
    def old_name(self) -> str:
        return f"soak_old_ix_{self.oid}"


@dataclass(frozen=True)
class _ForeignKey:
    table: str  # the constrained table, schema-qualified and quoted (regclass under search_path pg_catalog)
    name: str
    definition: str  # pg_get_constraintdef, qualified names, without " NOT VALID"
    validated: bool
    comment: str | None = None


@dataclass
class _Shape:
    """What the swap carries over from the live table to the new one."""

    owner: str
    acl: list[tuple[str | None, str, bool]]  # (grantee role, None: PUBLIC; privilege; grantable)
    replident: str
    comment: str | None
    indexes: list[_Index] = field(default_factory=list)
    own_fks: list[_ForeignKey] = field(default_factory=list)
    incoming_fks: list[_ForeignKey] = field(default_factory=list)

    def index_keys(self) -> set[tuple[str, bool, str]]:
        return {(i.name, i.unique, i.rest) for i in self.indexes}


def rebuild_columns(
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
    """Re-add ``columns`` of ``schema.table`` and restore their values from ``backup`` by
    rebuilding the table and swapping it in (module docstring; docs/design.md#rebuildpy).

    Args: as ``rollback.restore_columns`` (``target`` a direct connection, not through
        PgBouncer in transaction mode; ``lock_timeout_s`` seconds and ``lock_retries``
        retries for each of the short lock-taking transactions: the down SQL, the capture
        trigger's installation and removal, the swap, each ``VALIDATE CONSTRAINT`` and the
        old table's drop). ``batch_size`` is accepted for the same signature and checked
        (>= 1) but not used: the build is one ``INSERT ... SELECT``.

    Rows present now but absent from the backup keep NULL/defaults; rows deleted since the
    backup stay deleted; a restored column takes the backup's value only where the live
    row still holds the value the re-add gave it (NULL or the column's constant default),
    so values written after the re-add win, also those written during the rebuild (they
    are captured by the trigger and copied again). Limit, as for the copy: a value written
    after the re-add that equals the re-added default is taken for it.

    Returns a ``RestoreResult`` with ``mismatches == 0``, ``method == "rebuild"``:
    ``rows_updated``/``values_restored`` count, in the build's snapshot, the rows that took
    a backup value and their values taken (as the copy would have written them; rows
    copied again by the catch-up are not counted twice); ``batches`` the catch-up rounds
    (the one inside the swap included); ``ddl_s`` and ``swap_s`` the swap transaction's
    seconds (its lock wait included): the longest ACCESS EXCLUSIVE on the table by this
    call apart from the down SQL's; ``copy_s`` the build, its indexes and the catch-up;
    ``verify_s`` the foreign keys' validation and the value-by-value verification.

    Raises ``RollbackError`` (carrying ``lock_attempts``, tuple of ``LockAttempt.to_dict()``):
    naming the object, before anything changes, when the table has something a swap would
    break or leave on the old table; naming the step otherwise. When anything fails before
    the swap commits, the trigger, the new table and the scratch schema are removed and the
    live table is as it was (the columns stay re-added, empty, as ``restore_columns``
    leaves them): a rerun (either method) completes the job. After the swap commits the
    data is restored: a failed validation or verification leaves ``<table>_soak_old`` in
    place for inspection.
    """
    started = time.monotonic()
    columns = tuple(columns)
    if not columns:
        raise RollbackError("no columns to restore")
    if batch_size < 1:
        raise RollbackError(f"batch_size must be at least 1, not {batch_size}")
    qualified = f"{schema}.{table}"
    if len(table.encode("utf-8")) + len(OLD_SUFFIX) > 63:  # bytes: PostgreSQL truncates names at 63 bytes
        raise RollbackError(f"{qualified}: the name is too long for {table}{OLD_SUFFIX} (63 bytes at most)")
    if backup.path is None:
        raise RollbackError(f"backup {backup.location or '?'} has no local copy: fetch it first "
                            "(backup_storage.fetched)")
    odd = [name for name in (schema, table, key, *columns) if "%" in name]
    if odd:
        raise RollbackError(f"rebuild of {qualified} refused, nothing changed: a '%' in the name(s) "
                            f"{', '.join(odd)} (psycopg2 reads it in a query run with parameters)")
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
    run = _Run(conn, schema, table, key, lock_timeout_s, lock_retries, _sleep)
    encoding = conn.encoding
    locked = swapped = False
    topup_rows = 0
    try:
        _lock(conn, target)
        locked = True
        run.drop_leftovers()
        run.refuse()  # before anything of the table changes
        t0 = time.monotonic()
        run.staged_once = True
        rows_streamed = _stage(conn, target, backup.path, pg_bin_dir, schema, table, key, columns, run.staged,
                               timeout_s)
        if topup is not None:
            topup_rows = _overlay(conn, run.staged, schema, table, key, columns, topup)
            rows_streamed = _staged_rows(conn, run.staged)
        stage_s = time.monotonic() - t0
        t1 = time.monotonic()
        _readd(conn, down_text, down_path, qualified, schema, lock_timeout_s, lock_retries, run.attempts, _sleep,
               columns=columns)
        key_col, cols = _column_info(conn, run.tbl, schema, table, key, columns, down_path)
        run.refuse(after_readd=True)  # the down SQL may have added something
        run.columns(key_col, cols)
        run.install_capture()
        t2 = time.monotonic()
        rows_updated, values_restored = run.build()
        rounds = run.catch_up()
        copy_s = time.monotonic() - t2
        swap_s = run.swap()
        swapped = True
        rounds += 1 + run.rounds_between
        t3 = time.monotonic()
        run.drop_old_foreign_keys()
        run.validate_foreign_keys()
        counts = _verify(conn, qualified, run.tbl, run.staged, key_col, cols, rows_streamed)
        verify_s = time.monotonic() - t3
        restore_s = time.monotonic() - t1
        run.drop_old()
        run.drop_scratch()
    except Exception as exc:
        note = ""
        if locked and not swapped:
            note = run.undo()
        elif locked:
            note = run.drop_scratch_after_swap()
        if isinstance(exc, RollbackError):
            if note:
                exc.args = (f"{exc}; {note}",)
            exc.lock_attempts = tuple(a.to_dict() for a in run.attempts)  # type: ignore[attr-defined]
            raise
        error = RollbackError(f"rebuild of {qualified} failed: {target.scrub(server_error_text(exc))}"
                              + (f"; {note}" if note else ""))
        error.lock_attempts = tuple(a.to_dict() for a in run.attempts)  # type: ignore[attr-defined]
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
        batches=rounds,
        lock_attempts=tuple(run.attempts),
        ddl_s=round(swap_s, 3),
        copy_s=round(copy_s, 3),
        verify_s=round(verify_s, 3),
        method="rebuild",
        swap_s=round(swap_s, 3),
        topup_rows=topup_rows,
        topup_taken_at=topup.taken_at if topup is not None else None,
        **counts,  # type: ignore[arg-type]  # _verify's int counts
    )
    log.info("rebuild rollback of %s: %s", qualified, out.to_dict())
    return out


class _Run:
    """One rebuild's names and steps (all on one connection, one transaction at a time)."""

    def __init__(self, conn, schema: str, table: str, key: str, lock_timeout_s: float, lock_retries: int,
                 sleep: Callable[[float], None]):
        self.conn, self.schema, self.table, self.key = conn, schema, table, key
        self.lock_timeout_s, self.lock_retries, self.sleep = lock_timeout_s, lock_retries, sleep
        self.qualified = f"{schema}.{table}"
        self.tbl = sql.Identifier(schema, table)
        self.new = sql.Identifier(schema, table + NEW_SUFFIX)
        self.old_name = table + OLD_SUFFIX
        self.staged = sql.Identifier(SCRATCH_SCHEMA, f"{table}_backup")
        self.capture = sql.Identifier(SCRATCH_SCHEMA, f"{table}_capture")
        self.round_tbl = sql.Identifier(SCRATCH_SCHEMA, f"{table}_round")
        self.function = sql.Identifier(SCRATCH_SCHEMA, f"{table}_capture_fn")
        self.attempts: list[LockAttempt] = []
        self.shape: _Shape | None = None
        self.names: list[str] = []
        self.key_col: _Column | None = None
        self.cols: list[_Column] = []
        self.new_created = False  # from the build on: the new table may exist
        self.staged_once = False  # from the staging on: the scratch schema may exist
        self.trigger_tried = False  # from the trigger's installation on: it may exist
        self.rounds_between = 0  # catch-up rounds run between the swap's tries

    # ------------------------------------------------------------------ helpers

    def _once(self, step: str, body: Callable[[Any], object], *, retries: int | None = None,
              between: Callable[[float], None] | None = None) -> float:
        """``body(cursor)`` in one transaction under ``lock_timeout``, lock timeouts retried;
        returns the seconds of the successful try."""
        conn = self.conn

        def once() -> None:
            try:
                with conn.cursor() as cur:
                    _set_local(cur, self.lock_timeout_s)
                    body(cur)
                conn.commit()
            except BaseException as exc:
                conn.rollback()
                if getattr(exc, "pgcode", None) == _DEADLOCK_DETECTED:
                    raise _DeadlockRetried(f"deadlock detected (retried like a lock timeout): "
                                           f"{server_error_text(exc)}") from exc
                raise

        mine: list[LockAttempt] = []
        try:
            run_with_lock_retries(step, once, retries=self.lock_retries if retries is None else retries,
                                  attempts=mine, sleep=between or self.sleep)
        except Exception as exc:
            self.attempts.extend(mine)
            if is_lock_timeout(exc):
                raise RollbackError(
                    f"{step} could not lock {self.qualified} (or a table it needs) within {self.lock_timeout_s:g} s "
                    f"(lock_timeout) in {describe_attempts(mine)}; the application holds it: retry"
                ) from None
            raise
        self.attempts.extend(mine)
        return mine[-1].elapsed_s

    def _relid(self, cur) -> int:
        cur.execute("SELECT %s::regclass::oid", (self.tbl.as_string(self.conn),))
        return int(cur.fetchone()[0])

    # ------------------------------------------------------------ 1. refusals

    def drop_leftovers(self) -> None:
        """A killed rebuild's capture triggers, on this table or another, and its marked new
        table (``rollback.drop_rebuild_leftovers``: each under lock_timeout)."""
        drop_rebuild_leftovers(self.conn, self.schema, self.table, self.lock_timeout_s, self.lock_retries,
                               self.attempts, self.sleep)

    def refuse(self, after_readd: bool = False) -> None:
        """``RollbackError`` naming every object a swap would break or leave on the old table."""
        with self.conn.cursor() as cur:
            problems = self._problems(cur, check_names=True)
        self.conn.commit()
        if problems:
            raise RollbackError(
                f"rebuild of {self.qualified} refused"
                + (" after the down SQL (the columns stay re-added, empty): " if after_readd else
                   ", nothing changed: ")
                + "; ".join(problems)
                + " (rollback_method 'copy' restores such a table in place)")

    def _problems(self, cur, *, check_names: bool) -> list[str]:
        """What ``refuse`` names, read in the caller's transaction (sets search_path =
        pg_catalog for it)."""
        problems: list[str] = []
        cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        relid = self._relid(cur)
        cur.execute("""SELECT relkind, relpersistence, reltablespace, relrowsecurity, relforcerowsecurity,
                              relispartition, reltype
                       FROM pg_class WHERE oid = %s""", (relid,))
        kind, persistence, tablespace, rls, force_rls, partition, reltype = cur.fetchone()
        if kind != "r":
            problems.append(f"it is not a plain table (relkind {kind!r}: partitioned or other)")
        if persistence != "p":
            problems.append("it is UNLOGGED" if persistence == "u" else f"relpersistence {persistence!r}")
        if tablespace:
            problems.append("it lives in a non-default tablespace")
        if rls or force_rls:
            problems.append("row-level security is enabled on it")
        if partition:
            problems.append("it is a partition")

        def named(query: str, what: str, params=(relid,)) -> None:
            cur.execute(query, params)
            for (name,) in cur.fetchall():
                problems.append(f"{what} {name}")

        named("SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = %s", "it inherits from")
        named("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s",
              "a table inherits from it (or is its partition):")
        named("""SELECT DISTINCT r.ev_class::regclass::text FROM pg_depend d
                 JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                 WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = %s AND r.ev_class <> %s""",
              "view or materialized view depends on it:", (relid, relid))
        named("SELECT rulename FROM pg_rewrite WHERE ev_class = %s", "rule")
        named("SELECT polname FROM pg_policy WHERE polrelid = %s", "row-level security policy")
        named("""SELECT pubname FROM pg_publication_tables WHERE schemaname = %s AND tablename = %s""",
              "publication", (self.schema, self.table))
        named("SELECT tgname FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal AND tgname <> %s",
              "trigger", (relid, CAPTURE_TRIGGER))
        named("""SELECT s.oid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
                 WHERE d.classid = 'pg_class'::regclass AND s.relkind = 'S'
                   AND d.refclassid = 'pg_class'::regclass AND d.refobjid = %s""",
              "sequence owned by it (serial or identity column):")
        named("""SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
                   AND (attidentity <> '' OR attgenerated <> '')""", "identity or generated column")
        named("""SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
                   AND attacl IS NOT NULL""", "column-level grant on column")
        named("SELECT stxname FROM pg_statistic_ext WHERE stxrelid = %s", "extended statistics object")
        named("SELECT conname FROM pg_constraint WHERE conrelid = %s AND contype NOT IN ('p', 'u', 'f', 'c', 'n')",
              "constraint (exclusion or other kind)")
        named("""SELECT indexrelid::regclass::text FROM pg_index
                 WHERE indrelid = %s AND NOT (indisvalid AND indisready AND indislive)""",
              "INVALID index (a failed CREATE INDEX CONCURRENTLY? drop or re-create it first):")
        if "%" in self.schema + self.table:
            problems.append(f"a '%' in the name {self.qualified} (psycopg2 reads it in a query run with parameters)")
        named("""SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
                   AND strpos(attname, '%%') > 0""",
              "a '%' (psycopg2 reads it in a query run with parameters) in the name of column")
        cur.execute("SELECT attnotnull FROM pg_attribute WHERE attrelid = %s AND attname = %s AND NOT attisdropped",
                    (relid, self.key))
        key_row = cur.fetchone()
        if key_row is not None and not key_row[0]:
            problems.append(f"the key column {self.key} allows NULL (the catch-up finds rows by key: a row with a "
                            "NULL key written during the rebuild would be lost)")
        named("""SELECT conname FROM pg_constraint WHERE conrelid = %s AND contype IN ('c', 'n')
                   AND NOT convalidated""",
              "constraint NOT VALID (the new table would get it valid and fail on the old rows):")
        named("""SELECT c.conname || ' of ' || c.conrelid::regclass::text FROM pg_constraint c
                 JOIN pg_class r ON r.oid = c.conrelid
                 WHERE c.contype = 'f' AND c.confrelid = %s AND r.relkind = 'p'""",
              "foreign key of a partitioned table (its partitions' constraints cannot be re-created):")
        named("""SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
                 WHERE refclassid = 'pg_type'::regclass AND refobjid = %s AND deptype = 'n'""",
              "object uses its row type:", (reltype,))
        for name in (self.table + NEW_SUFFIX, self.old_name) if check_names else ():
            cur.execute("SELECT to_regclass(%s)", (sql.Identifier(self.schema, name).as_string(self.conn),))
            if cur.fetchone()[0] is not None:
                problems.append(f"a relation {self.schema}.{name} already exists (a rebuild's leftover? "
                                "inspect it and drop it)")
        return problems

    def _read_shape(self, cur) -> _Shape:
        """The live table's owner, grants, indexes, constraints and foreign keys, names
        qualified (read with search_path = pg_catalog)."""
        cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
        relid = self._relid(cur)
        cur.execute("""SELECT quote_ident(pg_get_userbyid(relowner)), relreplident, obj_description(oid, 'pg_class')
                       FROM pg_class WHERE oid = %s""", (relid,))
        owner, replident, comment = cur.fetchone()
        cur.execute("""SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                              a.privilege_type, a.is_grantable
                       FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                       WHERE c.oid = %s ORDER BY 1 NULLS FIRST, 2""", (relid,))
        acl = [(g, p, bool(o)) for g, p, o in cur.fetchall()]
        shape = _Shape(owner=owner, acl=acl, replident=replident, comment=comment)
        prefix_table = sql.Identifier(self.schema, self.table).as_string(self.conn)
        cur.execute("""SELECT i.indexrelid, c.relname, quote_ident(c.relname), i.indisunique, pg_get_indexdef(i.indexrelid),
                              con.conname, con.contype, con.condeferrable, con.condeferred,
                              obj_description(i.indexrelid, 'pg_class'), quote_ident(n.nspname) || '.' || quote_ident(t.relname),
                              obj_description(con.oid, 'pg_constraint')
                       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                       JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                       LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
                                                  AND con.contype IN ('p', 'u', 'x')
                       WHERE i.indrelid = %s ORDER BY c.relname""", (relid,))
        for (oid, name, quoted, unique, definition, conname, contype, deferrable, deferred, icomment, qtable,
             ccomment) in cur.fetchall():
            if contype == "x":
                raise RollbackError(f"rebuild of {self.qualified} refused: exclusion constraint {conname}")
            prefix = f"CREATE {'UNIQUE ' if unique else ''}INDEX {quoted} ON {qtable} "
            if not definition.startswith(prefix):
                raise RollbackError(f"rebuild of {self.qualified} refused: index {name} has a definition the swap "
                                    f"cannot rebuild: {definition}")
            shape.indexes.append(_Index(int(oid), name, bool(unique), definition[len(prefix):], conname, contype,
                                        bool(deferrable), bool(deferred), icomment, ccomment))
        del prefix_table
        cur.execute("""SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated, conrelid = %s,
                              obj_description(oid, 'pg_constraint')
                       FROM pg_constraint WHERE contype = 'f' AND (conrelid = %s OR confrelid = %s)
                       ORDER BY conrelid::regclass::text, conname""", (relid, relid, relid))
        for ctable, name, definition, validated, own, fcomment in cur.fetchall():
            definition = definition.removesuffix(" NOT VALID")
            fk = _ForeignKey(ctable, name, definition, bool(validated), fcomment)
            (shape.own_fks if own else shape.incoming_fks).append(fk)
        return shape

    # -------------------------------------------------------- 2-3. capture, build

    def columns(self, key_col: _Column, cols: list[_Column]) -> None:
        self.key_col, self.cols = key_col, cols
        with self.conn.cursor() as cur:
            cur.execute("""SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
                           AND NOT attisdropped ORDER BY attnum""", (self.tbl.as_string(self.conn),))
            self.names = [r[0] for r in cur.fetchall()]
        self.conn.commit()

    def install_capture(self) -> None:
        """The capture table, its function and the trigger (the trigger in a short
        transaction under lock_timeout, retried; CREATE TRIGGER takes SHARE ROW EXCLUSIVE,
        so every write in flight has committed before it and every later one is captured)."""
        assert self.key_col is not None
        k = sql.Identifier(self.key)
        body = sql.SQL(
            "BEGIN\n"
            "  IF TG_OP <> 'INSERT' THEN INSERT INTO {cap} (k) VALUES (OLD.{k}); END IF;\n"
            "  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.{k} IS DISTINCT FROM OLD.{k}) THEN\n"
            "    INSERT INTO {cap} (k) VALUES (NEW.{k});\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END").format(cap=self.capture, k=k).as_string(self.conn)
        if "$soak$" in body:
            raise RollbackError(f"rebuild of {self.qualified} refused: the key's name contains $soak$")
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {} (k {})").format(self.capture, sql.SQL(self.key_col.type)))
            cur.execute(sql.SQL("CREATE TABLE {} (k {})").format(self.round_tbl, sql.SQL(self.key_col.type)))
            cur.execute(sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
                                "SET search_path = pg_catalog AS $soak$" + body + "$soak$").format(self.function))
            cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(self.function))
        self.conn.commit()
        self.trigger_tried = True
        self._once("capture trigger", lambda cur: cur.execute(
            sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()")
            .format(sql.Identifier(CAPTURE_TRIGGER), self.tbl, self.function)))

    def _select(self) -> sql.Composable:
        """The new table's row from live row ``u`` and staged row ``b`` (left-joined): a
        restored column takes the backup's value where the live one still holds the re-added
        value (the copy's rule), every other column the live value."""
        restored = {c.name: (i, c) for i, c in enumerate(self.cols)}
        out = []
        for name in self.names:
            if name in restored:
                i, c = restored[name]
                out.append(sql.SQL("CASE WHEN b.{k} IS NOT NULL AND u.{c} IS NOT DISTINCT FROM {p}::{t} "
                                   "THEN b.{c}::{t} ELSE u.{c} END").format(
                    k=sql.Identifier(self.key), c=sql.Identifier(name), p=sql.Placeholder(f"d{i}"),
                    t=sql.SQL(c.type)))
            else:
                out.append(sql.SQL("u.{}").format(sql.Identifier(name)))
        return sql.SQL(", ").join(out)

    def _params(self) -> dict:
        return {f"d{i}": c.readded for i, c in enumerate(self.cols)}

    def _join(self) -> sql.Composable:
        assert self.key_col is not None
        return sql.SQL("u.{k} = b.{k}::{t}").format(k=sql.Identifier(self.key), t=sql.SQL(self.key_col.type))

    def build(self) -> tuple[int, int]:
        """One REPEATABLE READ transaction: the new table (LIKE the live one), the counts
        and the ``INSERT ... SELECT``; then its indexes and ANALYZE. Returns (rows that
        take a backup value, values taken) as the copy counts them."""
        conn = self.conn
        started = time.monotonic()
        with conn.cursor() as cur:
            self.shape = self._read_shape(cur)
            cur.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (self.tbl.as_string(conn),))
            reloptions = cur.fetchone()[0]
        conn.commit()
        needs_fill = _needs_fill(self.cols)
        # Values the build would take from the backup that the re-added type cannot hold
        # (their cast does not read back as the backup's text: truncated, rounded): refused
        # here, before the swap, rather than found by the verification after it.
        filled = sql.SQL(" + ").join(sql.SQL("({})::int").format(_at_readded("u", c, f"d{i}"))
                                     for i, c in enumerate(self.cols))
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(_TEXT_SETTINGS)
            like = sql.SQL("CREATE TABLE {new} (LIKE {tbl} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE "
                           "INCLUDING COMPRESSION INCLUDING COMMENTS)").format(new=self.new, tbl=self.tbl)
            if reloptions:
                like = like + sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in reloptions))
            self.new_created = True
            cur.execute(like)
            cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(self.new), (MARKER,))
            cur.execute(sql.SQL("""SELECT count(*) FILTER (WHERE {nf}),
                                          coalesce(sum(({filled})) FILTER (WHERE {nf}), 0), {lossy}
                                   FROM {tbl} u JOIN {staged} b ON {join}""").format(
                nf=needs_fill, filled=filled, lossy=lossy_counts(self.cols), tbl=self.tbl, staged=self.staged,
                join=self._join()), self._params())
            rows, values, *per_column = cur.fetchone()
            if any(per_column):
                raise RollbackError(
                    f"rebuild of {self.qualified} refused before the build (the columns stay re-added, empty): "
                    f"{sum(per_column)} backup values do not read back as the backup's in the re-added type "
                    f"({describe_lost(self.cols, per_column)}): the cast would truncate or round them; give the "
                    "column its type at backup time and rerun")
            counted = time.monotonic()
            cur.execute(sql.SQL("INSERT INTO {new} ({names}) SELECT {select} FROM {tbl} u LEFT JOIN {staged} b ON {join}")
                        .format(new=self.new, names=sql.SQL(", ").join(map(sql.Identifier, self.names)),
                                select=self._select(), tbl=self.tbl, staged=self.staged, join=self._join()),
                        self._params())
        conn.commit()
        inserted = time.monotonic()
        with conn.cursor() as cur:
            for ix in self.shape.indexes:
                cur.execute(sql.SQL("CREATE {u}INDEX {name} ON {new} ").format(
                    u=sql.SQL("UNIQUE " if ix.unique else ""), name=sql.Identifier(ix.temp_name), new=self.new)
                    + sql.SQL(ix.rest))
            indexed = time.monotonic()
            cur.execute(sql.SQL("ANALYZE {}").format(self.new))
        conn.commit()
        log.info("rebuild of %s: counted in %.2f s, inserted in %.2f s, %d indexes in %.2f s, analyzed in %.2f s",
                 self.qualified, counted - started, inserted - counted, len(self.shape.indexes), indexed - inserted,
                 time.monotonic() - indexed)
        return int(rows), int(values)

    # ------------------------------------------------------------ 4. catch-up

    def _round(self, cur) -> int:
        """Take the captured keys (deleted from the capture table), delete them from the new
        table and copy them again from the live one. Returns the keys taken."""
        k = sql.Identifier(self.key)
        cur.execute(sql.SQL("DELETE FROM {}").format(self.round_tbl))
        cur.execute(sql.SQL("WITH t AS (DELETE FROM {cap} RETURNING k) INSERT INTO {r} (k) SELECT DISTINCT k FROM t")
                    .format(cap=self.capture, r=self.round_tbl))
        taken = cur.rowcount
        if taken:
            cur.execute(sql.SQL("DELETE FROM {new} n USING {r} r WHERE n.{k} = r.k").format(
                new=self.new, r=self.round_tbl, k=k))
            cur.execute(sql.SQL("INSERT INTO {new} ({names}) SELECT {select} FROM {tbl} u JOIN {r} r ON u.{k} = r.k "
                                "LEFT JOIN {staged} b ON {join}").format(
                new=self.new, names=sql.SQL(", ").join(map(sql.Identifier, self.names)), select=self._select(),
                tbl=self.tbl, r=self.round_tbl, k=k, staged=self.staged, join=self._join()), self._params())
        return int(taken)

    def catch_up(self) -> int:
        """Rounds, each one REPEATABLE READ transaction (the capture table and the live rows
        read in one snapshot, so the new table equals the live one as of that snapshot and
        its unique indexes hold), until a round took at most ``SMALL_ROUND`` keys.
        Returns the rounds run."""
        for number in range(1, MAX_ROUNDS + 1):
            with self.conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute(_TEXT_SETTINGS)
                taken = self._round(cur)
            self.conn.commit()
            log.info("rebuild of %s: catch-up round %d copied %d keys again", self.qualified, number, taken)
            if taken <= SMALL_ROUND:
                return number
        raise RollbackError(f"rebuild of {self.qualified}: the application wrote more than {SMALL_ROUND} rows "
                            f"during each of {MAX_ROUNDS} catch-up rounds; the swap would hold ACCESS EXCLUSIVE "
                            "too long: retry when it writes less, or use rollback_method 'copy'")

    # ----------------------------------------------------------------- 5. swap

    def swap(self) -> float:
        """The swap transaction (lock timeouts retried). Returns its seconds (lock wait included)."""
        assert self.shape is not None
        built = self.shape

        def body(cur) -> None:
            cur.execute(_TEXT_SETTINGS)
            cur.execute("SELECT current_setting('search_path')")
            search_path = cur.fetchone()[0]
            cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
            relid = self._relid(cur)
            cur.execute("""SELECT DISTINCT conrelid::regclass::text FROM pg_constraint
                           WHERE contype = 'f' AND confrelid = %s AND conrelid <> confrelid""", (relid,))
            others = [r[0] for r in cur.fetchall()]
            cur.execute("""SELECT DISTINCT confrelid::regclass::text FROM pg_constraint
                           WHERE contype = 'f' AND conrelid = %s AND conrelid <> confrelid""", (relid,))
            referenced = [r[0] for r in cur.fetchall() if r[0] not in others]
            if referenced:  # the tables the new table's own foreign keys will reference: before users,
                # so that ADD FOREIGN KEY does not wait for them while users is held
                cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.SQL(t) for t in referenced)))
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.SQL(", ").join([self.tbl, *(sql.SQL(t) for t in others)])))
            # Under the lock: nothing may have changed that the new table would miss.
            problems = self._problems(cur, check_names=False)
            if problems:
                raise RollbackError(f"rebuild of {self.qualified} refused at the swap: " + "; ".join(problems))
            cur.execute("SELECT tgenabled FROM pg_trigger WHERE tgrelid = %s AND tgname = %s", (relid, CAPTURE_TRIGGER))
            enabled = cur.fetchone()
            if enabled is None or enabled[0] not in ("O", "A"):  # fires in a normal session: origin or always
                raise RollbackError(f"the capture trigger {CAPTURE_TRIGGER} on {self.qualified} was "
                                    f"{'dropped' if enabled is None else 'disabled'} during the rebuild: writes "
                                    "made meanwhile may be missing from the new table; retry")
            shape = self._read_shape(cur)  # what the swap carries over
            if shape.index_keys() != built.index_keys():
                raise RollbackError(f"the indexes of {self.qualified} changed during the rebuild; retry")
            if self._columns_of(cur, self.tbl) != self._columns_of(cur, self.new):
                raise RollbackError(f"the columns or CHECK constraints of {self.qualified} changed during the "
                                    "rebuild; retry")
            relopts = []
            for table in (self.tbl, self.new):
                cur.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table.as_string(self.conn),))
                relopts.append(cur.fetchone()[0])
            if relopts[0] != relopts[1]:
                raise RollbackError(f"the storage parameters (reloptions) of {self.qualified} changed during the "
                                    "rebuild; retry")
            comments = []
            for table in (self.tbl, self.new):  # column comments: LIKE copied them when the build began
                cur.execute("""SELECT attname, col_description(attrelid, attnum) FROM pg_attribute
                               WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped""",
                            (table.as_string(self.conn),))
                comments.append(dict(cur.fetchall()))
            for name, comment in comments[0].items():
                if comments[1].get(name) != comment:
                    cur.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS %s").format(self.new, sql.Identifier(name)),
                                (comment,))
            locked = set(others)
            missing = [fk.table for fk in shape.incoming_fks if fk.table not in locked]
            if missing:
                raise RollbackError(f"foreign keys to {self.qualified} appeared during the swap ({missing}); retry")
            cur.execute("SELECT set_config('search_path', %s, true)", (search_path,))  # the types as read
            self._round(cur)
            cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
            cur.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(CAPTURE_TRIGGER), self.tbl))
            for fk in shape.incoming_fks:
                cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(fk.table),
                                                                              sql.Identifier(fk.name)))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.tbl, sql.Identifier(self.old_name)))
            for ix in shape.indexes:
                cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(self.schema, ix.name), sql.Identifier(ix.old_name)))
            cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.new, sql.Identifier(self.table)))
            for ix in shape.indexes:
                temp = sql.Identifier(self.schema, ix.temp_name)
                if ix.constraint and ix.contype in ("p", "u"):
                    clause = "PRIMARY KEY" if ix.contype == "p" else "UNIQUE"
                    # ... USING INDEX <index> [DEFERRABLE] [INITIALLY DEFERRED]: the grammar's order
                    timing = (" DEFERRABLE" if ix.deferrable else "") + (" INITIALLY DEFERRED" if ix.deferred else "")
                    cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} " + clause + " USING INDEX {}" + timing)
                                .format(self.tbl, sql.Identifier(ix.constraint), sql.Identifier(ix.temp_name)))
                    if ix.constraint != ix.name:
                        cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                            sql.Identifier(self.schema, ix.constraint), sql.Identifier(ix.name)))
                    if ix.constraint_comment is not None:
                        cur.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS %s").format(
                            sql.Identifier(ix.constraint), self.tbl), (ix.constraint_comment,))
                else:
                    cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(temp, sql.Identifier(ix.name)))
                cur.execute(sql.SQL("COMMENT ON INDEX {} IS %s").format(sql.Identifier(self.schema, ix.name)),
                            (ix.comment,))
            for fk in [*shape.own_fks, *shape.incoming_fks]:
                constrained = self.tbl if fk in shape.own_fks else sql.SQL(fk.table)
                cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(constrained, sql.Identifier(fk.name))
                            + sql.SQL(fk.definition + " NOT VALID"))
                if fk.comment is not None:
                    cur.execute(sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS %s").format(
                        sql.Identifier(fk.name), constrained), (fk.comment,))
            cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(self.tbl, sql.SQL(shape.owner)))
            cur.execute("""SELECT DISTINCT CASE WHEN a.grantee = 0 THEN NULL
                                               ELSE quote_ident(pg_get_userbyid(a.grantee)) END
                           FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                           WHERE c.oid = %s::regclass""", (self.tbl.as_string(self.conn),))
            for (grantee,) in cur.fetchall():
                cur.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(self.tbl, sql.SQL(grantee or "PUBLIC")))
            for grantee, privilege, grantable in shape.acl:
                cur.execute(sql.SQL("GRANT {} ON {} TO {}{}").format(
                    sql.SQL(privilege), self.tbl, sql.SQL(grantee or "PUBLIC"),
                    sql.SQL(" WITH GRANT OPTION" if grantable else "")))
            if shape.replident == "n":
                cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY NOTHING").format(self.tbl))
            elif shape.replident == "f":
                cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(self.tbl))
            elif shape.replident == "i":
                cur.execute("""SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                               WHERE i.indrelid = %s::regclass AND i.indisreplident""",
                            (sql.Identifier(self.schema, self.old_name).as_string(self.conn),))
                (old_index,) = cur.fetchone()
                original = next(ix.name for ix in shape.indexes if ix.old_name == old_index)
                cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY USING INDEX {}").format(
                    self.tbl, sql.Identifier(original)))
            cur.execute(sql.SQL("COMMENT ON TABLE {} IS %s").format(self.tbl), (shape.comment,))
            self.shape = shape

        def between(seconds: float) -> None:
            # After a lock timeout's backoff, before the next try: catch up on what the
            # application wrote meanwhile outside the lock, so the round inside the swap
            # stays small however long the retries took.
            self.sleep(seconds)
            self.rounds_between += self.catch_up()

        return self._once("swap", body, between=between)

    def _columns_of(self, cur, table: sql.Composable) -> list[tuple]:
        """(name, type, not null, default) of each column in order, and the CHECK
        constraints' definitions: what the new table must share with the live one."""
        cur.execute("""SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attcollation,
                              pg_get_expr(d.adbin, d.adrelid)
                       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                       WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
                       ORDER BY a.attnum""", (table.as_string(self.conn),))
        columns = cur.fetchall()
        cur.execute("""SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass
                       AND contype = 'c' ORDER BY 1""", (table.as_string(self.conn),))
        return [*columns, *cur.fetchall()]

    # ------------------------------------------------------- 6. after the swap

    def validate_foreign_keys(self) -> None:
        """``VALIDATE CONSTRAINT`` of the foreign keys re-created ``NOT VALID`` (those that
        were valid before), each in its own short transaction: SHARE UPDATE EXCLUSIVE on
        the constrained table, the application keeps reading and writing."""
        assert self.shape is not None
        for fk in [*self.shape.own_fks, *self.shape.incoming_fks]:
            if not fk.validated:
                continue
            constrained: sql.Composable = self.tbl if fk in self.shape.own_fks else sql.SQL(fk.table)
            statement = sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(constrained, sql.Identifier(fk.name))

            def validate(cur, statement: sql.Composable = statement) -> None:
                cur.execute(statement)

            self._once(f"validate {fk.name}", validate)

    def drop_old_foreign_keys(self) -> list[str]:
        """Right after the swap: drop the swapped-out table's own foreign keys, each in a
        short transaction under ``lock_timeout`` (ACCESS EXCLUSIVE on the old table and, for a
        few ms, on the referenced table: what dropping the old table takes later anyway), so
        that its rows no longer restrict or cascade into the referenced tables while the
        restored table is validated and verified (or kept for inspection). Returns the names
        dropped; one that cannot get its lock is left, with a warning (the restore stands)."""
        old = sql.Identifier(self.schema, self.old_name)
        with self.conn.cursor() as cur:
            cur.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f' "
                        "ORDER BY conname", (old.as_string(self.conn),))
            names = [r[0] for r in cur.fetchall()]
        self.conn.commit()
        dropped = []
        for name in names:
            statement = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(old, sql.Identifier(name))

            def drop(cur, statement: sql.Composable = statement) -> None:
                cur.execute(statement)

            try:
                self._once(f"drop {name} of {self.old_name}", drop)
                dropped.append(name)
            except RollbackError as exc:
                log.warning("rebuild of %s: could not drop foreign key %s of %s.%s (it acts until that table is "
                            "dropped): %s", self.qualified, name, self.schema, self.old_name, exc)
        return dropped

    def drop_old(self) -> None:
        old = sql.Identifier(self.schema, self.old_name)
        try:
            self._once("drop old table", lambda cur: cur.execute(sql.SQL("DROP TABLE {}").format(old)))
        except RollbackError as exc:  # the restore is complete; only disk is lost
            log.warning("rebuild of %s: could not drop %s.%s, drop it later: %s", self.qualified, self.schema,
                        self.old_name, exc)

    def drop_scratch(self) -> None:
        self._once("drop scratch schema", lambda cur: cur.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCRATCH_SCHEMA))))

    def drop_scratch_after_swap(self) -> str:
        """After the swap committed: the scratch schema dropped (the trigger went with the
        swap); returns a note for the error."""
        notes = ["the swap had committed: the restored table is in place"]
        try:
            self.conn.rollback()
            with self.conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                            (sql.Identifier(self.schema, self.old_name).as_string(self.conn),))
                if cur.fetchone()[0]:
                    notes.append(f"{self.schema}.{self.old_name} is kept for inspection (drop it when done)")
                # Foreign keys valid before, re-created NOT VALID by the swap and not validated yet: a
                # later rebuild would read them as NOT VALID and leave them so.
                pending = []
                own = self.shape.own_fks if self.shape else []
                for fk in [*own, *(self.shape.incoming_fks if self.shape else [])]:
                    constrained = self.tbl.as_string(self.conn) if fk in own else fk.table
                    cur.execute("SELECT NOT convalidated FROM pg_constraint WHERE conrelid = %s::regclass "
                                "AND conname = %s", (constrained, fk.name))
                    row = cur.fetchone()
                    if fk.validated and row and row[0]:
                        pending.append(f"ALTER TABLE {constrained} VALIDATE CONSTRAINT "
                                       f"{sql.Identifier(fk.name).as_string(self.conn)}")
                if pending:
                    notes.append("foreign keys still NOT VALID (valid before the swap): " + "; ".join(pending))
            self.conn.commit()
            self.drop_scratch()
        except Exception as exc:  # the original error matters more
            notes.append(f"scratch schema {SCRATCH_SCHEMA} not dropped ({server_error_text(exc)})")
        return "; ".join(notes)

    def undo(self) -> str:
        """Before the swap committed: the trigger (retried under lock_timeout), the new
        table and the scratch schema removed; the live table as it was. Returns a note for
        the error when something could not be removed."""
        notes: list[str] = []
        gone = "the connection is gone: a rerun removes the capture trigger and the new table"
        if self.conn.closed:  # killed (pg_terminate_backend, a network cut): nothing more can run on it
            return gone
        try:
            self.conn.rollback()
        except Exception:
            return gone
        if not self.staged_once:
            return ""  # refused or failed before anything was created
        try:
            if self.trigger_tried:
                self._once("drop capture trigger", lambda cur: cur.execute(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(CAPTURE_TRIGGER), self.tbl)),
                    retries=max(self.lock_retries, 5))
        except Exception as exc:
            # Neutralised without a lock on the table: the trigger then does nothing.
            try:
                with self.conn.cursor() as cur:
                    cur.execute(sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql "
                                        "AS $soak$BEGIN RETURN NULL; END$soak$").format(self.function))
                self.conn.commit()
            except Exception:
                self.conn.rollback()
            return (f"the capture trigger {CAPTURE_TRIGGER} on {self.qualified} could not be dropped "
                    f"({server_error_text(exc)}); it "
                    f"now does nothing; a rerun drops it, or DROP TRIGGER {CAPTURE_TRIGGER} ON {self.qualified}")
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (self.new.as_string(self.conn),))
                row = cur.fetchone()
            self.conn.commit()
            if self.new_created and row and row[0] == MARKER:
                self._once("drop new table", lambda cur: cur.execute(
                    sql.SQL("DROP TABLE IF EXISTS {}").format(self.new)))
        except Exception as exc:
            notes.append(f"the new table {self.new.as_string(self.conn)} could not be dropped "
                         f"({server_error_text(exc)})")
        try:
            self.drop_scratch()
        except Exception as exc:
            notes.append(f"scratch schema {SCRATCH_SCHEMA} not dropped ({server_error_text(exc)})")
        return "; ".join(notes)
