"""The demo's command line (``python -m demo.run``): exit codes, what it prints, the
API-server answers, and Ctrl-C / SIGTERM leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from demo import run as demo_run
from demo.human import Approver
from demo.run import SoakOutcome, summary, task_errors

ROOT = Path(__file__).resolve().parents[2]


# --- exit codes and the summary --------------------------------------------------------------

def _event(kind: str, payload: dict) -> dict:
    return {"id": 0, "run_id": "r", "kind": kind, "at": None, "payload": payload}


def _outcome(decision: dict | None, verdict: str | None = "GO", run_state: str = "failed", **events) -> SoakOutcome:
    evs = {}
    if verdict:
        evs["verdict"] = _event("verdict", {"decision": verdict, "reasons": ["because"], "text": verdict})
    for kind, payload in events.items():
        evs[kind] = _event(kind, payload)
    return SoakOutcome(run_id="manual__1", events=evs, all_events=list(evs.values()), decision=decision,
                       run_state=run_state, exit_code=1, log_path=Path("/x/airflow-run.log"))


def _decision(outcome: str, action: str, by: str = "judge", reason: str = "why") -> dict:
    return {"outcome": outcome, "action": action, "by": by, "reason": reason, "text": "t"}


@pytest.mark.parametrize("decision,run_state,code", [
    (_decision("GO", "proceed"), "success", 0),
    (_decision("GO", "proceed"), "failed", 3),  # decided GO, but the report failed: not a GO
    (_decision("NO_GO", "rollback"), "failed", 1),
    (_decision("NO_GO", "keep", "person:admin"), "failed", 1),  # rejected sign-off, migration kept
    (_decision("INCONCLUSIVE", "rollback", "policy:on_inconclusive=rollback"), "failed", 2),
    (_decision("INCONCLUSIVE", "keep", "policy:on_inconclusive=go"), "failed", 2),
    (None, "failed", 3),
    (None, "success", 3),
])
def test_exit_code_for_user_follows_the_final_decision(decision, run_state, code):
    assert _outcome(decision, run_state=run_state).exit_code_for_user == code


@pytest.mark.parametrize(("argv", "said"), [
    (["--scenario", "legacy"], "invalid choice"), (["--no-such-option"], "unrecognized"), (["--time-scale"], "expected"),
    (["--users", "0"], "users must be at least 1, got 0"),
    (["--plan", "nope"], "--plan 'nope': plan: no plan 'nope'"),  # before seeding a stack for it
    # flags the demo would have ignored without a word (the comment of an answer it does not
    # give; an unattended policy for a question it asks): the demo ran and dropped them
    (["--require-sign-off", "--sign-off-comment", "looks good"],
     "--sign-off-comment needs --sign-off approve|reject: without it you answer the sign-off in the UI"),
    (["--human-choice", "GO", "--on-inconclusive", "rollback"],
     "--on-inconclusive rollback: with --human-choice the run asks on INCONCLUSIVE (on_inconclusive ask)"),
])
def test_a_bad_argument_exits_64_not_2_which_means_inconclusive(argv, said, capsys, monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError(f"{argv} started a soak")

    monkeypatch.setattr(demo_run, "run_soak", started)  # nothing may start
    with pytest.raises(SystemExit) as exit_:
        demo_run.main(argv)
    assert exit_.value.code == demo_run.EXIT_USAGE == 64
    err = capsys.readouterr().err
    assert "usage: python -m demo.run" in err and said in err


@pytest.mark.parametrize("entry", ["demo.run", "demo.ui"])
def test_a_second_demo_in_the_same_folder_is_refused_and_leaves_the_first_ones_database(entry, tmp_path, capsys,
                                                                                          monkeypatch):
    # make demo in a second terminal while the first ran: run_soak's fresh start deleted
    # .state/demo/stack, the first demo's PostgreSQL data folder included, under it
    import importlib

    from demo import ui, workdir_lock

    def started(*args, **kwargs):
        raise AssertionError("the second demo started")

    monkeypatch.setattr(demo_run, "run_soak", started)
    monkeypatch.setattr(ui, "Deployment", started)
    pgdata = tmp_path / "stack" / "pgdata"
    pgdata.mkdir(parents=True)
    with workdir_lock.hold(tmp_path):  # the first demo, running
        with pytest.raises(SystemExit) as exit_:
            importlib.import_module(entry).main(["--workdir", str(tmp_path)])
    assert exit_.value.code == (64 if entry == "demo.run" else 2)  # demo.ui: argparse's own
    err = capsys.readouterr().err
    assert f"--workdir {tmp_path}: another demo is running in it (pid {os.getpid()}, started " in err
    assert "give this one its own folder: --workdir" in err
    assert pgdata.is_dir()
    with workdir_lock.hold(tmp_path):  # once the first one ended, the folder is free
        pass


def test_ctrl_c_says_at_once_that_the_demo_is_stopping(capsys):
    # Ctrl-C in make demo: nothing printed for 15-35 s while airflow dags test got its 20 s
    # SIGTERM grace, then "demo: interrupted by SIGINT; ..."
    demo_run.install_signal_handlers()
    try:
        with pytest.raises(demo_run.Interrupted):
            demo_run._on_signal(signal.SIGINT, None)
        demo_run._on_signal(signal.SIGINT, None)  # a second one: noted, said once
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    err = capsys.readouterr().err
    assert err.count("demo: SIGINT received: stopping everything the demo started") == 1


def test_a_rejected_sign_off_prints_no_go_and_the_judges_go():
    reason = "QA rejected the sign-off: demo: rejected on purpose"
    outcome = _outcome(_decision("NO_GO", "rollback", "person:admin", reason), verdict="GO",
                       sign_off={"state": "rejected", "by": "admin", "comment": "demo: rejected on purpose",
                                 "text": "rejected by admin: demo: rejected on purpose"})
    lines = summary(outcome)
    assert lines[0] == f"verdict: NO-GO ({reason})"
    assert "judge's verdict: GO" in lines
    assert "decision: rollback, decided by person:admin" in lines
    assert any(line.startswith("deciding criterion: the QA sign-off (rejected)") for line in lines)
    assert not any(line.startswith("verdict: GO") for line in lines)
    assert lines[-1].startswith("exit: 1 (NO-GO")


def test_a_persons_go_over_an_inconclusive_verdict_is_not_printed_as_the_verdict():
    # make demo SCENARIO=noisy DEMO_ARGS="--human-choice GO": the demo's first line read
    # "verdict: GO (Anonymous chose GO on an INCONCLUSIVE verdict: ...)" where Slack says
    # "decision: GO by Anonymous over an INCONCLUSIVE verdict" and the report "Judge's verdict: INCONCLUSIVE"
    reason = "Anonymous chose GO on an INCONCLUSIVE verdict: go_auth_error_rate: not_met: 4.76% does not meet < 0.1%"
    decision = {**_decision("GO", "proceed", "person:Anonymous", reason), "verdict": "INCONCLUSIVE",
                "overridden_by": "Anonymous"}
    lines = summary(_outcome(decision, verdict="INCONCLUSIVE", run_state="success"))
    assert not any(line.startswith("verdict: GO") for line in lines), lines
    assert lines[0] == f"decision: GO by Anonymous over the judge's INCONCLUSIVE verdict ({reason})"
    clock = " (compressed clock x300: demonstration evidence, not a 24-hour soak)"
    assert summary(_outcome(decision, verdict="INCONCLUSIVE", run_state="success"), clock=clock)[0] == (
        f"decision: GO by Anonymous over the judge's INCONCLUSIVE verdict{clock} ({reason})")
    assert "judge's verdict: INCONCLUSIVE (because)" in lines
    assert lines[-1].startswith("exit: 0 (GO")


def test_a_go_on_a_compressed_clock_says_so_on_the_first_line_with_what_it_did_not_judge():
    # make demo printed "verdict: GO" and "exit: 0 (GO; ...)": the clock and the NO-GO
    # criteria that clock could not judge were only inside the Slack line further down
    unjudged = ("not judged on this compressed clock (time_scale 300: readings too far apart, or over too few "
                "requests, for the window, each within the bound): no_go_auth_error_rate (> 1% sustained for 5 min), "
                "no_go_db_cpu (> 90% sustained for 10 min)")
    outcome = _outcome(_decision("GO", "proceed"), run_state="success")
    outcome.events["verdict"]["payload"]["reasons"] = [
        "all 8 GO criteria met; no NO-GO criterion breached", unjudged, "compared (go_performance_stable): ..."]
    clock = " (compressed clock x300: demonstration evidence, not a 24-hour soak)"
    assert summary(outcome, clock=clock)[0] == f"verdict: GO{clock}: {unjudged}"  # as Slack words it
    assert summary(outcome)[0] == f"verdict: GO: {unjudged}"  # real time: no caveat, the same reasons
    signed = {**_decision("GO", "proceed", "person:qa", f"all 8 GO criteria met; {unjudged}; QA sign-off approved"),
              "verdict": "GO"}
    lines = summary(_outcome(signed, run_state="success"), clock=clock)  # the judge's GO, then QA's approval
    assert lines[0] == f"verdict: GO{clock}: {signed['reason']}"  # named once, not "GO by qa over ..."


def test_a_go_whose_guard_missed_readings_says_so_on_the_first_line():
    # the healthy make demo (airflow dags test: the guard starts after the hour-0 tasks) ended
    # GO with "the guard missed 1 of its 96 readings due (...)" among its reasons, as Slack
    # says, yet its first line printed only the clock and the criteria it did not judge:
    # "verdict: GO (compressed clock x300 ...): not judged ...", as if every minute was watched
    missed = ("the guard missed 1 of its 96 readings due (15 soak-min, 1.0 %; longest gap 15 min: no reading "
              "between soak 0:00 and 0:30), each of its 8 checks: within the 90% coverage bar, but nothing the "
              "guard reads was watched then")
    part = "read in part: met on 3 of 4 passive readings (go_backups)"
    outcome = _outcome(_decision("GO", "proceed"), run_state="success")
    outcome.events["verdict"]["payload"]["reasons"] = [
        "all 8 GO criteria met; no NO-GO criterion breached", part, missed, "compared (go_performance_stable): ..."]
    clock = " (compressed clock x300: demonstration evidence, not a 24-hour soak)"
    assert summary(outcome, clock=clock)[0] == f"verdict: GO{clock}: {part}; {missed}"


def test_a_slack_message_is_printed_whole_or_cut_at_a_word_and_marked():
    go = (":large_green_circle: [staging] soak verdict: GO (compressed clock x300: demonstration evidence, not a "
          "24-hour soak): all 8 GO criteria met; no NO-GO criterion breached; not judged on this demonstration clock "
          "(time_scale 300: readings too far apart for the window, each within the bound): no_go_auth_error_rate (> 1% "
          "sustained for 5 min), no_go_db_cpu (> 90% sustained for 10 min); report soak-manual__1.md")
    outcome = _outcome(_decision("GO", "proceed"), run_state="success")
    outcome.slack = [go, "word " * 200]
    lines = [line for line in summary(outcome) if line.startswith("slack: ")]
    assert lines[0] == f"slack: {go}"  # 400 characters: the GO's caveats are never cut off
    assert lines[1].endswith("word ... (401 more characters: see the report)") and len(lines[1]) < 650


def test_the_rehearsal_line_is_printed_passed_or_failed_with_its_step():
    text = "rollback rehearsed: 200000 values restored, 0 mismatches, 8.4 s (restore 1.7 s, ...)"
    lines = summary(_outcome(_decision("GO", "proceed"), rehearsal={"status": "passed", "text": text}))
    assert f"rehearsal: {text}" in lines
    failed = summary(_outcome(None, verdict=None, rehearsal_failed={"step": "rollback", "text": "rollback: BOOLEN"}))
    assert "rehearsal: failed at rollback: rollback: BOOLEN" in failed


def test_the_restore_line_counts_rows_of_the_plans_table_as_the_readme_quotes_it():
    restore = {"table": "public.users", "values_restored": 200000, "rows_matched": 100000, "rows_at_backup": 100000,
               "mismatches": 0}
    lines = summary(_outcome(_decision("NO_GO", "rollback"), verdict="NO_GO", restore=restore))
    quoted = ("restored: 200000 values in 100000 rows of users; 100000/100000 rows of users present at backup time "
              "match, 0 mismatches")
    assert quoted in lines
    assert quoted in (ROOT / "README.md").read_text(encoding="utf-8")
    other = {**restore, "table": "public.accounts", "rows_matched": 3, "rows_at_backup": 4, "values_restored": 3}
    assert ("restored: 3 values in 3 rows of accounts; 3/4 rows of accounts present at backup time match, "
            "0 mismatches") in summary(_outcome(_decision("NO_GO", "rollback"), verdict="NO_GO", restore=other))


def test_a_go_whose_run_failed_is_not_printed_as_go():
    outcome = _outcome(_decision("GO", "proceed"), run_state="failed")
    outcome.task_errors = [("report", "BackupError: disk full")]
    outcome.task_states = {"report": "failed", "conclude": "failed"}
    lines = summary(outcome)
    assert not any(line.startswith("verdict: GO") for line in lines)
    assert "error: task report failed: BackupError: disk full" in lines
    assert "failed tasks: report, conclude" in lines
    assert lines[-1].startswith("exit: 3")


def test_no_decision_prints_the_failing_tasks_error_not_the_judges_verdict():
    outcome = _outcome(None, verdict="GO")
    outcome.task_errors = [("decide", "KeyError: 'x'")]
    lines = summary(outcome)
    assert lines[0].startswith("verdict: none: the run stopped before its final decision (the judge's verdict was GO")
    assert "error: task decide failed: KeyError: 'x'" in lines


PLAN_ERROR_LOG = """\
2026-01-01T00:00:00.000000Z [error    ] Failed to import: /w/dags/migration_soak_plan_errors.py [x]
Traceback (most recent call last):
  File "/w/dags/migration_soak_plan_errors.py", line 35, in <module>
migration_soak.exceptions.PlanError: 1 plan file(s) in /p do not load:
default.yaml (DAG migration_soak): /p/default.yaml: report_locaton: Extra inputs are not permitted (got 'reports')
2026-01-01T00:00:01.000000Z [info     ] [DAG TEST] starting task_id=plan_error map_index=-1 [airflow.sdk.definitions.dag]
2026-01-01T00:00:02.000000Z [error    ] Task failed with exception     [task] loc=task_runner.py:1639
Traceback (most recent call last):
  File "/w/plugins/migration_soak/airflow/tasks.py", line 101, in plan_error
    raise AirflowFailException(f"the plan is invalid, nothing was done: {error}")
airflow.sdk.exceptions.AirflowFailException: the plan is invalid, nothing was done: /p/default.yaml: report_locaton: Extra inputs are not permitted (got 'reports')
2026-01-01T00:00:03.000000Z [info     ] [DAG TEST] end task task_id=plan_error map_index=-1 [airflow.sdk.definitions.dag]
"""


def test_task_errors_names_the_failed_task_and_its_message():
    assert task_errors(PLAN_ERROR_LOG) == [
        ("plan_error", "AirflowFailException: the plan is invalid, nothing was done: /p/default.yaml: "
                       "report_locaton: Extra inputs are not permitted (got 'reports')")]
    # no task ran: the CLI's own error (a DAG that does not exist, a refused trigger form)
    text = ("2026-01-01T00:00:00.000000Z [info ] x\nTraceback (most recent call last):\n  File \"a\", line 1\n"
            "airflow.sdk.exceptions.AirflowException: Dag 'migration_soak__nope' could not be found\n")
    assert task_errors(text) == [(None, "AirflowException: Dag 'migration_soak__nope' could not be found")]


def test_dag_id_matches_the_builder():
    from migration_soak.airflow.builder import dag_id_for

    for plan in ("default", "canary", "restart"):
        assert demo_run.dag_id_for(plan) == dag_id_for(plan)


@pytest.mark.parametrize("value", ["0", "-1", "100001", "nan", "abc", "0.5"])
def test_time_scale_outside_the_demos_range_is_refused_naming_that_range(value, capsys):
    """The demo runs at 1 or faster (its --help says [1, 100000]), yet 0 was refused with the
    DAG's range, "(0, 100000]", which 0.5 is in: the demo then refused 0.5 too."""
    with pytest.raises(SystemExit) as exc:
        demo_run.main(["--time-scale", value])
    assert exc.value.code == demo_run.EXIT_USAGE
    err = capsys.readouterr().err
    assert "time_scale must be a number in [1, 100000] for the demo" in err
    assert "(0, 100000]" not in err


@pytest.mark.parametrize("args, said", [(["--time-scale", "1e-9"], "got 1e-09, which stretches the plan's soak beyond "
                                                                   "real time"),
                                        (["--time-scale", "0.5"], "got 0.5, which stretches the plan's soak beyond "
                                                                  "real time"),
                                        (["--parallelism", "0"], "parallelism must be at least 1, got 0"),
                                        (["--parallelism", "-3"], "parallelism must be at least 1, got -3")])
def test_a_demo_that_could_not_run_is_refused_before_anything_starts(args, said, capsys):
    """``--time-scale 1e-9`` passed the demo's check and started the whole stack for a run
    ``load`` then refused (exit 3); ``--parallelism 0`` or ``-3`` passed without a word.
    A stretched value was said to stretch "the soak past 24 h" whatever --plan's soak (the
    browser plan's is 45 minutes)."""
    with pytest.raises(SystemExit) as exc:
        demo_run.main(args)
    assert exc.value.code == demo_run.EXIT_USAGE
    err = capsys.readouterr().err
    assert said in err
    assert "past 24 h" not in err


def test_sign_off_value_is_checked():
    with pytest.raises(ValueError, match="sign_off"):
        demo_run.run_soak(Path("/nonexistent"), sign_off="maybe")


def test_runner_is_checked(capsys):
    with pytest.raises(ValueError, match="runner"):
        demo_run.run_soak(Path("/nonexistent"), runner="docker")
    with pytest.raises(SystemExit) as exc:
        demo_run.main(["--runner", "docker"])
    assert exc.value.code == demo_run.EXIT_USAGE
    assert "invalid choice: 'docker'" in capsys.readouterr().err


# --- the real components' runner: what it prints, the task logs it reads -------------------------

def test_the_real_runner_prints_its_soak_wall_time_and_task_logs():
    outcome = _outcome(_decision("GO", "proceed"), run_state="success")
    outcome.runner, outcome.soak_seconds, outcome.log_path = "airflow", 251.4, Path("/x/airflow/logs")
    lines = summary(outcome)
    assert ("soak wall time: 251 s (real components: scheduler, triggerer, LocalExecutor; trigger to end of run); "
            "task logs: /x/airflow/logs") in lines
    assert lines[0] == "verdict: GO"
    assert lines[-1].startswith("exit: 0 (GO")


def test_a_refused_trigger_is_the_real_runners_error():
    outcome = SoakOutcome(run_id=None, runner="airflow", exit_code=1, log_path=Path("/x/logs"),
                          task_errors=[(None, "the trigger was refused: HTTP 400: time_scale must be > 0")])
    lines = summary(outcome)
    assert "error: the trigger was refused: HTTP 400: time_scale must be > 0" in lines
    assert lines[-1] == "exit: 3 (no final decision; run not created, state unknown)"
    outcome.task_errors = []
    outcome.run_state = "failed"
    assert "error: the run ended failed; see the task logs in /x/logs" in summary(outcome)


def _log_line(event: str, level: str = "info", **more) -> str:
    return json.dumps({"timestamp": "2026-12-03T12:29:32.373544Z", "level": level, "event": event, **more})


def _failure(exc_type: str, exc_value: str, cause: tuple[str, str] | None = None) -> str:
    detail = [{"exc_type": exc_type, "exc_value": exc_value, "exc_notes": [], "is_cause": False, "frames": []}]
    if cause:
        detail.append({"exc_type": cause[0], "exc_value": cause[1], "exc_notes": [], "is_cause": True, "frames": []})
    return _log_line("Task failed with exception", "error", error_detail=detail, task_id="t", logger="task")


def test_logged_task_errors_reads_each_failed_tasks_last_try(tmp_path):
    run = tmp_path / "dag_id=migration_soak" / "run_id=manual__1"
    (run / "task_id=report").mkdir(parents=True)
    (run / "task_id=report" / "attempt=1.log").write_text(_failure("OSError", "first try"))
    (run / "task_id=report" / "attempt=2.log").write_text("\n".join([
        _log_line("writing the report"), "not json", _failure("ReportError", "disk full", ("OSError", "ENOSPC"))]))
    (run / "task_id=conclude").mkdir()
    (run / "task_id=conclude" / "attempt=1.log").write_text(
        _failure("airflow.sdk.exceptions.AirflowFailException", "GO decided, the report failed"))
    (run / "task_id=backup" / "map_index=0").mkdir(parents=True)
    (run / "task_id=backup" / "map_index=0" / "attempt=1.log").write_text(_failure("BackupError", "mapped"))
    tis = [
        {"task_id": "conclude", "map_index": -1, "state": "failed", "try_number": 1, "end_date": "2026-01-01T00:00:09Z"},
        {"task_id": "report", "map_index": -1, "state": "failed", "try_number": 2, "end_date": "2026-01-01T00:00:05Z"},
        {"task_id": "backup", "map_index": 0, "state": "failed", "try_number": 1, "end_date": "2026-01-01T00:00:01Z"},
        {"task_id": "judge_soak", "map_index": -1, "state": "success", "try_number": 1, "end_date": "x"},
        {"task_id": "rollback.health", "map_index": -1, "state": "failed", "try_number": 1, "end_date": None},  # no log
    ]
    assert demo_run.logged_task_errors(tmp_path, "migration_soak", "manual__1", tis) == [
        ("backup", "BackupError: mapped"),
        ("report", "ReportError: disk full"),
        ("conclude", "AirflowFailException: GO decided, the report failed"),
    ]


def test_plan_phases_reads_the_plan_and_falls_back_to_the_default_plans(tmp_path):
    assert demo_run.plan_phases("default") == [("intensive", 0, 2), ("regular", 2, 8), ("passive", 8, 24)]
    (tmp_path / "broken.yaml").write_text("name: [")
    assert demo_run.plan_phases("broken", tmp_path) == demo_run.plan_phases("default")


# --- the Approver: one API server answers both questions of a run ---------------------------------

class _FakeApi:
    """The three calls the Approver makes, as the api-server answers them."""

    def __init__(self, pending: list[str]):
        self.pending = list(pending)  # task ids asked, in order; one is shown at a time
        self.patches: list[tuple[str, dict]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.startswith("/auth/token"):
                    return self._json(200, {"access_token": "t"})
                asked = api.pending[:1]
                return self._json(200, {"hitl_details": [
                    {"task_instance": {"task_id": tid, "dag_run_id": "manual__1", "map_index": -1}} for tid in asked]})

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                task_id = self.path.split("/taskInstances/")[1].split("/")[0]
                api.patches.append((task_id, body))
                api.pending.remove(task_id)
                return self._json(200, {})

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_one_approver_answers_human_decision_then_sign_off(monkeypatch):
    api = _FakeApi(["human_decision", "sign_off"])
    approver = Approver({}, "migration_soak", answers={
        "human_decision": ("GO", None), "sign_off": ("Reject", {"comment": "demo: rejected on purpose"})})
    approver.base = f"http://127.0.0.1:{api.server.server_address[1]}"
    approver._thread.start()  # the API server itself is not started: the fake answers
    approver._thread.join(timeout=30)
    api.server.shutdown()
    assert approver.error is None
    assert api.patches == [("human_decision", {"chosen_options": ["GO"]}),
                           ("sign_off", {"chosen_options": ["Reject"],
                                         "params_input": {"comment": "demo: rejected on purpose"}})]
    assert approver.answers_given == {"human_decision": ("manual__1", "GO"), "sign_off": ("manual__1", "Reject")}
    assert approver.answered == ("manual__1", "GO")


def test_the_approver_answers_through_a_running_api_server_with_its_login():
    import requests

    api = _FakeApi(["sign_off"])
    base = f"http://127.0.0.1:{api.server.server_address[1]}"

    class Server:  # what the Approver needs of demo.airflow_local.AirflowLocal
        def __init__(self):
            self.base, self.logins = base + "/", 0

        def request_token(self):
            self.logins += 1
            return requests.get(f"{base}/auth/token", timeout=5)

    server = Server()
    approver = Approver({}, "migration_soak", answers={"sign_off": ("Approve", {"comment": "ok"})}, server=server)
    with approver:
        assert approver._proc is None and approver.base == base  # no API server of its own
        approver._thread.join(timeout=30)
    api.server.shutdown()
    assert approver.error is None and server.logins == 1
    assert api.patches == [("sign_off", {"chosen_options": ["Approve"], "params_input": {"comment": "ok"}})]


def test_the_old_one_question_form_still_works():
    approver = Approver({}, "migration_soak", "Roll back")
    assert approver.answers == {"human_decision": ("Roll back", None)}
    assert (approver.choice, approver.task_id) == ("Roll back", "human_decision")


# --- SIGTERM: every child stopped, one line, no traceback ----------------------------------------------

def _store_has_hour0(workdir: Path) -> bool:
    import psycopg2

    try:
        info = json.loads((workdir / "stack" / "stack.json").read_text())
    except (OSError, ValueError):
        return False
    db = info["store"]
    try:
        conn = psycopg2.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                                dbname=db["database"], connect_timeout=5)
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM soak_events WHERE kind = 'hour0' LIMIT 1")
            return cur.fetchone() is not None
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


#: What must run when the demo is stopped, per runner: (what, a piece of its command line).
RUNNING = {
    # --sign-off: the dags-test demo also starts an api-server (to answer the sign-off), which must stop too
    "dags-test": [("airflow dags test", (" dags test ",)), ("the api-server", ("api-server", "api_server"))],
    "airflow": [("the api-server", ("api-server", "api_server")), ("the scheduler", ("airflow scheduler",)),
                ("the dag-processor", ("airflow dag-processor",)), ("the triggerer", ("airflow triggerer",))],
}


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize("runner", sorted(RUNNING))
def test_sigterm_stops_every_child_and_prints_one_line(tmp_path, runner):
    workdir = tmp_path / "demo"
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "demo.run", "--users", "2000", "--workdir", str(workdir),
                                 "--sign-off", "reject", "--runner", runner],
                                cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
    family: list[psutil.Process] = []
    postmaster: psutil.Process | None = None
    try:
        deadline = time.monotonic() + 600
        while not _store_has_hour0(workdir):  # the soak is under way: its clock started
            assert proc.poll() is None, f"the demo ended first:\n{out_path.read_text()}\n{err_path.read_text()}"
            assert time.monotonic() < deadline, "no hour 0 within 600 s"
            time.sleep(2)
        family = psutil.Process(proc.pid).children(recursive=True)
        commands = [" ".join(p.cmdline()) for p in family if _alive(p)]
        for what, pieces in RUNNING[runner]:
            assert any(piece in c for piece in pieces for c in commands), (what, commands)
        postmaster = psutil.Process(int((workdir / "stack" / "pgdata" / "postmaster.pid").read_text().split()[0]))
        printed_before = out_path.read_text()

        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM

        after = out_path.read_text()[len(printed_before):].splitlines()
        # one line; a progress line (every 10 s) may have been written just before the signal landed
        assert after and after[-1].startswith("demo: interrupted by SIGTERM"), after
        assert all(line.startswith("demo: soak: ") for line in after[:-1]) and len(after) <= 2, after
        assert "Traceback" not in err_path.read_text(), err_path.read_text()
        time.sleep(1)
        left = [p for p in family if _alive(p)]
        assert not left, [(p.pid, p.cmdline()) for p in left]
        assert not _alive(postmaster), "PostgreSQL still runs"
        strays = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if str(workdir) in " ".join(p.info["cmdline"] or []) and _alive(p):
                    strays.append((p.pid, p.info["cmdline"]))
            except psutil.Error:
                pass
        assert not strays, strays
    finally:  # a failed test must not leave its stack behind either
        if proc.poll() is None:
            family = family or psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
            proc.wait()
        pid_file = workdir / "stack" / "pgdata" / "postmaster.pid"
        if postmaster is None and pid_file.exists():
            try:
                postmaster = psutil.Process(int(pid_file.read_text().split()[0]))
            except (psutil.Error, ValueError, IndexError):
                pass
        for p in family + ([postmaster] if postmaster else []):
            try:
                p.kill()
            except psutil.Error:
                pass


def test_the_local_components_import_the_dags_modules_before_they_fork_tasks(tmp_path):
    """Every Airflow process ``AirflowLocal`` starts runs ``demo/preload``'s
    ``airflow_local_settings`` while Airflow initialises, so the LocalExecutor's task
    processes, forked from the scheduler, find the DAG's modules already imported."""
    from demo.airflow_local import AirflowLocal

    env = AirflowLocal(tmp_path / "airflow").env
    probe = ("import sys, airflow; print(sorted(m for m in ('migration_soak.airflow.builder', 'pglast') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['migration_soak.airflow.builder', 'pglast']"
    # without the preload folder on the path, Airflow imports neither
    env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if not p.endswith("preload"))
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stderr[-2000:]


def test_the_harness_settings_pin_tasks_to_queues_only_when_asked(tmp_path):
    """The same module carries the distributed soak's queue pins (``SOAK_PIN_QUEUES``): a
    DAG parsed by Airflow with them has the pinned tasks on those queues; without them,
    every task keeps the default queue. (Celery's harness once wrote its own module of
    that name, which this folder, first on the path, shadowed: the pins were lost.)"""
    from demo.airflow_local import AirflowLocal

    env = AirflowLocal(tmp_path / "airflow").env
    probe = ("from airflow.dag_processing.dagbag import DagBag; import os; "
             "dag = DagBag(os.environ['AIRFLOW__CORE__DAGS_FOLDER'] + '/migration_soak.py').dags['migration_soak']; "
             "print(dag.get_task('backup').queue, dag.get_task('rollback.restore').queue, dag.get_task('migrate').queue)")
    pinned = {**env, "SOAK_PIN_QUEUES": json.dumps({"backup": "worker_a", "rollback.restore": "worker_b"})}
    out = subprocess.run([sys.executable, "-c", probe], env=pinned, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "worker_a worker_b default", out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "default default default", out.stderr[-2000:]


def test_a_rollback_prints_what_was_read_again_after_it():
    """sync-drift demo: the terminal said "rollback: completed" and "/auth/login after rollback:
    HTTP 200", nothing of the 5 users without authorizerId still there."""
    text = ("post-rollback health ok; read again after the rollback: `users_without_authorizer_id` 5, still meets "
            "the NO-GO > 0 (the rollback gave back the dropped columns, not this)")
    outcome = _outcome(_decision("NO_GO", "rollback"), verdict="NO_GO",
                       restore={"values_restored": 10, "rows_matched": 5, "rows_at_backup": 5, "mismatches": 0},
                       health={"ok": True, "text": text})
    assert f"post-rollback health: {text.removeprefix('post-rollback health ')}" in summary(outcome)
