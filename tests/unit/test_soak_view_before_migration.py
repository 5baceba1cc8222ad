"""a run whose preflight failed (nothing migrated) must not be shown as tasks that
"failed or could not run after the migration" (judge_soak skips such a run)."""

from __future__ import annotations

from migration_soak.airflow import soak_view as sv
from migration_soak.judge import Verdict

from test_report import PLAN, T0


def test_provisional_verdict_of_a_run_that_never_migrated_does_not_claim_a_migration():
    snap = sv.Snapshot("migration_soak", "run", "failed", {}, T0, plan=PLAN, time_scale=1.0, events=[],
                       tasks={"preflight": "failed", "backup": "upstream_failed", "migrate": "upstream_failed",
                              "judge_soak": "skipped"}, observations=[])
    live = Verdict("INCONCLUSIVE", ["no readings"], [], [])
    shown = sv.shown_verdict(snap, live)
    assert not any("after the migration" in r for r in shown.reasons), shown.reasons
