"""Check queries through a real PgBouncer in transaction mode leave nothing behind (issue 9, item 2).

The embedded PostgreSQL 18 server sits behind Debian's PgBouncer (``pgbouncer`` fixture:
transaction pooling, one server connection per pool), so the application's next pooled
client gets the very server connection the soak's check query used. That client must
see the server's defaults (``default_transaction_read_only`` off, ``statement_timeout``
0), no advisory lock, and be able to ``UPDATE``. A plan SQL file that ends the soak's
transaction is refused before it runs, at plan load and again by ``run_readonly``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from migration_soak import plan as plan_module
from migration_soak import sources
from migration_soak.exceptions import MeasurementError, PlanError
from migration_soak.plan import PLANS_DIR, load_plan, parse_plan
from migration_soak.sources import sql as sql_source
from tests.integration.conftest import query

PLAN = load_plan("default")
#: Written by the plan files below if they ever ran: the test reads it back unchanged.
CLIENT_NAME = ("Client 1",)


@pytest.fixture
def pooled(seeded, pgbouncer, monkeypatch):
    """The seeded database through the pooler, as the plan's ``soak_staging`` connection."""
    target = pgbouncer.target(seeded.database)
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING", json.dumps({
        "conn_type": "postgres", "host": target.host, "port": target.port, "login": target.user,
        "password": target.password, "schema": target.database}))
    return target


def _server_pid(pooled) -> int:
    conn = pooled.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            return cur.fetchone()[0]
    finally:
        conn.rollback()
        conn.close()


def _next_app_client(pooled) -> dict:
    """What the application's next pooled client finds on its server connection, and
    whether its ``UPDATE`` commits (``update``: rows changed, or the error's first line)."""
    conn = pooled.connect(application_name="app")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), current_setting('default_transaction_read_only'), "
                        "current_setting('transaction_read_only'), current_setting('statement_timeout')")
            pid, default_ro, ro, timeout = cur.fetchone()
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            locks = cur.fetchone()[0]
            try:
                cur.execute('UPDATE users SET "updatedAt" = "updatedAt" WHERE id = %s', ("usr_0000001",))
                update = cur.rowcount
                conn.commit()
            except Exception as exc:  # noqa: BLE001 - the leak this test is about
                update = str(exc).strip().splitlines()[0]
                conn.rollback()
        return {"pid": pid, "default_transaction_read_only": default_ro, "transaction_read_only": ro,
                "statement_timeout": timeout, "advisory_locks": locks, "update": update}
    finally:
        conn.close()


def _clean(pid: int) -> dict:
    return {"pid": pid, "default_transaction_read_only": "off", "transaction_read_only": "off",
            "statement_timeout": "0", "advisory_locks": 0, "update": 1}


def _sql_check(tmp_path, monkeypatch, text: str, name: str):
    """The plan's ``users_without_authorizer_id`` check reading ``text`` from file ``name``."""
    monkeypatch.setattr(sql_source, "SQL_DIR", tmp_path)
    (tmp_path / name).write_text(text)
    check = PLAN.check("users_without_authorizer_id")
    return check.model_copy(update={"source": check.source.model_copy(update={"sql": name})})


@pytest.mark.timeout(120)
def test_check_queries_through_the_pooler_leave_nothing(seeded, pooled):
    pid = _server_pid(pooled)
    assert _next_app_client(pooled) == _clean(pid)
    # A SQL function (out of the parser's sight) that takes a session-level advisory lock,
    # once returning and once failing after it: a rollback releases neither.
    query(seeded, """CREATE FUNCTION soak_hidden_lock() RETURNS int LANGUAGE sql
                     AS 'SELECT pg_advisory_lock(4242); SELECT 1';
                     CREATE FUNCTION soak_hidden_lock_then_fail() RETURNS int LANGUAGE plpgsql
                     AS $$ BEGIN PERFORM pg_advisory_lock(4343); RETURN 1 / 0; END $$;
                     CREATE FUNCTION app_exec(q text) RETURNS int LANGUAGE plpgsql
                     AS $$ BEGIN EXECUTE q; RETURN 1; END $$""")

    # Every SQL check of the default plan, through the pooler, on the one server connection.
    measured = {}
    for check in PLAN.checks:
        if check.source.kind == "sql":
            try:
                measured[check.id] = sources.measure(check, PLAN).value
            except MeasurementError as exc:  # a table the seed lacks: still a query that ran
                measured[check.id] = str(exc)
    assert measured["users_without_authorizer_id"] == 0, measured
    # A refused write, a cancelled query and the hidden locks, each through the pooler.
    with pytest.raises(MeasurementError, match="read-only transaction"):
        sql_source.run_readonly("soak_staging", "UPDATE users SET email = email")
    with pytest.raises(MeasurementError, match="statement_timeout 200 ms"):
        sql_source.run_readonly("soak_staging", "SELECT pg_sleep(3)", statement_timeout_ms=200)
    for function, key in (("soak_hidden_lock", "4242"), ("soak_hidden_lock_then_fail", "4343")):
        with pytest.raises(MeasurementError, match=rf"session-level advisory lock\(s\) \['{key}'\].*released"):
            sql_source.run_readonly("soak_staging", f"SELECT {function}()")

    # A session-wide SET through a function the guard cannot see: the reading is refused
    # and the rollback takes the setting back off the pooled server connection.
    for setting in ("statement_timeout = 0", "application_name = x"):
        with pytest.raises(MeasurementError, match=r"statement 1 of 2 .* changed (statement_timeout|application_name)"):
            sql_source.run_readonly("soak_staging", f"SELECT app_exec('SET {setting}'); SELECT 1")
    # One the soak does not rely on is rolled back with the rest.
    sql_source.run_readonly("soak_staging", "SELECT app_exec('SET default_transaction_read_only = on')")

    # The application's next client gets the same server connection, with nothing on it.
    assert _next_app_client(pooled) == _clean(pid)
    assert query(seeded, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == [(0,)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("text", [
    # The case: COMMIT made the session-wide read-only default stick to the server
    # connection; the application's next UPDATE through the pooler failed.
    "SELECT count(*) AS users_without_authorizer_id FROM users;\nCOMMIT;\n",
    # ...and one that would write: after its COMMIT it turns the default off again.
    "SELECT 0 AS users_without_authorizer_id;\nEND;\nSET default_transaction_read_only = off;\nCOMMIT;\n"
    "UPDATE clients SET name = 'written by a check' WHERE id = 'cli_1';\n",
], ids=["commit", "commit-then-write"])
def test_a_plan_sql_file_that_commits_is_refused_before_it_runs(seeded, pooled, tmp_path, monkeypatch, text):
    pid = _server_pid(pooled)
    check = _sql_check(tmp_path, monkeypatch, text, "commits.sql")
    with pytest.raises(MeasurementError) as err:
        sources.measure(check, PLAN)
    # Nothing ran: the row the file would write is unchanged; nothing leaked.
    assert query(seeded, "SELECT name FROM clients WHERE id = 'cli_1'") == [CLIENT_NAME]
    assert _next_app_client(pooled) == _clean(pid)
    message = str(err.value)
    assert message.startswith("users_without_authorizer_id: commits.sql: query refused before it ran: "), message
    assert "statement 2 of" in message and "(line 2: " in message and "transaction control" in message, message
    assert pooled.password not in message


def test_plan_load_refuses_a_sql_file_that_commits(tmp_path, monkeypatch):
    for path in plan_module.SQL_DIR.glob("*.sql"):
        shutil.copy2(path, tmp_path / path.name)
    (tmp_path / "commits.sql").write_text("-- a check that ends the soak's transaction\n"
                                          "SELECT 0 AS n;\nCOMMIT;\n")
    monkeypatch.setattr(plan_module, "SQL_DIR", tmp_path)
    raw = yaml.safe_load((PLANS_DIR / "default.yaml").read_text())
    parse_plan(raw, "default.yaml")  # the plan's own files pass
    for check in raw["checks"]:
        if check["id"] == "users_without_authorizer_id":
            check["source"]["sql"] = "commits.sql"
    with pytest.raises(PlanError) as err:
        parse_plan(raw, "default.yaml")
    message = str(err.value)
    assert "checks[users_without_authorizer_id]" in message and "include/sql/commits.sql" in message, message
    assert "statement 2 of 2 (line 3: COMMIT)" in message and "transaction control" in message, message
