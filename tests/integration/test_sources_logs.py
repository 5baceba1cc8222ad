"""logs source on the demo stack: the gateway's own log file, and the Authorizer stand-in's
admin log API (``GET /admin/logs``, Bearer token) when the stand-in serves it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from demo.stack import Stack, airflow_connections
from migration_soak.plan import Check
from migration_soak.sources import SourceContext, logs


@pytest.fixture
def stack(pg_server, fresh_db, tmp_path, monkeypatch):
    """A small stack without load (every log line is one of ours) and its connections."""
    with Stack.running(tmp_path, users=20, rate=0, server=pg_server, database=fresh_db) as info:
        for name, value in airflow_connections(info).items():
            monkeypatch.setenv(name, value)
        yield info


def check(**source) -> Check:
    return Check.model_validate({
        "id": "app_log_errors", "title": "t", "unit": "count", "rule": "test", "expect": {"op": "==", "value": 0},
        "source": {"kind": "logs", **source},
    })


def test_the_gateway_log_is_followed_between_observations(stack):
    c = check(file=stack["app_log"], patterns=[r"status=[45]\d\d"], exclude=["/health"])
    first = logs.measure(c, SourceContext())
    for _ in range(3):  # unknown users: 401, logged as WARNING
        requests.post(f"{stack['gateway_url']}/auth/login", json={"email": "nobody@example.test"}, timeout=5)
    requests.get(f"{stack['gateway_url']}/health", timeout=5)
    requests.get(f"{stack['gateway_url']}/no/such/page", timeout=5)  # 404: "other"
    deadline = time.monotonic() + 5  # the app writes its log line after answering
    while "status=404" not in Path(stack["app_log"]).read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = logs.measure(c, SourceContext(previous=first.evidence))
    assert second.value == 4 and second.evidence["lines_read"] == 5
    assert all("WARNING gateway" in line for line in second.evidence["samples"])
    assert second.evidence["inode"] == first.evidence["inode"] > 0
    assert logs.measure(c, SourceContext(previous=second.evidence)).value == 0


def test_the_authorizer_admin_log(stack):
    url, token = stack["authorizer_url"], stack["authorizer_admin_token"]
    probe = requests.get(f"{url}/admin/logs", headers={"Authorization": f"Bearer {token}"}, timeout=5)
    if probe.status_code == 404:
        pytest.skip("this Authorizer stand-in has no /admin/logs yet")
    entries = probe.json()["logs"]
    http = {"connection": "soak_authorizer", "endpoint": "/admin/logs?limit=500", "items": "logs"}
    every = logs.measure(check(http=http, patterns=["."]), SourceContext())
    # The stand-in's log may grow between the probe and the measurement, never shrink.
    assert every.evidence["entries"] >= len(entries) and every.value == every.evidence["kept"]
    none = logs.measure(check(http={**http, "where": {"level": "no-such-level"}}, patterns=["."]), SourceContext())
    assert none.value == 0 and none.evidence["kept"] == 0
    assert token not in json.dumps(every.evidence)
