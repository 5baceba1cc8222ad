"""Shared fixtures: one real embedded PostgreSQL server per test session."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Airflow reads its configuration at first import: point it at a project-local home
# before anything imports it, so tests never touch ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".state" / "test-airflow"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("XDG_RUNTIME_DIR", str(ROOT / ".state" / "runtime"))

import pytest  # noqa: E402

from demo import postgres  # noqa: E402


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
