"""The partial-migration NO-GO (runbook.dropped_already) must be able to roll back.
With passwordHash dropped and emailVerified still there (its DEFAULT false from the init
CREATE TABLE: atthasmissing false), the rollback refuses emailVerified."""

from __future__ import annotations

import pytest

from migration_soak.backup import take_backup
from migration_soak.exceptions import MigrationError
from migration_soak.migrate import LedgerBackend
from migration_soak.rollback import restore_by_method

from .conftest import DOWN_SQL, USERS_COLUMNS, snapshot
from .test_partial_migration import two_migrations


@pytest.mark.parametrize("method", ["copy", "rebuild"])
def test_a_partial_migration_rolls_back(seeded, pg_bin, tmp_path, method):
    before = snapshot(seeded)
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    with pytest.raises(MigrationError):
        LedgerBackend(seeded, two_migrations(tmp_path)).deploy()
    result = restore_by_method(method, seeded, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0
    assert snapshot(seeded) == before
