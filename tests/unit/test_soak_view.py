"""The soak view's clock and page parts on hand-made snapshots, without Airflow's database
or a store (the browser tests in ``tests/browser/test_ui.py`` render real runs)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from migration_soak.airflow import soak_view as sv
from migration_soak.plan import load_plan
from migration_soak.store import Observation

PLAN = load_plan("default")  # intensive 0-2 h, regular 2-8 h, passive 8-24 h
H0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def snapshot(state="running", events=(), tasks=None, taken=H0, time_scale=1.0, clock0=H0, **kw) -> sv.Snapshot:
    snap = sv.Snapshot("migration_soak", "run", state, {}, taken, plan=PLAN, time_scale=time_scale,
                       events=list(events), tasks=dict(tasks or {}), **kw)
    snap.analysis = SimpleNamespace(clock0=clock0)
    return snap


def event(kind, at, **payload):
    return {"kind": kind, "at": at, "payload": payload}


# --- the clock before hour 0 ---------------------------------------------------------------------

def test_before_hour0_a_no_go_is_named_first_even_when_the_run_ended():
    snap = snapshot("failed", [event("verified", H0), event("no_go", H0)], {"backup": "running"})
    assert sv._stage_before_hour0(snap) == "stopped at the hour-0 checks (NO-GO)"


def test_before_hour0_an_ended_run_says_so_whatever_its_tasks_did():
    snap = snapshot("success", [event("verified", H0)], {"backup": "running"})
    assert sv._stage_before_hour0(snap) == "the run ended before the soak clock started"


def test_before_hour0_the_hour0_checks_come_before_the_running_tasks():
    snap = snapshot("running", [event("verified", H0)], {"backup": "running"})
    assert sv._stage_before_hour0(snap) == "hour-0 checks: every check once, right after the migration"


def test_before_hour0_at_most_four_waiting_or_running_tasks_sorted():
    tasks = {"z": "running", "e": "queued", "d": "deferred", "c": "up_for_reschedule", "b": "running",
             "a": "failed", "load": "success"}
    assert sv._stage_before_hour0(snapshot("queued", tasks=tasks)) == "before the soak: b, c, d, e"


def test_before_hour0_the_done_tasks_in_the_pipeline_order_and_only_successes():
    tasks = {"migrate": "success", "load": "success", "backup": "failed", "other": "success"}
    assert sv._stage_before_hour0(snapshot(tasks=tasks)) == "before the soak (done: load, migrate)"
    assert sv._stage_before_hour0(snapshot(tasks={})) == "before the soak"


def test_the_clock_before_hour0_has_no_hour_and_no_progress():
    c = sv.soak_clock(snapshot(clock0=None, tasks={"load": "success"}))
    assert (c.stage, c.hour, c.phase, c.next_label, c.next_in_s, c.progress, c.total_hours) == \
        ("before the soak (done: load)", None, None, None, None, 0.0, 24.0)


# --- the clock after hour 0 ----------------------------------------------------------------------

@pytest.mark.parametrize(("hour", "stopped", "ended", "stage"), [
    (24.0, True, True, "stopped by NO-GO at soak 24:00"),
    (24.0, False, True, "soak complete"),
    (24.0 - 1e-10, False, True, "soak complete"),
    (3.5, False, True, "the run ended at soak 03:30"),
    (3.5, False, False, "soaking: regular"),
])
def test_the_stage_after_hour0(hour, stopped, ended, stage):
    assert sv._stage_after_hour0(hour, 24.0, "regular", stopped=stopped, ended=ended) == stage


@pytest.mark.parametrize(("hour", "phase"), [(0.0, "intensive"), (1.99, "intensive"), (2.0, "regular"),
                                             (8.0, "passive"), (23.99, "passive"), (24.0, "passive")])
def test_the_phase_holding_an_hour_starts_inclusive_ends_exclusive(hour, phase):
    assert sv._phase_at(PLAN, hour, 24.0) == phase


def test_an_hour_in_a_gap_between_phases_reads_as_the_first_phase():
    plan = SimpleNamespace(phases=[SimpleNamespace(name="a", start_hour=0.0, end_hour=1.0),
                                   SimpleNamespace(name="b", start_hour=2.0, end_hour=3.0)])
    assert sv._phase_at(plan, 1.5, 3.0) == "a"
    assert sv._phase_at(plan, 3.0, 3.0) == "b"


def test_soak_hours_scale_wall_time_and_are_negative_before_hour0():
    assert sv._soak_hours(H0 + timedelta(minutes=6), H0, 300.0) == pytest.approx(30.0)
    assert sv._soak_hours(H0 - timedelta(minutes=30), H0, 1.0) == pytest.approx(-0.5)


def test_the_next_tick_is_the_first_strictly_after_now():
    assert sv._next_tick(PLAN, H0, 1.0, H0 + timedelta(minutes=10)) == ("intensive tick 1 at soak 00:15", 300.0)
    label, seconds = sv._next_tick(PLAN, H0, 1.0, H0 + timedelta(minutes=15))
    assert (label, seconds) == ("intensive tick 2 at soak 00:30", 900.0)
    assert sv._next_tick(PLAN, H0, 1.0, H0 + timedelta(hours=25)) == (None, None)


def test_the_clock_holds_at_the_no_go_stop_and_shows_no_next_tick():
    snap = snapshot("running", [event("no_go", H0 + timedelta(hours=1, minutes=30))], taken=H0 + timedelta(hours=5))
    c = sv.soak_clock(snap)
    assert (c.stage, c.hour, c.phase, c.next_label, c.next_in_s) == \
        ("stopped by NO-GO at soak 01:30", 1.5, "intensive", None, None)
    assert c.progress == pytest.approx(1.5 / 24)


def test_a_soaking_clock_on_a_compressed_scale_names_the_next_tick():
    c = sv.soak_clock(snapshot("running", taken=H0 + timedelta(minutes=1), time_scale=300.0))  # soak 05:00
    assert (c.stage, c.hour, c.phase, c.next_label) == ("soaking: regular", 5.0, "regular",
                                                        "regular tick 4 at soak 06:00")  # hourly from 03:00
    assert c.next_in_s == pytest.approx(12.0)  # one soak hour in wall seconds


def test_a_clock_past_the_soak_is_held_at_its_end():
    c = sv.soak_clock(snapshot("success", taken=H0 + timedelta(hours=30)))
    assert (c.stage, c.hour, c.phase, c.progress) == ("soak complete", 24.0, "passive", 1.0)


# --- the page's parts ----------------------------------------------------------------------------

def reading(check_id, phase, status) -> Observation:
    return Observation("run", phase, check_id, 1, H0, H0, 1.0, "count", status, {})


def test_the_readings_card_counts_only_readings_after_the_migration():
    obs = [reading("db_cpu", "baseline", "error"), reading("db_cpu", "baseline", "fail"),
           reading("db_cpu", "hour0", "fail"), reading("db_cpu", "intensive", "error"),
           reading("db_cpu", "guard", "pass"), reading("db_cpu", "guard", "error")]
    card = sv._readings_card(snapshot(observations=obs))
    assert "data-readings=4>4</div>" in card
    assert "2 not measured (error) · 1 at a NO-GO level" in card


def test_an_event_row_shows_the_soak_time_or_before_hour0():
    row = sv._event_row(event("alert", H0 + timedelta(minutes=1), text="x"), H0, 300.0)
    assert "<td>09:01:00</td><td>05:00</td>" in row and "badge warn" in row
    assert "<td>before</td>" in sv._event_row(event("backup", H0 - timedelta(seconds=1)), H0, 300.0)


def test_an_event_row_without_a_clock_time_or_payload_stays_blank_and_its_text_is_cut_and_escaped():
    row = sv._event_row({"kind": "odd<kind>", "at": None, "payload": None}, H0, 1.0)
    assert row == ("<tr data-kind='odd&lt;kind&gt;'><td></td><td></td><td><span class='badge state'>odd&lt;kind&gt;"
                   "</span></td><td class=fig></td></tr>")
    row = sv._event_row(event("report", H0, text="<" + "a" * 700), None, 1.0)
    assert "<td>09:00:00</td><td></td>" in row
    assert "<td class=fig>&lt;" + "a" * 599 + "</td>" in row


def test_the_checks_show_breached_then_unmet_then_the_rest_in_the_plans_order():
    ids = [c.id for c in PLAN.checks]
    outcomes = {ids[5]: "not_met", ids[9]: "breached", ids[2]: "breached", ids[0]: "met"}
    verdict = SimpleNamespace(checks=[SimpleNamespace(check_id=c, outcome=o, detail=("decided NO-GO " if o == "breached" else "d ") + c) for c, o in outcomes.items()])
    snap = snapshot(verdict=verdict, observations=[reading(ids[9], "guard", "fail")])
    snap.marks = ({}, None, "")
    html = sv._checks_section(snap, "/soak/x")
    shown = re.findall(r"data-check='([^']+)'", html)
    assert shown[:3] == [ids[2], ids[9], ids[5]]
    assert shown[3:] == [i for i in ids if i not in (ids[2], ids[9], ids[5])]
    cards = dict(zip(shown, html.split("data-check=")[1:]))
    assert f"src='/soak/x/charts/{ids[9]}.png?v=" in cards[ids[9]]
    assert "no reading yet" in cards[ids[2]] and "badge bad'>breached<" in cards[ids[2]]
    assert "badge warn'>not met<" in cards[ids[5]]
    assert "badge" not in cards[ids[1]]  # the judge says nothing of it: no badge, no figures


def test_a_no_go_the_readings_could_not_judge_is_never_shown_clear():
    """Live and after the run: "not judged" (yet), a waiting badge, never the green "clear"."""
    from migration_soak.judge import CriterionResult

    r = CriterionResult("no_go_db_cpu", "no_go", "CPU", "> 90% sustained for 10 min", "not_judged",
                        "not judged: db_cpu: 3 readings, typically 15 soak-min apart", ["db_cpu"])
    live = sv._criterion_row(snapshot(state="running"), r)
    assert "data-outcome='not_judged'" in live and "badge wait'>not judged yet<" in live
    ended = sv._criterion_row(snapshot(state="success"), r)
    assert "badge wait'>not judged<" in ended and "good" not in ended


def test_the_run_card_names_the_plans_soak_length_not_24_hours():
    """(h-ui) The Soak tab of a browser-plan run (a 30-minute soak) at time_scale 45 read
    "time_scale 45: 24 h in 32.0 min" beside "soak 00:17 of 00:30": the card said the
    compressed clock ran a 24 h soak; the run soaked 30 minutes in 40 s."""
    from pathlib import Path

    short = load_plan(Path(__file__).resolve().parents[1] / "browser" / "plans" / "browser.yaml")
    assert short.soak_hours() == 0.75
    card = sv._run_card(sv.Snapshot("migration_soak__browser", "run", "running", {}, H0, plan=short, time_scale=45.0))
    assert "24 h" not in card, card
    assert "compressed clock: 45 min of soak in 1.0 min" in card, card
    card = sv._run_card(snapshot(time_scale=300.0))  # the default plan: 24 h
    assert "compressed clock: 24 h of soak in 4.8 min" in card, card
    assert "time_scale 1 (real time)" in sv._run_card(snapshot(time_scale=1.0))
    stretched = sv._run_card(snapshot(time_scale=0.5))
    assert "stretched clock: 24 h of soak in 48.0 h" in stretched, stretched


def test_the_clock_banner_of_a_short_plan_reads_in_the_run_cards_units():
    """(polish3) The Soak tab of the browser plan (a 45-minute soak) at time_scale 45 read
    "compressed clock (0.75 h in 1.0 min): demonstration evidence, not a 0.75-hour soak" in
    its banner beside "45 min of soak in 60 s" in its run card: two units for one soak on
    one page. Both now come from report_text.soak_length / wall_length, as the trigger
    form's description and the demo's and Slack's clock caveat do."""
    from pathlib import Path

    from migration_soak import notify
    from migration_soak.airflow.builder import _time_scale_text

    short = load_plan(Path(__file__).resolve().parents[1] / "browser" / "plans" / "browser.yaml")
    snap = sv.Snapshot("migration_soak__browser", "run", "running", {}, H0, plan=short, time_scale=45.0)
    banner = sv._clock_banner(snap)
    assert "compressed clock (45 min in 1.0 min): demonstration evidence, not a 45-minute soak." in banner, banner
    assert "0.75" not in banner and "0.75" not in sv._run_card(snap)
    assert "45 min of soak in 1.0 min" in sv._run_card(snap)
    assert notify.clock_caveat(short, 45.0) == " (compressed clock x45: demonstration evidence, not a 45-minute soak)"
    form = _time_scale_text(short)
    assert "the plan's 45 min soak; 300 = 45 min in 9.0 s" in form and "not a 45-minute soak" in form, form
    day = sv.Snapshot("migration_soak", "run", "running", {}, H0, plan=PLAN, time_scale=300.0)
    assert "compressed clock (24 h in 4.8 min): demonstration evidence, not a 24-hour soak." in sv._clock_banner(day)


def test_a_check_beyond_its_level_that_decided_nothing_is_not_badged_breached():
    """noisy demo: auth_error_rate's 22 readings beyond its 1 % level decided no NO-GO; its card
    said "breached" beside a verdict with no NO-GO criterion breached."""
    beyond = SimpleNamespace(outcome="breached", detail="3.39% at intensive tick 4 meets its NO-GO level > 1%")
    card = sv._check_card(snapshot(), "/b", PLAN.check("auth_error_rate"), beyond, True)
    assert ">beyond its NO-GO level</span>" in card and ">breached</span>" not in card
    decided = SimpleNamespace(outcome="breached", detail="decided NO-GO no_go_auth_error_rate (> 1%): 3.39%")
    assert ">breached</span>" in sv._check_card(snapshot(), "/b", PLAN.check("auth_error_rate"), decided, True)
