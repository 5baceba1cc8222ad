"""Incremental backups: the rows of some tables inserted or updated since a watermark, plus
each table's whole key list (so deletions are known) unless a count proves nothing was
deleted since the previous increment, kept and read back whole.

Runbook (seed, "Horas 9-24: Backup incremental creado"; GO "Backups completados
exitosamente"). An *increment* is taken in one read-only REPEATABLE READ transaction:
its *watermark* (``pg_snapshot_xmin`` of that transaction's snapshot, an ``xid8`` as
text) and, per table, ``COPY (SELECT <columns> WHERE <changed since>) TO STDOUT`` and
either ``COPY (SELECT <key>) TO STDOUT`` or the count proof, each spooled raw into a
private working folder; once the transaction has ended, each spool file is compressed
(zstd) into a file kept under ``<root>/<label>/`` with a ``manifest.json`` (format
``increment-v2``; v1 is still read) written last. The chain "pre-migration ``pg_dump``
(its record's ``watermark``) + increments applied in order (:func:`apply_increment`)"
restores each table as it was at the last increment.

**The count proof** (exact, no hashing). P: the table's keys at the previous increment's
snapshot; C: the keys of the rows this increment copies (every row version written since
that snapshot's watermark); S: the keys now. A row now is unchanged since then (key in P)
or written since (key in C): S is in P + C. So ``count(*)`` (same snapshot) =
|P| + |C \\ P| means S = P + C: nothing was deleted, and the increment keeps no key list
(replay deletes nothing). |P| is the previous increment's ``keys``; whether each key of C
is in P is read from the chain: back from the previous increment (its manifest's
``previous``) to the nearest one with a key list, that list plus the rows files of the
increments after it (streamed while the server counts; each file checked against its
manifest, the keys of C not met yet are all that is held); not read when the count alone
decides (below |P|: a deletion; |P| + |C|: every key of C is new). Anything else (no previous
increment given, a chain that does not link by watermark, a v1 manifest, a missing or
garbled file, a key type whose text is not its value: only int2/int4/int8/uuid and
text/varchar under a deterministic collation) copies the key list, the reason in the
manifest's ``deletions``; a delete hidden by an insert (count unchanged) still differs by
the new key.

What an increment does **not** capture: DDL (the increment's rows hold the columns the
table had when it was taken; replay writes only those); sequences; tables not named;
``TRUNCATE`` (seen only through the key list, or the count: rows absent from it are
deleted on replay; rows inserted again have new ``xmin`` and are in the increment).
Replay upserts by the primary key, so it may trip another unique index when two changed
rows swapped values.

Design notes: docs/design.md#incrementpy
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import zstandard
from psycopg2 import sql

from migration_soak.exceptions import BackupError
from migration_soak.pgconn import APPLICATION_NAME, STABLE_TEXT_OUTPUT, PgTarget, split_table

log = logging.getLogger(__name__)

FORMAT = "increment-v2"
#: Manifest formats read: v1 (every table with its key list) and v2 (a table's key list may
#: be replaced by the count proof, ``deletions``; the increment names its ``previous``).
FORMATS = ("increment-v1", FORMAT)
#: Key types whose COPY text is equal exactly when the values are equal (the count proof
#: compares keys as text); ``text``/``varchar`` only under a deterministic collation.
EXACT_KEY_TYPES = ("int2", "int4", "int8", "uuid", "text", "varchar")
#: Links walked back at most to find the key list the count proof starts from.
MAX_CHAIN = 1000
MANIFEST = "manifest.json"
ZSTD_LEVEL = 1  # as archive.ZSTD_LEVEL: fast, and the frame carries its XXH64 checksum
#: ``statement_timeout`` of each statement of an increment (ms): one COPY of a table's rows
#: or keys (10 M keys: seconds).
STATEMENT_TIMEOUT_MS = 600_000
_BLOCK = 1 << 20  # bytes buffered before compressing / read per call (1 MiB)
#: xids are 32 bits on disk and compare modulo 2**32 within 2**31 of each other
#: (PostgreSQL docs, "Preventing Transaction ID Wraparound Failures").
_XID_SPAN = 1 << 32
_XID_HALF = 1 << 31
_FIRST_NORMAL_XID = 3  # 0 invalid, 1 bootstrap, 2 frozen (transam.h)

# Output settings of COPY text that make values read back to the same values (and the same
# bytes at every increment); the replay sets them too.
_OUTPUT = STABLE_TEXT_OUTPUT


@dataclass(frozen=True)
class TableIncrement:
    """One table in an increment: ``table`` (``schema.table``), ``key`` (its one-column
    primary key), ``columns`` (in table order, generated ones left out), ``rows`` (rows
    changed since the watermark, as copied), ``keys`` (how many keys the snapshot holds:
    ``count(*)``, or the key list's lines), the kept files ``rows_file``/``keys_file``
    (names in the increment's folder; ``keys_file`` ``None``: no key list kept, the count
    proved that nothing was deleted) with their ``rows_bytes``/``keys_bytes`` (compressed)
    and ``rows_sha256``/``keys_sha256`` (hex), and ``deletions``: how deletions are known,
    ``{"proof": "key list", "reason": why no count proof}`` or ``{"proof": "count",
    "previous": <label>, "key_list": <label of the increment whose key list the chain
    starts from>, "previous_keys": |P|, "new_keys": |C \\ P|}`` (module doc)."""

    table: str
    key: str
    columns: tuple[str, ...]
    rows: int
    keys: int
    rows_file: str
    keys_file: str | None
    rows_bytes: int
    keys_bytes: int
    rows_sha256: str
    keys_sha256: str | None
    deletions: dict[str, Any] = field(default_factory=lambda: {"proof": "key list"})

    @property
    def proved_by_count(self) -> bool:
        return self.keys_file is None

    def to_dict(self) -> dict[str, Any]:
        files: dict[str, Any] = {"rows": {"name": self.rows_file, "bytes": self.rows_bytes,
                                          "sha256": self.rows_sha256}}
        if self.keys_file is not None:
            files["keys"] = {"name": self.keys_file, "bytes": self.keys_bytes, "sha256": self.keys_sha256}
        return {"key": self.key, "columns": list(self.columns), "rows": self.rows, "keys": self.keys,
                "files": files, "deletions": dict(self.deletions)}

    @classmethod
    def from_dict(cls, table: str, data: dict[str, Any]) -> "TableIncrement":
        files = data["files"]
        keys = files.get("keys")
        deletions = data.get("deletions") or {"proof": "key list"}
        if keys is None and deletions.get("proof") != "count":
            raise BackupError(f"the manifest's {table} has no key list and no count proof")
        return cls(table=table, key=str(data["key"]), columns=tuple(data["columns"]), rows=int(data["rows"]),
                   keys=int(data["keys"]), rows_file=str(files["rows"]["name"]),
                   keys_file=None if keys is None else str(keys["name"]),
                   rows_bytes=int(files["rows"]["bytes"]), keys_bytes=0 if keys is None else int(keys["bytes"]),
                   rows_sha256=str(files["rows"]["sha256"]), keys_sha256=None if keys is None else str(keys["sha256"]),
                   deletions=dict(deletions))


@dataclass(frozen=True)
class IncrementRecord:
    """What ``take_increment`` kept (the manifest's content, plus where).

    Fields: ``location`` (the increment's folder, an ``ObjectStoragePath`` URL);
    ``storage_conn_id``; ``label``; ``since`` (the watermark it starts from, ``None``: the
    whole tables); ``watermark`` (``xid8`` as text: the next increment's ``since``);
    ``base``: ``"increment"`` or ``"full"`` (every row copied: no ``since``, or one that
    cannot be trusted, ``full_reason`` says why); ``tables`` (``schema.table`` ->
    ``TableIncrement``, in the order given); ``size_bytes`` (all kept files, compressed,
    manifest included); ``duration_s`` (wall seconds of the whole: copy, compress, keep,
    read back); ``staging_s`` (wall seconds the staging connection was open, from connect
    to close: its transaction and the COPYs, the load the increment puts on staging; the
    compression, keeping and read-back come after it); ``created_at`` (UTC, when the
    snapshot was read); ``previous`` (the previous increment's location, the one ``since``
    is the watermark of, or ``None``). ``staging_s`` is not in the manifest.
    """

    location: str
    storage_conn_id: str | None
    label: str
    since: str | None
    watermark: str
    base: str
    full_reason: str | None
    tables: dict[str, TableIncrement]
    size_bytes: int
    duration_s: float
    created_at: datetime
    staging_s: float = 0.0
    previous: str | None = None

    def manifest(self) -> dict[str, Any]:
        """The ``manifest.json`` content (JSON types)."""
        return {"format": FORMAT, "label": self.label, "since": self.since, "watermark": self.watermark,
                "base": self.base, "full_reason": self.full_reason, "created_at": self.created_at.isoformat(),
                "previous": self.previous, "tables": {name: t.to_dict() for name, t in self.tables.items()}}


def current_watermark(target: PgTarget) -> str:
    """``pg_snapshot_xmin(pg_current_snapshot())`` of a new transaction on ``target``: an
    ``xid8`` as text (e.g. ``"7531"``). Every transaction that had not finished when it
    was read has an id at or above it, so a later reader that copies the rows whose
    ``xmin`` is at or above it misses no change made after this moment.
    Raises ``BackupError`` (scrubbed) when the server cannot be read."""
    try:
        conn = target.connect()
    except Exception as exc:
        raise BackupError(f"cannot connect to {target.describe()}: {target.scrub(str(exc)).strip()}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
            return str(cur.fetchone()[0])
    except Exception as exc:
        raise BackupError(f"cannot read the watermark of {target.describe()}: {target.scrub(str(exc)).strip()}") \
            from None
    finally:
        _rollback(conn)
        conn.close()


def take_increment(
    target: PgTarget,
    root: Any,
    label: str,
    tables: Sequence[str],
    since: str | None,
    *,
    statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
    conn_id: str | None = None,
    previous: Any = None,
) -> IncrementRecord:
    """Take, keep and verify the increment ``root / label /`` of ``tables`` since ``since``.

    ``root``: an ``ObjectStoragePath`` (``backup_storage.plan_root(plan) / "incremental"``);
    ``tables``: ``table`` (in ``public``) or ``schema.table``, literal names, each with a
    one-column primary key; ``since``: a watermark (``current_watermark``, a previous
    increment's, a ``BackupRecord.watermark``) or ``None`` for whole tables.
    ``statement_timeout_ms``: per statement (ms). ``previous``: the location of the
    increment whose ``watermark`` ``since`` is (``None``: ``since`` is a dump's, or there is
    none); with it, a table where nothing was deleted keeps no key list (the count proof,
    module doc).

    One read-only REPEATABLE READ transaction (everything ``SET LOCAL``, rolled back: safe
    behind a transaction pooler) reads the new watermark and then, per table, the rows with
    ``changed_since`` and the key list, spooled raw into a private working folder; the
    transaction ends (rolled back, connection closed) before each spool file is compressed
    into its zstd file (hashed, lines counted; the raw file deleted then), so staging's
    backend never waits on the client's compression (``staging_s``; the working folder
    holds every table's raw COPY text until it is compressed: about 400 MB for the keys
    of 10 M users, and a ``full`` increment's rows are the tables' whole text); each is kept (``backup_storage.keep``: partial name, read back,
    rename), the manifest last, then the whole increment is read back through the storage
    (``verify_increment``).

    A ``since`` ahead of the server's watermark (another cluster) or 2**31 or more
    transactions behind it (xids wrapped) cannot select rows: every row is copied
    (``base="full"``, ``full_reason``). Raises ``BackupError`` naming the table or step: a
    table that does not exist or has no one-column primary key, a failed statement, a
    storage failure, a kept file that does not read back; an increment already kept
    under ``label``.
    """
    from migration_soak.backup_storage import keep, working_folder

    started = time.monotonic()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", label) or label.startswith("."):
        raise BackupError(f"increment label {label!r} is not a plain file name (letters, digits, '._-')")
    if not tables:
        raise BackupError("tables: give at least one table")
    names = [_split(t) for t in tables]
    folder = root / label
    try:
        if (folder / MANIFEST).exists():
            raise BackupError(f"an increment is already kept at {folder}")
    except BackupError:
        raise
    except Exception as exc:
        raise BackupError(f"cannot reach backup storage {root}: {type(exc).__name__}: {exc}") from None
    with working_folder() as work:
        chains = _chains(previous, since, names, conn_id)
        watermark, created_at, limit, spooled, staging_s = _copy_out(target, names, since, statement_timeout_ms,
                                                                      work, chains)
        taken = {s.table: _compress_spooled(s, work) for s in spooled}
        base, full_reason = ("increment", None) if limit is not None else ("full", _full_reason(since, watermark))
        for item in taken.values():
            keep(work / item.rows_file, folder / item.rows_file, item.rows_sha256)
            if item.keys_file is not None and item.keys_sha256 is not None:
                keep(work / item.keys_file, folder / item.keys_file, item.keys_sha256)
        record = IncrementRecord(
            location=str(folder), storage_conn_id=conn_id, label=label, since=since, watermark=watermark, base=base,
            full_reason=full_reason, tables=taken, size_bytes=0, duration_s=0.0, created_at=created_at,
            staging_s=staging_s, previous=None if previous is None else str(previous))
        manifest = work / MANIFEST
        manifest.write_text(json.dumps(record.manifest(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        manifest_sha = hashlib.sha256(manifest.read_bytes()).hexdigest()
        keep(manifest, folder / MANIFEST, manifest_sha)
        size = manifest.stat().st_size + sum(t.rows_bytes + t.keys_bytes for t in taken.values())
    verify_increment(folder)
    duration = round(time.monotonic() - started, 3)
    log.info("increment %s (%s since %s, watermark %s): %s; %d bytes, %.2f s (staging connection open %.2f s)",
             folder, base, since, watermark, ", ".join(
                 f"{t.table} {t.rows} rows / {t.keys} keys ("
                 + ("no key list: nothing deleted, proved by count" if t.proved_by_count
                    else f"key list: {t.deletions.get('reason', 'copied')}") + ")"
                 for t in taken.values()), size, duration, staging_s)
    return replace(record, size_bytes=size, duration_s=duration)


def changed_since(limit: int) -> sql.Composable:
    """The predicate "this row version was written by a transaction at or after the
    watermark": ``age(xmin) <= limit``, where ``limit`` is ``age()`` of the watermark's
    32-bit xid read in the same transaction (``_age_limit``; ``age`` counts from one
    transaction-stable xid, so both sides are measured from the same point).

    Why it holds: every row version newer than the previous snapshot was written by a
    transaction that snapshot did not see, whose id is at or above the snapshot's
    ``xmin`` (the watermark: its ``xmin``, not its ``xmax``, so transactions still running
    then are included). Unfrozen ``xmin`` values lie within 2**31 of now, where ``age``
    orders them exactly. A frozen row keeps its ``xmin`` (PostgreSQL 9.4+; older servers
    and pg_upgrade'd pages show ``2``, FrozenTransactionId, whose ``age`` is INT_MAX: left
    out, rightly: such a row is older than any watermark); a frozen row older than 2**31
    transactions may wrap and be copied again, which replay (an upsert) absorbs.
    """
    return sql.SQL("age(xmin) <= {}").format(sql.Literal(int(limit)))


def verify_increment(location: Any, conn_id: str | None = None) -> dict[str, Any]:
    """Read a kept increment back whole through its storage; returns its manifest.

    ``location``: the increment's folder (``ObjectStoragePath`` or URL). Every file the
    manifest names must exist, have the manifest's SHA-256, be one whole zstd frame, and
    hold as many lines (COPY text: one per row) as the manifest counts (``rows``,
    ``keys``). A table proved by count has no key file. Raises ``BackupError`` naming the file and what differs.
    """
    folder = _path(location, conn_id)
    manifest = read_manifest(folder)
    for name, data in manifest["tables"].items():
        t = TableIncrement.from_dict(name, data)
        files = [(t.rows_file, t.rows_sha256, t.rows)]
        if t.keys_file is not None and t.keys_sha256 is not None:
            files.append((t.keys_file, t.keys_sha256, t.keys))
        for file, sha, lines in files:
            got_sha, got_lines = _read_back(folder / file)
            if got_sha != sha:
                raise BackupError(f"increment file {folder / file} has sha256 {got_sha}, the manifest says {sha}")
            if got_lines != lines:
                raise BackupError(f"increment file {folder / file} holds {got_lines} lines, the manifest counts "
                                  f"{lines}")
    return manifest


def read_manifest(location: Any, conn_id: str | None = None) -> dict[str, Any]:
    """The ``manifest.json`` of the increment at ``location``; ``BackupError`` when it is
    missing or not an increment manifest (an increment without one was never finished)."""
    folder = _path(location, conn_id)
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"increment {folder} has no {MANIFEST}: it was never completed") from None
    except Exception as exc:
        raise BackupError(f"cannot read {folder / MANIFEST}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS or not isinstance(data.get("tables"), dict):
        raise BackupError(f"{folder / MANIFEST} is not an increment manifest ({' or '.join(FORMATS)})")
    return data


@dataclass(frozen=True)
class Applied:
    """What ``apply_increment`` did to one table: ``upserted`` rows (inserted or updated),
    ``deleted`` rows (keys absent from the increment's key list), ``duration_s``."""

    table: str
    upserted: int
    deleted: int
    duration_s: float


def apply_increment(target: PgTarget, location: Any, table: str, *, after: str | None,
                    conn_id: str | None = None) -> Applied:
    """Replay one table of the increment at ``location`` on ``target`` (a restore: run it
    on a copy, e.g. the pre-migration dump restored, then each increment in order).

    ``after``: the watermark of what ``target`` holds now: the dump's
    (``BackupRecord.watermark``) or the last increment applied's ``watermark``. The
    increment must start there (its ``since``); one taken later would leave the changes in
    between unapplied (stale rows, rows wrongly deleted). A ``full`` increment (every row)
    applies over anything. Raises ``BackupError`` otherwise, before anything changes.

    ``after`` is checked, not trusted: each increment applied is recorded in the target, in
    the same transaction (``APPLIED``: table, label, location, since, watermark), and the
    table's last one must be where this increment starts (or be this very increment: applying
    it again changes nothing). A table with none applied yet is the dump's: an increment
    that starts where another increment kept beside it (same folder) ends is refused, since
    that one would be skipped.

    One transaction: the rows and the key list go into temporary tables (dropped at
    commit) by ``COPY FROM STDIN``, decompressed from the storage while their SHA-256 and
    line counts are checked against the manifest; rows whose key is not in the key list
    are deleted (a table proved by count has no key list: nothing is deleted); the increment's rows are upserted by key (``INSERT ... ON CONFLICT
    (<key>) DO UPDATE`` of the increment's columns only: columns the table has and the
    increment lacks, e.g. columns the migration dropped, keep their values, or get their
    defaults in new rows). Raises ``BackupError`` (nothing applied) when the table is not
    in the increment, lacks one of its columns, a file does not match the manifest, or a
    statement fails (e.g. another unique index, a foreign key).
    """
    started = time.monotonic()
    folder = _path(location, conn_id)
    manifest = read_manifest(folder)
    if manifest.get("base") != "full" and manifest.get("since") != after:
        raise BackupError(f"increment {folder} starts at watermark {manifest.get('since')}, but the target holds "
                          f"the state at {after}: apply the increments in order, from the one whose since is {after}")
    schema, name = _split(table)
    entry = manifest["tables"].get(f"{schema}.{name}")
    if entry is None:
        raise BackupError(f"increment {folder} holds no table {schema}.{name} (it holds "
                          f"{', '.join(manifest['tables']) or 'none'})")
    inc = TableIncrement.from_dict(f"{schema}.{name}", entry)
    ident = sql.Identifier(schema, name)
    cols = sql.SQL(", ").join(map(sql.Identifier, inc.columns))
    key = sql.Identifier(inc.key)
    conn = _connect(target)
    try:
        with conn.cursor() as cur:
            for stmt in _OUTPUT:
                cur.execute(stmt)
            present = _columns(cur, schema, name)
            if present is None:
                raise BackupError(f"cannot apply the increment: table {schema}.{name} does not exist")
            missing = [c for c in inc.columns if c not in present]
            if missing:
                raise BackupError(f"cannot apply the increment to {schema}.{name}: it has no column "
                                  f"{', '.join(map(repr, missing))}")
            _check_chain(cur, folder, manifest, f"{schema}.{name}", after)
            cur.execute(sql.SQL("CREATE TEMP TABLE soak_inc_rows ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA")
                        .format(cols, ident))
            _copy_in(cur, folder / inc.rows_file, sql.SQL("COPY soak_inc_rows ({}) FROM STDIN").format(cols),
                     inc.rows_sha256, inc.rows)
            deleted = 0
            if inc.keys_file is not None and inc.keys_sha256 is not None:  # else: nothing deleted (count proof)
                cur.execute(sql.SQL("CREATE TEMP TABLE soak_inc_keys ON COMMIT DROP AS SELECT {} FROM {} "
                                    "WITH NO DATA").format(key, ident))
                _copy_in(cur, folder / inc.keys_file, sql.SQL("COPY soak_inc_keys FROM STDIN"), inc.keys_sha256,
                         inc.keys)
                cur.execute(sql.SQL("CREATE INDEX ON soak_inc_keys ({})").format(key))
                cur.execute("ANALYZE soak_inc_keys")
                cur.execute(sql.SQL("DELETE FROM {} t WHERE NOT EXISTS (SELECT 1 FROM soak_inc_keys k "
                                    "WHERE k.{} = t.{})").format(ident, key, key))
                deleted = cur.rowcount
            others = [c for c in inc.columns if c != inc.key]
            action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others))
                if others else sql.SQL("DO NOTHING"))
            cur.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM soak_inc_rows ON CONFLICT ({}) {}")
                        .format(ident, cols, cols, key, action))
            upserted = cur.rowcount
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                                "table_name text NOT NULL, label text, location text NOT NULL, since text, "
                                "watermark text, applied_at timestamptz NOT NULL DEFAULT now())")
                        .format(sql.Identifier(*APPLIED)))
            cur.execute(sql.SQL("INSERT INTO {} (table_name, label, location, since, watermark) "
                                "VALUES (%s, %s, %s, %s, %s)").format(sql.Identifier(*APPLIED)),
                        (f"{schema}.{name}", manifest.get("label"), str(folder), manifest.get("since"),
                         manifest.get("watermark")))
        conn.commit()
    except BackupError:
        _rollback(conn)
        raise
    except Exception as exc:
        _rollback(conn)
        raise BackupError(f"applying increment {folder} to {schema}.{name} failed: "
                          f"{target.scrub(str(exc)).strip()}") from None
    finally:
        conn.close()
    return Applied(table=f"{schema}.{name}", upserted=upserted, deleted=deleted,
                   duration_s=round(time.monotonic() - started, 3))


# ----------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Spooled:
    """One table's raw COPY text, spooled in the working folder during the transaction:
    ``stem`` names its files (``<stem>.rows.copy``, ``<stem>.keys.copy``: none when the
    count proved that nothing was deleted, ``deletions``)."""

    table: str
    key: str
    columns: tuple[str, ...]
    stem: str
    deletions: dict[str, Any] = field(default_factory=lambda: {"proof": "key list"})


def _copy_out(target: PgTarget, names: list[tuple[str, str]], since: str | None, timeout_ms: int,
              work: Path, chains: "dict[str, _Chain | str] | None" = None,
              ) -> tuple[str, datetime, int | None, list[_Spooled], float]:
    """The increment's one transaction: ``(watermark, created_at, age limit or None,
    tables spooled, seconds the connection was open)``. Each COPY is written raw into
    ``work`` (plain sequential writes, no compression: the backend waits on the client
    only as long as the disk takes); :func:`_compress_spooled` does the rest after the
    connection is closed. ``chains`` (``_chains``): per table, the previous increments the
    count proof reads, or why there is none; a table not proved gets its key list."""
    opened = time.monotonic()
    conn = _connect(target)
    spooled: list[_Spooled] = []
    current = ""
    try:
        with conn.cursor() as cur:
            watermark, created_at = snapshot_read(cur, timeout_ms)
            limit = _age_limit(cur, since, int(watermark))
            files: set[str] = set()
            for schema, name in names:
                current = f"{schema}.{name}"
                columns, key = _shape(cur, schema, name)
                stem = re.sub(r"[^A-Za-z0-9_.-]", "_", current)
                if stem in files:
                    raise BackupError(f"tables {current} and another map to the same file name {stem}")
                files.add(stem)
                ident = sql.Identifier(schema, name)
                select = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, columns)), ident)
                if limit is not None:
                    select = sql.SQL("{} WHERE {}").format(select, changed_since(limit))
                _spool(cur, select, work / f"{stem}.rows.copy")
                chain = (chains or {}).get(current, "no previous increment")
                if limit is None:
                    chain = "every row copied (base full)"
                deletions = _prove(cur, ident, key, columns, work / f"{stem}.rows.copy", chain)
                if deletions.get("proof") != "count":
                    _spool(cur, sql.SQL("SELECT {} FROM {}").format(sql.Identifier(key), ident),
                           work / f"{stem}.keys.copy")
                spooled.append(_Spooled(table=current, key=key, columns=columns, stem=stem, deletions=deletions))
    except BackupError:
        raise
    except Exception as exc:
        where = f" of {current}" if current else ""
        raise BackupError(f"increment{where} on {target.describe()} failed: {target.scrub(str(exc)).strip()}") \
            from None
    finally:
        _rollback(conn)
        conn.close()
    staging_s = round(time.monotonic() - opened, 3)
    return str(watermark), created_at.astimezone(timezone.utc), limit, spooled, staging_s


@dataclass(frozen=True)
class _Chain:
    """What the count proof of one table reads of the previous increments: ``files``
    (``(path, sha256, lines, key field index)``, newest first: the rows files of the
    increments proved by count back to ``key_list``'s key list, index ``None``),
    ``previous_keys`` (|P|: the keys the previous increment counted), labels."""

    key: str
    previous: str
    key_list: str
    previous_keys: int
    files: tuple[tuple[Any, str, int, int | None], ...]


def _chains(previous: Any, since: str | None, names: list[tuple[str, str]],
            conn_id: str | None) -> "dict[str, _Chain | str]":
    """Per table (``schema.table``): the chain the count proof reads (``_Chain``), or why
    there is none (then the key list is copied). Read before the transaction opens: only
    manifests (the files are read, and checked, by ``_new_keys``)."""
    tables = [f"{schema}.{name}" for schema, name in names]
    if previous is None:
        return {t: "no previous increment (the first since the pre-migration backup, or none given)"
                for t in tables}
    head = _path(previous, conn_id)
    try:
        manifest = read_manifest(head)
    except Exception as exc:  # noqa: BLE001 - any problem: the key list, with the reason
        return {t: f"previous increment unreadable: {exc}" for t in tables}
    if manifest.get("format") != FORMAT:
        return {t: f"previous increment {head} is an {manifest.get('format')} manifest" for t in tables}
    if manifest.get("watermark") != since:
        return {t: f"previous increment {head} ends at watermark {manifest.get('watermark')}, not at since {since}"
                for t in tables}
    return {t: _chain(head, manifest, t, conn_id) for t in tables}


def _chain(head: Any, manifest: dict[str, Any], table: str, conn_id: str | None) -> "_Chain | str":
    folder, current = head, manifest
    files: list[tuple[Any, str, int, int | None]] = []
    first: TableIncrement | None = None
    try:
        for _ in range(MAX_CHAIN):
            entry = current["tables"].get(table)
            if entry is None:
                return f"increment {folder} holds no {table}"
            inc = TableIncrement.from_dict(table, entry)
            first = first or inc
            if inc.key != first.key:
                return f"increment {folder} keys {table} by {inc.key}, {head} by {first.key}"
            if inc.keys_file is not None and inc.keys_sha256 is not None:
                files.append((folder / inc.keys_file, inc.keys_sha256, inc.keys, None))
                for path, *_ in files:  # read (and checked) only when the count does not decide alone
                    if not path.exists():
                        return f"increment file {path} is missing"
                return _Chain(key=first.key, previous=str(manifest.get("label")), key_list=str(current.get("label")),
                              previous_keys=first.keys, files=tuple(files))
            files.append((folder / inc.rows_file, inc.rows_sha256, inc.rows, inc.columns.index(inc.key)))
            before = current.get("previous")
            if not before:
                return f"increment {folder} has no key list of {table} and names no previous increment"
            older = _path(before, conn_id)
            previous = read_manifest(older)
            if previous.get("format") != FORMAT:
                return f"increment {older} is an {previous.get('format')} manifest"
            if previous.get("watermark") != current.get("since"):
                return (f"the chain does not link: {older} ends at watermark {previous.get('watermark')}, "
                        f"{folder} starts at {current.get('since')}")
            folder, current = older, previous
    except Exception as exc:  # noqa: BLE001 - any problem: the key list, with the reason
        return f"cannot read the chain at {folder}: {type(exc).__name__}: {exc}"
    return f"no key list of {table} within {MAX_CHAIN} increments before {head}"


def _key_not_exact(cur: Any, ident: sql.Composable, key: str) -> str | None:
    """Why equal COPY text of ``key`` may not mean equal values (the count proof compares
    text), or ``None``: only ``EXACT_KEY_TYPES``, text types under a deterministic
    collation (``to_jsonb``: ``collisdeterministic`` exists from PostgreSQL 12; before,
    every collation is deterministic)."""
    cur.execute("SELECT n.nspname, t.typname, c.collname, to_jsonb(c) ->> 'collisdeterministic' "
                "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_collation c ON c.oid = a.attcollation "
                "WHERE a.attrelid = %s::regclass AND a.attname = %s", (ident.as_string(cur), key))
    row = cur.fetchone()
    if row is None:
        return f"key column {key} not found"
    schema, typname, collation, deterministic = row
    if schema != "pg_catalog" or typname not in EXACT_KEY_TYPES:
        return f"key {key} is of type {schema}.{typname}: equal text may not mean equal keys"
    if deterministic == "false":
        return f"key {key} has the nondeterministic collation {collation}: unequal text may be equal keys"
    return None


def _prove(cur: Any, ident: sql.Composable, key: str, columns: tuple[str, ...], rows_spool: Path,
           chain: "_Chain | str") -> dict[str, Any]:
    """The table's ``deletions`` (``TableIncrement``): ``{"proof": "count", ...,
    "keys_total": count(*)}`` when ``count(*)`` of this snapshot equals |P| + |C \\ P|
    (module doc), else ``{"proof": "key list", "reason": ...}`` (the caller copies it). The
    client streams the chain's files (``_new_keys``) while the server counts; the count
    alone decides, and the chain's reading is stopped, when it is below |P| (a deletion)
    or equals |P| + |C| (then |C \\ P| = |C|: S = P + C whatever C and P share; e.g. no
    row changed, or only inserts)."""
    if isinstance(chain, str):
        return {"proof": "key list", "reason": chain}
    if chain.key != key:
        return {"proof": "key list", "reason": f"the key column is {key}, the chain's is {chain.key}"}
    why = _key_not_exact(cur, ident, key)
    if why is not None:
        return {"proof": "key list", "reason": why}
    index = columns.index(key)
    changed = _count_lines(rows_spool)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        membership = pool.submit(_new_keys, rows_spool, index, chain.files, stop)
        try:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident))
            total = int(cur.fetchone()[0])
        except BaseException:
            stop.set()  # the transaction failed: the chain's reading is not waited for
            raise
        if not _needs_membership(total, chain.previous_keys, changed):
            stop.set()
        if total < chain.previous_keys:
            return {"proof": "key list", "reason": (
                f"count(*) {total} is below the {chain.previous_keys} keys at {chain.previous}: a key was deleted")}
        if total == chain.previous_keys + changed:
            return {"proof": "count", "previous": chain.previous, "key_list": chain.key_list,
                    "previous_keys": chain.previous_keys, "new_keys": changed, "keys_total": total}
        try:
            new, changed = membership.result()
        except Exception as exc:  # noqa: BLE001 - any problem: the key list, with the reason
            return {"proof": "key list", "reason": f"cannot read the chain: {exc}"}
    expected = chain.previous_keys + new
    if total != expected:
        return {"proof": "key list", "reason": (
            f"count(*) {total} is not {chain.previous_keys} keys at {chain.previous} + {new} new keys "
            f"(of {changed} changed): " + ("a key was deleted" if total < expected else "the chain is inconsistent"))}
    return {"proof": "count", "previous": chain.previous, "key_list": chain.key_list,
            "previous_keys": chain.previous_keys, "new_keys": new, "keys_total": total}


def _needs_membership(total: int, previous_keys: int, changed: int) -> bool:
    """Whether |C \\ P| decides (``_prove``): ``count(*)`` between |P| and |P| + |C|."""
    return previous_keys <= total < previous_keys + changed


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(_BLOCK), b""))


class _Stopped(Exception):
    """The count decided: the chain's reading is not needed."""


def _line_blocks(read: Any) -> Any:
    """The complete lines of a stream (``read(n)`` -> bytes), a list per block read."""
    tail = b""
    while block := read(_BLOCK):
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        yield lines
    if tail:
        yield [tail]


def _fields(lines: list[bytes], index: int) -> list[bytes]:
    """Field ``index`` of each COPY text line (tab-separated; tabs in values are escaped)."""
    if index == 0:
        return [line.partition(b"\t")[0] for line in lines]
    return [line.split(b"\t", index + 1)[index] for line in lines]


def _new_keys(rows_spool: Path, index: int, files: tuple[tuple[Any, str, int, int | None], ...],
              stop: threading.Event | None = None) -> tuple[int, int]:
    """``(|C \\ P|, |C|)``: C the keys of the rows just copied (the raw spool, field
    ``index``), P the keys of the chain's ``files`` (a key list, or the key field of rows
    files), streamed, never held: only C's keys not met yet are. Each file is read whole and
    checked against its manifest (sha256, lines, one whole zstd frame): ``BackupError``."""
    changed: set[bytes] = set()
    with open(rows_spool, "rb") as handle:
        for lines in _line_blocks(handle.read):
            changed.update(_fields(lines, index))
    missing = set(changed)
    for path, sha256, count, field_index in files:
        try:
            with path.open("rb") as handle:
                source = _Source(handle)
                for lines in _line_blocks(source.read):
                    if stop is not None and stop.is_set():
                        raise _Stopped()
                    if missing:
                        missing.difference_update(lines if field_index is None else _fields(lines, field_index))
        except FileNotFoundError:
            raise BackupError(f"increment file {path} is missing") from None
        source.check(path, sha256, count)
    return len(missing), len(changed)


def _spool(cur: Any, select: sql.Composable, path: Path) -> None:
    with open(path, "wb", buffering=_BLOCK) as handle:
        cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT").format(select).as_string(cur), handle)


def _compress_spooled(spooled: _Spooled, work: Path) -> TableIncrement:
    """The table's two kept files from its raw spool files (deleted once compressed)."""
    rows = _compress(work / f"{spooled.stem}.rows.copy", work / f"{spooled.stem}.rows.copy.zst")
    if spooled.deletions.get("proof") == "count":
        return TableIncrement(
            table=spooled.table, key=spooled.key, columns=spooled.columns, rows=rows.lines,
            keys=int(spooled.deletions["keys_total"]), rows_file=f"{spooled.stem}.rows.copy.zst", keys_file=None,
            rows_bytes=rows.size, keys_bytes=0, rows_sha256=rows.digest.hexdigest(), keys_sha256=None,
            deletions={k: v for k, v in spooled.deletions.items() if k != "keys_total"})
    keys = _compress(work / f"{spooled.stem}.keys.copy", work / f"{spooled.stem}.keys.copy.zst")
    return TableIncrement(
        table=spooled.table, key=spooled.key, columns=spooled.columns, rows=rows.lines, keys=keys.lines,
        rows_file=f"{spooled.stem}.rows.copy.zst", keys_file=f"{spooled.stem}.keys.copy.zst", rows_bytes=rows.size,
        keys_bytes=keys.size, rows_sha256=rows.digest.hexdigest(), keys_sha256=keys.digest.hexdigest(),
        deletions=spooled.deletions)


def _compress(raw: Path, path: Path) -> "_Sink":
    """``raw`` (COPY text) into the zstd file ``path`` through a :class:`_Sink` (the same
    frame, hash and line count as a COPY streamed into it); ``raw`` is deleted then."""
    try:
        sink = _Sink(path)
        try:
            with open(raw, "rb") as handle:
                while block := handle.read(_BLOCK):
                    sink.write(block)
        finally:
            sink.close()
        raw.unlink()
    except OSError as exc:
        raise BackupError(f"cannot compress {raw.name} into {path.name}: {type(exc).__name__}: {exc}") from None
    return sink


def snapshot_read(cur: Any, timeout_ms: int) -> tuple[str, datetime]:
    """Open a read-only REPEATABLE READ transaction on ``cur`` (``statement_timeout``
    ``timeout_ms``, the soak's application name, stable COPY text output; all ``SET LOCAL``)
    and take its snapshot: returns ``(watermark, now())``, the watermark an ``xid8`` as
    text. Everything read next in the transaction is of that snapshot."""
    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
    cur.execute(sql.SQL("SET LOCAL application_name = {}").format(sql.Literal(APPLICATION_NAME)))
    for stmt in _OUTPUT:
        cur.execute(stmt)
    # The first statement that takes the snapshot.
    cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text, now()")
    watermark, now = cur.fetchone()
    return str(watermark), now


def _age_limit(cur: Any, since: str | None, watermark: int) -> int | None:
    """``age()`` of the 32-bit xid of ``since`` in this transaction, or ``None`` (copy
    every row) when there is no usable ``since``: none given, not an xid8, ahead of this
    snapshot's watermark, or 2**31 or more transactions behind it."""
    if since is None:
        return None
    try:
        value = int(since)
    except ValueError:
        raise BackupError(f"since {since!r} is not a watermark (an xid8, e.g. '7531')") from None
    if value > watermark or watermark - value >= _XID_HALF:
        log.warning("watermark %s cannot select rows on a server at %s: copying every row", since, watermark)
        return None
    xid = max(value % _XID_SPAN, _FIRST_NORMAL_XID)
    cur.execute("SELECT age(%s::text::xid)", (str(xid),))
    return int(cur.fetchone()[0])


def _full_reason(since: str | None, watermark: str) -> str:
    if since is None:
        return "no previous watermark"
    try:
        value = int(since)
    except ValueError:
        return f"since {since!r} is not a watermark"
    if value > int(watermark):
        return f"since {since} is ahead of the server's watermark {watermark} (another cluster?)"
    return f"since {since} is 2**31 or more transactions behind the watermark {watermark}"


def _shape(cur: Any, schema: str, name: str) -> tuple[tuple[str, ...], str]:
    """``(columns, key)`` of the table: its columns in order (generated ones left out: they
    cannot be written) and its one-column primary key. ``BackupError`` naming the table."""
    cur.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, name).as_string(cur),))
    oid = cur.fetchone()[0]
    if oid is None:
        raise BackupError(f"table {schema}.{name} does not exist")
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (oid,))
    columns = tuple(r[0] for r in cur.fetchall())
    cur.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY (i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary", (oid,))
    keys = [r[0] for r in cur.fetchall()]
    if len(keys) != 1:
        has = "no primary key" if not keys else f"a primary key of {len(keys)} columns ({', '.join(keys)})"
        raise BackupError(f"table {schema}.{name} has {has}: an increment needs a one-column primary key "
                          "(its key list is how deletions are known)")
    return columns, keys[0]


class _Sink:
    """A file-like ``write`` target for ``copy_expert``: buffers COPY data, counts its
    lines, compresses it (zstd, one frame with checksum) into ``path`` and hashes the bytes
    written."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "wb")
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
        self.buffer = bytearray()
        self.digest = hashlib.sha256()
        self.lines = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= _BLOCK:
            self._emit(self.compressor.compress(self._take()))
        return len(data)

    def close(self) -> None:
        self._emit(self.compressor.compress(self._take()) + self.compressor.flush())
        self.handle.close()

    def _take(self) -> bytes:
        block = bytes(self.buffer)
        self.lines += block.count(b"\n")
        self.buffer.clear()
        return block

    def _emit(self, out: bytes) -> None:
        if out:
            self.handle.write(out)
            self.digest.update(out)
            self.size += len(out)


def _copy_to(cur: Any, select: sql.Composable, path: Path) -> _Sink:
    sink = _Sink(path)
    try:
        cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT").format(select).as_string(cur), sink)
    finally:
        sink.close()
    return sink


class _Source:
    """A file-like ``read`` source for ``copy_expert``: the kept zstd file decompressed,
    its compressed bytes hashed and its lines counted as they pass."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.digest = hashlib.sha256()
        self.lines = 0
        self.error: str | None = None

    def read(self, _size: int = -1) -> bytes:
        """The next decompressed bytes; ``b""`` at the end, and at the first zstd error
        (kept in ``error``: the reader, e.g. a ``COPY FROM``, then ends and ``problem``
        says why the data is not to be used)."""
        while self.error is None:
            block = self.handle.read(_BLOCK)
            if not block:
                return b""
            self.digest.update(block)
            try:
                out = self.frame.decompress(block)
            except zstandard.ZstdError as exc:
                self.error = f"not a whole zstd frame ({exc})"
                return b""
            if out:
                self.lines += out.count(b"\n")
                return out
        return b""

    def problem(self) -> str | None:
        """Why the file read is not one whole zstd frame, or ``None``."""
        if self.error is not None:
            return self.error
        if not self.frame.eof:
            return "the zstd frame is cut short"
        if self.frame.unused_data:
            return f"{len(self.frame.unused_data)} bytes follow the end of the zstd frame"
        return None

    def check(self, path: Any, sha256: str, lines: int) -> None:
        """After the whole file was read: ``BackupError`` naming ``path`` unless it was one
        whole zstd frame with the manifest's ``sha256`` and ``lines``."""
        problem = self.problem()
        if problem:
            raise BackupError(f"increment file {path} does not decompress: {problem}")
        got = self.digest.hexdigest()
        if got != sha256 or self.lines != lines:
            raise BackupError(f"increment file {path} does not match its manifest: sha256 {got} (manifest "
                              f"{sha256}), {self.lines} lines (manifest {lines})")


def _copy_in(cur: Any, path: Any, copy: sql.Composable, sha256: str, lines: int) -> None:
    try:
        with path.open("rb") as handle:
            source = _Source(handle)
            cur.copy_expert(copy.as_string(cur), source, size=_BLOCK)
    except FileNotFoundError:
        raise BackupError(f"increment file {path} is missing") from None
    source.check(path, sha256, lines)


def _read_back(path: Any) -> tuple[str, int]:
    """``(sha256 of the bytes kept, lines decompressed)`` of a kept file; ``BackupError``
    when it is missing, unreadable or not one whole zstd frame."""
    try:
        with path.open("rb") as handle:
            source = _Source(handle)
            while source.read():
                pass
    except FileNotFoundError:
        raise BackupError(f"increment file {path} is missing") from None
    except Exception as exc:
        raise BackupError(f"cannot read increment file {path}: {type(exc).__name__}: {exc}") from None
    problem = source.problem()
    if problem:
        raise BackupError(f"increment file {path} does not decompress: {problem}")
    return source.digest.hexdigest(), source.lines


#: The table of the increments applied to a target (``apply_increment``), in the target.
APPLIED = ("public", "_soak_increments_applied")


def _check_chain(cur: Any, folder: Any, manifest: dict[str, Any], table: str, after: str | None) -> None:
    """``apply_increment``'s check of what the target's ``table`` holds (``APPLIED``)
    against the increment ``manifest`` at ``folder``; ``BackupError`` when it does not fit."""
    since, full = manifest.get("since"), manifest.get("base") == "full"
    cur.execute("SELECT to_regclass(%s)", (sql.Identifier(*APPLIED).as_string(cur),))
    last = None
    if cur.fetchone()[0] is not None:
        cur.execute(sql.SQL("SELECT label, location, watermark, applied_at FROM {} WHERE table_name = %s "
                            "ORDER BY id DESC LIMIT 1").format(sql.Identifier(*APPLIED)), (table,))
        last = cur.fetchone()
    if last is not None:
        label, location, watermark, applied_at = last
        if full or since == watermark or (location == str(folder) and watermark == manifest.get("watermark")):
            return
        raise BackupError(f"{table} of the target holds the state at watermark {watermark} (increment {label} "
                          f"applied {applied_at:%Y-%m-%d %H:%M:%S UTC}, {location}), not at {after} as after says: "
                          f"apply the increment whose since is {watermark} next; {folder} starts at {since}")
    if full or since is None:
        return
    try:
        siblings = [p for p in folder.parent.iterdir() if p.name != folder.name]
    except Exception as exc:  # noqa: BLE001 - cannot list: cannot tell, refuse
        raise BackupError(f"cannot list {folder.parent} to check that no increment before {folder} is "
                          f"skipped: {type(exc).__name__}: {exc}") from None
    for sibling in siblings:
        try:
            other = read_manifest(sibling)
        except BackupError:
            continue  # not an increment, or one never completed
        if other.get("watermark") == since:
            raise BackupError(f"no increment was applied to {table} of the target yet, but {folder} starts at "
                              f"watermark {since}, where increment {other.get('label')} ({sibling}) ends: apply it "
                              "first (a target restored from the dump takes the first increment since the dump's "
                              "watermark)")


def _columns(cur: Any, schema: str, name: str) -> set[str] | None:
    cur.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, name).as_string(cur),))
    oid = cur.fetchone()[0]
    if oid is None:
        return None
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (oid,))
    return {r[0] for r in cur.fetchall()}


def _split(name: str) -> tuple[str, str]:
    try:
        return split_table(name)
    except ValueError as exc:
        raise BackupError(str(exc)) from None


def _path(location: Any, conn_id: str | None) -> Any:
    if isinstance(location, str):
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(location, conn_id=conn_id)
    return location


def _rollback(conn: Any) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone: nothing is left to undo
        pass


def _connect(target: PgTarget):
    try:
        return target.connect()
    except Exception as exc:
        raise BackupError(f"cannot connect to {target.describe()}: {target.scrub(str(exc)).strip()}") from None
