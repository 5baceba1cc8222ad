"""The count proof of increments (``increment.py``, issue 14 item 3) on the real server: a
link where nothing was deleted keeps no key list (``count(*)`` of its snapshot equals
|P| + |C \\ P|), every deletion (also one hidden by an insert, or a primary key updated)
gets the key list, any doubt about the chain or the key type gets the key list with the
reason, and the chain "dump + increments" restores the table exactly either way."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from migration_soak import archive
from migration_soak.backup import take_backup
from migration_soak.increment import apply_increment, current_watermark, take_increment, verify_increment
from tests.conftest import recreate_database

from .conftest import SEED_USERS, query
from .test_incremental_backup import kept_lines, first_fields, storage, users_changes

COLUMNS = '"id", "email", "authorizerId", "clientId", "passwordHash", "emailVerified", "createdAt", "updatedAt"'


def restore_and_compare(seeded, pg_server, pg_bin, backup, increments, name: str) -> list[int]:
    """Restore ``backup`` into a new database, apply ``increments`` (in order) to users,
    and assert that users there equals users of ``seeded`` exactly; returns the rows each
    increment deleted."""
    restored = replace(seeded, database=f"{seeded.database[:40]}_{name}")
    recreate_database(pg_server, restored.database)
    archive.run_restore([str(pg_bin / "pg_restore"), "--no-owner", f"--dbname={restored.database}"], backup.path,
                        timeout_s=120, env=restored.child_env(), what="restore")
    deleted = []
    after = backup.watermark
    for inc in increments:
        deleted.append(apply_increment(restored, inc.location, "users", after=after).deleted)
        after = inc.watermark
    live = sorted(query(seeded, f"SELECT {COLUMNS} FROM users"))
    assert sorted(query(restored, f"SELECT {COLUMNS} FROM users")) == live
    return deleted


def manifest_of(record) -> dict:
    return json.loads((ObjectStoragePath(record.location) / "manifest.json").read_text())


def test_a_link_without_deletions_keeps_no_key_list_and_restores_exactly(seeded, pg_server, pg_bin, tmp_path):
    backup = take_backup(seeded, tmp_path / "pre", pg_bin, "pre_count")
    users_changes(seeded, inserted=["usr_a"], updated=["usr_0000010"])
    root = storage(tmp_path)
    one = take_increment(seeded, root, "inc_1", ["users"], backup.watermark)
    u1 = one.tables["public.users"]
    assert u1.keys_file is not None and u1.keys == SEED_USERS + 1
    assert u1.deletions == {"proof": "key list", "reason": "no previous increment (the first since the "
                                                           "pre-migration backup, or none given)"}
    users_changes(seeded, inserted=["usr_b", "usr_c"], updated=["usr_0000011", "usr_a"])
    two = take_increment(seeded, root, "inc_2", ["users"], one.watermark, previous=one.location)
    u2 = two.tables["public.users"]
    assert (u2.rows, u2.keys, u2.keys_file, u2.keys_bytes) == (4, SEED_USERS + 3, None, 0)
    assert u2.deletions == {"proof": "count", "previous": "inc_1", "key_list": "inc_1",
                            "previous_keys": SEED_USERS + 1, "new_keys": 2}
    manifest = manifest_of(two)
    assert manifest["format"] == "increment-v2" and manifest["previous"] == one.location
    assert set(manifest["tables"]["public.users"]["files"]) == {"rows"}
    assert sorted(p.name for p in Path(ObjectStoragePath(two.location).path).iterdir()) == [
        "manifest.json", "public.users.rows.copy.zst"]
    assert verify_increment(two.location)["watermark"] == two.watermark
    assert restore_and_compare(seeded, pg_server, pg_bin, backup, [one, two], "nodel") == [0, 0]


@pytest.mark.parametrize("change", ["delete", "delete_and_insert", "key_updated"])
def test_every_deletion_gets_the_key_list(seeded, pg_server, pg_bin, tmp_path, change):
    """A deletion lowers the count below |P| + |C \\ P|, even when an insert of a new key
    (or a primary key updated: a deletion and an insert) keeps count(*) equal to |P|."""
    backup = take_backup(seeded, tmp_path / "pre", pg_bin, "pre_del")
    root = storage(tmp_path)
    one = take_increment(seeded, root, "inc_1", ["users"], backup.watermark)
    users_changes(seeded, updated=["usr_0000020"])
    if change == "delete":
        users_changes(seeded, deleted=["usr_0000030"])
    elif change == "delete_and_insert":
        users_changes(seeded, inserted=["usr_new"], deleted=["usr_0000030"])
    else:
        query(seeded, "UPDATE users SET id = 'usr_renamed' WHERE id = 'usr_0000030'")
    assert query(seeded, "SELECT count(*) FROM users")[0][0] == SEED_USERS - (change == "delete")
    two = take_increment(seeded, root, "inc_2", ["users"], one.watermark, previous=one.location)
    u2 = two.tables["public.users"]
    if change == "delete":  # below |P|: the count alone decides
        assert u2.deletions == {"proof": "key list", "reason": f"count(*) {SEED_USERS - 1} is below the "
                                                               f"{SEED_USERS} keys at inc_1: a key was deleted"}
    else:  # count(*) = |P|: the chain is read, one of the two changed keys is new
        assert u2.deletions == {"proof": "key list", "reason": (
            f"count(*) {SEED_USERS} is not {SEED_USERS} keys at inc_1 + 1 new keys (of 2 changed): a key was "
            "deleted")}
    keys = first_fields(kept_lines(two, "public.users", "keys"))
    assert "usr_0000030" not in keys and len(keys) == u2.keys
    assert restore_and_compare(seeded, pg_server, pg_bin, backup, [one, two], f"del_{change}") == [0, 1]


def test_updates_reinserts_and_a_three_link_chain(seeded, pg_server, pg_bin, tmp_path):
    backup = take_backup(seeded, tmp_path / "pre", pg_bin, "pre_three")
    users_changes(seeded, deleted=["usr_0000040"])  # before inc_1: not in its key list
    root = storage(tmp_path)
    one = take_increment(seeded, root, "inc_1", ["users"], backup.watermark)
    assert one.tables["public.users"].keys == SEED_USERS - 1
    # inc_2 (the middle link): an update, an insert; nothing deleted.
    users_changes(seeded, inserted=["usr_x"], updated=["usr_0000050"])
    two = take_increment(seeded, root, "inc_2", ["users"], one.watermark, previous=one.location)
    assert two.tables["public.users"].deletions["proof"] == "count"
    # inc_3: the same row updated again, usr_x (known only from inc_2's rows) updated, the
    # key deleted before inc_1 inserted again: one new key, found by walking back to inc_1.
    users_changes(seeded, inserted=["usr_0000040"], updated=["usr_0000050", "usr_x"])
    three = take_increment(seeded, root, "inc_3", ["users"], two.watermark, previous=two.location)
    u3 = three.tables["public.users"]
    assert u3.keys_file is None and u3.deletions == {
        "proof": "count", "previous": "inc_2", "key_list": "inc_1", "previous_keys": SEED_USERS, "new_keys": 1}
    assert u3.keys == SEED_USERS + 1
    # inc_4: a primary key updated: a deletion, caught through a chain of two proved links.
    query(seeded, "UPDATE users SET id = 'usr_renamed' WHERE id = 'usr_x'")
    four = take_increment(seeded, root, "inc_4", ["users"], three.watermark, previous=three.location)
    u4 = four.tables["public.users"]
    assert u4.keys_file is not None and "a key was deleted" in u4.deletions["reason"]
    # inc_5 starts again from inc_4's key list.
    users_changes(seeded, updated=["usr_renamed"])
    five = take_increment(seeded, root, "inc_5", ["users"], four.watermark, previous=four.location)
    assert five.tables["public.users"].deletions == {
        "proof": "count", "previous": "inc_4", "key_list": "inc_4", "previous_keys": SEED_USERS + 1, "new_keys": 0}
    assert restore_and_compare(seeded, pg_server, pg_bin, backup, [one, two, three, four, five],
                               "three") == [1, 0, 0, 1, 0]


def test_a_doubtful_chain_gets_the_key_list_with_the_reason(seeded, tmp_path):
    root = storage(tmp_path)
    one = take_increment(seeded, root, "inc_1", ["users"], current_watermark(seeded))
    users_changes(seeded, updated=["usr_0000001"])
    two = take_increment(seeded, root, "inc_2", ["users"], one.watermark, previous=one.location)
    assert two.tables["public.users"].deletions["proof"] == "count"
    keys_file = Path(ObjectStoragePath(one.location).path) / one.tables["public.users"].keys_file

    inserted = []

    def third(label: str, since: str | None = None, previous=two.location, insert: bool = False) -> dict:
        # An update: the count cannot decide alone, the chain is read. An insert alone: the
        # count decides (|P| + |C|), the chain's files are only looked for.
        if insert:
            inserted.append(f"usr_{label}")
        users_changes(seeded, updated=["usr_0000002"] if not insert else [], inserted=inserted[-1:] if insert else [])
        inc = take_increment(seeded, root, label, ["users"], since or two.watermark, previous=previous)
        assert inc.tables["public.users"].keys_file is not None
        assert first_fields(kept_lines(inc, "public.users", "keys")) == {f"usr_{i:07d}" for i in
                                                                        range(1, SEED_USERS + 1)} | set(inserted)
        return inc.tables["public.users"].deletions

    original = keys_file.read_bytes()
    keys_file.write_bytes(original[:-5] + bytes(5))  # garbled
    assert third("inc_g")["reason"].startswith(f"cannot read the chain: increment file {one.location}/")
    keys_file.unlink()
    missing = f"increment file {one.location}/{keys_file.name} is missing"
    assert third("inc_m")["reason"] == missing
    assert third("inc_mi", insert=True)["reason"] == missing
    keys_file.write_bytes(original)
    # The previous increment must end where this one starts.
    assert third("inc_l", since=one.watermark)["reason"] == (
        f"previous increment {two.location} ends at watermark {two.watermark}, not at since {one.watermark}")
    # An increment-v1 manifest (before the proof): no chain.
    manifest = Path(ObjectStoragePath(one.location).path) / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format": "increment-v1"}))
    assert third("inc_v1")["reason"] == f"increment {one.location} is an increment-v1 manifest"
    assert third("inc_none", previous=None)["reason"].startswith("no previous increment")


def test_a_key_whose_text_is_not_its_value_gets_the_key_list(seeded, tmp_path):
    """Under a nondeterministic collation ('Alpha' = 'ALPHA' case-insensitively) an update
    of 'Alpha' to 'ALPHA' would look like an insert and hide a deletion; numeric's text
    ('1.0' vs '1') is not its value either. The embedded server has no ICU (the only
    provider of nondeterministic collations), so the collation is a copy of "C" marked
    nondeterministic in the catalog after the rows are written: the proof reads the catalog."""
    query(seeded, 'CREATE COLLATION ci FROM "C"')
    query(seeded, "CREATE TABLE tags (name text COLLATE ci PRIMARY KEY, n int); "
                  "INSERT INTO tags VALUES ('Alpha', 1), ('beta', 2)")
    query(seeded, "CREATE TABLE prices (amount numeric PRIMARY KEY, n int); INSERT INTO prices VALUES (1.0, 1)")
    root = storage(tmp_path)
    one = take_increment(seeded, root, "inc_1", ["tags", "prices"], current_watermark(seeded))
    query(seeded, "UPDATE tags SET name = 'ALPHA', n = 3 WHERE name = 'Alpha'; INSERT INTO prices VALUES (2, 2)")
    query(seeded, "UPDATE pg_collation SET collisdeterministic = false WHERE collname = 'ci'")
    two = take_increment(seeded, root, "inc_2", ["tags", "prices"], one.watermark, previous=one.location)
    assert two.tables["public.tags"].deletions == {
        "proof": "key list", "reason": "key name has the nondeterministic collation ci: unequal text may be "
                                       "equal keys"}
    assert two.tables["public.prices"].deletions == {
        "proof": "key list", "reason": "key amount is of type pg_catalog.numeric: equal text may not mean equal keys"}
    assert first_fields(kept_lines(two, "public.tags", "keys")) == {"ALPHA", "beta"}
