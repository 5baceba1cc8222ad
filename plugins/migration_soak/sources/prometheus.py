"""``prometheus`` source: a PromQL instant query on a Prometheus server's HTTP API.

``GET /api/v1/query`` through ``HttpHook``; anything that leaves the value unknown is a
``MeasurementError``. :func:`range_query` reads a series over time for charts.

Design notes: docs/design.md#sourcesprometheuspy
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Callable

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check, PrometheusSource
from migration_soak.sources import Measurement, SourceContext, _http, spec_of

TIMEOUT_S = 30
#: Prometheus stops evaluating after this (its ``timeout`` parameter), before our HTTP timeout.
QUERY_TIMEOUT = "25s"
#: Series shown in the evidence (labels and value each).
EVIDENCE_SERIES = 5

_FOLD: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "max": max,
    "min": min,
    "avg": lambda values: sum(values) / len(values),
}


def api_get(conn_id: str, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
    """``GET endpoint`` with ``params`` on the Prometheus connection; returns the ``data`` member.

    Raises ``MeasurementError`` when the server does not answer, answers without JSON, or
    answers ``status: error`` (with its ``errorType`` and ``error`` text).
    """
    resp = _http.get(_http.hook(conn_id), endpoint, params=params, timeout_s=TIMEOUT_S,
                     failed=f"Prometheus {endpoint} unreachable", detail=True)
    try:
        body = resp.json()
    except ValueError:
        raise MeasurementError(
            f"Prometheus {endpoint} answered HTTP {resp.status_code} without JSON: {resp.text[:200]!r}"
        ) from None
    if not isinstance(body, dict) or body.get("status") != "success":
        # Prometheus answers 400 (bad_data), 422 (execution), 503 (timeout) with this shape.
        error = body.get("error", "no error text") if isinstance(body, dict) else repr(body)[:200]
        kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
        raise MeasurementError(f"Prometheus {endpoint} HTTP {resp.status_code} {kind}: {error}"[:500])
    data = body.get("data")
    if not isinstance(data, dict):
        raise MeasurementError(f"Prometheus {endpoint} answered success without 'data'")
    return data


def _number(raw: Any) -> float:
    """A sample value as Prometheus encodes it: a string ("1.5", "NaN", "+Inf")."""
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise MeasurementError(f"not a sample value: {raw!r}") from None


def _shown(value: float) -> float | str:
    """A value for JSON evidence: NaN and infinities as Prometheus writes them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def instant(conn_id: str, query: str) -> tuple[str, list[tuple[dict[str, str], float]]]:
    """Run the instant ``query``; returns (result type, [(labels, value)]).

    A ``scalar`` is one series with no labels. Raises ``MeasurementError`` (see
    :func:`api_get`) and for a ``matrix`` or ``string`` result.
    """
    data = api_get(conn_id, "/api/v1/query", {"query": query, "timeout": QUERY_TIMEOUT})
    rtype, result = data.get("resultType"), data.get("result") or []
    if rtype == "vector":
        return rtype, [(dict(s.get("metric") or {}), _number(s["value"][1])) for s in result]
    if rtype == "scalar":  # result: [time, "value"]
        return rtype, [({}, _number(result[1]))]
    raise MeasurementError(f"the query gives a {rtype} result, not an instant vector or scalar: {query}")


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """The check's PromQL value: its series folded with ``aggregate``, times ``scale``.

    Evidence: ``query``, ``result_type``, ``series`` (count), ``sample`` (the first
    ``EVIDENCE_SERIES`` labels and values), ``aggregate``, ``raw``, ``scale``. Raises
    ``MeasurementError`` for anything that leaves the value unknown (see the module doc).
    """
    src = spec_of(check, PrometheusSource)
    rtype, series = instant(src.connection, src.query)
    evidence: dict[str, Any] = {
        "query": src.query,
        "result_type": rtype,
        "series": len(series),
        "sample": [{"labels": labels, "value": _shown(v)} for labels, v in series[:EVIDENCE_SERIES]],
    }
    if not series:
        raise MeasurementError(f"{check.id}: no series for {src.query} (nothing to measure)")
    if src.aggregate == "one" and len(series) != 1:
        shown = "; ".join(str(labels) for labels, _ in series[:3])
        raise MeasurementError(
            f"{check.id}: aggregate 'one' needs exactly one series, the query gives {len(series)}: {shown}"[:500]
        )
    values = [v for _, v in series]
    bad = [(labels, v) for labels, v in series if not math.isfinite(v)]
    if bad:
        labels, v = bad[0]
        raise MeasurementError(
            f"{check.id}: {len(bad)} of {len(series)} series have no finite value ({_shown(v)} for {labels or 'the result'}; "
            f"e.g. 0/0 with no traffic in the window)"[:500]
        )
    raw = values[0] if src.aggregate == "one" else _FOLD[src.aggregate](values)
    value = raw * src.scale
    evidence.update(aggregate=src.aggregate, raw=raw, scale=src.scale)
    return Measurement(value, evidence)


def _timestamp(t: datetime | float) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def range_query(
    conn_id: str, query: str, start: datetime | float, end: datetime | float, step: timedelta | float | str
) -> list[tuple[float, float]]:
    """``query`` evaluated every ``step`` from ``start`` to ``end`` (``/api/v1/query_range``).

    ``start``/``end``: aware datetimes or Unix seconds; ``step``: a timedelta, seconds, or a
    Prometheus duration (``"15s"``). Returns [(Unix seconds, value)] of the one series the
    query gives, in time order; steps without a sample are absent, as are NaN values
    (``0/0`` with no traffic), so a chart shows a gap. An empty result is ``[]``; several
    series are a ``MeasurementError`` (fold them in the PromQL, e.g. ``sum(...)``).
    """
    if isinstance(step, timedelta):
        step = step.total_seconds()
    data = api_get(
        conn_id,
        "/api/v1/query_range",
        {"query": query, "start": _timestamp(start), "end": _timestamp(end), "step": step, "timeout": QUERY_TIMEOUT},
    )
    result = data.get("result") or []
    if data.get("resultType") != "matrix":
        raise MeasurementError(f"query_range gave a {data.get('resultType')} result for {query}")
    if len(result) > 1:
        raise MeasurementError(f"query_range: {len(result)} series for {query}; fold them to one (e.g. sum(...))")
    points = []
    for t, raw in (result[0].get("values") or []) if result else []:
        value = _number(raw)
        if not math.isnan(value):
            points.append((float(t), value))
    return points
