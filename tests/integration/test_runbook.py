"""The runbook's steps that read PostgreSQL (runbook.py) on the embedded server: preflight
with the real pooler probe, ledger, squawk and query; post-rollback health's column query;
the ledger marked rolled back."""

from __future__ import annotations

import pytest
import yaml

from migration_soak import runbook
from migration_soak.exceptions import MigrationError, RollbackError
from migration_soak.migrate import LedgerBackend
from migration_soak.plan import PLANS_DIR, Plan, load_plan, parse_plan
from migration_soak.sources.sql import run_readonly

from .conftest import DROP, INIT, MIGRATIONS, query

PLAN = load_plan("default")  # soak_staging is the seeded database (the staging fixture)


def staging_rows(sql: str) -> list[tuple]:
    return run_readonly(PLAN.connections.staging, sql)[1]


@pytest.fixture(autouse=True)
def readable_logs(tmp_path, monkeypatch):
    """The default plan's logs checks read these files (preflight checks they can)."""
    log = tmp_path / "app.log"
    log.write_text("ready\n")
    monkeypatch.setenv("SOAK_APP_LOG", str(log))
    monkeypatch.setenv("SOAK_DB_LOG", str(log))


def preflight(store, target, run_id: str) -> dict:
    return runbook.preflight(PLAN, run_id, store, direct=target, direct_field="connections.staging_direct",
                             migrations=runbook.backend(PLAN, target), query=staging_rows,
                             health_status=lambda conn_id: 200)


def test_preflight_passes_on_the_seeded_database_then_refuses_a_user_without_authorizer_id(store, staging):
    assert preflight(store, staging, "p1") == {"migrations": {INIT: "applied", DROP: "pending"}}
    assert [e["kind"] for e in store.events("p1")] == ["lint", "preflight"]
    query(staging, """INSERT INTO users (id, email, "passwordHash", "updatedAt")
                      VALUES ('usr_x', 'x@example.test', 'h', now())""")
    with pytest.raises(MigrationError, match=r"^preflight\.require\[users_without_authorizer_id\]: 1, expected == 0 "
                                             r"\(Pre-requisito: todos los usuarios tienen authorizerId\): the migration "
                                             r"must not start$"):
        preflight(store, staging, "p2")
    assert "preflight" not in [e["kind"] for e in store.events("p2")]


def test_preflight_refuses_an_applied_migration(store, staging):
    LedgerBackend(staging, MIGRATIONS).deploy()
    with pytest.raises(MigrationError, match=f"^migration '{DROP}' is applied, not pending: nothing to soak$"):
        preflight(store, staging, "p3")


def test_the_ledger_reads_pending_again_and_health_sees_the_columns(store, staging):
    LedgerBackend(staging, MIGRATIONS).deploy()
    with pytest.raises(RollbackError, match=r"^post-rollback health failed: \{'gateway_health': 1.0, "
                                            r"'authorizer_health': 1.0, 'columns_back': \[\]\}$"):
        runbook.post_rollback_health(PLAN, "h1", store, measure=lambda check: 1.0, query=staging_rows)
    states = runbook.mark_rolled_back(PLAN, "h1", store, runbook.backend(PLAN, staging), staging)
    assert states == {INIT: "applied", DROP: "pending"}  # its finished row removed, as Prisma reads it
    ledger = store.events("h1", "ledger")[-1]["payload"]
    assert ledger["text"] == f"{DROP} is pending again" and len(ledger["removed_rows"]) == 1
    query(staging, 'ALTER TABLE users ADD COLUMN "passwordHash" text, ADD COLUMN "emailVerified" boolean')
    out = runbook.post_rollback_health(PLAN, "h1", store, measure=lambda check: 1.0, query=staging_rows)
    assert out["columns_back"] == ["emailVerified", "passwordHash"]
    assert [e["payload"]["ok"] for e in store.events("h1", "health")] == [False, True]


def test_preflight_refuses_a_fingerprint_column_the_table_lacks_before_the_backup(store, staging):
    """Found by the fingerprint task only, after the backup; preflight reads the catalog."""
    def plan_with(**source) -> Plan:
        raw = yaml.safe_load((PLANS_DIR / "default.yaml").read_text())
        next(c for c in raw["checks"] if c["id"] == "data_loss")["source"].update(source)
        return parse_plan(raw, "p.yaml")

    columns = [*PLAN.check("data_loss").source.columns, "emial"]
    with pytest.raises(MigrationError, match=r"^checks\[data_loss\]\.source: users has no column 'emial': the "
                                             r"migration must not start$"):
        runbook.fingerprint_columns(plan_with(columns=columns), staging_rows)
    with pytest.raises(MigrationError, match=r"^checks\[data_loss\]\.source\.table: 'public\.usres' does not exist"):
        runbook.fingerprint_columns(plan_with(table="public.usres"), staging_rows)
    runbook.fingerprint_columns(PLAN, staging_rows)  # the default plan's columns are there
