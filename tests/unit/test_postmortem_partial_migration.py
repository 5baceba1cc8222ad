"""The partial-migration NO-GO (runbook.judge_soak's ``partial``) breaches no
criterion; its only reason must still reach the post-mortem's "Why"."""

from __future__ import annotations

from migration_soak import report
from migration_soak import report_postmortem as pm
from migration_soak.judge import Verdict

from test_report import PLAN
from test_report_sections import ev

WHY = ("the migration failed after committing part of its change: users.passwordHash already dropped; roll back to "
       "give the values back")


def test_post_mortem_of_a_partial_migration_says_why():
    verdict = Verdict("NO_GO", [WHY], [], [])
    events = [ev("decision", 1, outcome="NO_GO", action="rollback", by="judge", reason=WHY, verdict="NO_GO"),
              ev("rollback_started", 2, text="ROLLBACK INITIATED - Reason: NO_GO", notified=True)]
    from migration_soak.report import _analyse
    run = _analyse(PLAN, verdict, [], events, 1.0)
    lines = pm.why(run)
    assert lines and any("committing part of its change" in x for x in lines), lines
    text = report.render_postmortem(PLAN, "run", verdict, [], events)
    why = text.split("## Why", 1)[1].split("## Deciding evidence", 1)[0]
    assert "committing part of its change" in why, why
