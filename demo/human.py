"""A person answering the soak's question in the Airflow UI, played through the real API.

``airflow dags test`` never answers a Human-in-the-loop task itself; a response recorded
by an ``airflow api-server`` sharing the metadata database resumes it. ``Approver``
starts that API server (simple auth manager, everyone admin, loopback only), waits for
the run's pending question and answers it with ``PATCH .../hitlDetails``, as the
"Required actions" page would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Approver:
    """Answers the ``task_id`` question of any run of ``dag_id`` with ``choice``.

    Use as a context manager around the ``airflow dags test`` run; ``answered`` holds
    ``(run_id, choice)`` once done, ``error`` the reason if it could not answer.
    """

    def __init__(self, env: dict[str, str], dag_id: str, choice: str, task_id: str = "human_decision",
                 log_path: Path | None = None, timeout_s: float = 900):
        self.env = {**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
        self.dag_id, self.choice, self.task_id = dag_id, choice, task_id
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.answered: tuple[str, str] | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Approver":
        out = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        airflow = str(Path(sys.executable).with_name("airflow"))
        self._proc = subprocess.Popen([airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                                      env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def _token(self) -> str:
        deadline = time.monotonic() + 120
        while not self._stop.is_set():
            try:
                r = requests.get(f"{self.base}/auth/token", timeout=5)
                if r.ok:
                    return r.json()["access_token"]
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API server did not answer within 120 s")
            time.sleep(1)
        raise RuntimeError("stopped")

    def _run(self) -> None:
        try:
            headers = {"Authorization": f"Bearer {self._token()}"}
            deadline = time.monotonic() + self.timeout_s
            while not self._stop.is_set() and time.monotonic() < deadline:
                r = requests.get(f"{self.base}/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails",
                                 params={"response_received": "false"}, headers=headers, timeout=10)
                r.raise_for_status()
                for detail in r.json().get("hitl_details", []):
                    ti = detail.get("task_instance", {})
                    if ti.get("task_id") != self.task_id:
                        continue
                    run_id = ti["dag_run_id"]
                    url = (f"{self.base}/api/v2/dags/{self.dag_id}/dagRuns/{run_id}/taskInstances/"
                           f"{self.task_id}/{ti.get('map_index', -1)}/hitlDetails")
                    resp = requests.patch(url, json={"chosen_options": [self.choice]}, headers=headers, timeout=10)
                    resp.raise_for_status()
                    self.answered = (run_id, self.choice)
                    return
                time.sleep(1)
        except Exception as exc:  # reported to the caller, who asserts on it
            self.error = f"{type(exc).__name__}: {exc}"
