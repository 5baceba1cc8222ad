"""The Authorizer stand-in (FastAPI): ``create_authorizer``.

It answers ``GET /admin/users/{authorizer_id}`` from the authorizerIds it knows
(``KnownIds``: re-read from the database on ``POST /admin/resync`` and, on a miss, every
``refresh_s`` seconds) and ``GET /admin/logs`` from its admin log (``AuthorizerLog``: failed
logins, token validation errors, webhook delivery failures), both with the Bearer admin
token. See docs/demo.md, "The demo app".
"""

from __future__ import annotations

import hmac
import logging
import random
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Callable, Iterable

from fastapi import FastAPI, Header, Query
from fastapi.responses import JSONResponse

from demo.app_log import Instrument, one_line

LOG_LEVELS = ("info", "warn", "error")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuthorizerLog:
    """The Authorizer's admin log: ``{"ts", "level", "event", "message"}`` entries, oldest
    first, the last ``capacity`` kept.

    Background traffic of a live Authorizer, at ``rate_per_s`` entries a wall second, all
    ``warn``: ``failed login`` (a wrong password), ``token validation error`` (an expired
    token), ``webhook delivery failure`` (a retry scheduled). ``error`` entries come only
    from faults: ``add("error", ...)`` by the gateway when ``noisy`` fails a request, and
    ``webhook delivery failure`` errors at ``webhook_errors_per_hour`` per soak hour while
    ``noisy`` is on (``apply_faults``). A new log starts with ``backlog_s`` seconds of
    background history.

    Entries are generated lazily (on ``add``, ``entries`` and fault changes) from the wall
    clock, with exponential gaps: no thread. Thread-safe.
    """

    BACKGROUND = (("failed login", 0.5), ("token validation error", 0.3), ("webhook delivery failure", 0.2))

    def __init__(self, rate_per_s: float = 0.5, capacity: int = 20_000, backlog_s: float = 600.0,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.time):
        self.rate_per_s = rate_per_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._entries: deque[dict] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        now = clock()
        self._next_background = (now - backlog_s + self._gap(rate_per_s)) if rate_per_s > 0 else float("inf")
        self._error_rate = 0.0  # webhook errors per wall second, from the noisy fault
        self._next_error = float("inf")
        self.advance()

    def _gap(self, rate: float) -> float:
        return self._rng.expovariate(rate)

    def _background_entry(self, ts: float) -> dict:
        roll, event = self._rng.random(), self.BACKGROUND[-1][0]
        for name, share in self.BACKGROUND:
            if roll < share:
                event = name
                break
            roll -= share
        if event == "failed login":
            message = f"invalid password for user{self._rng.randint(1, 100_000)}@example.test (attempt {self._rng.randint(1, 3)}/5)"
        elif event == "token validation error":
            message = f"expired token presented by client staging-client-id (expired {self._rng.randint(1, 3600)} s ago)"
        else:
            message = ("webhook user.login to https://automation-staging.example/hooks/authorizer answered "
                       f"HTTP 503; retry {self._rng.randint(1, 4)}/5 in 30 s")
        return {"ts": ts, "level": "warn", "event": event, "message": message}

    def _advance_locked(self, now: float) -> None:
        while min(self._next_background, self._next_error) <= now:
            if self._next_background <= self._next_error:
                ts = self._next_background
                self._entries.append(self._background_entry(ts))
                self._next_background = ts + self._gap(self.rate_per_s)
            else:
                ts = self._next_error
                self._entries.append({
                    "ts": ts, "level": "error", "event": "webhook delivery failure",
                    "message": "webhook user.updated to https://automation-staging.example/hooks/authorizer "
                               "failed after 5 retries: connection reset by peer; event dropped",
                })
                self._next_error = ts + self._gap(self._error_rate)

    def advance(self) -> None:
        """Generate the entries due up to now."""
        with self._lock:
            self._advance_locked(self._clock())

    def add(self, level: str, event: str, message: str) -> None:
        """Append an entry now (after the background entries due before it)."""
        if level not in LOG_LEVELS:
            raise ValueError(f"level must be one of {LOG_LEVELS}")
        with self._lock:
            now = self._clock()
            self._advance_locked(now)
            self._entries.append({"ts": now, "level": level, "event": event, "message": one_line(message)})

    def apply_faults(self, faults: dict[str, dict[str, float]]) -> None:
        """Follow the gateway's faults (a ``Gateway.add_fault_listener``): while ``noisy`` is
        on, ``webhook_errors_per_hour * time_scale / 3600`` error entries a wall second."""
        noisy = faults.get("noisy")
        rate = noisy["webhook_errors_per_hour"] * noisy["time_scale"] / 3600 if noisy is not None else 0.0
        with self._lock:
            now = self._clock()
            self._advance_locked(now)  # what happened before the change, at the old rate
            if rate != self._error_rate:
                self._error_rate = rate
                self._next_error = now + self._gap(rate) if rate > 0 else float("inf")

    def entries(self, level: str | None = None, since: float | None = None, limit: int = 500) -> list[dict]:
        """The last ``limit`` entries (oldest first) of ``level`` (any if None) with a
        timestamp after ``since`` (epoch seconds), ``ts`` as ISO 8601 UTC."""
        with self._lock:
            self._advance_locked(self._clock())
            chosen = [e for e in self._entries
                      if (level is None or e["level"] == level) and (since is None or e["ts"] > since)]
        return [{**e, "ts": _iso(e["ts"])} for e in chosen[-limit:]] if limit > 0 else []


class KnownIds:
    """The authorizerIds the Authorizer knows: those given at start, plus whatever
    ``source()`` (the staging database) returns on ``refresh()``. A miss refreshes when the
    last refresh is ``refresh_s`` seconds old, so users inserted later become known without
    a resync. Ids are never forgotten (the Authorizer keeps accounts a database lost)."""

    def __init__(self, ids: Iterable[str], source: Callable[[], Iterable[str]] | None = None,
                 refresh_s: float = 10.0, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._ids = set(ids)
        self._source = source
        self.refresh_s = refresh_s
        self._logger = logger
        self._clock = clock
        self._refreshed_at = clock()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, authorizer_id: object) -> bool:
        if authorizer_id in self._ids:
            return True
        if self._source is not None and self._clock() - self._refreshed_at >= self.refresh_s:
            try:
                self.refresh(only_if_stale=True)
            except Exception as exc:  # the database may be down: answer from what is known
                if self._logger:
                    self._logger.warning("authorizer resync error=%s", one_line(f"{type(exc).__name__}: {exc}"))
            return authorizer_id in self._ids
        return False

    def refresh(self, only_if_stale: bool = False) -> int:
        """Re-read the source now (or, with ``only_if_stale``, unless another thread just
        did); returns how many ids are known afterwards."""
        if self._source is None:
            return len(self._ids)
        with self._lock:
            if only_if_stale and self._clock() - self._refreshed_at < self.refresh_s:
                return len(self._ids)
            self._refreshed_at = self._clock()  # also on failure: no retry storm
            fresh = set(self._source())
            self._ids |= fresh
            return len(self._ids)


def create_authorizer(
    known_ids: Iterable[str],
    admin_token: str,
    logger: logging.Logger,
    *,
    log: AuthorizerLog | None = None,
    id_source: Callable[[], Iterable[str]] | None = None,
    refresh_s: float = 10.0,
) -> FastAPI:
    """The Authorizer stand-in. Every ``/admin`` route needs ``Authorization: Bearer
    <admin_token>`` (401 otherwise):

    * ``GET /health`` -> ``{"status": "ok"}``.
    * ``GET /admin/users/{authorizer_id}`` -> 200 ``{"id", "status": "active"}`` for a known
      id (``known_ids``, plus ``id_source()`` re-read as ``KnownIds`` says), else 404.
    * ``POST /admin/resync`` -> re-read ``id_source()`` now: ``{"known": n}``.
    * ``GET /admin/logs?level=&since=&limit=500`` -> ``{"logs": [{"ts", "level", "event",
      "message"}, ...]}``, oldest first (``log``; a fresh ``AuthorizerLog`` if None).
      ``since`` is an ISO 8601 time; ``limit`` 1..20000 (the runbook reads the last 500).

    ``app.state.known_ids`` / ``app.state.log`` hold the ``KnownIds`` and the log.
    """
    known = KnownIds(known_ids, id_source, refresh_s, logger)
    log = log if log is not None else AuthorizerLog()
    expected = f"Bearer {admin_token}"
    app = FastAPI(title="demo Authorizer", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Instrument, service="authorizer", logger=logger)
    app.state.known_ids = known
    app.state.log = log

    def authorized(authorization: str | None) -> bool:
        return authorization is not None and hmac.compare_digest(authorization, expected)

    def unauthorized() -> JSONResponse:
        return JSONResponse({"error": "unauthorized"}, status_code=401)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/admin/users/{authorizer_id}")
    def get_user(authorizer_id: str, authorization: str | None = Header(default=None)):
        if not authorized(authorization):
            return unauthorized()
        if authorizer_id not in known:
            return JSONResponse({"error": "not found"}, status_code=404)
        return {"id": authorizer_id, "status": "active"}

    @app.post("/admin/resync")
    def resync(authorization: str | None = Header(default=None)):
        if not authorized(authorization):
            return unauthorized()
        count = known.refresh()
        log.add("info", "user sync", f"resynced users from the database: {count} known")
        return {"known": count}

    @app.get("/admin/logs")
    def logs(
        authorization: str | None = Header(default=None),
        level: str | None = Query(default=None),
        since: str | None = Query(default=None),
        limit: int = Query(default=500, ge=1, le=20_000),
    ):
        if not authorized(authorization):
            return unauthorized()
        if level is not None and level not in LOG_LEVELS:
            return JSONResponse({"error": f"level must be one of {LOG_LEVELS}"}, status_code=422)
        after = None
        if since is not None:
            try:
                parsed = datetime.fromisoformat(since)
            except ValueError:
                return JSONResponse({"error": "since must be an ISO 8601 time"}, status_code=422)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            after = parsed.timestamp()
        return {"logs": log.entries(level=level, since=after, limit=limit)}

    return app
