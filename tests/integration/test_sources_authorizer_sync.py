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

from .conftest import SEED_USERS, query

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
    assert m.evidence["sampled_from"] == "users.authorizerId" and m.evidence["drawn_by"] == "random"  # 50 users


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
    with pytest.raises(MeasurementError, match="no row of users has a authorizerId: nothing to look up"):
        authorizer_sync.measure(check(), SourceContext(staging="soak_staging"))


def test_the_sample_runs_read_only(stack, monkeypatch):
    write = "INSERT INTO users (id, email, \"updatedAt\") VALUES ('x', 'x@example.test', now()) RETURNING %s::text"
    monkeypatch.setattr(authorizer_sync, "sample_queries", lambda table, column, percent: (write, write))
    with pytest.raises(MeasurementError, match="ReadOnlySqlTransaction|read-only transaction"):
        authorizer_sync.measure(check(), SourceContext(staging="soak_staging"))


# --- the draw itself: TABLESAMPLE on a big table, ORDER BY random() on a small one -----------------

def _sampled(target, n: int, table: str, column: str) -> tuple[list[str], str]:
    return authorizer_sync.sample_ids("soak_staging", n, table, column)


def test_a_big_table_is_sampled_by_pages_not_sorted_whole(staging):
    """5000 seeded users: ``TABLESAMPLE SYSTEM`` finds 20 ids in a part of the pages."""
    pages = query(staging, "SELECT pg_relation_size('users') / current_setting('block_size')::int")[0][0]
    ids, drawn = _sampled(staging, 20, "users", "authorizerId")
    assert drawn == f"tablesample {authorizer_sync.sample_percent(pages, 20):.4g}%" and drawn != "tablesample 100%"
    assert len(ids) == len(set(ids)) == 20
    known = {r[0] for r in query(staging, 'SELECT "authorizerId" FROM users')}
    assert set(ids) <= known
    again, _ = _sampled(staging, 20, "users", "authorizerId")
    assert set(again) != set(ids)  # a new draw each reading


def test_a_small_table_or_a_short_draw_falls_back_to_order_by_random(staging):
    # every user at once: the sample would be 100 % of the pages, so the plain query runs
    ids, drawn = _sampled(staging, 10_000, "users", "authorizerId")
    assert drawn == "random" and len(ids) == SEED_USERS
    # a sparse column: 30 ids left, one every SEED_USERS/30 rows in physical order, so spread
    # over every page; a sample of about a third of the pages holds about 10 of them, fewer
    # than the 25 wanted (all 25 or more: a chance of order 1e-8), and the whole table is asked
    query(staging, f"""UPDATE users SET "authorizerId" = NULL WHERE id NOT IN
                       (SELECT id FROM (SELECT id, row_number() OVER (ORDER BY ctid) AS n FROM users) AS r
                        WHERE n % {SEED_USERS // 30} = 0)""")
    ids, drawn = _sampled(staging, 25, "users", "authorizerId")
    assert drawn == "random" and len(set(ids)) == 25


def test_the_plans_table_and_column_are_quoted_identifiers(staging, monkeypatch):
    """Another plan's table and column, names that need quoting included, reach the
    database as identifiers, never as SQL."""
    query(staging, 'CREATE TABLE "Odd ""Accounts""" ("external Id" text);'
                   'INSERT INTO "Odd ""Accounts""" SELECT \'ext-\' || g FROM generate_series(1, 20000) g')
    ids, drawn = _sampled(staging, 50, 'Odd "Accounts"', "external Id")
    assert drawn.startswith("tablesample ") and len(set(ids)) == 50 and all(i.startswith("ext-") for i in ids)
    with pytest.raises(Exception, match="does not exist"):
        _sampled(staging, 5, 'users"; DROP TABLE users; --', "authorizerId")
    assert query(staging, "SELECT count(*) FROM users")[0][0] == SEED_USERS
