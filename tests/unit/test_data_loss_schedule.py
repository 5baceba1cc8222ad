"""Which ``data_loss`` readings compare every value and which read keys only (issue 14
item 3): hour 0, the soak's end and any unscheduled reading are exact."""

from __future__ import annotations

from migration_soak.plan import load_plan
from migration_soak.sources.data_loss import exact_due

PLAN = load_plan("default")


def test_exact_at_hour0_and_at_the_soaks_end_keys_in_between():
    check = PLAN.check("data_loss")
    regular, passive = (len(PLAN.phase(p).tick_offsets()) for p in ("regular", "passive"))
    assert exact_due(PLAN, "hour0", 0, check)
    assert [exact_due(PLAN, "regular", t, check) for t in range(1, regular + 1)] == [False] * regular
    assert [exact_due(PLAN, "passive", t, check) for t in range(1, passive + 1)] == [False] * (passive - 1) + [True]
    # the passive phase's last tick is the soak's end: the reading just before the verdict
    assert PLAN.phase("passive").tick_offsets()[-1].total_seconds() == PLAN.soak_hours() * 3600


def test_unscheduled_or_unknown_readings_are_exact():
    assert exact_due(None, "regular", 1) and exact_due(PLAN, None, None) and exact_due(PLAN, "regular", None)
    assert exact_due(PLAN, "baseline", 1) and exact_due(PLAN, "no_such_phase", 1)


def test_a_check_that_ends_before_the_soak_reads_exactly_at_its_own_last_tick():
    check = PLAN.check("data_loss").model_copy(update={"phases": ["hour0", "intensive", "regular"]})
    regular = len(PLAN.phase("regular").tick_offsets())
    assert [exact_due(PLAN, "regular", t, check) for t in range(1, regular + 1)] == [False] * (regular - 1) + [True]
    assert not exact_due(PLAN, "intensive", len(PLAN.phase("intensive").tick_offsets()), check)
    # without a check: the plan's last phase
    assert not exact_due(PLAN, "regular", regular) and exact_due(PLAN, "passive", len(PLAN.phase("passive").tick_offsets()))
