"""The runbook's steps (runbook.py) without a database: fakes for the store, the backend,
the read-only query and the health endpoints; the same messages the tasks fail with."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from migration_soak import notify, runbook
from migration_soak.backup import BackupRecord
from migration_soak.decision import Decision
from migration_soak.exceptions import LintError, MigrationError, PlanError, RollbackError, SoakError
from migration_soak.identity import DatabaseIdentity
from migration_soak.migrate import DeployResult, LockAttempt, MigrationState
from migration_soak.plan import SQL_DIR, load_plan

PLAN = load_plan("default")
NAME = PLAN.migration.name
INIT = "20250101000000_init"
#: The staging database as its server names it (identity.identify), and the lease's
#: identify callables of a run whose plans all reach it.
STAGING = DatabaseIdentity("system 7400000000000000001/staging", "staging", "soak@db.internal:5432/staging")
IDENTIFY = {"identify": lambda: STAGING, "identify_plan": lambda name: STAGING}


class FakeStore:
    """The ``Store`` methods the runbook uses, in memory."""

    def __init__(self, lease: dict | None = None, legacy: list[dict] | None = None):
        self.recorded: list[tuple[str, str, dict]] = []
        self.lease = lease  # the one staging database's lease
        self.legacy = list(legacy or [])  # leases taken before the upgrade (keyed on an environment name)

    def add_event(self, run_id, kind, payload):
        self.recorded.append((run_id, kind, payload))

    def events(self, run_id, kind=None):
        return [{"kind": k, "payload": p} for r, k, p in self.recorded if r == run_id and kind in (None, k)]

    def take_lease(self, database_key, database, run_id, plan, environment):
        if self.lease is None:
            self.lease = {"database_key": database_key, "database": database, "run_id": run_id, "plan": plan,
                          "environment": environment, "taken_at": datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)}
        return self.lease

    def claim_run(self, run_id, plan, *, file_name, opening, dag_run=None):
        self.claims = getattr(self, "claims", {})
        owner = self.claims.setdefault(run_id, {"run_id": run_id, "plan": plan, "claimed_at": datetime(2026, 1, 2)})
        return None if owner["plan"] == plan else owner

    def lease_of(self, run_id, plan):
        held = self.lease is not None and (self.lease["run_id"], self.lease["plan"]) == (run_id, plan)
        return self.lease if held else None

    def legacy_leases(self):
        return list(self.legacy)

    def kinds(self) -> list[str]:
        return [k for _, k, _ in self.recorded]


class FakeBackend:
    def __init__(self, states: dict[str, str] | None = None, deployed=None, error: Exception | None = None):
        self.states, self.deployed, self.error = states or {}, deployed, error

    def status(self):
        if self.error:
            raise self.error
        return [MigrationState(name, None, state) for name, state in self.states.items()]

    def deploy(self):
        if self.error:
            raise self.error
        return self.deployed


class FakeLint:
    def __init__(self, ok=True):
        self.ok = ok
        self.names = None

    def to_dict(self):
        return {"ok": self.ok, "names": self.names}


@pytest.fixture
def checks(monkeypatch):
    """No pooler probe and no squawk: record what preflight asked of them."""
    calls = {}
    monkeypatch.setattr(runbook, "require_direct", lambda target, field: calls.setdefault("direct", field))

    def lint(plan, names):
        calls["lint"] = list(names)
        return FakeLint()

    monkeypatch.setattr(runbook.lint_mod, "check", lint)
    monkeypatch.setattr(runbook, "drops", lambda plan, names: calls.setdefault("drops", list(names)))
    monkeypatch.setattr(runbook, "own_timeouts", lambda plan, names: calls.setdefault("own_timeouts", list(names)))
    monkeypatch.setattr(runbook, "down_sql", lambda plan: calls.setdefault("down_sql", True))
    monkeypatch.setattr(runbook, "logs_readable", lambda plan: calls.setdefault("logs", True))
    monkeypatch.setattr(runbook, "fingerprint_columns", lambda plan, query: calls.setdefault("fingerprint", True))
    return calls


def run_preflight(store, states=None, missing=0, statuses=None, backend=None):
    asked = []

    def health(conn_id):
        asked.append(conn_id)
        return (statuses or {}).get(conn_id, 200)

    out = runbook.preflight(PLAN, "r1", store, direct=object(), direct_field="connections.staging_direct",
                            migrations=backend or FakeBackend(states if states is not None else
                                                              {INIT: "applied", NAME: "pending"}),
                            query=lambda sql: [(missing,)], health_status=health)
    return out, asked


def test_preflight_passes_records_the_states_and_lints_every_pending_migration(checks):
    store = FakeStore()
    out, asked = run_preflight(store, states={INIT: "applied", NAME: "rolled_back", "later": "pending"})
    assert out == {"migrations": {INIT: "applied", NAME: "rolled_back", "later": "pending"}}
    assert checks == {"direct": "connections.staging_direct", "lint": [NAME, "later"], "drops": [NAME, "later"],
                      "own_timeouts": [NAME, "later"], "down_sql": True, "logs": True, "fingerprint": True}
    assert sorted(asked) == ["soak_authorizer", "soak_gateway"]
    assert store.kinds() == ["lint", "preflight"]
    assert store.recorded[-1][2] == {**out, "text": "all prerequisites hold"}


@pytest.mark.parametrize("states, message", [
    ({INIT: "applied"}, f"migration {NAME!r} not found in {PLAN.migration.migrations_dir}"),
    ({NAME: "applied"}, f"migration {NAME!r} is applied, not pending: nothing to soak"),
    ({NAME: "failed"}, f"migration {NAME!r} is failed, not pending: nothing to soak"),
])
def test_preflight_refuses_a_migration_that_is_not_pending(checks, states, message):
    store = FakeStore()
    with pytest.raises(MigrationError) as err:
        run_preflight(store, states=states)
    assert str(err.value) == message
    assert "lint" not in checks and store.kinds() == []


def test_preflight_names_a_failing_status_read_as_migration_status(checks):
    with pytest.raises(MigrationError, match=r"^migration status: P1001 cannot reach the database$"):
        run_preflight(FakeStore(), backend=FakeBackend(error=MigrationError("P1001 cannot reach the database")))


def test_preflight_stops_at_users_without_authorizer_id_before_the_health_checks(checks):
    store = FakeStore()
    with pytest.raises(MigrationError) as err:
        run_preflight(store, missing=3, statuses={"soak_gateway": 503})
    assert str(err.value) == ("preflight.require[users_without_authorizer_id]: 3, expected == 0 (Pre-requisito: "
                              "todos los usuarios tienen authorizerId): the migration must not start")
    assert store.kinds() == ["lint"]  # linted, not passed


def test_a_requirement_runs_the_plans_query_and_refuses_a_cell_that_is_not_a_number():
    (requirement,) = PLAN.preflight.require
    asked: list[str] = []
    assert runbook.require(requirement, lambda sql: asked.append(sql) or [(0,)]) == 0
    assert asked == [(SQL_DIR / "users_without_authorizer_id.sql").read_text(encoding="utf-8")]
    with pytest.raises(MigrationError, match=r"^preflight\.require\[users_without_authorizer_id\]: 1234567, expected"):
        runbook.require(requirement, lambda sql: [(1234567,)])
    for rows in ([], [(None,)], [("many",)]):
        with pytest.raises(MigrationError, match=r"^preflight\.require\[users_without_authorizer_id\]: the query's "
                                                 r"first cell is .*, not a number \(Pre-requisito: .*\): the migration"):
            runbook.require(requirement, lambda sql: rows)


def test_the_columns_back_query_names_the_plans_table_and_columns_quoted():
    assert runbook.columns_present_sql("users", ["passwordHash", "emailVerified"]) == (
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'users' "
        "AND column_name IN ('passwordHash', 'emailVerified')")
    assert "table_schema = 'app' AND table_name = 'users'" in runbook.columns_present_sql("app.users", ["a"])
    assert "table_name = 'o''brien'" in runbook.columns_present_sql("o'brien", ["a"])
    with pytest.raises(PlanError, match="NUL"):
        runbook.columns_present_sql("users", ["a\x00b"])


def test_preflight_refuses_a_service_that_is_not_healthy(checks):
    store = FakeStore()
    with pytest.raises(MigrationError) as err:
        run_preflight(store, statuses={"soak_authorizer": 502})
    assert str(err.value) == "soak_authorizer: /health answered 502 before the migration"
    assert "preflight" not in store.kinds()


def test_preflight_records_a_lint_failure_that_has_a_result_and_raises_it(checks, monkeypatch):
    def lint(plan, names):
        raise LintError("migration lint: 1 squawk finding(s) the plan does not accept", FakeLint(ok=False))

    monkeypatch.setattr(runbook.lint_mod, "check", lint)
    store = FakeStore()
    with pytest.raises(LintError, match="^migration lint: 1 squawk"):
        run_preflight(store)
    assert store.recorded == [("r1", "lint", {"ok": False, "names": None})]


def measured(values: dict[str, float]):
    return lambda check: values[check.id]


def test_post_rollback_health_ok_when_services_are_up_and_the_columns_are_back():
    store, asked = FakeStore(), []
    out = runbook.post_rollback_health(PLAN, "r1", store, measure=measured({"gateway_health": 1.0,
                                                                            "authorizer_health": 1.0}),
                                       query=lambda sql: asked.append(sql) or [("passwordHash",), ("emailVerified",)])
    assert asked == [runbook.columns_present_sql("users", ["passwordHash", "emailVerified"])]
    assert out == {"gateway_health": 1.0, "authorizer_health": 1.0, "columns_back": ["emailVerified", "passwordHash"]}
    assert store.recorded == [("r1", "health", {**out, "ok": True, "text": "post-rollback health ok"})]


@pytest.mark.parametrize("values, columns", [
    ({"gateway_health": 0.0, "authorizer_health": 1.0}, ["passwordHash", "emailVerified"]),
    ({"gateway_health": 1.0, "authorizer_health": 1.0}, ["passwordHash"]),
    ({"gateway_health": 1.0, "authorizer_health": 1.0}, []),
])
def test_post_rollback_health_fails_on_a_service_down_or_a_column_missing(values, columns):
    store = FakeStore()
    with pytest.raises(RollbackError) as err:
        runbook.post_rollback_health(PLAN, "r1", store, measure=measured(values),
                                     query=lambda sql: [(c,) for c in columns])
    results = {**values, "columns_back": sorted(columns)}
    assert str(err.value) == f"post-rollback health failed: {results}"
    assert store.recorded == [("r1", "health", {**results, "ok": False, "text": "post-rollback health FAILED"})]


def test_health_ok_wants_exactly_the_dropped_columns():
    assert runbook.health_ok({"a": 1.0, "columns_back": ["y", "x"]}, ["x", "y"])
    assert not runbook.health_ok({"a": 1.0, "columns_back": ["x", "y", "z"]}, ["x", "y"])
    assert not runbook.health_ok({"a": 0.5, "columns_back": ["x"]}, ["x"])


def test_moment_keeps_the_first_recorded_time():
    store = FakeStore()
    first = runbook.moment(store, "r1", "hour0", "hour0", "Hora 0 checklist done; the soak clock starts")
    assert datetime.fromisoformat(first).tzinfo is not None
    assert runbook.moment(store, "r1", "hour0", "hour0", "again") == first  # a retried task
    assert store.recorded == [("r1", "hour0", {"hour0": first, "text": "Hora 0 checklist done; the soak clock starts"})]


def test_admit_refuses_another_environment_and_a_held_lease():
    with pytest.raises(PlanError) as err:
        runbook.admit(PLAN, "r1", FakeStore(), environment="prod", plan_param="default", **IDENTIFY)
    assert str(err.value) == f"environment: the plan {PLAN.name!r} is for 'staging', the run asked for 'prod'"
    store = FakeStore()
    runbook.admit(PLAN, "r1", store, environment="staging", plan_param="default", **IDENTIFY)  # free: taken
    assert store.lease["database_key"] == "system 7400000000000000001/staging"
    held = FakeStore(lease={"database": str(STAGING), "run_id": "other", "plan": "canary", "environment": "canary",
                            "taken_at": datetime(2026, 1, 2, 3, 4)})
    with pytest.raises(SoakError) as err:
        runbook.admit(PLAN, "r1", held, environment="staging", plan_param="default", **IDENTIFY)
    assert str(err.value) == ("database 'staging' of PostgreSQL system 7400000000000000001 (reached as "
                              "soak@db.internal:5432/staging) is being soaked by run other (plan canary, environment "
                              "'canary', since 2026-01-02 03:04 UTC); this run r1 (plan default, environment "
                              "'staging') is refused")


def test_deploy_records_lock_timeouts_and_a_failure_with_its_attempts():
    waited = LockAttempt(NAME, 1, "lock_timeout", 2.0, 0.5, "canceling statement due to lock timeout")
    result = DeployResult((NAME,), (INIT,), attempts=(waited, LockAttempt(NAME, 2, "ok", 0.1)))
    store = FakeStore()
    assert runbook.deploy("r1", store, FakeBackend(deployed=result)) == result.to_dict()
    assert store.recorded[-1][2]["text"] == f"applied ['{NAME}'] after 1 lock timeout(s), retried"
    failure = MigrationError("lock timeout 3 times")
    failure.lock_attempts = [waited]  # type: ignore[attr-defined]
    with pytest.raises(MigrationError) as err:
        runbook.deploy("r2", store, FakeBackend(error=failure))
    assert err.value is failure
    assert store.events("r2") == [{"kind": "migrate_failed", "payload": {
        "text": "lock timeout 3 times", "lock_attempts": [waited.to_dict()]}}]
    # LedgerBackend's error carries its attempts as dicts (migrate.py): the event was lost
    # to an AttributeError ('dict' object has no attribute 'to_dict') that hid the error
    ledger = MigrationError("lock timeout, retries exhausted")
    ledger.lock_attempts = (waited.to_dict(),)  # type: ignore[attr-defined]
    with pytest.raises(MigrationError) as err:
        runbook.deploy("r3", store, FakeBackend(error=ledger))
    assert err.value is ledger
    assert store.events("r3")[0]["payload"]["lock_attempts"] == [waited.to_dict()]


def test_confirm_with_prisma_without_a_project_does_nothing():
    store = FakeStore()
    runbook.confirm_with_prisma("r1", store, None, NAME, "applied")
    assert store.recorded == []


def test_backup_and_restore_events_summarise_their_figures():
    record = BackupRecord(path=None, size_bytes=1234, sha256="ab" * 32, duration_s=1.5, pg_dump_version="18.0",
                          server_version="18.0", tables=("users",), reused=True, location="file:///b/x.dump",
                          created_at=datetime(2026, 1, 2, tzinfo=timezone.utc))
    event = runbook.backup_event(record)
    assert event["text"] == f"1234 bytes, sha256 {'ab' * 6}, kept at file:///b/x.dump (reused)"
    assert {k: v for k, v in event.items() if k != "text"} == record.to_dict()
    restored = {"table": "public.accounts", "values_restored": 10, "rows_matched": 5, "rows_at_backup": 6,
                "mismatches": 0, "values_kept": 2, "ddl_s": 0.0312, "batches": 3}
    assert runbook.restore_event(restored)["text"] == (
        "restored 10 values for 5 of 6 rows of accounts present at backup time; 0 mismatches; 2 newer values written "
        "by the app after the re-add kept; ACCESS EXCLUSIVE only for the 0.03 s re-add, then 3 row-locked batches")
    rebuilt = {**restored, "method": "rebuild", "swap_s": 0.0212, "batches": 2}
    assert runbook.restore_event(rebuilt)["text"].endswith(
        "kept; rebuilt and swapped in: ACCESS EXCLUSIVE only for the re-add and the 0.02 s swap, after 2 catch-up rounds")
    # an event stored before the counts were named for rows still reads
    old = {"table": "public.users", "values_restored": 4, "users_matched": 2, "users_at_backup": 3, "mismatches": 0}
    assert runbook.restore_event(old)["text"].startswith(
        "restored 4 values for 2 of 3 rows of users present at backup time; 0 mismatches;")


def test_the_rollback_is_announced_with_the_decision_that_caused_it():
    final = Decision("NO_GO", "rollback", "judge", "auth error rate 2.1% > 1%")
    reason = notify.rollback_reason(final)
    assert reason == "ROLLBACK INITIATED - Reason: NO_GO: auth error rate 2.1% > 1%"
    assert notify.rollback_text(PLAN, reason) == f":rotating_light: [staging] {NAME}: {reason}"
    assert notify.rollback_done_text(PLAN, "pm.md") == (
        f":white_check_mark: [staging] rollback of {NAME} completed; post-mortem pm.md")


def test_hour0_is_the_lead_after_the_checklist_and_a_retry_keeps_it():
    """``start_clock`` records hour 0 ``clock_lead_s`` after now, once: a retried task must
    not restart the soak clock."""
    from datetime import timedelta

    store = FakeStore()
    before = datetime.now(timezone.utc)
    at = datetime.fromisoformat(runbook.moment(store, "r", "hour0", "hour0", "clock", lead_s=10))
    assert before + timedelta(seconds=10) <= at <= datetime.now(timezone.utc) + timedelta(seconds=10)
    assert runbook.moment(store, "r", "hour0", "hour0", "clock", lead_s=99) == at.isoformat()
    assert store.kinds() == ["hour0"]


class ObservedStore(FakeStore):
    """FakeStore with readings: the healthy 24 h soak of tests/unit/test_judge.py."""

    def __init__(self, obs):
        super().__init__()
        self.obs = obs

    def observations(self, run_id, phase=None, check_id=None, clock=None):
        return [o for o in self.obs if phase in (None, o.phase) and check_id in (None, o.check_id)]

    def clock(self, run_id, time_scale):
        return None


@pytest.mark.parametrize("failed", [["restart_apps", "hour0.auth_error_rate"], ["regular.login_p95"]])
def test_a_task_that_failed_after_the_migration_turns_a_go_into_inconclusive(failed):
    """A GO needs the soak as planned: with a task failed after the migration (a check task
    out of retries, restart_apps) the run is judged, never left without a decision, and at
    best INCONCLUSIVE, the failed tasks named first."""
    from test_judge import PLAN as JPLAN, full_soak

    assert runbook.judge_soak(JPLAN, "r", ObservedStore(full_soak()), 1.0).decision == "GO"
    store = ObservedStore(full_soak())
    v = runbook.judge_soak(JPLAN, "r", store, 1.0, failed=failed)
    assert v.decision == "INCONCLUSIVE"
    assert v.reasons == [f"task{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed or could not run after the "
                         "migration: the soak did not run as planned"]
    assert store.events("r", "verdict")[0]["payload"]["decision"] == "INCONCLUSIVE"


def test_a_check_task_that_measured_nothing_is_named_with_what_it_read():
    """A check task failed because every reading was an error (observe.unmeasured): the
    INCONCLUSIVE names it with its readings and their cause, not as "failed or could not run"."""
    from dataclasses import replace

    from test_judge import PLAN as JPLAN, full_soak

    soak = [replace(o, value=None, status="error", evidence={"error": "scrape of /metrics answered HTTP 503"})
            if (o.phase, o.check_id) == ("regular", "login_p95") else o for o in full_soak()]
    n = sum(1 for o in soak if (o.phase, o.check_id) == ("regular", "login_p95"))
    v = runbook.judge_soak(JPLAN, "r", ObservedStore(soak), 1.0, failed=["regular.login_p95", "restart_apps"])
    assert v.decision == "INCONCLUSIVE" and n > 1
    assert v.reasons[:2] == [
        "task restart_apps failed or could not run after the migration: the soak did not run as planned",
        f"task regular.login_p95 measured nothing (login_p95 regular: 0 of {n} readings measured, every one an "
        "error: 'scrape of /metrics answered HTTP 503'): the soak did not run as planned"]


def test_a_no_go_stands_when_a_task_failed_too():
    from test_judge import PLAN as JPLAN, full_soak, set_value

    soak = set_value(full_soak(), "users_without_authorizer_id", 60, 3)
    assert runbook.judge_soak(JPLAN, "r", ObservedStore(soak), 1.0, failed=["guard"]).decision == "NO_GO"


def test_the_default_plan_lists_exactly_what_its_migration_drops():
    runbook.drops(PLAN, [NAME])  # passwordHash and emailVerified of users


def test_a_plan_that_leaves_out_a_dropped_column_is_refused_before_the_migration():
    """The down SQL re-adds "emailVerified" with DEFAULT false: unlisted, its values would
    come back false with "0 mismatches" (only listed columns are compared)."""
    m = PLAN.migration.model_copy(update={"dropped_columns": ["passwordHash"]})
    with pytest.raises(MigrationError, match=r"migration.dropped_columns \['passwordHash'\] leaves out "
                                             r"\['emailVerified'\], which the migration drops"):
        runbook.drops(PLAN.model_copy(update={"migration": m}), [NAME])


def test_a_log_file_that_cannot_be_read_stops_the_soak_before_the_migration(tmp_path, monkeypatch):
    monkeypatch.setenv("SOAK_APP_LOG", str(tmp_path / "app.log"))
    monkeypatch.delenv("SOAK_DB_LOG", raising=False)
    (tmp_path / "app.log").write_text("ok\n")
    with pytest.raises(MigrationError, match=r"checks\[db_slow_queries\].source.file: log file '\$SOAK_DB_LOG': "
                                             "environment variable not set: the migration must not start"):
        runbook.logs_readable(PLAN)
    monkeypatch.setenv("SOAK_DB_LOG", str(tmp_path / "app.log"))
    runbook.logs_readable(PLAN)


@pytest.mark.parametrize("argv, message", [
    (["no-such-log-tool", "--since", "1h"], r"log command not found: 'no-such-log-tool'"),
    (["sh", "-c", "echo nope >&2; exit 3"], r"log command exited 3: .*nope"),
])
def test_a_log_command_that_does_not_run_stops_the_soak_before_the_migration(tmp_path, monkeypatch, argv, message):
    """A command reader was found broken only at its first reading, after the DDL."""
    monkeypatch.setenv("SOAK_APP_LOG", str(tmp_path / "app.log"))
    monkeypatch.setenv("SOAK_DB_LOG", str(tmp_path / "app.log"))
    (tmp_path / "app.log").write_text("ok\n")
    check = PLAN.check("critical_errors")
    source = check.source.model_copy(update={"file": None, "command": argv})
    plan = PLAN.model_copy(update={"checks": [check.model_copy(update={"source": source}) if c.id == check.id else c
                                              for c in PLAN.checks]})
    with pytest.raises(MigrationError, match=r"^checks\[critical_errors\]\.source\.command: " + message
                                             + ": the migration must not start$"):
        runbook.logs_readable(plan)
    ok = source.model_copy(update={"command": ["echo", "ready"]})
    runbook.logs_readable(PLAN.model_copy(update={"checks": [check.model_copy(update={"source": ok})
                                                             if c.id == check.id else c for c in PLAN.checks]}))


def _with_down_sql(tmp_path, text: str):
    down = tmp_path / "down.sql"
    down.write_text(text)
    return PLAN.model_copy(update={"migration": PLAN.migration.model_copy(update={"down_sql": str(down)})})


def test_the_default_plans_down_sql_and_migration_pass_preflight():
    runbook.down_sql(PLAN)
    runbook.own_timeouts(PLAN, [INIT, NAME])


@pytest.mark.parametrize(("text", "message"), [
    ("ALTER TABLE users ADD COLUMN", r"migration\.down_sql .*down\.sql does not parse: syntax error at end of input"),
    ('BEGIN; ALTER TABLE "users" ADD COLUMN "passwordHash" TEXT; COMMIT;', "has its own transaction control: 'BEGIN'"),
    ("SET LOCAL lock_timeout = '1h'; ALTER TABLE users ADD COLUMN \"passwordHash\" TEXT;",
     "sets its own timeout: \"SET LOCAL lock_timeout = '1h'\""),
    ('ALTER TABLE "users" ADD COLUMN "emailVerified" BOOLEAN NOT NULL DEFAULT (random() > 0.5);',
     r"re-adds users\.emailVerified with DEFAULT \(random\(\) > 0\.5\), not a constant"),
])
def test_a_down_sql_that_cannot_run_safely_stops_the_soak_before_the_migration(tmp_path, text, message):
    with pytest.raises(MigrationError, match=message + ".*: the migration must not start"):
        runbook.down_sql(_with_down_sql(tmp_path, text))


def test_a_down_sql_removed_after_the_plan_loaded_stops_the_soak_before_the_migration(tmp_path):
    plan = _with_down_sql(tmp_path, "SELECT 1;")
    (tmp_path / "down.sql").unlink()
    with pytest.raises(MigrationError, match=r"migration\.down_sql .*down\.sql: cannot be read \(.*No such file"):
        runbook.down_sql(plan)


def test_a_migration_that_sets_its_own_lock_timeout_stops_the_soak_before_the_migration(tmp_path):
    folder = tmp_path / "migrations" / NAME
    folder.mkdir(parents=True)
    (folder / "migration.sql").write_text('SET lock_timeout = 0;\nALTER TABLE "users" DROP COLUMN "passwordHash";')
    m = PLAN.migration.model_copy(update={"migrations_dir": str(tmp_path / "migrations")})
    with pytest.raises(MigrationError, match=rf"{NAME}/migration\.sql sets its own timeout: 'SET lock_timeout = 0'"):
        runbook.own_timeouts(PLAN.model_copy(update={"migration": m}), [NAME])
    # The CLI's lock_timeout is a startup option, which the script's own SET replaces just
    # the same: refused with prisma_cli too (on main it was left alone).
    cli = m.model_copy(update={"backend": "prisma_cli", "prisma_project": str(tmp_path)})
    with pytest.raises(MigrationError, match=rf"{NAME}/migration\.sql sets its own timeout: 'SET lock_timeout = 0'"):
        runbook.own_timeouts(PLAN.model_copy(update={"migration": cli}), [NAME])


def test_what_decided_a_threshold_no_go_is_read_again_after_the_rollback_and_said():
    """sync-drift demo: NO-GO on 5 users without authorizerId; the rollback gave back the dropped
    columns, not their authorizerId, and step 5 ("Validar que sistema volvió a estado previo";
    the runbook's health-check script counts users_without_auth_id) said only "post-rollback
    health ok", the post-mortem "Post-rollback health: ok" and "Fix the cause ... before
    scheduling the migration again", as if the rollback had undone what the soak found."""
    from migration_soak.judge import CriterionResult, Verdict
    from migration_soak.report_postmortem import impact
    from migration_soak.report_run import analyse

    decided = {"check_id": "users_without_authorizer_id", "phase": "regular", "tick": 1, "value": 5.0}
    verdict = Verdict("NO_GO", ["x"], [
        CriterionResult("no_go_users_without_authorizer_id", "no_go", "t", "> 0", "breached", "", 
                        ["users_without_authorizer_id"], [decided]),
        CriterionResult("no_go_performance", "no_go", "t", "degradation", "breached", "", ["login_p95"],
                        [{"check_id": "login_p95", "phase": "regular", "tick": 1, "value": 200.0, "derived": 1.0}])])
    again = runbook.rechecks(PLAN, verdict)
    assert list(again) == ["users_without_authorizer_id"]  # one reading cannot show a degradation
    store = FakeStore()
    out = runbook.post_rollback_health(PLAN, "r1", store, measure=measured({"gateway_health": 1.0, "authorizer_health": 1.0,
                                                                            "users_without_authorizer_id": 5.0}),
                                       query=lambda sql: [("passwordHash",), ("emailVerified",)], recheck=again)
    assert out == {"gateway_health": 1.0, "authorizer_health": 1.0, "columns_back": ["emailVerified", "passwordHash"]}
    (_, kind, payload), = store.recorded
    assert payload["ok"] is True and payload["text"] == (
        "post-rollback health ok; read again after the rollback: `users_without_authorizer_id` 5, still meets the "
        "NO-GO > 0 (the rollback gave back the dropped columns, not this)")
    at = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    lines = impact(analyse(PLAN, verdict, [], [{"kind": kind, "at": at, "payload": payload}], 1.0))
    assert ("Read again after the rollback: `users_without_authorizer_id` 5, still meets the NO-GO > 0: what decided "
            "the NO-GO outlived the rollback, so the migration may not be its cause") in lines, lines
    # a value back within the rule, and a check that cannot be read, are said as such; health stays ok
    store = FakeStore()

    def broken(check):
        if check.id == "users_without_authorizer_id":
            raise RuntimeError("connection refused")
        return 1.0

    runbook.post_rollback_health(PLAN, "r1", store, measure=broken, recheck=again,
                                 query=lambda sql: [("passwordHash",), ("emailVerified",)])
    assert store.recorded[0][2]["text"] == ("post-rollback health ok; read again after the rollback: "
                                           "`users_without_authorizer_id` could not be read: RuntimeError")


def test_slack_says_what_decided_the_no_go_outlived_the_rollback():
    """sync-drift demo: Slack said only ":white_check_mark: rollback of ... completed;
    post-mortem ..." while the 5 users without authorizerId it rolled back for were still there
    (the post-mortem's Impact said so, Slack did not)."""
    health = {"ok": True, "read_again": {"users_without_authorizer_id": {
        "value": 5.0, "still": True, "no_go": "> 0", "shown": "5"}}}
    assert notify.rollback_done_text(PLAN, "pm.md", health) == (
        f":white_check_mark: [staging] rollback of {NAME} completed; read again after the rollback: "
        "`users_without_authorizer_id` 5, still meets the NO-GO > 0 (the rollback gave back the dropped columns, "
        "not this); post-mortem pm.md")
    assert notify.rollback_done_text(PLAN, "pm.md", {"ok": True}) == notify.rollback_done_text(PLAN, "pm.md")


def test_the_dag_run_key_carries_the_runs_start_and_clear_number():
    # A REST trigger may re-create a deleted run with its run id and its run_after: the key
    # the claim compares also holds what the task context says of the dag run's start.
    from types import SimpleNamespace

    from migration_soak.airflow.context import dag_run_key
    from migration_soak.store import other_dag_run

    after, started = datetime(2026, 12, 6, 9, tzinfo=timezone.utc), datetime(2026, 12, 6, 9, 0, 3, tzinfo=timezone.utc)
    key = dag_run_key({"dag_run": SimpleNamespace(run_after=after, start_date=started, clear_number=2)})
    assert (key, key.started, key.clears) == ("2026-12-06T09:00:00+00:00", started, 2)
    assert dag_run_key({"dag_run": SimpleNamespace(run_after=None)}) is None
    claim = {"dag_run": "2026-12-06T09:00:00+00:00", "claimed_at": started, "dag_run_started": started,
             "dag_run_clears": 2, "dag_run_superseded": None}
    assert not other_dag_run(claim, key)
    assert not other_dag_run(claim, "2026-12-06T09:00:00+00:00")  # a key without its start: run_after only
    assert other_dag_run(claim, dag_run_key({"dag_run": SimpleNamespace(
        run_after=after, start_date=datetime(2026, 12, 6, 11, tzinfo=timezone.utc), clear_number=0)}), opening=True)


def test_a_retried_migrate_on_the_prisma_cli_records_its_topup_gap_once():
    # Found by review: with migration.backend prisma_cli, every try of the migrate task
    # recorded a topup_gap for the same top-up (the retry's take_topup finds the columns
    # gone and keeps the first try's): a run whose migrate failed after the CLI applied and
    # was retried listed "Values written between the top-up and the migration's lock are
    # not restorable" twice in its report's events and its post-mortem's timeline.
    from migration_soak.report_run import normalize

    store = FakeStore()
    store.add_event("r1", "topup", {"columns": ["passwordHash", "emailVerified"], "taken_at": "2026-12-06T10:00:00+00:00",
                                    "duration_s": 0.1, "text": "top-up"})
    done = DeployResult(applied=(NAME,), already_applied=(INIT,))
    runbook.deploy("r1", store, FakeBackend(deployed=done), PLAN)
    runbook.deploy("r1", store, FakeBackend(deployed=DeployResult(applied=(), already_applied=(INIT, NAME))), PLAN)
    assert store.kinds() == ["topup", "topup_gap", "migrate", "migrate"]
    # a new top-up (the first try failed before the CLI applied anything) has a gap of its own
    store.add_event("r1", "topup", {"columns": ["passwordHash"], "taken_at": "2026-12-06T10:05:00+00:00", "text": "t"})
    runbook.deploy("r1", store, FakeBackend(deployed=done), PLAN)
    assert store.kinds().count("topup_gap") == 2

    # a store that already holds the repeat (recorded before this fix): the report counts it once
    at = datetime(2026, 12, 6, 10, 1, tzinfo=timezone.utc)
    gap = {"kind": "topup_gap", "at": at, "payload": {"why": "w", "text": "values ... are not restored: w"}}
    events = normalize([{"kind": "topup", "at": at, "payload": {"text": "t"}}, gap, {**gap, "at": at.replace(minute=3)},
                        {"kind": "migrate", "at": at.replace(minute=4), "payload": {"text": "m"}}])
    assert [e["kind"] for e in events] == ["topup", "topup_gap", "migrate"]  # Run.events: report and post-mortem


def test_a_running_dag_run_set_back_to_queued_keeps_its_claim_and_its_rollback():
    # Found by review: a running soak PATCHed to state queued (REST) gets a new start_date
    # from the scheduler without a higher clear_number (Airflow 3.3 DagRun.set_state); its
    # later tasks were then taken for a re-created run and refused, its rollback too. Only
    # the opening task (load) tells a re-created run by its start; later tasks by a
    # superseded claim, which that refused load marks.
    from types import SimpleNamespace

    from migration_soak.airflow.context import dag_run_key
    from migration_soak.store import other_dag_run

    after, started = datetime(2026, 12, 6, 9, tzinfo=timezone.utc), datetime(2026, 12, 6, 9, 0, 3, tzinfo=timezone.utc)
    claim = {"dag_run": "2026-12-06T09:00:00+00:00", "claimed_at": started, "dag_run_started": started,
             "dag_run_clears": 0, "dag_run_superseded": None}
    requeued = dag_run_key({"dag_run": SimpleNamespace(run_after=after, start_date=started.replace(minute=7),
                                                       clear_number=0)})
    assert not other_dag_run(claim, requeued)  # rollback.restore, release, conclude of the same run
    assert other_dag_run(claim, requeued, opening=True)  # a load with that start: a re-created run
    assert other_dag_run({**claim, "dag_run_superseded": started.replace(hour=10)}, requeued)
    # a claim from before dag runs were recorded: the same, by its claimed_at
    old = {**claim, "dag_run": None, "dag_run_started": None, "dag_run_clears": None}
    assert not other_dag_run(old, requeued)
    assert other_dag_run(old, requeued, opening=True)
