"""Where backups are kept: any storage Airflow's ``ObjectStoragePath`` reaches.

The plan's ``backup_location`` is a local path or a URL (``s3://``, ``gs://``...,
Airflow docs, "Object Storage", connection ``connections.backup_storage``). A dump is
taken locally, kept by copy + SHA-256 read-back + rename, and fetched and checked before
a restore. Operations: docs/operations.md#backups.

Design notes: docs/design.md#backup_storagepy
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from airflow.sdk import ObjectStoragePath

from migration_soak.backup import BackupRecord, sha256_file, source_name, take_backup
from migration_soak.exceptions import BackupError
from migration_soak.pgconn import PgTarget

log = logging.getLogger(__name__)

_CHUNK = 1 << 20  # bytes copied per read (1 MiB): a dump is never held in memory


def storage_root(location: str, conn_id: str | None = None, base: Path | None = None) -> ObjectStoragePath:
    """The ``ObjectStoragePath`` of a plan's ``backup_location``.

    ``location``: a URL with a scheme (``s3://bucket/prefix``, ``file:///srv/backups``)
    or a filesystem path (relative ones resolve against ``base``). ``conn_id``: the
    Airflow connection of the object store (ignored by ``file``).
    Raises ``BackupError`` naming ``backup_location`` when no filesystem is registered
    for the scheme (the provider that brings it is not installed).
    """
    if "://" not in location:
        path = Path(location)
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return ObjectStoragePath(path.resolve().as_uri())
    try:
        root = ObjectStoragePath(location, conn_id=conn_id)
        root.fs  # noqa: B018  (resolves the scheme's filesystem now, not mid-backup)
    except (ValueError, ImportError) as exc:
        raise BackupError(f"backup_location {location!r}: {exc} (install the Airflow provider for this scheme)") \
            from None
    return root


def plan_root(plan) -> ObjectStoragePath:
    """``<backup_location>/<environment>`` of a ``Plan``: where its soak's dumps are kept."""
    from migration_soak.plan import REPO_ROOT

    return storage_root(plan.backup_location, plan.connections.backup_storage, REPO_ROOT) / plan.environment


def probe(root: ObjectStoragePath) -> None:
    """Check that backups can be kept under ``root``: create it, write and remove a small
    hidden object. The DAG's ``load`` runs it, so a storage that is unreachable, read-only
    or not a folder fails the run at once, not after the baseline hour.

    Raises ``BackupError`` naming ``root`` and the storage's error.
    """
    marker = root / f".probe-{uuid.uuid4().hex[:12]}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"migration-soak storage probe\n")
        marker.unlink()
    except Exception as exc:
        _remove_quietly(marker)
        raise BackupError(f"backup_location {root} is not usable for backups: {type(exc).__name__}: {exc}") from None


def keep(local: Path, dest: ObjectStoragePath, sha256: str) -> None:
    """Copy the verified dump ``local`` to ``dest`` so that ``dest`` appears only whole.

    Streams 1 MiB blocks to ``<dest dir>/.<name>.partial-<random>``, reads that back from
    the storage and compares its SHA-256 with ``sha256`` (hex), then renames it to
    ``dest``. Local storage gets mode 0600 (a dump holds password hashes); object stores
    keep their bucket's access policy. Raises ``BackupError`` (the partial is removed).
    """
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "rb") as src, partial.open("wb") as out:
            while block := src.read(_CHUNK):
                out.write(block)
        try:
            partial.chmod(0o600)
        except (NotImplementedError, AttributeError):
            pass  # object stores have no file modes
        stored = _sha256(partial)
        if stored != sha256:
            raise BackupError(f"{dest}: the copy read back has sha256 {stored}, the dump has {sha256}")
        partial.rename(dest)
    except BackupError:
        _remove_quietly(partial)
        raise
    except Exception as exc:  # OSError, botocore/gcsfs errors: any storage failure
        _remove_quietly(partial)
        raise BackupError(f"cannot keep the backup at {dest}: {type(exc).__name__}: {exc}") from None
    log.info("backup kept at %s (sha256 %s)", dest, sha256)


def fetch(source: ObjectStoragePath, local: Path, expected_sha256: str | None = None) -> Path:
    """Copy the kept dump ``source`` to the local file ``local`` (mode 0600); returns ``local``.

    With ``expected_sha256`` (hex) the copy must match it. Raises ``BackupError`` when
    the object is missing, unreadable or different (the local copy is removed).
    """
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not source.exists():
            raise BackupError(f"backup {source} does not exist")
        with source.open("rb") as src, open(local, "wb", opener=_private) as out:
            while block := src.read(_CHUNK):
                out.write(block)
    except BackupError:
        raise
    except Exception as exc:
        local.unlink(missing_ok=True)
        raise BackupError(f"cannot fetch backup {source}: {type(exc).__name__}: {exc}") from None
    if expected_sha256 is not None:
        got, _ = sha256_file(local)
        if got != expected_sha256.lower():
            local.unlink(missing_ok=True)
            raise BackupError(f"backup {source} checksum mismatch: sha256 is {got}, the backup record says "
                              f"{expected_sha256}; the object changed after the backup was taken")
    return local


@contextmanager
def working_folder() -> Iterator[Path]:
    """A private local folder (``TMPDIR``) for one dump, removed with everything in it."""
    with tempfile.TemporaryDirectory(prefix="soak-backup-") as tmp:
        yield Path(tmp)


def take_kept_backup(
    target: PgTarget,
    root: ObjectStoragePath,
    pg_bin_dir: Path | None,
    label: str,
    *,
    tables: Sequence[str] | None = None,
    required_tables: Sequence[str] | None = None,
    conn_id: str | None = None,
) -> BackupRecord:
    """Take, verify and keep a backup at ``root / <label>.dump``; the storage-aware
    ``backup.take_backup`` (``tables``, ``required_tables``: its own; the DAG passes the
    plan's migration table as required, ``runbook.backup_required_tables``).

    A label names one backup (the DAG uses ``pre_<run id>``): when ``<label>.dump`` is
    already kept (a retried task), it is fetched and read back whole, and reused when it
    verifies and was taken from the same database (``reused=True``, nothing dumped or
    written; ``take_backup`` checks the source kept next to it, ``backup.source_name``,
    and refuses a dump of another database); a kept file that does not verify is
    replaced by a new dump. Returns the record with ``location`` (the URL)
    and ``storage_conn_id`` set and ``path`` ``None`` (the working copy is gone).
    Raises ``BackupError`` (``take_backup``'s, or the storage's).
    """
    dest = root / f"{label}.dump"
    source = root / source_name(label)
    with working_folder() as work:
        local = work / f"{label}.dump"
        try:
            present = dest.exists()
            source_present = present and source.exists()
        except Exception as exc:
            raise BackupError(f"cannot reach backup storage {root}: {type(exc).__name__}: {exc}") from None
        if present:
            fetch(dest, local)
        if source_present:
            fetch(source, work / source_name(label))
        record = take_backup(target, work, pg_bin_dir, label, tables=tables, required_tables=required_tables)
        if not record.reused:
            if record.path is None:  # take_backup always names its file; never keep nothing
                raise BackupError(f"the backup of {label} has no local file to keep at {dest}")
            recorded = work / source_name(label)
            keep(recorded, source, sha256_file(recorded)[0])  # before the dump: a kept dump has its source
            keep(record.path, dest, record.sha256)
    return replace(record, path=None, location=str(dest), storage_conn_id=conn_id)


@contextmanager
def fetched(record: BackupRecord) -> Iterator[BackupRecord]:
    """The kept backup of ``record`` as a local file for the duration of the block.

    Yields the record with ``path`` set to a local copy whose SHA-256 equals
    ``record.sha256``; a record that was never kept (``location`` empty) is yielded as
    is. Raises ``BackupError`` as ``fetch`` does.
    """
    if not record.location:
        yield record
        return
    source = ObjectStoragePath(record.location, conn_id=record.storage_conn_id)
    with working_folder() as work:
        local = fetch(source, work / source.name, record.sha256)
        yield replace(record, path=local)


def kept_labels(root: ObjectStoragePath, prefix: str) -> list[str]:
    """Labels of the dumps kept directly under ``root`` whose name starts with ``prefix``
    (``inc_<run>_`` → ``["inc_<run>_1", ...]``); ``[]`` when ``root`` does not exist."""
    try:
        if not root.exists():
            return []
        return sorted(p.name[: -len(".dump")] for p in root.iterdir()
                      if p.name.startswith(prefix) and p.name.endswith(".dump"))
    except Exception as exc:
        raise BackupError(f"cannot list backup storage {root}: {type(exc).__name__}: {exc}") from None


def _sha256(path: ObjectStoragePath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _private(path: str, flags: int) -> int:
    import os

    return os.open(path, flags, 0o600)


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception as exc:  # best effort: the partial name never looks like a backup
        log.warning("could not remove %s: %s", path, exc)
