"""End to end: a down SQL with a typo is caught by the rollback rehearsal, and the real DAG
stops before the migration (``airflow dags test`` on the demo stack)."""

from pathlib import Path

import pytest
import yaml

from demo.run import run_soak
from migration_soak.plan import PLANS_DIR

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def typo(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    plan = yaml.safe_load((PLANS_DIR / "default.yaml").read_text())
    down = Path(__file__).resolve().parents[2] / plan["migration"]["down_sql"]
    bad = root / "typo.down.sql"
    bad.write_text(down.read_text().replace("BOOLEAN", "BOOLEN"))
    plan["name"] = "rehearsal_typo"
    plan["migration"]["down_sql"] = str(bad)
    (root / "plans").mkdir()
    (root / "plans" / "rehearsal_typo.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return run_soak(root / "work", "healthy", time_scale=300, users=5_000, plan="rehearsal_typo",
                    plans_dir=root / "plans")


def test_a_broken_down_sql_stops_the_run_before_the_migration(typo):
    states = typo.task_states
    assert states["backup"] == "success" and states["rehearse"] == "failed", states
    assert states["fingerprint"] == states["migrate"] == states["verify"] == "upstream_failed", states
    failed = typo.events["rehearsal_failed"]["payload"]
    assert failed["step"] == "rollback" and "BOOLEN" in failed["text"], failed
    assert "migrate" not in typo.events and typo.decision is None
    assert typo.run_state == "failed" and typo.exit_code_for_user == 3
    # the failure reached Slack, naming the step
    assert any("rehearse" in m and "rollback rehearsal failed at rollback" in m for m in typo.slack), typo.slack
