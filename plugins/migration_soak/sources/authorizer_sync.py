"""``authorizer_sync`` source: sampled ids (``users."authorizerId"``) the Authorizer does not know.

Seed "Inconsistencias en la sincronización con Authorizer". Ids sampled with
``TABLESAMPLE SYSTEM`` (fallback ``ORDER BY random()``), looked up on the Authorizer's
admin API through ``HttpHook``; the value is the number of unknown ids.

Design notes: docs/design.md#sourcesauthorizer_syncpy
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote

from migration_soak.exceptions import MeasurementError
from migration_soak.migrate import _quote_ident
from migration_soak.pgconn import PLAN_SCHEMA
from migration_soak.plan import AuthorizerSyncSource, Check
from migration_soak.sources import Measurement, SourceContext, _http, spec_of
from migration_soak.sources.sql import readonly_transaction

TIMEOUT_S = 10
UNKNOWN_SHOWN = 10
#: Pages sampled per wanted id: SYSTEM sampling takes whole pages, so ids from many pages
#: rather than all from one or two (rows of a page were often inserted together).
PAGES_PER_ID = 2
#: The table's size in pages now (not the planner's estimate, which may be stale).
PAGES_SQL = "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint"


def sample_queries(table: str, column: str, percent: float) -> tuple[str, str]:
    """(the ``TABLESAMPLE SYSTEM (percent)`` query, the ``ORDER BY random()`` one), both
    taking the wanted count as their one parameter; ``table`` and ``column`` quoted as
    identifiers (any case, any character but NUL, which the plan refuses), the table in
    ``public`` (``pgconn.PLAN_SCHEMA``, as every reader of a plan's table: never the
    role's search path)."""
    col, tbl = _quote_ident(column), _table(table)
    sampled = (f"SELECT {col}::text FROM {tbl} TABLESAMPLE SYSTEM ({percent:.6f}) WHERE {col} IS NOT NULL "
               "ORDER BY random() LIMIT %s")
    full = f"SELECT {col}::text FROM {tbl} WHERE {col} IS NOT NULL ORDER BY random() LIMIT %s"
    return sampled, full


def _table(table: str) -> str:
    return f"{_quote_ident(PLAN_SCHEMA)}.{_quote_ident(table)}"


def sample_percent(pages: int, n: int) -> float:
    """The ``TABLESAMPLE SYSTEM`` percentage for ``n`` ids from a ``pages``-page table:
    ``PAGES_PER_ID`` pages per id, between 1e-6 (the query's 6 decimals) and 100 (0 pages: 100)."""
    return 100.0 if pages <= 0 else min(100.0, max(1e-6, 100.0 * PAGES_PER_ID * n / pages))


def sample_ids(conn_id: str, n: int, table: str, column: str) -> tuple[list[str], str]:
    """Up to ``n`` random non-null ``table.column`` values (the plan source's) of the staging
    database (read-only), and how they were drawn: ``tablesample <p>%`` or ``random`` (the whole
    table: a small one, or a draw that found fewer than ``n``). Database errors propagate."""
    with readonly_transaction(conn_id) as cur:
        cur.execute(PAGES_SQL, (_table(table),))
        percent = sample_percent(int(cur.fetchone()[0] or 0), n)
        sampled, full = sample_queries(table, column, percent)
        if percent < 100.0:
            cur.execute(sampled, (n,))
            ids = [row[0] for row in cur.fetchall()]
            if len(ids) >= n:
                return ids, f"tablesample {percent:.4g}%"
        cur.execute(full, (n,))
        return [row[0] for row in cur.fetchall()], "random"


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Count the sampled ids (drawn from ``ctx.staging``) the Authorizer answers 404 for
    (see the module doc).

    Evidence: ``endpoint``, ``sampled``, ``sampled_from`` (``table.column``), ``drawn_by``
    (``tablesample <p>%`` or ``random``), ``unknown`` (the first ``UNKNOWN_SHOWN`` ids),
    ``unknown_count``, ``statuses`` (HTTP status -> count). Raises ``MeasurementError``
    when sampling fails or finds no id, the endpoint is not a ``{id}`` template, or the
    Authorizer does not answer or answers anything but 200 or 404.
    """
    src = spec_of(check, AuthorizerSyncSource)
    staging = ctx.need_staging(check)
    what = f"{src.table}.{src.column}"
    try:
        ids, drawn = sample_ids(staging, src.sample, src.table, src.column)
    except Exception as exc:  # noqa: BLE001 - any database failure leaves the value unknown
        first = (str(exc).strip().splitlines() or [""])[0]
        raise MeasurementError(f"{check.id}: sampling {what} failed: {type(exc).__name__}: {first}"[:500]) from exc
    if not ids:
        raise MeasurementError(f"{check.id}: no row of {src.table} has a {src.column}: nothing to look up")
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
        "sampled_from": what,
        "drawn_by": drawn,
        "unknown": unknown[:UNKNOWN_SHOWN],
        "unknown_count": len(unknown),
        "statuses": dict(statuses),
    }
    return Measurement(float(len(unknown)), evidence)
