"""The run's bookkeeping between the runbook's steps (lifecycle.py), on a fake store."""

from __future__ import annotations


from types import SimpleNamespace

import pytest

from migration_soak import lifecycle, notify
from migration_soak.decision import APPROVE_OPTION, GO_OPTION, Answer, Decision, decision_event
from migration_soak.exceptions import PlanError, SoakError, SoakStopped
from migration_soak.judge import Verdict
from migration_soak.plan import load_plan
from tests.unit.test_runbook import IDENTIFY, FakeStore

PLAN = load_plan("default")


class Store(FakeStore):
    """FakeStore plus the schema and the stop signal."""

    schema_created = False

    def create_schema(self):
        self.schema_created = True

    def no_go(self, run_id):
        found = self.events(run_id, "no_go")
        return found[0]["payload"] if found else None


def test_open_run_creates_the_schema_first_then_checks_the_form_the_storage_and_the_lease():
    store, probed = Store(), []
    lifecycle.open_run(PLAN, "r1", store, environment="staging", plan_param="default", time_scale=300,
                       probe=lambda: probed.append(1), **IDENTIFY)
    assert store.schema_created and probed == [1] and store.lease["run_id"] == "r1"

    store, probed = Store(), []
    with pytest.raises(ValueError, match="time_scale must be a number"):
        lifecycle.open_run(PLAN, "r1", store, environment="staging", plan_param="default", time_scale=0,
                           probe=lambda: probed.append(1), **IDENTIFY)
    assert store.schema_created and probed == [] and store.lease is None  # release can still read the table
    with pytest.raises(PlanError, match="environment"):
        lifecycle.open_run(PLAN, "r1", Store(), environment="prod", plan_param="default", time_scale=1,
                           probe=lambda: None, **IDENTIFY)


@pytest.mark.parametrize("time_scale, took", [
    (0.001, "24,000 h (1,000 days) of wall time"), (0.1, "240 h (10 days) of wall time"),
    (1e-7, "240,000,000 h (10,000,000 days) of wall time"), (1e-300, "2.4e+301 h of wall time")])
def test_open_run_refuses_a_time_scale_that_stretches_the_soak_past_the_longest_soak(time_scale, took):
    """A time_scale below 1 stretches the soak; only one past the year 9999 was refused
    (found by review: 1e-7 raised "OverflowError: date value out of range" in the first
    check task), so 0.001 loaded and made the 24 h soak last 1,000 days of wall time, the
    lease and the app's migrated schema held that long. Now it is held to the bound a plan's
    soak has, MAX_SOAK_HOURS (168 h), in wall time, at the one check every entry uses
    (clock.check_time_scale), naming the field, the value, the wall time and the smallest
    allowed."""
    store = Store()
    with pytest.raises(ValueError) as err:
        lifecycle.open_run(PLAN, "r1", store, environment="staging", plan_param="default", time_scale=time_scale,
                           probe=lambda: None, **IDENTIFY)
    assert str(err.value) == (f"time_scale {time_scale!r} stretches the plan's 24 h soak to {took}, longer than the "
                              "longest soak a plan may ask for, 168 h (7 days): at least 0.143 (1 is real time)")
    assert store.lease is None


def test_the_slowest_time_scale_is_accepted_and_named_by_the_form():
    from migration_soak.clock import check_time_scale, slowest_time_scale

    assert slowest_time_scale(PLAN) == 0.143 and check_time_scale(0.143, PLAN) == 0.143
    assert 24 / 0.143 <= 168 < 24 / 0.142
    with pytest.raises(ValueError, match="time_scale 5e-324 stretches the plan's 24 h soak to more wall time than "
                                         "any clock holds"):
        check_time_scale(5e-324, PLAN)
    week = PLAN.model_copy(update={"phases": [p.model_copy(update={"end_hour": 168}) if p.end_hour == 24 else p
                                              for p in PLAN.phases]})
    assert week.soak_hours() == 168 and slowest_time_scale(week) == 1.0
    # a soak whose quotient rounds over the bound in floats (71.4 / 0.425 = 168.00000000000003):
    # the value the form and the refusal name as the least is the one accepted (0.425 was refused
    # with "at least 0.425")
    for hours, least in ((71.4, 0.426), (142.8, 0.851), (163.8, 0.976)):
        odd = PLAN.model_copy(update={"phases": [p.model_copy(update={"end_hour": hours}) if p.end_hour == 24 else p
                                                 for p in PLAN.phases]})
        assert slowest_time_scale(odd) == least and check_time_scale(least, odd) == least
    for minutes in range(1, 168 * 60 + 1):  # every whole-minute soak length: the named least is accepted
        length = SimpleNamespace(soak_hours=lambda: minutes / 60)
        check_time_scale(slowest_time_scale(length), length)  # type: ignore[arg-type]
    store = Store()
    lifecycle.open_run(PLAN, "r1", store, environment="staging", plan_param="default", time_scale=0.143,
                       probe=lambda: None, **IDENTIFY)
    assert store.lease["run_id"] == "r1"
    from migration_soak.airflow.builder import _time_scale_text

    assert "At least 0.143 (below 1 the soak is stretched: at most 168 h of wall time" in _time_scale_text(PLAN)


def test_a_disabled_rehearsal_is_recorded_with_its_reason():
    store = Store()
    assert lifecycle.rehearsal_disabled(PLAN, "r1", store) is None and store.kinds() == []
    off = PLAN.model_copy(update={"rehearsal": PLAN.rehearsal.model_copy(update={"enabled": False})})
    text = lifecycle.rehearsal_disabled(off, "r1", store)
    assert text == "rollback not rehearsed: rehearsal.enabled is false in the plan"
    assert store.recorded == [("r1", "rehearsal", {"status": "disabled", "text": text})]


def test_the_clock_does_not_start_after_a_no_go():
    store = Store()
    store.add_event("r1", "no_go", {"text": "NO-GO: users: 3"})
    with pytest.raises(SoakStopped, match="^the soak stopped at hour 0, the clock does not start: NO-GO: users: 3$"):
        lifecycle.start_clock(store, "r1", 10)
    assert "hour0" not in store.kinds()
    store = Store()
    first = lifecycle.start_clock(store, "r1", 10)
    assert lifecycle.start_clock(store, "r1", 0) == first  # a retry keeps hour 0
    assert store.recorded[0][2]["text"] == "Hora 0 checklist done; the soak clock starts in 10 s"


def test_fingerprints_are_taken_once(monkeypatch):
    taken = []

    def record(plan, run_id, store, target):
        taken.append(target)
        store.add_event(run_id, "fingerprint", {"rows": 1})

    monkeypatch.setattr(lifecycle, "record_baseline", record)
    store = Store()
    assert lifecycle.record_fingerprints(PLAN, "r1", store, "staging") == 1
    assert lifecycle.record_fingerprints(PLAN, "r1", store, "staging") == 1 and taken == ["staging"]


def test_verify_checks_the_schema_asks_prisma_and_records_the_moment(monkeypatch):
    calls = []
    monkeypatch.setattr(lifecycle, "verify_applied", lambda *a: calls.append(a))
    store = Store()
    at = lifecycle.verify(PLAN, "r1", store, "direct", None)
    m = PLAN.migration
    assert calls == [("direct", m.name, m.table, tuple(m.dropped_columns))]
    assert store.recorded == [("r1", "verified", {"at": at, "text": "migration verified: ledger row finished, "
                                                                     "columns gone"})]


def test_restart_records_the_status():
    store, asked = Store(), []
    status = lifecycle.restart(PLAN, "r1", store, "restart", "applications restarted",
                               lambda *a: asked.append(a) or 204)
    assert status == 204 and asked == [(PLAN.restart.connection, PLAN.restart.endpoint, PLAN.restart.method)]
    assert store.recorded == [("r1", "restart", {"status": 204, "text": "applications restarted"})]


INCONCLUSIVE = Verdict("INCONCLUSIVE", ["go_x: not_enough_data"], [], [])


def test_a_person_is_asked_only_for_inconclusive_with_ask():
    assert lifecycle.asks_a_person(INCONCLUSIVE, "ask")
    assert not lifecycle.asks_a_person(INCONCLUSIVE, "rollback")
    assert not lifecycle.asks_a_person(Verdict("GO", [], [], []), "ask")


def test_the_candidate_records_the_persons_answer():
    store = Store()
    before = lifecycle.candidate(store, "r1", INCONCLUSIVE, Answer(GO_OPTION, "ana"), "ask")
    assert before == Decision("GO", "proceed", "person:ana", "ana chose GO on an INCONCLUSIVE verdict: go_x: not_enough_data",
                              verdict="INCONCLUSIVE", overridden_by="ana")
    assert store.kinds() == ["human_decision"]
    assert lifecycle.candidate(Store(), "r1", INCONCLUSIVE, None, "rollback").action == "rollback"


def test_decide_records_the_sign_off_only_when_it_was_needed():
    go = Decision("GO", "proceed", "judge", "all met")
    store = Store()
    final = lifecycle.decide(PLAN, store, "r1", go, True, Answer(APPROVE_OPTION, "qa"))
    assert final.by == "person:qa" and store.kinds() == ["sign_off", "decision"]
    assert store.recorded[-1][2] == decision_event(final)
    store = Store()
    assert lifecycle.decide(PLAN, store, "r1", go, False, Answer(APPROVE_OPTION, "qa")) == go
    assert store.kinds() == ["decision"]


@pytest.mark.parametrize("accepted", [True, False])
def test_the_rollback_start_is_worded_for_slack_sent_then_recorded_with_what_slack_said(accepted):
    store, sent = Store(), []
    store.add_event("r1", "decision", decision_event(Decision("NO_GO", "rollback", "judge", "errors 2%")))

    def send(text):
        assert store.kinds() == ["decision"]  # recorded after sending: the event knows the outcome
        sent.append(text)
        return accepted

    assert lifecycle.start_rollback(PLAN, store, "r1", send) is accepted
    reason = "ROLLBACK INITIATED - Reason: NO_GO: errors 2%"
    assert sent == [notify.rollback_text(PLAN, reason)]
    assert store.recorded[-1] == ("r1", "rollback_started", {"text": reason, "notified": accepted})


def test_the_kept_backup_is_the_last_recorded():
    store = Store()
    for sha in ("a" * 64, "b" * 64):
        store.add_event("r1", "backup", {"path": None, "size_bytes": 1, "sha256": sha, "duration_s": 1.0,
                                         "pg_dump_version": "18", "server_version": "18", "tables": [],
                                         "created_at": "2026-01-01T00:00:00+00:00", "text": "kept"})
    assert lifecycle.kept_backup(store, "r1").sha256 == "b" * 64


def test_conclude_is_the_outcome_of_a_completed_go_else_the_reason():
    store = Store()
    with pytest.raises(SoakError, match="^the soak reached no decision: see the failed task above$"):
        lifecycle.conclude(store, "r1")
    store.add_event("r1", "decision", decision_event(Decision("GO", "proceed", "judge", "ok")))
    with pytest.raises(SoakError, match="report was not written"):
        lifecycle.conclude(store, "r1")
    store.add_event("r1", "report", {"path": "x"})
    assert lifecycle.conclude(store, "r1") == "GO"
