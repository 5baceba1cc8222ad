"""A GO under the 90 % bar can rest on a guard that missed a tenth of the soak: the GO's
reasons (Slack's "verdict: GO", the QA sign-off question) name what the guard missed."""

from __future__ import annotations

from migration_soak.judge import judge

from tests.unit.test_judge import PLAN, full_soak


def test_a_go_names_the_minutes_the_guard_missed_and_its_longest_gap():
    """140 scattered guard minutes of 1,440 missed (the triggerer busy): 90.3 % of the
    readings due, over the 90 % bar, so the verdict is GO, and its reasons said nothing of
    it. Now: 'the guard missed 140 of its 1,440 soak-minutes (...), longest gap 1 min'."""
    missed = set(range(5, 5 + 10 * 140, 10))  # 140 minutes, scattered
    v = judge(PLAN, [o for o in full_soak() if not (o.phase == "guard" and o.tick in missed)])
    assert v.decision == "GO", v.reasons
    line = next((r for r in v.reasons if r.startswith("the guard missed")), None)
    assert line == ("the guard missed 140 of its 1,440 readings due (140 soak-min, 9.7 %; longest gap 1 min: no "
                    f"reading between soak 0:04 and 0:06), each of its {len(PLAN.guard.checks)} checks: within the 90% "
                    "coverage bar, but nothing the guard reads was watched then"), v.reasons


def test_a_consecutive_outage_is_named_by_its_longest_gap():
    missed = set(range(600, 700))  # 100 consecutive minutes
    v = judge(PLAN, [o for o in full_soak() if not (o.phase == "guard" and o.tick in missed)])
    assert v.decision == "GO", v.reasons
    line = next(r for r in v.reasons if r.startswith("the guard missed"))
    assert ("100 of its 1,440 readings due (100 soak-min, 6.9 %; longest gap 100 min: no reading between soak 9:59 "
            "and 11:40)") in line, line


def test_a_guard_that_missed_nothing_adds_nothing():
    v = judge(PLAN, full_soak())
    assert v.decision == "GO" and not any("the guard missed" in r for r in v.reasons), v.reasons
