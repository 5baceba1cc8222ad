"""End to end: one soak per scenario on the demo stack, on a compressed clock (24 h in 4.8
minutes). The healthy and legacy-code soaks run distributed (``runner="celery"``,
``demo/celery_cluster.py``: CeleryExecutor, two workers in their own network namespaces,
backups in S3) with faults injected into the same runs: the healthy soak loses a worker
(SIGKILL) while it runs an hour-0 check and has Redis restarted mid-soak; the legacy-code
soak loses the worker running the rollback's restore. The backup is pinned to worker a
and the restore to worker b (Celery queues). The other fault scenarios run through
``airflow dags test`` (``dag.test()``); the real components run every path of the DAG's
tail in tests/e2e/test_tail.py."""

import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from demo.celery_cluster import WORKER_NICE
from demo.run import CLOCK_LEAD_S, all_task_instances, run_soak, summary
from migration_soak.clock import guard_every
from migration_soak.judge import expected_observations
from migration_soak.plan import load_plan

pytestmark = pytest.mark.e2e
PLAN = load_plan("default")
USERS = 20_000  # the demo seeds 100 000; the tests need the paths, not the volume (CI time)
TIME_SCALE = 300  # 24 h in 4.8 minutes: intensive ticks and guard readings 3 s of wall time apart
# The noisy soak runs its whole 24 h to an INCONCLUSIVE a person decides: at x600 it takes half
# the wall time (CI), and its readings still see the injected failures (GO not met) while
# readings 30 soak-min apart still cannot judge the 5-minute NO-GO window (not judged).
SCENARIO_TIME_SCALE = {"noisy": 600}
#: The backup on worker a, the rollback's restore on worker b (worker w consumes ``worker_<w>``).
PINS = {"backup": "worker_a", "rollback.restore": "worker_b"}
REDIS_RESTART_AT_H = 12  # soak hour of the healthy soak's Redis restart
KILL_ATTEMPTS = 10  # freezes of a worker that caught no task in flight before the healthy soak gives up
FREEZE_SETTLE_S = 1.0  # seconds a frozen worker's last API calls get to land before we look
FREEZE_CALM_S = 8.0  # seconds a frozen worker waits for the queue to drain (heartbeat timeout: 20 s)


def _secrets_absent(outcome, *texts):
    secrets = [outcome.stack_info["staging"]["password"], outcome.stack_info["authorizer_admin_token"]]
    roots = [outcome.log_path, *outcome.log_dirs]
    roots += [d.parent.parent / "worker.log" for d in outcome.log_dirs[1:]]  # the Celery workers' own logs
    logs = sorted({p for root in roots for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file()})
    assert logs, outcome.log_path
    haystacks = [p.read_text(errors="replace") for p in logs] + [*outcome.slack, *texts]
    for secret in secrets:
        assert not any(secret in h for h in haystacks)


def _criteria(outcome):
    return {c["id"]: c for c in outcome.events["verdict"]["payload"]["criteria"]}


def full(worker, tis) -> bool:
    """Whether every task slot of ``worker`` runs a task instance: Airflow's Celery workers
    take ``worker_prefetch_multiplier`` 1 with ``task_acks_late`` (providers' default_celery),
    so a worker holds at most ``concurrency`` unacknowledged messages, the running tasks'
    own, and a full one has none waiting that a kill would strand."""
    return sum(t["state"] == "running" and t.get("hostname") == worker.address for t in tis) >= worker.concurrency


class Chaos:
    """Faults injected into a distributed soak (``run_soak(chaos=...)``, in a thread from the
    trigger to the run's end); ``done`` lists what it did (dicts with a ``fault`` key),
    ``error`` what went wrong in the thread."""

    def __init__(self):
        self.done: list[dict] = []
        self.error: BaseException | None = None

    def __call__(self, deployment, run_id, stop):
        try:
            self.play(deployment, run_id, stop)
        except BaseException as exc:  # the test reports it; the run goes on
            self.error = exc

    @staticmethod
    def running_on(deployment, run_id, wanted, calm=True, max_queued=0) -> tuple[dict, object] | None:
        """The first task instance with ``wanted(task_id)`` running on a live worker, and that
        worker, at a moment no more than ``max_queued`` task instances are ``queued`` or that
        worker is full (``calm``): a queued task may already be reserved by a worker with a
        free slot, and one lost there waits for the scheduler's ``task_queued_timeout``
        (10 min; docs/operations.md), not for a heartbeat. A full worker reserves nothing
        (:func:`full`)."""
        by_address = {w.address: w for w in deployment.workers.values() if w.running()}
        tis = all_task_instances(deployment.airflow, "migration_soak", run_id)
        busy = sum(ti["state"] == "queued" for ti in tis) > max_queued
        for ti in tis:
            if wanted(ti["task_id"]) and ti["state"] == "running" and ti.get("hostname") in by_address:
                worker = by_address[ti["hostname"]]
                if not (calm and busy and not full(worker, tis)):
                    return ti, worker
        return None

    def wait_for(self, deployment, run_id, stop, wanted, timeout=600.0, calm=True, max_queued=0):
        deadline = time.monotonic() + timeout
        while not stop.is_set() and time.monotonic() < deadline:
            found = self.running_on(deployment, run_id, wanted, calm, max_queued)
            if found:
                return found
            time.sleep(0.1)
        return None


class HealthyChaos(Chaos):
    """SIGKILL the worker running an hour-0 check (a crash: its task processes die with it),
    start it again once that check's retry has finished on the other worker (as compose's
    ``restart: always``; with one worker's 4 slots, the ~50 check tasks starting with the
    clock start too late for their first ticks), then restart Redis at soak hour
    ``REDIS_RESTART_AT_H``."""

    @staticmethod
    def freeze_and_look(deployment, run_id, worker, stop, calm_within_s=FREEZE_CALM_S) -> list[str]:
        """Freeze ``worker`` (SIGSTOP: what it runs can neither defer nor finish), let its last
        API calls land, then wait up to ``calm_within_s`` for the other worker to take every
        queued task (a task this one fetched but had not started would show as queued, and
        a kill would strand it for ``task_queued_timeout``), unless it is :func:`full`.
        Returns the task ids it runs then, all hour-0 checks; empty: nothing to kill here
        (the CI runs of 33a0993, ffeb2fb and 7131b1f killed a worker whose check had just
        deferred, or found no calm moment afterwards; b604f72's missed once, then found no
        calm moment in the hour-0 burst again: a full worker is now a calm moment too)."""
        worker.freeze()
        time.sleep(FREEZE_SETTLE_S)
        deadline = time.monotonic() + calm_within_s
        while not stop.is_set():
            tis = all_task_instances(deployment.airflow, "migration_soak", run_id)
            running = sorted(t["task_id"] for t in tis if t["state"] == "running" and t.get("hostname") == worker.address)
            if not running or not all(t.startswith("hour0.") for t in running):
                return []
            if full(worker, tis) or not any(t["state"] == "queued" for t in tis):
                return running
            if time.monotonic() > deadline:
                return []
            time.sleep(0.2)
        return []

    def play(self, deployment, run_id, stop):
        for _attempt in range(KILL_ATTEMPTS):
            # the tail of the hour-0 burst: a check runs on a worker and at most 2 tasks are
            # queued, which the other worker drains while this one is frozen (below). Earlier
            # the queue cannot drain in time (a task parses the DAG for ~10 s: CI of 8b74bf1)
            found = self.wait_for(deployment, run_id, stop, lambda t: t.startswith("hour0."), max_queued=2)
            if found is None:
                return
            ti, worker = found
            running = self.freeze_and_look(deployment, run_id, worker, stop)
            if running:
                nice = os.getpriority(os.PRIO_PROCESS, worker.proc.pid)
                airflow_nice = {name: os.getpriority(os.PRIO_PROCESS, proc.pid)
                                for name, proc in deployment.airflow.procs.items() if proc.poll() is None}
                worker.kill()
                killed_at = time.time()
                break
            self.done.append({"fault": "kill_missed", "worker": worker.name, "task_id": ti["task_id"],
                              "at": time.time()})
            worker.thaw()
            time.sleep(2)  # let it heartbeat and work before the next freeze (timeout: 20 s)
        else:
            return
        self.done.append({"fault": "kill", "worker": worker.name, "address": worker.address,
                          "task_id": ti["task_id"], "running": running, "at": killed_at, "nice": nice,
                          "airflow_nice": airflow_nice})
        # back once the scheduler has failed what it was running (heartbeat timeout, 20 s)
        while not stop.is_set():
            tis = all_task_instances(deployment.airflow, "migration_soak", run_id)
            if time.time() > killed_at + 20 and not any(
                    t["state"] in ("running", "up_for_retry") and t.get("hostname") == worker.address for t in tis):
                break
            time.sleep(0.5)
        worker.start()
        worker.wait_ready()
        self.done.append({"fault": "restart", "worker": worker.name, "at": time.time()})
        while not stop.is_set():
            clock = {t["task_id"]: t for t in all_task_instances(deployment.airflow, "migration_soak", run_id)}
            started = clock.get("start_clock")
            if started and started["state"] == "success":
                hour0 = datetime.fromisoformat(started["end_date"]) + timedelta(seconds=CLOCK_LEAD_S["celery"])
                due = hour0.timestamp() + REDIS_RESTART_AT_H * 3600 / TIME_SCALE
                while not stop.is_set() and time.time() < due:
                    time.sleep(0.2)
                if stop.is_set():
                    return
                down_s = deployment.redis.restart()
                self.done.append({"fault": "redis_restart", "down_s": down_s, "at": time.time()})
                return
            time.sleep(0.5)


class RestoreChaos(Chaos):
    """SIGKILL the worker running the rollback's restore once the restore has re-added the
    dropped columns (in the middle of the restore), and start it again at once, as a
    container's ``restart: always`` would: the retry runs there (the restore is pinned to
    worker b's queue)."""

    def play(self, deployment, run_id, stop):
        # the rollback's tasks run one after the other: nothing else is queued for that worker
        found = self.wait_for(deployment, run_id, stop, lambda t: t == "rollback.restore", calm=False)
        if found is None:
            return
        ti, worker = found
        staging = deployment.info["staging"]
        conn = psycopg2.connect(host=staging["host"], port=staging["port"], user=staging["user"],
                                password=staging["password"], dbname=staging["database"])
        conn.autocommit = True
        columns_back = False
        try:
            with conn.cursor() as cur:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not columns_back:
                    cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' "
                                "AND column_name IN ('passwordHash', 'emailVerified')")
                    columns_back = cur.fetchone()[0] == 2
                    if not columns_back:
                        time.sleep(0.02)
                worker.kill()
                cur.execute('SELECT count(*) FROM users WHERE "passwordHash" IS NOT NULL' if columns_back
                            else "SELECT 0")
                copied = cur.fetchone()[0]
        finally:
            conn.close()
        self.done.append({"fault": "kill", "worker": worker.name, "address": worker.address,
                          "task_id": ti["task_id"], "try_number": ti["try_number"], "columns_back": columns_back,
                          "values_copied_at_kill": copied, "at": time.time()})
        worker.start()
        worker.wait_ready()
        self.done.append({"fault": "restart", "worker": worker.name, "at": time.time()})


def _distributed(tmp_path_factory, name, scenario, chaos):
    began = time.monotonic()
    outcome = run_soak(tmp_path_factory.mktemp(name), scenario, time_scale=TIME_SCALE, users=USERS,
                       runner="celery", chaos=chaos, pin_queues=PINS)
    outcome.timings["fixture_s"] = time.monotonic() - began
    outcome.chaos = chaos
    print(f"\n{name}: {outcome.timings} soak {outcome.soak_seconds:.0f} s; chaos {chaos.done} {chaos.error!r}")
    return outcome


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return _distributed(tmp_path_factory, "healthy", "healthy", HealthyChaos())


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    return _distributed(tmp_path_factory, "legacy", "legacy-code", RestoreChaos())


def test_healthy_soak_is_go_with_every_criterion_met(healthy):
    assert healthy.decision["outcome"] == "GO", healthy.events.get("verdict", {}).get("payload", {}).get("reasons")
    crit = _criteria(healthy)
    assert {c.id for c in PLAN.go} | {c.id for c in PLAN.no_go} == set(crit)
    assert all(crit[c.id]["outcome"] == "met" for c in PLAN.go)
    # the guard reads every 15 soak-min at time_scale 300: the 5- and 10-minute sustained
    # windows cannot be judged; they are named as such, never "clear", and hold no GO back
    # on this compressed clock because every reading was within the bound
    sparse = {"no_go_auth_error_rate", "no_go_db_cpu"}
    assert {c.id: crit[c.id]["outcome"] for c in PLAN.no_go} == {
        c.id: "not_judged" if c.id in sparse else "clear" for c in PLAN.no_go}
    assert all(crit[cid]["too_sparse"] for cid in sparse)
    reasons = healthy.events["verdict"]["payload"]["reasons"]
    assert reasons[1].startswith("not judged on this compressed clock (time_scale 300") and \
        all(cid in reasons[1] for cid in sparse), reasons
    # the baseline hour is 12 wall seconds: its logins must be enough to bound their p95 from
    # above (72), or no rise could be shown (rules.quantile_ranks) and the soak is INCONCLUSIVE
    logins = next(r for r in reasons if r.startswith("compared (go_performance_stable): login_p95"))
    assert int(re.search(r"against the baseline's [\d.]+ ms \(([\d,]+) requests\)", logins)[1].replace(",", "")) >= 72
    assert "no_go" not in healthy.events


def _count(cell: str) -> int:
    return int(cell.split()[0].replace(",", "")) if cell[:1].isdigit() else 0


def test_healthy_and_legacy_rehearse_the_rollback_before_the_migration(healthy, legacy):
    for outcome in (healthy, legacy):
        rehearsal = outcome.events["rehearsal"]["payload"]
        assert rehearsal["status"] == "passed" and rehearsal["mismatches"] == 0, rehearsal
        assert rehearsal["values_restored"] == 2 * USERS and rehearsal["rows_at_backup"] == USERS, rehearsal
        assert outcome.events["rehearsal"]["at"] < outcome.events["migrate"]["at"]
        assert any(line.startswith("rehearsal: rollback rehearsed: ") for line in summary(outcome))


def test_healthy_run_is_green_and_says_what_a_compressed_clock_proves(healthy):
    assert healthy.run_state == "success" and healthy.exit_code_for_user == 0
    assert healthy.decision["outcome"] == "GO" and healthy.decision["action"] == "proceed"
    states = healthy.task_states
    assert states["report"] == states["conclude"] == "success"
    assert all(states[t] == "skipped" for t in states if t.startswith("rollback.")), states
    assert states["sign_off"] == states["human_decision"] == "skipped"
    assert all(states[f"passive.{c.id}"] == "success" for c in PLAN.checks_in("passive"))
    report = Path(healthy.events["report"]["payload"]["path"]).read_text()
    assert "compressed clock (24 h in 4.8 min): demonstration evidence, not a 24-hour soak" in report
    assert "approved to proceed to production" not in report.lower()
    assert "Equipo de QA aprueba testing manual: not asked" in report
    lint = healthy.events["lint"]["payload"]  # preflight linted the migration: reviewed findings only
    assert lint["ok"] and not lint["unaccepted"] and {f["rule"] for f in lint["accepted"]} >= {"ban-drop-column"}
    from demo.run import summary

    assert any(line.startswith("lint: squawk ") for line in summary(healthy))


def test_healthy_report_shows_every_tick_of_every_phase(healthy):
    report = Path(healthy.events["report"]["payload"]["path"]).read_text()
    assert "**Judge's verdict** (what the data shows): **GO**" in report
    header = next(line for line in report.splitlines() if line.startswith("| check |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert len(rows) == len(PLAN.checks)
    phases = ["hour0", "intensive", "regular", "passive"]
    for row, check in zip(rows, PLAN.checks):
        cells = [c.strip() for c in row.strip("|").split("|")]
        counts = [_count(cells[columns.index(p)]) for p in phases]
        wanted = [(1 if p == "hour0" else len(PLAN.phase(p).tick_offsets())) if check in PLAN.checks_in(p) else 0
                  for p in phases]
        assert counts == wanted, row
        assert sum(counts) == expected_observations(PLAN, check.id)
    assert any(Path(healthy.events["report"]["payload"]["path"]).parent.glob("charts-*/login_p95.png"))
    backup = healthy.events["backup"]["payload"]
    assert backup["size_bytes"] > 1_000_000 and len(backup["sha256"]) == 64
    # Kept in the plan's storage (S3 here), not only on the worker that took it: byte-identical.
    assert backup["path"] is None and backup["location"].startswith("s3://soak_s3@soak-backups/default/staging/pre_")
    key = backup["location"].removeprefix("s3://soak_s3@soak-backups/")
    assert healthy.s3_objects[key] == backup["sha256"]
    # Hora 0 step 3 on the real Prisma CLI.
    prisma = [e["payload"] for e in healthy.all_events if e["kind"] == "prisma_status"]
    assert [(p["expect"], p["agrees"], p["kind"]) for p in prisma] == [("applied", True, "up_to_date")]
    assert any("verdict: GO" in m for m in healthy.slack)
    _secrets_absent(healthy, report)


def test_legacy_code_is_no_go_and_rolls_back_every_value(legacy):
    assert legacy.decision["outcome"] == "NO_GO"
    assert legacy.run_state == "failed" and legacy.exit_code_for_user == 1
    assert legacy.events["no_go"]["payload"]["criterion"] in ("no_go_auth_error_rate", "no_go_critical_errors_per_hour")
    restore = legacy.events["restore"]["payload"]
    assert restore["rows_at_backup"] == USERS
    assert restore["rows_matched"] == USERS
    assert restore["values_restored"] == 2 * USERS
    assert restore["mismatches"] == 0
    assert "rollback_completed" in legacy.events
    # The real `prisma migrate status` said up to date after the deploy, pending after the rollback.
    prisma = [e["payload"] for e in legacy.all_events if e["kind"] == "prisma_status"]
    assert [(p["expect"], p["agrees"]) for p in prisma] == [("applied", True), ("pending", True)], prisma
    assert prisma[1]["migrations"] == [PLAN.migration.name]
    ledger = legacy.events["ledger"]["payload"]["migrations"]
    assert ledger[PLAN.migration.name] in ("pending", "rolled_back")  # reads as pending again
    assert legacy.login_status_after == 200  # /auth/login works again
    health = legacy.events["health"]["payload"]
    assert health["ok"] and sorted(health["columns_back"]) == ["emailVerified", "passwordHash"]


def test_legacy_code_slack_messages_and_post_mortem(legacy):
    texts = legacy.slack
    assert any("ROLLBACK INITIATED - Reason: NO_GO: no_go_" in t for t in texts)
    assert any("rollback of 20251202020032_update_user_schema_final completed" in t for t in texts)
    # The final task fails the run with the reasons, and the failure callback says so.
    assert any("task failed: `migration_soak.conclude`" in t and "NO-GO: no_go_" in t for t in texts)
    assert not any("verdict: GO" in t for t in texts)
    post_mortem = Path(legacy.events["rollback_completed"]["payload"]["post_mortem"]).read_text()
    assert "no_go_" in post_mortem and f"restored {2 * USERS} values" in post_mortem
    _secrets_absent(legacy, post_mortem)


def test_legacy_code_grid_and_report_say_only_what_was_measured(legacy):
    states = legacy.task_states
    assert all(states[t] == "success" for t in states if t.startswith("rollback.")), states
    assert states["report"] == "skipped" and states["conclude"] == "failed"
    # The soak stopped at hour 0, or a few seconds later at the guard's or the intensive
    # phase's first tick (how many errors hour 0's window holds depends on the machine's
    # speed): a phase task is green exactly when it took a reading, skipped otherwise.
    phase_tasks = [t for t in states if t.split(".")[0] in ("intensive", "regular", "passive")]
    read = _readings_in_log(legacy.log_path)
    assert phase_tasks and {t for t in phase_tasks if states[t] == "success"} == {t for t in phase_tasks if t in read}
    assert all(states[t] == "skipped" for t in phase_tasks if t not in read), states
    assert all(t.split(".")[0] == "intensive" for t in phase_tasks if t in read)  # it stopped in the first phase
    report = Path(legacy.events["rollback_completed"]["payload"]["report"]).read_text()
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    unmeasured = [r for r in rows if "not measured" in r]
    assert unmeasured and not any("met" in r.rsplit("|", 2)[-2] and "not" not in r.rsplit("|", 2)[-2]
                                  for r in unmeasured)
    # no criterion with a check read 0 times is ticked: a NO-GO the stop left unread is
    # "not judged", never "clear" (a new user's run found them ✅)
    ticked = [line for line in report.splitlines() if line.startswith("| ✅ |")]
    assert not [line for line in ticked if ": 0 readings" in line], ticked
    assert any(line.startswith("| ❔ |") and "| not judged |" in line for line in report.splitlines())
    criterion = legacy.events["no_go"]["payload"]["criterion"]
    assert criterion in report  # the deciding observation is named
    post_mortem = Path(legacy.events["rollback_completed"]["payload"]["post_mortem"]).read_text()
    if criterion == "no_go_critical_errors_per_hour":
        assert "passwordHash" in post_mortem  # the failing log line is quoted (masked)


def _readings_in_log(log_path) -> set[str]:
    """``<phase>.<check>`` task ids with a reading in the run's task log lines
    (``triggers.log_reading``: ``<check> <phase> tick <n>: ...``)."""
    path = Path(log_path)
    files = [path] if path.is_file() else sorted(path.rglob("*.log"))
    pattern = re.compile(r"\] (\w+) (intensive|regular|passive) tick \d+: ")
    return {f"{m.group(2)}.{m.group(1)}" for f in files for m in pattern.finditer(f.read_text(errors="replace"))}


@pytest.fixture(scope="module")
def soak_of(tmp_path_factory):
    """One soak per fault scenario, run once for the module (20 000 users)."""
    outcomes = {}

    def run(scenario, **kwargs):
        if scenario not in outcomes:
            shown = []  # what the demo's progress display was given, as it went
            outcomes[scenario] = run_soak(tmp_path_factory.mktemp(scenario), scenario,
                                          time_scale=SCENARIO_TIME_SCALE.get(scenario, TIME_SCALE),
                                          users=20_000, watch=shown.append, poll_s=0.5, **kwargs)
            outcomes[scenario].shown = shown
        return outcomes[scenario]

    return run


@pytest.mark.parametrize("scenario, criterion", [
    ("sync-drift", "no_go_users_without_authorizer_id"),
    ("slow-auth", "no_go_performance"),
    ("memory-leak", "no_go_memory_leak"),
])
def test_fault_scenarios_end_in_no_go_on_their_criterion(soak_of, scenario, criterion):
    outcome = soak_of(scenario)
    assert outcome.decision["outcome"] == "NO_GO", outcome.events.get("verdict", {}).get("payload", {}).get("reasons")
    assert outcome.events["no_go"]["payload"]["criterion"] == criterion
    assert _criteria(outcome)[criterion]["outcome"] == "breached"
    assert "rollback_completed" in outcome.events


def test_sync_drift_is_caught_by_the_guard_within_one_interval(soak_of):
    outcome = soak_of("sync-drift")
    breach = outcome.events["no_go"]
    hour0 = outcome.events["hour0"]["payload"]["hour0"]
    from datetime import datetime

    drift_at = datetime.fromisoformat(hour0).timestamp() + 3 * 3600 / TIME_SCALE  # the fault at hour 3
    guard_interval = guard_every(PLAN, TIME_SCALE).total_seconds() / TIME_SCALE  # wall seconds
    # one guard interval plus scheduling overhead (2 intervals of slack on a 2-core machine)
    assert breach["at"].timestamp() - drift_at <= 3 * guard_interval + 5


def test_metrics_outage_is_inconclusive_never_go(soak_of):
    outcome = soak_of("metrics-outage")
    assert outcome.decision["outcome"] == "INCONCLUSIVE" and outcome.exit_code_for_user == 2
    crit = _criteria(outcome)
    assert crit["go_auth_error_rate"]["outcome"] == "not_enough_data"
    assert "rollback_completed" in outcome.events  # the unattended run rolls back


def test_the_dags_test_runner_shows_the_soak_clock_as_it_goes(soak_of):
    outcome = soak_of("metrics-outage")
    shown = outcome.shown
    assert outcome.runner == "dags-test" and len(shown) > 100
    phases = [s.phase for s in shown]
    before_clock = phases[:phases.index("intensive")]
    assert {p for p in before_clock if not p.startswith("setup: ")} <= {"starting"}, before_clock
    assert any(p.startswith("setup: ") for p in before_clock)
    seen = list(dict.fromkeys(phases[len(before_clock):]))
    assert seen[:3] == ["intensive", "regular", "passive"], seen
    hours = [s.soak_hour for s in shown if s.soak_hour is not None]
    assert hours == sorted(hours) and hours[-1] == 24.0
    readings = [s.readings for s in shown]
    assert readings == sorted(readings) and readings[-1] == len(outcome.observations)
    assert shown[-1].missing > 0  # the outage's error readings, counted as missing, never as passes
    assert shown[-1].verdict == "INCONCLUSIVE" and shown[-1].phase == "done" and outcome.progress == shown[-1]
    # the figure the user reads: every second's state was shown, not only the last one
    assert len({s.soak_hour for s in shown}) > 50


def test_noisy_is_inconclusive_and_a_person_decides_through_the_api(soak_of):
    outcome = soak_of("noisy", human_choice="GO")
    assert outcome.events["verdict"]["payload"]["decision"] == "INCONCLUSIVE"
    assert outcome.decision["outcome"] == "GO" and outcome.decision["by"].startswith("person:")
    assert outcome.run_state == "success"
    assert _criteria(outcome)["go_auth_error_rate"]["outcome"] == "not_met"
    # readings 15 soak-min apart cannot show a 5-minute window (one failure in a reading's
    # ~50 requests is 2 % on its own): not judged, never "clear"
    assert _criteria(outcome)["no_go_auth_error_rate"]["outcome"] == "not_judged"
    assert outcome.human_error is None and outcome.human_answer is not None
    assert outcome.events["human_decision"]["payload"]["chosen"] == ["GO"]
    assert "report" in outcome.events and "rollback_completed" not in outcome.events



# --- the distributed runs: where tasks ran, and the faults ------------------------------------------

def _tis(outcome) -> dict[str, dict]:
    return {ti["task_id"]: ti for ti in outcome.task_instances if ti.get("map_index", -1) in (-1, None)}


def test_distributed_soaks_run_on_both_namespaced_workers_backup_on_a(healthy, legacy):
    for outcome in (healthy, legacy):
        assert outcome.runner == "celery" and set(outcome.workers) == {"a", "b"}
        addresses = set(outcome.workers.values())
        assert "127.0.0.1" not in addresses and len(addresses) == 2
        tis = _tis(outcome)
        assert tis["backup"]["hostname"] == outcome.workers["a"] and tis["backup"]["queue"] == "worker_a"
        # every task that ran on a worker says which one; both workers ran some
        ran = {ti["hostname"] for ti in tis.values() if ti["state"] == "success" and ti.get("hostname")}
        assert addresses <= ran, ran
        assert outcome.chaos.error is None, outcome.chaos.error


def test_healthy_soak_survives_a_worker_killed_during_a_check_and_a_redis_restart(healthy):
    missed = [d for d in healthy.chaos.done if d["fault"] == "kill_missed"]
    assert len(missed) < KILL_ATTEMPTS, missed
    landed = [d for d in healthy.chaos.done if d["fault"] != "kill_missed"]
    assert [d["fault"] for d in landed] == ["kill", "restart", "redis_restart"], healthy.chaos.done
    kill, back, restart = landed
    assert kill["fault"] == "kill" and kill["task_id"].startswith("hour0.")
    assert kill["nice"] == WORKER_NICE  # below the staging apps whose latency the soak measures
    # and so do Airflow's own components (CI of 505ec1b: login p95 +17 % over the hour-0 burst)
    assert kill["airflow_nice"] == dict.fromkeys(("api-server", "dag-processor", "scheduler", "triggerer"),
                                                 WORKER_NICE), kill
    assert back["fault"] == "restart" and back["worker"] == kill["worker"]
    assert restart["fault"] == "redis_restart" and restart["down_s"] < 30
    tis = _tis(healthy)
    other = next(a for name, a in healthy.workers.items() if name != kill["worker"])
    # what the killed worker was running failed (heartbeat timeout) and was retried and
    # finished on the other one (a task that had just handed over to the triggerer finished there)
    retried = [t for t in kill["running"] if tis[t]["try_number"] == 2]
    assert retried and all(t.startswith("hour0.") for t in kill["running"]), kill
    for t in retried:
        assert tis[t]["state"] == "success" and tis[t]["hostname"] == other, tis[t]
    # while the worker was down, every task that started ran on the other one
    between = [ti for ti in tis.values() if ti.get("start_date") and ti.get("hostname")
               and kill["at"] + 1 < datetime.fromisoformat(ti["start_date"]).timestamp() < back["at"]]
    assert between and all(ti["hostname"] == other for ti in between), between
    # tasks were queued through the restarted Redis and ran: the tail of the soak
    after_restart = [t for t in ("judge_soak", "decide", "report", "conclude")
                     if datetime.fromisoformat(tis[t]["start_date"]).timestamp() > restart["at"]]
    assert after_restart == ["judge_soak", "decide", "report", "conclude"]
    # no observation lost or duplicated: one reading per scheduled tick, the killed check's included
    observations = healthy.observations
    keys = [(o.phase, o.check_id, o.tick) for o in observations]
    assert len(keys) == len(set(keys))
    for check in PLAN.checks:
        mine = [o for o in observations if o.check_id == check.id and o.phase not in ("baseline", "guard")]
        assert len(mine) == expected_observations(PLAN, check.id), check.id
    for task_id in retried:
        phase, check_id = task_id.split(".")
        again = [o for o in observations if (o.phase, o.check_id) == (phase, check_id)]
        assert len(again) == 1 and again[0].status != "error", again


def test_legacy_restore_killed_mid_way_is_redone_on_worker_b_from_the_s3_backup(legacy):
    kill, restarted = legacy.chaos.done
    assert kill["fault"] == "kill" and kill["task_id"] == "rollback.restore" and kill["worker"] == "b"
    assert kill["columns_back"], kill  # killed in the middle: the columns were re-added already
    assert restarted["fault"] == "restart"
    tis = _tis(legacy)
    restore = tis["rollback.restore"]
    assert restore["state"] == "success" and restore["try_number"] == 2, restore
    assert restore["hostname"] == legacy.workers["b"] != tis["backup"]["hostname"] == legacy.workers["a"]
    # the restore's retry read the dump kept in S3 by worker a, byte-identical (sha256)
    backup = legacy.events["backup"]["payload"]
    key = backup["location"].removeprefix("s3://soak_s3@soak-backups/")
    assert legacy.s3_objects[key] == backup["sha256"]
    # one restore recorded (not one per try), every value back, the counts of one restore
    restores = [e["payload"] for e in legacy.all_events if e["kind"] == "restore"]
    assert len(restores) == 1, restores
    assert restores[0]["rows_matched"] == USERS and restores[0]["mismatches"] == 0
    assert [e["kind"] for e in legacy.all_events].count("rollback_completed") == 1
