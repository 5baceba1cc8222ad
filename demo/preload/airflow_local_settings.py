"""Airflow's ``airflow_local_settings`` hook for the processes the demo starts
(``demo.airflow_local`` puts this folder on their ``PYTHONPATH``, ahead of
``$AIRFLOW_HOME/config``; there is one such module per process, so both of the harness's
uses live here).

1. It imports the DAG's modules once, in the scheduler, before the LocalExecutor forks
   its workers. Every task process parses the DAG file again: cold, ~0.35 s of imports
   (``migration_soak``, ``pglast`` for the plan's SQL); forked from a parent that holds
   them, ~0.1 s. At the soak's start ~80 check tasks start within seconds on 2 cores, and
   each task around the clock pays it one after another (docs/demo.md, "Where the wall
   time goes"). A production deployment can do the same in its own file.
2. ``task_policy`` pins tasks to Celery queues when ``SOAK_PIN_QUEUES`` (JSON: task id ->
   queue) is set: the distributed soak's tests put the backup on worker a and the
   restore on worker b (demo/celery_cluster.py). The dag-processor applies it at parse time.
"""

import json
import os

import pglast  # noqa: F401  (the plan's SQL is parsed when the DAG is built: plan.py)

import migration_soak.airflow.builder  # noqa: F401

_PINS = json.loads(os.environ.get("SOAK_PIN_QUEUES") or "{}")


def task_policy(task):
    if task.task_id in _PINS:
        task.queue = _PINS[task.task_id]
