"""authorizer_sync source against the demo stack: the staging database and the Authorizer
stand-in, which knows the authorizerIds present when it started (it may re-read them from
the database on a miss, at most every 10 s: the tests measure within that). Users inserted
later, directly in the database, are the inconsistency the check counts."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import psycopg2
import pytest

from demo.postgres import free_port
from demo.stack import Stack, airflow_connections
from migration_soak import sources
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check, Connections
from migration_soak.sources import SourceContext, authorizer_sync

SEEDED = 50
# An id that must be quoted in a URL path: it still reaches the Authorizer as one segment.
NEW_IDS = [f"late-{i}" for i in range(6)] + ["late/with space?&#"]


@pytest.fixture
def stack(pg_server, fresh_db, tmp_path, monkeypatch):
    """A small stack (no load) on the test's database; its Airflow connections set."""
    with Stack.running(tmp_path, users=SEEDED, rate=0, server=pg_server, database=fresh_db) as info:
        info["started"] = time.monotonic()
        for name, value in airflow_connections(info).items():
            monkeypatch.setenv(name, value)
        yield info


def staging_sql(info: dict, sql: str, params=None) -> None:
    db = info["staging"]
    conn = psycopg2.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                            dbname=db["database"])
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
    finally:
        conn.close()


def check(sample: int = 10_000, **source) -> Check:
    return Check.model_validate({
        "id": "authorizer_sync", "title": "t", "unit": "count", "rule": "test", "expect": {"op": "==", "value": 0},
        "source": {"kind": "authorizer_sync", "connection": "soak_authorizer", "sample": sample, **source},
    })


def test_users_the_authorizer_does_not_know_are_counted(stack):
    plan = SimpleNamespace(connections=Connections())  # the dispatcher reads only the staging id
    before = sources.measure(check(), plan)
    assert before.value == 0
    assert before.evidence["sampled"] == before.evidence["statuses"]["200"] >= SEEDED - 5
    staging_sql(stack, """
        INSERT INTO users (id, email, "authorizerId", "updatedAt")
        SELECT 'late-user-' || i, 'late' || i || '@example.test', id, now()
        FROM unnest(%s::text[]) WITH ORDINALITY AS t(id, i)""", (NEW_IDS,))
    after = sources.measure(check(), plan)
    # The stand-in may re-read the database on a miss once its ids are 10 s old: measured
    # right after the start, every new id is still unknown to it.
    assert time.monotonic() - stack["started"] < 9
    assert after.value == len(NEW_IDS)
    assert sorted(after.evidence["unknown"]) == sorted(NEW_IDS)
    assert after.evidence["statuses"] == {"200": before.evidence["sampled"], "404": len(NEW_IDS)}
    assert stack["authorizer_admin_token"] not in json.dumps(after.evidence)


def test_a_sample_is_drawn_and_at_most_ten_unknown_ids_are_shown(stack):
    staging_sql(stack, """UPDATE users SET "authorizerId" = 'unknown-' || id""")  # none known any more
    m = authorizer_sync.measure(check(sample=20), SourceContext(staging="soak_staging"))
    assert time.monotonic() - stack["started"] < 9  # before the stand-in may re-read the ids
    assert m.value == 20 and m.evidence["sampled"] == 20
    assert len(m.evidence["unknown"]) == 10 and m.evidence["unknown_count"] == 20
    assert m.evidence["statuses"] == {"404": 20}


def test_wrong_token_unreachable_authorizer_and_no_ids_are_errors(stack, monkeypatch):
    conn = json.loads(airflow_connections(stack)["AIRFLOW_CONN_SOAK_AUTHORIZER"])
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_AUTHORIZER", json.dumps({**conn, "password": "not-the-token"}))
    with pytest.raises(MeasurementError, match=r"HTTP 401 .*admin token") as exc:
        authorizer_sync.measure(check(), SourceContext(staging="soak_staging"))
    assert "not-the-token" not in str(exc.value)
    # A login on the connection does not turn the Bearer token into basic auth.
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_AUTHORIZER", json.dumps({**conn, "login": "admin"}))
    assert authorizer_sync.measure(check(), SourceContext(staging="soak_staging")).value == 0
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_AUTHORIZER", json.dumps({**conn, "port": free_port()}))
    with pytest.raises(MeasurementError, match="Authorizer unreachable: ConnectionError"):
        authorizer_sync.measure(check(), SourceContext(staging="soak_staging"))
    staging_sql(stack, """UPDATE users SET "authorizerId" = NULL""")
    with pytest.raises(MeasurementError, match="no user has an authorizerId"):
        authorizer_sync.measure(check(), SourceContext(staging="soak_staging"))


def test_the_sample_runs_read_only(stack, monkeypatch):
    monkeypatch.setattr(authorizer_sync, "SAMPLE_SQL", "INSERT INTO users (id, email, \"updatedAt\") "
                        "VALUES ('x', 'x@example.test', now()) RETURNING %s::text")
    with pytest.raises(MeasurementError, match="ReadOnlySqlTransaction|read-only transaction"):
        authorizer_sync.measure(check(), SourceContext(staging="soak_staging"))
