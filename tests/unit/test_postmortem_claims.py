"""The post-mortem says what caused the rollback and when, as the report does."""

from __future__ import annotations

from datetime import timedelta

from migration_soak import report
from migration_soak import report_postmortem as pm

from test_report import PLAN, event, go_run
from test_report_sections import CRITICAL, T0, ev, obs, run_of


def _rejected_postmortem():
    verdict, obs_, events = go_run(300.0, sign_off={"state": "rejected", "by": "bob", "comment": "checkout broken"})
    at = events[-1]["at"]
    events.append(event("decision", at + timedelta(seconds=1), outcome="NO_GO", action="rollback", by="person:bob",
                        reason="QA rejected the sign-off: checkout broken", verdict="GO"))
    events.append(event("rollback_started", at + timedelta(seconds=2),
                        text="ROLLBACK INITIATED - Reason: NO_GO: QA rejected the sign-off"))
    return report.render_postmortem(PLAN, "run", verdict, obs_, events)


def test_post_mortem_of_a_sign_off_rejection_names_the_rejection_under_why():
    """(review h-claims) make demo DEMO_ARGS="--require-sign-off --sign-off reject": the
    post-mortem's "## Why" listed only "✅ every GO criterion met and no NO-GO criterion
    breached"; the rejection that caused the rollback was absent, and the follow-up said
    "Fix the cause named above"."""
    verdict, obs_, events = go_run(300.0, sign_off={"state": "rejected", "by": "bob", "comment": "checkout broken"})
    start = events[-1]["at"] + timedelta(seconds=1)
    events.append(event("rollback_started", start, text="ROLLBACK INITIATED - Reason: NO_GO: QA rejected the sign-off"))
    text = report.render_postmortem(PLAN, "run", verdict, obs_, events)
    why = text.split("## Why", 1)[1].split("## Deciding evidence", 1)[0]
    assert "sign-off" in why or "QA" in why, why


def test_the_rejection_comes_first_under_why_with_who_and_the_comment():
    why = _rejected_postmortem().split("## Why", 1)[1].split("## Deciding evidence", 1)[0]
    items = [line for line in why.splitlines() if line.startswith("- ")]
    assert items[0].startswith("- ❌ The QA sign-off was rejected by bob at "), items
    assert '("checkout broken")' in items[0] and "NO-GO, rollback" in items[0]
    assert "The judge's verdict was GO" in items[1], items


def test_a_person_s_rollback_choice_comes_first_under_why():
    from migration_soak.judge import Verdict

    events = [ev("verified", 0, at=T0.isoformat()),
              ev("human_decision", 30, chosen=["Roll back"], by="alice", timed_out=False, text="alice chose Roll back"),
              ev("decision", 31, outcome="INCONCLUSIVE", action="rollback", by="person:alice",
                 reason="alice chose to roll back", verdict="INCONCLUSIVE")]
    run = run_of(events=events, decision="INCONCLUSIVE")
    run.verdict = Verdict("INCONCLUSIVE", ["go_x: not met"], [], [])
    lines = pm.why(run)
    assert lines[0] == "❔ INCONCLUSIVE, rollback, decided by alice: alice chose to roll back", lines


def test_the_judge_s_no_go_is_the_why_without_a_line_repeating_it():
    run = run_of([obs("critical_errors", "hour0", 0, 0, 13)],
                 [ev("verified", 0, at=T0.isoformat()), ev("no_go", 0.1, criterion=CRITICAL.id),
                  ev("decision", 0.2, outcome="NO_GO", action="rollback", by="judge", reason="x", verdict="NO_GO")],
                 [CRITICAL], "NO_GO")
    lines = pm.why(run)
    assert lines[0].startswith("❌ `no_go_critical_errors_per_hour`") and len(lines) == 1, lines


def _guard_stop_run():
    """A 300x soak stopped by the guard: its deciding reading (guard tick 1) was scheduled at
    soak time 0:15 (3 s of wall time after hour 0); the ``no_go`` event was recorded 2 s
    later, at soak time 0:25."""
    from test_report_sections import crit

    scale = 300.0
    reading = obs("critical_errors", "guard", 1, 3 / 60, 13)
    breach = crit("no_go_critical_errors_per_hour", "no_go", "breached", ["critical_errors"], "count > 5 in any 60 min",
                  [{"check_id": "critical_errors", "phase": "guard", "tick": 1, "value": 13,
                    "measured_at": reading.measured_at.isoformat()}])
    events = [ev("verified", -1, at=(T0 - timedelta(minutes=1)).isoformat()), ev("hour0", 0, hour0=T0.isoformat()),
              ev("no_go", 5 / 60, criterion=breach.id)]
    return run_of([reading], events, [breach], "NO_GO", scale=scale)


def test_post_mortem_detection_is_the_deciding_reading_s_soak_time_as_in_the_report():
    """Legacy-code demo: the report said "0:15 (stopped at guard tick 1)", the post-mortem
    "Detection on the soak clock ... soak time 0:25" (when the stop event was recorded)."""
    from migration_soak import report_sections as sections

    run = _guard_stop_run()
    assert "soak time covered 0:15 of 24 h (stopped at guard tick 1)" in sections.period(run, 300.0)["soak"]
    detection = pm.durations(run)[1]
    assert detection.startswith("Detection on the soak clock: soak time 0:15 at the deciding reading (guard tick 1, "
                                "scheduled 2026-03-02 09:00:03 UTC)"), detection
    # the stop's recording time may be shown, but says what it is
    assert "the NO-GO stop was recorded 5 s of wall time after the soak clock's hour 0" in detection, detection
    assert detection.endswith("(soak time 0:25 when the stop was recorded)"), detection


def test_the_summary_of_a_soak_not_stopped_is_a_sentence():
    """--sign-off reject: the summary read "The staging soak of `...` (run `...`)." and stopped
    there; a soak with no NO-GO stop says so."""
    text = _rejected_postmortem()
    assert "The staging soak of `20251202020032_update_user_schema_final` (run `run`) was not stopped by a NO-GO criterion." in text


def test_the_post_mortem_says_which_values_the_rollback_could_not_give_back():
    """The restore's impact line (restore_summary) said what came back from the backup and
    the top-up, and nothing of the ``topup_gap`` the run recorded: values written between
    the top-up and the migration's lock were silently missing from the post-mortem."""
    from test_report_sections import GAP

    restored = dict(table="public.users", columns=["passwordHash", "emailVerified"], rows_at_backup=10,
                    rows_matched=10, rows_not_in_backup=0, values_restored=20, mismatches=0,
                    topup_taken_at="2026-03-02T08:59:30+00:00", topup_rows=3)
    events = [ev("backup", -1, path="/b.dump", size_bytes=1, sha256="ab", duration_s=1.0),
              ev("topup", -0.5, rows=3, taken_at="2026-03-02T08:59:30+00:00", location="/t/topup.copy.zst"),
              ev("topup_gap", -0.4, why="the Prisma CLI runs the DDL in a transaction of its own", text=GAP),
              ev("verified", 0, at=T0.isoformat()), ev("restore", 60, **restored)]
    lines = pm.impact(run_of(events=events))
    restore_line = next(line for line in lines if line.startswith("Restored "))
    assert restore_line.endswith("; " + GAP), restore_line


def _follow_up(text: str) -> list[str]:
    return [line for line in text.split("## Follow-up", 1)[1].splitlines() if line.startswith("- ")]


def test_the_follow_up_claims_the_ledger_and_prisma_only_as_recorded():
    """The Follow-up always ended "The migration reads as pending in the ledger; `prisma
    migrate status` lists it again.", a fixed sentence: with a plan without
    migration.prisma_project the CLI never ran (confirm_with_prisma is a no-op), and no
    event said the ledger was marked."""
    verdict, obs_, events = go_run(300.0, sign_off={"state": "rejected", "by": "bob", "comment": "checkout broken"})
    at = events[-1]["at"]
    events.append(event("decision", at + timedelta(seconds=1), outcome="NO_GO", action="rollback", by="person:bob",
                        reason="QA rejected the sign-off: checkout broken", verdict="GO"))
    events.append(event("rollback_started", at + timedelta(seconds=2), text="ROLLBACK INITIATED"))
    follow = _follow_up(report.render_postmortem(PLAN, "run", verdict, obs_, events))
    assert not any("lists it again" in line or "reads as pending in the ledger" in line for line in follow), follow
    assert any("prisma migrate status` was not run after the rollback" in line for line in follow), follow
    assert any("No ledger event after the rollback started" in line for line in follow), follow
    no_cli = PLAN.model_copy(update={"migration": PLAN.migration.model_copy(update={"prisma_project": None})})
    follow = _follow_up(report.render_postmortem(no_cli, "run", verdict, obs_, events))
    assert any("was not run after the rollback (the plan names no migration.prisma_project)" in line
               for line in follow), follow

    events.append(event("ledger", at + timedelta(seconds=20), migrations={PLAN.migration.name: "rolled_back"},
                        text=f"{PLAN.migration.name} is rolled_back again"))
    events.append(event("prisma_status", at + timedelta(seconds=22), expect="pending", agrees=True, kind="pending",
                        migrations=[PLAN.migration.name],
                        text=f"after the rollback, prisma migrate status says pending ({PLAN.migration.name})"))
    follow = _follow_up(report.render_postmortem(PLAN, "run", verdict, obs_, events))
    stamp = f"{at + timedelta(seconds=20):%Y-%m-%d %H:%M:%S} UTC"
    assert any(f"the ledger reads {PLAN.migration.name} as rolled_back (recorded {stamp}" in line
               for line in follow), follow
    assert any("prisma migrate status` lists it as pending again: after the rollback, prisma migrate status says "
               f"pending ({PLAN.migration.name})" in line for line in follow), follow


def test_the_matching_log_lines_say_how_many_of_the_matches_they_are():
    """make demo SCENARIO=legacy-code: "`critical_errors` hour0 tick 0: ..., matches 11" and
    under "Matching log lines (credentials masked):" ten lines (the log source keeps at most
    10 a reading): shown as if they were the matches. Now the heading says which share."""
    from test_report import nogo_hour0_run

    verdict, obs_, events = nogo_hour0_run()  # 13 matches, 2 lines kept
    text = report.render_postmortem(PLAN, "run", verdict, obs_, events)
    assert "Matching log lines (2 of the 13 matching lines, as the readings kept them; credentials masked):" in text
    assert "Matching log lines (credentials masked):" not in text


def _stopped_then_restored(with_windows: bool = True):
    """A NO-GO stop at minute 3.5 after the migration verified (T0), applied a minute before;
    the rollback's restore ends at minute 6: three intensive auth_error_rate readings, each
    counting 1,000 requests, the last scraped at minute 3."""
    from test_report_sections import obs

    readings = []
    for k in (1, 2, 3):
        window = ({"window_from": (T0 + timedelta(minutes=k - 1)).isoformat(),
                   "scraped_at": (T0 + timedelta(minutes=k)).isoformat()} if with_windows else {})
        readings.append(obs("auth_error_rate", "intensive", k, k - 1 / 60, 0.01, numerator=10, denominator=1000,
                            **window))
    readings.append(obs("auth_error_rate", "intensive", 4, 9, 0.0, numerator=0, denominator=500))  # after the restore
    events = [ev("migrate", -1, applied=["m1"]), ev("verified", 0, at=T0.isoformat()),
              ev("no_go", 3.5, criterion=CRITICAL.id), ev("rollback_started", 4, text="ROLLBACK INITIATED"),
              ev("restore", 6, values_restored=10), ev("rollback_completed", 7)]
    return run_of(readings, events, [CRITICAL], "NO_GO")


def test_the_impact_names_the_span_its_requests_were_counted_in_not_meanwhile():
    """The post-mortem's Impact said "Authentication requests seen meanwhile: 3,000, 30
    answered 5xx (1%)" under "The migrated schema was live ... until the rollback's restore
    gave its columns and values back": the readings counted up to the NO-GO stop (the soak
    reads nothing after it), not to the restore minutes later, so "meanwhile" claimed the
    whole exposure. Now it names the span the readings counted and what they did not."""
    lines = pm.impact(_stopped_then_restored())
    assert not any("meanwhile" in line for line in lines), lines
    assert ("Authentication requests counted from 2026-03-02 09:00:00 UTC to 2026-03-02 09:03:00 UTC (3 readings; "
            "the NO-GO stop recorded at 2026-03-02 09:03:30 UTC): 3,000, 30 answered 5xx (1%)") in lines, lines
    assert ("Not counted: the requests from 2026-03-02 09:03:00 UTC until the rollback's restore gave its columns and "
            "values back (2026-03-02 09:06:00 UTC), 3.0 min while the migrated schema was still live: no reading "
            "ended between the NO-GO stop and 2026-03-02 09:06:00 UTC") in lines, lines
    # a reading's window unknown: no start is claimed
    unknown = pm.impact(_stopped_then_restored(with_windows=False))
    assert ("Authentication requests counted after the migration (2026-03-02 08:59:00 UTC), up to 2026-03-02 "
            "09:03:00 UTC (3 readings; the NO-GO stop recorded at 2026-03-02 09:03:30 UTC): 3,000, 30 answered 5xx "
            "(1%)") in unknown, unknown


def test_the_impact_names_the_requests_before_the_first_window_as_not_counted():
    """The schema went live when the migration applied (08:59), the first reading's window
    starts at 09:00 (a series' first window after the migration starts at a page scraped
    after it: after the verification and hour 0's wait), yet Impact named only the tail it
    did not count ("Not counted: the requests from 09:03:00 until the rollback's restore"),
    so the counted span and that tail read as the whole exposure of "live from 08:59"; and
    it said "no reading was taken after the NO-GO stop" where one was, at 09:09 (left out:
    it ends after the restore)."""
    lines = pm.impact(_stopped_then_restored())
    assert ("Not counted: the requests from 2026-03-02 08:59:00 UTC (the migration applied) until 2026-03-02 "
            "09:00:00 UTC, 60 s while the migrated schema was live: the first reading's window starts there") in lines, \
        lines
    assert not any("no reading was taken after the NO-GO stop" in line for line in lines), lines
    # a window's start unknown: nothing is claimed about the head
    unknown = pm.impact(_stopped_then_restored(with_windows=False))
    assert not any("the first reading's window starts there" in line for line in unknown), unknown
