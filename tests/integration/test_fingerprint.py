"""Data-loss detection on the real server: exact rows and values lost while the application
keeps inserting and updating, the real DROP COLUMN migration loses nothing that stays, a
small JSON fingerprint, and the ``fingerprint`` source reading it from the store."""

from __future__ import annotations

import json
import time

import pytest

from migration_soak import sources
from migration_soak.exceptions import MeasurementError
from migration_soak.fingerprint import HASHED_TYPES, Fingerprint, _check_hash, compare, compare_keys, key_digest, take
from migration_soak.plan import load_plan, parse_plan
from migration_soak.sources import data_loss as fingerprint_source

from .conftest import DROP, MIGRATIONS, SEED_USERS, query, seed_users

PRESERVED = ["id", "email", "authorizerId", "clientId", "createdAt"]


def uid(g: int) -> str:
    return f"usr_{g:07d}"


def key_hash(target, key: str) -> int:
    return query(target, "SELECT hashtextextended(%s::text, 0)", (key,))[0][0]


def test_deleted_rows_are_counted_exactly_while_users_are_inserted(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    assert fp.rows == SEED_USERS and fp.non_null["clientId"] == SEED_USERS - SEED_USERS // 4

    gone = [uid(7), uid(2500), uid(4999)]
    query(seeded, "DELETE FROM users WHERE id = ANY(%s)", (gone,))
    seed_users(seeded, SEED_USERS + 1, SEED_USERS + 50)  # 50 new users, created after the fingerprint
    loss = compare(fp, seeded)

    assert loss.exact
    assert (loss.rows_lost, loss.values_lost, loss.rows_changed, loss.rows_appeared) == (3, 0, 0, 0)
    assert loss.rows_before == SEED_USERS and loss.rows_now == SEED_USERS - 3 + 50 and loss.rows_since == 50
    assert sorted(loss.lost_key_hashes) == sorted(key_hash(seeded, k) for k in gone)
    assert 1 <= loss.buckets_differing <= 3
    assert loss.lost == 3


def test_a_late_commit_with_an_old_creation_time_does_not_hide_a_deletion(seeded):
    """A row inserted after the fingerprint with an older ``createdAt`` (a transaction that
    committed late, a client clock) falls among the old rows; a bucket count would take it
    for the deleted one. The decoded difference tells them apart."""
    fp = take(seeded, "users", "id", PRESERVED)
    query(seeded, "DELETE FROM users WHERE id = %s", (uid(10),))
    query(seeded, """INSERT INTO users (id, email, "authorizerId", "createdAt", "updatedAt")
                     VALUES ('usr_late', 'late@example.test', 'auth-late', '2024-12-31', now())""")
    loss = compare(fp, seeded)
    assert loss.exact and (loss.rows_lost, loss.rows_appeared, loss.rows_since) == (1, 1, 0)


def test_values_nulled_are_lost_values_and_updates_are_only_changes(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    # Two users lose their clientId (non-null -> null): lost values.
    nulled = [uid(1), uid(2)]
    assert all(r[0] is not None for r in query(seeded, 'SELECT "clientId" FROM users WHERE id = ANY(%s)', (nulled,)))
    query(seeded, 'UPDATE users SET "clientId" = NULL WHERE id = ANY(%s)', (nulled,))
    # Legitimate updates: a new email, a new client, a client given to a user without one.
    query(seeded, "UPDATE users SET email = 'renamed-' || email WHERE id = ANY(%s)", ([uid(3), uid(5)],))
    query(seeded, """UPDATE users SET "clientId" = 'cli_1' WHERE id = %s""", (uid(6),))
    query(seeded, """UPDATE users SET "clientId" = 'cli_2' WHERE id = %s""", (uid(8),))  # was NULL (8 % 4 == 0)
    # Non-preserved columns are not watched at all.
    query(seeded, """UPDATE users SET "passwordHash" = NULL, "updatedAt" = now() WHERE id = %s""", (uid(9),))
    loss = compare(fp, seeded)

    assert loss.exact
    assert (loss.rows_lost, loss.values_lost, loss.rows_changed) == (0, 2, 6)
    assert loss.columns["clientId"] == {"non_null_before": 3750, "non_null_now": 3749, "values_lost": 2}
    assert loss.columns["email"]["values_lost"] == 0
    assert set(loss.changed_keys) == {uid(g) for g in (1, 2, 3, 5, 6, 8)}
    assert set(loss.changed_keys[:2]) == set(nulled)  # the rows that lost values come first
    assert loss.lost == 2


def test_the_drop_column_migration_loses_nothing_that_stays(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    watched_too = take(seeded, "users", "id", PRESERVED + ["passwordHash"])
    query(seeded, (MIGRATIONS / DROP / "migration.sql").read_text())
    assert query(seeded, """SELECT count(*) FROM information_schema.columns
                            WHERE table_name = 'users' AND column_name IN ('passwordHash', 'emailVerified')""") == [(0,)]

    loss = compare(fp, seeded)
    assert loss.exact and loss.lost == 0 and loss.rows_changed == 0 and loss.buckets_differing == 0
    assert loss.missing_columns == []

    # Had "passwordHash" been a column to keep, the same migration is a loss of all its values.
    dropped = compare(watched_too, seeded)
    assert dropped.missing_columns == ["passwordHash"]
    assert dropped.rows_lost == 0 and dropped.values_lost == SEED_USERS
    assert not dropped.exact  # 5000 changed rows: beyond the exact decoding, the buckets' bound is exact here


def test_a_mass_deletion_is_reported_from_the_buckets(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    query(seeded, "DELETE FROM users WHERE id <= %s", (uid(2000),))
    loss = compare(fp, seeded)
    assert not loss.exact and loss.rows_lost == 2000 and loss.values_lost == 0


def test_a_dropped_table_loses_every_row(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    query(seeded, "DROP TABLE users CASCADE")
    loss = compare(fp, seeded)
    assert loss.rows_lost == SEED_USERS and loss.rows_now == 0


def test_an_empty_table_fingerprints_to_nothing_and_loses_nothing_later(seeded):
    """The scan has no total grouping set: its total row is folded from the bucket groups,
    and must still come back (zero rows, no creation time) when the table is empty."""
    query(seeded, "DELETE FROM execution_logs")
    query(seeded, "DELETE FROM users")
    fp = take(seeded, "users", "id", PRESERVED)
    assert (fp.rows, fp.created_max, fp.non_null["email"]) == (0, None, 0) and fp.taken_at
    seed_users(seeded, 1, 20)
    loss = compare(fp, seeded)
    # No creation time to cut at: every row counts as old, so the 20 are "appeared", not lost.
    assert loss.exact and (loss.rows_before, loss.rows_now, loss.rows_lost, loss.rows_appeared) == (0, 20, 0, 20)
    assert loss.lost == 0


def test_unknown_table_or_column_is_a_measurement_error(seeded):
    with pytest.raises(MeasurementError, match="does not exist"):
        take(seeded, "accounts", "id", PRESERVED)
    with pytest.raises(MeasurementError, match="no column 'nickname'"):
        take(seeded, "users", "id", ["email", "nickname"])


def test_the_fingerprint_is_small_json(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    text = json.dumps(fp.to_dict())
    assert len(text) < 100_000
    assert Fingerprint.from_dict(json.loads(text)) == fp
    with pytest.raises(MeasurementError, match="not a fingerprint"):
        Fingerprint.from_dict({"format": "iblt-v1", "table": "users"})


def test_the_check_hash_in_python_is_the_servers_hashint8extended(seeded):
    """Peeling recomputes each cell's check hash in Python: it must be PostgreSQL's own."""
    import random
    rng = random.Random(7)
    values = [rng.getrandbits(64) - (1 << 63) for _ in range(500)] + [0, -1, 1, 2**63 - 1, -2**63, 2**32]
    rows = query(seeded, "SELECT v, hashint8extended(v, 2) FROM unnest(%s::bigint[]) v", (values,))
    assert [(v, _check_hash(v)) for v, _ in rows] == rows


def test_a_column_without_an_extended_hash_is_hashed_through_its_text(seeded):
    """``json`` has no hash function (``hash_record_extended`` would fail on it): it is
    hashed as text, and its changes and nulls are still seen."""
    query(seeded, 'ALTER TABLE users ADD COLUMN prefs json, ADD COLUMN tags text[]')
    query(seeded, """UPDATE users SET prefs = json_build_object('n', id), tags = ARRAY[email]""")
    assert "json" not in HASHED_TYPES and "text[]" not in HASHED_TYPES
    fp = take(seeded, "users", "id", ["email", "prefs", "tags"])
    assert fp.non_null == {"email": SEED_USERS, "prefs": SEED_USERS, "tags": SEED_USERS}
    query(seeded, "UPDATE users SET prefs = NULL WHERE id = %s", (uid(5),))
    query(seeded, """UPDATE users SET prefs = '{"n": "changed"}' WHERE id = %s""", (uid(6),))
    query(seeded, "UPDATE users SET tags = ARRAY['other'] WHERE id = %s", (uid(7),))
    loss = compare(fp, seeded)
    assert loss.exact and (loss.rows_lost, loss.values_lost, loss.rows_changed) == (0, 1, 3)
    assert loss.columns["prefs"]["values_lost"] == 1 and loss.changed_keys[0] == uid(5)


def test_take_and_compare_on_100000_users(seeded, capsys):
    seed_users(seeded, SEED_USERS + 1, 100_000)
    query(seeded, "ANALYZE users")
    started = time.perf_counter()
    fp = take(seeded, "users", "id", PRESERVED)
    took = time.perf_counter() - started
    query(seeded, "DELETE FROM users WHERE id = ANY(%s)", ([uid(1), uid(50_000), uid(99_999)],))
    seed_users(seeded, 100_001, 100_100)
    started = time.perf_counter()
    loss = compare(fp, seeded)
    compared = time.perf_counter() - started
    size = len(json.dumps(fp.to_dict()))
    with capsys.disabled():
        print(f"\nfingerprint of 100000 users: take {took:.3f} s, compare {compared:.3f} s, {size} bytes of JSON")
    assert fp.rows == 100_000 and loss.exact and loss.rows_lost == 3 and loss.rows_since == 100
    assert took < 5 and compared < 5


# --- the source, through the store --------------------------------------------------------


def plan_with_data_loss_check():
    data = load_plan("default").model_dump(mode="json", exclude_defaults=False)
    data["checks"] = [c for c in data["checks"] if c["id"] != "data_loss"] + [{
        "id": "data_loss", "title": "Rows or values lost since the pre-migration fingerprint", "unit": "count",
        "source": {"kind": "fingerprint", "table": "users", "key": "id", "columns": PRESERVED},
        "expect": {"op": "==", "value": 0}, "no_go": {"op": ">", "value": 0},
        "rule": "Objetivo 'Pérdida de datos'; NO-GO 'Cualquier pérdida de datos detectada'",
    }]
    return parse_plan(data, "<test>")


def test_the_source_compares_with_the_recorded_baseline(staging, store):
    plan = plan_with_data_loss_check()
    check = plan.check("data_loss")
    ctx = sources.Context("run-1", store)

    with pytest.raises(MeasurementError, match="no pre-migration fingerprint recorded"):
        sources.measure(check, plan, None, ctx)

    done = fingerprint_source.record_baseline(plan, "run-1", store)
    assert done["data_loss"]["rows"] == SEED_USERS and done["data_loss"]["recorded"]
    event = store.events("run-1", "fingerprint")[0]["payload"]
    assert event["check_id"] == "data_loss" and event["created_column"] == "createdAt" and "5000 rows" in event["text"]

    query(staging, (MIGRATIONS / DROP / "migration.sql").read_text())
    m = sources.measure(check, plan, None, ctx)
    assert m.value == 0 and m.evidence["exact"] and m.evidence["rows_before"] == SEED_USERS

    query(staging, "DELETE FROM users WHERE id = %s", (uid(42),))
    query(staging, 'UPDATE users SET "clientId" = NULL WHERE id = %s', (uid(43),))
    m = sources.measure(check, plan, None, ctx)
    assert m.value == 2 and (m.evidence["rows_lost"], m.evidence["values_lost"]) == (1, 1)
    assert len(json.dumps(m.evidence)) < 2000

    # A retried baseline step keeps the pre-migration fingerprint.
    again = fingerprint_source.record_baseline(plan, "run-1", store)
    assert not again["data_loss"]["recorded"] and len(store.events("run-1", "fingerprint")) == 1
    assert sources.measure(check, plan, None, ctx).value == 2

    with pytest.raises(MeasurementError, match="run context"):
        sources.measure(check, plan, None, None)


# --- the cheap reading between exact compares ----------------------------------------------


def test_the_key_reading_proves_rows_present_not_values_intact(seeded):
    fp = take(seeded, "users", "id", PRESERVED)
    assert key_digest(fp) == query(seeded, "SELECT bit_xor(hashtextextended(id::text, 0)) FROM users")[0][0]
    seed_users(seeded, SEED_USERS + 1, SEED_USERS + 20)  # created after the fingerprint: not its rows
    keys = compare_keys(fp, seeded)
    assert keys.intact and (keys.rows_before, keys.rows_now) == (SEED_USERS, SEED_USERS)

    # A nulled value is invisible to it: that is what the exact compare is for.
    query(seeded, 'UPDATE users SET "clientId" = NULL WHERE id = %s AND "clientId" IS NOT NULL', (uid(2),))
    assert compare_keys(fp, seeded).intact and compare(fp, seeded).values_lost == 1

    # A deleted row replaced by a late insert with an old creation time: same count, another digest.
    query(seeded, "DELETE FROM users WHERE id = %s", (uid(10),))
    query(seeded, """INSERT INTO users (id, email, "authorizerId", "createdAt", "updatedAt")
                     VALUES ('usr_late', 'late@example.test', 'auth-late', '2024-12-31', now())""")
    keys = compare_keys(fp, seeded)
    assert keys.rows_now == SEED_USERS and keys.digest_now != keys.digest_before and not keys.intact

    query(seeded, "DELETE FROM users WHERE id = 'usr_late'")
    keys = compare_keys(fp, seeded)
    assert keys.rows_now == SEED_USERS - 1 and not keys.intact and not keys.to_dict()["keys_intact"]


def test_the_source_reads_keys_between_exact_readings(staging, store):
    """Hour 0 and the soak's end compare every value; the other ticks the keys,
    going on to the exact compare at once when the keys differ."""
    plan = plan_with_data_loss_check()
    check = plan.check("data_loss")
    fingerprint_source.record_baseline(plan, "run-k", store)
    last_regular = len(plan.phase("regular").tick_offsets())

    def reading(phase, tick):
        return sources.measure(check, plan, None, sources.Context("run-k", store, phase, tick))

    assert reading("hour0", 0).evidence["reading"] == "values"
    m = reading("regular", 1)
    assert (m.value, m.evidence["reading"], m.evidence["keys_intact"]) == (0, "keys", True)
    assert "values not read" in m.evidence["proves"]

    query(staging, 'UPDATE users SET "clientId" = NULL WHERE id = %s AND "clientId" IS NOT NULL', (uid(5),))
    assert reading("regular", 2).value == 0  # keys only: the nulled value is not seen here...
    assert reading("regular", last_regular).evidence["reading"] == "keys"  # nor at the phase's end...
    m = reading("passive", len(plan.phase("passive").tick_offsets()))  # ...but at the soak's end
    assert (m.value, m.evidence["reading"], m.evidence["values_lost"]) == (1, "values", 1)
    assert "no preserved value nulled" in m.evidence["proves"]

    query(staging, "DELETE FROM users WHERE id = %s", (uid(6),))
    m = reading("regular", 3)  # keys differ: the same reading compares exactly
    assert m.evidence["reading"] == "values" and m.evidence["keys_reading"]["rows_now"] == SEED_USERS - 1
    assert (m.value, m.evidence["rows_lost"], m.evidence["values_lost"]) == (2, 1, 1)
    assert sources.measure(check, plan, None, sources.Context("run-k", store)).evidence["reading"] == "values"
