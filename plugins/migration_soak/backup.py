"""Pre-migration backup: ``pg_dump --format=custom``, zstd-compressed, written atomically, read back whole.

Runbook (seed, "Hora 0: Ejecución de Migración", step 1; "Backup de staging creado y
verificado"). Verified means ``pg_restore -f /dev/null`` reads every data block of the
file kept (STYLE.md, "PostgreSQL facts"); the file format is ``archive``'s. Passwords
only through the environment (:meth:`PgTarget.child_env`).

Design notes: docs/design.md#backuppy
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from migration_soak import archive
from migration_soak.exceptions import BackupError, SoakError
from migration_soak.identity import DatabaseIdentity, identify
from migration_soak.increment import current_watermark
from migration_soak.pgconn import PgTarget, split_table

log = logging.getLogger(__name__)

#: Tables whose data a soak backup must hold (``schema.table``): the rollback restores
#: ``users`` columns from it.
DEFAULT_REQUIRED_TABLES: tuple[str, ...] = ("public.users",)

_TOC_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_DUMPED_BY = re.compile(r"^;\s+Dumped by pg_dump version:\s+(\S+)", re.M)
_DUMPED_FROM = re.compile(r"^;\s+Dumped from database version:\s+(\S+)", re.M)
_DBNAME = re.compile(r"^;\s+dbname:\s+(.*)$", re.M | re.I)


def source_name(label: str) -> str:
    """The file that records which database ``<label>.dump`` was taken from:
    ``<label>.source.json`` (``{"key", "database", "reached_as"}``, ``identity.DatabaseIdentity``;
    no secret). Written before the dump gets its final name, so a kept dump always has the
    source of the attempt that wrote it."""
    return f"{label}.source.json"


@dataclass(frozen=True)
class BackupRecord:
    """What ``take_backup`` produced; JSON-able through ``to_dict``/``from_dict`` (XCom).

    Fields:
        path: the local dump file, ``<dest_dir>/<label>.dump``: a custom-format archive
            in one zstd frame (``archive``; a plain custom-format one from before reads
            the same); ``None``
            in a record of a kept backup once its working copy is gone (see
            ``backup_storage``: fetch it through ``location``).
        size_bytes: its size in bytes (compressed, as kept).
        sha256: hex SHA-256 of the file's bytes (as kept); ``verify_backup`` checks it before a
            restore.
        duration_s: wall seconds of ``take_backup`` (dump plus read-back verification).
        pg_dump_version: version of the ``pg_dump`` that wrote it, e.g. ``"18.4"``.
        server_version: the server's ``server_version``, e.g. ``"18.4"``.
        tables: ``schema.table`` of every ``TABLE DATA`` entry in the dump's TOC,
            sorted.
        created_at: when the dump finished (UTC, timezone-aware).
        reused: ``True`` when ``take_backup`` found a complete, verified
            ``<label>.dump`` from an earlier attempt (a retried task) and returned it
            instead of dumping again; ``created_at`` is then the file's modification
            time and the versions are those in the dump's header.
        location: where the backup is kept, an ``ObjectStoragePath`` URL
            (``file:///...``, ``s3://bucket/...``); empty for a dump that only exists
            at ``path``.
        storage_conn_id: the Airflow connection of that storage, or ``None``.
        watermark: ``increment.current_watermark`` read on its own connection just before
            ``pg_dump`` started (an ``xid8`` as text): every row the dump may lack was
            written by a transaction at or above it, so the first increment since it
            completes the chain. ``None`` in records from before, in a reused record, or
            when it could not be read (the first increment is then whole tables).
        source: the lease key (``identity.DatabaseIdentity.key``) of the database the dump
            was taken from, read from the server; a reused dump is reused only when it
            equals the target's (``take_backup``). ``None`` in records from before.
    """

    path: Path | None
    size_bytes: int
    sha256: str
    duration_s: float
    pg_dump_version: str
    server_version: str
    tables: tuple[str, ...]
    created_at: datetime
    reused: bool = False
    location: str = ""
    storage_conn_id: str | None = None
    watermark: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON types only: ``path`` as str (or ``None``), ``tables`` as list, ``created_at`` ISO 8601."""
        return {
            "path": None if self.path is None else str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "duration_s": self.duration_s,
            "pg_dump_version": self.pg_dump_version,
            "server_version": self.server_version,
            "tables": list(self.tables),
            "created_at": self.created_at.isoformat(),
            "reused": self.reused,
            "location": self.location,
            "storage_conn_id": self.storage_conn_id,
            "watermark": self.watermark,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BackupRecord":
        """Inverse of ``to_dict``; raises ``BackupError`` naming a missing/bad field."""
        try:
            return cls(
                path=None if data["path"] is None else Path(data["path"]),
                size_bytes=int(data["size_bytes"]),
                sha256=str(data["sha256"]),
                duration_s=float(data["duration_s"]),
                pg_dump_version=str(data["pg_dump_version"]),
                server_version=str(data["server_version"]),
                tables=tuple(data["tables"]),
                created_at=datetime.fromisoformat(data["created_at"]),
                reused=bool(data.get("reused", False)),
                location=str(data.get("location") or ""),
                storage_conn_id=data.get("storage_conn_id"),
                watermark=None if data.get("watermark") is None else str(data["watermark"]),
                source=None if data.get("source") is None else str(data["source"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"not a backup record: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class BackupCheck:
    """Result of ``verify_backup``: the file read back whole.

    Fields: ``path``; ``size_bytes`` (bytes); ``sha256`` (hex); ``tables`` (``schema.table``
    of every ``TABLE DATA`` TOC entry, sorted); ``duration_s`` (seconds);
    ``dumped_by`` / ``dumped_from``: the ``pg_dump`` and server versions the dump's
    header names (``"18.4"``; empty when the header lacks them); ``dbname``: the
    database name the header names (empty when it lacks one).
    """

    path: Path
    size_bytes: int
    sha256: str
    tables: tuple[str, ...]
    duration_s: float = field(default=0.0)
    dumped_by: str = ""
    dumped_from: str = ""
    dbname: str = ""


def tool_path(name: str, pg_bin_dir: Path | None) -> Path:
    """``pg_bin_dir/name`` or, without a folder, ``name`` found on ``PATH``.

    Raises ``BackupError`` when the program is not there.
    """
    if pg_bin_dir is not None:
        candidate = Path(pg_bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        raise BackupError(f"{name} not found or not executable in {pg_bin_dir}")
    found = shutil.which(name)
    if not found:
        raise BackupError(f"{name} not found on PATH; pass pg_bin_dir")
    return Path(found)


def tool_version(program: Path) -> tuple[int, str]:
    """``(major, "major.minor")`` of a PostgreSQL client program (``--version``).

    Raises ``BackupError`` when it does not run or prints no version.
    """
    try:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{program} --version failed: {exc}") from None
    match = _VERSION.search(out.stdout)
    if out.returncode != 0 or not match:
        raise BackupError(f"{program} --version printed no PostgreSQL version: {out.stdout.strip()[:200]!r}")
    major = int(match.group(1))
    minor = match.group(2)
    return major, f"{major}.{minor}" if minor is not None else str(major)


def sha256_file(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """``(hex sha256, size in bytes)`` of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def pg_dump_argv(pg_dump: Path, lock_wait_timeout_s: float, tables: Sequence[str] | None = None) -> list[str]:
    """The exact ``pg_dump`` command line ``take_backup`` runs; the archive goes to stdout.

    Holds no connection parameters and no password (libpq reads those from the child's
    environment): ``--format=custom --compress=0 --no-password --lock-wait-timeout=<ms>``
    (uncompressed: ``archive`` compresses it, faster and smaller than ``pg_dump``'s
    zlib). With ``tables`` (``schema.table`` or ``table``, literal names),
    ``--strict-names`` and one ``--table=<pattern>`` each follow (see ``table_pattern``).
    """
    selection = ["--strict-names", *(f"--table={table_pattern(t)}" for t in tables)] if tables else []
    return [
        str(pg_dump),
        "--format=custom",
        "--compress=0",
        "--no-password",
        f"--lock-wait-timeout={int(lock_wait_timeout_s * 1000)}",
        *selection,
    ]


def _split(name: str) -> tuple[str, str]:
    """``pgconn.split_table`` in ``public`` by default; ``BackupError`` for a bad name."""
    try:
        return split_table(name)
    except ValueError as exc:
        raise BackupError(str(exc)) from None


def table_pattern(name: str) -> str:
    """A ``pg_dump --table`` pattern matching exactly the table ``name``.

    Each part is double-quoted (a ``"`` inside doubled), so pattern characters (``*``,
    ``?``, ``.``) and upper-case letters are taken literally: ``User`` → ``"public"."User"``.
    The argv goes to ``pg_dump`` without a shell, so the quotes reach its pattern parser.
    """
    return ".".join('"' + part.replace('"', '""') + '"' for part in _split(name))


def take_backup(
    target: PgTarget,
    dest_dir: Path,
    pg_bin_dir: Path | None,
    label: str,
    *,
    required_tables: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
    lock_wait_timeout_s: float = 60.0,
    timeout_s: float = 6 * 3600.0,
) -> BackupRecord:
    """Dump ``target`` to ``dest_dir/<label>.dump`` and verify it by reading it back whole.

    Steps: refuse a ``pg_dump`` whose major version is older than the server's (it
    would fail or produce an incomplete dump); read the watermark (``BackupRecord.watermark``,
    on its own connection, just before the dump starts); ``pg_dump --format=custom --compress=0``
    to a pipe, compressed (zstd) into a hidden temporary file in ``dest_dir`` (created
    0600: the dump holds password hashes) while that file is read back whole as it grows
    (``archive.write_and_read_back``: ``pg_restore -f /dev/null`` reads every data block
    of the bytes kept, and they are hashed); then ``pg_restore --list`` of the file; and
    ``os.replace`` it to its final name only after ``pg_dump`` succeeded **and** the
    read-back and the listing passed, so a partial file never looks complete;
    ``required_tables`` (``schema.table``) must have ``TABLE DATA`` in the TOC (default:
    ``DEFAULT_REQUIRED_TABLES``, or the ``tables`` when given).

    ``tables``: dump only these tables (``table`` in ``public`` or ``schema.table``,
    literal names; see ``table_pattern``): their definitions and data, nothing else
    (seed "Backup incremental creado"). A name that matches no table fails the dump
    (``--strict-names``). ``None``: the whole database.

    ``label`` is a file-name stem (letters, digits, ``._-``). ``lock_wait_timeout_s``
    (seconds) bounds pg_dump's wait for its ACCESS SHARE locks; ``timeout_s`` (seconds)
    bounds each tool run.

    **Retries (idempotence).** A label names one backup: the DAG uses ``pre_<run id>``,
    so a retried or cleared ``backup`` task of the same run calls this again with the
    same label. When ``<label>.dump`` already exists and ``verify_backup`` reads it back
    whole with the required tables, it is **reused**: nothing is dumped, the record has
    ``reused=True``, and the file, its SHA-256 and any record already stored for it stay
    valid. It must also come from the same database: the source recorded with it
    (``source_name``) must have the target's lease key (``identity.identify``, read from
    the server), or, for a dump kept before sources were recorded, the name in its header
    must be the target's ``current_database()``. A dump of another database (a run id
    re-created, a connection re-pointed between tries) is refused with ``BackupError``
    naming both and left in place: neither reused (the rollback would restore the other
    database's values) nor replaced (it may be that database's only backup).
    Dumping again instead would replace the pre-migration dump with a
    post-migration one if the task were re-run after ``migrate`` (the dropped columns'
    values would be gone from the only backup the rollback reads). An existing file that
    does not verify is not a backup: a new dump replaces it (atomically, only once the
    new one verified), with a warning.

    Returns a ``BackupRecord``. Raises ``BackupError`` naming the step that failed, with
    the tool's stderr tail (password scrubbed); the temporary file is removed.
    """
    started = time.monotonic()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", label) or label.startswith("."):
        raise BackupError(f"backup label {label!r} is not a plain file name (letters, digits, '._-')")
    if tables is not None and not tables:
        raise BackupError("tables: give at least one table, or None for the whole database")
    if required_tables is None:
        required_tables = (tuple(".".join(_split(t)) for t in tables) if tables
                           else DEFAULT_REQUIRED_TABLES)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"{label}.dump"
    source = _identity(target)
    if final.exists():
        reused = _reuse(final, pg_bin_dir, required_tables, timeout_s, started, source)
        if reused is not None:
            return reused
    pg_dump = tool_path("pg_dump", pg_bin_dir)

    dump_major, dump_version = tool_version(pg_dump)
    server_major, server_version = _server_version(target)
    if dump_major < server_major:
        raise BackupError(
            f"pg_dump {dump_version} ({pg_dump}) is older than the server {server_version} of "
            f"{target.describe()}: pg_dump must be of major version {server_major} or newer"
        )

    pg_restore = tool_path("pg_restore", pg_bin_dir)
    tmp = dest_dir / f".{label}.dump.partial-{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        watermark = _watermark(target)
        argv = pg_dump_argv(pg_dump, lock_wait_timeout_s, tables)
        log.info("pg_dump of %s to %s (zstd, read back while written)", target.describe(), final)
        written = archive.write_and_read_back(argv, target.child_env(), tmp, pg_restore, timeout_s=timeout_s,
                                              dump_what=f"pg_dump of {target.describe()}", scrub=target.scrub)
        check = _checked_toc(tmp, pg_restore, written.size, written.sha256, required_tables, started, timeout_s)
        _write_source(dest_dir / source_name(label), source)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    record = BackupRecord(
        path=final,
        size_bytes=check.size_bytes,
        sha256=check.sha256,
        duration_s=round(time.monotonic() - started, 3),
        pg_dump_version=dump_version,
        server_version=server_version,
        tables=check.tables,
        created_at=datetime.now(timezone.utc),
        watermark=watermark,
        source=source.key,
    )
    log.info(
        "backup %s: %d bytes (archive %d bytes uncompressed), sha256 %s, %d tables with data, %.1f s",
        final, record.size_bytes, written.archive_bytes, record.sha256, len(record.tables), record.duration_s,
    )
    return record


def _watermark(target: PgTarget) -> str | None:
    """``increment.current_watermark`` just before ``pg_dump`` starts, or ``None`` (logged)
    when it cannot be read: the backup does not depend on it, the first increment then
    copies whole tables."""
    try:
        return current_watermark(target)
    except BackupError as exc:
        log.warning("no watermark for the backup (the first increment will copy whole tables): %s", exc)
        return None


def _identity(target: PgTarget) -> DatabaseIdentity:
    """``identity.identify`` of the database to dump; ``BackupError`` when it cannot be read."""
    try:
        return identify(target, "backup")
    except BackupError:
        raise
    except SoakError as exc:
        raise BackupError(str(exc)) from None


def _write_source(path: Path, source: DatabaseIdentity) -> None:
    """Write ``source_name``'s file whole (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        tmp.write_text(json.dumps(source.to_dict(), sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _recorded_source(path: Path) -> dict[str, Any] | None:
    """The source recorded next to a dump (``source_name``), or ``None`` when there is
    none; ``BackupError`` when it is there but unreadable."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("key"), str):
            raise ValueError("no key")
        return data
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: cannot read which database the backup next to it was taken from "
                          f"({type(exc).__name__}: {exc}); move both files away to take a new backup") from None


def _reuse(final: Path, pg_bin_dir: Path | None, required_tables: Sequence[str], timeout_s: float,
           started: float, source: DatabaseIdentity) -> BackupRecord | None:
    """The record of a complete earlier ``final`` dump of ``source``, or ``None`` when it
    does not verify. Raises ``BackupError`` when it is a dump of another database."""
    try:
        check = verify_backup(final, pg_bin_dir, required_tables=required_tables, timeout_s=timeout_s)
    except BackupError as exc:
        log.warning("existing %s does not verify, taking a new backup to replace it: %s", final, exc)
        return None
    label = final.name[: -len(".dump")]
    recorded = _recorded_source(final.with_name(source_name(label)))
    if recorded is not None and recorded["key"] != source.key:
        raise BackupError(
            f"backup {final.name} already exists and was taken from database {recorded.get('database')!r} "
            f"({recorded['key']}, reached as {recorded.get('reached_as')}), but this run's staging is "
            f"{source} ({source.key}): it is not reused (a rollback would restore the other database's values) "
            "nor replaced. A run id re-created, or the staging connection re-pointed between tries? Move "
            f"{final.name} and {source_name(label)} out of the backup location (keep them if that database may "
            "need them), or trigger a run with a new run id"
        )
    if recorded is None:
        if check.dbname != source.database:
            raise BackupError(
                f"backup {final.name} already exists and its header names database {check.dbname!r}, but this "
                f"run's staging is {source}: it is not reused (a rollback would restore the other database's "
                f"values) nor replaced. Move {final.name} out of the backup location (keep it if that database "
                "may need it), or trigger a run with a new run id"
            )
        log.warning("backup %s records no source server (taken before sources were recorded): reused because its "
                    "header names database %r, the server is not checked", final, check.dbname)
    record = BackupRecord(
        path=final,
        size_bytes=check.size_bytes,
        sha256=check.sha256,
        duration_s=round(time.monotonic() - started, 3),
        pg_dump_version=check.dumped_by,
        server_version=check.dumped_from,
        tables=check.tables,
        created_at=datetime.fromtimestamp(final.stat().st_mtime, timezone.utc),
        reused=True,
        source=None if recorded is None else recorded["key"],
    )
    log.info("backup %s already taken (%d bytes, sha256 %s, written %s): reused, not dumped again",
             final, record.size_bytes, record.sha256, record.created_at.isoformat())
    return record


def verify_backup(
    path: Path,
    pg_bin_dir: Path | None,
    expected_sha256: str | None = None,
    *,
    required_tables: Sequence[str] = DEFAULT_REQUIRED_TABLES,
    timeout_s: float = 6 * 3600.0,
) -> BackupCheck:
    """Re-verify a dump file (``archive``: zstd-compressed or plain custom format); run
    before every restore.

    Checks, in order: the file exists and is not empty; its SHA-256 equals
    ``expected_sha256`` when given (mismatch is an error: the file changed since the
    backup); it starts with a known magic (``archive.kind``); ``pg_restore -f /dev/null``
    reads every block without error (a truncated dump fails here while ``--list`` would
    still succeed: STYLE.md "PostgreSQL facts"; a compressed file must also be one whole
    zstd frame); the TOC (``pg_restore --list``) has ``TABLE DATA`` for every
    ``required_tables`` entry (``schema.table``).

    Returns a ``BackupCheck``. Raises ``BackupError`` naming the failed check.
    """
    started = time.monotonic()
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"backup {path} does not exist")
    sha, size = sha256_file(path)
    if size == 0:
        raise BackupError(f"backup {path} is empty")
    if expected_sha256 is not None and sha != expected_sha256.lower():
        raise BackupError(
            f"backup {path} checksum mismatch: sha256 is {sha}, the backup record says {expected_sha256}; "
            "the file changed after the backup was taken"
        )
    pg_restore = tool_path("pg_restore", pg_bin_dir)
    archive.read_back(path, pg_restore, timeout_s=timeout_s)
    return _checked_toc(path, pg_restore, size, sha, required_tables, started, timeout_s)


def _checked_toc(path: Path, pg_restore: Path, size: int, sha: str, required_tables: Sequence[str],
                 started: float, timeout_s: float) -> BackupCheck:
    """``verify_backup``'s last check (``pg_restore --list``: the required tables have
    data) on a file already read back whole; its ``BackupCheck``."""
    listing = archive.run_restore([str(pg_restore), "--list"], path, timeout_s=timeout_s,
                                  what=f"listing backup {path}")
    tables = tuple(sorted(toc_table_data(listing.splitlines())))
    missing = [name for name in required_tables if name not in tables]
    if missing:
        raise BackupError(
            f"backup {path} holds no table data for {', '.join(missing)} "
            f"(TABLE DATA entries: {', '.join(tables) or 'none'})"
        )
    by, source, dbname = _DUMPED_BY.search(listing), _DUMPED_FROM.search(listing), _DBNAME.search(listing)
    return BackupCheck(path=path, size_bytes=size, sha256=sha, tables=tables,
                       duration_s=round(time.monotonic() - started, 3),
                       dumped_by=by.group(1) if by else "", dumped_from=source.group(1) if source else "",
                       dbname=dbname.group(1).strip() if dbname else "")


def toc_table_data(lines: Iterable[str]) -> list[str]:
    """``schema.table`` of every ``TABLE DATA`` line of a ``pg_restore --list`` output."""
    found = []
    for line in lines:
        match = _TOC_DATA.match(line)
        if match:
            found.append(f"{match.group(1)}.{match.group(2)}")
    return found


def _server_version(target: PgTarget) -> tuple[int, str]:
    try:
        conn = target.connect()
    except Exception as exc:  # psycopg2.OperationalError and friends
        raise BackupError(f"cannot connect to {target.describe()}: {target.scrub(str(exc)).strip()}") from None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_setting('server_version_num')::int, current_setting('server_version')")
            num, text = cur.fetchone()
    except Exception as exc:  # the server went away between connect and query
        raise BackupError(
            f"cannot read the server version of {target.describe()}: {target.scrub(str(exc)).strip()}"
        ) from None
    finally:
        conn.close()
    return num // 10000, text.split()[0]
