"""Fault scenarios of the demo stack, the timeline driver, and the extra signals: the
database host exporter, PostgreSQL's slow statement log, the Authorizer's admin log.

Most tests share one stack (``stack``: the session's PostgreSQL, a database of its own,
500 users, no background load, so every request is the test's own); each test leaves the
faults off.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from demo import seed
from demo.app_config import fault_params, should_inject_error
from demo.authorizer import AuthorizerLog, KnownIds
from demo.db_exporter import DbExporter
from demo.faults import SCENARIOS, Timeline, add_users_without_authorizer_id, base_scenario, check_steps
from demo.gateway import SessionTracker
from demo.stack import Stack

DROP_SQL = (seed.MIGRATIONS_DIR / seed.DROP_MIGRATION / "migration.sql").read_text()
FAULT_NAMES = ("slow-auth", "memory-leak", "metrics-outage", "noisy")
MiB = 1024 * 1024


def _families(url: str) -> dict:
    response = requests.get(f"{url}/metrics", timeout=5)
    response.raise_for_status()
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def _value(families: dict, family: str, sample: str | None = None, **labels) -> float:
    return sum(
        s.value for s in families[family].samples
        if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _fault(info: dict, name: str, on: bool = True, **params) -> requests.Response:
    return requests.post(f"{info['gateway_url']}/admin/fault", json={"fault": name, "on": on, **params}, timeout=5)


def _login(info: dict, n: int) -> requests.Response:
    return requests.post(f"{info['gateway_url']}/auth/login", json={"email": f"user{n}@example.test"}, timeout=10)


def _admin(info: dict) -> dict:
    return {"Authorization": f"Bearer {info['authorizer_admin_token']}"}


def _count_null_authorizer(db: dict) -> int:
    conn = psycopg2.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                            dbname=db["database"])
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT count(*) FROM users WHERE "authorizerId" IS NULL')
            return cur.fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory):
    name = "t_faults_module"
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()
    stack = Stack(tmp_path_factory.mktemp("faults-stack"), users=500, rate=0, server=pg_server, database=name)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def info(stack):
    """The shared stack's info; every fault is switched off after the test."""
    yield stack.info
    for name in FAULT_NAMES:
        stack.gateway.set_fault(name, on=False)


# -- deciding functions ----------------------------------------------------------------------


def test_noisy_decision_is_about_half_a_percent_with_a_seeded_rng():
    rate = fault_params("noisy")["error_rate"]
    assert rate == 0.005
    rng = random.Random(20251202)
    decisions = [should_inject_error(rng, rate) for _ in range(4000)]
    share = sum(decisions) / len(decisions)
    # Strictly between the runbook's GO bound (0.1 %) and its NO-GO bound (1 %).
    assert 0.003 <= share <= 0.007, share
    again = random.Random(20251202)
    assert decisions == [should_inject_error(again, rate) for _ in range(4000)]  # reproducible
    rng = random.Random(7)
    big = sum(should_inject_error(rng, rate) for _ in range(40_000)) / 40_000
    assert 0.0043 <= big <= 0.0057, big  # 2 standard deviations
    assert not any(should_inject_error(rng, 0.0) for _ in range(1000))


def test_fault_params_are_validated(info):
    assert fault_params("slow-auth", {"delay_ms": 200}) == {"delay_ms": 200.0, "jitter_ms": 30.0}
    for name, params in (("nope", {}), ("noisy", {"error_rate": 2}), ("noisy", {"typo": 1}),
                         ("slow-auth", {"delay_ms": -1}), ("noisy", {"time_scale": 0}),
                         ("memory-leak", {"kb_per_request": "lots"})):
        with pytest.raises(ValueError):
            fault_params(name, params)
    assert _fault(info, "noisy", error_rate=3).status_code == 422
    assert _fault(info, "nope").status_code == 422
    response = _fault(info, "slow-auth", delay_ms=10)
    assert response.status_code == 200 and response.json()["faults"]["slow-auth"]["delay_ms"] == 10
    # Faults survive a reload (like the scenario), and combine with the base scenario.
    requests.post(f"{info['gateway_url']}/admin/reload", timeout=5).raise_for_status()
    state = requests.get(f"{info['gateway_url']}/admin/faults", timeout=5).json()
    assert state["scenario"] == "healthy" and set(state["faults"]) == {"slow-auth"}
    assert _fault(info, "slow-auth", on=False).json()["faults"] == {}


def test_session_tracker_window():
    now = [1000.0]
    tracker = SessionTracker(window_s=300, clock=lambda: now[0])
    for token in ("a", "b", "a", "c"):
        tracker.touch(token)
        now[0] += 10
    assert tracker.count() == 3
    # Touches: a at 1000 and 1020, b at 1010, c at 1030; now 1040.
    now[0] += 265  # 1305: b seen 295 s ago, still active
    assert tracker.count() == 3
    now[0] += 10  # 1315: b 305 s ago -> gone; a 295 s; c 285 s
    assert tracker.count() == 2
    now[0] += 1000
    assert tracker.count() == 0


# -- gateway faults --------------------------------------------------------------------------


def _p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * len(ordered))) - 1)]


def _timed_logins(info: dict, count: int) -> list[float]:
    def one(n: int) -> float:
        started = time.perf_counter()
        response = _login(info, n)
        assert response.status_code == 200, response.text
        return time.perf_counter() - started

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(1, count + 1)))


def _histogram_p95(before: dict, after: dict, endpoint: str) -> float:
    """p95 of the histogram's increase, interpolated in the bucket (as PromQL does)."""
    def buckets(families):
        return sorted((float(s.labels["le"]), s.value) for s in families["http_request_duration_seconds"].samples
                      if s.name.endswith("_bucket") and s.labels["endpoint"] == endpoint)
    inc = [(le, a - b) for (le, a), (_, b) in zip(buckets(after), buckets(before))]
    rank, prev_le, prev_count = 0.95 * inc[-1][1], 0.0, 0.0
    for le, count in inc:
        if count >= rank:
            return prev_le if le == float("inf") else prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    raise AssertionError("no observations")


def test_slow_auth_raises_login_p95_well_above_baseline(info):
    _timed_logins(info, 8)  # warm the pool
    before = _families(info["gateway_url"])
    healthy = _p95(_timed_logins(info, 40))
    middle = _families(info["gateway_url"])
    assert _fault(info, "slow-auth").status_code == 200
    slow = _p95(_timed_logins(info, 40))
    after = _families(info["gateway_url"])
    # Client-side times include this test's own threads and whatever else the 2-core CI
    # machine runs (a healthy p95 of 275 ms was seen there): only the injected delay's
    # floor holds for them. The relative judgement reads the server's histogram, as the
    # soak does: ~10 ms before, ~195 ms after, under the 500 ms absolute limit.
    assert slow >= 0.12, (healthy, slow)
    healthy_server = _histogram_p95(before, middle, "/auth/login")
    slow_server = _histogram_p95(middle, after, "/auth/login")
    assert healthy_server < 0.1, healthy_server
    assert 0.15 <= slow_server < 0.5, slow_server
    assert slow_server > 1.3 * healthy_server and slow_server - healthy_server > 0.08, (healthy_server, slow_server)
    # /auth/verify is not slowed.
    token = _login(info, 1).json()["token"]
    started = time.perf_counter()
    requests.post(f"{info['gateway_url']}/auth/verify", json={"token": token}, timeout=5).raise_for_status()
    assert time.perf_counter() - started < 0.1
    log = Path(info["app_log"]).read_text()
    slow_lines = [line for line in log.splitlines() if " WARNING gateway POST /auth/login status=200" in line]
    assert slow_lines and all("timeout" in line for line in slow_lines)


def _leaked_settled(gateway, quiet_s=0.3, timeout_s=5.0) -> int:
    """``gateway.leaked_bytes`` once it stopped changing for ``quiet_s``: the leak is taken
    after a request's response was sent (``app_log.Instrument``), so the client can read
    the answer before the last request has leaked."""
    deadline = time.monotonic() + timeout_s
    last, since = gateway.leaked_bytes, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = gateway.leaked_bytes
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def test_memory_leak_grows_rss_and_reload_frees_it(stack, info):
    url = info["gateway_url"]
    session = requests.Session()
    before = _value(_families(url), "process_resident_memory_bytes")
    assert _fault(info, "memory-leak").status_code == 200  # 76.8 KiB a request (its default)
    size = int(76.8 * 1024)
    for _ in range(300):
        session.get(f"{url}/admin/faults", timeout=5).raise_for_status()
    _families(url)  # scrapes do not leak
    after = _value(_families(url), "process_resident_memory_bytes")
    # 300 requests and the POST /admin/fault that switched it on (answered, then counted);
    # a request of the stack's own (a health probe) may land in between: 76.8 KiB each.
    leaked = _leaked_settled(stack.gateway)
    assert leaked % size == 0 and 301 <= leaked // size <= 310, leaked
    assert after - before > 0.8 * leaked, (before / MiB, after / MiB)
    # The cap: nothing more is kept beyond max_mb.
    assert _fault(info, "memory-leak", kb_per_request=1024, max_mb=60).status_code == 200
    for _ in range(20):
        session.get(f"{url}/admin/faults", timeout=5)
    assert stack.gateway.leaked_bytes <= 60 * MiB
    # A restart releases the memory; the leak goes on while the fault is on.
    requests.post(f"{url}/admin/reload", timeout=5).raise_for_status()
    # The reset frees the hoard; the reload request itself (and any request after it) leaks 1 MiB again.
    after_reload = _leaked_settled(stack.gateway)
    assert after_reload % MiB == 0 and 1 <= after_reload // MiB <= 5, after_reload
    _fault(info, "memory-leak", on=False)
    session.close()


def test_metrics_outage_answers_503_and_the_rest_works(info):
    url = info["gateway_url"]
    assert _fault(info, "metrics-outage").status_code == 200
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 503
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert _login(info, 3).status_code == 200
    assert _fault(info, "metrics-outage", on=False).status_code == 200
    assert "http_requests" in _families(url)


def test_noisy_failures_are_logged_and_reach_the_authorizer_log(info):
    url, authorizer = info["gateway_url"], info["authorizer_url"]
    token = _login(info, 4).json()["token"]
    before = _families(url)
    # Every auth request fails at error_rate 1; webhook errors at 36 per soak hour, 1000x: 10/s.
    assert _fault(info, "noisy", error_rate=1.0, webhook_errors_per_hour=36, time_scale=1000).status_code == 200
    login = _login(info, 4)
    verify = requests.post(f"{url}/auth/verify", json={"token": token}, timeout=5)
    assert login.status_code == 500 and verify.status_code == 500
    assert requests.get(f"{url}/health", timeout=5).status_code == 200  # only auth is noisy
    after = _families(url)
    assert _value(after, "auth_logins", "auth_logins_total", result="failure") - \
        _value(before, "auth_logins", "auth_logins_total", result="failure") == 1
    log = Path(info["app_log"]).read_text().splitlines()
    errors = [line for line in log if " ERROR gateway POST /auth/" in line and "status=500" in line]
    assert len(errors) >= 2 and all("exception" in line and "error" in line for line in errors)
    time.sleep(0.6)
    entries = requests.get(f"{authorizer}/admin/logs", params={"level": "error"}, headers=_admin(info),
                           timeout=5).json()["logs"]
    events = [e["event"] for e in entries]
    assert "failed login" in events and "token validation error" in events
    assert events.count("webhook delivery failure") >= 1
    assert {e["level"] for e in entries} == {"error"}
    # Off: no new error entries.
    _fault(info, "noisy", on=False)
    mark = datetime.now(timezone.utc).isoformat()
    time.sleep(0.6)  # 6 errors expected if it were still on
    assert _login(info, 4).status_code == 200
    fresh = requests.get(f"{authorizer}/admin/logs", params={"level": "error", "since": mark}, headers=_admin(info),
                         timeout=5).json()["logs"]
    assert fresh == []


def test_login_counter_and_active_sessions(info):
    url = info["gateway_url"]
    before = _families(url)
    tokens = [_login(info, n).json()["token"] for n in (11, 12, 13)]
    assert requests.post(f"{url}/auth/login", json={"email": "nobody@example.test"}, timeout=5).status_code == 401
    for token in tokens * 2:
        requests.post(f"{url}/auth/verify", json={"token": token}, timeout=5).raise_for_status()
    after = _families(url)
    grew = {r: _value(after, "auth_logins", "auth_logins_total", result=r)
            - _value(before, "auth_logins", "auth_logins_total", result=r) for r in ("success", "failure")}
    assert grew == {"success": 3, "failure": 1}
    assert after["auth_logins"].type == "counter" and after["active_sessions"].type == "gauge"
    assert _value(after, "active_sessions") >= 3


# -- sync-drift ------------------------------------------------------------------------------


def test_sync_drift_inserts_users_without_authorizer_id_before_and_after_the_drop(pg_server, fresh_db):
    seed.create_staging(pg_server, fresh_db, users=200)
    staging = {"host": pg_server.host, "port": pg_server.port, "user": "postgres",
               "password": pg_server.password, "database": fresh_db}
    assert _count_null_authorizer(staging) == 0
    ids = add_users_without_authorizer_id(pg_server, fresh_db, n=2)  # the old schema
    assert len(ids) == 2
    conn = pg_server.connect(fresh_db)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(DROP_SQL)
    conn.close()
    add_users_without_authorizer_id(staging, fresh_db)  # stack.json's dict, after the drop: 5
    add_users_without_authorizer_id(pg_server.dsn(fresh_db), n=1)  # a DSN
    assert _count_null_authorizer(staging) == 8
    with pytest.raises(ValueError):
        add_users_without_authorizer_id(staging, fresh_db, n=0)


# -- timeline --------------------------------------------------------------------------------


class _Recording(Timeline):
    def __init__(self, steps):
        super().__init__("http://127.0.0.1:9", None, steps)
        self.calls: list[tuple[float, str, dict]] = []

    def apply(self, action, args):
        self.calls.append((time.time(), action, args))
        if args.get("boom"):
            raise RuntimeError("boom")
        return "ok"


def test_timeline_applies_steps_at_their_wall_times():
    # 36 000x: a soak hour is 0.1 s of wall time.
    steps = [(8.0, "reload", {}), (1.0, "reload", {"boom": True}), (0.0, "reload", {}), (3.0, "reload", {}),
             (500.0, "reload", {})]
    timeline = _Recording(steps)
    hour0 = datetime.now(timezone.utc) + timedelta(seconds=0.2)
    timeline.run(hour0, 36_000)
    time.sleep(1.3)
    timeline.stop()
    assert timeline.records[-1].soak_hour == 8.0 and len(timeline.calls) == 4  # hour 500 never came
    for (applied, _, _), record, hour in zip(timeline.calls, timeline.records, (0.0, 1.0, 3.0, 8.0)):
        due = hour0.timestamp() + hour * 0.1
        assert record.soak_hour == hour
        assert due - 0.005 <= applied <= due + 0.08, (hour, applied - due)
        assert record.due == datetime.fromtimestamp(due, timezone.utc)
        assert 0 <= record.late_s < 0.08
    assert [r.ok for r in timeline.records] == [True, False, True, True]
    assert timeline.records[1].error == "RuntimeError: boom"


def test_timeline_past_steps_run_at_once_and_steps_are_checked():
    timeline = _Recording([(0.0, "reload", {}), (2.0, "reload", {})])
    timeline.run((datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(), 3600)  # 2 h ago in soak time
    assert timeline.join(2)
    assert len(timeline.calls) == 2 and all(r.late_s > 0.5 for r in timeline.records)
    for bad in ([(1.0, "explode", {})], [(-1, "reload", {})], [(1.0, "fault", {"fault": "nope"})], [(1.0,)]):
        with pytest.raises(ValueError):
            check_steps(bad)


def test_scenario_table():
    assert set(SCENARIOS) == {"healthy", "legacy-code", "slow-auth", "memory-leak", "metrics-outage", "noisy",
                              "sync-drift"}
    assert SCENARIOS["healthy"] == SCENARIOS["legacy-code"] == []
    assert base_scenario("legacy-code") == "legacy-code" and base_scenario("noisy") == "healthy"
    outage = SCENARIOS["metrics-outage"]
    assert [(h, a["on"]) for h, _, a in outage] == [(8.0, True), (16.0, False)]  # a third of 24 h
    assert SCENARIOS["sync-drift"] == [(3.0, "sync-drift", {"n": 5})]
    assert SCENARIOS["slow-auth"][0][0] == 1.0 and SCENARIOS["memory-leak"][0][0] == 0.0
    for steps in SCENARIOS.values():
        check_steps(steps)


def test_timeline_drives_a_stack(stack, info):
    url = info["gateway_url"]
    staging = info["staging"]
    nulls = _count_null_authorizer(staging)
    steps = SCENARIOS["metrics-outage"] + SCENARIOS["sync-drift"] + SCENARIOS["noisy"]
    hour0 = datetime.now(timezone.utc)
    timeline = Timeline(url, staging, steps).run(hour0, 36_000)  # hour 8 at 0.8 s, hour 16 at 1.6 s
    statuses = {}
    for at in (0.5, 1.2):
        time.sleep(max(0.0, hour0.timestamp() + at - time.time()))
        statuses[at] = requests.get(f"{url}/metrics", timeout=5).status_code
    assert timeline.join(5)
    assert statuses == {0.5: 200, 1.2: 503}
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 200
    assert all(r.ok for r in timeline.records), [r.error for r in timeline.records]
    assert _count_null_authorizer(staging) == nulls + 5
    # noisy got the timeline's time_scale (its Authorizer error rate is per soak hour).
    assert stack.gateway.faults["noisy"]["time_scale"] == 36_000


# -- database host exporter, database log ----------------------------------------------------


def test_db_exporter_page_parses_with_values_in_range(pg_server, tmp_path):
    exporter = DbExporter(pg_server.data_dir, min_window_s=0.2)
    conn = pg_server.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM generate_series(1, 3000000)")  # ~0.3 s of one core
    # Scraped while the backend that did the work is alive: once it exits, its CPU time is
    # counted only after the postmaster reaps it (children_* times), which races the scrape.
    page = exporter.render().decode()
    conn.close()
    families = {f.name: f for f in text_string_to_metric_families(page)}
    for name in ("db_up", "db_cpu_usage_ratio", "db_memory_usage_ratio", "db_memory_rss_bytes",
                 "db_disk_usage_ratio", "db_cpu_seconds", "db_processes"):
        assert name in families, name
        assert families[name].samples, name
    value = {name: fam.samples[0].value for name, fam in families.items()}
    assert value["db_up"] == 1 and value["db_processes"] >= 3
    assert 0 < value["db_cpu_usage_ratio"] <= 1
    assert 0 < value["db_memory_usage_ratio"] < 1 and value["db_memory_rss_bytes"] > 10 * MiB
    assert 0 < value["db_disk_usage_ratio"] < 1
    if exporter.collector.device is not None:  # Linux with a block device under the data dir
        busy = families["db_disk_io_busy_ratio"].samples[0]
        assert busy.labels["device"] == exporter.collector.device and 0 <= busy.value <= 1
    # A data dir without a running server: db_up 0 and no process families.
    (tmp_path / "postmaster.pid").write_text("999999999\n")
    down = {f.name for f in text_string_to_metric_families(DbExporter(tmp_path).render().decode())}
    assert "db_up" in down and "db_cpu_usage_ratio" not in down


def test_slow_statements_and_errors_reach_the_database_log(pg_server):
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_sleep(0.2)")
        cur.execute("SHOW log_connections")
        assert cur.fetchone()[0] == "off"
        cur.execute("SHOW log_lock_waits")
        assert cur.fetchone()[0] == "on"
    conn.close()
    deadline = time.monotonic() + 5
    while True:
        lines = pg_server.log_path.read_text().splitlines()
        slow = [line for line in lines if "statement: SELECT pg_sleep(0.2)" in line]
        if slow or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert slow and "duration: " in slow[-1] and "postgres@postgres" in slow[-1]
    assert float(slow[-1].split("duration: ")[1].split(" ms")[0]) >= 200


# -- Authorizer ------------------------------------------------------------------------------


def test_authorizer_logs_need_the_token_and_answer_json(info):
    url = f"{info['authorizer_url']}/admin/logs"
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 401
    response = requests.get(url, headers=_admin(info), timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    logs = response.json()["logs"]
    assert logs and all(set(e) == {"ts", "level", "event", "message"} for e in logs)
    assert {e["event"] for e in logs} >= {"failed login", "token validation error"}
    stamps = [datetime.fromisoformat(e["ts"]) for e in logs]
    assert stamps == sorted(stamps)
    assert len(requests.get(url, params={"limit": 3}, headers=_admin(info), timeout=5).json()["logs"]) == 3
    assert requests.get(url, params={"level": "fatal"}, headers=_admin(info), timeout=5).status_code == 422
    assert requests.get(url, params={"since": "yesterday"}, headers=_admin(info), timeout=5).status_code == 422


def test_authorizer_learns_users_inserted_later(info):
    authorizer, staging = info["authorizer_url"], info["staging"]
    new_id = "authz-later-0001"
    conn = psycopg2.connect(host=staging["host"], port=staging["port"], user=staging["user"],
                            password=staging["password"], dbname=staging["database"])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('INSERT INTO users (id, email, "authorizerId", "createdAt", "updatedAt") '
                    "VALUES ('later-1', 'later-1@example.test', %s, now(), now()) ON CONFLICT DO NOTHING", (new_id,))
    conn.close()
    assert requests.post(f"{authorizer}/admin/resync", timeout=5).status_code == 401
    resync = requests.post(f"{authorizer}/admin/resync", headers=_admin(info), timeout=5)
    assert resync.status_code == 200 and resync.json()["known"] >= 501
    assert requests.get(f"{authorizer}/admin/users/{new_id}", headers=_admin(info), timeout=5).status_code == 200


def test_known_ids_refresh_on_a_stale_miss():
    now = [0.0]
    source_ids = {"a"}
    calls = []

    def source():
        calls.append(now[0])
        return set(source_ids)

    known = KnownIds(["a"], source, refresh_s=10, clock=lambda: now[0])
    source_ids.add("b")
    assert "b" not in known and calls == []  # fresh: no re-read
    now[0] = 10.0
    assert "b" in known and calls == [10.0]
    source_ids.discard("a")
    assert "a" in known and "c" not in known and calls == [10.0]  # ids are kept; the miss was fresh


def test_authorizer_log_rates_and_faults():
    now = [1_000_000.0]
    log = AuthorizerLog(rate_per_s=2.0, backlog_s=100, rng=random.Random(3), clock=lambda: now[0])
    backlog = log.entries(limit=10_000)
    assert 150 <= len(backlog) <= 250 and {e["level"] for e in backlog} == {"warn"}
    log.apply_faults({"noisy": fault_params("noisy", {"webhook_errors_per_hour": 1, "time_scale": 3600})})
    now[0] += 100  # 100 soak hours (a wall second each) at 1 error an hour
    errors = log.entries(level="error", limit=10_000)
    assert 70 <= len(errors) <= 130 and {e["event"] for e in errors} == {"webhook delivery failure"}
    log.apply_faults({})
    now[0] += 100
    assert len(log.entries(level="error", limit=10_000)) == len(errors)
    log.add("error", "failed login", "login failed:\ninternal error")
    last = log.entries(limit=1)[0]
    assert last["level"] == "error" and "\n" not in last["message"]
    with pytest.raises(ValueError):
        log.add("fatal", "x", "y")
