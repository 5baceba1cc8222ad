"""A second plan through the engine (issue 10 item 2, "Engine independent of the default plan").

``plans/accounts/plan.yaml`` drops ``accounts.legacy_token`` and ``accounts.legacy_scopes``
(keyed on ``account_id``, a ``bigint``) with its own migration folder and down SQL, on the
ledger backend. The runbook's functions the DAG's tasks call (``airflow/tasks.py``) run it
on the real server, from preflight to post-rollback health, and every dropped value is
compared with the one before the migration, byte for byte. Nothing here names ``users``:
a name of the default plan leaking into the engine fails this test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from migration_soak import runbook
from migration_soak.backup_storage import fetched, storage_root, take_kept_backup
from migration_soak.exceptions import MigrationError
from migration_soak.migrate import LedgerBackend, verify_applied
from migration_soak.plan import load_plan
from migration_soak.sources.sql import run_readonly

from .conftest import query

PLAN_FILE = Path(__file__).parent / "plans" / "accounts" / "plan.yaml"
ACCOUNTS = 3000
NEW_ACCOUNTS = 25
DELETED = (7, 8, 9)

INIT = "20260101000000_init_accounts"
# Set-based seed: tokens with tabs, newlines, backslashes, quotes and non-ASCII (COPY's
# escapes), NULLs, and arrays with quoted and NULL elements.
SEED_SQL = """
INSERT INTO accounts
SELECT g, 'owner-' || g,
       CASE WHEN g %% 10 = 0 THEN NULL
            ELSE 'tok' || g || E'\\t' || md5(g::text) || CASE g %% 3 WHEN 0 THEN E'\\n\\\\x' WHEN 1 THEN ' "q" ñ' ELSE '' END
       END,
       CASE WHEN g %% 7 = 0 THEN NULL
            ELSE ARRAY['read', 'write ' || g, CASE WHEN g %% 2 = 0 THEN NULL ELSE 'a,"b"' END]
       END
FROM generate_series(1, %(n)s) g;
"""


def accounts(target) -> dict[int, tuple]:
    """``{account_id: (legacy_token as UTF-8 bytes, legacy_scopes)}`` of every account."""
    rows = query(target, "SELECT account_id, convert_to(legacy_token, 'UTF8'), legacy_scopes FROM accounts")
    return {r[0]: (bytes(r[1]) if r[1] is not None else None, r[2]) for r in rows}


class EventStore:
    """The store methods the runbook's steps use, in memory (the store itself is
    ``test_store_schema``'s subject; here the engine's names are)."""

    def __init__(self):
        self.recorded: list[tuple[str, dict]] = []

    def add_event(self, run_id, kind, payload):
        json.dumps(payload)  # the real store keeps JSON
        self.recorded.append((kind, payload))

    def events(self, run_id, kind=None):
        return [{"kind": k, "payload": p} for k, p in self.recorded if kind in (None, k)]

    def payload(self, kind: str) -> dict:
        return [p for k, p in self.recorded if k == kind][-1]


@pytest.fixture
def plan():
    return load_plan(PLAN_FILE)


@pytest.fixture
def staging(plan, target, tmp_path, monkeypatch):
    """The test's database with the plan's init migration applied (by the ledger, as
    Prisma would have) and 3000 accounts, as the plan's ``soak_staging``."""
    init_only = tmp_path / "init_only"
    shutil.copytree(plan.path(plan.migration.migrations_dir), init_only,
                    ignore=lambda folder, names: [n for n in names if n.startswith("2") and n != INIT])
    LedgerBackend(target, init_only).deploy()
    query(target, SEED_SQL, {"n": ACCOUNTS})
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING", json.dumps({
        "conn_type": "postgres", "host": target.host, "port": target.port, "login": target.user,
        "password": target.password, "schema": target.database}))
    return target


def test_the_second_plan_takes_its_names_from_its_own_file(plan):
    m = plan.migration
    assert (m.table, m.key, m.dropped_columns) == ("accounts", "account_id", ["legacy_token", "legacy_scopes"])
    assert [r.id for r in plan.preflight.require] == ["accounts_without_owner"]
    assert plan.report.requests == []  # no request counts: the report headlines none
    assert "users" not in runbook.columns_present_sql(m.table, m.dropped_columns)


def test_backup_migrate_rollback_restores_every_value_of_the_second_plan(plan, staging, pg_bin, tmp_path):
    m, run, store = plan.migration, "accounts-run-1", EventStore()
    migrations = runbook.backend(plan, staging)

    def q(sql: str) -> list[tuple]:
        return run_readonly(plan.connections.staging, sql)[1]

    # preflight: the plan's own requirement, read on staging, stops the run before anything
    query(staging, "UPDATE accounts SET owner = NULL WHERE account_id = 1")
    with pytest.raises(MigrationError, match=r"^preflight\.require\[accounts_without_owner\]: 1, expected == 0 "
                                             r"\(every account has an owner in the token service\)"):
        runbook.preflight(plan, run, store, direct=staging, direct_field="connections.staging",
                          migrations=migrations, query=q, health_status=lambda conn_id: 200)
    query(staging, "UPDATE accounts SET owner = 'owner-1' WHERE account_id = 1")
    out = runbook.preflight(plan, run, store, direct=staging, direct_field="connections.staging",
                            migrations=migrations, query=q, health_status=lambda conn_id: 200)
    assert out == {"migrations": {INIT: "applied", m.name: "pending"}}

    before = accounts(staging)
    assert len(before) == ACCOUNTS and sum(1 for t, _ in before.values() if t is None) == ACCOUNTS // 10

    # backup (kept and fetched back as the DAG's backup and restore tasks do), rehearsal, deploy, verify
    record = take_kept_backup(staging, storage_root((tmp_path / "kept").as_uri()) / plan.environment, pg_bin,
                              "pre_accounts", required_tables=runbook.backup_required_tables(plan))
    assert "public.accounts" in record.tables
    rehearsed = runbook.rehearse(plan, run, store, fetch=lambda: fetched(record), staging=staging, pg_bin_dir=pg_bin,
                                 backend_for=lambda t: runbook.backend(plan, t), server=None)
    assert rehearsed.status == "passed" and rehearsed.mismatches == 0
    # a row whose two values are both NULL already holds what the down SQL re-adds: not written
    written = [k for k, (token, scopes) in before.items() if token is not None or scopes is not None]
    assert ACCOUNTS - len(written) == ACCOUNTS // 70  # tokens NULL every 10th, scopes every 7th
    assert rehearsed.rows_at_backup == ACCOUNTS and rehearsed.values_restored == 2 * len(written)
    runbook.deploy(run, store, migrations)
    verify_applied(staging, m.name, m.table, tuple(m.dropped_columns))
    assert q(runbook.columns_present_sql(m.table, m.dropped_columns)) == []

    # life goes on after the migration: new accounts, deleted ones
    query(staging, "INSERT INTO accounts (account_id, owner) SELECT g, 'late-' || g FROM generate_series(%s, %s) g",
          (ACCOUNTS + 1, ACCOUNTS + NEW_ACCOUNTS))
    query(staging, "DELETE FROM accounts WHERE account_id = ANY(%s)", (list(DELETED),))

    # rollback: restore (the plan's table, key and columns), ledger, health
    restored = runbook.restore(plan, run, store, fetch=lambda: fetched(record), direct=staging, pg_bin_dir=pg_bin)
    kept = ACCOUNTS - len(DELETED)
    values = 2 * len([k for k in written if k not in DELETED])
    assert restored["table"] == "public.accounts" and restored["columns"] == ["legacy_token", "legacy_scopes"]
    assert (restored["rows_at_backup"], restored["rows_matched"], restored["rows_not_in_backup"]) == (
        ACCOUNTS, kept, NEW_ACCOUNTS)
    assert restored["values_restored"] == values and restored["mismatches"] == 0
    assert store.payload("restore")["text"].startswith(
        f"restored {values} values for {kept} of {ACCOUNTS} rows of accounts present at backup time; 0 mismatches")
    states = runbook.mark_rolled_back(plan, run, store, migrations, staging)
    assert states[INIT] == "applied" and states[m.name] in runbook.APPLICABLE  # pending again
    health = runbook.post_rollback_health(plan, run, store, measure=lambda check: 1.0, query=q)
    assert health == {"gateway_health": 1.0, "columns_back": ["legacy_scopes", "legacy_token"]}

    # value by value: every account present at backup time has its token and scopes back
    after = accounts(staging)
    assert {k: v for k, v in after.items() if k <= ACCOUNTS} == {k: v for k, v in before.items() if k not in DELETED}
    assert all(after[k] == (None, None) for k in range(ACCOUNTS + 1, ACCOUNTS + NEW_ACCOUNTS + 1))
    definitions = query(staging, """SELECT column_name, data_type, is_nullable FROM information_schema.columns
                                    WHERE table_name = 'accounts' ORDER BY ordinal_position""")
    assert [d[0] for d in definitions] == ["account_id", "owner", "legacy_token", "legacy_scopes"]
    assert [d[1] for d in definitions[2:]] == ["text", "ARRAY"]

    # the migration is pending again: a second soak can start from here
    assert runbook.applicable(plan, {s.name: s.state for s in migrations.status()}) == [m.name]
    # lint ran at both preflights; the first stopped at its requirement
    assert [k for k, _ in store.recorded] == ["lint", "lint", "preflight", "rehearsal", "migrate", "restore", "ledger",
                                              "health"]
