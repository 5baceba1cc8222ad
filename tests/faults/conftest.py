"""Fault-injection tests (issue 4, items 4-5): each test is named after the fault it plays.

They run on the same real embedded PostgreSQL as the integration tests and reuse their
fixtures (a fresh database per test, the seeded database, the Popen recorder); peers
(Slack, the metrics endpoint) are closed ports or local servers that accept and never
answer. Nothing that can run locally is mocked.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from demo import postgres
from tests.integration.conftest import (  # noqa: F401  (fixtures, re-exported for tests/faults)
    init_only_dir,
    pg_bin,
    popen_recorder,
    seeded,
    target,
)


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound once, then released)."""
    return postgres.free_port()


class SilentServer:
    """A loopback TCP server that accepts connections and never answers (a hung peer)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self):
        self._stop = True
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def as_staging_connection(monkeypatch):
    """Make a ``PgTarget`` the plan's ``soak_staging`` Airflow connection
    (``AIRFLOW_CONN_SOAK_STAGING`` as JSON); returns the setter."""

    def set_(to) -> str:
        value = json.dumps({"conn_type": "postgres", "host": to.host, "port": to.port,
                            "login": to.user, "password": to.password, "schema": to.database})
        monkeypatch.setenv("AIRFLOW_CONN_SOAK_STAGING", value)
        return "soak_staging"

    return set_
