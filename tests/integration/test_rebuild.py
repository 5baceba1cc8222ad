"""rebuild.py on the real server: the rollback by rebuild and swap (issue 14, item 4).

Each test runs ``rebuild_columns`` on the seeded, migrated database of ``test_rollback``'s
``migrated`` fixture (5000 users backed up, the columns dropped, then 50 sign-ups, 3
deletions and a profile change)."""

from __future__ import annotations

import threading
import time

import pytest

from migration_soak import rebuild
from migration_soak.exceptions import RollbackError
from migration_soak.rebuild import CAPTURE_TRIGGER, rebuild_columns

from .conftest import DOWN_SQL, SEED_USERS, USERS_COLUMNS, query, snapshot
from .test_lock_safety import LockSampler
from .test_rollback import NEW_USERS, _column_defs, migrated  # noqa: F401  (fixture)

DELETED = {"usr_0000007", "usr_0000008", "usr_0000009"}


def _state(target):
    """What must survive a failed rebuild untouched, and what a good one must leave."""
    return {
        "relid": query(target, "SELECT 'public.users'::regclass::oid")[0][0],
        "triggers": query(target, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.users'::regclass "
                                  "AND NOT tgisinternal"),
        "new": query(target, "SELECT to_regclass('public.users_soak_new'), to_regclass('public.users_soak_old')"),
        "scratch": query(target, "SELECT to_regnamespace('soak_rollback')"),
    }


def _indexes(target):
    return query(target, """SELECT c.relname, pg_get_indexdef(i.indexrelid), con.conname, con.contype
                            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                            LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u')
                            WHERE i.indrelid = 'public.users'::regclass ORDER BY 1""")


def _foreign_keys(target):
    return query(target, """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
                            FROM pg_constraint WHERE contype = 'f'
                              AND (conrelid = 'public.users'::regclass OR confrelid = 'public.users'::regclass)
                            ORDER BY 1, 2""")


# ------------------------------------------------------------------- (a) every value


def test_rebuild_restores_every_value_and_carries_the_table_over(migrated, pg_bin):
    target, backup, backend, before, definitions = migrated
    indexes, fks = _indexes(target), _foreign_keys(target)
    relid = _state(target)["relid"]
    columns_before = query(target, """SELECT attname FROM pg_attribute WHERE attrelid = 'public.users'::regclass
                                      AND attnum > 0 AND NOT attisdropped ORDER BY attnum""")
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    print(f"\nrebuild of {SEED_USERS} users: {result.to_dict()}")

    assert result.method == "rebuild" and result.table == "public.users"
    assert result.rows_at_backup == SEED_USERS and result.rows_matched == SEED_USERS - 3
    assert result.rows_not_in_backup == NEW_USERS
    assert result.rows_updated == SEED_USERS - 3 and result.values_restored == 2 * (SEED_USERS - 3)
    assert result.mismatches == 0 and result.values_kept == 0
    assert 0 < result.swap_s == result.ddl_s < 1.0
    assert [a.step for a in result.lock_attempts if a.outcome == "ok"][:3] == ["down_sql", "capture trigger", "swap"]

    after = snapshot(target)
    for user_id, value in before.items():
        if user_id in DELETED:
            assert user_id not in after
        else:
            assert after[user_id] == value, user_id
    late = {k: v for k, v in after.items() if k not in before}
    assert len(late) == NEW_USERS and set(late.values()) == {(None, False)}
    assert query(target, "SELECT email FROM users WHERE id = 'usr_0000010'") == [("changed@example.test",)]

    # The same table by every name the application uses, a new one underneath.
    assert _column_defs(target) == definitions
    assert query(target, """SELECT attname FROM pg_attribute WHERE attrelid = 'public.users'::regclass
                            AND attnum > 0 AND NOT attisdropped ORDER BY attnum""")[:len(columns_before)] == columns_before
    assert _indexes(target) == indexes
    assert _foreign_keys(target) == fks and all(row[3] for row in fks)
    state = _state(target)
    assert state["relid"] != relid
    assert state == {"relid": state["relid"], "triggers": [], "new": [(None, None)], "scratch": [(None,)]}

    # The rolled-back schema is the one Prisma's next deploy expects: it drops the columns again.
    backend.mark_rolled_back(backend_name := "20251202020032_update_user_schema_final")
    assert backend.deploy().applied == (backend_name,)
