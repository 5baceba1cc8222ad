"""Airflow's ``airflow_local_settings`` hook for the processes the demo starts
(``demo.airflow_local`` puts this folder on their ``PYTHONPATH``): it imports the DAG's
modules once, in the scheduler, before the LocalExecutor forks its workers.

Why: every task process parses the DAG file again. Cold, that is ~0.35 s of imports
(``migration_soak``, ``pglast`` for the plan's SQL); forked from a parent that holds them,
~0.05 s. At the soak's start ~80 check tasks start within seconds on 2 cores, and each
task around the clock pays it one after another (docs/demo.md, "Where the wall time
goes"). A production deployment can do the same in its own ``airflow_local_settings.py``.
"""

import pglast  # noqa: F401  (the plan's SQL is parsed when the DAG is built: plan.py)

import migration_soak.airflow.builder  # noqa: F401
