"""summarize_check: each outcome a check can have in the report, from hand-made readings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from migration_soak.judge import CriterionResult, expected_observations, status_of
from migration_soak.plan import load_plan
from migration_soak.report_checks import summarize_check, tally
from migration_soak.store import Observation

PLAN = load_plan("default")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def obs(cid: str, phase: str, tick: int, value: float | None, status: str | None = None) -> Observation:
    check = PLAN.check(cid)
    if status is None:
        status = "error" if value is None else status_of(check.expect, check.no_go, value)
    at = T0 + timedelta(minutes=tick)
    return Observation("r", phase, cid, tick, at, at, value, check.unit, status, {})


def summary(cid: str, readings: list[Observation], stopped: bool | str = False, breaches=()):
    return summarize_check(PLAN, PLAN.check(cid), readings, stopped, list(breaches))


def every_scheduled(cid: str, value: float) -> list[Observation]:
    out = []
    for phase in ["hour0"] + [p.name for p in PLAN.phases]:
        if any(c.id == cid for c in PLAN.checks_in(phase)):
            ticks = [0] if phase == "hour0" else range(1, len(PLAN.phase(phase).tick_offsets()) + 1)
            out += [obs(cid, phase, k, value) for k in ticks]
    return out


def test_tally_counts_after_the_migration_and_coverage_from_scheduled_readings_only():
    readings = [obs("login_p95", "baseline", 1, 200.0), obs("login_p95", "intensive", 1, 210.0),
                obs("login_p95", "guard", 1, 220.0), obs("login_p95", "intensive", 2, None)]
    t = tally(PLAN, PLAN.check("login_p95"), readings + [obs("verify_p95", "intensive", 1, 9.0)])
    assert t.counts == {"pass": 2, "warn": 0, "fail": 0, "error": 1}
    assert t.values == [210.0, 220.0] and t.measured == 1  # the guard reading is extra
    assert t.by_phase["baseline"] == {"pass": 1, "warn": 0, "fail": 0, "error": 0}
    assert t.coverage == pytest.approx(1 / expected_observations(PLAN, "login_p95"))


def test_a_deciding_reading_makes_the_check_breached_even_when_only_a_warn():
    deciding = {"check_id": "login_p95", "phase": "intensive", "tick": 2, "value": 450.0, "derived": 0.48}
    breach = CriterionResult("no_go_performance", "no_go", "t", "degradation vs baseline > 30%", "breached", "",
                             ["login_p95"], [deciding])
    r = summary("login_p95", [obs("login_p95", "baseline", 1, 200.0), obs("login_p95", "intensive", 2, 450.0)],
                "intensive tick 2", [breach])
    assert r.outcome == "breached" and r.deciding == deciding
    # the +48 % is the 60-min median's change from the baseline median (200 ms), not 450 ms's (+125 %)
    assert r.detail == ("decided NO-GO no_go_performance (degradation vs baseline > 30%): 450 ms (median of the 60 min "
                        "ending there 296 ms: +48% vs the baseline median 200 ms) at intensive tick 2")


def test_a_fail_reading_meets_the_no_go_level():
    r = summary("users_without_authorizer_id", [obs("users_without_authorizer_id", "regular", 3, 4.0),
                                                 obs("users_without_authorizer_id", "regular", 4, 2.0)])
    assert r.outcome == "breached"
    assert r.detail == "4 at regular tick 3 meets its NO-GO level > 0 (2 readings)"


def test_a_level_only_a_relative_criterion_reads_says_it_keeps_the_verdict_from_go():
    """``no_go_performance`` reads ``login_p95``'s change against the baseline, never its
    level: 1 500 ms is beyond the check's own 1 000 ms whatever the baseline was."""
    r = summary("login_p95", [obs("login_p95", "regular", 3, 1500.0), obs("login_p95", "regular", 4, 1200.0)])
    assert r.outcome == "breached"
    assert r.detail == ("1,500 ms at regular tick 3 meets its NO-GO level > 1,000 ms (2 readings); no NO-GO criterion "
                        "of the plan compares this check with a level: it cannot roll back, and keeps the verdict "
                        "from GO (a person decides)")


def test_a_fail_reading_no_no_go_criterion_reads_says_it_does_not_decide():
    """``deprecated_columns_absent`` has a level (> 0) but none of the runbook's eight NO-GO
    criteria reads it: the line must not read as if it decided a NO-GO, and says what it does
    (a new user saw it beside a GO)."""
    r = summary("deprecated_columns_absent", [obs("deprecated_columns_absent", "regular", 3, 3.0)])
    assert r.outcome == "breached"
    assert r.detail == ("3 at regular tick 3 meets its NO-GO level > 0; no NO-GO criterion of the plan compares this "
                        "check with a level: it cannot roll back, and keeps the verdict from GO (a person decides)")


def test_a_fail_reading_of_a_check_without_no_go_level_is_an_error():
    with pytest.raises(ValueError, match="gateway_health: a fail reading but no NO-GO level"):
        summary("gateway_health", [obs("gateway_health", "regular", 1, 0.0, status="fail")])


@pytest.mark.parametrize("readings, stopped, detail", [
    ([], False, "not measured (no reading recorded)"),
    ([obs("login_p95", "intensive", 1, None)], False, "not measured (1 reading failed)"),
    ([obs("login_p95", "intensive", 1, None)], "hour0 tick 0", "not measured (1 reading failed; soak stopped at hour0 tick 0)"),
    ([], True, "not measured (soak stopped early)"),
])
def test_without_a_value_the_check_is_not_measured_and_says_why(readings, stopped, detail):
    r = summary("login_p95", readings, stopped)
    assert r.outcome == "not_measured" and r.detail == detail and r.min is None


def test_warn_readings_are_not_met_with_the_first_named():
    r = summary("login_p95", [obs("login_p95", "intensive", 1, 210.0), obs("login_p95", "intensive", 2, 600.0)])
    assert r.outcome == "not_met" and r.detail == "1 of 2 readings outside expected < 500 ms; first 600 ms at intensive tick 2"


def test_a_stopped_soak_is_partial_never_met():
    r = summary("login_p95", [obs("login_p95", "intensive", 1, 210.0)], "intensive tick 1")
    assert r.outcome == "partial"
    assert r.detail.startswith("as expected (< 500 ms) in the 1 reading before the soak stopped at intensive tick 1; 1 of ")
    assert r.detail.endswith("scheduled readings taken (value 210 ms)")


def test_short_coverage_is_not_enough_data_and_full_coverage_is_met():
    full = every_scheduled("login_p95", 210.0)
    r = summary("login_p95", full[:3])
    assert r.outcome == "not_enough_data" and r.detail.startswith(f"3 of {len(full)} scheduled readings measured (")
    r = summary("login_p95", full + [obs("login_p95", "passive", 99, 250.0)])
    assert r.outcome == "met" and r.detail == f"all {len(full) + 1} readings < 500 ms (range 210 ms to 250 ms)"
    assert (r.min, r.max, r.last) == (210.0, 250.0, 250.0)
    # Every reading but the soak's last: coverage is enough, the end is not read.
    r = summary("login_p95", full[:-1])
    assert r.outcome == "not_enough_data" and r.detail.startswith("no reading with a value at or after its last one due (passive tick")


def test_data_loss_says_what_its_exact_and_its_key_only_readings_prove():
    from dataclasses import replace

    from migration_soak.sources.data_loss import exact_due

    check = PLAN.check("data_loss")
    readings = [replace(o, evidence={"reading": "values" if exact_due(PLAN, o.phase, o.tick, check) else "keys"})
                for o in every_scheduled("data_loss", 0.0)]
    result = summary("data_loss", readings)
    assert result.outcome == "met"
    assert ("2 exact readings (every row and every preserved value compared" in result.detail
            and "9 key-only readings (rows only: they prove no row was lost, not that the values are intact)"
            in result.detail)
    # an error reading proves nothing; other checks carry no such note
    readings[1] = replace(readings[1], value=None, status="error")
    assert "8 key-only readings" in summary("data_loss", readings).detail
    assert "key-only" not in summary("login_p95", every_scheduled("login_p95", 200.0)).detail


def test_a_sampling_check_says_its_sample_not_every_row():
    """authorizer_sync backs "100% de usuarios con authorizerId válido" with 50 ids a
    reading: the row says how many were looked up."""
    from dataclasses import replace

    full = [replace(o, evidence={"sampled": 50, "unknown_count": 0}) for o in every_scheduled("authorizer_sync", 0.0)]
    r = summary("authorizer_sync", full)
    assert r.outcome == "met"
    assert r.detail.endswith(f"; a sample: {50 * len(full):,} ids looked up over {len(full)} readings, not every row")


def test_a_pooled_p95s_degradation_names_the_limits_its_change_is_of():
    """A p95 judged on its requests (histograms pooled) changes by its window's lower 95 %
    limit over the baseline's upper one (rules.Baseline._change): the report read 'median of
    the 60 min ending there 25.3 ms: +43% vs the baseline median 17.7 ms', a median that
    was never compared (17.7 ms x 1.43), for a window of 600 soak-min at x300."""
    from migration_soak.report_checks import degradation_change
    from migration_soak.rules import Base, Pooled

    base = Base(17.7, 4, Pooled(17.7, 29, 4, (10.0, 25.0), 0.95, 8.75, 25.0))
    assert degradation_change(0.43, base, 600, "ms") == (
        "p95 of the 600 min ending there at least 35.8 ms (its lower 95 % limit): +43% over the baseline p95's "
        "upper limit 25 ms")
    assert degradation_change(0.43, base, 600, "ms", short=True) == "600-min p95 >= 35.8 ms: +43% vs baseline p95 <= 25 ms"
    assert degradation_change(0.43, 17.7, 60, "ms") == (
        "median of the 60 min ending there 25.3 ms: +43% vs the baseline median 17.7 ms")  # readings without histograms
