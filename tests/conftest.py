"""Shared fixtures: one real embedded PostgreSQL server per test session."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its configuration at first import: point it at a project-local home
# before anything imports it, so tests never touch ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".state" / "test-airflow"))
if os.environ.get("PYTEST_XDIST_WORKER"):  # one home per pytest-xdist worker: its metadata DB is SQLite
    os.environ["AIRFLOW_HOME"] += "-" + os.environ["PYTEST_XDIST_WORKER"]  # the controller's home, inherited
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("XDG_RUNTIME_DIR", str(ROOT / ".state" / "runtime"))

import pytest  # noqa: E402

from demo import postgres  # noqa: E402


#: Test files by wall time, longest first (CI's --durations): pytest-xdist (``--dist loadfile
#: --no-loadscope-reorder``) hands whole files to its two workers in collection order, so the
#: longest soaks start at once and the short files fill the other worker around them.
LONGEST_FIRST = (
    "tests/e2e/test_soak.py",
    "tests/e2e/test_tail.py",
    "tests/faults/test_scheduler_restart.py",
    "tests/demo/test_run_cli.py",
    "tests/browser/test_ui.py",
    "tests/e2e/test_rehearsal.py",
)


def pytest_collection_modifyitems(config, items):
    """Put the files of ``LONGEST_FIRST`` first, in that order (a stable sort: the tests in a
    file and the other files keep their order)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A running embedded PostgreSQL 18 on 127.0.0.1 (TCP, password auth)."""
    server = postgres.start(tmp_path_factory.mktemp("pgdata"))
    yield server
    server.stop()


def recreate_database(pg_server, name: str) -> None:
    """Drop database ``name`` if it exists (closing its sessions) and create it empty."""
    conn = pg_server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


@pytest.fixture
def fresh_db(pg_server, request):
    """An empty database of its own for one test; returns its name."""
    name = "t_" + "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())[:50]
    recreate_database(pg_server, name)
    return name
