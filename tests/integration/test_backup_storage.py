"""backup_storage.py on the real server: backups kept through ``ObjectStoragePath``, so a
rollback on another worker (another local disk) restores from them (issue 4, item 3)."""

from __future__ import annotations

import json
import stat
import tempfile
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from migration_soak.backup import BackupRecord, take_backup
from migration_soak.backup_storage import fetched, keep, kept_labels, storage_root, take_kept_backup
from migration_soak.exceptions import BackupError, RollbackError
from migration_soak.migrate import LedgerBackend
from migration_soak.rollback import restore_columns

from .conftest import DOWN_SQL, MIGRATIONS, SEED_USERS, USERS_COLUMNS, snapshot


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """Switch the process to a worker with its own local scratch disk (``TMPDIR``)."""
    def become(name: str) -> Path:
        disk = tmp_path / f"{name}-tmp"
        disk.mkdir()
        monkeypatch.setenv("TMPDIR", str(disk))
        monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
        return disk
    return become


def test_backup_kept_on_one_worker_is_restored_on_another(seeded, pg_bin, tmp_path, worker):
    shared = tmp_path / "shared-storage"
    root = storage_root(shared.as_uri()) / "staging"
    before = snapshot(seeded)

    disk_a = worker("worker-a")
    record = take_kept_backup(seeded, root, pg_bin, "pre_run1")
    kept = shared / "staging" / "pre_run1.dump"
    assert record.location == kept.as_uri() and record.path is None and not record.reused
    assert sorted(p.name for p in kept.parent.iterdir()) == ["pre_run1.dump", "pre_run1.source.json"]  # no partial
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # it holds password hashes
    assert list(disk_a.iterdir()) == []  # the working copy is gone: nothing stays on worker a
    assert record.size_bytes == kept.stat().st_size
    assert BackupRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record  # through XCom

    LedgerBackend(seeded, MIGRATIONS).deploy()  # the columns are dropped

    disk_b = worker("worker-b")
    with fetched(record) as local:
        assert local.path.parent.parent == disk_b and local.path.read_bytes() == kept.read_bytes()
        result = restore_columns(seeded, local, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.rows_matched == SEED_USERS and result.mismatches == 0
    assert snapshot(seeded) == before
    assert list(disk_b.iterdir()) == []


def test_a_retried_backup_reuses_the_kept_dump_and_replaces_a_broken_one(seeded, pg_bin, tmp_path, worker):
    worker("w")
    root = storage_root(str(tmp_path / "store"))  # a plain path is file:// storage
    first = take_kept_backup(seeded, root, pg_bin, "pre_run1")
    kept = tmp_path / "store" / "pre_run1.dump"
    mtime = kept.stat().st_mtime_ns

    again = take_kept_backup(seeded, root, pg_bin, "pre_run1")
    assert again.reused and (again.sha256, again.location) == (first.sha256, first.location)
    assert kept.stat().st_mtime_ns == mtime  # not written again

    data = kept.read_bytes()
    kept.write_bytes(data[: len(data) // 2])  # a kept dump cut short does not verify...
    fresh = take_kept_backup(seeded, root, pg_bin, "pre_run1")
    assert not fresh.reused and fresh.location == first.location  # ...and is replaced
    with fetched(fresh) as local:
        assert local.sha256 == fresh.sha256


def test_a_kept_dump_changed_after_the_backup_is_refused_before_restore(seeded, pg_bin, tmp_path, worker):
    worker("w")
    record = take_kept_backup(seeded, storage_root(str(tmp_path / "store")), pg_bin, "pre")
    kept = tmp_path / "store" / "pre.dump"
    kept.write_bytes(kept.read_bytes() + b"\0")
    with pytest.raises(BackupError, match=r"checksum mismatch.*changed after the backup"):
        with fetched(record):
            pass
    kept.unlink()
    with pytest.raises(BackupError, match="does not exist"):
        with fetched(record):
            pass


def test_restore_without_a_local_copy_is_refused(seeded, pg_bin, tmp_path, worker):
    worker("w")
    record = take_kept_backup(seeded, storage_root(str(tmp_path / "store")), pg_bin, "pre")
    with pytest.raises(RollbackError, match="no local copy: fetch it first"):
        restore_columns(seeded, record, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)


def test_a_copy_that_reads_back_different_is_never_kept(seeded, pg_bin, tmp_path):
    record = take_backup(seeded, tmp_path / "work", pg_bin, "pre")
    dest = storage_root(str(tmp_path / "store")) / "pre.dump"
    with pytest.raises(BackupError, match="read back has sha256"):
        keep(record.path, dest, "0" * 64)
    assert list((tmp_path / "store").iterdir()) == []  # neither the object nor its partial


def test_unreachable_storage_fails_the_backup(seeded, pg_bin, tmp_path, worker):
    """Storage that cannot be written (here: a path under a regular file) is a
    ``BackupError``, which the ``backup`` task turns into a failed run before migrate."""
    worker("w")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(BackupError, match="not-a-folder"):
        take_kept_backup(seeded, storage_root(str(blocker / "backups")), pg_bin, "pre")


def test_an_unregistered_scheme_names_backup_location():
    with pytest.raises(BackupError, match=r"backup_location 'nosuchfs://bucket/x'.*install the Airflow provider"):
        storage_root("nosuchfs://bucket/x")


def test_kept_labels_lists_dumps_by_prefix(tmp_path):
    root = ObjectStoragePath((tmp_path / "inc").as_uri())
    assert kept_labels(root, "inc_r_") == []
    (tmp_path / "inc").mkdir()
    for name in ("inc_r_1.dump", "inc_r_2.dump", "inc_other_1.dump", ".inc_r_3.dump.partial-x", "inc_r_4.txt"):
        (tmp_path / "inc" / name).write_bytes(b"x")
    assert kept_labels(root, "inc_r_") == ["inc_r_1", "inc_r_2"]


def test_probe_fails_at_once_for_storage_that_cannot_hold_backups(tmp_path):
    """What the DAG's ``load`` checks before the baseline hour starts."""
    from migration_soak.backup_storage import probe

    good = storage_root(str(tmp_path / "store")) / "staging"
    probe(good)
    assert list((tmp_path / "store" / "staging").iterdir()) == []  # the probe object is gone
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(BackupError, match=r"a-file/backups is not usable for backups"):
        probe(storage_root(str(blocker / "backups")))


def test_a_kept_dump_of_another_database_is_not_reused(seeded, pg_server, pg_bin, tmp_path, worker, request):
    """A run id re-created, or the staging connection re-pointed between tries, finds a
    ``pre_<run>.dump`` taken from another database: reusing it would let the rollback
    restore that database's passwordHash values. It is refused, naming both, and kept."""
    from dataclasses import replace as _replace

    from tests.conftest import recreate_database

    worker("w")
    root = storage_root(str(tmp_path / "store"))
    first = take_kept_backup(seeded, root, pg_bin, "pre_run1")
    kept = tmp_path / "store" / "pre_run1.dump"
    data = kept.read_bytes()

    other = _replace(seeded, database=seeded.database + "_other")
    recreate_database(pg_server, other.database)
    with pytest.raises(BackupError) as caught:
        take_kept_backup(other, root, pg_bin, "pre_run1")
    message = str(caught.value)
    assert "pre_run1.dump" in message and repr(seeded.database) in message and repr(other.database) in message
    assert kept.read_bytes() == data  # the other database's backup is not replaced

    again = take_kept_backup(seeded, root, pg_bin, "pre_run1")  # the same database still reuses it
    assert again.reused and again.sha256 == first.sha256 and again.source == first.source
    assert first.source and first.source.endswith("/" + seeded.database)
