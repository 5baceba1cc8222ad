"""``http`` source: a service's health endpoint (seed, staging-health-check.sh part 1).

The value is 1 when the endpoint answers with the expected status, else 0: a service
that does not answer is down, which is a measurement, not an error.
"""

from __future__ import annotations

from migration_soak.plan import Check
from migration_soak.sources import Measurement

TIMEOUT_S = 10


def measure(check: Check) -> Measurement:
    """``GET`` the check's endpoint through ``HttpHook`` and compare the status."""
    import requests
    from airflow.providers.http.hooks.http import HttpHook

    src = check.source
    hook = HttpHook(method="GET", http_conn_id=src.connection, tcp_keep_alive=False)
    try:
        resp = hook.run(src.endpoint, extra_options={"check_response": False, "timeout": TIMEOUT_S})
    except requests.RequestException as exc:
        return Measurement(0.0, {"endpoint": src.endpoint, "error": f"{type(exc).__name__}: {exc}"[:300]})
    up = resp.status_code == src.expect_status
    return Measurement(1.0 if up else 0.0, {"endpoint": src.endpoint, "status": resp.status_code, "body": resp.text[:300]})
