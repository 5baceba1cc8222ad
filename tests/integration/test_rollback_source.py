"""The rollback restores a backup only into the database it was taken from
(``BackupRecord.source``, identity.py): a backup of another database would give the table
that database's passwordHash / emailVerified values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from migration_soak import runbook
from migration_soak.backup import take_backup
from migration_soak.backup_storage import fetched
from migration_soak.exceptions import RollbackError
from migration_soak.migrate import LedgerBackend
from tests.conftest import recreate_database

from .conftest import MIGRATIONS, SEED_USERS, query, seed_users


def test_the_rollback_refuses_a_backup_of_another_database(seeded, pg_server, init_only_dir, store, pg_bin,
                                                           tmp_path):
    from migration_soak.plan import load_plan

    plan = load_plan("default").model_copy(update={"backup_location": str(tmp_path / "kept")})
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre_r1")
    assert backup.source and backup.source.endswith("/" + seeded.database)
    store.add_event("r1", "backup", runbook.backup_event(backup))

    other = replace(seeded, database=seeded.database + "_other")  # the direct connection re-pointed
    recreate_database(pg_server, other.database)
    LedgerBackend(other, init_only_dir).deploy()
    seed_users(other, 1, 10)
    query(other, """UPDATE users SET "passwordHash" = 'other-db-' || id""")
    LedgerBackend(other, MIGRATIONS).deploy()  # its columns dropped

    with pytest.raises(RollbackError) as caught:
        runbook.restore(plan, "r1", store, fetch=lambda: fetched(backup), direct=other, pg_bin_dir=pg_bin)
    message = str(caught.value)
    assert "pre_r1.dump" in message and repr(seeded.database) in message and repr(other.database) in message
    assert "nothing restored" in message and pg_server.password not in message
    # nothing touched: the columns are still gone, no scratch schema
    assert query(other, """SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'
                           AND column_name IN ('passwordHash', 'emailVerified')""") == [(0,)]
    assert query(other, "SELECT count(*) FROM pg_namespace WHERE nspname = 'soak_rollback'") == [(0,)]
    assert store.events("r1", "restore_failed")[-1]["payload"]["text"] == message[:2000]

    LedgerBackend(seeded, MIGRATIONS).deploy()  # the database it came from is restored
    runbook.restore(plan, "r1", store, fetch=lambda: fetched(backup), direct=seeded, pg_bin_dir=pg_bin)
    assert query(seeded, "SELECT count(*) FROM users WHERE \"passwordHash\" IS NOT NULL") == [(SEED_USERS,)]
