"""Faults while measuring (issue 4, item 5): a plan query that writes or runs too long,
EXPLAIN ANALYZE side effects, Slack and the metrics backend down."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from migration_soak import clock, notify, observe, sources
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import load_plan
from migration_soak.sources import openmetrics
from migration_soak.sources import sql as sql_source
from migration_soak.store import Store
from tests.conftest import recreate_database
from tests.integration.conftest import query

PLAN = load_plan("default")


def _counts(target):
    return query(target, "SELECT (SELECT count(*) FROM clients), (SELECT count(*) FROM users), "
                         "(SELECT count(*) FROM pg_class WHERE relname LIKE 'fault%')")


def _sql_check(tmp_path, monkeypatch, text: str, measure: str = "cell"):
    """The plan's ``users_without_authorizer_id`` check reading ``text`` from a file of its own."""
    monkeypatch.setattr(sql_source, "SQL_DIR", tmp_path)
    name = f"fault_{abs(hash(text))}.sql"
    (tmp_path / name).write_text(text)
    check = PLAN.check("users_without_authorizer_id")
    return check.model_copy(update={"source": check.source.model_copy(update={"sql": name, "measure": measure})})


@pytest.mark.timeout(60)
def test_check_queries_are_read_only_with_statement_timeout(seeded, tmp_path, monkeypatch, as_staging_connection):
    conn_id = as_staging_connection(seeded)
    before = _counts(seeded)

    # A plan query that writes is refused, and becomes a MeasurementError naming the check.
    check = _sql_check(tmp_path, monkeypatch, "INSERT INTO clients (id, name, \"updatedAt\") VALUES ('x', 'x', now()) RETURNING 1")
    with pytest.raises(MeasurementError) as err:
        sources.measure(check, PLAN)
    text = str(err.value)
    assert text.startswith("users_without_authorizer_id: fault_") and "read-only" in text, text
    assert "cannot execute INSERT in a read-only transaction" in text and "25006" in text

    # Smuggled transaction control does not open a writable transaction after it.
    for smuggled in ("COMMIT; CREATE TABLE fault_t (i int)",
                     "COMMIT; BEGIN; DELETE FROM clients; COMMIT",
                     "SELECT 1; COMMIT; UPDATE users SET email = 'x' WHERE id = 'usr_0000001'"):
        with pytest.raises(MeasurementError, match="read-only transaction"):
            sql_source.run_readonly(conn_id, smuggled)
    assert _counts(seeded) == before
    assert query(seeded, "SELECT email FROM users WHERE id = 'usr_0000001'") == [("user1@example.test",)]

    # A query longer than the statement timeout is cancelled by the server, on time...
    started = time.monotonic()
    with pytest.raises(MeasurementError, match=r"cancelled after statement_timeout 300 ms.*57014"):
        sql_source.run_readonly(conn_id, "SELECT pg_sleep(5)", statement_timeout_ms=300)
    assert time.monotonic() - started < 2
    # ...also after a COMMIT inside the file (the timeout is the session's, not LOCAL).
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="statement_timeout"):
        sql_source.run_readonly(conn_id, "COMMIT; SELECT pg_sleep(5)", statement_timeout_ms=300)
    assert time.monotonic() - started < 2

    # The module constant is the default a check uses (overridable for tests), and the
    # cancelled check is recorded as an error observation, never a pass.
    monkeypatch.setattr(sql_source, "STATEMENT_TIMEOUT_MS", 200)
    slow = _sql_check(tmp_path, monkeypatch, "SELECT pg_sleep(5)::text::int AS n")
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="statement_timeout 200 ms"):
        sources.measure(slow, PLAN)
    assert time.monotonic() - started < 2
    with pytest.raises(ValueError, match="positive"):
        sql_source.run_readonly(conn_id, "SELECT 1", statement_timeout_ms=0)

    # A well-behaved query still measures, and no soak session is left open.
    assert sql_source.run_readonly(conn_id, "SELECT count(*) FROM users")[1] == [(before[0][1],)]
    assert query(seeded, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'migration-soak' "
                         "AND datname = current_database() AND pid <> pg_backend_pid()") == [(0,)]


@pytest.mark.timeout(60)
def test_explain_analyze_runs_in_a_rolled_back_read_only_transaction(seeded, tmp_path, monkeypatch,
                                                                      as_staging_connection):
    conn_id = as_staging_connection(seeded)
    query(seeded, """CREATE TABLE audit_fault (n int);
                     CREATE FUNCTION fault_touch() RETURNS int LANGUAGE plpgsql AS
                     $$ BEGIN INSERT INTO audit_fault VALUES (1); RETURN 1; END $$;
                     CREATE SEQUENCE fault_seq""")
    before = _counts(seeded)

    # EXPLAIN ANALYZE executes its statement: a write is refused, directly or inside a function.
    for statement in ("EXPLAIN ANALYZE DELETE FROM users",
                      "EXPLAIN ANALYZE UPDATE users SET email = email",
                      "EXPLAIN ANALYZE SELECT fault_touch()",
                      "EXPLAIN ANALYZE SELECT nextval('fault_seq')"):
        with pytest.raises(MeasurementError, match="read-only transaction"):
            sql_source.run_readonly(conn_id, statement)
    # PostgreSQL 18 runs EXPLAIN ANALYZE CREATE TABLE AS even read-only: the rollback
    # removes the table; a file that COMMITs it is reported (it ended our transaction).
    sql_source.run_readonly(conn_id, "EXPLAIN ANALYZE CREATE TABLE fault_ctas AS SELECT 1")
    assert query(seeded, "SELECT to_regclass('fault_ctas')") == [(None,)]
    with pytest.raises(MeasurementError, match="ended the soak's read-only transaction"):
        sql_source.run_readonly(conn_id, "EXPLAIN ANALYZE SELECT 1; COMMIT")

    # The seed's query 3 measures, through the check's own file, and leaves no trace:
    # no row, no table, no transaction id consumed (a read-only transaction gets none).
    xid_before = query(seeded, "SELECT pg_current_xact_id()::text::bigint")[0][0]
    check = PLAN.check("auth_query_time")
    m = sources.measure(check, PLAN)
    assert m.value >= 0 and "Execution Time" in m.evidence["plan"]
    scan = _sql_check(tmp_path, monkeypatch, "EXPLAIN ANALYZE SELECT * FROM users WHERE email LIKE 'user1%'",
                      measure="explain_ms")
    assert sources.measure(scan, PLAN).value >= 0
    assert _counts(seeded) == before
    assert query(seeded, "SELECT count(*) FROM audit_fault") == [(0,)]
    xid_after = query(seeded, "SELECT pg_current_xact_id()::text::bigint")[0][0]
    assert xid_after == xid_before + 1  # only the probe's own transaction in between


@pytest.mark.timeout(60)
def test_a_function_out_of_the_guards_list_cannot_switch_the_timeout_off_for_the_rest_of_the_file(
        seeded, tmp_path, monkeypatch, as_staging_connection):
    """sql_guard refuses the built-in functions that run SQL from text by name (a list); an
    application's own function that does the same (here ``app_exec``: PL/pgSQL ``EXECUTE``)
    is out of the parser's sight. Whatever runs it, no statement of the file may run
    without the soak's statement_timeout, and a file that changed the soak's settings gives
    no reading: an error naming the check, the statement and the setting."""
    conn_id = as_staging_connection(seeded)
    query(seeded, "CREATE FUNCTION app_exec(q text) RETURNS int LANGUAGE plpgsql AS $$ BEGIN EXECUTE q; RETURN 1; END $$")

    # On main the second statement slept its 2 s (timeout 300 ms) and the file gave a reading.
    started = time.monotonic()
    with pytest.raises(MeasurementError) as err:
        sql_source.run_readonly(conn_id, "SELECT app_exec('SET statement_timeout = 0');\nSELECT pg_sleep(2)",
                                statement_timeout_ms=300)
    assert time.monotonic() - started < 1.5
    text = str(err.value)
    assert "statement 1 of 2 (line 1: SELECT app_exec(" in text and "statement_timeout" in text, text
    assert "'300ms'" in text and "'0'" in text, text
    # In the same statement, the timer armed when the statement started still fires.
    with pytest.raises(MeasurementError, match="cancelled after statement_timeout 300 ms"):
        sql_source.run_readonly(conn_id, "SELECT app_exec('SET statement_timeout = 0'), pg_sleep(2)",
                                statement_timeout_ms=300)
    # The last statement changing a setting (here the application name, which keeps the
    # soak's queries out of the slow-query checks) is no reading either.
    with pytest.raises(MeasurementError, match=r"statement 1 of 1 .*application_name 'migration-soak' -> 'app'"):
        sql_source.run_readonly(conn_id, "SELECT app_exec('SET application_name = app')")
    # Through sources.measure: an error observation naming the check and its file.
    check = _sql_check(tmp_path, monkeypatch, "SELECT app_exec('SET LOCAL statement_timeout = 0');\n"
                                              "SELECT pg_sleep(2)::text::int AS users_without_authorizer_id")
    with pytest.raises(MeasurementError, match=r"^users_without_authorizer_id: fault_.*statement 1 of 2"):
        sources.measure(check, PLAN)
    # Several statements still give the last result-bearing statement's rows.
    assert sql_source.run_readonly(conn_id, "SET LOCAL work_mem = '8MB';\nSELECT current_setting('work_mem') AS w") \
        == (["w"], [("8MB",)])


def _slack_conn(monkeypatch, port: int) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_SLACK", json.dumps(
        {"conn_type": "slackwebhook", "host": f"127.0.0.1:{port}", "schema": "http", "password": "T0/B0/secret-token"}))
    return "soak_slack"


@pytest.mark.timeout(60)
def test_slack_unreachable_soak_goes_on(closed_port, silent_server, monkeypatch, caplog):
    # Refused at once (slack_sdk retries a refused connection once, after ~0.5-1 s).
    conn_id = _slack_conn(monkeypatch, closed_port)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        assert notify.send("soak verdict: GO", conn_id, timeout_s=1) is False
    refused_s = time.monotonic() - started
    warnings = [r for r in caplog.records if r.name == "migration_soak.notify" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "soak_slack" in warnings[0].getMessage()
    assert "Going to retry" in caplog.text  # slack_sdk's own line, with the URL's path masked
    assert "secret-token" not in caplog.text and "T0/B0" not in caplog.text
    assert refused_s < 5

    # Accepts the connection and never answers: bounded by the timeout (one retry).
    caplog.clear()
    conn_id = _slack_conn(monkeypatch, silent_server.port)
    monkeypatch.setattr(notify, "TIMEOUT_S", 1)
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG):
        assert notify.send("soak verdict: GO", conn_id) is False
    silent_s = time.monotonic() - started
    print(f"\nslack refused: {refused_s:.2f} s; slack silent (timeout 1 s): {silent_s:.2f} s")
    assert silent_s < 2 * 1 + 2.5
    assert "not sent" in caplog.text and "secret-token" not in caplog.text
    assert "Sending a request" in caplog.text  # the DEBUG line that carries the URL, masked

    # No connection at all: also False, never raises.
    assert notify.send("x", "no_such_connection_id", timeout_s=1) is False


@pytest.fixture
def store(pg_server, fresh_db):
    name = f"{fresh_db[:50]}_store"
    recreate_database(pg_server, name)
    s = Store(sa.create_engine(sa.URL.create("postgresql+psycopg2", username="postgres", password=pg_server.password,
                                             host=pg_server.host, port=pg_server.port, database=name)))
    s.create_schema()
    yield s
    s.engine.dispose()


@pytest.mark.timeout(60)
def test_metrics_backend_down_is_an_error_observation(store, closed_port, silent_server, monkeypatch):
    """Closed port and a backend that never answers: ``scrape`` raises MeasurementError
    within ``TIMEOUT_S``; ``observe.take`` records an ``error`` observation with the
    reason (never a value, never a pass). Observing a whole due tick through
    ``observe_due`` is ``tests/integration/test_observe.py::
    test_an_unreachable_metrics_endpoint_is_an_error_observation``."""
    monkeypatch.setattr(openmetrics, "TIMEOUT_S", 1)
    monkeypatch.setattr(openmetrics, "_PAGES", {})
    tick = clock.Tick(phase="intensive", index=0, offset=timedelta(0), at=datetime.now(timezone.utc))
    for port, label in ((closed_port, "closed"), (silent_server.port, "silent")):
        monkeypatch.setenv("AIRFLOW_CONN_SOAK_GATEWAY", json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}))
        started = time.monotonic()
        with pytest.raises(MeasurementError, match="scrape of /metrics failed"):
            openmetrics.scrape("soak_gateway", "/metrics")
        assert time.monotonic() - started < 3, label
        for check_id in ("auth_error_rate", "login_p95"):
            obs = observe.take(PLAN, check_id, "intensive", tick, f"run-{label}", store)
            assert obs.status == "error" and obs.value is None, (label, check_id, obs)
            assert "scrape of /metrics failed" in obs.evidence["error"]
            assert store.record(obs) is True
        assert time.monotonic() - started < 8, label
