"""What the report and the post-mortem say about Slack: "team notified" only when Slack
accepted the message (the event's ``notified``, recorded after sending), "Slack
notification FAILED" when it did not, and neither for events recorded before the key
existed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from migration_soak import report
from migration_soak.report_text import label

from test_report import PLAN, event, go_run, nogo_hour0_run
from test_report_sections import NO_GO_STOP, ev, run_of
from migration_soak import report_sections as sections


def _rejected_run(**started):
    verdict, obs, events = go_run(300.0, sign_off={"state": "rejected", "by": "bob", "comment": "broken"})
    start = events[-1]["at"] + timedelta(seconds=1)
    events.append(event("rollback_started", start, text="ROLLBACK INITIATED - Reason: NO_GO: QA rejected", **started))
    return verdict, obs, events


def test_report_does_not_say_team_notified_when_slack_never_received_the_rollback_message():
    """notify_rollback ignored notify.send's result; the report labelled the event 'team notified'."""
    verdict, obs, events = _rejected_run()  # recorded before ``notified`` existed: says neither
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    assert "team notified" not in text, [line for line in text.splitlines() if "notified" in line]
    assert "Slack notification FAILED" not in text


@pytest.mark.parametrize("sent, said, not_said", [(False, "Slack notification FAILED", "team notified"),
                                                  (True, "team notified", "Slack notification FAILED")])
def test_report_and_post_mortem_say_what_slack_said_of_the_rollback_start(sent, said, not_said):
    verdict, obs, events = _rejected_run(notified=sent)
    text = report.render_report(PLAN, "run", verdict, obs, events, 300.0)
    assert f"Rollback started; {said}: ROLLBACK INITIATED" in text
    verdict, obs, events = nogo_hour0_run()
    events = events + [event("rollback_started", events[-1]["at"] + timedelta(seconds=1), notified=sent)]
    pm = report.render_postmortem(PLAN, "run", verdict, obs, events)
    assert f"Rollback started; {said}" in pm and not_said not in pm


def test_the_rollback_under_way_names_a_failed_notification():
    run = run_of(events=[ev("rollback_started", 1, text="go back", notified=False)])
    assert sections.rollback_state(run) == (
        "rollback under way when this was written (started 2026-03-02 09:01:00 UTC, last step: rollback started; "
        "Slack notification FAILED at 2026-03-02 09:01:00 UTC)")


def test_an_alert_slack_never_got_says_so():
    run = run_of(events=NO_GO_STOP + [ev("alert", 0.05, alert="a1", text="ALERT x", notified=False),
                                      ev("alert", 0.06, alert="a2", text="ALERT y", notified=True),
                                      ev("alert", 0.07, alert="a3", text="ALERT z")])
    assert sections.alerts(run) == ["2026-03-02 09:00:03 UTC: a1: ALERT x (Slack notification FAILED)",
                                    "2026-03-02 09:00:03 UTC: a2: ALERT y (team notified)",
                                    "2026-03-02 09:00:04 UTC: a3: ALERT z"]
    assert label(ev("alert", 0, notified=False)) == "Alert fired; Slack notification FAILED"


def test_only_events_that_send_a_message_speak_of_slack():
    assert label({"kind": "report", "payload": {"notified": False}}) == "Report written"


def test_an_alert_posted_again_after_refusals_is_one_line_naming_them():
    """The guard posts an alert Slack refused again (observe.ALERT_TRIES): the report lists
    the alert once, with the refusals and when Slack took it, or that every post failed."""
    run = run_of(events=NO_GO_STOP + [ev("alert", 0.05, alert="a1", text="ALERT x", notified=False),
                                      ev("alert", 0.06, alert="a2", text="ALERT y", notified=False),
                                      ev("alert", 0.07, alert="a1", text="ALERT x", notified=False),
                                      ev("alert", 0.08, alert="a1", text="ALERT x", notified=True),
                                      ev("alert", 0.09, alert="a2", text="ALERT y", notified=False),
                                      ev("alert", 0.10, alert="a2", text="ALERT y", notified=False)])
    assert sections.alerts(run) == [
        "2026-03-02 09:00:03 UTC: a1: ALERT x (Slack refused 2 posts; team notified at 2026-03-02 09:00:04 UTC)",
        "2026-03-02 09:00:03 UTC: a2: ALERT y (Slack notification FAILED, 3 posts)"]


def test_the_inconclusive_message_never_cuts_a_reason_or_a_figure_in_half():
    """metrics-outage with a person to ask: the verdict's 9 reasons were 1 916 characters and
    Slack's INCONCLUSIVE message kept the first 600 of them, ending mid-word ("...; go_cache_hit_rate:
    not_enoug") with no word of the rest; a cut can as well fall in a figure."""
    from migration_soak import notify

    reasons = [f"go_{k}: not_enough_data: login_p95: 16 of 18 scheduled readings measured (coverage 89% < 90%, "
               "2 readings not measured)" for k in range(9)]
    text = notify.inconclusive_text(PLAN, reasons)
    shown = text.split("is INCONCLUSIVE: ", 1)[1].split(" — decide in the Airflow UI", 1)[0]
    kept = shown.split("; (")[0].split("; ")
    assert all(r in reasons for r in kept), kept  # whole reasons only
    assert shown.endswith(f"; (and {9 - len(kept)} more reasons: the question in the Airflow UI and the soak view list them all)")
    assert len(shown) <= 700
    assert notify.inconclusive_text(PLAN, reasons[:1]).count(reasons[0]) == 1  # a short list whole, nothing added
