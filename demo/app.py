"""The demo staging app, split by role; this module re-exports their public names.

* ``demo.app_config``: ``AppConfig``, the app scenarios and the runtime faults.
* ``demo.gateway``: the API gateway (``Gateway``, ``TokenCache``, ``GatewayMetrics``...).
* ``demo.authorizer``: the Authorizer stand-in (``create_authorizer``, ``AuthorizerLog``).
* ``demo.app_log``: the request log (``open_app_log``) and its middleware.
* ``demo.server``: ``ServerThread``, uvicorn in a thread.

What the scenarios and faults do: docs/demo.md, "The demo app".
"""

from demo.app_config import (
    FAULT_DEFAULTS, FAULTS, SCENARIOS, AppConfig, fault_params, should_inject_error, write_private_json,
)
from demo.app_log import LOG_BACKUPS, LOG_MAX_BYTES, close_app_log, open_app_log
from demo.authorizer import LOG_LEVELS, AuthorizerLog, KnownIds, create_authorizer
from demo.gateway import (
    ACTIVE_SESSION_WINDOW_S, DURATION_BUCKETS, INSERT_RUN_SQL, LEGACY_LOGIN_SQL, LOGIN_SQL, SESSION_SQL,
    SLOW_AUTH_BUDGET_MS, FaultBody, Gateway, GatewayMetrics, LoginBody, ScenarioBody, SessionTracker, TokenCache,
    VerifyBody, WorkflowRunBody, db_error_text,
)
from demo.server import ServerThread

__all__ = [
    "ACTIVE_SESSION_WINDOW_S", "DURATION_BUCKETS", "FAULTS", "FAULT_DEFAULTS", "INSERT_RUN_SQL",
    "LEGACY_LOGIN_SQL", "LOGIN_SQL", "LOG_BACKUPS", "LOG_LEVELS", "LOG_MAX_BYTES", "SCENARIOS",
    "SESSION_SQL", "SLOW_AUTH_BUDGET_MS",
    "AppConfig", "AuthorizerLog", "FaultBody", "Gateway", "GatewayMetrics", "KnownIds", "LoginBody",
    "ScenarioBody", "ServerThread", "SessionTracker", "TokenCache", "VerifyBody", "WorkflowRunBody",
    "close_app_log", "create_authorizer", "db_error_text", "fault_params", "open_app_log",
    "should_inject_error", "write_private_json",
]
