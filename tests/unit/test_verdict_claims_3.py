"""What the verdict, Slack, the report and the soak view may claim (third review): one
evidence test for both sides of a check, the cause of readings not measured, missed ticks,
"not measured" in the soak view, out-of-range trigger values."""

from __future__ import annotations

from datetime import timedelta

from test_judge import PLAN, full_soak, obs as jobs

from migration_soak.judge import judge


def _guard_missed(minute_from: float, minute_to: float, check_id: str = "users_without_authorizer_id"):
    """A healthy soak whose guard readings of ``check_id`` from ``minute_from`` to
    ``minute_to`` were not measured (the guard's ticks missed or its reads failed)."""
    return [jobs(o.check_id, o.phase, o.tick, o.soak_s / 60, None)
            if o.check_id == check_id and o.phase == "guard" and minute_from <= o.soak_s / 60 <= minute_to else o
            for o in full_soak()]


def test_a_go_criterion_is_not_met_on_readings_too_few_to_judge_its_no_go_side():
    """metrics-outage demo: `go_no_users_without_authorizer_id` (== 0) was "met" (19 of 19
    scheduled readings, coverage 100 %) while `no_go_users_without_authorizer_id` (> 0), on the
    same check's readings, was "not judged" at 87 % of the readings due (the guard's counted).
    The same readings cannot be enough to say "no user without authorizerId all soak" and
    too few to say "no user without authorizerId was seen": a met needs what a NO-GO needs."""
    soak = _guard_missed(8 * 60, 11 * 60 + 10)  # 191 guard minutes of 1 440 not measured
    verdict = judge(PLAN, soak)
    by_id = {c.id: c for c in verdict.criteria}
    no_go, go = by_id["no_go_users_without_authorizer_id"], by_id["go_no_users_without_authorizer_id"]
    assert no_go.outcome == "not_judged" and "(coverage 87% < 90%)" in no_go.detail, no_go.detail
    assert go.outcome == "not_enough_data", (go.outcome, go.detail)
    assert "(coverage 87% < 90%)" in go.detail, go.detail
    row = next(c for c in verdict.checks if c.check_id == "users_without_authorizer_id")
    assert row.outcome == "not_enough_data", (row.outcome, row.detail)
    assert verdict.decision == "INCONCLUSIVE"


def test_a_go_criterion_is_met_when_the_no_go_side_has_its_readings():
    """The same test does not take a met away from a soak whose readings suffice: 100 guard
    minutes missed of 1 440 leave 93 % of the readings due."""
    soak = _guard_missed(8 * 60, 8 * 60 + 99)
    by_id = {c.id: c for c in judge(PLAN, soak).criteria}
    assert by_id["no_go_users_without_authorizer_id"].outcome == "clear"
    assert by_id["go_no_users_without_authorizer_id"].outcome == "met", by_id["go_no_users_without_authorizer_id"].detail


def _failed(soak, check_id: str, minute_from: float, minute_to: float, error):
    """``soak`` with ``check_id``'s readings after the migration from ``minute_from`` to
    ``minute_to`` not measured, their evidence saying ``error`` (as observe.take records it;
    a callable: of the reading's soak minute)."""
    from dataclasses import replace

    return [replace(jobs(o.check_id, o.phase, o.tick, o.soak_s / 60, None),
                    evidence={"error": error(o.soak_s / 60) if callable(error) else error})
            if o.check_id == check_id and o.phase != "baseline" and minute_from <= o.soak_s / 60 <= minute_to else o
            for o in soak]


def test_the_verdicts_reasons_name_the_cause_of_readings_not_measured():
    """metrics-outage demo: /metrics answered 503 for soak hours 8-16. The report's incidents
    said "not measured: scrape of /metrics answered HTTP 503", but the verdict's reasons (the
    INCONCLUSIVE question, Slack, the report's "What decided it") said only "482 readings not
    measured (error), 480 of them the guard's": a person deciding GO or rollback could not
    tell a metrics outage from a broken application."""
    from migration_soak import notify

    soak = _failed(full_soak(), "auth_error_rate", 8 * 60, 16 * 60 - 1, "scrape of /metrics answered HTTP 503")
    verdict = judge(PLAN, soak)
    assert verdict.decision == "INCONCLUSIVE"
    go = next(r for r in verdict.reasons if r.startswith("go_auth_error_rate:"))
    no_go = next(r for r in verdict.reasons if r.startswith("no_go_auth_error_rate:"))
    assert "scrape of /metrics answered HTTP 503" in go, go
    assert "scrape of /metrics answered HTTP 503" in no_go, no_go
    slack = notify.inconclusive_text(PLAN, verdict.reasons)
    assert "HTTP 503" in slack, slack


def test_the_cause_named_is_the_most_frequent_short_and_without_secrets():
    """Two causes: the most frequent is named with its share, masked (no password from a
    DSN), on one line, cut short; a missed tick's timestamp is not part of its cause."""
    from migration_soak.judge import not_measured

    soak = _failed(full_soak(), "users_without_authorizer_id", 8 * 60, 12 * 60,
                   "connection to postgresql://soak:s3cret-pw@db:5432/app failed: canceling statement due to "
                   "statement timeout\nCONTEXT: SQL statement \"SELECT count(*) FROM users WHERE ...\"")
    soak = _failed(soak, "users_without_authorizer_id", 12 * 60 + 1, 12 * 60 + 30,
                   "missed: tick was due at 2026-01-01T12:01:00+00:00 and no task ran before the next tick (+30 s grace)")
    text = not_measured(soak, "users_without_authorizer_id")
    assert "s3cret" not in text and "\n" not in text and "CONTEXT" not in text, text
    assert "statement timeout" in text and "most often" in text, text
    assert len(text) < 260, (len(text), text)
    missed = _failed(full_soak(), "users_without_authorizer_id", 8 * 60, 8 * 60 + 30,
                     lambda m: f"missed: tick was due at 2026-01-01T08:{m - 480:02.0f}:00+00:00 and no task ran before "
                               "the next tick (+30 s grace)")
    text = not_measured(missed, "users_without_authorizer_id")
    assert "most often" not in text and "2026-01-01" not in text, text
    assert "missed: tick was due and no task ran before the next tick (+30 s grace)" in text, text



def test_missed_ticks_are_one_incident_line_with_a_count_and_first_and_last_time():
    """observe.missed_observation writes "missed: tick was due at <its time> and no task ran
    before the next tick (+30 s grace)": the report grouped incidents by that message, so 40
    missed guard ticks of a check were 40 lines, each "(1 reading, ...)"."""
    from test_report_sections import obs as robs, run_of, T0 as RT0

    from migration_soak import report_sections as sections

    readings = [robs("login_p95", "guard", k, k, None,
                     error=f"missed: tick was due at {(RT0 + timedelta(minutes=k)).isoformat()} and no task ran before "
                           "the next tick (+30 s grace)") for k in range(10, 50)]
    readings += [robs("login_p95", "guard", 50, 50, None, error="scrape of /metrics answered HTTP 503")]
    lines = sections.incidents(run_of(readings))
    assert len(lines) == 2, lines
    assert lines[0].startswith("`login_p95` guard ticks 10–49 (40 readings, 2026-03-02 09:10:01 UTC to 09:49:01 UTC): "
                               "not measured: missed: tick was due and no task ran before the next tick (+30 s grace)"), \
        lines[0]


def test_the_soak_view_and_the_charts_say_not_measured_not_errors():
    """The soak view's readings card said "34 errors · 0 at a NO-GO level" and each chart's
    legend "error (32)" for readings whose source did not answer: beside an error rate that
    reads as 34 failed requests. The report says "not measured (error)"; so do they."""
    from test_charts import _chart, obs as cobs
    from test_soak_view import reading, snapshot

    from migration_soak import charts
    from migration_soak.airflow import soak_view as sv

    obs = [reading("auth_error_rate", "guard", "error"), reading("auth_error_rate", "intensive", "error"),
           reading("auth_error_rate", "hour0", "fail"), reading("auth_error_rate", "guard", "pass")]
    card = sv._readings_card(snapshot(observations=obs))
    assert "2 not measured (error) · 1 at a NO-GO level" in card and "errors" not in card, card
    readings = [cobs("auth_error_rate", "guard", 1, 0.1, 0.0, "pass"), cobs("auth_error_rate", "guard", 2, 0.2, None, "error")]
    chart = _chart("auth_error_rate", readings)
    charts._draw_errors(chart, readings)
    assert [h.get_label() for h in chart.handles] == ["not measured (1)"]


def test_a_check_never_measured_names_why_in_its_row():
    """A check whose every reading failed: its row in the report and its soak-view card said
    "not measured (19 readings failed)" and nothing of why; the cause is the verdict's."""
    soak = _failed(full_soak(), "deprecated_columns_absent", 0, 24 * 60,
                   "connection to postgresql://soak:s3cret@db/app failed: canceling statement due to statement timeout")
    row = next(c for c in judge(PLAN, soak).checks if c.check_id == "deprecated_columns_absent")
    assert row.outcome == "not_measured"
    assert row.detail.startswith("not measured (19 readings failed: 'connection to postgresql://soak:***@db/app "
                                 "failed: canceling statement due to statement timeout')"), row.detail
