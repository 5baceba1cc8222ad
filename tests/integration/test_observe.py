"""Taking observations on a real server: ticks from hour 0, no duplicates on restart,
missed ticks recorded as errors, a NO-GO stops the other checks, errors never pass."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from migration_soak import observe
from migration_soak.plan import load_plan
from migration_soak.store import Observation, RunClock
from tests.integration.conftest import query

PLAN = load_plan("default")
H0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SCALE = 3600.0  # one soak hour per wall second: intensive ticks every 0.25 s


def at(minutes: float) -> datetime:
    return H0 + timedelta(minutes=minutes) / SCALE


def test_due_ticks_are_measured_once_and_resume_after_a_restart(store, staging):
    p = observe.observe_due(PLAN, store, "r1", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(16))
    assert [(o.tick, o.status, o.value) for o in p.recorded] == [(1, "pass", 0.0)]
    assert not p.done and p.next_at == at(30)
    # A restarted task asking again at the same time records nothing new.
    again = observe.observe_due(PLAN, store, "r1", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(16))
    assert again.recorded == [] and again.next_at == at(30)
    # Last tick (2:00) measured: the phase is done.
    for minute in (31, 46, 61, 76, 91, 106):
        observe.observe_due(PLAN, store, "r1", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(minute))
    last = observe.observe_due(PLAN, store, "r1", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(121))
    assert last.done and last.next_at is None
    ticks = [o.tick for o in store.observations("r1", "intensive", "users_without_authorizer_id")]
    assert ticks == list(range(1, 9))


def test_ticks_missed_during_an_outage_are_errors_not_invented_values(store, staging):
    no_grace = timedelta(0)
    observe.observe_due(PLAN, store, "r2", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(16), late_grace=no_grace)
    p = observe.observe_due(PLAN, store, "r2", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(62), late_grace=no_grace)
    assert [(o.tick, o.status) for o in p.recorded] == [(2, "error"), (3, "error"), (4, "pass")]
    assert "missed" in p.recorded[0].evidence["error"]
    assert p.next_at == at(75)


def test_a_reading_after_an_error_starts_its_window_at_the_last_reading_with_a_value(store):
    """Log offsets and scrape counters resume from the series' last good reading: an
    ``error`` (a missed tick) carries none, and a fresh start would lose or recount lines."""
    good = Observation("r8", "regular", "critical_errors", 1, at(120), at(120), 0.0, "count", "pass", {"offset": 42})
    store.record(good)
    store.record(Observation("r8", "regular", "critical_errors", 2, at(240), at(240), None, "count", "error",
                             {"error": "missed"}))
    store.record(Observation("r8", "guard", "critical_errors", 1, at(241), at(241), 0.0, "count", "pass",
                             {"offset": 99}))
    previous = observe.previous_reading(store, "r8", "critical_errors", "regular")
    assert (previous.tick, previous.evidence) == (1, {"offset": 42})
    assert store.latest("r8", "critical_errors", exclude_phases=("guard",)).status == "error"


def test_a_late_tick_within_the_grace_is_measured_then_the_next_one_at_once(store, staging):
    grace = timedelta(minutes=20) / SCALE  # a tick may be measured until 20 soak-minutes after its successor
    p = observe.observe_due(PLAN, store, "r6", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(31), late_grace=grace)
    assert [(o.tick, o.status) for o in p.recorded] == [(1, "pass")]
    assert p.recorded[0].measured_at > p.recorded[0].scheduled_at
    assert p.next_at == at(30)  # already due: the task wakes again at once for tick 2
    p = observe.observe_due(PLAN, store, "r6", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(32), late_grace=grace)
    assert [(o.tick, o.status) for o in p.recorded] == [(2, "pass")] and p.next_at == at(45)


def test_a_no_go_breach_is_recorded_and_stops_every_other_check(store, staging):
    query(staging, 'UPDATE users SET "authorizerId" = NULL WHERE id IN (\'usr_0000001\', \'usr_0000002\')')
    p = observe.observe_due(PLAN, store, "r3", "intensive", "users_without_authorizer_id", H0, SCALE, now=at(16))
    assert p.recorded[0].status == "fail" and p.recorded[0].value == 2.0
    assert p.done and p.stopped_by["criterion"] == "no_go_users_without_authorizer_id"
    assert store.no_go("r3")["criterion"] == "no_go_users_without_authorizer_id"
    other = observe.observe_due(PLAN, store, "r3", "regular", "gateway_health", H0, SCALE, now=at(200))
    assert other.done and other.recorded == [] and other.stopped_by["criterion"] == "no_go_users_without_authorizer_id"


def test_a_fail_reading_that_no_criterion_breaches_does_not_stop_the_soak(store, monkeypatch):
    """One auth error rate reading above 1 % is not "sustained > 5 minutes": the soak goes on."""
    from migration_soak.store import Observation

    store.record(Observation("r7", "intensive", "auth_error_rate", 1, at(15), at(15), 0.05, "ratio", "fail"))
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_GATEWAY", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}))
    p = observe.observe_due(PLAN, store, "r7", "intensive", "login_p95", H0, SCALE, now=at(16))
    assert p.stopped_by is None and store.no_go("r7") is None


def test_an_unreachable_metrics_endpoint_is_an_error_observation(store, monkeypatch):
    # Port 9 on loopback: nothing listens there.
    monkeypatch.setenv("AIRFLOW_CONN_SOAK_GATEWAY", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http"}))
    p = observe.observe_due(PLAN, store, "r4", "intensive", "auth_error_rate", H0, SCALE, now=at(16))
    (obs,) = p.recorded
    assert obs.status == "error" and obs.value is None
    assert "scrape of /metrics failed" in obs.evidence["error"]
    # ...while a health check on the same dead service measures "down" (0), a value.
    p = observe.observe_due(PLAN, store, "r4", "intensive", "gateway_health", H0, SCALE, now=at(16))
    assert (p.recorded[0].status, p.recorded[0].value) == ("warn", 0.0)


def test_store_keeps_the_first_observation_of_a_tick(store):
    o = Observation("r5", "regular", "login_p95", 2, H0, H0, 10.0, "ms", "pass", {"a": 1})
    assert store.record(o) is True
    assert store.record(Observation("r5", "regular", "login_p95", 2, H0, H0, 99.0, "ms", "fail")) is False
    (kept,) = store.observations("r5")
    assert kept.value == 10.0 and store.first_failure("r5") is None
    with pytest.raises(ValueError, match="needs a value"):
        Observation("r5", "regular", "login_p95", 3, H0, H0, None, "ms", "pass")


def test_readings_load_with_their_soak_time_on_the_runs_clock(store):
    """Hour 0 from the ``hour0`` event (before it: ``verified``, else the baseline's start);
    each reading's soak seconds at its scheduled and measured times, negative before hour 0."""
    store.add_event("rc", "baseline_start", {"at": at(-90).isoformat()})
    assert store.clock("rc", SCALE) == RunClock(at(-90), SCALE)
    store.add_event("rc", "verified", {"at": at(-5).isoformat()})
    assert store.clock("rc", SCALE) == RunClock(at(-5), SCALE)
    store.add_event("rc", "hour0", {"hour0": H0.isoformat()})
    store.add_event("rc", "hour0", {"hour0": at(1).isoformat()})  # a second one never moves hour 0
    clock = store.clock("rc", SCALE)
    assert clock == RunClock(H0, SCALE)
    store.record(Observation("rc", "baseline", "login_p95", 1, at(-60), at(-59), 10.0, "ms", "pass"))
    store.record(Observation("rc", "intensive", "login_p95", 1, at(15), at(16), 10.0, "ms", "pass"))
    soak = [t for o in store.observations("rc", clock=clock) for t in (o.soak_s, o.measured_soak_s)]
    assert soak == pytest.approx([-3600, -3540, 900, 960], abs=0.01)  # wall times are whole microseconds
    assert {o.soak_s for o in store.observations("rc")} == {None}  # without the clock: wall time only


def test_the_guard_and_the_phase_checks_each_start_their_window_at_their_own_last_reading(store):
    def rec(phase, tick, minute):
        o = Observation("r6", phase, "critical_errors", tick, at(minute), at(minute), 0.0, "count", "pass",
                        {"offset": minute})
        assert store.record(o)
    rec("baseline", 1, -5)
    assert observe.previous_reading(store, "r6", "critical_errors", "intensive") is None  # never before the migration
    assert observe.previous_reading(store, "r6", "critical_errors", "baseline").evidence == {"offset": -5}
    rec("intensive", 1, 5)
    rec("guard", 6, 6)  # the guard read the same log a moment later
    # a phase reading counts every line since the phase series' last reading, not the guard's
    assert observe.previous_reading(store, "r6", "critical_errors", "intensive").evidence == {"offset": 5}
    assert observe.previous_reading(store, "r6", "critical_errors", "regular").evidence == {"offset": 5}
    assert observe.previous_reading(store, "r6", "critical_errors", "guard").evidence == {"offset": 6}
    rec("regular", 1, 60)
    assert observe.previous_reading(store, "r6", "critical_errors", "guard").evidence == {"offset": 6}


def test_one_soak_per_database_whatever_the_plan(store):
    def take(key, run_id, plan):
        return store.take_lease(key, f"database {key}", run_id, plan, "staging")

    first = take("system 1/staging", "run-a", "default")
    assert first["run_id"] == "run-a" and first["database"] == "database system 1/staging"
    assert take("system 1/staging", "run-a", "default")["run_id"] == "run-a"  # a retried task
    assert take("system 1/staging", "run-b", "other")["run_id"] == "run-a"  # refused: held by run-a
    assert take("system 1/preprod", "run-b", "other")["run_id"] == "run-b"  # another database
    assert store.lease_of("run-a", "default")["database_key"] == "system 1/staging"
    assert store.release_lease("run-a", "other") is False  # only the holder releases
    assert store.release_lease("run-a", "default") is True
    assert store.lease_of("run-a", "default") is None
    assert take("system 1/staging", "run-b", "other")["run_id"] == "run-b"


# --- the guard -----------------------------------------------------------------------------------

def guard_plan(tmp_path, alert_above: float = 0.0, plan_name: str = "guardtest"):
    """A small plan whose guard reads two SQL checks every soak minute (no wall floor): the
    users check (NO-GO at any user without authorizerId) and connection usage, with an
    alert "connection usage > ``alert_above`` for 2 minutes". Returns (path, plan)."""
    import yaml

    from migration_soak.plan import REPO_ROOT, load_plan as load

    data = yaml.safe_load((REPO_ROOT / "tests" / "faults" / "plans" / "restart.yaml").read_text())
    default = yaml.safe_load((REPO_ROOT / "include" / "plans" / "default.yaml").read_text())
    data["phases"] = [{"name": "soak", "start_hour": 0, "end_hour": 0.1, "every_minutes": 3}]
    data["checks"] = [c for c in data["checks"] if c["id"] == "users_without_authorizer_id"] + \
        [{**next(c for c in default["checks"] if c["id"] == "connection_usage"), "phases": ["soak"]}]
    data["go"] = [g for g in data["go"] if g["checks"] == ["users_without_authorizer_id"]]
    data["guard"] = {"every_minutes": 1, "min_wall_seconds": 1, "checks": ["users_without_authorizer_id", "connection_usage"]}
    data["alerts"] = [{"id": "pool_busy", "text": "connection usage high for 2 minutes", "checks": ["connection_usage"],
                       "rule": {"kind": "sustained", "op": ">", "value": alert_above, "minutes": 2}}]
    path = tmp_path / f"{plan_name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, load(str(path))


GUARD_SCALE = 60.0  # one soak minute per wall second


def gat(minutes: float) -> datetime:
    return H0 + timedelta(minutes=minutes) / GUARD_SCALE


def test_the_guard_measures_the_latest_due_tick_once(store, staging, tmp_path):
    _, plan = guard_plan(tmp_path, alert_above=0.99)
    p = observe.guard_due(plan, store, "g1", H0, GUARD_SCALE, now=gat(0.5))
    assert p.tick is None and p.recorded == [] and p.next_at == gat(1)
    p = observe.guard_due(plan, store, "g1", H0, GUARD_SCALE, now=gat(1.2))
    assert p.tick == 1 and sorted(o.check_id for o in p.recorded) == ["connection_usage", "users_without_authorizer_id"]
    assert all(o.phase == "guard" and o.scheduled_at == gat(1) for o in p.recorded)
    assert p.next_at == gat(2) and not p.done and p.alerts == []
    # again (a triggerer restarted): nothing measured twice
    again = observe.guard_due(plan, store, "g1", H0, GUARD_SCALE, now=gat(1.4))
    assert again.tick is None and again.recorded == [] and again.next_at == gat(2)
    # a wake-up late by 2 ticks measures the latest (4) only: the missed ones are gaps
    p = observe.guard_due(plan, store, "g1", H0, GUARD_SCALE, now=gat(4.1))
    assert p.tick == 4
    assert sorted({o.tick for o in store.observations("g1", phase="guard")}) == [1, 4]
    # the soak is 6 minutes long: the last guard tick is 6
    last = observe.guard_due(plan, store, "g1", H0, GUARD_SCALE, now=gat(30))
    assert last.tick == 6 and last.next_at is None and last.done


def test_the_guard_records_the_no_go_it_sees_once(store, staging, tmp_path):
    _, plan = guard_plan(tmp_path, alert_above=0.99)
    query(staging, 'UPDATE users SET "authorizerId" = NULL WHERE id = \'usr_0000003\'')
    p = observe.guard_due(plan, store, "g2", H0, GUARD_SCALE, now=gat(1))
    assert p.breached_now and p.stopped_by["criterion"] == "no_go_users_without_authorizer_id" and p.done
    assert [e["payload"]["criterion"] for e in store.events("g2", "no_go")] == ["no_go_users_without_authorizer_id"]
    later = observe.guard_due(plan, store, "g2", H0, GUARD_SCALE, now=gat(2))
    assert later.stopped_by is not None and not later.breached_now and later.recorded == []
    assert len(store.events("g2", "no_go")) == 1


def test_the_guard_reports_an_alert_when_its_window_is_covered_until_notified(store, staging, tmp_path):
    _, plan = guard_plan(tmp_path, alert_above=0.0)  # some connection is always open: fires after 2 minutes
    assert observe.guard_due(plan, store, "g3", H0, GUARD_SCALE, now=gat(1)).alerts == []
    assert observe.guard_due(plan, store, "g3", H0, GUARD_SCALE, now=gat(2)).alerts == []
    p = observe.guard_due(plan, store, "g3", H0, GUARD_SCALE, now=gat(3))
    assert [a["alert"] for a in p.alerts] == ["pool_busy"] and "3 consecutive readings" in p.alerts[0]["detail"]
    store.add_event("g3", "alert", {"alert": "pool_busy", "text": p.alerts[0]["text"]})
    assert observe.guard_due(plan, store, "g3", H0, GUARD_SCALE, now=gat(4)).alerts == []


def test_the_guard_cadence_has_a_wall_clock_floor():
    from migration_soak import clock

    assert PLAN.guard.every_minutes == 1 and PLAN.guard.min_wall_seconds == 3
    assert clock.guard_every(PLAN, 1) == timedelta(minutes=1)
    assert clock.guard_every(PLAN, 20) == timedelta(minutes=1)  # 3 s of wall time
    assert clock.guard_every(PLAN, 300) == timedelta(minutes=15)  # not every 0.2 s
    assert len(clock.offsets(PLAN, "guard", 1)) == 24 * 60
    assert len(clock.offsets(PLAN, "guard", 300)) == 24 * 4


def test_a_guard_wake_logs_in_once_for_all_its_sql_checks(store, staging, tmp_path, monkeypatch):
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    _, plan = guard_plan(tmp_path, alert_above=0.99)
    logins, real = [], PostgresHook.get_conn

    def counting(self):
        logins.append(self.postgres_conn_id)
        return real(self)

    monkeypatch.setattr(PostgresHook, "get_conn", counting)
    p = observe.guard_due(plan, store, "g9", H0, GUARD_SCALE, now=gat(1.1))
    assert len(p.recorded) == 2 and all(o.status == "pass" for o in p.recorded)
    assert logins == ["soak_staging"]
    observe.guard_due(plan, store, "g9", H0, GUARD_SCALE, now=gat(2.1))
    assert logins == ["soak_staging"] * 2  # the next wake-up logs in again: nothing held between
