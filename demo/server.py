"""``ServerThread``: serve an ASGI app (the gateway, the Authorizer, the database exporter)
with uvicorn in a daemon thread on 127.0.0.1, each on a free port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import uvicorn


def _listening(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class ServerThread:
    """Serve an ASGI app with uvicorn on ``host`` (127.0.0.1; a free port) in a daemon thread.

    The socket is bound here, before the thread starts, so ``port`` is known and nobody can
    take it in between. With another ``host`` (the Celery workers' network, ``demo.celery_cluster``)
    it also listens on 127.0.0.1 at the same port (``local_url``: the load generator's way
    in); ``url`` names ``host``.
    """

    def __init__(self, app: Any, name: str, host: str = "127.0.0.1"):
        self.name = name
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP,
        # and accepted sockets inherit it. Without it every keep-alive response waits ~40 ms
        # (headers and body are two writes: Nagle meets the client's delayed ACK).
        for _ in range(20):
            self._socks = [_listening(host, 0)]
            self.port: int = self._socks[0].getsockname()[1]
            if host == "127.0.0.1":
                break
            try:
                self._socks.append(_listening("127.0.0.1", self.port))
                break
            except OSError:  # that port is taken on the loopback: another one
                self._socks[0].close()
        self.url = f"http://{host}:{self.port}"
        self.local_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{name}", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=self._socks))

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; raises RuntimeError if not accepting within ``timeout`` seconds."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} server did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (5 s at most), close the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        for sock in self._socks:
            sock.close()
