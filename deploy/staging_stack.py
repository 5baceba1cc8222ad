"""``python -m demo.stack`` for docker-compose: the same CLI and the same ``Stack``, with
PostgreSQL in another container and the apps reachable from other containers.

``demo.stack`` starts its own embedded PostgreSQL and serves the gateway, the Authorizer
and the database host exporter on 127.0.0.1 at free ports with a fresh Authorizer admin
token. In compose the staging database is the ``staging-db`` service and Airflow's workers
need fixed addresses and a token they know, so for the life of ``main`` this module:

* replaces ``demo.postgres.start`` with the already running server named by
  ``STAGING_PGHOST`` / ``STAGING_PGPORT`` / ``STAGING_POSTGRES_PASSWORD`` (superuser
  ``postgres``), its data folder ``STAGING_PGDATA`` mounted read-only here for the database
  host exporter (the compose service shares ``staging-db``'s process namespace), and
  never stopped by the stack;
* serves each app on ``SOAK_BIND_HOST`` (0.0.0.0) at a fixed port: ``SOAK_GATEWAY_PORT``
  (8000), ``SOAK_AUTHORIZER_PORT`` (8001), ``SOAK_DB_METRICS_PORT`` (9187);
* uses ``AUTHORIZER_ADMIN_TOKEN`` as the Authorizer's admin token;

then runs ``demo.stack.main`` with the command line unchanged::

    python -m deploy.staging_stack up --dir /opt/soak/state --scenario healthy --users 100000 --rate 20

A stale ``<dir>/stack.json`` from a previous container is removed first (its pid would
name some other process of the shared namespace). Everything is restored on return.
"""

from __future__ import annotations

import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Mapping
from unittest import mock

from demo import app as demo_app
from demo import postgres
from demo import stack

#: ServerThread name (as ``demo.stack.Stack.start`` names them) -> (port variable, default).
PORTS = {
    "gateway": ("SOAK_GATEWAY_PORT", 8000),
    "authorizer": ("SOAK_AUTHORIZER_PORT", 8001),
    "db-exporter": ("SOAK_DB_METRICS_PORT", 9187),
}


class ExternalPostgres(postgres.EmbeddedPostgres):
    """A server this process did not start: ``stop`` leaves it running."""

    def stop(self) -> None:
        return None


def external_server(env: Mapping[str, str]) -> ExternalPostgres:
    return ExternalPostgres(
        data_dir=Path(env.get("STAGING_PGDATA", "/var/lib/postgresql/18/docker")),
        host=env.get("STAGING_PGHOST", "staging-db"),
        port=int(env.get("STAGING_PGPORT", "5432")),
        password=env["STAGING_POSTGRES_PASSWORD"],
    )


def port_for(name: str, env: Mapping[str, str]) -> int:
    variable, default = PORTS[name]
    return int(env.get(variable, default))


def published_server_thread(env: Mapping[str, str]) -> type:
    bind_host = env.get("SOAK_BIND_HOST", "0.0.0.0")

    class PublishedServerThread(demo_app.ServerThread):
        """``demo.app.ServerThread`` bound to ``bind_host`` at the app's fixed port."""

        def __init__(self, app, name: str):
            super().__init__(app, name)
            for old in self._socks:
                old.close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((bind_host, port_for(name, env)))
            self._socks = [sock]
            self.port = sock.getsockname()[1]
            self.url = self.local_url = f"http://127.0.0.1:{self.port}"  # the load generator runs in this container

    return PublishedServerThread


@contextmanager
def external_mode(env: Mapping[str, str]) -> Iterator[None]:
    """Patch ``demo.stack`` as the module docstring says; restored on exit."""
    server = external_server(env)
    token = env["AUTHORIZER_ADMIN_TOKEN"]
    with mock.patch.object(postgres, "start", lambda data_dir, port=None: server), \
            mock.patch.object(stack, "ServerThread", published_server_thread(env)), \
            mock.patch.object(stack, "secrets", SimpleNamespace(token_urlsafe=lambda nbytes=None: token)):
        yield


def _remove_stale_info(argv: list[str]) -> None:
    if "--dir" in argv and argv.index("--dir") + 1 < len(argv):
        (Path(argv[argv.index("--dir") + 1]) / stack.INFO_FILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if argv[:1] == ["up"]:
        _remove_stale_info(argv)
    with external_mode(env):
        return stack.main(argv)


if __name__ == "__main__":
    sys.exit(main())
