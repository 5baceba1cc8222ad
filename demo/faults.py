"""What goes wrong during a demo soak, and when: fault scenarios on the soak clock.

A scenario is a base app scenario (``healthy`` or ``legacy-code``, given to the stack at
start: ``base_scenario(name)``) and a timeline of steps ``(soak_hour, action, args)``:

* ``("fault", {"fault": name, "on": bool, <param>: number...})``: ``POST /admin/fault`` on
  the gateway, the body being ``args`` (``slow-auth``, ``memory-leak``, ``metrics-outage``,
  ``noisy``; see ``demo.app_config.FAULT_DEFAULTS``). A fault with a ``time_scale`` parameter
  (``noisy``: its Authorizer error rate is per soak hour) gets the timeline's unless given.
* ``("scenario", {"scenario": "healthy"|"legacy-code"})``: ``POST /admin/scenario``.
* ``("reload", {})``: ``POST /admin/reload`` (an app restart).
* ``("sync-drift", {"n": 5})``: ``add_users_without_authorizer_id`` on the staging database.

``Timeline(gateway_url, staging, steps).run(hour0, time_scale)`` applies each step in a
thread at wall time ``hour0 + soak_hour * 3600 / time_scale`` seconds (steps already due are
applied at once, in order); ``stop()`` ends it early. ``records`` tells what was applied,
when, and how it went; a failed step is recorded and the next ones still run.

CLI (a stack started with ``python -m demo.stack up --dir D`` must be running)::

    python -m demo.faults --dir D --scenario metrics-outage --time-scale 360 [--hour0 ISO]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psycopg2
import requests

from demo.app_config import FAULT_DEFAULTS

log = logging.getLogger(__name__)

Step = tuple[float, str, dict]
ACTIONS = ("fault", "scenario", "reload", "sync-drift")

#: The demo scenarios' timelines (soak hours from hour 0). ``legacy-code`` is a base app
#: scenario (the app reads "passwordHash"); the others run on the ``healthy`` app.
SCENARIOS: dict[str, list[Step]] = {
    "healthy": [],
    "legacy-code": [],
    # /auth/login p95 from ~10 ms to ~190 ms from hour 1 on: > 30 % degradation, < 500 ms.
    "slow-auth": [(1.0, "fault", {"fault": "slow-auth", "on": True})],
    # 1.5 MiB kept per request from hour 0 (up to 2 GiB). A linear leak slows down in
    # relative terms, and the NO-GO needs > 20 %/h sustained for 60 min (the 15-minute
    # readings of hours 1-2 span only 45 min, so the hour-3 reading must still show it):
    # the leak per soak hour must exceed ~0.2 x (the gateway's RSS, 100-310 MB, + 2 h of leak), i.e.
    # up to ~105 MB/h. Measured in CI at 512 KiB: ~100-125 MB/h (the achieved load rate varies
    # with the machine), 18 % at hour 3: too close. At 1.5 MiB: ~300-375 MB/h, +30 % at hour 3.
    # Those were at 20 requests/s; the load now sends 50 (demo/load.py), so the same MB/h is
    # 1536 x 20 / 50 = 614.4 KiB a request (1.5 MiB reached the 2 GiB cap by soak hour 3,
    # and the NO-GO's hour-3 reading saw no growth: INCONCLUSIVE, 6 December).
    "memory-leak": [(0.0, "fault", {"fault": "memory-leak", "on": True, "kb_per_request": 614.4, "max_mb": 2048})],
    # /metrics answers 503 from hour 8 to hour 16: a third of the soak without metrics.
    "metrics-outage": [
        (8.0, "fault", {"fault": "metrics-outage", "on": True}),
        (16.0, "fault", {"fault": "metrics-outage", "on": False}),
    ],
    # 0.5 % of /auth/login and /auth/verify answer 500 for the whole soak.
    "noisy": [(0.0, "fault", {"fault": "noisy", "on": True})],
    # At hour 3 the sync with the Authorizer drifts: 5 users appear without authorizerId.
    "sync-drift": [(3.0, "sync-drift", {"n": 5})],
}


def base_scenario(name: str) -> str:
    """The app scenario a demo scenario starts the stack with: ``legacy-code`` or ``healthy``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {sorted(SCENARIOS)}")
    return "legacy-code" if name == "legacy-code" else "healthy"


# -- sync-drift ------------------------------------------------------------------------------

DRIFT_SQL = """
INSERT INTO users (id, email, "authorizerId", "clientId", "createdAt", "updatedAt")
VALUES (%s, %s, NULL, (SELECT id FROM clients ORDER BY "createdAt", id LIMIT 1), now(), now())
"""


def _connect(server_or_dsn: Any, database: str | None):
    if hasattr(server_or_dsn, "connect") and hasattr(server_or_dsn, "dsn"):  # EmbeddedPostgres
        return server_or_dsn.connect(database or "postgres")
    if isinstance(server_or_dsn, dict):  # stack.json's "staging" entry
        db = server_or_dsn
        return psycopg2.connect(host=db["host"], port=db["port"], user=db["user"], password=db["password"],
                                dbname=database or db["database"], connect_timeout=10)
    if isinstance(server_or_dsn, str):  # a libpq DSN or URL
        extra = {"dbname": database} if database else {}
        return psycopg2.connect(server_or_dsn, connect_timeout=10, **extra)
    raise TypeError("server_or_dsn: an EmbeddedPostgres, a stack.json database dict or a DSN string")


def add_users_without_authorizer_id(server_or_dsn: Any, database: str | None = None, n: int = 5) -> list[str]:
    """Insert ``n`` users with a NULL ``authorizerId`` into ``database``; returns their ids.

    ``server_or_dsn``: an ``EmbeddedPostgres``, a ``stack.json`` database dict (``{"host",
    "port", "user", "password", "database"}``; ``database`` overrides its name) or a libpq
    DSN/URL. The rows name only columns both schemas have (before and after the drop
    migration: ``emailVerified`` takes its default while it exists), with unique
    ``sync-drift-<hex>@example.test`` emails, the oldest client, created now. One
    transaction: all or none.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    ids = [str(uuid.uuid4()) for _ in range(n)]
    conn = _connect(server_or_dsn, database)
    try:
        with conn, conn.cursor() as cur:
            for user_id in ids:
                cur.execute(DRIFT_SQL, (user_id, f"sync-drift-{user_id[:8]}{user_id[-4:]}@example.test"))
    finally:
        conn.close()
    return ids


# -- timeline --------------------------------------------------------------------------------


@dataclass
class StepRecord:
    """One applied step: when it was due and applied (UTC), how late (s), and its outcome."""

    soak_hour: float
    action: str
    args: dict
    due: datetime
    applied: datetime | None = None
    late_s: float | None = None
    ok: bool | None = None
    result: Any = None
    error: str | None = None


def _as_datetime(hour0: datetime | str) -> datetime:
    if isinstance(hour0, str):
        hour0 = datetime.fromisoformat(hour0)
    return hour0 if hour0.tzinfo else hour0.replace(tzinfo=timezone.utc)


def check_steps(steps: list[Step]) -> list[Step]:
    """The steps sorted by soak hour (stable); ``ValueError`` on a bad one."""
    for step in steps:
        if len(step) != 3:
            raise ValueError(f"a step is (soak_hour, action, args), not {step!r}")
        hour, action, args = step
        if not isinstance(hour, (int, float)) or hour < 0:
            raise ValueError(f"soak_hour must be a number >= 0, not {hour!r}")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {ACTIONS}")
        if not isinstance(args, dict):
            raise ValueError(f"args must be a dict, not {args!r}")
        if action == "fault" and args.get("fault") not in FAULT_DEFAULTS:
            raise ValueError(f"fault step needs a 'fault' in {sorted(FAULT_DEFAULTS)}: {args!r}")
    return sorted(steps, key=lambda step: step[0])


class Timeline:
    """Apply ``steps`` to a running stack on the soak clock.

    ``gateway_url``: the stack's ``gateway_url``; ``staging``: its ``stack.json``
    ``"staging"`` entry (for ``sync-drift``). ``clock``: wall time in epoch seconds
    (``time.time``; tests may compress it further).
    """

    def __init__(self, gateway_url: str, staging: dict | None, steps: list[Step], *,
                 request_timeout: float = 10.0, clock: Callable[[], float] = time.time):
        self.gateway_url = gateway_url.rstrip("/")
        self.staging = staging
        self.steps = check_steps(list(steps))
        self.records: list[StepRecord] = []
        self.time_scale: float | None = None
        self.request_timeout = request_timeout
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, hour0: datetime | str, time_scale: float) -> "Timeline":
        """Start applying the steps in a daemon thread; returns at once (``self``).

        ``hour0``: the soak's hour 0 (aware datetime or ISO string; naive means UTC).
        ``time_scale``: soak seconds per wall second (360: 24 h in 4 min).
        """
        if self._thread is not None:
            raise RuntimeError("already running")
        if not time_scale > 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = float(time_scale)
        start = _as_datetime(hour0).timestamp()
        self._thread = threading.Thread(target=self._run, args=(start, self.time_scale),
                                        name="fault-timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop before the remaining steps (a step being applied finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._session.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every step to be applied; True if the thread is done."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def due_at(self, hour0: datetime | str, soak_hour: float, time_scale: float) -> datetime:
        """The wall time of ``soak_hour``: ``hour0 + soak_hour * 3600 / time_scale`` s."""
        return datetime.fromtimestamp(_as_datetime(hour0).timestamp() + soak_hour * 3600 / time_scale, timezone.utc)

    def _run(self, start: float, time_scale: float) -> None:
        for hour, action, args in self.steps:
            due = start + hour * 3600 / time_scale
            remaining = due - self._clock()
            if remaining > 0 and self._stop.wait(remaining):
                return
            if self._stop.is_set():
                return
            record = StepRecord(hour, action, dict(args), datetime.fromtimestamp(due, timezone.utc))
            now = self._clock()
            record.applied = datetime.fromtimestamp(now, timezone.utc)
            record.late_s = round(now - due, 3)
            try:
                record.result = self.apply(action, args)
                record.ok = True
                log.info("timeline: hour %g %s %s applied (%.3f s late)", hour, action, json.dumps(args), record.late_s)
            except Exception as exc:  # recorded; the next steps still run
                record.ok = False
                record.error = f"{type(exc).__name__}: {exc}"
                log.warning("timeline: hour %g %s %s failed: %s", hour, action, json.dumps(args), record.error)
            self.records.append(record)

    # -- actions ---------------------------------------------------------------------------

    def apply(self, action: str, args: dict) -> Any:
        """Apply one step now; returns what the action returned (the gateway's JSON, the
        inserted ids). Raises on failure (HTTP error, database error)."""
        if action == "fault":
            body = dict(args)
            if "time_scale" in FAULT_DEFAULTS[body["fault"]] and body.get("on", True) and self.time_scale:
                body.setdefault("time_scale", self.time_scale)
            return self._post("/admin/fault", body)
        if action == "scenario":
            return self._post("/admin/scenario", {"scenario": args["scenario"]})
        if action == "reload":
            return self._post("/admin/reload", None)
        if action == "sync-drift":
            if self.staging is None:
                raise ValueError("sync-drift needs the staging database (stack.json 'staging')")
            return add_users_without_authorizer_id(self.staging, self.staging.get("database"), int(args.get("n", 5)))
        raise ValueError(f"unknown action {action!r}")

    def _post(self, path: str, body: dict | None) -> Any:
        response = self._session.post(self.gateway_url + path, json=body, timeout=self.request_timeout)
        if response.status_code >= 400:
            raise RuntimeError(f"POST {path} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="the stack's folder (holds stack.json)")
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--time-scale", type=float, default=360.0)
    parser.add_argument("--hour0", default=None, help="ISO time of hour 0 (default: now)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    info = json.loads((Path(args.dir) / "stack.json").read_text())
    hour0 = args.hour0 or datetime.now(timezone.utc)
    timeline = Timeline(info["gateway_url"], info["staging"], SCENARIOS[args.scenario]).run(hour0, args.time_scale)
    try:
        while not timeline.join(1.0):
            pass
    except KeyboardInterrupt:
        timeline.stop()
    return 0 if all(r.ok for r in timeline.records) else 1


if __name__ == "__main__":
    sys.exit(main())
