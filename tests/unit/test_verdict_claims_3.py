"""What the verdict, Slack, the report and the soak view may claim (third review): one
evidence test for both sides of a check, the cause of readings not measured, missed ticks,
"not measured" in the soak view, out-of-range trigger values."""

from __future__ import annotations

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
