"""SQL checks on a real server, issue 14: one query per SQL file per tick shared by every
check reading it (also across threads), ``total_users`` from statistics with its label,
and the guard's SQL checks on one connection a wake-up, each still in its own read-only
transaction with the soak's ``statement_timeout`` and application name."""

from __future__ import annotations

import threading
import time

import pytest

from migration_soak import sources
from migration_soak.exceptions import MeasurementError
from migration_soak.pgconn import APPLICATION_NAME
from migration_soak.plan import load_plan
from migration_soak.sources import sql as sql_source
from tests.integration.conftest import SEED_USERS, query

PLAN = load_plan("default")
METRICS = ["total_users", "executions_last_hour", "workflow_error_rate"]


@pytest.fixture
def runs(monkeypatch):
    """Count the staging queries ``run_readonly`` runs, by file text."""
    calls: list[str] = []
    real = sql_source.run_readonly

    def counting(conn_id, sql, **kw):
        calls.append(sql)
        return real(conn_id, sql, **kw)

    monkeypatch.setattr(sql_source, "run_readonly", counting)
    return calls


def add_executions(staging) -> None:
    """Eight executions in the last hour, two of them errors."""
    query(staging, "INSERT INTO execution_logs (id, \"workflowId\", status, \"createdAt\", \"startedAt\", \"endedAt\") "
                   "SELECT 'x' || g, 'wf', CASE WHEN g % 4 = 0 THEN 'ERROR' ELSE 'SUCCESS' END::\"ExecutionStatus\", now(), now(), now() "
                   "FROM generate_series(1, 8) g")


def test_one_query_per_file_per_tick_shared_by_every_check_reading_it(store, staging, runs):
    add_executions(staging)
    got = {c: sources.measure(PLAN.check(c), PLAN, None, sources.Context("run-s", store, "regular", 1))
           for c in METRICS}
    assert len(runs) == 1
    assert got["executions_last_hour"].value >= 8 and 0 < got["workflow_error_rate"].value < 1
    assert got["total_users"].evidence["query_run_by"] == "this check"
    assert got["workflow_error_rate"].evidence["query_run_by"].startswith("another check of the same tick")
    assert len({m.evidence["query_measured_at"] for m in got.values()}) == 1

    # Another tick or another phase is another reading; so is an unscheduled one (no sharing).
    sources.measure(PLAN.check("total_users"), PLAN, None, sources.Context("run-s", store, "regular", 2))
    sources.measure(PLAN.check("workflow_error_rate"), PLAN, None, sources.Context("run-s", store, "passive", 1))
    sources.measure(PLAN.check("total_users"), PLAN, None, sources.Context("run-s", store))
    assert len(runs) == 4
    # A file only one check of the phase reads is not routed through the store.
    m = sources.measure(PLAN.check("users_without_authorizer_id"), PLAN, None,
                        sources.Context("run-s", store, "regular", 1))
    assert "query_run_by" not in m.evidence and len(runs) == 5


def test_checks_of_one_tick_in_separate_threads_share_one_query(store, staging, runs):
    add_executions(staging)
    results, barrier = {}, threading.Barrier(len(METRICS))

    def read(check_id):
        barrier.wait()
        results[check_id] = sources.measure(PLAN.check(check_id), PLAN, None,
                                            sources.Context("run-t", store, "regular", 4))

    threads = [threading.Thread(target=read, args=(c,)) for c in METRICS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == sorted(METRICS) and len(runs) == 1
    assert sum(m.evidence["query_run_by"] == "this check" for m in results.values()) == 1


def test_a_failed_shared_query_records_nothing_and_the_next_reader_runs_it(store, staging, monkeypatch):
    real, calls = sql_source.run_readonly, []

    def failing_once(conn_id, sql, **kw):
        calls.append(sql)
        if len(calls) == 1:
            raise MeasurementError("query cancelled after statement_timeout 1 ms (SQLSTATE 57014)")
        return real(conn_id, sql, **kw)

    monkeypatch.setattr(sql_source, "run_readonly", failing_once)
    ctx = sources.Context("run-f", store, "regular", 1)
    with pytest.raises(MeasurementError, match="total_users: database_metrics.sql: query cancelled"):
        sources.measure(PLAN.check("total_users"), PLAN, None, ctx)
    assert sources.measure(PLAN.check("executions_last_hour"), PLAN, None, ctx).evidence["query_run_by"] == "this check"
    assert len(calls) == 2


def test_total_users_is_the_planners_estimate_once_analyzed_else_the_exact_count(staging):
    check = PLAN.check("total_users")
    assert "estimate" in check.title
    m = sources.measure(check, PLAN)
    row = dict(zip(m.evidence["columns"], m.evidence["rows"][0]))
    assert (m.value, row["total_users_estimated"]) == (SEED_USERS, False)  # never analyzed: COUNT(*)
    query(staging, "ANALYZE users")
    query(staging, "DELETE FROM users WHERE id = 'usr_0000001'")  # the estimate lags until the next ANALYZE
    m = sources.measure(check, PLAN)
    row = dict(zip(m.evidence["columns"], m.evidence["rows"][0]))
    assert row["total_users_estimated"] is True and abs(m.value - SEED_USERS) <= SEED_USERS * 0.02
    assert row["users_without_auth_id"] == 0  # stays exact


def test_one_connection_a_wake_keeps_each_readings_transaction_settings(staging):
    seen = []
    with sql_source.one_connection():
        for timeout in (1_000, 2_000):
            with sql_source.readonly_transaction("soak_staging", timeout) as cur:
                cur.execute("SELECT pg_backend_pid(), current_setting('transaction_read_only'), "
                            "current_setting('statement_timeout'), current_setting('application_name')")
                seen.append(cur.fetchone())
        with pytest.raises(MeasurementError, match="statement_timeout 50 ms"):
            sql_source.run_readonly("soak_staging", "SELECT pg_sleep(1)", statement_timeout_ms=50)
        with pytest.raises(MeasurementError, match="read-only"):
            sql_source.run_readonly("soak_staging", "CREATE TABLE t (x int)")
        _, rows = sql_source.run_readonly("soak_staging", "SELECT pg_backend_pid()")
    assert seen[0][0] == seen[1][0] == rows[0][0]  # one backend: one login
    assert [s[1:] for s in seen] == [("on", "1s", APPLICATION_NAME), ("on", "2s", APPLICATION_NAME)]
    alive = query(staging, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (rows[0][0],))
    assert alive == [(0,)] or query(staging, "SELECT pg_sleep(0.2), count(*) FROM pg_stat_activity WHERE pid = %s",
                                    (rows[0][0],))[0][1] == 0
    # outside the block, a connection per transaction as before
    pids = {sql_source.run_readonly("soak_staging", "SELECT pg_backend_pid()")[1][0][0] for _ in range(2)}
    assert len(pids) == 2


def test_a_held_connection_serves_later_blocks_and_is_replaced_when_the_server_drops_it(staging):
    """The guard trigger's connection: one login across wake-ups, idle and outside any
    transaction in between, a new login when the server has closed it; never an error."""
    held: dict = {}

    def pid() -> int:
        with sql_source.one_connection(held):
            return sql_source.run_readonly("soak_staging", "SELECT pg_backend_pid()")[1][0][0]

    first = pid()
    assert pid() == first and list(held) == ["soak_staging"]  # a second wake-up: the same backend
    state = query(staging, "SELECT state, backend_xid, backend_xmin FROM pg_stat_activity WHERE pid = %s", (first,))
    assert state == [("idle", None, None)]  # nothing held between wake-ups: no transaction, no snapshot
    query(staging, "SELECT pg_terminate_backend(%s)", (first,))
    time.sleep(0.2)
    second = pid()  # the server dropped it: a new login, the reading still taken
    assert second != first and held["soak_staging"].closed == 0
    sql_source.close_held(held)
    assert held == {}
    time.sleep(0.2)
    assert query(staging, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (second,)) == [(0,)]
