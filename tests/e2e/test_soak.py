"""End to end: the real DAG through ``airflow dags test`` (``dag.test()``) on the demo
stack, on a compressed clock (24 h in 4 minutes), for both scenarios."""

from pathlib import Path

import pytest

from demo.run import run_soak
from migration_soak.plan import load_plan

pytestmark = pytest.mark.e2e
PLAN = load_plan("default")
USERS = 100_000


def _secrets_absent(outcome, *texts):
    secrets = [outcome.stack_info["staging"]["password"], outcome.stack_info["authorizer_admin_token"]]
    haystacks = [outcome.log_path.read_text(), *outcome.slack, *texts]
    for secret in secrets:
        assert not any(secret in h for h in haystacks)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory):
    return run_soak(tmp_path_factory.mktemp("healthy"), "healthy", time_scale=360, users=USERS)


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    return run_soak(tmp_path_factory.mktemp("legacy"), "legacy-code", time_scale=360, users=USERS)


def test_healthy_soak_is_go_with_every_tick_of_every_phase(healthy):
    assert healthy.decision == "GO", healthy.events.get("verdict")
    from migration_soak.store import Store  # noqa: F401  (the store is read through events below)

    verdict = healthy.events["verdict"]["payload"]
    by_check = {c["check_id"]: c for c in verdict["checks"]}
    assert set(by_check) == {c.id for c in PLAN.checks}
    for c in verdict["checks"]:
        assert c["outcome"] == "met", c
        assert c["expected"] == 1 + 8 + 6 + 4
        assert c["coverage"] >= PLAN.verdict.min_coverage


def test_healthy_report_shows_the_phases_ticks_and_backup(healthy):
    report = Path(healthy.events["report"]["payload"]["path"]).read_text()
    assert "**Verdict:** GO" in report and "APPROVED to proceed to production" in report
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert len(rows) == len(PLAN.checks)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        hour0, intensive, regular, passive = (int(c.split()[0]) for c in cells[4:8])
        assert (hour0, intensive, regular, passive) == (1, 8, 6, 4), row
    backup = healthy.events["backup"]["payload"]
    assert backup["size_bytes"] > 1_000_000 and len(backup["sha256"]) == 64
    assert any("verdict: GO" in m for m in healthy.slack)
    _secrets_absent(healthy, report)


def test_legacy_code_is_no_go_and_rolls_back_every_value(legacy):
    assert legacy.decision == "NO_GO"
    reasons = legacy.events["verdict"]["payload"]["reasons"]
    assert any(r.startswith("auth_error_rate: NO-GO rule > 0.01 ratio breached") for r in reasons)
    restore = legacy.events["restore"]["payload"]
    assert restore["users_at_backup"] == USERS
    assert restore["users_matched"] == USERS
    assert restore["values_restored"] == 2 * USERS
    assert restore["mismatches"] == 0
    assert "rollback_completed" in legacy.events
    ledger = legacy.events["ledger"]["payload"]["migrations"]
    assert ledger[PLAN.migration.name] in ("pending", "rolled_back")  # reads as pending again
    assert legacy.login_status_after == 200  # /auth/login works again
    health = legacy.events["health"]["payload"]
    assert health["ok"] and sorted(health["columns_back"]) == ["emailVerified", "passwordHash"]


def test_legacy_code_slack_messages_and_post_mortem(legacy):
    texts = legacy.slack
    assert any("ROLLBACK INITIATED - Reason: NO_GO: auth_error_rate" in t for t in texts)
    assert any("rollback of 20251202020032_update_user_schema_final completed" in t for t in texts)
    # The final task fails the run with the reasons, and the failure callback says so.
    assert any("task failed: `migration_soak.conclude`" in t and "verdict NO_GO" in t for t in texts)
    post_mortem = Path(legacy.events["rollback_completed"]["payload"]["post_mortem"]).read_text()
    assert "auth_error_rate" in post_mortem and "restored 200000 values" in post_mortem
    _secrets_absent(legacy, post_mortem)
