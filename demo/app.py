"""The demo staging app: an API gateway and an Authorizer stand-in, both FastAPI.

The gateway is what the soak watches: it authenticates users against the ``users`` table,
validates tokens through an in-process LRU cache (the Redis of the runbook), records
workflow runs in ``execution_logs``, exposes Prometheus metrics and writes one log line per
request. Its *scenario* decides whether its code still reads a deprecated column:

* ``healthy``: never touches ``passwordHash`` / ``emailVerified``; the migration is safe.
* ``legacy-code``: login still selects ``"passwordHash"``; once the column is dropped every
  login fails with 500 (``42703 undefined column``) until the column is back.

The Authorizer stand-in answers ``GET /admin/users/{authorizer_id}`` (Bearer token) from
the set of authorizerIds it was given at start.

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
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import ProcessCollector, generate_latest
from psycopg2 import errorcodes
from pydantic import BaseModel
from sqlalchemy import URL, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

SCENARIOS = ("healthy", "legacy-code")
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


@dataclass
class AppConfig:
    """The gateway's configuration, kept in a JSON file (mode 0600) that a reload re-reads.

    ``workflow_error_rate`` is the probability (0..1) that a workflow run ends in ERROR.
    ``pool_size`` + ``max_overflow`` is the most connections the gateway's pool opens.
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

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {SCENARIOS}")

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


class _Instrument:
    """ASGI middleware: one log line per request, and the HTTP metrics when given.

    ``endpoint`` is the route template (``/admin/users/{authorizer_id}``), so ids stay out
    of label values and logs; unmatched paths are ``other``. Scrapes of ``/metrics`` are
    neither counted nor logged: the soak scrapes every few seconds.
    """

    def __init__(self, app, service: str, logger: logging.Logger, metrics: "GatewayMetrics | None" = None):
        self.app = app
        self.service = service
        self.logger = logger
        self.metrics = metrics

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
            state.setdefault("error", f"{type(exc).__name__}: {str(exc).strip()[:200]}")
            raise
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            if endpoint != "/metrics":
                seconds = time.perf_counter() - started
                if self.metrics:
                    self.metrics.requests.labels(endpoint, str(status)).inc()
                    self.metrics.duration.labels(endpoint).observe(seconds)
                level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
                detail = ""
                if state.get("db_error"):
                    detail = " db_error=" + json.dumps(state["db_error"])
                elif state.get("error"):
                    detail = " error=" + json.dumps(state["error"])
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
    * ``process_*`` from ``ProcessCollector`` (``process_resident_memory_bytes``, CPU...):
      the whole Python process that serves the app.
    """

    def __init__(self, pool_checked_out: Callable[[], float], pool_max: Callable[[], float]):
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


class Gateway:
    """The API gateway: config file, DB pool, token cache, metrics and its FastAPI ``app``.

    ``config_path`` is an ``AppConfig`` JSON file; ``token_secret`` signs tokens (HMAC) and
    survives reloads, like a secret in the environment across restarts.
    """

    def __init__(self, config_path: Path, logger: logging.Logger, token_secret: bytes | None = None):
        self.config_path = Path(config_path)
        self.logger = logger
        self._secret = token_secret or secrets.token_bytes(32)
        self._lock = threading.Lock()
        self.config = AppConfig.load(self.config_path)
        self.engine = self._create_engine(self.config)
        self.metrics = GatewayMetrics(
            lambda: self.engine.pool.checkedout(),
            lambda: self.config.pool_size + self.config.max_overflow,
        )
        self.cache = TokenCache(on_lookup=lambda result: self.metrics.cache.labels(result).inc())
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
        """What ``railway restart`` does to the app: re-read the config, new DB pool."""
        with self._lock:
            old = self.engine
            self.config = AppConfig.load(self.config_path)
            self.engine = self._create_engine(self.config)
        # Requests in flight keep their connection; it is closed when they give it back.
        old.dispose()
        self.metrics.reloads.inc()

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
        app.add_middleware(_Instrument, service="gateway", logger=self.logger, metrics=self.metrics)

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
        def verify(body: VerifyBody):
            session = self.cache.get(body.token)
            if session is not None:
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

        @app.get("/metrics")
        def metrics():
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        return app


def create_authorizer(known_ids: Iterable[str], admin_token: str, logger: logging.Logger) -> FastAPI:
    """The Authorizer stand-in: ``GET /health``, ``GET /admin/users/{authorizer_id}``.

    The admin endpoint needs ``Authorization: Bearer <admin_token>`` (401 otherwise) and
    answers 200 ``{"id", "status": "active"}`` for an id in ``known_ids``, else 404.
    """
    known = frozenset(known_ids)
    expected = f"Bearer {admin_token}"
    app = FastAPI(title="demo Authorizer", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Instrument, service="authorizer", logger=logger)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/admin/users/{authorizer_id}")
    def get_user(authorizer_id: str, authorization: str | None = Header(default=None)):
        if authorization is None or not hmac.compare_digest(authorization, expected):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if authorizer_id not in known:
            return JSONResponse({"error": "not found"}, status_code=404)
        return {"id": authorizer_id, "status": "active"}

    return app


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a daemon thread.

    The socket is bound here, before the thread starts, so ``port`` is known and nobody can
    take it in between.
    """

    def __init__(self, app: Any, name: str):
        self.name = name
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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
