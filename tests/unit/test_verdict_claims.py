"""What the verdict, the report and a reading may claim: the end of the soak read, a log
window resumed after an error, a long reading in a short window, a count ratio the
report calls met, a value written as the bound it is not, a zero baseline named."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from migration_soak import observe
from migration_soak.clock import Tick
from migration_soak.judge import judge
from migration_soak.store import Observation

from test_judge import PLAN, full_soak, obs


def _last(soak, check_id):
    return max((o for o in soak if o.check_id == check_id), key=lambda o: o.scheduled_at)


def test_data_loss_soak_end_exact_reading_failed_is_not_go():
    """The hour-24 data_loss reading (the soak's end, the exact compare a GO's "no data lost"
    rests on, docs/verdict.md) is an error: the last 4 soak hours were never compared with
    the fingerprint. 10 of 11 readings is >= 90 % coverage by count, so NO-GO "Cualquier
    pérdida de datos detectada" is judged clear and the verdict is GO."""
    soak = full_soak()
    last = _last(soak, "data_loss")
    assert (last.phase, last.soak_s) == ("passive", 24 * 3600)
    soak = [obs("data_loss", o.phase, o.tick, o.soak_s / 60, None) if o is last else o for o in soak]
    v = judge(PLAN, soak)
    crit = next(c for c in v.criteria if c.id == "no_go_data_loss")
    assert crit.outcome != "clear", crit.detail
    assert v.decision != "GO", v.reasons


def test_authorizer_sync_last_four_hours_unread_is_not_met():
    """Same shape on a GO criterion: authorizer_sync (regular + passive, 10 readings) misses
    its hour-24 reading: 9 of 10 = 90 % is enough, and "No hay usuarios sin authorizerId"
    is met although hours 20-24 were never sampled."""
    soak = full_soak()
    last = _last(soak, "authorizer_sync")
    soak = [obs("authorizer_sync", o.phase, o.tick, o.soak_s / 60, None) if o is last else o for o in soak]
    v = judge(PLAN, soak)
    crit = next(c for c in v.criteria if c.id == "go_no_users_without_authorizer_id")
    assert crit.outcome != "met", crit.detail


def test_check_summary_not_met_when_counts_do_not_show_the_expectation():
    """Every auth_error_rate reading is 0 failures out of 1 request. The judge says the GO
    criterion "< 0.1%" has not enough data (pooled upper limit 0.27 %), but the report's
    per-check row says ✅ met: "all 1459 readings < 0.1%"."""
    soak = [replace(o, evidence={"numerator": 0, "denominator": 1}) if o.check_id == "auth_error_rate" else o
            for o in full_soak()]
    v = judge(PLAN, soak)
    crit = next(c for c in v.criteria if c.id == "go_auth_error_rate")
    assert crit.outcome == "not_enough_data"
    check = next(c for c in v.checks if c.check_id == "auth_error_rate")
    assert check.outcome != "met", check.detail


class _Store:
    """observe.take's view of the store: the readings of one series, oldest first
    (``Store.latest``'s filter on them; its SQL: tests/integration/test_store.py)."""

    def __init__(self, *readings):
        self.readings = readings

    def latest(self, run_id, check_id, phases=None, exclude_phases=(), valued=False):
        return next((o for o in reversed(self.readings) if not valued or o.status != "error"), None)


def test_log_count_after_an_error_reading_does_not_skip_the_lines_in_between(tmp_path, monkeypatch):
    """A log check's reading after an ``error`` one (a missed tick, a log briefly
    unreadable) starts from the last 500 lines instead of where the last good reading
    stopped: a CRITICAL line written in between, followed by a busy log, is never counted,
    and "0 errores críticos durante 24 horas" is met on lines nobody read."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"INFO ok {i}\n" for i in range(10)))
    monkeypatch.setenv("SOAK_APP_LOG", str(log))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    check = PLAN.check("critical_errors")
    from migration_soak import sources
    good_ev = sources.measure(check, PLAN, None, sources.Context("r", None, "regular", 1)).evidence
    good = Observation("r", "regular", "critical_errors", 1, t0, t0, 0.0, "count", "pass", good_ev)
    with log.open("a") as f:
        f.write("2026-01-01 ERROR CRITICAL null value in column \"authorizerId\"\n")
        f.writelines(f"INFO ok {i}\n" for i in range(2000))
    missed = Observation("r", "regular", "critical_errors", 2, t0 + timedelta(hours=1), t0 + timedelta(hours=2),
                         None, "count", "error", {"error": "missed: tick was due ..."})
    tick = Tick("regular", 3, timedelta(hours=2), t0 + timedelta(hours=2))
    # control: after the good reading the line is counted
    assert observe.take(PLAN, "critical_errors", "regular", tick, "r", _Store(good)).value == 1
    o = observe.take(PLAN, "critical_errors", "regular", tick, "r", _Store(good, missed))
    assert o.value == 1 or o.status == "error", (o.value, o.status, o.evidence.get("first_read"))


def test_a_four_hour_phase_reading_is_not_a_60_minute_window_count():
    """"> 5 errores críticos en cualquier hora": six critical lines between hour 8 and hour
    12, one every 40 minutes (never more than 2 in any hour; the guard read them one by
    one). The passive reading at hour 12 counts the 4 hours of log since hour 8 (6 lines)
    and the window_count rule sums it as if those 6 lines fell within 60 minutes: NO-GO,
    the soak stops and the migration is rolled back on a rate the runbook allows."""
    from migration_soak.judge import no_go_breaches

    minutes = {8 * 60 + 20 + 40 * k for k in range(6)}
    soak = []
    for o in full_soak():
        if o.check_id == "critical_errors" and o.phase == "guard" and round(o.soak_s / 60) in minutes:
            o = obs("critical_errors", "guard", o.tick, o.soak_s / 60, 1)
        if o.check_id == "critical_errors" and o.phase == "passive" and o.tick == 1:
            assert o.soak_s == 12 * 3600
            o = obs("critical_errors", "passive", 1, o.soak_s / 60, 6)
        soak.append(o)
    assert [r.id for r in no_go_breaches(PLAN, soak)] == []
    assert judge(PLAN, soak).decision != "NO_GO"


def test_a_reading_beyond_the_bound_is_not_shown_as_the_bound_itself():
    """workflow_error_rate 10.04 % breaches "> 10%"; the verdict, the rollback's Slack
    line and the report say "10% at regular tick 3 meets > 10%" (3 significant digits),
    which reads as a rollback on a value the runbook allows."""
    from test_judge import set_value

    v = judge(PLAN, set_value(full_soak(), "workflow_error_rate", 5 * 60, 0.1004))
    assert v.decision == "NO_GO"
    assert "10% at" not in v.reasons[0], v.reasons[0]


def test_log_count_after_a_missed_tick_does_not_count_lines_already_counted(tmp_path, monkeypatch):
    """The other side of the same fault: after a guard reading that failed (the log briefly
    unreadable during a rotation: an ``error`` observation) the next reading re-reads the
    last 500 lines and counts again the critical lines the previous reading already
    counted: three critical lines in the hour become six in the guard's 60-minute window,
    and "> 5 errores críticos en cualquier hora" stops the soak and rolls back."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"2026-01-01 ERROR CRITICAL deadlock detected {i}\nINFO ok\n" for i in range(3)))
    monkeypatch.setenv("SOAK_APP_LOG", str(log))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    from migration_soak import sources
    good_ev = sources.measure(PLAN.check("critical_errors"), PLAN, None, sources.Context("r", None, "guard", 1)).evidence
    assert good_ev["matches"] == 3  # counted once, here
    good = Observation("r", "guard", "critical_errors", 1, t0 + timedelta(minutes=1), t0 + timedelta(minutes=1),
                       3.0, "count", "fail", good_ev)
    missed = Observation("r", "guard", "critical_errors", 2, t0 + timedelta(minutes=2), t0 + timedelta(minutes=3),
                         None, "count", "error", {"error": "log file /var/log/app.log does not exist"})
    tick = Tick("guard", 3, timedelta(minutes=3), t0 + timedelta(minutes=3))
    o = observe.take(PLAN, "critical_errors", "guard", tick, "r", _Store(good, missed))
    assert o.value == 0 or o.status == "error", (o.value, o.evidence.get("first_read"))


def test_a_zero_baseline_is_not_reported_as_missing_coverage():
    """auth_query_time's baseline readings are all 0 ms: the baseline rule has no point (a
    relative change of a 0 has no meaning). The GO criterion's reason, shown to the person
    who decides the INCONCLUSIVE run, says "18 of 18 scheduled readings measured (coverage
    100% < 90%)": a false reason, pointing at the readings instead of the baseline."""
    soak = [obs(o.check_id, "baseline", o.tick, o.soak_s / 60, 0)
            if o.phase == "baseline" and o.check_id == "auth_query_time" else o for o in full_soak()]
    crit = next(c for c in judge(PLAN, soak).criteria if c.id == "go_performance_stable")
    assert crit.outcome == "not_enough_data"
    assert "coverage 100% <" not in crit.detail, crit.detail


class _MarkedStore(_Store):
    """No reading yet; the ``log_marks`` event ``runbook.mark_logs`` recorded."""

    def __init__(self):
        super().__init__()
        self.recorded = []

    def add_event(self, run_id, kind, payload):
        self.recorded.append({"kind": kind, "payload": payload})

    def events(self, run_id, kind=None):
        return [e for e in self.recorded if kind in (None, e["kind"])]


def test_the_first_log_reading_after_the_migration_starts_where_the_log_was_at_the_ddl(tmp_path, monkeypatch):
    """Without a mark the hour-0 reading took the last 500 lines, whatever their time: here
    lines from before the DDL (which the soak must not blame on the migration) and, on a
    busy log, not the first lines after it."""
    from migration_soak import runbook

    log = tmp_path / "app.log"
    log.write_text("".join(f"ERROR CRITICAL before the migration {i}\n" for i in range(3)))
    monkeypatch.setenv("SOAK_APP_LOG", str(log))
    monkeypatch.setenv("SOAK_DB_LOG", str(tmp_path / "missing.log"))
    store = _MarkedStore()
    marks = runbook.mark_logs(PLAN, "r", store)
    assert marks["critical_errors"]["offset"] == log.stat().st_size
    assert "does not exist" in marks["db_errors"]["error"]  # said, and the readings will say it too
    with log.open("a") as f:
        f.write("ERROR CRITICAL after the migration\n" + "".join(f"INFO ok {i}\n" for i in range(600)))
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for phase in ("hour0", "guard"):  # each series starts at the mark
        o = observe.take(PLAN, "critical_errors", phase, Tick(phase, 0, timedelta(0), t0), "r", store)
        assert (o.value, o.evidence["lines_read"], o.evidence.get("first_read")) == (1, 601, None), o.evidence


def test_a_migrate_run_again_after_the_ddl_keeps_the_first_log_marks(tmp_path, monkeypatch):
    """Found by review: migrate cleared in the UI and run again (with its downstream: verify
    had failed) marked the logs again; the first reading of each series then started there,
    so the critical errors the application logged between the DDL and the re-run (the
    columns gone, the apps not restarted) were never read and "0 errores críticos" held."""
    from migration_soak import runbook

    log = tmp_path / "app.log"
    log.write_text("INFO before the migration\n")
    monkeypatch.setenv("SOAK_APP_LOG", str(log))
    monkeypatch.setenv("SOAK_DB_LOG", str(tmp_path / "missing.log"))
    store = _MarkedStore()
    first = runbook.mark_logs(PLAN, "r", store)
    store.add_event("r", "migrate", {"applied": [PLAN.migration.name]})  # the DDL committed
    with log.open("a") as f:
        f.write("ERROR CRITICAL column users.passwordHash does not exist\n")
    assert runbook.mark_logs(PLAN, "r", store) == first  # the run again: nothing re-marked
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    o = observe.take(PLAN, "critical_errors", "hour0", Tick("hour0", 0, timedelta(0), t0), "r", store)
    assert o.value == 1, o.evidence
