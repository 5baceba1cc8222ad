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
from migration_soak.plan import AuthorizerSyncSource, Check
from migration_soak.sources import Measurement, SourceContext, _http, spec_of
from migration_soak.sources.sql import readonly_transaction

TIMEOUT_S = 10
UNKNOWN_SHOWN = 10
SAMPLE_SQL = 'SELECT "authorizerId" FROM users WHERE "authorizerId" IS NOT NULL ORDER BY random() LIMIT %s'


def sample_ids(conn_id: str, n: int) -> list[str]:
    """Up to ``n`` random non-null authorizerIds of the staging database, read-only."""
    with readonly_transaction(conn_id) as cur:
        cur.execute(SAMPLE_SQL, (n,))
        return [row[0] for row in cur.fetchall()]


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Count the sampled authorizerIds (drawn from ``ctx.staging``) the Authorizer answers
    404 for (see the module doc).

    Evidence: ``endpoint``, ``sampled``, ``unknown`` (the first ``UNKNOWN_SHOWN`` ids),
    ``unknown_count``, ``statuses`` (HTTP status -> count). Raises ``MeasurementError``
    when sampling fails or finds no id, the endpoint is not a ``{id}`` template, or the
    Authorizer does not answer or answers anything but 200 or 404.
    """
    src = spec_of(check, AuthorizerSyncSource)
    staging = ctx.need_staging(check)
    try:
        ids = sample_ids(staging, src.sample)
    except Exception as exc:  # noqa: BLE001 - any database failure leaves the value unknown
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MeasurementError(f"{check.id}: sampling authorizerIds failed: {type(exc).__name__}: {first}"[:500]) from exc
    if not ids:
        raise MeasurementError(f"{check.id}: no user has an authorizerId: nothing to look up")
    # Many short requests: no TCP keep-alive adapter (see _http.hook).
    hook = _http.hook(src.connection, bearer=True, keep_alive=False)
    statuses: Counter[str] = Counter()
    unknown: list[str] = []
    for authorizer_id in ids:
        try:
            endpoint = src.endpoint.format(id=quote(authorizer_id, safe=""))
        except (KeyError, IndexError, ValueError) as exc:
            raise MeasurementError(f"{check.id}: endpoint {src.endpoint!r} is not a template with only {{id}}: {exc}") from None
        resp = _http.get(hook, endpoint, timeout_s=TIMEOUT_S, failed=f"{check.id}: Authorizer unreachable")
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
