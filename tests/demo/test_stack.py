"""The local staging stack: seed, ledger, scenarios across the drop, metrics, CLI.

Stacks here share the session's PostgreSQL (``pg_server``), each on a database of its own
(``fresh_db``), with a few thousand users; only ``test_default_seed_has_100k_users`` seeds
the full 100 000.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from demo import seed
from demo.app_config import AppConfig
from demo.app_log import close_app_log, open_app_log
from demo.gateway import Gateway
from demo.load import LoadGenerator
from demo.postgres import free_port
from demo.server import ServerThread
from demo.stack import Stack, airflow_connections
from tests.conftest import recreate_database

REPO = Path(__file__).resolve().parents[2]
DROP_SQL = (seed.MIGRATIONS_DIR / seed.DROP_MIGRATION / "migration.sql").read_text()
DOWN_SQL = (REPO / "include/sql/rollback/20251202020032_update_user_schema_final.down.sql")


def _connect(db: dict):
    conn = psycopg2.connect(
        host=db["host"], port=db["port"], user=db["user"], password=db["password"], dbname=db["database"]
    )
    conn.autocommit = True
    return conn


def _query(db: dict, sql: str, params=None):
    conn = _connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def _login(info: dict, n: int = 5) -> requests.Response:
    return requests.post(f"{info['gateway_url']}/auth/login", json={"email": f"user{n}@example.test"}, timeout=5)


def _scenario(info: dict, name: str) -> None:
    requests.post(f"{info['gateway_url']}/admin/scenario", json={"scenario": name}, timeout=5).raise_for_status()


def _families(info: dict) -> dict:
    text = requests.get(f"{info['gateway_url']}/metrics", timeout=5).text
    return {family.name: family for family in text_string_to_metric_families(text)}


def _total(family, sample_name: str, **labels) -> float:
    return sum(
        s.value for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -- seed ----------------------------------------------------------------------------------


def test_default_seed_has_100k_users(pg_server, fresh_db):
    result = seed.create_staging(pg_server, fresh_db)
    assert result.seeded and result.users >= 100_000
    assert result.seconds < 30, f"seeding 100k users took {result.seconds:.1f}s"
    conn = pg_server.connect(fresh_db)
    with conn.cursor() as cur:
        cur.execute(
            'SELECT count(*), count(DISTINCT "passwordHash"), count("passwordHash"), '
            'count(DISTINCT "authorizerId"), count("authorizerId"), '
            'avg("emailVerified"::int), count(DISTINCT email) FROM users'
        )
        total, distinct_hashes, hashes, distinct_ids, ids, verified, emails = cur.fetchone()
        cur.execute("SELECT count(*) FROM users WHERE \"passwordHash\" !~ '^\\$2b\\$10\\$[./A-Za-z0-9]{53}$'")
        malformed = cur.fetchone()[0]
    conn.close()
    assert total >= 100_000
    assert distinct_hashes == hashes == total and malformed == 0
    assert distinct_ids == ids == total and emails == total
    assert 0.65 < verified < 0.75  # both values, ~70 % true


def test_small_seed_history_ledger_and_store(pg_server, fresh_db):
    result = seed.create_staging(pg_server, fresh_db, users=3000)
    assert result.seeded and result.users == 3000 and result.clients == 50
    assert "app_password" not in repr(result)
    conn = pg_server.connect(fresh_db)
    with conn.cursor() as cur:
        cur.execute('SELECT count(DISTINCT "emailVerified") FROM users')
        assert cur.fetchone()[0] == 2
        cur.execute(
            "SELECT count(*), avg((status = 'ERROR')::int), "
            "count(*) FILTER (WHERE \"createdAt\" > now() - interval '1 hour'), "
            "min(\"createdAt\") < now() - interval '29 days', "
            "max(extract(epoch FROM \"endedAt\" - \"startedAt\")), "
            "min(extract(epoch FROM \"endedAt\" - \"startedAt\")) FROM execution_logs"
        )
        runs, error_share, last_hour, month_old, longest, shortest = cur.fetchone()
        assert runs >= 10_000 and 0.01 < error_share < 0.03 and last_hour > 0 and month_old
        assert 0.5 <= shortest and longest <= 31
        cur.execute(
            "SELECT migration_name, checksum, finished_at IS NOT NULL, finished_at >= started_at, "
            "rolled_back_at, applied_steps_count, length(id), logs FROM _prisma_migrations"
        )
        rows = cur.fetchall()
    conn.close()
    checksum = hashlib.sha256(
        (seed.MIGRATIONS_DIR / seed.INIT_MIGRATION / "migration.sql").read_bytes()
    ).hexdigest()
    # The init migration recorded as finished; the drop migration pending (no row).
    assert rows == [(seed.INIT_MIGRATION, checksum, True, True, None, 1, 36, None)]
    pg_server.connect(seed.STORE_DATABASE).close()  # the observations store exists


def test_seed_execution_logs_default_and_scaled(pg_server, fresh_db):
    """The demo's default is EXECUTIONS logs whatever the users; bench/soak_load.py asks for
    logs in proportion to the users."""
    assert seed.create_staging(pg_server, fresh_db, users=500).execution_logs == seed.EXECUTIONS
    other = f"{fresh_db}_scaled"
    recreate_database(pg_server, other)
    scaled = seed.create_staging(pg_server, other, users=2000, executions=900)
    assert scaled.seeded and scaled.users == 2000 and scaled.execution_logs == 900
    with pytest.raises(ValueError, match="executions"):
        seed.create_staging(pg_server, other, users=2000, executions=0)


def test_reseed_reuses_and_app_role_is_limited(pg_server, fresh_db):
    first = seed.create_staging(pg_server, fresh_db, users=1000)
    second = seed.create_staging(pg_server, fresh_db, users=5000)
    assert not second.seeded and second.users == 1000
    assert (second.clients, second.execution_logs) == (first.clients, first.execution_logs)
    app = {"host": pg_server.host, "port": pg_server.port, "user": "app",
           "password": second.app_password, "database": fresh_db}
    assert _query(app, "SELECT count(*) FROM users")[0][0] == 1000
    _query(app, "UPDATE clients SET name = name WHERE false")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        _query(app, 'ALTER TABLE users DROP COLUMN "passwordHash"')
    with pytest.raises(psycopg2.OperationalError):  # the first password was replaced
        _query({**app, "password": first.app_password}, "SELECT 1")


# -- app -----------------------------------------------------------------------------------


def test_legacy_code_login_fails_once_password_hash_dropped(pg_server, fresh_db, tmp_path):
    with Stack.running(tmp_path, scenario="legacy-code", users=2000, rate=10, server=pg_server,
                       database=fresh_db) as info:
        assert _login(info).status_code == 200
        _query(info["staging"], 'ALTER TABLE users DROP COLUMN "passwordHash"')
        response = _login(info)
        assert response.status_code == 500
        assert "passwordHash" in response.json()["detail"]
        # The healthy code path on the same gateway does not care.
        _scenario(info, "healthy")
        assert _login(info).status_code == 200
        _scenario(info, "legacy-code")
        assert _login(info).status_code == 500
        # Rollback: the column is back and the next statement works, before and after a reload.
        _query(info["staging"], DOWN_SQL.read_text())
        assert _login(info).status_code == 200
        requests.post(f"{info['gateway_url']}/admin/reload", timeout=5).raise_for_status()
        assert _login(info).status_code == 200
        log = Path(info["app_log"]).read_text()
    failures = [line for line in log.splitlines() if " ERROR gateway POST /auth/login status=500" in line]
    assert failures and all("42703 undefined column" in line for line in failures)
    # What the runbook greps for, verbatim: "undefined column" and the column's name.
    assert all('column "passwordHash" does not exist' in line for line in failures)
    db_log = Path(info["db_log"]).read_text()
    assert 'ERROR:  column "passwordHash" does not exist' in db_log
    # Secrets stay out of the log.
    assert info["staging"]["password"] not in log and info["authorizer_admin_token"] not in log


def test_healthy_app_keeps_working_after_the_drop_migration(pg_server, fresh_db, tmp_path):
    with Stack.running(tmp_path, scenario="healthy", users=2000, rate=10, server=pg_server,
                       database=fresh_db) as info:
        gateway = info["gateway_url"]
        _query(info["staging"], DROP_SQL)
        login = _login(info, 7)
        assert login.status_code == 200
        body = login.json()
        verify = requests.post(f"{gateway}/auth/verify", json={"token": body["token"]}, timeout=5)
        assert verify.status_code == 200 and verify.json()["authorizerId"] == body["authorizerId"]
        assert requests.post(f"{gateway}/auth/verify", json={"token": "forged.token"}, timeout=5).status_code == 401
        run = requests.post(f"{gateway}/workflows/run", json={"workflowId": "wf_03", "userId": body["userId"]}, timeout=5)
        assert run.status_code == 200 and run.json()["status"] in ("SUCCESS", "ERROR")
        assert requests.get(f"{gateway}/health", timeout=5).json() == {"status": "ok", "database": "ok"}
        # The Authorizer knows the user (with the admin token only).
        authorizer, token = info["authorizer_url"], info["authorizer_admin_token"]
        url = f"{authorizer}/admin/users/{body['authorizerId']}"
        assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(f"{authorizer}/admin/users/unknown", headers={"Authorization": f"Bearer {token}"},
                            timeout=5).status_code == 404
        assert requests.get(f"{authorizer}/health", timeout=5).json() == {"status": "ok"}
        time.sleep(1)
        errors = _total(_families(info)["http_requests"], "http_requests_total", status="500")
        assert errors == 0


def test_metrics_families_grow_under_load(pg_server, fresh_db, tmp_path):
    stack = Stack(tmp_path, users=2000, rate=40, server=pg_server, database=fresh_db)
    info = stack.start()
    try:
        time.sleep(1.5)
        before = _families(info)
        time.sleep(2.5)
        after = _families(info)
        stats = stack.load.stats()
    finally:
        stack.stop()
    for name in ("http_requests", "http_request_duration_seconds", "cache_requests",
                 "process_resident_memory_bytes"):
        assert name in after, name
    assert after["http_requests"].type == "counter" and after["http_request_duration_seconds"].type == "histogram"
    for endpoint in ("/auth/login", "/auth/verify", "/workflows/run"):
        grew = (_total(after["http_requests"], "http_requests_total", endpoint=endpoint)
                - _total(before["http_requests"], "http_requests_total", endpoint=endpoint))
        assert grew > 0, endpoint
    buckets = {s.labels["le"] for s in after["http_request_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    assert {"0.01", "2.0", "+Inf"} <= buckets
    hits = _total(after["cache_requests"], "cache_requests_total", result="hit")
    misses = _total(after["cache_requests"], "cache_requests_total", result="miss")
    assert hits > misses
    assert _total(after["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0
    assert stats["requests"] > 0 and 15 <= stats["rate"] <= 45, stats
    assert not stack.load._threads[0].is_alive()  # stopped with the stack


def test_health_reports_database_down(tmp_path):
    config = tmp_path / "app.json"
    AppConfig(host="127.0.0.1", port=free_port(), database="staging", user="app", password="x").save(config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    logger = open_app_log(tmp_path / "app.log")
    gateway = Gateway(config, logger)
    server = ServerThread(gateway.app, "gateway")
    server.start()
    try:
        response = requests.get(f"{server.url}/health", timeout=10)
    finally:
        server.stop()
        gateway.close()
        close_app_log(logger)
    assert response.status_code == 503
    assert response.json()["database"] == "error" and response.json()["reason"]
    assert " ERROR gateway GET /health status=503" in (tmp_path / "app.log").read_text()


def test_load_generator_only_targets_loopback():
    with pytest.raises(ValueError):
        LoadGenerator("http://example.com:8080", user_count=10)
    with pytest.raises(ValueError):
        LoadGenerator("http://127.0.0.1:8080", user_count=10, rate=10_000)


# -- wiring --------------------------------------------------------------------------------


def test_airflow_connections_parse():
    from airflow.models.connection import Connection

    info = {
        "staging": {"host": "127.0.0.1", "port": 5501, "database": "staging", "user": "postgres", "password": "pw-1"},
        "store": {"host": "127.0.0.1", "port": 5501, "database": "soak_store", "user": "postgres", "password": "pw-1"},
        "gateway_url": "http://127.0.0.1:8101", "authorizer_url": "http://127.0.0.1:8102",
        "authorizer_admin_token": "admin-token-1",
    }
    env = airflow_connections(info)
    assert env["AIRFLOW_CONN_SOAK_STAGING_DIRECT"] == env["AIRFLOW_CONN_SOAK_STAGING"]
    assert set(env) == {"AIRFLOW_CONN_SOAK_STAGING", "AIRFLOW_CONN_SOAK_STAGING_DIRECT", "AIRFLOW_CONN_SOAK_STORE",
                        "AIRFLOW_CONN_SOAK_GATEWAY", "AIRFLOW_CONN_SOAK_AUTHORIZER"}
    staging = Connection.from_json(env["AIRFLOW_CONN_SOAK_STAGING"], conn_id="soak_staging")
    assert (staging.conn_type, staging.host, staging.port, staging.login, staging.password, staging.schema) == (
        "postgres", "127.0.0.1", 5501, "postgres", "pw-1", "staging")
    assert Connection.from_json(env["AIRFLOW_CONN_SOAK_STORE"], conn_id="s").schema == "soak_store"
    gateway = Connection.from_json(env["AIRFLOW_CONN_SOAK_GATEWAY"], conn_id="soak_gateway")
    assert (gateway.conn_type, gateway.host, gateway.port, gateway.schema, gateway.password) == (
        "http", "127.0.0.1", 8101, "http", None)
    authorizer = Connection.from_json(env["AIRFLOW_CONN_SOAK_AUTHORIZER"], conn_id="soak_authorizer")
    assert (authorizer.port, authorizer.password) == (8102, "admin-token-1")
    env = airflow_connections({**info, "db_metrics_url": "http://127.0.0.1:8103"})
    exporter = Connection.from_json(env["AIRFLOW_CONN_SOAK_DB_METRICS"], conn_id="soak_db_metrics")
    assert (exporter.conn_type, exporter.host, exporter.port, exporter.schema, exporter.password) == (
        "http", "127.0.0.1", 8103, "http", None)


def test_cli_up_and_down(tmp_path):
    state = tmp_path / "stack"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.stack", "up", "--dir", str(state), "--scenario", "legacy-code",
         "--users", "1500", "--rate", "5"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line == "stack: up\n", proc.stderr.read() if proc.poll() is not None else line
        up_seconds = time.monotonic() - started
        info_path = state / "stack.json"
        assert stat.S_IMODE(info_path.stat().st_mode) == 0o600
        info = json.loads(info_path.read_text())
        assert set(info) == {"staging", "store", "gateway_url", "authorizer_url", "authorizer_admin_token",
                             "pg_bin_dir", "app_log", "scenario", "pid", "db_metrics_url", "db_log"}
        assert Path(info["db_log"]).is_absolute() and Path(info["db_log"]).is_file()
        assert requests.get(f"{info['db_metrics_url']}/metrics", timeout=5).status_code == 200
        assert set(info["staging"]) == {"host", "port", "database", "user", "password"}
        assert info["store"]["database"] == "soak_store" and info["scenario"] == "legacy-code"
        assert info["pid"] == proc.pid and (Path(info["pg_bin_dir"]) / "pg_dump").exists()
        assert requests.get(f"{info['gateway_url']}/health", timeout=5).status_code == 200
        assert _query(info["staging"], "SELECT count(*) FROM users")[0][0] == 1500
        down = subprocess.run(
            [sys.executable, "-m", "demo.stack", "down", "--dir", str(state)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=90,
        )
        assert down.returncode == 0, down.stderr
        assert proc.wait(timeout=30) == 0
        assert not info_path.exists() and not (state / "pgdata" / "postmaster.pid").exists()
        stderr = proc.stderr.read()
        assert info["staging"]["password"] not in stderr and info["authorizer_admin_token"] not in stderr
        assert up_seconds < 60
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
