"""One soak per staging DATABASE, on the real embedded PostgreSQL: the lease follows the
database the soak changes (its server's identity and ``current_database()``), not the
plan's environment name, nor how a connection spells the host.

Found by review: the lease was keyed on the plan's ``environment`` name. Two plans with
different environment names pointing at one staging database (``staging`` and
``canary``, or one connection through ``localhost`` and the other through ``127.0.0.1``)
were both admitted: both migrated, judged and possibly rolled back the same ``users``
table, so one run's GO could be judged while the other's rollback rewrote the table.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from migration_soak import runbook
from migration_soak.exceptions import SoakError
from migration_soak.identity import identify
from migration_soak.pgconn import PgTarget
from migration_soak.plan import load_plan
from migration_soak.store import leases
from tests.conftest import recreate_database

DEFAULT = load_plan("default")
CANARY = DEFAULT.model_copy(update={"name": "canary", "environment": "canary"})


def _admit(plan, run_id, store, plan_param, target, plans, **dag_run):
    runbook.admit(plan, run_id, store, environment=plan.environment, plan_param=plan_param,
                  identify=lambda: identify(target, "connections.staging_direct"),
                  identify_plan=lambda name: identify(plans[name], "connections.staging_direct"), **dag_run)


def _hold(plan, run_id, store, plan_param, target, plans, **dag_run):
    runbook.hold(plan, run_id, store, plan_param, "this run's restore does not touch it",
                 identify=lambda: identify(target, "connections.staging_direct"),
                 identify_plan=lambda name: identify(plans[name], "connections.staging_direct"), **dag_run)


@pytest.fixture
def other_db(pg_server, fresh_db) -> str:
    """A second database on the same server (as the browser and tail tests give each plan)."""
    name = f"{fresh_db[:45]}_other"
    assert name != fresh_db
    recreate_database(pg_server, name)
    return name


def test_two_plans_with_different_environment_names_cannot_soak_one_database_at_once(store, target):
    # The same database, spelled two ways: canary's connection says localhost.
    spelled = PgTarget(host="localhost", port=target.port, database=target.database, user=target.user,
                       password=target.password)
    plans = {"default": target, "canary": spelled}
    assert identify(target, "f").key == identify(spelled, "f").key
    _admit(DEFAULT, "manual__a", store, "default", target, plans)
    with pytest.raises(SoakError) as err:
        _admit(CANARY, "manual__b", store, "canary", spelled, plans)
    text = str(err.value)
    assert text.startswith(f"database '{target.database}' of PostgreSQL system ")
    assert f"(reached as postgres@127.0.0.1:{target.port}/{target.database}) is being soaked by run manual__a " \
           "(plan default, environment 'staging', since " in text
    assert text.endswith("; this run manual__b (plan canary, environment 'canary') is refused")
    assert target.password not in text
    # a task of canary's run cleared later is refused the same way, touching nothing
    with pytest.raises(SoakError, match=r"is being soaked by run manual__a .*; this run's restore does not touch it$"):
        _hold(CANARY, "manual__b", store, "canary", spelled, plans)
    # the holder's own tasks go on; once it releases, canary's run is admitted
    _hold(DEFAULT, "manual__a", store, "default", target, plans)
    assert store.release_lease("manual__b", "canary") is False  # only the holder releases
    assert store.release_lease("manual__a", "default") is True
    _admit(CANARY, "manual__b", store, "canary", spelled, plans)


def test_two_plans_on_two_databases_of_one_server_soak_side_by_side(store, target, other_db):
    # What the browser and tail tests do: one server, one database per plan.
    other = PgTarget(host=target.host, port=target.port, database=other_db, user=target.user,
                     password=target.password)
    plans = {"default": target, "canary": other}
    _admit(DEFAULT, "manual__a", store, "default", target, plans)
    _admit(CANARY, "manual__b", store, "canary", other, plans)
    assert store.lease_of("manual__a", "default")["database_key"] != store.lease_of("manual__b", "canary")[
        "database_key"]


def test_the_lease_key_is_the_servers_through_a_transaction_pooler(target, pgbouncer):
    pooled = pgbouncer.target(target.database)
    assert (pooled.host, pooled.port) != (target.host, target.port)
    assert identify(pooled, "connections.staging").key == identify(target, "connections.staging_direct").key


def test_a_lease_taken_before_the_upgrade_keeps_its_database(store, target, other_db):
    # A soak started before the upgrade holds a row keyed on its environment NAME; it must
    # not lose its database to a plan with another name, nor be refused its own tasks.
    other = PgTarget(host=target.host, port=target.port, database=other_db, user=target.user,
                     password=target.password)
    with store.engine.begin() as conn:
        conn.execute(leases.insert().values(environment="staging", run_id="manual__old", plan="default",
                                            taken_at=datetime(2026, 12, 5, 22, 0, tzinfo=timezone.utc)))
    plans = {"default": target, "canary": target, "elsewhere": other}
    with pytest.raises(SoakError) as err:
        _admit(CANARY, "manual__new", store, "canary", target, plans)
    assert str(err.value) == (
        f"{identify(target, 'connections.staging_direct')} is being soaked: run manual__old (plan default, "
        "environment 'staging', since 2026-12-05 22:00 UTC) holds a lease taken before leases followed the "
        "database; this run manual__new (plan canary, environment 'canary') is refused")
    # a plan on another database is not held back by it
    _admit(CANARY.model_copy(update={"name": "elsewhere", "environment": "elsewhere"}), "manual__x", store,
           "elsewhere", other, plans)
    # the old soak's own tasks go on, and now hold the database's lease
    _hold(DEFAULT, "manual__old", store, "default", target, plans)
    assert store.lease_of("manual__old", "default")["database_key"] == identify(target, "f").key
    # its plan's database unreadable: refused rather than guessed
    plans_broken = {**plans, "default": PgTarget(host="127.0.0.1", port=1, database="x", user="u", password="pw")}
    store.release_lease("manual__x", "elsewhere")
    with pytest.raises(SoakError, match=r"which database it soaks cannot be read \(SoakError: .*\); this run "
                                        r"manual__x .* until it is released$"):
        _admit(CANARY.model_copy(update={"name": "elsewhere", "environment": "elsewhere"}), "manual__x", store,
               "elsewhere", other, plans_broken)
    assert store.release_lease("manual__old", "default") is True
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(leases)).scalar() == 0


def test_a_role_that_cannot_read_the_system_identifier_keys_on_the_servers_address(target):
    admin = target.connect()  # functions' privileges are per database
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS lease_reader")
            cur.execute("CREATE ROLE lease_reader LOGIN PASSWORD 'lease-reader-pw'")
            cur.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
        weak = PgTarget(host=target.host, port=target.port, database=target.database, user="lease_reader",
                        password="lease-reader-pw")
        found = identify(weak, "connections.staging_direct")
        assert found.key == f"address 127.0.0.1:{target.port}/{target.database}"
        assert "lease-reader-pw" not in str(found)
    finally:
        with admin.cursor() as cur:
            cur.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")
            cur.execute("DROP ROLE IF EXISTS lease_reader")
        admin.close()


def test_an_unreachable_staging_database_is_named_without_its_password():
    gone = PgTarget(host="127.0.0.1", port=1, database="staging", user="soak", password="s3cret-pw")
    with pytest.raises(SoakError) as err:
        identify(gone, "connections.staging_direct")
    assert str(err.value).startswith("connections.staging_direct: cannot connect to soak@127.0.0.1:1/staging to "
                                     "read which database it is (the lease follows the database): ")
    assert "s3cret-pw" not in str(err.value)


@pytest.mark.parametrize("same_database", [True, False])
def test_a_run_id_another_plan_already_uses_is_refused(store, target, other_db, same_database):
    # Found by review: Airflow's run ids are unique per DAG only (`airflow dags trigger -r
    # soak-1`, the REST API's dag_run_id), while the store keys readings and events, and the
    # report, the post-mortem, the backups and the rehearsal's scratch database their names,
    # on the run id alone. A run of `canary` with the run id of a `default` run was admitted
    # (on the same database it passed for the lease's holder: the lease compared run ids
    # only), then read default's events (its decision, its backup) and wrote into them.
    other = target if same_database else PgTarget(host=target.host, port=target.port, database=other_db,
                                                   user=target.user, password=target.password)
    plans = {"default": target, "canary": other}
    _admit(DEFAULT, "soak-1", store, "default", target, plans)
    store.add_event("soak-1", "backup", {"text": "default's backup"})
    with pytest.raises(SoakError) as err:
        _admit(CANARY, "soak-1", store, "canary", other, plans)
    assert str(err.value).startswith("run id 'soak-1' is already used in the observation store by plan default "
                                     "(since ")
    assert str(err.value).endswith("): readings, events, the report and the backups are keyed on the run id, so this "
                                   "run of plan canary touches nothing; trigger it again with another run id")
    assert store.lease_of("soak-1", "canary") is None
    with pytest.raises(SoakError, match="^run id 'soak-1' is already used"):  # a cleared task of it, later
        _hold(CANARY, "soak-1", store, "canary", other, plans)
    assert store.release_lease("soak-1", "canary") is False  # its release leaves default's lease alone
    assert store.lease_of("soak-1", "default") is not None
    assert [e["payload"]["text"] for e in store.events("soak-1")] == ["default's backup"]


def test_a_run_id_with_events_from_before_the_upgrade_is_not_reused(store, target, other_db):
    # A run opened before runs were claimed has events but no claim: a new run with its id
    # is refused, while that run's own later tasks go on (and claim it).
    other = PgTarget(host=target.host, port=target.port, database=other_db, user=target.user,
                     password=target.password)
    plans = {"default": target, "canary": other}
    store.add_event("soak-old", "backup", {"text": "before the upgrade"})
    with pytest.raises(SoakError, match=r"^run id 'soak-old' is already used in the observation store by an earlier "
                                        r"run \(1 events recorded\)"):
        _admit(CANARY, "soak-old", store, "canary", other, plans)
    _hold(DEFAULT, "soak-old", store, "default", target, plans)
    with pytest.raises(SoakError, match="by plan default"):
        _admit(CANARY, "soak-old", store, "canary", other, plans)


def test_two_run_ids_that_name_the_same_files_do_not_both_soak(store, target, other_db):
    # Found by review: the report (soak-<name>.md), the post-mortem and the backup
    # (<backup_location>/<environment>/pre_<name>.dump) are named by the run id made
    # file-safe, which maps 'soak:1' and 'soak_1' to one name. Two plans called `staging`
    # on two databases (now allowed side by side) share the backup folder: the second run's
    # backup task found 'pre_soak_1.dump', took it for its own retried dump and reused it,
    # so its rollback would have restored the OTHER database's values; its report
    # overwrote the first one's.
    other = PgTarget(host=target.host, port=target.port, database=other_db, user=target.user,
                     password=target.password)
    twin = CANARY.model_copy(update={"environment": "staging"})
    plans = {"default": target, "canary": other}
    _admit(DEFAULT, "soak:1", store, "default", target, plans)
    with pytest.raises(SoakError) as err:
        _admit(twin, "soak_1", store, "canary", other, plans)
    assert str(err.value).startswith("run id 'soak_1' names its files as run 'soak:1' of plan default (since ")
    assert str(err.value).endswith(") does (report soak-soak_1.md, backup pre_soak_1.dump): one would overwrite or "
                                   "reuse the other's, so this run of plan canary touches nothing; trigger it again "
                                   "with another run id")
    assert store.lease_of("soak_1", "canary") is None
    _admit(twin, "soak-2", store, "canary", other, plans)  # another id: side by side


def test_a_run_id_deleted_and_re_created_in_the_same_plan_is_refused(store, target):
    # Found by review: a run deleted in Airflow and triggered again with the same run id
    # (`airflow dags trigger -r soak-1`) in the same plan passed the claim (same plan: taken
    # for a retried task of that run), so the new run read the old run's events (its
    # backup, its migrate, its decision) as its own and the report mixed both runs'
    # readings. The claim now records which Airflow dag run made it (its run_after).
    plans = {"default": target}
    first, again = "2026-12-06T09:00:00+00:00", "2026-12-06T10:30:00+00:00"
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=first)
    store.add_event("soak-1", "backup", {"text": "the first run's backup"})
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=first)  # its load, retried
    _hold(DEFAULT, "soak-1", store, "default", target, plans, dag_run=first)  # its own later task
    for call in (_admit, _hold):
        with pytest.raises(SoakError) as err:
            call(DEFAULT, "soak-1", store, "default", target, plans, dag_run=again)
        assert str(err.value).startswith(
            "run id 'soak-1' of plan default was already used by another Airflow run (created "
            "2026-12-06T09:00:00+00:00, claimed ")
        assert str(err.value).endswith(
            "; this run, created 2026-12-06T10:30:00+00:00, would read and add to that run's readings, events, "
            "report and backup (pre_soak-1.dump) as its own, so it touches nothing; trigger it again with another "
            "run id (the first run's evidence stays in the store)")
    assert [e["payload"]["text"] for e in store.events("soak-1")] == ["the first run's backup"]


@pytest.fixture
def weak_role(target):
    """A login role of ``target``'s database without EXECUTE on pg_control_system() (an
    operator revoked it from PUBLIC): its identity keys on the server's address."""
    admin = target.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS lease_weak")
        cur.execute("CREATE ROLE lease_weak LOGIN PASSWORD 'lease-weak-pw'")
        cur.execute("REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC")
    try:
        yield PgTarget(host=target.host, port=target.port, database=target.database, user="lease_weak",
                       password="lease-weak-pw")
    finally:
        with admin.cursor() as cur:
            cur.execute("GRANT EXECUTE ON FUNCTION pg_control_system() TO PUBLIC")
            cur.execute("DROP ROLE IF EXISTS lease_weak")
        admin.close()


def test_a_role_that_keys_the_lease_on_the_address_is_refused_unless_the_plan_opts_in(store, target, weak_role):
    # Found by review: the lease key of a role that can read pg_control_system() ('system
    # <id>/<db>') and of one that cannot ('address <ip>:<port>/<db>') never collide, so two
    # plans on ONE database whose roles differ (default as the superuser, canary as
    # lease_weak) were both admitted: both migrated, judged and rolled back one users table.
    plans = {"default": target, "canary": weak_role}
    _admit(DEFAULT, "manual__a", store, "default", target, plans)
    with pytest.raises(SoakError) as err:
        _admit(CANARY, "manual__b", store, "canary", weak_role, plans)
    message = str(err.value)
    assert message.startswith("connections.staging_direct: role 'lease_weak' cannot read the server's system "
                              "identifier (pg_control_system())")
    assert "GRANT EXECUTE ON FUNCTION pg_control_system() TO lease_weak" in message
    assert "preflight.allow_address_lease" in message and "lease-weak-pw" not in message
    assert store.lease_of("manual__b", "canary") is None

    # A plan that opts in (every plan of that database keys the same way) is admitted on a
    # database nobody soaks, and then excludes another weak-keyed plan.
    store.release_lease("manual__a", "default")
    opted = CANARY.model_copy(update={"preflight": CANARY.preflight.model_copy(update={"allow_address_lease": True})})
    _admit(opted, "manual__c", store, "canary", weak_role, plans)
    assert store.lease_of("manual__c", "canary")["database_key"].startswith("address ")


def test_a_run_in_flight_across_the_upgrade_goes_on_before_any_load_adds_the_column(store, target):
    # Found by review: soak_runs.dag_run is added by create_schema, which only a run's
    # first task (load) calls. A run claimed before the upgrade (no dag_run column yet)
    # whose next staging task ran on the new code failed in claim_run with "column
    # soak_runs.dag_run does not exist" (every task that changes staging, the rollback's
    # included) until another run's load happened to upgrade the store.
    import sqlalchemy as sa

    plans = {"default": target}
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE soak_runs DROP COLUMN dag_run"))  # the store before the upgrade
        conn.execute(sa.text("INSERT INTO soak_runs (run_id, plan, file_name, claimed_at) "
                             "VALUES ('soak-1', 'default', 'soak-1', now())"))
    _hold(DEFAULT, "soak-1", store, "default", target, plans, dag_run="2026-12-06T09:00:00+00:00")  # adopted
    with pytest.raises(SoakError, match="already used by another Airflow run"):
        _hold(DEFAULT, "soak-1", store, "default", target, plans, dag_run="2026-12-06T10:30:00+00:00")


def test_a_refused_re_created_run_does_not_release_the_first_runs_lease(store, target):
    # Found by review: the release task always runs; a run id deleted in Airflow mid-soak
    # and triggered again was refused by load ("touches nothing"), yet its release deleted
    # the lease the first dag run held under the same run id and plan, though a run stopped
    # by hand keeps its lease on purpose (its database may be half migrated).
    plans = {"default": target}
    first, again = "2026-12-06T09:00:00+00:00", "2026-12-06T10:30:00+00:00"
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=first)
    with pytest.raises(SoakError):
        _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=again)
    assert store.release_lease("soak-1", "default", dag_run=again) is False
    assert store.lease_of("soak-1", "default") is not None
    assert store.release_lease("soak-1", "default", dag_run=first) is True  # its own run gives it back
    assert store.lease_of("soak-1", "default") is None


def test_a_refused_re_created_run_does_not_conclude_with_the_first_runs_go(store, target):
    # Found by review: conclude (the run's last task, after release) read the store's
    # decision and report for the run id alone, so a run id re-created after its first
    # dag run ended GO, refused by load, ended green with 'GO': a GO nobody measured.
    from migration_soak import lifecycle
    from migration_soak.decision import Decision, decision_event

    plans = {"default": target}
    first, again = "2026-12-06T09:00:00+00:00", "2026-12-06T10:30:00+00:00"
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=first)
    store.add_event("soak-1", "decision", decision_event(Decision("GO", "proceed", "judge", "ok")))
    store.add_event("soak-1", "report", {"path": "soak-soak-1.md"})
    with pytest.raises(SoakError, match=r"^run id 'soak-1' of plan default belongs to another Airflow run \(created "
                                        r"2026-12-06T09:00:00\+00:00\): this run, created 2026-12-06T10:30:00\+00:00, "
                                        "was refused and decided nothing"):
        lifecycle.conclude(store, "soak-1", plan="default", dag_run=again)
    assert lifecycle.conclude(store, "soak-1", plan="default", dag_run=first) == "GO"


def test_a_run_re_created_with_the_deleted_runs_run_after_is_refused(store, target):
    # Found by review: the claim told dag runs apart by run_after alone, and a REST trigger
    # may give it (POST /dags/{id}/dagRuns {"dag_run_id": "soak-1", "run_after": <the
    # deleted run's>}): the re-created run's load was taken for a retry of the first run's,
    # so it read that run's backup, migration and decision as its own and its readings went
    # into that run's report. The key now carries the dag run's start_date and
    # clear_number, which a re-created run cannot share (it starts after the claim).
    from datetime import timedelta

    from migration_soak import lifecycle
    from migration_soak.decision import Decision, decision_event
    from migration_soak.store import DagRunKey

    plans = {"default": target}
    now = datetime.now(timezone.utc)
    after = "2026-12-06T09:00:00+00:00"
    first = DagRunKey(after, now - timedelta(minutes=10), 0)
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=first)
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=DagRunKey(after, first.started, 0))  # retried
    _hold(DEFAULT, "soak-1", store, "default", target, plans, dag_run=DagRunKey(after, first.started, 1))  # cleared, running
    cleared = DagRunKey(after, now - timedelta(minutes=2), 2)  # finished, a task cleared: it starts again
    _hold(DEFAULT, "soak-1", store, "default", target, plans, dag_run=cleared)
    assert store.run_claim("soak-1")["dag_run_clears"] == 2
    store.add_event("soak-1", "decision", decision_event(Decision("GO", "proceed", "judge", "ok")))
    store.add_event("soak-1", "report", {"path": "soak-soak-1.md"})

    again = DagRunKey(after, now + timedelta(minutes=5), 0)  # deleted, triggered again with its run_after
    for call in (_admit, _hold):
        with pytest.raises(SoakError) as err:
            call(DEFAULT, "soak-1", store, "default", target, plans, dag_run=again)
        assert str(err.value).startswith(
            f"run id 'soak-1' of plan default was already used by another Airflow run (created {after}, started "
            f"{cleared.started:%Y-%m-%d %H:%M:%S UTC}, claimed ")
        assert f"this run, created {after}, started {again.started:%Y-%m-%d %H:%M:%S UTC}, would read" in str(err.value)
    assert store.release_lease("soak-1", "default", dag_run=again) is False
    with pytest.raises(SoakError, match="belongs to another Airflow run"):
        lifecycle.conclude(store, "soak-1", plan="default", dag_run=again)
    # the refused run cleared and run again (clear_number 1, a new start): still not the first run
    with pytest.raises(SoakError, match="already used by another Airflow run"):
        _admit(DEFAULT, "soak-1", store, "default", target, plans,
               dag_run=DagRunKey(after, now + timedelta(minutes=9), 3))
    assert store.lease_of("soak-1", "default") is not None


def test_a_claim_with_run_after_only_refuses_a_run_that_started_after_it(store, target):
    # Claims recorded before the start was: a dag run never cleared that started after the
    # claim was made cannot have made it; the one that did is adopted and its start recorded.
    from datetime import timedelta

    from migration_soak.store import DagRunKey

    plans = {"default": target}
    after = "2026-12-06T09:00:00+00:00"
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=after)  # the claim of the release before
    now = datetime.now(timezone.utc)
    later = DagRunKey(after, now + timedelta(minutes=5), 0)
    # the load of a re-created run (a later task is not refused on its start alone: a running
    # run set back to queued gets a new one, and its rollback must not be refused)
    with pytest.raises(SoakError, match="already used by another Airflow run"):
        _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=later)
    # a run id exists once per DAG: the first dag run is gone, so no later start is taken for its
    assert store.run_claim("soak-1")["dag_run_superseded"] is not None
    with pytest.raises(SoakError, match="already used by another Airflow run"):
        _hold(DEFAULT, "soak-1", store, "default", target, plans,
              dag_run=DagRunKey(after, now - timedelta(minutes=10), 0))


def test_a_claim_with_run_after_only_adopts_its_runs_start(store, target):
    from datetime import timedelta

    from migration_soak.store import DagRunKey

    plans = {"default": target}
    after = "2026-12-06T09:00:00+00:00"
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=after)
    started = datetime.now(timezone.utc) - timedelta(minutes=10)
    _hold(DEFAULT, "soak-1", store, "default", target, plans, dag_run=DagRunKey(after, started, 0))
    claim = store.run_claim("soak-1")
    assert (claim["dag_run"], claim["dag_run_started"], claim["dag_run_clears"]) == (after, started, 0)
    with pytest.raises(SoakError, match="already used by another Airflow run"):
        _admit(DEFAULT, "soak-1", store, "default", target, plans,
               dag_run=DagRunKey(after, started + timedelta(minutes=20), 0))


def _claim_from_before_dag_runs(store, claimed_at):
    with store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO soak_runs (run_id, plan, file_name, claimed_at) "
                             "VALUES ('soak-1', 'default', 'soak-1', :at)"), {"at": claimed_at})


def test_a_load_retried_across_the_upgrade_adopts_its_claim(store, target):
    # Found by review: a load that claimed the run id before the upgrade (soak_runs.dag_run
    # empty) and failed after it (the backup's storage down, say) was refused on its retry
    # ("already used by another Airflow run (created before dag runs were recorded ...)"):
    # the soak could not go on, though nothing said it was another run. It is adopted when
    # the dag run started before the claim was made (a re-created one starts after it).
    from datetime import timedelta

    from migration_soak.store import DagRunKey

    plans = {"default": target}
    now = datetime.now(timezone.utc)
    _claim_from_before_dag_runs(store, now - timedelta(minutes=10))
    retried = DagRunKey("2026-12-06T09:00:00+00:00", now - timedelta(minutes=12), 0)
    _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run=retried)
    claim = store.run_claim("soak-1")
    assert (claim["dag_run"], claim["dag_run_started"], claim["dag_run_clears"]) == (retried, retried.started, 0)
    assert store.lease_of("soak-1", "default") is not None


def test_a_claim_from_before_dag_runs_refuses_a_run_that_started_after_it(store, target):
    from datetime import timedelta

    from migration_soak import lifecycle
    from migration_soak.store import DagRunKey

    plans = {"default": target}
    now = datetime.now(timezone.utc)
    _claim_from_before_dag_runs(store, now - timedelta(minutes=10))
    store.take_lease("k", "db", "soak-1", "default", "staging")
    again = DagRunKey("2026-12-06T09:00:00+00:00", now - timedelta(minutes=2), 0)  # re-created after the claim
    for call in (_admit, _hold):
        with pytest.raises(SoakError, match=r"already used by another Airflow run \(created before dag runs were "
                                            r"recorded, claimed "):
            call(DEFAULT, "soak-1", store, "default", target, plans, dag_run=again)
    assert store.release_lease("soak-1", "default", dag_run=again) is False
    with pytest.raises(SoakError, match=r"belongs to another Airflow run \(created before dag runs were recorded\)"):
        lifecycle.conclude(store, "soak-1", plan="default", dag_run=again)
    # without its start, a run that opens is refused as before; a later task adopts it, as before
    with pytest.raises(SoakError, match="already used by another Airflow run"):
        _admit(DEFAULT, "soak-1", store, "default", target, plans, dag_run="2026-12-06T09:00:00+00:00")
