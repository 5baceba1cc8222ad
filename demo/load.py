"""Steady synthetic traffic on the demo gateway, so the soak has something to watch.

The mix per request: 45 % ``POST /auth/login`` (users drawn mostly from a hot set of active
users), 45 % ``POST /auth/verify`` (tokens re-used from earlier logins, so the token cache
hit rate stays above 90 %), 10 % ``POST /workflows/run``, at ``DEFAULT_RATE``: so that the
baseline hour of a compressed clock (12 wall seconds at ``time_scale`` 300, of which its
readings count about 6) counts well over the 72 logins and verifies a p95 needs to be
bounded from above (rules.quantile_ranks). At 20 requests/s with 15 % logins it counted
about 20 logins, and no rise of ``login_p95`` could be shown; at 30 requests/s, half of
them logins, 84 logins and 74 verifies (one healthy soak, 6 December). A few worker threads pace
themselves to the target rate; a slow gateway lowers the achieved rate rather than piling
requests up (each worker has at most one request in flight).

Only loopback gateways are accepted and the rate is capped: this is a local demo, never a
load test against a real host.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from urllib.parse import urlparse

import requests

MAX_RATE = 200.0  # requests/s
DEFAULT_RATE = 50.0  # requests/s (the module doc says why)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MIX = (("login", 0.45), ("verify", 0.45), ("workflow", 0.10))
TOKEN_POOL = 200  # tokens kept for verify
NEW_TOKEN_SHARE = 0.01  # share of login tokens that join the pool: ~1 % of verifies miss, a warm cache (> 90 % hits) as in the seed
WORKFLOWS = 20


def user_email(n: int) -> str:
    """The seeded email of user ``n`` (1-based), see ``demo.seed``."""
    return f"user{n}@example.test"


class LoadGenerator:
    """Background traffic on ``gateway_url`` at about ``rate`` requests/s.

    ``user_count`` is how many seeded users exist (``user1..user{user_count}``); logins pick
    from the first ``hot_users`` 90 % of the time. ``start()`` returns at once, ``stop()``
    waits for the workers (at most one request timeout, 5 s). ``stats()`` tells what was sent.
    """

    def __init__(
        self,
        gateway_url: str,
        user_count: int,
        rate: float = DEFAULT_RATE,
        workers: int = 4,
        hot_users: int = 1000,
        seed: int | None = None,
    ):
        host = urlparse(gateway_url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"load is only sent to a loopback gateway, not {host!r}")
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be in (0, {MAX_RATE}] requests/s")
        if user_count < 1:
            raise ValueError("user_count must be >= 1")
        self.gateway_url = gateway_url.rstrip("/")
        self.user_count = user_count
        self.rate = rate
        self.workers = max(1, min(workers, 16))
        self.hot_users = max(1, min(hot_users, user_count))
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tokens: list[str] = []
        self._user_ids: list[str] = []
        self._counts: Counter[tuple[str, str]] = Counter()
        self._started_at: float | None = None
        self._stopped_at: float | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> "LoadGenerator":
        if self._threads:
            raise RuntimeError("already started")
        self._started_at = time.monotonic()
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, args=(i,), name=f"load-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()

    def stats(self) -> dict:
        """``{"requests": int, "seconds": float, "rate": requests/s,
        "by_kind": {"login"|"verify"|"workflow": {"<HTTP status>"|"exception": count}}}``."""
        with self._lock:
            counts = dict(self._counts)
        end = self._stopped_at or time.monotonic()
        seconds = end - self._started_at if self._started_at else 0.0
        by_kind: dict[str, dict[str, int]] = {}
        for (kind, status), n in counts.items():
            by_kind.setdefault(kind, {})[status] = n
        total = sum(counts.values())
        return {
            "requests": total,
            "seconds": round(seconds, 3),
            "rate": round(total / seconds, 2) if seconds else 0.0,
            "by_kind": by_kind,
        }

    # -- workers ---------------------------------------------------------------------------

    def _work(self, index: int) -> None:
        interval = self.workers / self.rate  # each worker sends 1/workers of the traffic
        session = requests.Session()
        # Spread the workers over one interval so requests do not come in bursts.
        next_at = time.monotonic() + interval * index / self.workers
        try:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at += interval
                if next_at < time.monotonic() - 1.0:
                    next_at = time.monotonic()  # fell behind (slow gateway): do not burst
                self._one_request(session)
        finally:
            session.close()

    def _pick(self, choices):
        with self._lock:
            return self._random.choice(choices) if choices else None

    def _one_request(self, session: requests.Session) -> None:
        with self._lock:
            roll = self._random.random()
        kind = "workflow"
        for name, share in MIX:
            if roll < share:
                kind = name
                break
            roll -= share
        token = self._pick(self._tokens) if kind == "verify" else None
        if kind == "verify" and token is None:
            kind = "login"  # nothing to verify yet
        try:
            if kind == "login":
                status = self._login(session)
            elif kind == "verify":
                response = session.post(f"{self.gateway_url}/auth/verify", json={"token": token}, timeout=5)
                status = str(response.status_code)
            else:
                status = self._workflow(session)
        except requests.RequestException:
            status = "exception"
        with self._lock:
            self._counts[(kind, status)] += 1

    def _login(self, session: requests.Session) -> str:
        with self._lock:
            if self._random.random() < 0.9:
                n = self._random.randint(1, self.hot_users)
            else:
                n = self._random.randint(1, self.user_count)
            keep = len(self._tokens) < 20 or self._random.random() < NEW_TOKEN_SHARE
        response = session.post(f"{self.gateway_url}/auth/login", json={"email": user_email(n)}, timeout=5)
        if response.status_code == 200 and keep:
            body = response.json()
            with self._lock:
                for pool, value in ((self._tokens, body["token"]), (self._user_ids, body.get("userId"))):
                    if value is None or value in pool:
                        continue
                    if len(pool) >= TOKEN_POOL:
                        pool[self._random.randrange(TOKEN_POOL)] = value
                    else:
                        pool.append(value)
        return str(response.status_code)

    def _workflow(self, session: requests.Session) -> str:
        user_id = self._pick(self._user_ids)
        with self._lock:
            workflow = f"wf_{self._random.randint(1, WORKFLOWS):02d}"
        response = session.post(
            f"{self.gateway_url}/workflows/run", json={"workflowId": workflow, "userId": user_id}, timeout=5
        )
        return str(response.status_code)
