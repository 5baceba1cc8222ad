"""The Airflow UI and the soak view in a real browser (issue 12, item 4).

Debian's Chromium driven by Playwright against ``make airflow``'s deployment (the
fixtures in ``conftest.py``): log in through Airflow's form, open ``migration_soak``,
use its trigger form (a bad ``time_scale`` is refused), see its grid list the named check
tasks, watch the soak view of a live run update by itself, answer an INCONCLUSIVE
question and both sign-offs in *Required actions* by clicking, and check that the soak
view's endpoints refuse a request without an Airflow login. The tests run in file order
on one deployment: the three small runs soak while the first tests run.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import SMALL_RUNS, shot

pytestmark = pytest.mark.e2e

APPROVE_COMMENT = "manual testing passed"
REJECT_COMMENT = "password reset fails on the iOS app"


def _run_url(soak, name: str) -> str:
    dag_id, run_id = soak.run_of(name)
    return f"{soak.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def _view_url(soak, name: str) -> str:
    dag_id, run_id = soak.run_of(name)
    return f"{soak.url}/soak/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def _state_json(soak, name: str) -> dict:
    r = requests.get(_view_url(soak, name) + "/state.json", headers={"Authorization": f"Bearer {soak.af._token}"},
                     timeout=30)
    r.raise_for_status()
    return r.json()


def _expand_task_groups(page, name: str) -> None:
    """Click the grid's "Expand all task groups". The grid renders once the run's task
    instances load: over 30 s once in CI on 2 loaded cores, and once not within 90 s (the
    CI run of 33a0993), so a page still without it after 60 s is shot (``<name>-slow``, to
    see why) and loaded again once."""
    button = page.get_by_role("button", name="Expand all task groups")
    try:
        button.click(timeout=60_000)
        return
    except PlaywrightTimeoutError:
        shot(page, f"{name}-slow")
    page.reload()
    button.click(timeout=90_000)


def test_the_soak_view_refuses_requests_without_an_airflow_login(soak):
    urls = [f"{soak.url}/soak/", _view_url(soak, "nogo"), _view_url(soak, "nogo") + "/state.json",
            _view_url(soak, "nogo") + "/charts/gateway_health.png?v=1", _view_url(soak, "nogo") + "/report/"]
    for url in urls:
        assert requests.get(url, timeout=30).status_code == 401, url
        bad = requests.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=30)
        assert bad.status_code == 403, (url, bad.status_code)
    ok = requests.get(urls[1], headers={"Authorization": f"Bearer {soak.af._token}"}, timeout=30)
    assert ok.status_code == 200 and "Soak view" in ok.text


def test_log_in_through_airflows_form(page, soak):
    page.goto(soak.url + "/")
    page.get_by_role("link", name="Dags").first.wait_for()
    assert "/auth/login" not in page.url


def test_trigger_form_refuses_a_bad_time_scale_then_starts_migration_soak(page, soak):
    def runs() -> set[str]:
        return {r["dag_run_id"] for r in soak.af.api("GET", "/dags/migration_soak/dagRuns").json()["dag_runs"]}

    before = runs()
    page.goto(f"{soak.url}/dags/migration_soak")
    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    time_scale = dialog.get_by_role("spinbutton", name="time_scale")
    trigger = dialog.get_by_role("button", name="Trigger")
    time_scale.fill("300")
    shot(page, "02-trigger-form")
    # 0 is outside the Param's schema (exclusiveMinimum 0): the form shows why, no run exists
    time_scale.fill("0")
    trigger.click()
    why = dialog.get_by_text(re.compile(r"time_scale.*0 is less than or equal to the minimum of 0", re.S)).first
    why.wait_for(timeout=30_000)
    why.scroll_into_view_if_needed()
    shot(page, "02-trigger-form-refused")
    assert runs() == before, "a run was created with time_scale 0"
    # 100001 is beyond its maximum (100000): left as typed when the field loses focus (a
    # schema's own maximum is clamped to there: 100001 ran at 100000, unsaid) and refused
    time_scale.fill("100001")
    time_scale.blur()
    assert time_scale.input_value().replace(",", "") == "100001", time_scale.input_value()
    trigger.dispatch_event("click")  # the "Failed to Trigger Dag" toast still covers the button
    dialog.get_by_text(re.compile(r"time_scale.*100001 is greater than the maximum of 100000", re.S)).first.wait_for(
        timeout=30_000)
    assert runs() == before, "a run was created with time_scale 100001"
    time_scale.fill("300")
    trigger.dispatch_event("click")  # the "Failed to Trigger Dag" toast still covers the button
    run_id = soak.wait("the run the form triggered", lambda: runs() - before, timeout=30)
    run_id = next(iter(run_id))
    try:
        run = soak.af.run("migration_soak", run_id)
        assert run["conf"]["time_scale"] == 300 and run["conf"]["plan"] == "default", run["conf"]
        page.goto(f"{soak.url}/dags/migration_soak/runs/{quote(run_id, safe='')}")
        _expand_task_groups(page, "02-grid-migration_soak")
        for task in ("login_p95", "auth_error_rate", "users_without_authorizer_id"):
            page.get_by_role("link", name=task, exact=True).first.wait_for(timeout=30_000)
        assert page.locator("a[href$='/tasks/intensive.login_p95']").count() >= 1
        shot(page, "02-grid-migration_soak")
    finally:  # a 24 h soak of the default plan is not what this test is for
        _end_run(soak, "migration_soak", run_id)


def _end_run(soak, dag_id: str, run_id: str, tries: int = 5) -> None:
    """Mark the run failed. Airflow's PATCH can answer 500 when its UPDATE of dag_run meets
    the scheduler's in a deadlock of the metadata database (seen in CI: "deadlock
    detected" in the server log); it is safe to ask again."""
    for attempt in range(tries):
        try:
            soak.af.api("PATCH", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}", json={"state": "failed"})
            return
        except requests.HTTPError as exc:
            if exc.response is None or exc.response.status_code < 500 or attempt == tries - 1:
                raise
            time.sleep(1)


def test_the_soak_view_updates_by_itself_while_the_run_soaks(page, soak):
    page.goto(_run_url(soak, "reject") + "/plugin/soak-run")
    frame = page.frame_locator("iframe")
    clock = frame.locator("#clock")
    clock.get_by_text(re.compile(r"soak \d\d:\d\d of")).wait_for(timeout=120_000)
    readings = frame.locator("[data-readings]")
    first = int(readings.get_attribute("data-readings"))
    # no reload: the page's own refresh brings the next tick's readings and redraws the charts
    began = time.monotonic()
    while int(readings.get_attribute("data-readings")) <= first:
        assert time.monotonic() - began < 60, "the soak view did not update within 60 s"
        page.wait_for_timeout(1000)
    rows = frame.locator("#criteria tr[data-criterion]")
    assert rows.count() == 3
    assert frame.locator("#criteria tr[data-criterion='no_go_users_without_authorizer_id']").get_attribute(
        "data-outcome") == "clear"
    frame.locator("#charts img").first.wait_for()
    page.wait_for_timeout(1500)  # let the charts paint
    shot(page, "04-soak-view-live")
    # the grid of the same run, mid-soak: named check tasks inside their phase
    page.goto(_run_url(soak, "reject"))
    _expand_task_groups(page, "03-grid-mid-soak")
    page.get_by_role("link", name="users_without_authorizer_id").first.wait_for(timeout=90_000)
    page.wait_for_timeout(500)
    shot(page, "03-grid-mid-soak")


def test_the_soak_view_shows_the_breached_criterion_and_its_chart(page, soak):
    soak.wait("the nogo run to end", lambda: soak.af.run(*soak.run_of("nogo"))["state"] in ("success", "failed"))
    page.goto(_run_url(soak, "nogo") + "/plugin/soak-run")
    frame = page.frame_locator("iframe")
    row = frame.locator("#criteria tr[data-criterion='no_go_users_without_authorizer_id']")
    row.wait_for()
    assert row.get_attribute("data-outcome") == "breached"
    assert "1 at intensive tick 1" in row.inner_text()
    chart = frame.locator(".chart[data-check='users_without_authorizer_id']")
    assert chart.locator(".badge").inner_text() == "breached"
    assert frame.locator("#decision").get_by_text("rollback").count() == 1
    chart.locator("img").wait_for()
    frame.locator("#criteria-head").evaluate("h => h.scrollIntoView()")
    page.wait_for_timeout(1500)
    shot(page, "05-soak-view-breached")
    state = _state_json(soak, "nogo")
    assert state["judge_now"] == state["recorded_verdict"] == "NO_GO", state  # the view and the verdict agree
    assert state["decision"]["action"] == "rollback"
    # the post-mortem and the report open from the view
    page.goto(_view_url(soak, "nogo"))
    page.locator("#postmortem-link").click()
    page.get_by_role("heading", name=re.compile("Staging rollback")).wait_for()
    page.go_back()
    page.locator("#report-link").click()
    page.get_by_text("soak-browser").first.wait_for()


def _answer_in_required_actions(page, soak, name: str, task_id: str, option: str, comment: str | None,
                                screenshot: str | None = None) -> None:
    """Open the question from the *Required actions* list and click ``option``."""
    dag_id, run_id = soak.run_of(name)
    soak.wait(f"{name}: {task_id} asking", lambda: soak.pending_question(name, task_id), timeout=180)
    page.goto(f"{soak.url}/required_actions")
    page.locator(f"a[href*='/runs/{run_id}/tasks/{task_id}/required_actions']").first.click()
    button = page.get_by_role("button", name=option, exact=True)
    button.wait_for()
    if comment is not None:
        page.get_by_role("textbox").fill(comment)
    if screenshot:
        shot(page, screenshot)
    assert button.is_enabled()
    button.click()
    page.get_by_text("Response received").wait_for(timeout=30_000)
    if screenshot:
        shot(page, screenshot + "-answered")


def test_reject_the_sign_off_by_clicking(page, soak):
    _answer_in_required_actions(page, soak, "reject", "sign_off", "Reject", REJECT_COMMENT,
                                screenshot="07-sign-off-reject")


def test_answer_the_inconclusive_question_by_clicking_go_and_the_run_goes_on(page, soak):
    _answer_in_required_actions(page, soak, "ask", "human_decision", "GO", None, screenshot="06-required-action")
    # the run goes on: the sign-off question comes next (require_sign_off)
    states = soak.wait("human_decision to succeed and the sign-off to be asked", lambda: (
        s if (s := soak.task_states("ask")).get("human_decision") == "success"
        and s.get("sign_off") in ("deferred", "awaiting_input", "running") else None), timeout=90)
    assert states["judge_soak"] == "success"
    verdict = soak.store.events(soak.runs["ask"], "verdict")
    assert [v["payload"]["decision"] for v in verdict] == ["INCONCLUSIVE"]


def test_approve_the_sign_off_by_clicking(page, soak):
    _answer_in_required_actions(page, soak, "ask", "sign_off", "Approve", APPROVE_COMMENT,
                                screenshot="08-sign-off-approve")


def _ended(soak, name: str) -> dict:
    return soak.wait(f"the {name} run to end", lambda: (
        r if (r := soak.af.run(*soak.run_of(name)))["state"] in ("success", "failed") else None), timeout=150)


def test_the_runs_end_as_people_decided(page, soak):
    # rejected sign-off: NO-GO, rolled back, the run failed
    assert _ended(soak, "reject")["state"] == "failed", soak.task_states("reject")
    decision = soak.store.events(soak.runs["reject"], "decision")[-1]["payload"]
    assert (decision["outcome"], decision["action"]) == ("NO_GO", "rollback"), decision
    sign_off = soak.store.events(soak.runs["reject"], "sign_off")[-1]["payload"]
    assert sign_off["state"] == "rejected" and sign_off["comment"] == REJECT_COMMENT and sign_off["by"], sign_off
    assert soak.store.events(soak.runs["reject"], "rollback_completed")
    # INCONCLUSIVE, a person chose GO, QA approved: GO, proceed, the run succeeded
    assert _ended(soak, "ask")["state"] == "success", soak.task_states("ask")
    decision = soak.store.events(soak.runs["ask"], "decision")[-1]["payload"]
    assert (decision["outcome"], decision["action"]) == ("GO", "proceed"), decision
    sign_off = soak.store.events(soak.runs["ask"], "sign_off")[-1]["payload"]
    assert sign_off["state"] == "approved" and sign_off["comment"] == APPROVE_COMMENT, sign_off
    page.goto(_run_url(soak, "ask") + "/plugin/soak-run")
    frame = page.frame_locator("iframe")
    frame.locator("#decision").get_by_text("proceed").wait_for()
    for kind in ("human_decision", "sign_off", "decision", "report"):
        assert frame.locator(f"#events tr[data-kind='{kind}']").count() == 1, kind
    shot(page, "09-soak-view-go")
    assert {r.name for r in SMALL_RUNS} == set(soak.runs)
