"""prometheus source against a real Prometheus server scraping the demo gateway every second.

The ``prometheus`` binary is Debian's package (``.ci/run`` installs it). Without it the
module is skipped, except in CI (``CI`` set), where a missing binary fails the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from demo.postgres import free_port
from demo.stack import Stack, airflow_connections
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check
from migration_soak.sources import SourceContext, prometheus

PROMETHEUS = shutil.which("prometheus")
DATABASE = "t_sources_prometheus"

ERROR_RATIO = (
    'sum(rate(http_requests_total{endpoint=~"/auth/.*",status=~"5.."}[10s]))'
    ' / sum(rate(http_requests_total{endpoint=~"/auth/.*"}[10s]))'
)
LOGIN_P95_MS = (
    'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{endpoint="/auth/login"}[10s])))'
    " * 1000"
)


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory):
    """The demo stack (gateway under load) on a database of its own of the session server."""
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    conn.close()
    with Stack.running(tmp_path_factory.mktemp("stack"), users=2000, rate=20, server=pg_server, database=DATABASE) as info:
        yield info


def _wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"prometheus: {what} not within {timeout:.0f}s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def prom(stack, tmp_path_factory):
    """A Prometheus server of our own scraping the gateway every second; yields its URL once
    the 10 s rate windows of the queries below hold samples."""
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("the prometheus binary is missing in CI (.ci/run installs Debian's package)")
        pytest.skip("no prometheus binary on PATH (apt-get install prometheus); CI installs it")
    home = tmp_path_factory.mktemp("prometheus")
    target = stack["gateway_url"].split("://", 1)[1]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "gateway", "static_configs": [{"targets": [target]}]}],
    }
    (home / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until(lambda: requests.get(f"{url}/-/ready", timeout=2).status_code == 200, 30, "ready", proc, log)

        def samples() -> bool:
            q = 'count_over_time(http_requests_total{endpoint="/auth/login",status="200"}[10s])'
            result = requests.get(f"{url}/api/v1/query", params={"query": q}, timeout=2).json()["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 4

        _wait_until(samples, 45, "4 scrapes of the gateway", proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def conn(prom, monkeypatch) -> str:
    """``soak_prometheus``: an HTTP Airflow connection to the server."""
    port = int(prom.rsplit(":", 1)[1])
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_PROMETHEUS",
                       json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http"}))
    return "soak_prometheus"


def check(query: str, unit: str = "ratio", **source) -> Check:
    return Check.model_validate({
        "id": "prom_check", "title": "t", "unit": unit, "rule": "test", "expect": {"op": ">=", "value": 0},
        "source": {"kind": "prometheus", "connection": "soak_prometheus", "query": query, **source},
    })


def test_error_ratio_is_zero_on_a_healthy_gateway(conn):
    # A healthy gateway has no 5xx series at all: without ``or vector(0)`` the division is
    # empty, which the source reports as an error rather than inventing a 0.
    m = prometheus.measure(check('(sum(rate(http_requests_total{endpoint=~"/auth/.*",status=~"5.."}[10s])) or vector(0))'
                                 ' / sum(rate(http_requests_total{endpoint=~"/auth/.*"}[10s]))'), SourceContext())
    assert m.value == 0.0
    assert m.evidence["series"] == 1 and m.evidence["result_type"] == "vector"
    with pytest.raises(MeasurementError, match="no series"):
        prometheus.measure(check(ERROR_RATIO), SourceContext())


def test_login_p95_in_ms(conn):
    m = prometheus.measure(check(LOGIN_P95_MS, unit="ms"), SourceContext())
    # Buckets go from 5 ms up; a local login is fast but takes some time.
    assert 0 < m.value < 2000
    assert m.evidence["sample"][0]["labels"] == {}
    json.dumps(m.evidence)


def test_scale_and_aggregates_over_several_series(conn):
    per_endpoint = 'sum by (endpoint) (http_requests_total{endpoint=~"/auth/.*"})'
    with pytest.raises(MeasurementError, match="exactly one series, the query gives 2"):
        prometheus.measure(check(per_endpoint, unit="count"), SourceContext())
    total = prometheus.measure(check(per_endpoint, unit="count", aggregate="sum"), SourceContext())
    biggest = prometheus.measure(check(per_endpoint, unit="count", aggregate="max"), SourceContext())
    assert total.evidence["series"] == 2 and total.value >= biggest.value > 0
    assert {s["labels"]["endpoint"] for s in total.evidence["sample"]} == {"/auth/login", "/auth/verify"}
    scalar = prometheus.measure(check("scalar(up)", unit="count", scale=1000), SourceContext())
    assert scalar.value == 1000.0 and scalar.evidence["result_type"] == "scalar"


def test_bad_promql_is_an_error_with_prometheus_message(conn):
    with pytest.raises(MeasurementError, match=r"bad_data: .*parse error") as exc:
        prometheus.measure(check("sum(rate(http_requests_total[10s])"), SourceContext())
    assert "HTTP 400" in str(exc.value)


def test_empty_result_nan_and_range_vector_are_errors(conn):
    with pytest.raises(MeasurementError, match="no series"):
        prometheus.measure(check('http_requests_total{endpoint="/no/such"}'), SourceContext())
    with pytest.raises(MeasurementError, match="no finite value \\(NaN"):
        prometheus.measure(check("vector(0) / vector(0)"), SourceContext())
    with pytest.raises(MeasurementError, match="matrix result"):
        prometheus.measure(check("up[10s]"), SourceContext())


def test_prometheus_down_is_an_error(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_PROMETHEUS",
                       json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": free_port(), "schema": "http"}))
    with pytest.raises(MeasurementError, match="unreachable: ConnectionError"):
        prometheus.measure(check("up"), SourceContext())


def test_not_prometheus_is_an_error(stack, monkeypatch):
    # The gateway answers /api/v1/query with a 404 page: not JSON from Prometheus.
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_PROMETHEUS", airflow_connections(stack)["AIRFLOW_CONN_SOAK_GATEWAY"])
    with pytest.raises(MeasurementError, match="HTTP 404"):
        prometheus.measure(check("up"), SourceContext())


def test_range_query_gives_one_point_per_step(conn):
    end = time.time()
    start = end - 10
    points = prometheus.range_query(conn, 'sum(rate(http_requests_total{endpoint="/auth/verify"}[5s]))', start, end, 1)
    # Prometheus has been scraping for a few seconds only: the earliest steps may lack data.
    assert 2 <= len(points) <= 11
    times = [t for t, _ in points]
    assert times == sorted(times) and start - 0.001 <= times[0] and times[-1] <= end + 0.001  # ms precision
    assert all(abs(b - a - round(b - a)) < 1e-6 for a, b in zip(times, times[1:]))  # whole steps apart
    assert all(v > 0 for _, v in points)
    assert prometheus.range_query(conn, 'up{job="nope"}', start, end, "2s") == []
    with pytest.raises(MeasurementError, match="2 series"):
        prometheus.range_query(conn, 'sum by (endpoint) (http_requests_total{endpoint=~"/auth/.*"})', end - 5, end, 1)
    with pytest.raises(MeasurementError, match="bad_data"):
        prometheus.range_query(conn, "up", end, start, 1)  # end before start
