"""What ``make demo`` shows while it waits (``demo.progress``): the state from the store's
rows, and the two ways of showing it. No Airflow, no database."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest

from demo.progress import LiveReporter, PlainReporter, SoakState, make_reporter, soak_state

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)  # hour 0
SCALE = 300.0  # 1 wall second = 300 soak seconds: 12 s = 1 soak hour


def ev(kind: str, when: datetime, **payload) -> dict:
    return {"kind": kind, "at": when, "payload": payload}


SETUP = [ev("preflight", T0 - timedelta(seconds=40), text="ok"), ev("backup", T0 - timedelta(seconds=30), text="b"),
         ev("migrate", T0 - timedelta(seconds=20), text="m"), ev("verified", T0 - timedelta(seconds=10), at="x")]
HOUR0 = ev("hour0", T0, hour0=T0.isoformat(), text="clock starts")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_nothing_recorded_yet_is_starting():
    state = soak_state([], {}, T0, SCALE)
    assert (state.phase, state.soak_hour, state.readings, state.fraction) == ("starting", None, 0, 0.0)
    assert state.line() == "soak: starting, hour -/24 (0%); 0 readings, verdict -"


def test_before_hour_0_the_phase_is_the_last_setup_step():
    assert soak_state(SETUP[:2], {}, T0, SCALE).phase == "setup: backup"
    assert soak_state(SETUP, {}, T0, SCALE).soak_hour is None


@pytest.mark.parametrize("seconds,phase,hour", [
    (0, "intensive", 0.0), (12, "intensive", 1.0), (30, "regular", 2.5), (95.99, "regular", 7.9992),
    (96, "passive", 8.0), (200, "passive", 16.6667), (288, "judging", 24.0), (400, "judging", 24.0),
])
def test_the_soak_hour_comes_from_hour_0_and_the_time_scale(seconds, phase, hour):
    state = soak_state([*SETUP, HOUR0], {"pass": 3}, at(seconds), SCALE)
    assert state.phase == phase
    assert state.soak_hour == pytest.approx(hour, abs=1e-3)
    assert state.fraction == pytest.approx(hour / 24, abs=1e-4)


def test_the_clock_origin_is_hour0s_payload_not_when_the_event_was_written():
    late_row = ev("hour0", T0 + timedelta(seconds=5), hour0=T0.isoformat())
    assert soak_state([late_row], {}, at(12), SCALE).soak_hour == pytest.approx(1.0)


def test_readings_breaches_warnings_missing_and_alerts():
    events = [HOUR0, ev("alert", at(3), alert="a1", text="ALERT"), ev("alert", at(4), alert="a2", text="ALERT")]
    state = soak_state(events, {"pass": 10, "warn": 2, "fail": 1, "error": 3}, at(6), SCALE)
    assert (state.readings, state.breaches, state.warnings, state.missing, state.alerts) == (16, 1, 2, 3, 2)
    assert state.line() == ("soak: intensive, hour 0.5/24 (2%); 16 readings (1 at a check's NO-GO level, 2 warn, "
                            "3 missing), 2 alerts, verdict -")


def test_a_no_go_freezes_the_soak_hour_where_it_stopped():
    events = [HOUR0, ev("no_go", at(36), criterion="no_go_auth_error_rate", text="x")]
    state = soak_state(events, {"pass": 40, "fail": 1}, at(100), SCALE)
    assert state.phase == "NO-GO: stopping"
    assert state.soak_hour == pytest.approx(3.0)
    assert state.stopped_by == "no_go_auth_error_rate"
    assert "NO-GO no_go_auth_error_rate" in state.line()


def test_a_no_go_at_hour_0_has_no_soak_hour():
    events = [*SETUP, ev("no_go", T0, criterion="no_go_critical_errors_per_hour")]
    state = soak_state(events, {"fail": 1}, at(50), SCALE)
    assert (state.phase, state.soak_hour, state.breaches) == ("NO-GO: stopping", None, 1)


@pytest.mark.parametrize("extra,run_state,phase", [
    ([], None, "deciding"),
    ([ev("decision", at(300), outcome="GO", action="proceed")], None, "report"),
    ([ev("decision", at(300), outcome="NO_GO", action="rollback"), ev("rollback_started", at(301))], None,
     "rollback"),
    ([ev("decision", at(300), outcome="NO_GO", action="rollback"), ev("rollback_started", at(301)),
      ev("rollback_completed", at(320))], None, "rolled back"),
    ([ev("decision", at(300), outcome="GO", action="proceed")], "success", "done"),
    ([], "failed", "done"),
])
def test_after_the_soak_verdict_decision_and_rollback(extra, run_state, phase):
    events = [HOUR0, ev("verdict", at(290), decision="NO_GO" if "rollback" in str(extra) else "GO"), *extra]
    state = soak_state(events, {"pass": 500}, at(400), SCALE, run_state=run_state)
    assert state.phase == phase
    assert state.soak_hour == pytest.approx(24.0)  # frozen at the verdict (290 s > 288 s: capped)
    assert state.verdict in ("GO", "NO-GO")
    assert state.run_state == run_state


def test_the_last_decision_is_the_runs():
    events = [HOUR0, ev("verdict", at(100), decision="INCONCLUSIVE"),
              ev("decision", at(101), outcome="INCONCLUSIVE", action="keep"),
              ev("decision", at(102), outcome="NO_GO", action="rollback")]
    state = soak_state(events, {}, at(103), SCALE)
    assert state.decision == "NO-GO, rollback"
    assert state.verdict == "INCONCLUSIVE"
    assert state.soak_hour == pytest.approx(100 * SCALE / 3600)


def test_the_plans_own_phases_and_length():
    phases = [("soak", 0, 0.5), ("late", 0.5, 1.0)]
    assert soak_state([HOUR0], {}, at(3), SCALE, phases).phase == "soak"  # 0.25 h
    state = soak_state([HOUR0], {}, at(7), SCALE, phases)  # 0.58 h
    assert (state.phase, state.soak_hours, state.hour_text) == ("late", 1.0, "hour 0.6/1")
    assert soak_state([HOUR0], {}, at(13), SCALE, phases).phase == "judging"


# --- showing it --------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_most_every_interval_and_the_final_one():
    clock, written = FakeClock(), []
    reporter = PlainReporter(write=written.append, interval=10, clock=clock)
    for second in range(36):  # one state a second for 35 s
        clock.now = second
        reporter.update(soak_state([HOUR0], {"pass": second}, at(second), SCALE))
    assert len(written) == 4  # at 0, 10, 20, 30 s
    assert written[1] == "demo: soak: intensive, hour 0.8/24 (3%); 10 readings (0 at a check's NO-GO level), verdict -"
    reporter.close()
    assert written[-1].endswith("35 readings (0 at a check's NO-GO level), verdict -")  # the last state, not yet written
    assert reporter.lines == [w.removeprefix("demo: ") for w in written]


def test_plain_reporter_writes_nothing_for_an_unchanged_state_or_an_interrupted_demo():
    clock, written = FakeClock(), []
    reporter = PlainReporter(write=written.append, interval=10, clock=clock)
    state = soak_state([], {}, T0, SCALE)
    for second in (0, 11, 22):
        clock.now = second
        reporter.update(state)
    assert written == ["demo: soak: starting, hour -/24 (0%); 0 readings, verdict -"]
    clock.now = 30
    reporter.update(soak_state([HOUR0], {}, at(1), SCALE))
    reporter.close(final=False)
    assert len(written) == 2
    reporter.update(soak_state([HOUR0], {}, at(2), SCALE))  # within 10 s of the last line: kept back
    reporter.close(final=False)
    assert len(written) == 2


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_plain_lines_a_terminal_a_live_bar():
    assert isinstance(make_reporter(io.StringIO()), PlainReporter)
    screen = Tty()
    reporter = make_reporter(screen)
    assert isinstance(reporter, LiveReporter)
    reporter.say("stack up")
    reporter.update(soak_state([HOUR0], {"pass": 7, "fail": 1}, at(12), SCALE))
    reporter.close()
    shown = screen.getvalue()
    assert "demo: stack up" in shown
    for text in ("intensive", "hour 1.0/24", "8 readings", "1 at a check's NO-GO level", "━"):
        assert text in shown, text


def test_soak_state_is_a_value():
    state = SoakState("intensive", 1.0, 24.0)
    with pytest.raises(AttributeError):
        state.phase = "x"  # frozen: a reporter cannot change what it was given


def test_a_no_go_verdict_names_its_criterion_and_the_count_is_named_for_what_it_is():
    """The slow-auth demo's line read '... 1,200 readings, 0 breaches, verdict NO-GO': a
    relative criterion (no_go_performance, p95 +80 % over the baseline) decided it, while
    "breaches" counted readings at a check's own NO-GO level (status fail), none here. A
    reader took "0 breaches" + NO-GO for a contradiction. The line names the criterion that
    decided the NO-GO, and the count what it counts."""
    criteria = [{"id": "no_go_performance", "kind": "no_go", "outcome": "breached"},
                {"id": "no_go_auth_error_rate", "kind": "no_go", "outcome": "clear"},
                {"id": "go_performance_stable", "kind": "go", "outcome": "not_met"}]
    events = [HOUR0, ev("verdict", at(290), decision="NO_GO", criteria=criteria)]
    state = soak_state(events, {"pass": 1200}, at(300), SCALE)
    line = state.line()
    assert "breaches" not in line, line
    assert line.endswith("; 1200 readings (0 at a check's NO-GO level), verdict NO-GO by no_go_performance"), line
    # readings past a check's level are named as such, and a GO or a verdict without criteria stays as it was
    state = soak_state([HOUR0, ev("verdict", at(290), decision="GO")], {"pass": 10, "fail": 2, "warn": 1}, at(300),
                       SCALE)
    assert state.line().endswith("; 13 readings (2 at a check's NO-GO level, 1 warn), verdict GO"), state.line()


def test_an_80_column_terminal_shows_the_bar_the_hour_and_the_verdict_whole():
    # the rich bar in one row: at 80 columns it read "done … h… 507 readings, 0 at a NO-GO
    # level, 3 missing, NO-GO no_go_performance…": phase, hour, bar and verdict cut off
    import re

    screen = Tty()
    reporter = make_reporter(screen)
    reporter.console.size = (80, 24)
    events = [HOUR0, ev("no_go", at(120), criterion="no_go_performance"), ev("verdict", at(121), decision="NO_GO")]
    reporter.update(soak_state(events, {"pass": 504, "error": 3}, at(125), SCALE))
    reporter.close()
    shown = " ".join(re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue()).split())  # folded lines joined
    assert "…" not in shown
    for text in ("deciding", "hour 10.0/24", "━", "NO-GO no_go_performance", "verdict NO-GO"):
        assert text in shown, (text, shown[-400:])
