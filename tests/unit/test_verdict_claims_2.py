"""What the verdict, the report and preflight may claim (second review): a first log reading after a
failed one, a DO block's drops, per-minute counts in the post-mortem, values next to their NO-GO
level, plan file names."""

from __future__ import annotations


import pytest

from migration_soak import report_postmortem as pm
from migration_soak.judge import Verdict
from migration_soak.report_run import analyse

from test_report_sections import PLAN, obs  # a reading minutes after T0, status from the plan's levels


def test_postmortem_does_not_call_summed_busiest_minutes_log_lines():
    """db_slow_queries (per_minute) reads the busiest minute, not a line count: the
    post-mortem's "N log lines" summed those maxima (3 + 4 = 7) while 22 lines matched."""
    readings = [obs("db_slow_queries", "regular", 1, 60, 3, reader="file", matches=10, busiest_minute_matches=3),
                obs("db_slow_queries", "regular", 2, 120, 4, reader="file", matches=12, busiest_minute_matches=4)]
    run = analyse(PLAN, Verdict("NO_GO", [], []), readings, [], 1.0)
    lines = pm._log_impact(run)
    wrong = [line for line in lines if "db_slow_queries" in line and "7 log lines" in line]
    assert not wrong, wrong


def test_first_log_reading_after_a_failed_hour0_reading_is_not_a_60_minute_window_count():
    """critical_errors runs in [hour0, regular, passive]. Its hour-0 reading failed, so the
    regular tick-1 reading (soak minute 180) is the series' first with a value and, since
    previous_reading skips errors and log_mark starts it at the DDL, it counts 3 hours of
    log: 6 critical lines, one every 30 minutes (the guard read them one by one, never more
    than 2 in an hour). WindowCount._shown_in counts a series' first reading whole ("no
    known span"), so "> 5 in any hour" is breached: a healthy service rolled back on 6
    lines spread over 3 hours, the case 7a6f79e fixed for every other reading."""
    from test_judge import full_soak, obs as jobs

    from migration_soak.judge import judge, no_go_breaches

    minutes = {20 + 30 * k for k in range(6)}
    soak = []
    for o in full_soak():
        if o.check_id == "critical_errors" and o.phase == "hour0":
            o = jobs("critical_errors", "hour0", 0, 0, None)  # missed / unreadable: an error reading
        elif o.check_id == "critical_errors" and o.phase == "guard" and round(o.soak_s / 60) in minutes:
            o = jobs("critical_errors", "guard", o.tick, o.soak_s / 60, 1)
        elif o.check_id == "critical_errors" and o.phase == "regular" and o.tick == 1:
            assert o.soak_s == 180 * 60
            o = jobs("critical_errors", "regular", 1, 180, 6)
        soak.append(o)
    assert [r.id for r in no_go_breaches(PLAN, soak)] == []
    assert judge(PLAN, soak).decision != "NO_GO"


def test_check_drops_sees_a_drop_column_inside_a_do_block():
    """A DO block runs when the migration runs: its DROP COLUMN destroys emailVerified as
    surely as a top-level one. pglast does not parse plpgsql bodies, so destroyed_by misses
    it and check_drops accepts a plan listing only passwordHash: the very case dee147f
    guards (the rollback brings emailVerified back as the down SQL's default, "0
    mismatches"). It should be refused (or the DO block reported as unreadable)."""
    from migration_soak.exceptions import MigrationError
    from migration_soak.migrate import check_drops

    script = ('ALTER TABLE "users" DROP COLUMN "passwordHash";\n'
              'DO $$ BEGIN ALTER TABLE "users" DROP COLUMN "emailVerified"; END $$;')
    with pytest.raises(MigrationError):
        check_drops(script, "users", ["passwordHash"])


def test_a_plan_file_with_a_non_ascii_letter_keeps_its_dag():
    """Airflow's dag ids are ``^[\\w.-]+$`` (Unicode letters included: KEY_REGEX), but
    unusable_name allows ASCII only: 'migración.yaml' (a Spanish-speaking team's runbook)
    built a DAG before 95094e6 and is now left out as an import error."""
    from pathlib import Path

    from airflow.sdk.definitions._internal.node import validate_key

    from migration_soak.airflow.builder import dag_id_for, unusable_name

    path = Path("migración.yaml")
    validate_key(dag_id_for(path.stem))  # Airflow accepts it
    assert unusable_name(path) is None


def test_check_row_does_not_write_a_fail_value_as_the_no_go_bound():
    """7a6f79e: 'a value is never written as the bound it is not (10.04 %, not 10 %)'.
    The verdict says 10.04 %, but the report's check row for the same reading still says
    '10% at regular tick 1 meets its NO-GO level > 10%'."""
    from migration_soak.report_checks import summarize_check

    check = PLAN.check("workflow_error_rate")
    reading = obs("workflow_error_rate", "regular", 1, 180, 0.1004)
    assert reading.status == "fail"
    row = summarize_check(PLAN, check, [reading], False)
    assert "10% at" not in row.detail, row.detail


def test_decided_row_does_not_write_the_deciding_value_as_the_no_go_bound():
    """The same reading deciding no_go_workflows: the check row reads 'decided NO-GO
    no_go_workflows (> 10%): 10% at regular tick 1' while the verdict says 10.04 %."""
    from migration_soak.judge import judge_breach
    from migration_soak.report_checks import summarize_check

    check = PLAN.check("workflow_error_rate")
    reading = obs("workflow_error_rate", "regular", 1, 180, 0.1004)
    crit = next(c for c in PLAN.no_go if c.id == "no_go_workflows")
    breach = judge_breach(crit, "no_go", [reading])
    assert breach.outcome == "breached"
    row = summarize_check(PLAN, check, [reading], "regular tick 1", [breach])
    assert ": 10% at" not in row.detail, row.detail


def test_readings_not_measured_are_not_called_errors_next_to_an_error_rate():
    """metrics-outage demo: /metrics answered 503 for soak hours 8-16, and the verdict, Slack's
    rollback reason, the report and the post-mortem said "auth_error_rate: 17 of 19 scheduled
    readings measured (coverage 89% < 90%; 34 errors)" and "Error rate < 0.1% en
    autenticación: not enough data (auth_error_rate: 114 readings (34 errors), 0%)": 34
    authentication errors at 0 %? They were 34 readings the scrape could not take, 32 of them
    the guard's (which the "of 19 scheduled" does not count)."""
    from test_judge import full_soak, obs as jobs

    from migration_soak import report_sections as sections
    from migration_soak.judge import judge

    def outage(o) -> bool:  # /metrics down from soak hour 8 to hour 16
        return o.check_id == "auth_error_rate" and o.phase != "baseline" and 8 * 3600 <= o.soak_s < 16 * 3600

    soak = [jobs(o.check_id, o.phase, o.tick, o.soak_s / 60, None) if outage(o) else o for o in full_soak()]
    down = [o for o in soak if outage(o)]
    guard = sum(o.phase == "guard" for o in down)
    assert len(down) - guard == 2 and guard == 480  # regular tick 6 (hour 8), passive tick 1 (hour 12)
    verdict = judge(PLAN, soak)
    go = next(c for c in verdict.criteria if c.id == "go_auth_error_rate")
    assert "errors)" not in go.detail and f"{len(down)} readings not measured (error), {guard} of them the guard's" in go.detail, \
        go.detail
    figures = sections.figures(analyse(PLAN, verdict, soak, [], 1.0), go)
    assert f"({len(down)} not measured)" in figures and "errors)" not in figures, figures
