"""The failure callback speaks once per failed task: not for a try Airflow will retry."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from demo.slack_sink import SlackSink
from tests.conftest import ROOT

PROBE = textwrap.dedent('''
    from datetime import datetime, timedelta

    from airflow.sdk import DAG, task

    from migration_soak import notify

    # The callback is also given as on_retry_callback: the guard, not the wiring, must keep
    # a retried try quiet (the scheduler's heartbeat-timeout path can call either).
    with DAG("callback_probe", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
             default_args={"retries": 1, "retry_delay": timedelta(seconds=0),
                           "on_failure_callback": notify.on_task_failure,
                           "on_retry_callback": notify.on_task_failure}):
        @task
        def always_fails():
            raise RuntimeError("backup target unreachable")

        always_fails()
''')


def test_a_retried_try_sends_nothing_and_the_last_failure_one_message(tmp_path):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "callback_probe.py").write_text(PROBE)
    airflow = str(Path(sys.executable).with_name("airflow"))
    with SlackSink() as sink:
        env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW_CONN_SOAK_SLACK": sink.airflow_connection(),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
        run = subprocess.run([airflow, "dags", "test", "callback_probe"], env=env, capture_output=True, text=True,
                             timeout=300)
        messages = list(sink.messages)
    assert run.returncode != 0, run.stdout[-2000:]  # the run failed, after its retry
    assert len(messages) == 1, messages
    assert "callback_probe.always_fails" in messages[0] and "try 2" in messages[0]
    assert "RuntimeError: backup target unreachable" in messages[0]
