"""Backups kept in S3 (issue 13, item 2): the same ``backup_storage`` code as for local
storage, through ``ObjectStoragePath`` with the amazon provider's ``s3fs`` filesystem,
against a real S3-compatible server (``moto`` in server mode, ``demo/s3.py``) reached only
through the Airflow connection's ``endpoint_url``."""

from __future__ import annotations

import hashlib

import pytest

from demo.s3 import LocalS3
from migration_soak.backup_storage import fetched, kept_labels, probe, storage_root, take_kept_backup
from migration_soak.exceptions import BackupError
from migration_soak.migrate import LedgerBackend
from migration_soak.rollback import restore_columns

from .conftest import DOWN_SQL, MIGRATIONS, SEED_USERS, USERS_COLUMNS, snapshot
from .test_backup_storage import worker  # noqa: F401  (fixture: a worker with its own TMPDIR)

BUCKET = "soak-backups"
CONN_ID = "soak_s3"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with LocalS3(tmp_path_factory.mktemp("moto")) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The server, with Airflow connection ``soak_s3`` pointing at it."""
    monkeypatch.setenv(LocalS3.env_var(CONN_ID), s3_server.connection_json())
    return s3_server


def _objects(s3: LocalS3, prefix: str) -> dict[str, bytes]:
    client = s3.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def test_backup_kept_in_s3_on_one_worker_is_restored_on_another(s3, seeded, pg_bin, worker):  # noqa: F811
    root = storage_root(f"s3://{BUCKET}/restore-test", conn_id=CONN_ID) / "staging"
    probe(root)  # what the DAG's load task checks first
    before = snapshot(seeded)

    disk_a = worker("worker-a")
    record = take_kept_backup(seeded, root, pg_bin, "pre_run1", conn_id=CONN_ID)
    # Airflow's notation for an object behind a connection: s3://<conn id>@<bucket>/<key>
    assert record.location == f"s3://{CONN_ID}@{BUCKET}/restore-test/staging/pre_run1.dump"
    assert record.storage_conn_id == CONN_ID and record.path is None and not record.reused
    kept = _objects(s3, "restore-test/")
    assert list(kept) == ["restore-test/staging/pre_run1.dump",  # no partial or probe object left
                          "restore-test/staging/pre_run1.source.json"]
    assert hashlib.sha256(kept["restore-test/staging/pre_run1.dump"]).hexdigest() == record.sha256
    assert list(disk_a.iterdir()) == []  # nothing stays on worker a

    LedgerBackend(seeded, MIGRATIONS).deploy()  # the columns are dropped

    disk_b = worker("worker-b")
    with fetched(record) as local:
        assert local.path.parent.parent == disk_b
        result = restore_columns(seeded, local, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.rows_matched == SEED_USERS and result.mismatches == 0
    assert snapshot(seeded) == before  # every value back
    assert list(disk_b.iterdir()) == []

    again = take_kept_backup(seeded, root, pg_bin, "pre_run1", conn_id=CONN_ID)  # a retried backup task
    assert again.reused and again.sha256 == record.sha256  # the pre-migration dump, not a new one
    assert kept_labels(root, "pre_") == ["pre_run1"]


def test_an_s3_object_changed_after_the_backup_is_refused_before_restore(s3, seeded, pg_bin, worker):  # noqa: F811
    worker("w")
    root = storage_root(f"s3://{BUCKET}/tamper-test", conn_id=CONN_ID)
    record = take_kept_backup(seeded, root, pg_bin, "pre", conn_id=CONN_ID)
    key = "tamper-test/pre.dump"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=_objects(s3, key)[key] + b"\0")
    with pytest.raises(BackupError, match=r"checksum mismatch.*changed after the backup"):
        with fetched(record):
            pass


def test_an_increment_chain_in_s3_proves_its_second_link_by_count_and_a_deletion_brings_the_key_list(
        s3, seeded, worker):  # noqa: F811
    """The passive phase's increments as the Celery harness keeps them: in S3, the second
    link chained to the first by its URL; the count proof reads the first link's key list
    back through the connection (an update: its key is looked up there)."""
    from migration_soak.increment import current_watermark, take_increment, verify_increment

    from .test_incremental_backup import users_changes

    worker("w")
    root = storage_root(f"s3://{BUCKET}/chain-test", conn_id=CONN_ID) / "incremental"
    one = take_increment(seeded, root, "inc_1", ["users"], current_watermark(seeded), conn_id=CONN_ID)
    assert one.tables["public.users"].keys_file is not None
    users_changes(seeded, inserted=["usr_s3"], updated=["usr_0000030"])
    two = take_increment(seeded, root, "inc_2", ["users"], one.watermark, conn_id=CONN_ID, previous=one.location)
    assert one.location.startswith(f"s3://{CONN_ID}@{BUCKET}/")
    assert two.tables["public.users"].deletions == {
        "proof": "count", "previous": "inc_1", "key_list": "inc_1", "previous_keys": SEED_USERS, "new_keys": 1}
    assert verify_increment(two.location, CONN_ID)["watermark"] == two.watermark
    users_changes(seeded, deleted=["usr_0000031"], updated=["usr_0000032"])
    three = take_increment(seeded, root, "inc_3", ["users"], two.watermark, conn_id=CONN_ID, previous=two.location)
    assert three.tables["public.users"].keys_file is not None  # a deletion: the key list again
    assert "a key was deleted" in three.tables["public.users"].deletions["reason"]
