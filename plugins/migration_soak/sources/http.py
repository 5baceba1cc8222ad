"""``http`` source: a service's health endpoint (seed, staging-health-check.sh part 1).

The value is 1 when the endpoint answers with the expected status, else 0: a service
that does not answer is down, which is a measurement, not an error.
"""

from __future__ import annotations

from migration_soak.plan import Check, HttpHealthSource
from migration_soak.sources import Measurement, SourceContext, _http, spec_of

TIMEOUT_S = 10


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """``GET`` the check's endpoint and compare the status: 1.0 (up) or 0.0 (down).

    Evidence: ``endpoint`` and ``status`` and ``body`` (first 300 characters), or
    ``error`` (exception class and text) when it did not answer. Raises nothing of its own.
    """
    src = spec_of(check, HttpHealthSource)
    try:
        resp = _http.get(_http.hook(src.connection, keep_alive=False), src.endpoint, timeout_s=TIMEOUT_S,
                         failed=f"{src.endpoint} unreachable")
    except _http.Unreachable as exc:
        return Measurement(0.0, {"endpoint": src.endpoint, "error": exc.reason})
    up = resp.status_code == src.expect_status
    return Measurement(1.0 if up else 0.0, {"endpoint": src.endpoint, "status": resp.status_code, "body": resp.text[:300]})
