"""The judge against the runbook's windows and edges (review of the verdict logic): a GO on a
count ratio is not met by pooling a bad hour into the whole soak; readings on boundaries,
after the verdict, duplicated, in other units."""

from __future__ import annotations

from dataclasses import replace

from migration_soak.judge import Verdict, judge

from test_judge import PLAN, full_soak, guard, others

RPM = 1000  # authentication requests a soak-minute


def _counted(o, n, d):
    return replace(o, value=n / d, evidence={"numerator": n, "denominator": d},
                   status="pass" if n / d < 0.001 else "warn")


def auth_soak(bad_from=0, bad_to=0, bad_per_min=0):
    """A whole default soak whose auth_error_rate readings carry their counts (RPM requests
    a minute; ``bad_per_min`` of them failed in soak minutes ``bad_from < m <= bad_to``):
    each phase reading counts since the series' previous one, each guard reading its minute."""
    def failed(a, b):
        return sum(bad_per_min for m in range(int(a) + 1, int(b) + 1) if bad_from < m <= bad_to)

    out, last = [], None
    for o in sorted(full_soak(guard_checks=others("auth_error_rate")), key=lambda o: o.soak_s):
        if o.check_id != "auth_error_rate" or o.phase == "guard":
            out.append(o)
            continue
        m = o.soak_s / 60
        start = last if last is not None else m - 1
        out.append(_counted(o, failed(start, m), (m - start) * RPM))
        last = m
    for g in guard("auth_error_rate", 1, 24 * 60, 0.0):
        m = g.soak_s / 60
        out.append(_counted(g, failed(m - 1, m), RPM))
    return out


def _crit(v, cid):
    return next(c for c in v.criteria if c.id == cid)


def test_a_bad_hour_of_auth_errors_in_the_passive_phase_is_not_diluted_into_a_go():
    """Hour 13-14: 2 of every 1 000 authentication requests fail (0.2 %, 120 of 60 000: the
    hour's 95 % lower limit is 0.17 %, over "< 0.1 %"). No single guard minute shows it (2 of
    1 000: lower limit 0.055 %), the passive reading at hour 16 dilutes it in 4 hours (0.05 %),
    and the whole soak pooled (120 of 1.44 M) is far under 0.1 %: the judge said GO, "range 0%
    to 0.2%". The runbook checks "< 0.1%" at every check, hourly at the coarsest."""
    assert judge(PLAN, auth_soak()).decision == "GO"  # the control: no failure at all
    v = judge(PLAN, auth_soak(13 * 60, 14 * 60, 2))
    c = _crit(v, "go_auth_error_rate")
    assert c.outcome == "not_met", c.detail
    assert "60 min" in c.detail and "120 of 60,000" in c.detail, c.detail
    assert v.decision == "INCONCLUSIVE", v.reasons


def test_a_bad_hour_split_across_two_clock_hours_is_still_one_hour():
    """The same 0.2 % hour from minute 790 to 850: any 60 minutes, not the soak's clock hours."""
    c = _crit(judge(PLAN, auth_soak(790, 850, 2)), "go_auth_error_rate")
    assert c.outcome == "not_met", c.detail


def test_a_healthy_rate_close_to_the_bound_is_not_a_bad_hour():
    """0.05 % all soak long (1 failure every 2 minutes): no hour shows 0.1 % or more, GO stands."""
    soak = auth_soak()
    soak = [_counted(o, 1, RPM) if o.check_id == "auth_error_rate" and o.phase == "guard" and o.tick % 2 == 0 else o
            for o in soak]
    v = judge(PLAN, soak)
    assert _crit(v, "go_auth_error_rate").outcome == "met", _crit(v, "go_auth_error_rate").detail


# --- the baseline a relative criterion compares with ----------------------------------------------

def _thin_baseline(value_after):
    """login_p95's baseline hour measured once of its 4 readings (the others errors), a
    400 ms spike; every reading after the migration ``value_after``."""
    from test_judge import obs, set_value

    soak = [o for o in full_soak() if not (o.check_id == "login_p95" and o.phase == "baseline")]
    soak += [obs("login_p95", "baseline", 1, -45, 400)] + [obs("login_p95", "baseline", k, -60 + 15 * k, None)
                                                          for k in (2, 3, 4)]
    return set_value(soak, "login_p95", 0, value_after)


def test_a_baseline_measured_once_of_four_is_not_a_reference_for_a_go():
    """Three of the four baseline readings of login_p95 failed; the one left, a 400 ms
    spike, became the reference: 420 ms all soak long read as +5 %, "Performance estable"
    met and GO, on a quarter of the baseline hour."""
    v = judge(PLAN, _thin_baseline(420))
    go = _crit(v, "go_performance_stable")
    assert go.outcome == "not_enough_data", go.detail
    assert "1 of 4 baseline readings" in go.detail, go.detail
    assert _crit(v, "no_go_performance").outcome == "not_judged", _crit(v, "no_go_performance").detail
    assert v.decision == "INCONCLUSIVE", v.reasons


def test_a_breach_of_a_thin_baseline_still_stops_the_soak():
    """NO-GO detection is not slowed by the baseline's coverage: 2 000 ms against its one
    400 ms reading is a degradation > 30 %."""
    v = judge(PLAN, _thin_baseline(2000))
    assert _crit(v, "no_go_performance").outcome == "breached"
    assert v.decision == "NO_GO"


# --- readings the schedule does not owe ---------------------------------------------------------

def _end_missed_then_read_late(check_id):
    """``check_id``'s hour-24 reading (passive tick 4, the soak's last) an error, and a
    reading at hour 25 (passive tick 5, a tick the schedule does not have: stored after the
    verdict) with a good value."""
    from test_judge import obs

    soak = full_soak()
    last = max((o for o in soak if o.check_id == check_id), key=lambda o: o.soak_s)
    assert (last.phase, last.tick, last.soak_s) == ("passive", 4, 24 * 3600)
    soak = [obs(check_id, o.phase, o.tick, o.soak_s / 60, None) if o is last else o for o in soak]
    return soak + [obs(check_id, "passive", 5, 25 * 60, 0)]


def test_a_reading_after_the_soak_does_not_stand_for_its_unread_end():
    """data_loss's soak-end exact compare failed; a reading an hour after the soak's end
    counted as "at or after the last one due" and filled the 11th reading: "Cualquier
    pérdida de datos detectada" was clear and the verdict GO."""
    v = judge(PLAN, _end_missed_then_read_late("data_loss"))
    c = _crit(v, "no_go_data_loss")
    assert c.outcome == "not_judged" and "the end is unread" in c.detail, c.detail
    assert v.decision == "INCONCLUSIVE", v.reasons


def test_a_tick_the_schedule_does_not_have_is_no_coverage_for_a_go():
    """The same for authorizer_sync: "No hay usuarios sin authorizerId" was met with its
    hour-24 reading missing, on 10 of 10 readings (one of them owed by no schedule)."""
    v = judge(PLAN, _end_missed_then_read_late("authorizer_sync"))
    c = _crit(v, "go_no_users_without_authorizer_id")
    assert c.outcome == "not_enough_data", c.detail
    assert v.decision == "INCONCLUSIVE", v.reasons


def test_a_breach_after_the_soak_is_still_a_breach():
    """Readings the schedule does not owe still breach: rows lost at hour 25 are a NO-GO."""
    from test_judge import obs

    v = judge(PLAN, full_soak() + [obs("data_loss", "passive", 5, 25 * 60, 3)])
    assert _crit(v, "no_go_data_loss").outcome == "breached"
    assert v.decision == "NO_GO"


# --- readings of "the last hour": what a met / clear stands on ---------------------------------------

def _workflow_windows(soak, n=2, d=100):
    """workflow_error_rate's readings as the sql source gives them: counts of the last hour's
    executions (evidence window_s 3 600: both cells count ``NOW() - INTERVAL '1 hour'``)."""
    return [replace(o, value=n / d, evidence={"numerator": n, "denominator": d, "window_s": 3600})
            if o.check_id == "workflow_error_rate" and o.value is not None else o for o in soak]


PASSIVE_UNREAD = ("18 readings whose 60-min windows cover 12:00 of 24:00 soak hours (hours 8-11, 12-15, 16-19 and "
                  "20-23 not read: the passive phase reads the last hour every 4 hours)")


def test_last_hour_readings_every_four_hours_say_which_soak_hours_they_did_not_read():
    """workflow_error_rate counts the last hour's executions at each tick: the intensive and
    regular ticks read hours 0-8 whole, the passive ticks (hours 12, 16, 20, 24) hours 11-12,
    15-16, 19-20 and 23-24 only. The runbook's schedule reads it so ("Horas 9-24": the last
    hour every 2-4 hours), and the verdict keeps its rules; but "Todos los workflows
    críticos funcionando" was "met" and "> 10% error rate" "clear" with nothing said of the
    12 hours no reading saw."""
    v = judge(PLAN, _workflow_windows(full_soak()))
    assert v.decision == "GO", v.reasons  # the rules stay the runbook's schedule's
    go, no_go = _crit(v, "go_workflows"), _crit(v, "no_go_workflows")
    assert go.outcome == "met" and f"met on {PASSIVE_UNREAD}" in go.detail, go.detail
    assert go.unread == [f"workflow_error_rate: {PASSIVE_UNREAD}"]
    assert no_go.outcome == "clear" and f"workflow_error_rate: clear on {PASSIVE_UNREAD}" in no_go.detail, no_go.detail
    assert no_go.unread == go.unread
    assert v.reasons == ["all 8 GO criteria met; no NO-GO criterion breached",
                         f"read in part: workflow_error_rate: {PASSIVE_UNREAD} (no_go_workflows, go_workflows)"]
    check = next(c for c in v.checks if c.check_id == "workflow_error_rate")
    assert check.outcome == "met" and check.unread == PASSIVE_UNREAD and f"met on {PASSIVE_UNREAD}" in check.detail
    # other checks read since their previous reading: nothing is added to them
    assert all(not c.unread for c in v.criteria if c.id not in ("go_workflows", "no_go_workflows"))
    assert Verdict.from_dict(v.to_dict()) == v  # the stored verdict keeps it (report, soak view, post-mortem)


def test_a_missing_last_hour_reading_is_named_as_the_hours_it_left_unread():
    """Passive tick 2 (hour 16) failed: 17 of 18 readings is coverage enough, but hours 12-19
    were read by nobody, and the text says why: that tick had no value."""
    soak = [replace(o, value=None, status="error") if o.check_id == "workflow_error_rate" and o.phase == "passive"
            and o.tick == 2 else o for o in full_soak()]
    go = _crit(judge(PLAN, _workflow_windows(soak)), "go_workflows")
    assert go.outcome == "met", go.detail
    assert ("17 readings whose 60-min windows cover 11:00 of 24:00 soak hours (hours 8-11 and 20-23 not read: the "
            "passive phase reads the last hour every 4 hours; hours 12-19 not read: no value at passive tick 2)") \
        in go.detail, go.detail


def test_last_hour_readings_on_a_compressed_clock_cover_the_soak_and_say_nothing_more():
    """At time_scale 300 one wall hour is 300 soak hours: every reading covers the soak (the
    report's clock banner says what that means); the texts are as before."""
    v = judge(PLAN, _workflow_windows(full_soak()), time_scale=300)
    go, no_go = _crit(v, "go_workflows"), _crit(v, "no_go_workflows")
    assert go.outcome == "met" and "soak hours" not in go.detail and not go.unread, go.detail
    assert no_go.detail == "no breach (workflow_error_rate: 18 readings with a value)" and not no_go.unread
    assert v.reasons == ["all 8 GO criteria met; no NO-GO criterion breached"]
    assert not next(c for c in v.checks if c.check_id == "workflow_error_rate").unread


def test_a_workflow_breach_still_stops_the_soak():
    """The note judges nothing: a reading over 10 % at 95 % is a breach, NO-GO."""
    soak = _workflow_windows(full_soak())
    soak = [replace(o, value=0.3, evidence={"numerator": 30, "denominator": 100, "window_s": 3600})
            if o.check_id == "workflow_error_rate" and o.phase == "regular" and o.tick == 2 else o for o in soak]
    v = judge(PLAN, soak)
    assert _crit(v, "no_go_workflows").outcome == "breached"
    assert not _crit(v, "no_go_workflows").unread
    assert v.decision == "NO_GO"


def test_mid_soak_a_span_not_read_yet_is_not_blamed_on_readings_not_due_yet():
    """(h-ui) The Soak tab of a time_scale-300 run at soak 02:21 read for no_go_workflows
    'clear on 8 readings whose 18000-min windows cover 2:01 of 2:15 soak hours so far (hours
    2:01-2:15 not read: no value at regular tick 1, regular tick 2, ..., passive tick 4)':
    ten readings not due for hours yet named as readings that had no value."""
    so_far = [o for o in _workflow_windows(full_soak()) if o.soak_s <= 135 * 60]
    for scale in (1, 300):
        v = judge(PLAN, so_far, time_scale=scale)
        no_go = _crit(v, "no_go_workflows")
        assert no_go.outcome == "clear", no_go.detail
        assert "no value at" not in no_go.detail and "passive tick" not in no_go.detail, no_go.detail
        assert ("hours 2-2:15 not read: the reading that reads them is not due yet (regular tick 1 at soak "
                "3:00)") in no_go.detail, no_go.detail
