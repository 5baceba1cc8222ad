"""A logs reading that left bytes unread (more than MAX_READ_BYTES written since its previous
one) counted only what it read: a lower bound. Found by review: with 1 GiB skipped,
"0 errores críticos" was met and the soak said GO."""

from __future__ import annotations

from dataclasses import replace

from test_judge import PLAN, SCALE, full_soak

from migration_soak.judge import judge
from migration_soak.report_checks import summarize_check

GIB = 1 << 30


def skipping(observations, check_id, tick_phase=("passive", 2)):
    """The soak with one reading of ``check_id`` that skipped a GiB of log."""
    return [replace(o, evidence={**(o.evidence or {}), "skipped_bytes": GIB})
            if (o.check_id, o.phase, o.tick) == (check_id, *tick_phase) else o for o in observations]


def test_zero_critical_errors_is_not_met_when_log_went_unread():
    v = judge(PLAN, skipping(full_soak(), "critical_errors"), SCALE)
    crit = next(c for c in v.criteria if c.id == "go_no_critical_errors")
    assert crit.outcome == "not_enough_data" and v.decision != "GO"
    assert f"1 reading left {GIB} bytes of log unread (first: passive tick 2): their counts are lower bounds" \
        in crit.detail
    assert judge(PLAN, full_soak(), SCALE).decision == "GO"  # the same soak read whole


def test_the_report_row_does_not_say_met_either():
    soak = skipping(full_soak(), "critical_errors")
    row = summarize_check(PLAN, PLAN.check("critical_errors"), soak, False)
    assert row.outcome == "not_enough_data" and "lower bounds" in row.detail


def test_a_partial_reading_still_shows_a_breach():
    """A lower bound above a NO-GO's '> 5' shows the breach all the same."""
    at = ("guard", 100)  # one soak minute: all 9 surely in one hour
    soak = [replace(o, value=9.0, status="warn") if (o.check_id, o.phase, o.tick) == ("critical_errors", *at)
            else o for o in skipping(full_soak(), "critical_errors", at)]
    assert judge(PLAN, soak, SCALE).decision == "NO_GO"
