"""People answering the soak's questions in the Airflow UI, played through the real API.

``airflow dags test`` never answers a Human-in-the-loop task itself; a response recorded
by an ``airflow api-server`` sharing the metadata database resumes it. ``Approver``
starts that API server (simple auth manager, everyone admin, loopback only), waits for
the run's pending questions and answers each with ``PATCH .../hitlDetails``, as the
"Required actions" page would. One API server answers every question of a run: the
INCONCLUSIVE ``human_decision`` and the QA ``sign_off``, whichever the run asks.

With ``server`` (an ``AirflowLocal`` that runs the real components, ``demo.run
--runner airflow``) it starts no API server: it asks that one, with its login.

``stop_tree`` stops a child process started in its own session and everything it forked
(``demo.run`` uses it for ``airflow dags test`` too).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    """Whether a live process is still in group ``pgid`` (e.g. an orphaned grandchild whose
    leader exited: it is no longer our descendant, but it kept the group)."""
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            pass
    return False


def stop_tree(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM ``proc``'s process group (it was started with ``start_new_session=True``)
    and every descendant seen now, wait up to ``timeout`` s, then SIGKILL what is left.
    Idempotent; never raises for processes that are already gone."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is None or _group_alive(proc.pid):
            try:  # the group outlives its leader while a member runs; its id is not reused until then
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        alive = []
        for child in family:  # descendants that left the group (a setsid of their own)
            try:
                child.send_signal(sig)
                alive.append(child)
            except psutil.Error:
                pass
        try:
            proc.wait(timeout=timeout if sig == signal.SIGTERM else 10)
        except subprocess.TimeoutExpired:
            continue
        _, still = psutil.wait_procs(alive, timeout=timeout if sig == signal.SIGTERM else 10)
        family = still
        if not still:
            return


class Approver:
    """Answers the questions of any run of ``dag_id`` through a real ``airflow api-server``.

    ``answers``: ``{task_id: (option, params_input or None)}``, e.g.
    ``{"human_decision": ("GO", None), "sign_off": ("Reject", {"comment": "..."})}``; each
    question is answered once, when the run asks it. The older form ``Approver(env, dag_id,
    choice, task_id="human_decision")`` answers one question. With no answer at all the
    API server only serves the UI (``url``) for a person to answer.

    Use as a context manager around the ``airflow dags test`` run. ``answers_given`` holds
    ``{task_id: (run_id, option)}`` as they are recorded, ``answered`` the first one (or
    ``None``), ``error`` the reason if it could not answer.
    """

    def __init__(self, env: dict[str, str], dag_id: str, choice: str | None = None, task_id: str = "human_decision",
                 log_path: Path | None = None, timeout_s: float | None = None,
                 answers: dict[str, tuple[str, dict | None]] | None = None, server=None):
        self.env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
        self.dag_id = dag_id
        self.answers: dict[str, tuple[str, dict | None]] = dict(answers or {})
        if choice is not None:
            self.answers[task_id] = (choice, None)
        self.server = server
        self.port = _free_port() if server is None else None
        self.base = f"http://127.0.0.1:{self.port}" if server is None else server.base.rstrip("/")
        self.url = self.base + "/"
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.answers_given: dict[str, tuple[str, str]] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="approver", daemon=True)

    # Back-compat: the one question's (task_id "human_decision") choice and task id.
    @property
    def choice(self) -> str | None:
        return next(iter(self.answers.values()))[0] if self.answers else None

    @property
    def task_id(self) -> str | None:
        return next(iter(self.answers), None)

    @property
    def answered(self) -> tuple[str, str] | None:
        return next(iter(self.answers_given.values()), None)

    def __enter__(self) -> "Approver":
        if self.server is not None:  # answer through the running API server
            if self.answers:
                self._thread.start()
            return self
        airflow = str(Path(sys.executable).with_name("airflow"))
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        try:
            # Its own session: the API server's workers are stopped with it, and a Ctrl-C
            # in the terminal reaches the demo only, which stops it in order.
            self._proc = subprocess.Popen([airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                                          env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        if self.answers:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop answering and stop the API server (and its workers); idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._proc is not None:
            stop_tree(self._proc)

    def _token(self) -> str:
        deadline = time.monotonic() + 120
        while not self._stop.is_set():
            try:
                r = (self.server.request_token() if self.server is not None
                     else requests.get(f"{self.base}/auth/token", timeout=5))
                if r.ok:
                    return r.json()["access_token"]
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not answer within 120 s")
            self._stop.wait(1)
        raise RuntimeError("stopped")

    def _run(self) -> None:
        try:
            headers = {"Authorization": f"Bearer {self._token()}"}
            deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                r = requests.get(f"{self.base}/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails",
                                 params={"response_received": "false"}, headers=headers, timeout=10)
                r.raise_for_status()
                for detail in r.json().get("hitl_details", []):
                    ti = detail.get("task_instance", {})
                    task_id = ti.get("task_id")
                    if task_id not in self.answers or task_id in self.answers_given:
                        continue
                    option, params_input = self.answers[task_id]
                    run_id = ti["dag_run_id"]
                    url = (f"{self.base}/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/"
                           f"{task_id}/{ti.get('map_index', -1)}/hitlDetails")
                    body: dict = {"chosen_options": [option]}
                    if params_input is not None:
                        body["params_input"] = params_input
                    resp = requests.patch(url, json=body, headers=headers, timeout=10)
                    if not resp.ok:
                        raise RuntimeError(f"PATCH {task_id} answered HTTP {resp.status_code}: {resp.text[:500]}")
                    self.answers_given[task_id] = (run_id, option)
                if len(self.answers_given) == len(self.answers):
                    return
                self._stop.wait(1)
        except Exception as exc:  # reported to the caller, who asserts on it
            if not self._stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
