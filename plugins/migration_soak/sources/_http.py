"""The sources' HTTP calls: ``HttpHook`` on an Airflow HTTP connection, no answer mapped
to :class:`Unreachable` (a ``MeasurementError``).

A call never raises for an HTTP status (``check_response: False``): what a status means
is the source's to say. ``HttpHook.run`` makes one attempt, no retries.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import requests

from migration_soak.exceptions import MeasurementError

if TYPE_CHECKING:
    from airflow.providers.http.hooks.http import HttpHook


class Unreachable(MeasurementError):
    """No HTTP answer (refused, reset, no answer within the timeout).

    ``error``: the ``requests`` exception; ``seconds``: how long the call waited.
    The message names the exception class, not its text, unless the caller asked for it
    (``detail``): a URL in that text may carry credentials.
    """

    def __init__(self, failed: str, error: Exception, seconds: float, *, timed: bool = False,
                 detail: bool = False) -> None:
        self.error = error
        self.seconds = seconds
        message = f"{failed}{f' after {seconds:.1f} s' if timed else ''}: {type(error).__name__}"
        super().__init__(f"{message}: {error}"[:300] if detail else message)

    @property
    def reason(self) -> str:
        """``<exception class>: <exception text>``, at most 300 characters."""
        return f"{type(self.error).__name__}: {self.error}"[:300]


def hook(conn_id: str, *, bearer: bool = False, keep_alive: bool = True) -> HttpHook:
    """A ``GET`` ``HttpHook`` on the HTTP connection ``conn_id``.

    ``bearer``: send ``Authorization: Bearer <connection password>`` when the connection
    has a password, instead of HTTP basic auth from its login and password (admin APIs
    such as the Authorizer's). ``keep_alive``: ``HttpHook``'s TCP keep-alive adapter;
    off for many short requests (each then takes ~4 ms instead of ~45 ms on the demo
    stack), on for long ones, where its probes matter.
    """
    from airflow.providers.http.hooks.http import HttpHook

    token = HttpHook.get_connection(conn_id).password if bearer else None
    if not token:
        return HttpHook(method="GET", http_conn_id=conn_id, tcp_keep_alive=keep_alive)
    # HttpHook builds its session's auth by calling auth_type(login, password) or auth_type().
    return HttpHook(method="GET", http_conn_id=conn_id, auth_type=lambda *_: _BearerAuth(token),
                    tcp_keep_alive=keep_alive)


def get(http: HttpHook, endpoint: str, *, timeout_s: float, failed: str, params: dict[str, Any] | None = None,
        timed: bool = False, detail: bool = False) -> requests.Response:
    """``GET endpoint`` through ``http``; the answer whatever its status.

    ``timeout_s``: seconds for ``requests``' connect and read timeouts each. ``params``:
    the URL's query parameters. Raises :class:`Unreachable` with the message
    ``<failed>[ after N.N s]: <exception class>[: <exception text>]`` (``timed``,
    ``detail``) when there is no answer.
    """
    started = time.monotonic()
    try:
        # GET: HttpHook sends ``data`` as the URL's query string.
        return http.run(endpoint, data=params, extra_options={"check_response": False, "timeout": timeout_s})
    except requests.RequestException as exc:
        raise Unreachable(failed, exc, time.monotonic() - started, timed=timed, detail=detail) from exc


class _BearerAuth(requests.auth.AuthBase):
    """``requests`` auth that sets ``Authorization: Bearer <token>``; its repr hides the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:  # never the token
        return "BearerAuth(***)"
