"""The demo API gateway (FastAPI), the service the soak watches: ``Gateway``.

It authenticates users against ``users``, validates tokens through ``TokenCache`` (the
runbook's Redis), records workflow runs in ``execution_logs``, exposes ``GatewayMetrics`` on
``/metrics`` and logs one line per request (``demo.app_log``). Its scenario and faults come
from ``demo.app_config``; what they do: docs/demo.md, "The demo app".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, cast

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import ProcessCollector, generate_latest
from psycopg2 import errorcodes
from pydantic import BaseModel, ConfigDict
from sqlalchemy import URL, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

from demo.app_config import SCENARIOS, AppConfig, fault_params, should_inject_error
from demo.app_log import Instrument

if TYPE_CHECKING:
    from demo.authorizer import AuthorizerLog

SLOW_AUTH_BUDGET_MS = 100  # what the slow-auth warning says the upstream timeout budget is
ACTIVE_SESSION_WINDOW_S = 300.0  # "active": a token verified in the last 5 minutes (wall)
# Fine enough to tell a 10 ms query from a 2 s stall (the runbook's p95 limits are 200/500 ms).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)

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
            lambda: cast(QueuePool, self.engine.pool).checkedout(),  # create_engine's default pool
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
        app.add_middleware(Instrument, service="gateway", logger=self.logger, metrics=self.metrics,
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
