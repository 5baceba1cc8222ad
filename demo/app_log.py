"""The demo app's request log: ``open_app_log`` / ``close_app_log`` (the rotated ``app.log``)
and ``Instrument``, the ASGI middleware that writes one line per request (and the gateway's
HTTP metrics), shared by the gateway and the Authorizer.
"""

from __future__ import annotations

import logging
import time
import uuid
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from demo.gateway import GatewayMetrics

LOG_MAX_BYTES = 20 * 1024 * 1024  # one request line is ~100 bytes: ~200 000 lines a file
LOG_BACKUPS = 5


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on a single line (log injection), at most ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


def open_app_log(path: Path) -> logging.Logger:
    """A logger writing ``<UTC time> <LEVEL> <message>`` lines to ``path`` (rotated at 20 MB).

    Rotation keeps 5 old files (``app.log.1`` ...): a reader that follows the file by offset
    must reopen it when it shrinks. Close with ``close_app_log``.
    """
    logger = logging.getLogger(f"demo.app.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep request lines out of Airflow's / pytest's root logger
    handler = RotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return logger


def close_app_log(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class Instrument:
    """ASGI middleware: one log line per request, and the HTTP metrics when given.

    ``endpoint`` is the route template (``/admin/users/{authorizer_id}``), so ids stay out
    of label values and logs; unmatched paths are ``other``. Scrapes of ``/metrics`` are
    neither counted nor logged: the soak scrapes every few seconds. ``after(endpoint,
    status)`` is called after every other request.

    A line reads ``<time> <LEVEL> <service> <METHOD> <endpoint> status=<code>
    duration_ms=<ms>`` and, last, one of ``db_error=<text>``, ``error=<text>`` or
    ``warning=<text>`` running to the end of the line, unquoted, so that a grep for
    ``column "passwordHash" does not exist`` finds it. The level is ERROR for a 5xx,
    WARNING for a 4xx or a request that set a warning, else INFO.
    """

    def __init__(self, app, service: str, logger: logging.Logger, metrics: "GatewayMetrics | None" = None,
                 after: Callable[[str, int], None] | None = None):
        self.app = app
        self.service = service
        self.logger = logger
        self.metrics = metrics
        self.after = after

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            state.setdefault("error", f"unhandled exception {type(exc).__name__}: {str(exc).strip()[:200]}")
            raise
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            if endpoint != "/metrics":
                seconds = time.perf_counter() - started
                if self.metrics:
                    self.metrics.requests.labels(endpoint, str(status)).inc()
                    self.metrics.duration.labels(endpoint).observe(seconds)
                if self.after:
                    self.after(endpoint, status)
                if status >= 500:
                    level = logging.ERROR
                elif status >= 400 or state.get("warning"):
                    level = logging.WARNING
                else:
                    level = logging.INFO
                detail = ""
                for key in ("db_error", "error", "warning"):
                    if state.get(key):
                        detail = f" {key}={one_line(state[key])}"
                        break
                self.logger.log(
                    level, "%s %s %s status=%d duration_ms=%.1f%s",
                    self.service, scope["method"], endpoint, status, seconds * 1000, detail,
                )
