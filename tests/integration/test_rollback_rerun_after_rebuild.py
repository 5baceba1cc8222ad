"""a retried restore task (a worker lost after the rebuild's swap committed, before
the restore event) must complete: the swapped-in table's emailVerified has DEFAULT false
but no attmissingval, and _column_info now refuses it."""

from __future__ import annotations

import pytest

from migration_soak.backup import take_backup
from migration_soak.migrate import LedgerBackend
from migration_soak.rollback import restore_by_method

from .conftest import DOWN_SQL, MIGRATIONS, USERS_COLUMNS, snapshot


@pytest.mark.parametrize("second", ["copy", "rebuild"])
def test_restore_rerun_after_a_rebuild_swap(seeded, pg_bin, tmp_path, second):
    before = snapshot(seeded)
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    LedgerBackend(seeded, MIGRATIONS).deploy()
    restore_by_method("rebuild", seeded, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert snapshot(seeded) == before
    again = restore_by_method(second, seeded, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)  # the retry
    assert again.mismatches == 0 and snapshot(seeded) == before
