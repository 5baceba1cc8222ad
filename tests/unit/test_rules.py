"""Each rule kind on hand-made readings: its points, its judgement (detect / holds
throughout) and its text. The default plan's criteria are in test_judge.py."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from migration_soak.plan import BaselineRule, GrowthRule, SustainedRule, ThresholdRule, WindowCountRule
from migration_soak.rules import (
    Baseline,
    Growth,
    Sustained,
    Threshold,
    WindowCount,
    rule_kind,
    wilson_lower, wilson_upper,
)
from migration_soak.store import Observation, RunClock

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
REAL_TIME = RunClock(T0, 1.0)


def reading(minute, value, unit="ratio", taken=None, counts=None, clock=REAL_TIME):
    """A reading scheduled ``minute`` wall minutes after T0 (taken then, or at ``taken``),
    carrying its soak time on ``clock`` (real time: wall minutes are soak minutes)."""
    at = T0 + timedelta(minutes=minute)
    evidence = {"numerator": counts[0], "denominator": counts[1]} if counts else {}
    return Observation("r", "guard", "c", int(minute), at, T0 + timedelta(minutes=taken) if taken is not None else at,
                       value, unit, "error" if value is None else "pass", evidence).on_clock(clock)


def minutes(points):
    return [(o.scheduled_at - T0).total_seconds() / 60 for o, _ in points]


def values(points):
    return [v for _, v in points]


# --- threshold ---------------------------------------------------------------------------------

def test_threshold_breach_reads_a_count_ratio_by_its_limit_on_the_far_side():
    above = rule_kind(ThresholdRule(kind="threshold", op=">", value=0.01))
    series = [reading(0, 0.0), reading(15, 1 / 45, counts=(1, 45)), reading(30, 0.2, counts=(20, 100))]
    assert values(above.points(series, None)) == [0.0, 1 / 45, 0.2]
    assert values(above.points(series, None, confident=True)) == [0.0, wilson_lower(1, 45), wilson_lower(20, 100)]
    assert minutes(above.detect(series, None)) == [30]  # 1 failure in 45 requests proves nothing
    # a bound the other way (a NO-GO "success rate < 50 %") by the upper limit: 0 in 1 is no breach
    below = rule_kind(ThresholdRule(kind="threshold", op="<", value=0.05))
    assert values(below.points(series, None)) == [0.0, 1 / 45, 0.2]
    assert values(below.points(series, None, confident=True)) == [0.0, wilson_upper(1, 45), wilson_upper(20, 100)]


def test_threshold_holds_throughout_names_the_first_reading_that_does_not_meet_it():
    rule = rule_kind(ThresholdRule(kind="threshold", op="<", value=0.1))
    ok, bad, n = rule.holds_throughout([reading(0, 0.05), reading(15, 0.3), reading(30, 0.5)], None)
    assert (ok, minutes([bad]), bad[1], n) == (False, [15], 0.3, 3)
    assert rule.holds_throughout([reading(0, 0.05)], None)[:2] == (True, None)


def test_threshold_text_and_shown_values_are_in_the_checks_unit():
    assert rule_kind(ThresholdRule(kind="threshold", op=">", value=0.01)).text("ratio") == "> 1%"
    up = rule_kind(ThresholdRule(kind="threshold", op="==", value=1))
    assert up.text("up") == "== up" and up.shown(0, "up") == "down"
    assert up.max_gap_minutes() is None and up.run_phrase() == "" and up.window_phrase == "at"


def test_a_reading_without_a_value_is_refused():
    with pytest.raises(ValueError, match="has no value"):
        rule_kind(ThresholdRule(kind="threshold", op=">", value=0)).points([reading(0, None)], None)


# --- sustained ---------------------------------------------------------------------------------

SUSTAINED = SustainedRule(kind="sustained", op=">", value=0.01, minutes=5)


def test_sustained_needs_breaching_readings_covering_the_window():
    rule = rule_kind(SUSTAINED)
    every_minute = [reading(m, 0.05) for m in range(6)]
    assert minutes(rule.detect(every_minute, None)) == [0, 1, 2, 3, 4, 5]
    assert rule.detect(every_minute[:5], None) is None  # 4 minutes
    assert rule.detect([reading(m, 0.05) for m in range(0, 31, 3)], None) is None  # 3 > 5 / 2 apart
    assert minutes(rule.detect([reading(m * 2.5, 0.05) for m in range(3)], None)) == [0, 2.5, 5]


def test_sustained_restarts_on_a_good_reading_not_on_one_over_too_few_requests():
    rule = rule_kind(SUSTAINED)
    burst = [reading(m, 0.05) for m in range(6)]

    def with_reading_at_2_5(o):
        return burst[:3] + [o] + burst[3:]

    assert rule.detect(with_reading_at_2_5(reading(2.5, 0.0)), None) is None
    assert rule.detect(with_reading_at_2_5(reading(2.5, 0.0, counts=(0, 5000))), None) is None
    # 0 errors in 50 requests shows neither: a gap, the run goes on
    assert minutes(rule.detect(with_reading_at_2_5(reading(2.5, 0.0, counts=(0, 50))), None)) == [0, 1, 2, 3, 4, 5]


def test_sustained_windows_are_soak_minutes():
    """At time_scale 60 a wall second is a soak minute."""
    fast = [reading(m / 60, 0.05, clock=RunClock(T0, 60.0)) for m in range(6)]
    assert [o.soak_s for o in fast] == [0, 60, 120, 180, 240, 300]
    assert rule_kind(SUSTAINED).detect(fast, None) is not None
    assert rule_kind(SUSTAINED).detect([reading(m / 60, 0.05) for m in range(6)], None) is None


def test_a_reading_without_soak_time_is_refused():
    bare = [Observation(**{**reading(m, 0.05).__dict__, "soak_s": None}) for m in range(6)]
    with pytest.raises(ValueError, match="has no soak time: load it on the run's clock"):
        rule_kind(SUSTAINED).detect(bare, None)


def test_sustained_text_and_gap():
    rule = rule_kind(SUSTAINED)
    assert rule.text("ratio") == "> 1% sustained for 5 min"
    assert rule.max_gap_minutes() == 2.5 and rule.run_phrase() == ", at most 2.5 min apart"


# --- window_count ------------------------------------------------------------------------------

def test_window_count_sums_the_last_minutes_half_open():
    rule = rule_kind(WindowCountRule(kind="window_count", op=">", value=5, minutes=60))
    series = [reading(0, 3, "count"), reading(59, 2, "count"), reading(60, 1, "count"), reading(60, 1, "count")]
    # at 60 the reading of minute 0 is out (age 60), both readings of minute 60 are in
    assert values(rule.points(series, None)) == [3, 5, 4, 4]
    assert rule.detect(series, None) is None
    # A NO-GO reads only what is sure to lie in the window: each reading counts the lines
    # since its previous one, so minute 59's two lines (logged between minutes 0 and 59)
    # may all lie before the window ending at 61.
    assert rule.detect(series + [reading(61, 2, "count")], None) is None
    every_minute = [reading(m, 0, "count") for m in range(56)] + [reading(m, 2, "count") for m in (56, 57, 58)]
    hit = rule.detect(every_minute, None)
    assert minutes(hit) == [58] and values(hit) == [6]


def test_a_window_count_no_go_reads_a_reading_longer_than_its_window_by_its_densest_part():
    """Six lines over a 4-hour reading do not show "> 5 in any hour" (at least 2 fell in one
    hour); 21 do (at least 6)."""
    rule = rule_kind(WindowCountRule(kind="window_count", op=">", value=5, minutes=60))
    assert rule.detect([reading(480, 0, "count"), reading(720, 6, "count")], None) is None
    hit = rule.detect([reading(480, 0, "count"), reading(720, 21, "count")], None)
    assert minutes(hit) == [720] and values(hit) == [6]


def test_window_count_without_minutes_counts_the_whole_soak():
    rule = rule_kind(WindowCountRule(kind="window_count", op="==", value=0))
    series = [reading(0, 3, "count"), reading(600, 2, "count")]
    assert minutes(rule.points(series, None)) == [600] and values(rule.points(series, None)) == [5]
    assert rule.points([], None) == [] and rule.holds_throughout([], None) == (True, None, 0)


def test_window_count_sums_within_the_guard_and_the_phase_series_never_across():
    """The guard and the phase checks each read every log line once: 4 lines seen by both
    are 4, not 8; a series alone above the bound is a breach."""
    def phase(minute, value):
        return Observation(**{**reading(minute, value, "count").__dict__, "phase": "regular"})
    per_hour = rule_kind(WindowCountRule(kind="window_count", op=">", value=5, minutes=60))
    both = [reading(10, 2, "count"), reading(20, 2, "count"), phase(30, 4)]
    assert per_hour.detect(both, None) is None
    assert sorted(values(per_hour.points(both, None))) == [2, 4, 4]
    hit = per_hour.detect(both + [reading(40, 3, "count")], None)
    assert minutes(hit) == [40] and values(hit) == [7]  # the guard's 2 + 2 + 3
    soak = rule_kind(WindowCountRule(kind="window_count", op="==", value=0))
    assert soak.holds_throughout([reading(10, 0, "count"), phase(30, 1)], None)[0] is False
    assert soak.holds_throughout([reading(10, 0, "count"), phase(30, 0)], None)[0] is True


def test_window_count_text():
    assert rule_kind(WindowCountRule(kind="window_count", op=">", value=5, minutes=60)).text("count") == \
        "count > 5 in any 60 min"
    over = rule_kind(WindowCountRule(kind="window_count", op="==", value=0))
    assert over.text("count") == "count == 0 over the soak" and over.window_phrase == "in the window ending"


# --- baseline ----------------------------------------------------------------------------------

DEGRADATION = BaselineRule(kind="baseline", op=">", value=0.3, window_minutes=60, min_delta=50)


def test_baseline_is_the_change_of_the_windows_median_closed():
    rule = rule_kind(DEGRADATION)
    series = [reading(0, 200, "ms"), reading(30, 300, "ms"), reading(60, 400, "ms"), reading(61, 1000, "ms")]
    # medians 200 (under min_delta: 0), 250, 300 (minute 0 still in: age 60), 400 (minute 0 out)
    assert values(rule.points(series, 200.0)) == [0.0, 0.25, 0.5, 1.0]
    assert minutes(rule.detect(series, 200.0)) == [60]


def test_baseline_has_no_points_without_a_baseline_and_ignores_small_changes():
    rule = rule_kind(DEGRADATION)
    assert rule.needs_baseline
    assert rule.points([reading(0, 900, "ms")], None) == [] == rule.points([reading(0, 900, "ms")], 0.0)
    assert values(rule.points([reading(0, 249, "ms")], 200.0)) == [0.0]  # +24.5 %, but only 49 ms


def test_baseline_text_shows_changes():
    rule = rule_kind(DEGRADATION)
    how = ("(a quantile with histograms: of the window's requests, buckets pooled, against the baseline's, the change "
           "their 95 % limits show, none while not shown out of the baseline's bucket; other readings: the window's "
           "median against the baseline's)")
    assert rule.text("ms") == f"degradation vs baseline > 30% over 60 min {how}; changes under 50 ms are noise"
    assert rule.text("") == f"degradation vs baseline > 30% over 60 min {how}; changes under 50 are noise"
    assert rule.shown(0.305, "ms") == "+30.5%" and rule.breach_note(200.0, "ms") == "; baseline median 200 ms"
    assert rule.range_note(200.0, "ms") == "; baseline median 200 ms, changes under 50 ms count as 0"


# --- growth ------------------------------------------------------------------------------------

PER_HOUR = GrowthRule(kind="growth", op=">", value=0.2, per_minutes=60)


def test_growth_is_compounded_from_the_latest_reading_at_least_a_period_older():
    rule = rule_kind(PER_HOUR)
    series = [reading(0, 100, "bytes"), reading(60, 120, "bytes"), reading(90, 130, "bytes"), reading(120, 150, "bytes")]
    # 90: only minute 0 is an hour older; 120: minute 60 is the latest that is
    assert values(rule.points(series, None)) == pytest.approx([0.2, 1.3 ** (60 / 90) - 1, 0.25])
    assert rule.holds_throughout(series, None)[2] == 3  # points, not readings: minute 0 has none
    # x1.44 in 2 hours is +20 %/h compounded, not +22 %
    assert values(rule.points([reading(0, 100, "bytes"), reading(120, 144, "bytes")], None)) == pytest.approx([0.2])


def test_growth_is_timed_by_when_readings_were_taken():
    late = [reading(0, 100, "bytes"), reading(60, 120, "bytes", taken=80)]
    assert values(rule_kind(PER_HOUR).points(late, None)) == pytest.approx([1.2 ** (60 / 80) - 1])
    # due at 0:50 but taken at 1:00: an hour after the first reading
    early_due = [reading(0, 100, "bytes"), reading(50, 120, "bytes", taken=60)]
    assert values(rule_kind(PER_HOUR).points(early_due, None)) == pytest.approx([0.2])


def test_growth_from_zero_has_no_point_and_to_zero_is_minus_one():
    rule = rule_kind(PER_HOUR)
    assert rule.points([reading(0, 0, "bytes"), reading(60, 50, "bytes")], None) == []
    assert values(rule.points([reading(0, 100, "bytes"), reading(60, 0, "bytes")], None)) == [-1.0]


def test_sustained_growth_needs_points_spanning_its_minutes():
    rule = rule_kind(GrowthRule(kind="growth", op=">", value=0.2, per_minutes=60, minutes=60))
    leak = [reading(m, 100 * 1.3 ** (m / 60), "bytes") for m in range(0, 121, 15)]
    assert minutes(rule.detect(leak, None)) == [60, 75, 90, 105, 120]
    assert rule.detect(leak[:-1], None) is None
    assert minutes(rule_kind(PER_HOUR).detect(leak, None)) == [60]  # without minutes: the first point


def test_growth_text_and_shown():
    assert rule_kind(PER_HOUR).text("bytes") == "growth > 20% per 60 min"
    sustained = rule_kind(GrowthRule(kind="growth", op="<=", value=0.2, per_minutes=30, minutes=90))
    assert sustained.text("bytes") == "growth <= 20% per 30 min, sustained 90 min"
    assert sustained.shown(-0.05, "bytes") == "-5%" and sustained.max_gap_minutes() is None


# --- the registry ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, kind", [
    (ThresholdRule(kind="threshold", op=">", value=0), Threshold),
    (SUSTAINED, Sustained),
    (WindowCountRule(kind="window_count", op=">", value=5), WindowCount),
    (DEGRADATION, Baseline),
    (PER_HOUR, Growth),
])
def test_each_spec_gets_its_kind(spec, kind):
    rule = rule_kind(spec)
    assert type(rule) is kind and rule.spec is spec


def test_anything_else_is_refused():
    with pytest.raises(ValueError, match="unknown rule kind 'threshold'"):
        rule_kind(SimpleNamespace(kind="threshold", op=">", value=0))


def test_format_value_reads_every_unit():
    from migration_soak.rules import format_value

    assert [format_value(v, u) for v, u in [
        (0.125, "ratio"), (12.5, "percent"), (3 * 2**20, "bytes"), (4.5, "ms"), (2, "seconds"), (7, "per_minute"),
        (0, "up"), (1, "up"), (0.5, "up"), (3, "rows"), (2.5, "count"), (1.23456, "other"), (None, "ms"),
    ]] == ["12.5%", "12.5%", "3 MiB", "4.5 ms", "2 s", "7/min", "down", "up", "0.5", "3", "2.5", "1.235", "n/a"]


def windowed(minute, failed, events, window_min=60):
    """A phase reading of an SQL ratio counting the events of the last ``window_min`` wall
    minutes (``executions_last_hour``), taken ``minute`` minutes after T0."""
    o = reading(minute, failed / events, counts=(failed, events))
    o.evidence["window_s"] = window_min * 60
    return Observation("r", "regular", "workflow_error_rate", int(minute), o.scheduled_at, o.measured_at, o.value,
                       "ratio", "pass", o.evidence).on_clock(REAL_TIME)


def test_overlapping_last_hour_windows_are_not_pooled_as_if_each_counted_new_events():
    """Four readings 15 minutes apart, each "0 errors in the last hour's 40 executions", saw
    the same 40 or so executions: pooled as 0 of 160 they would show < 5 % (upper limit
    2.3 %); the 40 of one hour do not (upper limit 8.8 %)."""
    go = rule_kind(ThresholdRule(kind="threshold", op="<", value=0.05))
    overlapping = [windowed(m, 0, 40) for m in (0, 15, 30, 45)]
    assert go.holds_throughout(overlapping, None)[0] is True  # each reading is consistent with the bound
    assert go.unshown(overlapping) == ("pooled counts 0 of 40: too few to show < 5% (95 % upper limit 8.76%)")
    # Windows an hour apart count different executions: they pool.
    apart = [windowed(m, 0, 40) for m in (0, 60, 120, 180)]
    assert go.unshown(apart) is None


def test_one_failed_workflow_in_three_is_no_proof_of_a_ten_percent_error_rate():
    """NO-GO "Workflows críticos fallando (> 10% error rate)": 1 of 3 executions is 33 %
    but its 95 % lower limit is 6 %: noise on a quiet staging, not a rollback; 10 of 30
    (lower limit 19 %) is."""
    no_go = rule_kind(ThresholdRule(kind="threshold", op=">", value=0.10))
    assert no_go.detect([windowed(60, 1, 3)], None) is None
    assert no_go.detect([windowed(60, 10, 30)], None) is not None


def test_a_value_near_the_bound_is_written_with_the_digits_that_tell_them_apart():
    assert rule_kind(ThresholdRule(kind="threshold", op=">", value=0.9)).shown(0.90004, "ratio") == "90.004%"
    assert rule_kind(ThresholdRule(kind="threshold", op=">", value=0.1)).shown(0.1004, "ratio") == "10.04%"
    assert rule_kind(ThresholdRule(kind="threshold", op=">", value=0.1)).shown(0.1, "ratio") == "10%"
    assert rule_kind(ThresholdRule(kind="threshold", op=">", value=0.1)).shown(0.2, "ratio") == "20%"
    assert rule_kind(ThresholdRule(kind="threshold", op=">", value=1000)).shown(1000.2, "ms") == "1,000.2 ms"
