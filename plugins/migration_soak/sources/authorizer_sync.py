"""``authorizer_sync`` source: sampled ``users."authorizerId"`` values the Authorizer does not know.

Seed "Inconsistencias en la sincronización con Authorizer": ``sample`` ids drawn at random
from the staging database (read-only transaction with a ``statement_timeout``, as the
``sql`` source runs its queries) are each looked up on the Authorizer's admin API through
``HttpHook`` with the connection's password as Bearer token. 200 is known, 404 unknown;
any other answer (401: wrong token, 5xx, no answer) leaves the count unknown and is a
``MeasurementError``. The value is the number of unknown ids.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check
from migration_soak.sources import Measurement
from migration_soak.sources.sql import STATEMENT_TIMEOUT_MS

TIMEOUT_S = 10
UNKNOWN_SHOWN = 10
SAMPLE_SQL = 'SELECT "authorizerId" FROM users WHERE "authorizerId" IS NOT NULL ORDER BY random() LIMIT %s'


def bearer_hook(conn_id: str, method: str = "GET", **hook_kwargs):
    """An ``HttpHook`` on ``conn_id`` that sends ``Authorization: Bearer <connection password>``
    when the connection has a password (instead of HTTP basic auth from login/password).
    ``hook_kwargs`` go to ``HttpHook``."""
    import requests
    from airflow.providers.http.hooks.http import HttpHook

    token = HttpHook.get_connection(conn_id).password
    if not token:
        return HttpHook(method=method, http_conn_id=conn_id, **hook_kwargs)

    class _Bearer(requests.auth.AuthBase):
        def __call__(self, request):
            request.headers["Authorization"] = f"Bearer {token}"
            return request

        def __repr__(self) -> str:  # never the token
            return "BearerAuth(***)"

    # HttpHook builds its session's auth by calling auth_type(login, password) or auth_type().
    return HttpHook(method=method, http_conn_id=conn_id, auth_type=lambda *_: _Bearer(), **hook_kwargs)


def sample_ids(conn_id: str, n: int) -> list[str]:
    """Up to ``n`` random non-null authorizerIds of the staging database, read-only."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).get_conn()
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            cur.execute("SET LOCAL application_name = 'migration-soak'")  # out of the slow-query checks
            cur.execute(SAMPLE_SQL, (n,))
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.rollback()
        conn.close()


def measure(check: Check, staging_conn_id: str) -> Measurement:
    """Count the sampled authorizerIds the Authorizer answers 404 for (see the module doc)."""
    import requests

    src = check.source
    try:
        ids = sample_ids(staging_conn_id, src.sample)
    except Exception as exc:  # noqa: BLE001 - any database failure leaves the value unknown
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MeasurementError(f"{check.id}: sampling authorizerIds failed: {type(exc).__name__}: {first}"[:500]) from exc
    if not ids:
        raise MeasurementError(f"{check.id}: no user has an authorizerId: nothing to look up")
    # Many short requests: without HttpHook's TCP keep-alive adapter each takes ~4 ms
    # instead of ~45 ms on the demo stack (the keep-alive probes matter for long requests).
    hook = bearer_hook(src.connection, tcp_keep_alive=False)
    statuses: Counter[str] = Counter()
    unknown: list[str] = []
    for authorizer_id in ids:
        try:
            endpoint = src.endpoint.format(id=quote(authorizer_id, safe=""))
        except (KeyError, IndexError, ValueError) as exc:
            raise MeasurementError(f"{check.id}: endpoint {src.endpoint!r} is not a template with only {{id}}: {exc}") from None
        try:
            resp = hook.run(endpoint, extra_options={"check_response": False, "timeout": TIMEOUT_S})
        except requests.RequestException as exc:
            raise MeasurementError(f"{check.id}: Authorizer unreachable: {type(exc).__name__}") from exc
        statuses[str(resp.status_code)] += 1
        if resp.status_code == 404:
            unknown.append(authorizer_id)
        elif resp.status_code != 200:
            hint = " (is the connection's password the admin token?)" if resp.status_code in (401, 403) else ""
            raise MeasurementError(
                f"{check.id}: Authorizer answered HTTP {resp.status_code} for {src.endpoint} "
                f"(id {authorizer_id!r}){hint}; statuses so far {dict(statuses)}"
            )
    evidence: dict[str, Any] = {
        "endpoint": src.endpoint,
        "sampled": len(ids),
        "unknown": unknown[:UNKNOWN_SHOWN],
        "unknown_count": len(unknown),
        "statuses": dict(statuses),
    }
    return Measurement(float(len(unknown)), evidence)
