"""The soak view claims no more than the run recorded: once ``judge_soak`` recorded a
verdict the page shows it (and the final decision), a re-judgement of the readings is
shown only before that and labelled provisional, and a compressed clock's GO carries the
report's own caveat (its banner and closing line)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from migration_soak.airflow import soak_view as sv
from migration_soak.judge import Verdict
from migration_soak.report_run import analyse
from migration_soak.report_sections import banner, chart_marks, final

from test_report import PLAN, T0, go_run

FAILED_TEXT = ("INCONCLUSIVE: task regular.login_p50 failed or could not run after the migration: the soak did not "
               "run as planned")


def _big(card: str) -> str:
    return card.split("<div class=big>", 1)[1].split("</div>", 1)[0]


def _finished(scale: float, state="success", **kw):
    verdict, obs, events = go_run(scale, **kw)
    snap = sv.Snapshot("migration_soak", "run", state, {"time_scale": scale}, events[-1]["at"] + timedelta(minutes=1),
                       plan=PLAN, time_scale=scale, events=events, tasks={"conclude": "success"}, observations=obs)
    snap.verdict = sv.shown_verdict(snap, verdict)
    snap.analysis = analyse(PLAN, snap.verdict, obs, events, scale)
    snap.marks = chart_marks(snap.analysis)
    return snap


def test_soak_view_of_an_ended_run_does_not_show_a_green_go_the_run_never_had():
    """judge_soak turned GO into INCONCLUSIVE (a check task no criterion reads failed out of
    retries); the view re-judged the readings alone and its "the judge" card showed a big
    green GO for the ended run."""
    verdict, obs, events = go_run(300.0)
    assert verdict.decision == "GO"
    recorded = {"kind": "verdict", "at": events[-1]["at"], "payload": {"decision": "INCONCLUSIVE", "text": FAILED_TEXT}}
    snap = sv.Snapshot("migration_soak", "run", "failed", {}, T0, plan=PLAN, time_scale=300.0,
                       events=[recorded], tasks={"regular.login_p50": "failed"}, observations=obs)
    snap.verdict = verdict  # what _load_soak computed: judge(plan, observations, time_scale)
    snap.analysis = SimpleNamespace(clock0=T0)
    card = sv._judge_card(snap)
    big = _big(card)
    assert "GO</span>" not in big or "INCONCLUSIVE" in big, card
    assert "badge warn'>INCONCLUSIVE</span>" in big and "verdict recorded by judge_soak" in card
    assert "regular.login_p50 failed" in card and "no final decision recorded yet" in card


def test_the_page_of_a_run_with_a_recorded_verdict_uses_it_for_the_criteria_too():
    verdict, obs, events = go_run(300.0)
    recorded = {"kind": "verdict", "at": events[-1]["at"], "payload": {"decision": "INCONCLUSIVE", "text": FAILED_TEXT}}
    snap = sv.Snapshot("migration_soak", "run", "failed", {}, T0, plan=PLAN, time_scale=300.0, events=[recorded],
                       tasks={"regular.login_p50": "failed"}, observations=obs)
    shown = sv.shown_verdict(snap, verdict)  # stored without its results: the live ones, the recorded decision
    assert (shown.decision, shown.reasons, shown.criteria) == ("INCONCLUSIVE", [FAILED_TEXT], verdict.criteria)
    full = {**Verdict("INCONCLUSIVE", ["why"], verdict.criteria[:1], verdict.checks[:1]).to_dict(), "text": "x"}
    snap.events = [{**recorded, "payload": full}]
    assert sv.shown_verdict(snap, verdict) == Verdict("INCONCLUSIVE", ["why"], verdict.criteria[:1],
                                                      verdict.checks[:1])
    snap.verdict, snap.analysis = sv.shown_verdict(snap, verdict), SimpleNamespace(clock0=T0)
    section = sv._criteria_section(snap)
    assert "As <code>judge_soak</code> judged them" in section and "Provisional" not in section


def test_before_its_verdict_the_judge_card_is_provisional_and_counts_the_failed_tasks():
    verdict, obs, events = go_run(300.0)
    events = [ev for ev in events if ev["kind"] not in ("verdict", "decision", "report", "sign_off")]
    snap = sv.Snapshot("migration_soak", "run", "running", {}, T0, plan=PLAN, time_scale=300.0, events=events,
                       tasks={"migrate": "success", "guard": "running"}, observations=obs)
    snap.verdict, snap.analysis = sv.shown_verdict(snap, verdict), SimpleNamespace(clock0=T0)
    card = sv._judge_card(snap)
    assert "provisional: the judge on the readings so far" in card and "not a verdict" in card
    assert _big(card) == "<span class='badge prov good'>GO (provisional)</span>"
    assert "Provisional: computed now" in sv._criteria_section(snap)

    snap.tasks["regular.login_p50"] = "failed"  # judge_soak will not call this GO
    snap.verdict = sv.shown_verdict(snap, verdict)
    assert _big(sv._judge_card(snap)) == "<span class='badge prov warn'>INCONCLUSIVE (provisional)</span>"
    assert snap.verdict.reasons[0].startswith("task regular.login_p50 failed")

    snap.state = "failed"  # ended with no verdict: still not one
    assert "no verdict recorded: the judge on the readings alone" in sv._judge_card(snap)


def test_soak_view_of_a_compressed_go_carries_the_demonstration_caveat():
    """The Soak tab of a finished time_scale-300 run stated GO (judge card, decision card)
    without the report's "demonstration evidence, not a 24-hour soak"."""
    snap = _finished(300.0)
    html = sv._live(snap)
    assert "badge good'>GO</span>" in html  # the page states GO...
    assert "demonstration" in html or "not a 24-hour soak" in html or "not an approval" in html, \
        "no compressed-clock caveat next to the GO"
    assert sv._markdown(banner(PLAN, 300.0)) in html  # ...with the report's banner, word for word
    decision = html.split("id=decision>", 1)[1].split("</div></div>", 1)[0]
    closing = final(snap.analysis)["closing"]
    assert "not an approval for production" in closing and f"<div class=closing>{sv.e(closing)}" in decision


def test_a_real_time_page_has_no_clock_banner_and_closes_as_the_report_does():
    snap = _finished(1.0)
    html = sv._live(snap)
    assert "clock-banner" not in html and "demonstration" not in html
    assert f"<div class=closing>{sv.e(final(snap.analysis)['closing'])}" in html


def test_the_events_table_says_when_slack_never_got_the_rollback_message():
    started = {"kind": "rollback_started", "at": T0, "payload": {"text": "ROLLBACK INITIATED", "notified": False}}
    assert "ROLLBACK INITIATED (Slack notification FAILED)</td>" in sv._event_row(started, T0, 1.0)
    before = {**started, "payload": {"text": "ROLLBACK INITIATED"}}  # recorded before ``notified``: says nothing
    assert "ROLLBACK INITIATED</td>" in sv._event_row(before, T0, 1.0)


def test_before_its_verdict_no_criterion_or_check_reads_met_or_clear_as_if_decided():
    """(h-ui) Mid-soak the Soak tab showed a solid green "clear" for a NO-GO criterion read
    once (browser run at soak 00:17 of 00:30: "no breach (users_without_authorizer_id: 1
    reading with a value)"), and between the last tick and judge_soak's verdict solid green
    "met" badges, the same as a recorded verdict's: nothing was decided yet. Before the
    verdict they are outlined (provisional) and say "so far"."""
    verdict, obs, events = go_run(300.0)
    events = [ev for ev in events if ev["kind"] not in ("verdict", "decision", "report", "sign_off")]
    snap = sv.Snapshot("migration_soak", "run", "running", {}, T0, plan=PLAN, time_scale=300.0, events=events,
                       tasks={"migrate": "success", "guard": "running"}, observations=obs)
    snap.verdict, snap.analysis = sv.shown_verdict(snap, verdict), analyse(PLAN, verdict, obs, events, 300.0)
    snap.marks = chart_marks(snap.analysis)
    assert {r.outcome for r in snap.verdict.criteria} >= {"met", "clear"}
    html = sv._criteria_section(snap) + sv._checks_section(snap, "/soak/x")
    for solid in ("badge good'>met<", "badge good'>clear<"):  # an alert's "quiet" is the readings now, as ever
        assert solid not in html, solid
    assert "badge prov good'>met so far<" in html and "badge prov good'>clear so far<" in html
    snap.state = "failed"  # ended without a verdict: still not decided
    html = sv._criteria_section(snap) + sv._checks_section(snap, "/soak/x")
    assert "badge good'>met<" not in html and "badge prov good'>met (no verdict)<" in html
    recorded = _finished(300.0)  # once judge_soak recorded it: solid, as judged
    html = sv._criteria_section(recorded) + sv._checks_section(recorded, "/soak/x")
    assert "badge good'>met<" in html and "so far" not in html


def test_a_recorded_go_waiting_for_the_qa_sign_off_says_it_is_not_final():
    """(h-ui) While QA had not answered, the Soak tab's judge card showed a big green GO over
    'no final decision recorded yet': a Reject (or no answer in 24 h) makes it a NO-GO and a
    rollback. It now says the GO waits for the sign-off and what a rejection does."""
    snap = _finished(300.0)
    snap.events = [ev for ev in snap.events if ev["kind"] not in ("decision", "report")]
    snap.state, snap.tasks = "running", {"sign_off": "awaiting_input"}
    card = sv._judge_card(snap)
    assert "no final decision recorded yet" not in card, card
    assert ("not final: waiting for the QA sign-off (sign_off, in Required actions); a rejection, or no answer "
            "within 24 h, is not a GO") in card, card
    snap.tasks = {"human_decision": "awaiting_input"}
    assert "not final: waiting for a person to answer human_decision in Required actions" in sv._judge_card(snap)
    snap.tasks = {}
    assert "no final decision recorded yet" in sv._judge_card(snap)


def test_the_view_of_a_re_created_run_id_does_not_show_the_first_runs_evidence(monkeypatch):
    """Found by review: the soak view read the store by run id alone, so a run id deleted in
    Airflow after its GO and triggered again (refused by load: it measured nothing) showed
    the first dag run's readings, its recorded GO and its decision as its own."""
    from datetime import datetime, timezone

    from migration_soak import store as store_mod

    verdict, obs, events = go_run(300.0)
    first = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
    started, claimed = datetime(2026, 12, 6, 9, 0, 2, tzinfo=timezone.utc), datetime(2026, 12, 6, 9, 0, 9, tzinfo=timezone.utc)
    recorded = {"kind": "verdict", "at": events[-1]["at"], "payload": {"decision": "GO", "text": "GO: all met"}}

    class Store:
        def clock(self, run_id, time_scale):
            return None

        def observations(self, run_id, clock=None):
            return []  # the readings are the judge's business here; the recorded verdict is what shows

        def events(self, run_id):
            return events + [recorded]

        def run_claim(self, run_id):
            return {"run_id": run_id, "plan": "default", "dag_run": first.isoformat(), "claimed_at": claimed,
                    "dag_run_started": started, "dag_run_clears": 0, "dag_run_superseded": None}

    monkeypatch.setattr(store_mod.Store, "from_airflow", classmethod(lambda cls, conn_id: Store()))
    monkeypatch.setattr("migration_soak.plan.load_plan", lambda name: PLAN)

    def snap(run_after, start=None, clears=None):
        s = sv.Snapshot("migration_soak", "soak-1", "failed", {"plan": "default", "time_scale": 300.0}, T0,
                        tasks={"load": "failed"}, run_after=run_after, started=start, clears=clears)
        sv._load_soak(s)
        return s

    again = snap(datetime(2026, 12, 6, 10, 30, tzinfo=timezone.utc))
    assert again.events == [] and again.verdict.decision != "GO"
    assert "another Airflow run (created 2026-12-06T09:00:00+00:00)" in (again.foreign or "")
    own = snap(first)  # the first dag run still sees its own evidence
    assert own.events[-1] == recorded and own.verdict.decision == "GO" and own.foreign is None
    own = snap(first, started, 0)
    assert own.events[-1] == recorded and own.foreign is None
    # Found by review: re-created through the REST API with the deleted run's run_after, it
    # showed the first run's GO as its own. Its start (after the claim) tells it apart.
    same = snap(first, datetime(2026, 12, 6, 11, 0, tzinfo=timezone.utc), 0)
    assert same.events == [] and same.verdict.decision != "GO"
    # Found by review3: that start alone is also what a running soak set back to queued (REST
    # PATCH state: a new start, no clear) shows until its next staging task records it, and
    # its checks go on measuring (e110714); the view said of it "belongs to another Airflow
    # run ...; this one was refused and measured nothing". It now says what it cannot tell.
    assert "refused" not in (same.foreign or "") and "measured nothing" not in (same.foreign or ""), same.foreign
    assert same.foreign == (
        "run id 'soak-1' was claimed by an Airflow run with this run's run_after that started 2026-12-06 09:00:02 "
        "UTC; this one started 2026-12-06 11:00:00 UTC without being cleared since: a run re-created with the "
        "deleted run's run_after, or this run set back to queued, which cannot be told apart until one of its "
        "staging tasks records its start. The store's readings, events and verdict are not shown as this run's "
        "until then")
    # once its load refused it (the claim marked superseded), the view says so
    superseded = {"dag_run_superseded": datetime(2026, 12, 6, 11, 0, 5, tzinfo=timezone.utc)}
    monkeypatch.setattr(Store, "run_claim", lambda self, run_id: {
        "run_id": run_id, "plan": "default", "dag_run": first.isoformat(), "claimed_at": claimed,
        "dag_run_started": started, "dag_run_clears": 0, **superseded})
    refused = snap(first, datetime(2026, 12, 6, 11, 0, tzinfo=timezone.utc), 0)
    assert refused.events == [] and "belongs to another Airflow run (created 2026-12-06T09:00:00+00:00); this one was " \
        "refused and measured nothing" in (refused.foreign or ""), refused.foreign
