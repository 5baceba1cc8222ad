"""End to end: the real DAG through ``airflow dags test`` (``dag.test()``) on the demo
stack, on a compressed clock (24 h in 4.8 minutes), one soak per scenario. The real
components run every path of the DAG's tail in tests/e2e/test_tail.py."""

import re
from pathlib import Path

import pytest

from demo.run import run_soak, summary
from migration_soak.clock import guard_every
from migration_soak.judge import expected_observations
from migration_soak.plan import load_plan

pytestmark = pytest.mark.e2e
PLAN = load_plan("default")
USERS = 20_000  # the demo seeds 100 000; the tests need the paths, not the volume (CI time)
TIME_SCALE = 300  # 24 h in 4.8 minutes: intensive ticks and guard readings 3 s of wall time apart


def _secrets_absent(outcome, *texts):
    secrets = [outcome.stack_info["staging"]["password"], outcome.stack_info["authorizer_admin_token"]]
    logs = [outcome.log_path] if outcome.log_path.is_file() else sorted(p for p in outcome.log_path.rglob("*")
                                                                         if p.is_file())
    assert logs, outcome.log_path
    haystacks = [p.read_text(errors="replace") for p in logs] + [*outcome.slack, *texts]
    for secret in secrets:
        assert not any(secret in h for h in haystacks)


def _criteria(outcome):
    return {c["id"]: c for c in outcome.events["verdict"]["payload"]["criteria"]}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return run_soak(tmp_path_factory.mktemp("healthy"), "healthy", time_scale=TIME_SCALE, users=USERS)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    return run_soak(tmp_path_factory.mktemp("legacy"), "legacy-code", time_scale=TIME_SCALE, users=USERS)


def test_healthy_soak_is_go_with_every_criterion_met(healthy):
    assert healthy.decision["outcome"] == "GO", healthy.events.get("verdict", {}).get("payload", {}).get("reasons")
    crit = _criteria(healthy)
    assert {c.id for c in PLAN.go} | {c.id for c in PLAN.no_go} == set(crit)
    assert all(crit[c.id]["outcome"] == "met" for c in PLAN.go)
    assert all(crit[c.id]["outcome"] == "clear" for c in PLAN.no_go)
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
    # Kept in the plan's storage (file:// here), not only on the worker that took it.
    assert backup["path"] is None and backup["location"].startswith("file:///")
    kept = Path(backup["location"].removeprefix("file://"))
    assert kept.name.startswith("pre_") and kept.stat().st_size == backup["size_bytes"]
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
            outcomes[scenario] = run_soak(tmp_path_factory.mktemp(scenario), scenario, time_scale=TIME_SCALE,
                                          users=20_000, **kwargs)
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


def test_noisy_is_inconclusive_and_a_person_decides_through_the_api(soak_of):
    outcome = soak_of("noisy", human_choice="GO")
    assert outcome.events["verdict"]["payload"]["decision"] == "INCONCLUSIVE"
    assert outcome.decision["outcome"] == "GO" and outcome.decision["by"].startswith("person:")
    assert outcome.run_state == "success"
    assert _criteria(outcome)["go_auth_error_rate"]["outcome"] == "not_met"
    assert _criteria(outcome)["no_go_auth_error_rate"]["outcome"] == "clear"
    assert outcome.human_error is None and outcome.human_answer is not None
    assert outcome.events["human_decision"]["payload"]["chosen"] == ["GO"]
    assert "report" in outcome.events and "rollback_completed" not in outcome.events

