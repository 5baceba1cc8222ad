"""A retried rollback (issue 4, item 5): ``restore_columns`` and ``mark_rolled_back`` are
safe to run again, also after a run that died between its two transactions."""

from __future__ import annotations

import pytest

from migration_soak.migrate import verify_applied
from migration_soak.rollback import SCRATCH_SCHEMA, restore_columns
from tests.integration.conftest import DOWN_SQL, DROP, USERS_COLUMNS, query, snapshot
from tests.integration.test_rollback import migrated  # noqa: F401  (fixture)

DROPPED = ("passwordHash", "emailVerified")


@pytest.mark.timeout(120)
def test_task_retried_after_rollback_is_idempotent(migrated, pg_bin):  # noqa: F811
    """The plain "second run gives the same data" case is asserted in
    ``tests/integration/test_rollback.py::test_rollback_restores_every_value_byte_for_byte``;
    here the first attempt died after staging (its scratch table committed, with stale
    rows), then the task is retried twice, and the ledger step is retried too."""
    target, backup, backend, before, _ = migrated
    query(target, f"""CREATE SCHEMA {SCRATCH_SCHEMA};
                      CREATE TABLE {SCRATCH_SCHEMA}.users_backup (id text, "passwordHash" text, "emailVerified" text);
                      INSERT INTO {SCRATCH_SCHEMA}.users_backup VALUES ('usr_0000001', 'stale', 'false')""")

    first = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    after_first = snapshot(target)
    second = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert snapshot(target) == after_first
    assert first.rows_updated == first.rows_matched and first.mismatches == 0
    assert (second.rows_updated, second.values_restored, second.mismatches) == (0, 0, 0)  # nothing left to do
    assert (second.rows_matched, second.rows_at_backup) == (first.rows_matched, first.rows_at_backup)
    assert after_first["usr_0000001"] == before["usr_0000001"]  # the stale staged row was not used
    assert all(after_first[k] == v for k, v in before.items() if k in after_first)
    assert query(target, "SELECT to_regnamespace(%s)", (SCRATCH_SCHEMA,)) == [(None,)]

    assert backend.mark_rolled_back(DROP) == 1
    assert backend.mark_rolled_back(DROP) == 0
    assert {s.name: s for s in backend.status()}[DROP].state == "pending"
    # The soak can be run again from the same backup: deploy, then verify.
    assert backend.deploy().applied == (DROP,)
    verify_applied(target, DROP, "users", DROPPED)
