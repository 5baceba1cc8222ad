"""Data-loss detection: a small fingerprint of a table before the migration, compared later.

Seed: "Cualquier pérdida de datos detectada" is a NO-GO. :func:`take` reads the table
once before the migration; :func:`compare` reads it again and says exactly what was lost
(rows and preserved values); :func:`compare_keys` is the cheap reading in between (rows
only: the keys' count and digest). One set-based statement (an invertible Bloom lookup table plus per-bucket
figures); SQL composed with ``psycopg2.sql``.

Design notes: docs/design.md#fingerprintpy
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from psycopg2 import sql

from migration_soak.exceptions import MeasurementError
from migration_soak.pgconn import STABLE_TEXT_OUTPUT, PgTarget, split_table

log = logging.getLogger(__name__)

#: v2: rows hashed with ``hash_record_extended`` (each column's own hash function) and the
#: check hash ``hashint8extended``; v1 (``ROW(...)::text`` and ``md5``, twice the work) is
#: not read any more.
FORMAT = "iblt-v2"
#: Cells per third of the IBLT (a power of two, at most 2**20): decodes up to about
#: 550 differing elements (a changed row is two: its old and its new version).
DEFAULT_CELLS = 256
#: Buckets of the fallback figures (a power of two).
DEFAULT_BUCKETS = 256
#: Column types whose values ``hash_record_extended`` hashes with the type's own extended
#: hash function (equal values, equal hashes). Other types (json, xml, geometric, arrays,
#: enums, domains...) are hashed through their text (``::text``), as v1 hashed every column.
HASHED_TYPES = frozenset({
    "text", "character varying", "character", "name", "smallint", "integer", "bigint", "numeric", "real",
    "double precision", "boolean", "date", "time without time zone", "time with time zone",
    "timestamp without time zone", "timestamp with time zone", "interval", "uuid", "bytea", "jsonb", "inet",
    "cidr", "macaddr", "oid",
})
STATEMENT_TIMEOUT_MS = 120_000
MAX_COLUMNS = 62  # one bit each in a bigint mask
_SAMPLE = 20  # keys shown as evidence

# Output settings that make ROW(...)::text the same bytes at every reading.
_SESSION = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    "SET LOCAL statement_timeout = %(timeout)s",
    *STABLE_TEXT_OUTPUT,
)


@dataclass(frozen=True)
class Fingerprint:
    """A table's rows summarised before the migration; JSON-able (``to_dict``) for a store event.

    Fields:
        table: ``table`` (in ``public``: ``pgconn.split_table``, whatever the connection's
            search path says) or ``schema.table`` (literal names, no case folding).
        key: the primary-key column.
        columns: the preserved columns (literal names, e.g. ``authorizerId``).
        created_column: the row-creation timestamp column restricting later comparisons to
            rows that existed at fingerprint time; ``None``: every row (then inserts since
            the fingerprint count as differences and can exhaust the exact decoding).
        created_max: text of ``max(created_column)`` at fingerprint time (``None`` without
            a created column or rows).
        taken_at: the database clock (``now()``, ISO 8601 UTC) when it was taken.
        rows: rows fingerprinted.
        non_null: per column, non-null values fingerprinted.
        cells: per third of the IBLT, ``DEFAULT_CELLS`` by default.
        iblt: ``{"n", "key", "row", "mask", "check"}``: ``3 * cells`` integers each.
        buckets: ``{"n", "digest", "non_null": {column: [...]}}``: per key-hash bucket.
        duration_s: seconds the reading took.
    """

    table: str
    key: str
    columns: tuple[str, ...]
    created_column: str | None
    created_max: str | None
    taken_at: str
    rows: int
    non_null: dict[str, int]
    cells: int
    iblt: dict[str, list[int]]
    buckets: dict[str, Any]
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (lists, ints, strings); about 60 kB with the defaults."""
        return {
            "format": FORMAT, "table": self.table, "key": self.key, "columns": list(self.columns),
            "created_column": self.created_column, "created_max": self.created_max, "taken_at": self.taken_at,
            "rows": self.rows, "non_null": dict(self.non_null), "cells": self.cells, "iblt": self.iblt,
            "buckets": self.buckets, "duration_s": self.duration_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Fingerprint":
        """Inverse of ``to_dict`` (other keys, e.g. an event's ``text``, are ignored).

        Raises ``MeasurementError`` naming what is missing or malformed."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            fp = cls(
                table=str(data["table"]), key=str(data["key"]), columns=tuple(data["columns"]),
                created_column=data["created_column"], created_max=data["created_max"],
                taken_at=str(data["taken_at"]), rows=int(data["rows"]), non_null={k: int(v) for k, v in data["non_null"].items()},
                cells=int(data["cells"]), iblt={k: [int(x) for x in v] for k, v in data["iblt"].items()},
                buckets=data["buckets"], duration_s=float(data.get("duration_s", 0.0)),
            )
            size = 3 * fp.cells
            if any(len(fp.iblt[f]) != size for f in ("n", "key", "row", "mask", "check")):
                raise ValueError("IBLT lists of the wrong length")
            nb = len(fp.buckets["n"])
            if len(fp.buckets["digest"]) != nb or any(len(fp.buckets["non_null"][c]) != nb for c in fp.columns):
                raise ValueError("bucket lists of the wrong length")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MeasurementError(f"not a fingerprint: {type(exc).__name__}: {exc}") from None
        return fp


@dataclass(frozen=True)
class DataLoss:
    """What ``compare`` found: the table now against its fingerprint.

    Fields:
        table: the table compared.
        exact: the figures are exact (the differences decoded); ``False``: lower bounds
            from the buckets (too many differences to tell apart, i.e. a large change).
        rows_before: rows in the fingerprint.
        rows_now: rows in the table now (all).
        rows_since: rows created after the fingerprint (``created_column > created_max``).
        rows_lost: rows of the fingerprint whose key is gone.
        values_lost: non-null preserved values that are null now, in rows that still exist
            (a dropped preserved column loses all of its values).
        rows_changed: surviving rows whose preserved values differ (reported, not loss:
            applications update rows).
        rows_appeared: rows present now with ``created_column <= created_max`` that the
            fingerprint did not hold (late commits, re-inserted rows): never counted as
            survivors.
        columns: per preserved column ``{"non_null_before", "non_null_now", "values_lost"}``
            (``non_null_now`` over the rows that existed at fingerprint time).
        buckets_differing: key-hash buckets whose rows, non-null counts or digest differ.
        missing_columns: preserved columns the table no longer has.
        lost_key_hashes: up to 20 ``hashtextextended(key::text, 0)`` of lost rows (find
            them in the backup with that expression).
        changed_keys: up to 20 keys of changed rows, those with lost values first.
        taken_at: when the fingerprint was taken; duration_s: seconds ``compare`` took.
    """

    table: str
    exact: bool
    rows_before: int
    rows_now: int
    rows_since: int
    rows_lost: int
    values_lost: int
    rows_changed: int
    rows_appeared: int
    columns: dict[str, dict[str, int]]
    buckets_differing: int
    missing_columns: list[str] = field(default_factory=list)
    lost_key_hashes: list[int] = field(default_factory=list)
    changed_keys: list[str] = field(default_factory=list)
    taken_at: str = ""
    duration_s: float = 0.0

    @property
    def lost(self) -> int:
        """``rows_lost + values_lost``: the data-loss check's value."""
        return self.rows_lost + self.values_lost

    def to_dict(self) -> dict[str, Any]:
        """JSON types only (a few hundred bytes): the observation's evidence."""
        return {
            "table": self.table, "exact": self.exact, "rows_before": self.rows_before, "rows_now": self.rows_now,
            "rows_since": self.rows_since, "rows_lost": self.rows_lost, "values_lost": self.values_lost,
            "rows_changed": self.rows_changed, "rows_appeared": self.rows_appeared, "columns": self.columns,
            "buckets_differing": self.buckets_differing, "missing_columns": self.missing_columns,
            "lost_key_hashes": self.lost_key_hashes, "changed_keys": self.changed_keys,
            "fingerprint_taken_at": self.taken_at, "duration_s": self.duration_s,
        }

    def summary(self) -> str:
        """One line for logs and reports."""
        bound = "" if self.exact else "at least "
        return (f"{self.table}: {bound}{self.rows_lost} rows and {bound}{self.values_lost} values lost since "
                f"{self.taken_at}; {self.rows_changed} rows changed, {self.rows_since} new")


def take(
    target: PgTarget,
    table: str,
    key: str,
    columns: Sequence[str],
    created_column: str | None = "createdAt",
    *,
    cells: int = DEFAULT_CELLS,
    buckets: int = DEFAULT_BUCKETS,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
) -> Fingerprint:
    """Fingerprint ``table`` on ``target``: one read of the table (see the module doc).

    ``columns`` are the preserved columns (literal names); ``key`` identifies rows;
    ``created_column`` the creation time (``None``: no restriction later). ``cells``
    (per third of the IBLT) and ``buckets`` must be powers of two.

    Raises ``MeasurementError`` when the table or a column does not exist or the query
    fails (message scrubbed of the password).
    """
    columns = tuple(dict.fromkeys(columns))
    _check_shape(columns, cells, buckets)
    started = time.monotonic()
    with _reading(target, f"fingerprint of {table}", statement_timeout_ms) as cur:
        schema, name = split_table(table)
        present = _columns_of(cur, schema, name)
        if present is None:
            raise MeasurementError(f"fingerprint: table {table!r} does not exist in {target.describe()}")
        missing = [c for c in (key, *columns, *([created_column] if created_column else [])) if c not in present]
        if missing:
            raise MeasurementError(f"fingerprint: {table} has no column {', '.join(map(repr, missing))}")
        cur.execute(_scan_sql(schema, name, key, columns, present, max_of=created_column, restrict=None,
                              cells=cells, buckets=buckets), {"created_max": None})
        rows = cur.fetchall()
    scan = _Scan.of(rows, columns, cells, buckets)
    fp = Fingerprint(
        table=table, key=key, columns=columns, created_column=created_column, created_max=scan.created_max,
        taken_at=scan.now, rows=scan.rows_old, non_null={c: sum(v) for c, v in scan.non_null.items()},
        cells=cells, iblt=scan.iblt, buckets={"n": scan.bucket_n, "digest": scan.digest, "non_null": scan.non_null},
        duration_s=round(time.monotonic() - started, 3),
    )
    log.info("fingerprint of %s: %d rows, %d columns, %.3f s", table, fp.rows, len(columns), fp.duration_s)
    return fp


def compare(before: Fingerprint, target: PgTarget, *, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> DataLoss:
    """Read the table again and compare it with ``before`` (see the module doc and ``DataLoss``).

    Raises ``MeasurementError`` when the key column is gone (rows cannot be told apart)
    or the query fails. A missing table is every row lost; a missing preserved column,
    every value of it lost.
    """
    started = time.monotonic()
    schema, name = split_table(before.table)
    with _reading(target, f"fingerprint compare of {before.table}", statement_timeout_ms) as cur:
        present = _columns_of(cur, schema, name)
        if present is None:
            return _table_gone(before, round(time.monotonic() - started, 3))
        if before.key not in present:
            raise MeasurementError(f"fingerprint: key column {before.key!r} of {before.table} is gone")
        missing = [c for c in before.columns if c not in present]
        scan = _scan_now(cur, before, present)
        result = _diff(before, scan)
        changed_keys = _keys_of(cur, before, result["changed_kh"])
    loss = _data_loss(before, scan, result, missing, changed_keys, started)
    log.info("fingerprint compare: %s (%.3f s)", loss.summary(), loss.duration_s)
    return loss


@dataclass(frozen=True)
class KeyReading:
    """What ``compare_keys`` found: the keys of the rows the fingerprint held, against the
    table now. It proves that no row was lost (``intact``); it reads no preserved value,
    so it proves nothing about values nulled or changed in surviving rows.

    Fields:
        table: the table read.
        rows_before: rows in the fingerprint; rows_now: rows now with ``created_column``
            up to the fingerprint's ``created_max`` (all rows without one).
        digest_before, digest_now: XOR of ``hashtextextended(key::text, 0)`` over those
            rows (64 bits; before: folded from the fingerprint's IBLT, no extra reading).
        missing_columns: preserved columns the table no longer has; ``table_gone``.
        taken_at: when the fingerprint was taken; duration_s: seconds the reading took.
    """

    table: str
    rows_before: int
    rows_now: int
    digest_before: int
    digest_now: int
    missing_columns: list[str]
    table_gone: bool
    taken_at: str
    duration_s: float

    @property
    def intact(self) -> bool:
        """Same rows, same key digest, every preserved column present: no row of the
        fingerprint lost (a lost row changes the count or, replaced by another key, the
        digest; a collision of 64-bit XOR digests is the only way to miss one)."""
        return (not self.table_gone and not self.missing_columns and self.rows_now == self.rows_before
                and self.digest_now == self.digest_before)

    def to_dict(self) -> dict[str, Any]:
        """JSON types only: the observation's evidence."""
        return {"table": self.table, "rows_before": self.rows_before, "rows_now": self.rows_now,
                "key_digest_before": self.digest_before, "key_digest_now": self.digest_now,
                "keys_intact": self.intact, "missing_columns": self.missing_columns, "table_gone": self.table_gone,
                "fingerprint_taken_at": self.taken_at, "duration_s": self.duration_s}


def key_digest(before: Fingerprint) -> int:
    """XOR of the key hashes of the fingerprinted rows: the XOR of one IBLT third's ``key``
    cells (every row is in exactly one cell of each third)."""
    digest = 0
    for v in before.iblt["key"][: before.cells]:
        digest ^= v
    return digest


def compare_keys(before: Fingerprint, target: PgTarget, *,
                 statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> KeyReading:
    """The cheap reading between exact compares: count and XOR-digest the keys of the rows
    that existed at fingerprint time (one scan, no preserved value read; about 0.9 s at
    10 M users against 25 s for ``compare``). See ``KeyReading`` for what it proves.

    Same session as ``compare`` (read-only repeatable-read transaction, ``statement_timeout``,
    the soak's application name). Raises ``MeasurementError`` when the query fails.
    """
    started = time.monotonic()
    schema, name = split_table(before.table)
    with _reading(target, f"key reading of {before.table}", statement_timeout_ms) as cur:
        present = _columns_of(cur, schema, name)
        if present is None or before.key not in present:
            rows_now, digest_now, missing = 0, 0, list(before.columns)
        else:
            missing = [c for c in before.columns if c not in present]
            restrict = (before.created_column if before.created_column in present
                        and before.created_max is not None else None)
            old = (sql.SQL("WHERE {c} IS NULL OR {c} <= %(created_max)s").format(c=sql.Identifier(restrict))
                   if restrict else sql.SQL(""))
            cur.execute(sql.SQL("SELECT count(*), coalesce(bit_xor(hashtextextended({k}::text, 0)), 0) "
                                "FROM {t} {old}").format(k=sql.Identifier(before.key), t=_ident(schema, name),
                                                         old=old),
                        {"created_max": before.created_max})
            rows_now, digest_now = cur.fetchone()
    reading = KeyReading(before.table, before.rows, int(rows_now), key_digest(before), int(digest_now), missing,
                         present is None, before.taken_at, round(time.monotonic() - started, 3))
    log.info("fingerprint keys of %s: %d rows before, %d now, intact %s (%.3f s)", before.table,
             reading.rows_before, reading.rows_now, reading.intact, reading.duration_s)
    return reading


def _scan_now(cur, before: Fingerprint, present: dict[str, str]) -> _Scan:
    """Scan the table as it is now, shaped like ``before`` (same cells and buckets).

    ``present``: the table's columns now (name: type); preserved columns no longer there read as
    NULL. Only rows created up to ``before.created_max`` count as old, when the created
    column still exists and the fingerprint had one; else every row does."""
    schema, name = split_table(before.table)
    here = {c: present[c] for c in (before.key, *before.columns) if c in present}
    created = before.created_column if before.created_column in present else None
    restrict = created if before.created_max is not None else None
    n_buckets = len(before.buckets["n"])
    cur.execute(_scan_sql(schema, name, before.key, before.columns, here, max_of=None, restrict=restrict,
                          cells=before.cells, buckets=n_buckets),
                {"created_max": before.created_max})
    return _Scan.of(cur.fetchall(), before.columns, before.cells, n_buckets)


def _keys_of(cur, before: Fingerprint, key_hashes: list[int]) -> list[str]:
    """The keys (as text) of rows whose ``hashtextextended(key::text, 0)`` is in
    ``key_hashes``, in that order, at most ``_SAMPLE``; no query when there are none."""
    if not key_hashes:
        return []
    schema, name = split_table(before.table)
    cur.execute(
        sql.SQL("SELECT {k}::text, hashtextextended({k}::text, 0) FROM {t} "
                "WHERE hashtextextended({k}::text, 0) = ANY(%(kh)s) LIMIT %(n)s").format(
            k=sql.Identifier(before.key), t=_ident(schema, name)),
        {"kh": key_hashes, "n": 4 * _SAMPLE})
    found = dict((h, k) for k, h in cur.fetchall())
    return [found[h] for h in key_hashes if h in found][:_SAMPLE]


def _data_loss(before: Fingerprint, scan: _Scan, result: dict[str, Any], missing: list[str],
               changed_keys: list[str], started: float) -> DataLoss:
    """``DataLoss`` from ``_diff``'s ``result`` and the scan; ``started``: the
    ``time.monotonic()`` at which ``compare`` began (for ``duration_s``)."""
    columns = {c: {"non_null_before": before.non_null.get(c, 0), "non_null_now": sum(scan.non_null[c]),
                   "values_lost": result["values_lost"][c]} for c in before.columns}
    return DataLoss(
        table=before.table, exact=result["exact"], rows_before=before.rows, rows_now=scan.rows_total,
        rows_since=scan.rows_total - scan.rows_old, rows_lost=result["rows_lost"],
        values_lost=sum(result["values_lost"].values()), rows_changed=result["rows_changed"],
        rows_appeared=result["rows_appeared"], columns=columns, buckets_differing=result["buckets_differing"],
        missing_columns=missing, lost_key_hashes=result["lost_kh"][:_SAMPLE], changed_keys=changed_keys,
        taken_at=before.taken_at, duration_s=round(time.monotonic() - started, 3),
    )


# --- the scan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scan:
    rows_total: int
    rows_old: int
    created_max: str | None
    now: str
    iblt: dict[str, list[int]]
    bucket_n: list[int]
    digest: list[int]
    non_null: dict[str, list[int]]

    @classmethod
    def of(cls, rows: list[tuple], columns: Sequence[str], cells: int, buckets: int) -> "_Scan":
        """Fold the scan's rows (one per IBLT cell, one per bucket, one total) into lists."""
        iblt = {f: [0] * (3 * cells) for f in ("n", "key", "row", "mask", "check")}
        bucket_n, digest = [0] * buckets, [0] * buckets
        non_null = {c: [0] * buckets for c in columns}
        total = None
        for grouping, idx, n, kx, vx, mx, cx, *rest in rows:
            nn, (count_all, created_max, now) = rest[:-3], rest[-3:]
            if grouping == _TOTAL:
                total = (count_all, n, created_max, now)
            elif grouping == _BUCKET:
                bucket_n[idx], digest[idx] = n, vx or 0
                for c, v in zip(columns, nn):
                    non_null[c][idx] = v
            else:
                for f, v in zip(("n", "key", "row", "mask", "check"), (n, kx, vx, mx, cx)):
                    iblt[f][idx] = v or 0
        if total is None:
            raise MeasurementError("fingerprint: the scan returned no total row")
        rows_total, rows_old, created_max, now = total
        return cls(rows_total, rows_old, created_max, now.isoformat(), iblt, bucket_n, digest, non_null)


# GROUPING(c1, c2, c3, b): a bit per argument *not* grouped by, the first one highest;
# _TOTAL: the row folded from the bucket groups (all four bits, as for the empty set).
_BUCKET, _TOTAL = 0b1110, 0b1111


def _scan_sql(schema, name, key, columns, present, *, max_of, restrict, cells, buckets) -> sql.Composed:
    """The one statement that reads the table: a single pass with one hash table per IBLT
    third and one for the buckets (``GROUPING SETS``), then a total row folded from the
    bucket groups.

    ``columns``: the fingerprint's preserved columns in order; ``present``: ``{column:
    type}`` of the key and the preserved columns that exist (the others read as NULL; a
    type outside ``HASHED_TYPES`` is hashed through its text). ``max_of``: the created column whose maximum to
    return (``None``: NULL). ``restrict``: the created column to compare with
    ``%(created_max)s`` (``None``: every row counts as old). Rows:
    ``grouping, idx, n, kx, vx, mx, cx, nn_1..nn_k, count_all, created_max, now``
    (aggregates over old rows only, but ``count_all``; the total row last).

    Rows that are not old land in cell and bucket ``-1`` instead of being filtered out of
    each aggregate: one ``FILTER`` per aggregate and a fifth grouping set for the total
    cost 15 % of the statement (1 M users, one core)."""
    def value(c: str) -> sql.Composable:
        if c not in present:
            return sql.SQL("NULL::text")
        ident = sql.Identifier(c)
        return ident if present[c] in HASHED_TYPES else sql.SQL("{}::text").format(ident)

    vals = [value(c) for c in columns]
    mask = sql.SQL(" + ").join(
        sql.SQL("CASE WHEN {v} IS NULL THEN 0 ELSE {bit} END").format(v=v, bit=sql.Literal(1 << i))
        for i, v in enumerate(vals)
    )
    nn = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE mask & {bit} <> 0) AS nn{i}").format(bit=sql.Literal(1 << i), i=sql.SQL(str(i)))
        for i in range(len(vals))
    )
    nn_total = sql.SQL(", ").join(sql.SQL("NULL::bigint") for _ in vals)
    nn_cols = sql.SQL(", ").join(sql.SQL("nn{}").format(sql.SQL(str(i))) for i in range(len(vals)))
    created = sql.Identifier(max_of) if max_of else sql.SQL("NULL::text")
    m, s, bm = sql.Literal(cells - 1), sql.Literal(cells), sql.Literal(buckets - 1)
    cell_exprs = [sql.SQL("vh & {m}"), sql.SQL("{s} + ((vh >> 20) & {m})"),
                  sql.SQL("2 * {s} + ((vh >> 40) & {m})"), sql.SQL("kh & {bm}")]
    cell_exprs = [e.format(m=m, s=s, bm=bm) for e in cell_exprs]
    if restrict:
        old = sql.SQL("({c} IS NULL OR {c} <= %(created_max)s)").format(c=sql.Identifier(restrict))
        cell_exprs = [sql.SQL("CASE WHEN old THEN {e} ELSE -1 END").format(e=e) for e in cell_exprs]
    else:
        old = sql.SQL("TRUE")
    c1, c2, c3, b = cell_exprs
    # OFFSET 0 keeps each subquery a separate plan node, so every per-row expression
    # (the row hash above all) is computed once, not once per reference.
    return sql.SQL("""
WITH g AS MATERIALIZED (
    SELECT GROUPING(c1, c2, c3, b) AS grouping, coalesce(c1, c2, c3, b) AS idx,
           count(*) AS n, bit_xor(kh) AS kx, bit_xor(vh) AS vx, bit_xor(mask) AS mx, bit_xor(chk) AS cx,
           {nn}, max(created) AS cm
    FROM (
        SELECT kh, vh, mask, created, hashint8extended(vh, 2) AS chk,
               {c1} AS c1, {c2} AS c2, {c3} AS c3, {b} AS b
        FROM (
            SELECT hashtextextended({key}::text, 0) AS kh,
                   hash_record_extended(ROW({keyval}, {vals}), 1) AS vh,
                   ({mask})::bigint AS mask,
                   {old} AS old,
                   {created} AS created
            FROM {table} OFFSET 0
        ) e OFFSET 0
    ) s
    GROUP BY GROUPING SETS ((c1), (c2), (c3), (b))
)
SELECT grouping, idx, n, kx, vx, mx, cx, {nn_cols}, NULL::bigint, NULL::text, NULL::timestamptz
FROM g WHERE idx >= 0
UNION ALL
SELECT {total}, NULL, coalesce(sum(n) FILTER (WHERE grouping = {bucket} AND idx >= 0), 0)::bigint,
       NULL, NULL, NULL, NULL, {nn_total},
       coalesce(sum(n) FILTER (WHERE grouping = {bucket}), 0)::bigint, max(cm)::text, now()
FROM g
""").format(
        key=sql.Identifier(key), keyval=value(key), vals=sql.SQL(", ").join(vals), mask=mask, old=old, created=created,
        table=_ident(schema, name), nn=nn, nn_cols=nn_cols, nn_total=nn_total, c1=c1, c2=c2, c3=c3, b=b,
        total=sql.Literal(_TOTAL), bucket=sql.Literal(_BUCKET),
    )


# --- decoding ----------------------------------------------------------------------------


_U32 = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _U32


def _check_hash(vh: int) -> int:
    """PostgreSQL's ``hashint8extended(vh, 2)`` in Python (src/backend/access/hash/hashfunc.c:
    the bigint folded to 32 bits, then ``hash_uint32_extended``, Bob Jenkins' lookup3 ``mix``
    and ``final`` in src/common/hashfn.c); a signed 64-bit int like the SQL's."""
    lo, hi = vh & _U32, (vh >> 32) & _U32
    k = lo ^ (hi if vh >= 0 else ~hi & _U32)
    a = b = c = (0x9E3779B9 + 4 + 3923095) & _U32
    a = (a + 0) & _U32  # seed >> 32 == 0
    b = (b + 2) & _U32  # the seed's low half
    # mix(a, b, c)
    a = (a - c) & _U32; a ^= _rot(c, 4); c = (c + b) & _U32  # noqa: E702
    b = (b - a) & _U32; b ^= _rot(a, 6); a = (a + c) & _U32  # noqa: E702
    c = (c - b) & _U32; c ^= _rot(b, 8); b = (b + a) & _U32  # noqa: E702
    a = (a - c) & _U32; a ^= _rot(c, 16); c = (c + b) & _U32  # noqa: E702
    b = (b - a) & _U32; b ^= _rot(a, 19); a = (a + c) & _U32  # noqa: E702
    c = (c - b) & _U32; c ^= _rot(b, 4); b = (b + a) & _U32  # noqa: E702
    a = (a + k) & _U32
    # final(a, b, c)
    c ^= b; c = (c - _rot(b, 14)) & _U32  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _U32  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _U32  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _U32  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _U32  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _U32  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _U32  # noqa: E702
    out = (b << 32) | c
    return out - (1 << 64) if out >= 1 << 63 else out


def _cells_of(vh: int, cells: int) -> tuple[int, int, int]:
    """The element's cell in each third (same bit slices as the SQL)."""
    m = cells - 1
    return vh & m, cells + ((vh >> 20) & m), 2 * cells + ((vh >> 40) & m)


@dataclass
class _IbltDifference:
    """The cell-wise difference ``before - now`` of two IBLTs of ``3 * cells`` cells:
    ``n`` counts subtracted, ``kx``/``vx``/``mx``/``cx`` (key, row, mask, check) XORed.
    What is left are the elements only before (count +1) or only now (count -1)."""

    cells: int
    n: list[int]
    kx: list[int]
    vx: list[int]
    mx: list[int]
    cx: list[int]

    @classmethod
    def of(cls, before: dict[str, list[int]], now: dict[str, list[int]], cells: int) -> "_IbltDifference":
        """``before - now``; both ``{"n", "key", "row", "mask", "check"}`` as in ``Fingerprint.iblt``."""
        def xor(f: str) -> list[int]:
            return [a ^ b for a, b in zip(before[f], now[f])]

        return cls(cells, [a - b for a, b in zip(before["n"], now["n"])], xor("key"), xor("row"), xor("mask"),
                   xor("check"))

    def pure(self, i: int) -> bool:
        """Cell ``i`` holds exactly one element: count +-1, its check hash matches its row
        hash, and that row hash maps to this cell."""
        n, vx = self.n[i], self.vx[i]
        return n in (1, -1) and self.cx[i] == _check_hash(vx) and i in _cells_of(vx, self.cells)

    def remove(self, i: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int]]:
        """Take the element of pure cell ``i`` out of its three cells (``i`` among them).

        Returns the element ``(sign, kh, vh, mask)`` and the cells it was removed from."""
        sign, k, v, msk, chk = self.n[i], self.kx[i], self.vx[i], self.mx[i], self.cx[i]
        touched = _cells_of(v, self.cells)
        for j in touched:
            self.n[j] -= sign
            self.kx[j] ^= k
            self.vx[j] ^= v
            self.mx[j] ^= msk
            self.cx[j] ^= chk
        return (sign, k, v, msk), touched

    def empty(self) -> bool:
        """Every cell is zero: all the differing elements were peeled."""
        return not any(any(f) for f in (self.n, self.kx, self.vx, self.mx, self.cx))


def peel(before: dict[str, list[int]], now: dict[str, list[int]], cells: int) -> list[tuple[int, int, int, int]] | None:
    """Decode the difference of two IBLTs: ``[(sign, kh, vh, mask)]`` (+1: only before,
    -1: only now), or ``None`` when it does not decode (too many differences)."""
    diff = _IbltDifference.of(before, now, cells)
    out: list[tuple[int, int, int, int]] = []
    stack = [i for i in range(len(diff.n)) if diff.pure(i)]
    while stack:
        i = stack.pop()
        if not diff.pure(i):
            continue
        element, touched = diff.remove(i)
        out.append(element)
        if len(out) > len(diff.n):  # cannot happen with a consistent table; never loop forever
            return None
        stack += [j for j in touched if diff.pure(j)]
    return out if diff.empty() else None


def _diff(before: Fingerprint, scan: _Scan) -> dict[str, Any]:
    """What differs between the fingerprint and the scan of the table now.

    Returns ``{"exact", "rows_lost", "values_lost": {column: count}, "rows_changed",
    "rows_appeared", "buckets_differing", "lost_kh": [key hash], "changed_kh": [key
    hash]}``: exact figures from the decoded IBLT difference (``_decoded``) when it
    decodes and agrees with the row counts and the buckets, else the buckets' lower
    bounds (``_bucket_bounds``, ``exact`` false, no key hashes)."""
    differing = _buckets_differing(before, scan)
    bounds = _bucket_bounds(before, scan)
    elements = peel(before.iblt, scan.iblt, before.cells)
    if elements is not None:
        decoded = _decoded(elements, before.columns)
        rows_gone = before.rows - scan.rows_old
        if rows_gone == len(decoded.lost) - decoded.appeared and len(decoded.lost) >= bounds.rows_lost:
            return {"exact": True, "rows_lost": len(decoded.lost), "values_lost": decoded.values_lost,
                    "rows_changed": len(decoded.changed), "rows_appeared": decoded.appeared,
                    "buckets_differing": differing, "lost_kh": sorted(decoded.lost),
                    "changed_kh": decoded.changed_first_losing()[:_SAMPLE]}
        log.warning("fingerprint: decoded differences disagree with the buckets; reporting lower bounds")
    return {"exact": False, "rows_lost": bounds.rows_lost, "values_lost": bounds.values_lost,
            "rows_changed": bounds.rows_changed, "rows_appeared": 0, "buckets_differing": differing,
            "lost_kh": [], "changed_kh": []}


def _buckets_differing(before: Fingerprint, scan: _Scan) -> int:
    """How many key-hash buckets differ in rows, digest or a column's non-null count."""
    bn, sn = before.buckets["n"], scan.bucket_n
    bnn, snn = before.buckets["non_null"], scan.non_null
    return sum(
        1 for b in range(len(bn))
        if bn[b] != sn[b] or before.buckets["digest"][b] != scan.digest[b]
        or any(bnn[c][b] != snn[c][b] for c in before.columns)
    )


@dataclass(frozen=True)
class _Bounds:
    """Lower bounds from the buckets (valid whether or not the IBLT decodes, as long as no
    row appeared with an old creation time in the same bucket).

    ``rows_lost``: the sum over buckets of the rows fewer now; ``values_lost`` per column:
    non-null values fewer now beyond the rows lost in that bucket; ``rows_changed``:
    buckets with as many rows as before but another digest (one changed row at least)."""

    rows_lost: int
    values_lost: dict[str, int]
    rows_changed: int


def _bucket_bounds(before: Fingerprint, scan: _Scan) -> _Bounds:
    """The buckets' lower bounds (``_Bounds``) of the fingerprint against the scan."""
    bn, sn = before.buckets["n"], scan.bucket_n
    bnn, snn = before.buckets["non_null"], scan.non_null
    gone = [max(0, bn[b] - sn[b]) for b in range(len(bn))]
    values = {c: sum(max(0, bnn[c][b] - snn[c][b] - gone[b]) for b in range(len(bn))) for c in before.columns}
    changed = sum(1 for b in range(len(bn)) if bn[b] == sn[b] and before.buckets["digest"][b] != scan.digest[b])
    return _Bounds(sum(gone), values, changed)


@dataclass(frozen=True)
class _Decoded:
    """The decoded differences, by key hash.

    ``lost``: key hashes of rows only before (one per lost row); ``appeared``: rows only
    now; ``values_lost`` per column: values non-null before and null now in rows found on
    both sides; ``changed``: ``(lost a value, key hash)`` per row found on both sides,
    in decoding order."""

    lost: list[int]
    appeared: int
    values_lost: dict[str, int]
    changed: list[tuple[bool, int]]

    def changed_first_losing(self) -> list[int]:
        """Key hashes of the changed rows, those that lost a value first (stable)."""
        return [kh for _, kh in sorted(self.changed, key=lambda t: not t[0])]


def _decoded(elements: list[tuple[int, int, int, int]], columns: Sequence[str]) -> _Decoded:
    """Pair ``peel``'s elements by key hash: an old and a new version of a key are one
    changed row (bit ``i`` of the masks is ``columns[i]``); an old one alone is a lost row,
    a new one alone an appeared row."""
    lost: list[int] = []
    appeared = 0
    changed: list[tuple[bool, int]] = []
    values = {c: 0 for c in columns}
    for kh, (old, new) in _masks_by_key(elements).items():
        for mask_old, mask_new in zip(old, new):
            dropped = mask_old & ~mask_new
            for i, c in enumerate(columns):
                values[c] += (dropped >> i) & 1
            changed.append((dropped != 0, kh))
        lost += [kh] * max(0, len(old) - len(new))
        appeared += max(0, len(new) - len(old))
    return _Decoded(lost, appeared, values, changed)


def _masks_by_key(elements: list[tuple[int, int, int, int]]) -> dict[int, tuple[list[int], list[int]]]:
    """``{kh: (masks only before, masks only now)}`` of ``peel``'s ``(sign, kh, vh, mask)``,
    keys in the order they first appear."""
    by_key: dict[int, tuple[list[int], list[int]]] = {}
    for sign, kh, _vh, mask in elements:
        by_key.setdefault(kh, ([], []))[0 if sign > 0 else 1].append(mask)
    return by_key


def _table_gone(before: Fingerprint, duration_s: float) -> DataLoss:
    return DataLoss(
        table=before.table, exact=True, rows_before=before.rows, rows_now=0, rows_since=0, rows_lost=before.rows,
        values_lost=0, rows_changed=0, rows_appeared=0,
        columns={c: {"non_null_before": before.non_null.get(c, 0), "non_null_now": 0, "values_lost": 0}
                 for c in before.columns},
        buckets_differing=sum(1 for n in before.buckets["n"] if n), missing_columns=list(before.columns),
        taken_at=before.taken_at, duration_s=duration_s,
    )


# --- helpers -----------------------------------------------------------------------------


def _check_shape(columns: Sequence[str], cells: int, buckets: int) -> None:
    if not columns:
        raise ValueError("fingerprint: give at least one preserved column")
    if len(columns) > MAX_COLUMNS:
        raise ValueError(f"fingerprint: at most {MAX_COLUMNS} columns, got {len(columns)}")
    for what, n, top in (("cells", cells, 1 << 20), ("buckets", buckets, 1 << 20)):
        if n < 2 or n > top or n & (n - 1):
            raise ValueError(f"fingerprint: {what} must be a power of two in [2, {top}], got {n}")


def _ident(schema: str, name: str) -> sql.Identifier:
    """``schema.table`` as ``split_table`` resolved it: never the connection's search path."""
    return sql.Identifier(schema, name)


@contextmanager
def _reading(target: PgTarget, what: str, timeout_ms: int) -> Iterator[Any]:
    """A cursor in the readers' session (``_SESSION``: read-only, ``statement_timeout``, the
    soak's application name), rolled back and closed after. Any error but a
    ``MeasurementError`` becomes one named ``what`` (psycopg2's: timeout, permissions), its
    message scrubbed of the password."""
    conn = _connect(target)
    try:
        with conn.cursor() as cur:
            _session(cur, timeout_ms)
            yield cur
    except MeasurementError:
        raise
    except Exception as exc:
        raise MeasurementError(f"{what}: {target.scrub(str(exc)).strip()}") from None
    finally:
        conn.rollback()
        conn.close()


def _connect(target: PgTarget):
    try:
        return target.connect()
    except Exception as exc:
        raise MeasurementError(f"cannot connect to {target.describe()}: {target.scrub(str(exc)).strip()}") from None


def _session(cur, timeout_ms: int) -> None:
    for stmt in _SESSION:
        cur.execute(stmt, {"timeout": int(timeout_ms)} if "%(" in stmt else None)


def _columns_of(cur, schema: str, name: str) -> dict[str, str] | None:
    """``{column: type}`` of the table (the type as ``regtype`` prints it, no modifier:
    ``timestamp without time zone``), or ``None`` when it does not exist (resolved like the scan)."""
    cur.execute("SELECT to_regclass(%s)", (_ident(schema, name).as_string(cur),))
    oid = cur.fetchone()[0]
    if oid is None:
        return None
    cur.execute("SELECT attname, atttypid::regtype::text FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (oid,))
    return dict(cur.fetchall())
