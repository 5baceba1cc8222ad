"""The demo staging app: an API gateway and an Authorizer stand-in, both FastAPI.

The gateway is what the soak watches: it authenticates users against the ``users`` table,
validates tokens through an in-process LRU cache (the Redis of the runbook), records
workflow runs in ``execution_logs``, exposes Prometheus metrics and writes one log line per
request. Its *scenario* decides whether its code still reads a deprecated column:

* ``healthy``: never touches ``passwordHash`` / ``emailVerified``; the migration is safe.
* ``legacy-code``: login still selects ``"passwordHash"``; once the column is dropped every
  login fails with 500 (``42703 undefined column``) until the column is back.

On top of the scenario, *faults* can be switched on and off at runtime
(``POST /admin/fault {"fault": name, "on": bool, <params>}``; they combine with either
scenario, survive a reload like the scenario, see ``FAULT_DEFAULTS``):

* ``slow-auth``: ``/auth/login`` waits ``delay_ms`` (150 ± 30 ms) before answering and logs
  a WARNING ``... over the 100 ms timeout budget``.
* ``memory-leak``: every request but ``/metrics`` keeps ``kb_per_request`` KB for good (up to
  ``max_mb``), so ``process_resident_memory_bytes`` grows steadily; a reload frees it.
* ``metrics-outage``: ``GET /metrics`` answers 503; everything else works.
* ``noisy``: ``error_rate`` (0.5 %) of ``/auth/login`` and ``/auth/verify`` answer 500
  (``should_inject_error``), logged as ERROR with an exception, and recorded as errors in
  the Authorizer's admin log, which also gets ``webhook_errors_per_hour`` webhook delivery
  errors per soak hour.

The Authorizer stand-in answers ``GET /admin/users/{authorizer_id}`` from the authorizerIds
it knows (re-read from the database on ``POST /admin/resync`` and, on a miss, every
``refresh_s`` seconds) and ``GET /admin/logs`` (its log: failed logins, token validation
errors, webhook delivery failures), both with the Bearer admin token.

Both are served by uvicorn in threads (``ServerThread``) on 127.0.0.1, each on a free port.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import secrets
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import uvicorn
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import ProcessCollector, generate_latest
from psycopg2 import errorcodes
from pydantic import BaseModel, ConfigDict
from sqlalchemy import URL, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

SCENARIOS = ("healthy", "legacy-code")
FAULTS = ("slow-auth", "memory-leak", "metrics-outage", "noisy")
#: Each fault's parameters and their defaults; ``POST /admin/fault`` may override any of them.
FAULT_DEFAULTS: dict[str, dict[str, float]] = {
    # /auth/login sleeps delay_ms +- jitter_ms (uniform) before doing its work.
    "slow-auth": {"delay_ms": 150.0, "jitter_ms": 30.0},
    # Every request but /metrics keeps kb_per_request KiB until max_mb MiB are kept: at
    # 20 requests/s, 3.75 MiB a wall second, 37.5 MiB per soak hour at time_scale 360,
    # +39 % of the demo process's ~96 MiB in the first soak hour, +28 % in the second,
    # +22 % in the third (each hour over the one before).
    "memory-leak": {"kb_per_request": 192.0, "max_mb": 1024.0},
    "metrics-outage": {},
    # error_rate of /auth/login and /auth/verify answer 500. The Authorizer logs
    # webhook_errors_per_hour "webhook delivery failure" errors per soak hour, a soak hour
    # lasting 3600 / time_scale wall seconds (the timeline driver passes its time_scale).
    # With the demo load (~18 auth requests/s) at time_scale 360: ~0.9 failed requests and
    # ~1 webhook error per soak hour, ~1.9 Authorizer error entries per soak hour.
    "noisy": {"error_rate": 0.005, "webhook_errors_per_hour": 1.0, "time_scale": 1.0},
}
SLOW_AUTH_BUDGET_MS = 100  # what the slow-auth warning says the upstream timeout budget is
ACTIVE_SESSION_WINDOW_S = 300.0  # "active": a token verified in the last 5 minutes (wall)
# Fine enough to tell a 10 ms query from a 2 s stall (the runbook's p95 limits are 200/500 ms).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
LOG_MAX_BYTES = 20 * 1024 * 1024  # one request line is ~100 bytes: ~200 000 lines a file
LOG_BACKUPS = 5

LOGIN_SQL = 'SELECT id, "authorizerId" FROM users WHERE email = :email'
# What the old code still does: it reads the password hash it no longer uses.
LEGACY_LOGIN_SQL = 'SELECT id, "authorizerId", "passwordHash" FROM users WHERE email = :email'
SESSION_SQL = 'SELECT id, "authorizerId" FROM users WHERE "authorizerId" = :authorizer_id'
INSERT_RUN_SQL = """
INSERT INTO execution_logs (id, "userId", "workflowId", status, "startedAt", "endedAt")
VALUES (:id, :user_id, :workflow_id, CAST(:status AS "ExecutionStatus"),
        now() - make_interval(secs => :seconds), now())
RETURNING id, "userId", "workflowId", status::text AS status, "startedAt", "endedAt", "createdAt"
"""


def write_private_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` with mode 0600, atomically (tmp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a tmp file left by a crash
    os.replace(tmp, path)


def fault_params(name: str, params: dict[str, Any] | None = None) -> dict[str, float]:
    """The fault's full parameters: ``FAULT_DEFAULTS[name]`` overridden by ``params``.

    Raises ``ValueError`` for an unknown fault or parameter, a value that is not a number,
    a negative one, an ``error_rate`` above 1 or a ``time_scale`` of 0.
    """
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {FAULTS}")
    merged = dict(FAULT_DEFAULTS[name])
    for key, value in (params or {}).items():
        if key not in merged:
            raise ValueError(f"fault {name!r} has no parameter {key!r}; it has {sorted(merged) or 'none'}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise ValueError(f"fault {name!r}: {key} must be a number >= 0, not {value!r}")
        merged[key] = float(value)
    if merged.get("error_rate", 0) > 1:
        raise ValueError(f"fault {name!r}: error_rate is a probability (0..1)")
    if "time_scale" in merged and merged["time_scale"] <= 0:
        raise ValueError(f"fault {name!r}: time_scale must be > 0")
    return merged


def should_inject_error(rng: random.Random, error_rate: float) -> bool:
    """Whether this request fails under ``noisy``: one Bernoulli draw with ``error_rate``.

    With a seeded ``rng`` the sequence of decisions is reproducible (the tests use it).
    """
    return rng.random() < error_rate


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on a single line (log injection), at most ``limit`` characters."""
    return " ".join(str(text).split())[:limit]


@dataclass
class AppConfig:
    """The gateway's configuration, kept in a JSON file (mode 0600) that a reload re-reads.

    ``workflow_error_rate`` is the probability (0..1) that a workflow run ends in ERROR.
    ``pool_size`` + ``max_overflow`` is the most connections the gateway's pool opens.
    ``faults``: the faults switched on, name -> parameters (see ``FAULT_DEFAULTS``).
    """

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    scenario: str = "healthy"
    workflow_error_rate: float = 0.02
    pool_size: int = 5
    max_overflow: int = 5
    faults: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {SCENARIOS}")
        self.faults = {name: fault_params(name, params) for name, params in self.faults.items()}

    @classmethod
    def load(cls, path: Path) -> "AppConfig":
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        write_private_json(path, asdict(self))


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


def db_error_text(exc: BaseException) -> str:
    """One line describing a database failure, e.g.
    ``42703 undefined column: column "passwordHash" does not exist``.

    The condition name is spelled with spaces so the runbook's ``grep "undefined column"``
    finds it. Connection failures have no SQLSTATE and give the driver's first line.
    """
    orig = getattr(exc, "orig", None) or exc
    code = getattr(orig, "pgcode", None)
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if code:
        name = (errorcodes.lookup(code) or "error").lower().replace("_", " ")
        return f"{code} {name}: {first}"
    return f"{type(orig).__name__}: {first}"


class TokenCache:
    """Token -> session dict, least recently used evicted beyond ``capacity``; thread-safe.

    Stands in for the runbook's Redis. ``on_lookup("hit"|"miss")`` is called on every
    ``get`` (the gateway counts them in ``cache_requests_total``).
    """

    def __init__(self, capacity: int = 10_000, on_lookup: Callable[[str], None] | None = None):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()
        self._on_lookup = on_lookup

    def get(self, key: str) -> dict | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
        if self._on_lookup:
            self._on_lookup("miss" if value is None else "hit")
        return value

    def put(self, key: str, value: dict) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class SessionTracker:
    """Distinct tokens verified in the last ``window_s`` seconds (wall): "Active Sessions".

    ``touch(token)`` on every successful verification; ``count()`` drops what is older than
    the window and answers how many remain. Thread-safe.
    """

    def __init__(self, window_s: float = ACTIVE_SESSION_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()  # oldest touch first
        self._lock = threading.Lock()

    def touch(self, token: str) -> None:
        with self._lock:
            self._seen[token] = self._clock()
            self._seen.move_to_end(token)

    def count(self) -> int:
        with self._lock:
            horizon = self._clock() - self.window_s
            while self._seen:
                token, seen = next(iter(self._seen.items()))
                if seen >= horizon:
                    break
                del self._seen[token]
            return len(self._seen)


class _Instrument:
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
                        detail = f" {key}={_one_line(state[key])}"
                        break
                self.logger.log(
                    level, "%s %s %s status=%d duration_ms=%.1f%s",
                    self.service, scope["method"], endpoint, status, seconds * 1000, detail,
                )


class GatewayMetrics:
    """The gateway's own Prometheus registry.

    * ``http_requests_total{endpoint,status}``: requests handled (status = HTTP code).
    * ``http_request_duration_seconds{endpoint}``: histogram of handling time, seconds.
    * ``cache_requests_total{result="hit"|"miss"}``: token cache lookups.
    * ``app_reloads_total``: ``POST /admin/reload`` calls (the "railway restart").
    * ``db_pool_checked_out_connections`` / ``db_pool_max_connections``: pool usage.
    * ``auth_logins_total{result="success"|"failure"}``: ``/auth/login`` answers, 200 being
      a success and anything else (401, 500, 503...) a failure ("Authentication Success Rate").
    * ``active_sessions``: distinct tokens verified in the last 5 minutes of wall time
      (the runbook's "Active Sessions", source Redis: here the token cache's users).
    * ``process_*`` from ``ProcessCollector`` (``process_resident_memory_bytes``, CPU...):
      the whole Python process that serves the app.
    """

    def __init__(self, pool_checked_out: Callable[[], float], pool_max: Callable[[], float],
                 active_sessions: Callable[[], float] | None = None):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests handled, by route template and status code.",
            ["endpoint", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds", "Time to handle a request, seconds.",
            ["endpoint"], buckets=DURATION_BUCKETS, registry=self.registry,
        )
        self.cache = Counter(
            "cache_requests_total", "Token cache lookups by result.", ["result"], registry=self.registry,
        )
        for result in ("hit", "miss"):  # both series exist from the start, at 0
            self.cache.labels(result)
        self.reloads = Counter("app_reloads_total", "Gateway reloads (restarts).", registry=self.registry)
        Gauge(
            "db_pool_checked_out_connections", "Pool connections in use now.", registry=self.registry,
        ).set_function(pool_checked_out)
        Gauge(
            "db_pool_max_connections", "Most connections the pool may open.", registry=self.registry,
        ).set_function(pool_max)
        self.logins = Counter(
            "auth_logins_total", "POST /auth/login answers: success (200) or failure (anything else).",
            ["result"], registry=self.registry,
        )
        for result in ("success", "failure"):
            self.logins.labels(result)
        Gauge(
            "active_sessions",
            "Distinct tokens verified in the last 5 minutes (Active Sessions; source: Redis, the token cache).",
            registry=self.registry,
        ).set_function(active_sessions or (lambda: 0))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LoginBody(BaseModel):
    email: str


class VerifyBody(BaseModel):
    token: str


class WorkflowRunBody(BaseModel):
    workflowId: str = "wf_01"
    userId: str | None = None


class ScenarioBody(BaseModel):
    scenario: Literal["healthy", "legacy-code"]


class FaultBody(BaseModel):
    """``{"fault": name, "on": true|false, <parameter>: number, ...}``."""

    model_config = ConfigDict(extra="allow")
    fault: Literal["slow-auth", "memory-leak", "metrics-outage", "noisy"]
    on: bool = True


class Gateway:
    """The API gateway: config file, DB pool, token cache, metrics and its FastAPI ``app``.

    ``config_path`` is an ``AppConfig`` JSON file; ``token_secret`` signs tokens (HMAC) and
    survives reloads, like a secret in the environment across restarts. ``rng`` draws the
    injected delays and errors (seed it for reproducible faults).
    ``upstream_log``: an ``AuthorizerLog`` that also records the errors ``noisy`` injects
    (they are described as the Authorizer failing); set by the stack.
    """

    def __init__(self, config_path: Path, logger: logging.Logger, token_secret: bytes | None = None,
                 rng: random.Random | None = None):
        self.config_path = Path(config_path)
        self.logger = logger
        self._secret = token_secret or secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.rng = rng or random.Random()
        self.config = AppConfig.load(self.config_path)
        self.engine = self._create_engine(self.config)
        self.sessions = SessionTracker()
        self.metrics = GatewayMetrics(
            lambda: self.engine.pool.checkedout(),
            lambda: self.config.pool_size + self.config.max_overflow,
            self.sessions.count,
        )
        self.cache = TokenCache(on_lookup=lambda result: self.metrics.cache.labels(result).inc())
        self.upstream_log: AuthorizerLog | None = None
        self._fault_listeners: list[Callable[[dict[str, dict[str, float]]], None]] = []
        self._leaked: list[bytes] = []
        self._leaked_bytes = 0
        self._leak_lock = threading.Lock()
        self.app = self._build_app()

    @staticmethod
    def _create_engine(config: AppConfig) -> Engine:
        url = URL.create(
            "postgresql+psycopg2", username=config.user, password=config.password,
            host=config.host, port=config.port, database=config.database,
        )
        return create_engine(
            url,
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
            pool_timeout=5,
            # Survive a database restart: a dead pooled connection is replaced, not reused.
            pool_pre_ping=True,
            # Single-statement requests: no transaction left open to block the migration's
            # ALTER TABLE (it needs an ACCESS EXCLUSIVE lock on users).
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 3, "application_name": "demo-gateway"},
        )

    def reload(self) -> None:
        """What ``railway restart`` does to the app: re-read the config, new DB pool.

        Faults stay as the config file says (the code did not change); memory retained by
        ``memory-leak`` is released, as a new process would start without it.
        """
        with self._lock:
            old = self.engine
            self.config = AppConfig.load(self.config_path)
            self.engine = self._create_engine(self.config)
        # Requests in flight keep their connection; it is closed when they give it back.
        old.dispose()
        with self._leak_lock:
            self._leaked = []
            self._leaked_bytes = 0
        self.metrics.reloads.inc()
        self._notify_faults()

    # -- faults ----------------------------------------------------------------------------

    @property
    def faults(self) -> dict[str, dict[str, float]]:
        """The faults switched on now: name -> parameters (a copy)."""
        return {name: dict(params) for name, params in self.config.faults.items()}

    def fault(self, name: str) -> dict[str, float] | None:
        """The parameters of fault ``name`` if it is on, else None."""
        return self.config.faults.get(name)

    def set_fault(self, name: str, on: bool = True, **params: float) -> dict[str, dict[str, float]]:
        """Switch fault ``name`` on (with ``params`` over its defaults) or off, now and in the
        config file (a reload keeps it). Returns the faults on afterwards.

        Raises ``ValueError`` for an unknown fault or a bad parameter (see ``fault_params``).
        """
        full = fault_params(name, params)
        with self._lock:
            faults = dict(self.config.faults)
            if on:
                faults[name] = full
            else:
                faults.pop(name, None)
            self.config.faults = faults
            self.config.save(self.config_path)
        self._notify_faults()
        return self.faults

    def add_fault_listener(self, listener: Callable[[dict[str, dict[str, float]]], None]) -> None:
        """Call ``listener(faults)`` whenever the faults change (set_fault, reload)."""
        self._fault_listeners.append(listener)

    def _notify_faults(self) -> None:
        faults = self.faults
        for listener in self._fault_listeners:
            listener(faults)

    @property
    def leaked_bytes(self) -> int:
        """Bytes kept by ``memory-leak`` since the last reload."""
        return self._leaked_bytes

    def _after_request(self, endpoint: str, status: int) -> None:
        """Per request (but /metrics): count logins, and leak when ``memory-leak`` is on."""
        if endpoint == "/auth/login":
            self.metrics.logins.labels("success" if status == 200 else "failure").inc()
        leak = self.config.faults.get("memory-leak")
        if leak is not None:
            size = int(leak["kb_per_request"] * 1024)
            with self._leak_lock:
                if size and self._leaked_bytes + size <= leak["max_mb"] * 1024 * 1024:
                    # Non-zero bytes: every page is written, so it counts in the RSS at once
                    # (bytes(n) would be calloc'ed, its pages untouched and not resident).
                    self._leaked.append(b"\xa5" * size)
                    self._leaked_bytes += size

    def _slow_auth(self, request: Request) -> None:
        params = self.config.faults.get("slow-auth")
        if params is None:
            return
        jitter = params["jitter_ms"]
        delay_ms = max(0.0, params["delay_ms"] + self.rng.uniform(-jitter, jitter))
        time.sleep(delay_ms / 1000)
        request.state.warning = (
            f"slow upstream: Authorizer answered after {delay_ms:.0f} ms, "
            f"over the {SLOW_AUTH_BUDGET_MS} ms timeout budget"
        )

    def _injected_error(self, request: Request, endpoint: str) -> JSONResponse | None:
        """Under ``noisy``, maybe fail this request: the 500 response, or None."""
        params = self.config.faults.get("noisy")
        if params is None or not should_inject_error(self.rng, params["error_rate"]):
            return None
        what = "login" if endpoint == "/auth/login" else "token introspection"
        request.state.error = (
            f"unhandled exception AuthorizerUpstreamError during {what}: "
            "connection reset by peer (upstream error)"
        )
        if self.upstream_log is not None:
            event = "failed login" if endpoint == "/auth/login" else "token validation error"
            self.upstream_log.add("error", event, f"{what} failed: internal error: connection reset by peer")
        return JSONResponse({"error": "internal error", "detail": "upstream Authorizer error"}, status_code=500)

    def set_scenario(self, scenario: str) -> None:
        """Switch the code path now and in the config file (so a reload keeps it)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        with self._lock:
            self.config.scenario = scenario
            self.config.save(self.config_path)

    def close(self) -> None:
        self.engine.dispose()

    def issue_token(self, authorizer_id: str) -> str:
        """``<authorizerId>.<hmac>``: the same user always gets the same token (cacheable)."""
        return f"{authorizer_id}.{self._sign(authorizer_id)}"

    def token_subject(self, token: str) -> str | None:
        """The authorizerId a token was issued for, or None if it was not issued here."""
        subject, _, signature = token.rpartition(".")
        if subject and hmac.compare_digest(signature, self._sign(subject)):
            return subject
        return None

    def _sign(self, subject: str) -> str:
        return hmac.new(self._secret, subject.encode(), hashlib.sha256).hexdigest()[:32]

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="demo API gateway", docs_url=None, redoc_url=None, openapi_url=None)
        app.add_middleware(_Instrument, service="gateway", logger=self.logger, metrics=self.metrics,
                           after=self._after_request)

        @app.exception_handler(SQLAlchemyError)
        async def database_failure(request: Request, exc: SQLAlchemyError):
            detail = db_error_text(exc)
            request.state.db_error = detail
            code = getattr(getattr(exc, "orig", None), "pgcode", None) or ""
            if code.startswith("23"):  # integrity: the client sent an unknown userId
                status = 422
            elif not code:  # no SQLSTATE: could not reach the server (or pool exhausted)
                status = 503
            else:
                status = 500
            return JSONResponse({"error": "database error", "detail": detail}, status_code=status)

        @app.get("/health")
        def health(request: Request):
            try:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except SQLAlchemyError as exc:
                request.state.db_error = db_error_text(exc)
                return JSONResponse(
                    {"status": "error", "database": "error", "reason": request.state.db_error},
                    status_code=503,
                )
            return {"status": "ok", "database": "ok"}

        @app.post("/auth/login")
        def login(body: LoginBody, request: Request):
            self._slow_auth(request)
            failed = self._injected_error(request, "/auth/login")
            if failed is not None:
                return failed
            sql = LEGACY_LOGIN_SQL if self.config.scenario == "legacy-code" else LOGIN_SQL
            with self.engine.connect() as conn:
                row = conn.execute(text(sql), {"email": body.email}).mappings().first()
            if row is None:
                return JSONResponse({"error": "unknown user"}, status_code=401)
            if row["authorizerId"] is None:
                # Data bug the soak checks for: such a user cannot authenticate at all.
                request.state.error = "user without authorizerId"
                return JSONResponse({"error": "user has no authorizerId"}, status_code=500)
            return {
                "token": self.issue_token(row["authorizerId"]),
                "authorizerId": row["authorizerId"],
                "userId": row["id"],
            }

        @app.post("/auth/verify")
        def verify(body: VerifyBody, request: Request):
            failed = self._injected_error(request, "/auth/verify")
            if failed is not None:
                return failed
            session = self.cache.get(body.token)
            if session is not None:
                self.sessions.touch(body.token)
                return {"valid": True, **session, "cache": "hit"}
            subject = self.token_subject(body.token)
            if subject is None:
                return JSONResponse({"valid": False, "error": "invalid token"}, status_code=401)
            with self.engine.connect() as conn:
                row = conn.execute(text(SESSION_SQL), {"authorizer_id": subject}).mappings().first()
            if row is None:
                return JSONResponse({"valid": False, "error": "unknown user"}, status_code=401)
            session = {"userId": row["id"], "authorizerId": row["authorizerId"]}
            self.cache.put(body.token, session)
            self.sessions.touch(body.token)
            return {"valid": True, **session, "cache": "miss"}

        @app.post("/workflows/run")
        def run_workflow(body: WorkflowRunBody | None = None):
            body = body or WorkflowRunBody()
            status = "ERROR" if random.random() < self.config.workflow_error_rate else "SUCCESS"
            params = {
                "id": str(uuid.uuid4()),
                "user_id": body.userId,
                "workflow_id": body.workflowId,
                "status": status,
                # The run is recorded when it ends; it lasted 0.5..30.5 s, mostly short.
                "seconds": 0.5 + 30 * random.random() ** 3,
            }
            with self.engine.connect() as conn:
                row = conn.execute(text(INSERT_RUN_SQL), params).mappings().one()
            return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}

        @app.post("/admin/reload")
        def reload():
            self.reload()
            return {"status": "reloaded", "scenario": self.config.scenario}

        @app.post("/admin/scenario")
        def scenario(body: ScenarioBody):
            self.set_scenario(body.scenario)
            return {"scenario": body.scenario}

        @app.post("/admin/fault")
        def fault(body: FaultBody):
            try:
                faults = self.set_fault(body.fault, body.on, **(body.model_extra or {}))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
            return {"fault": body.fault, "on": body.on, "faults": faults}

        @app.get("/admin/faults")
        def faults():
            return {"scenario": self.config.scenario, "faults": self.faults, "leaked_bytes": self.leaked_bytes}

        @app.get("/metrics")
        def metrics():
            if "metrics-outage" in self.config.faults:
                return Response("metrics unavailable\n", status_code=503, media_type="text/plain")
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        return app


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
            self._entries.append({"ts": now, "level": level, "event": event, "message": _one_line(message)})

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
                    self._logger.warning("authorizer resync error=%s", _one_line(f"{type(exc).__name__}: {exc}"))
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
    app.add_middleware(_Instrument, service="authorizer", logger=logger)
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


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a daemon thread.

    The socket is bound here, before the thread starts, so ``port`` is known and nobody can
    take it in between.
    """

    def __init__(self, app: Any, name: str):
        self.name = name
        # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP,
        # and accepted sockets inherit it. Without it every keep-alive response waits ~40 ms
        # (headers and body are two writes: Nagle meets the client's delayed ACK).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"uvicorn-{name}", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

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
        self._sock.close()
