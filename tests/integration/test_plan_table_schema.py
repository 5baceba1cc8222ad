"""Every reader of the plan's table reads the same table: an unqualified name is in ``public``
(as backup, ledger, top-up and rollback read it), whatever search_path the staging role or
database sets (``ALTER ROLE/DATABASE ... SET search_path``): a ``shadow.users`` first on the
path must not be what the fingerprint, the data-loss reading, preflight or health read."""

from __future__ import annotations

import pytest

from migration_soak import runbook, sources
from migration_soak.exceptions import RollbackError
from migration_soak.fingerprint import compare, take
from migration_soak.migrate import LedgerBackend
from migration_soak.plan import load_plan
from migration_soak.sources import data_loss
from migration_soak.sources.sql import run_readonly

from .conftest import MIGRATIONS, SEED_USERS, query

PLAN = load_plan("default")
SHADOW_ROWS = 100


def staging_rows(sql: str) -> list[tuple]:
    return run_readonly(PLAN.connections.staging, sql)[1]


@pytest.fixture
def shadowed(staging):
    """``shadow.users``: the first 100 users with every column, first on the database's
    search_path (new sessions see it before ``public.users``)."""
    query(staging, "CREATE SCHEMA shadow; CREATE TABLE shadow.users (LIKE public.users INCLUDING ALL); "
                   f"INSERT INTO shadow.users SELECT * FROM public.users ORDER BY id LIMIT {SHADOW_ROWS}")
    query(staging, f'ALTER DATABASE "{staging.database}" SET search_path = shadow, public')
    assert query(staging, "SELECT count(*) FROM users")[0][0] == SHADOW_ROWS  # the path does find shadow first
    return staging


def test_the_fingerprint_reads_public_users_not_the_search_paths(shadowed):
    fp = take(shadowed, "users", "id", ["email"])
    assert fp.rows == SEED_USERS
    query(shadowed, "DELETE FROM public.users WHERE id = 'usr_0000042'")
    loss = compare(fp, shadowed)
    assert (loss.rows_before, loss.rows_lost) == (SEED_USERS, 1)


def test_the_data_loss_check_sees_a_row_lost_from_the_migrated_table(shadowed, store):
    check = PLAN.check("data_loss")
    done = data_loss.record_baseline(PLAN, "run-1", store)
    assert done["data_loss"]["rows"] == SEED_USERS
    LedgerBackend(shadowed, MIGRATIONS).deploy()  # drops public.users' columns (search_path = public)
    query(shadowed, "DELETE FROM public.users WHERE id = 'usr_0000042'")
    m = sources.measure(check, PLAN, None, sources.Context("run-1", store))
    assert m.value == 1 and m.evidence["rows_lost"] == 1


def test_preflight_reads_the_columns_of_public_users(shadowed):
    query(shadowed, 'ALTER TABLE shadow.users DROP COLUMN "clientId"')
    runbook.fingerprint_columns(PLAN, staging_rows)  # public.users has them all


def test_health_and_dropped_already_read_public_users(shadowed, store):
    LedgerBackend(shadowed, MIGRATIONS).deploy()
    assert sorted(runbook.dropped_already(PLAN, staging_rows)) == ["emailVerified", "passwordHash"]
    with pytest.raises(RollbackError, match="'columns_back': \\[\\]"):
        runbook.post_rollback_health(PLAN, "h1", store, measure=lambda check: 1.0, query=staging_rows)


def test_the_plans_sql_checks_read_public_users(shadowed, store):
    """The default plan's check files name ``public.users`` (the seed's queries read the
    one ``users``; information_schema ignores the search path and saw every schema's)."""
    ctx = sources.Context("run-1", store)
    query(shadowed, "UPDATE shadow.users SET \"authorizerId\" = NULL WHERE id = 'usr_0000007'")
    LedgerBackend(shadowed, MIGRATIONS).deploy()  # public.users loses the columns, shadow.users keeps them
    values = {cid: sources.measure(PLAN.check(cid), PLAN, None, ctx).value
              for cid in ("users_without_authorizer_id", "deprecated_columns_absent")}
    assert values == {"users_without_authorizer_id": 0, "deprecated_columns_absent": 0}
    metrics = sources.measure(PLAN.check(next(c.id for c in PLAN.checks if getattr(c.source, "column", None)
                                              == "total_users")), PLAN, None, ctx)
    assert metrics.value == SEED_USERS


def test_authorizer_sync_samples_public_users(shadowed):
    from migration_soak.sources.authorizer_sync import sample_ids

    query(shadowed, "UPDATE shadow.users SET \"authorizerId\" = 'shadow-' || id")
    ids, _ = sample_ids(PLAN.connections.staging, 50, "users", "authorizerId")
    assert len(ids) == 50 and not [i for i in ids if i.startswith("shadow-")]


def test_the_plans_sql_checks_read_public_execution_logs_and_clients(shadowed, store):
    """The default plan's other tables are ``public``'s too: a ``shadow.execution_logs`` of
    failed runs and a ``shadow.clients`` without ``name`` first on the database's search_path
    must change no reading (before: a 100 % error rate, and the query plan check an error)."""
    ctx = sources.Context("run-1", store)
    query(shadowed, 'INSERT INTO public.execution_logs (id, "userId", "workflowId", status, "startedAt", "endedAt", '
                    '"createdAt") SELECT \'ex_\' || g, \'usr_0000001\', \'wf\', \'SUCCESS\', now() - interval '
                    '\'2 s\', now(), now() FROM generate_series(1, 20) g')
    query(shadowed, "CREATE TABLE shadow.execution_logs (LIKE public.execution_logs INCLUDING ALL); "
                    "CREATE TABLE shadow.clients (id text PRIMARY KEY); "
                    "INSERT INTO shadow.execution_logs SELECT * FROM public.execution_logs; "
                    "UPDATE shadow.execution_logs SET status = 'ERROR'")
    values = {cid: sources.measure(PLAN.check(cid), PLAN, None, ctx).value
              for cid in ("recent_executions", "executions_last_hour", "workflow_error_rate")}
    assert values == {"recent_executions": 20, "executions_last_hour": 20, "workflow_error_rate": 0.0}
    explain = PLAN.check(next(c.id for c in PLAN.checks if getattr(c.source, "sql", None) == "auth_query_plan.sql"))
    assert sources.measure(explain, PLAN, None, ctx).value >= 0  # raised before: shadow.clients has no "name"
