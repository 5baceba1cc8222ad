"""The restore's proof is the backup's text: a value counts as given back only when it reads
back as the dump wrote it (rollback._differs), not when it equals the backup's value cast
to the re-added type (the cast truncates ``varchar(n)`` and rounds numerics and timestamps).
Both methods, copy and rebuild."""

from __future__ import annotations

import pytest

from migration_soak.backup import take_backup
from migration_soak.exceptions import RollbackError
from migration_soak.migrate import LedgerBackend
from migration_soak.rollback import restore_by_method

from .conftest import DOWN_SQL, MIGRATIONS, USERS_COLUMNS, query, snapshot

METHODS = ["copy", "rebuild"]


@pytest.mark.parametrize("method", METHODS)
def test_a_narrower_readded_type_fails_the_restore_naming_the_column_and_count(seeded, pg_bin, tmp_path, method):
    """Reviewer's reproduction (test_a_narrower_readded_type_truncates_values_and_still_reports_0_mismatches):
    with ``VARCHAR(12)`` 3900 of 5000 hashes were truncated and the result said 0 mismatches.
    Now nothing truncated is kept: the copy refuses before its first batch, the rebuild
    before its build; the error counts the values and names the column and
    type, never a value."""
    before = snapshot(seeded)
    longer = sum(1 for h, _ in before.values() if len(h.decode()) > 12)
    assert 0 < longer < len(before)
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    LedgerBackend(seeded, MIGRATIONS).deploy()
    relid = query(seeded, "SELECT 'public.users'::regclass::oid")[0][0]
    down = tmp_path / "down.sql"
    down.write_text(DOWN_SQL.read_text().replace('"passwordHash" TEXT', '"passwordHash" VARCHAR(12)'))
    with pytest.raises(RollbackError) as caught:
        restore_by_method(method, seeded, backup, pg_bin, down_sql=down, **USERS_COLUMNS)
    text = str(caught.value)
    assert f"passwordHash: {longer} values (re-added as character varying(12))" in text, text
    assert "emailVerified:" not in text  # its values read back whole
    if method == "copy":
        assert "refused before the copy (the columns stay re-added, nothing copied)" in text
    else:
        assert "refused before the build (the columns stay re-added, empty)" in text
        assert query(seeded, "SELECT 'public.users'::regclass::oid")[0][0] == relid
        assert query(seeded, "SELECT to_regclass('public.users_soak_new'), to_regclass('public.users_soak_old')") \
            == [(None, None)]
    assert not [h for h, _ in before.values() if h.decode() in text]
    # Nothing truncated was committed: every restored column is as re-added (NULL).
    assert query(seeded, 'SELECT count(*) FROM users WHERE "passwordHash" IS NOT NULL') == [(0,)]
    assert query(seeded, "SELECT to_regnamespace('soak_rollback')") == [(None,)]


def _small_table(target, tmp_path, pg_bin, values="('a', 'abcdef', 'n'), ('b', 'xy', 'n'), ('c', NULL, 'n')"):
    """``items(id, v text)``: by default one value longer than 3 characters, one shorter, one
    NULL; backed up, then ``v`` dropped (the migration); the down SQL re-adds ``VARCHAR(3)``."""
    query(target, "CREATE TABLE items (id text PRIMARY KEY, v text, note text)")
    query(target, f"INSERT INTO items VALUES {values}")
    backup = take_backup(target, tmp_path / "b", pg_bin, "pre", required_tables=("public.items",))
    query(target, "ALTER TABLE items DROP COLUMN v")
    down = tmp_path / "down.sql"
    down.write_text('ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "v" VARCHAR(3);\n')
    return backup, down


@pytest.mark.parametrize("method", METHODS)
def test_a_value_an_earlier_restore_truncated_fails_the_verification(target, pg_bin, tmp_path, method):
    """A rerun over a table an earlier restore filled through a lossy cast (``'abcdef'`` kept
    as ``'abc'``): that value is no longer the re-added one, so no batch writes it; the
    final verification finds that it equals the backup's value only as cast, and fails."""
    backup, down = _small_table(target, tmp_path, pg_bin)
    query(target, down.read_text())
    query(target, "UPDATE items SET v = 'abcdef'::varchar(3) WHERE id = 'a'")  # what the old restore left
    with pytest.raises(RollbackError, match=r"verification of public\.items failed: 1 rows hold values that do not "
                                            r"read back as the backup's \(v: 1 value \(re-added as character "
                                            r"varying\(3\)\)\)"):
        restore_by_method(method, target, backup, pg_bin, down_sql=down, table="items", columns=("v",))
    assert sorted(query(target, "SELECT id, v FROM items")) == [("a", "abc"), ("b", "xy"), ("c", None)]


@pytest.mark.parametrize("method", METHODS)
def test_values_whose_text_depends_on_the_session_verify_in_another_time_zone(target, pg_bin, tmp_path, method):
    """No false alarm: pg_dump writes timestamptz in its session's TimeZone and bytea in its
    bytea_output; the restore's session may have others. Equal values still verify, and
    floats, numerics, intervals, dates and jsonb read back as the dump wrote them."""
    query(target, """CREATE TABLE kinds (id int PRIMARY KEY, ts timestamptz, f float8, r real, n numeric,
                                         iv interval, d date, j jsonb, bin bytea, note text)""")
    query(target, """INSERT INTO kinds SELECT g, timestamptz '2025-03-30 00:59:59.123456+00' + g * interval '7 min',
                            0.1 + 0.2 * g, (1.0 / 3 * g)::real, 1.50 * g, g * interval '1 day 3 hours 0.25 sec',
                            date '2025-01-01' + g, jsonb_build_object('g', g, 'x', 1.10), '\\x00ff'::bytea || int4send(g),
                            'n'
                     FROM generate_series(1, 300) g""")
    query(target, "INSERT INTO kinds (id, note) VALUES (0, 'all null')")
    columns = ("ts", "f", "r", "n", "iv", "d", "j", "bin")
    read = "SELECT id, ts, f, r, n::text, iv, d, j, bin FROM kinds ORDER BY id"
    before = query(target, read)
    database = target.database.replace('"', '""')
    query(target, f"""ALTER DATABASE "{database}" SET timezone = 'UTC'""")
    backup = take_backup(target, tmp_path / "b", pg_bin, "pre", required_tables=("public.kinds",))
    query(target, "ALTER TABLE kinds " + ", ".join(f"DROP COLUMN {c}" for c in columns))
    query(target, f"""ALTER DATABASE "{database}" SET timezone = 'Asia/Kathmandu'""")
    query(target, f"""ALTER DATABASE "{database}" SET bytea_output = 'escape'""")
    down = tmp_path / "down.sql"
    down.write_text("ALTER TABLE kinds ADD COLUMN IF NOT EXISTS ts timestamptz, ADD COLUMN IF NOT EXISTS f float8, "
                    "ADD COLUMN IF NOT EXISTS r real, ADD COLUMN IF NOT EXISTS n numeric, "
                    "ADD COLUMN IF NOT EXISTS iv interval, ADD COLUMN IF NOT EXISTS d date, "
                    "ADD COLUMN IF NOT EXISTS j jsonb, ADD COLUMN IF NOT EXISTS bin bytea;\n")
    result = restore_by_method(method, target, backup, pg_bin, down_sql=down, table="kinds", columns=columns)
    assert result.mismatches == 0 and result.values_restored == 300 * len(columns)
    assert query(target, read) == before


def test_the_copy_refuses_a_lossy_type_before_its_first_batch(target, pg_bin, tmp_path):
    """The copy found a lossy cast per batch: with the one value too long for ``VARCHAR(3)``
    in the last batch, the batches before it stayed committed (``'xy'`` restored) and the
    table was left half restored. Now the copy checks every backup value against the
    re-added type before its first batch: nothing copied, the error names column and count."""
    backup, down = _small_table(target, tmp_path, pg_bin, "('a', 'xy', 'n'), ('b', NULL, 'n'), ('c', 'abcdef', 'n')")
    with pytest.raises(RollbackError, match=r"refused before the copy .*nothing copied.*\(v: 1 value \(re-added as "
                                            r"character varying\(3\)\)\)") as caught:
        restore_by_method("copy", target, backup, pg_bin, down_sql=down, table="items", columns=("v",),
                          batch_size=1)
    assert "abcdef" not in str(caught.value)
    assert sorted(query(target, "SELECT id, v FROM items")) == [("a", None), ("b", None), ("c", None)]
