"""The demo app's configuration: ``AppConfig`` (a JSON file a reload re-reads), the app
scenarios (``SCENARIOS``) and the runtime faults (``FAULTS``, ``FAULT_DEFAULTS``,
``fault_params``, ``should_inject_error``). What each scenario and fault does: docs/demo.md,
"The demo app".
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCENARIOS = ("healthy", "legacy-code")
FAULTS = ("slow-auth", "memory-leak", "metrics-outage", "noisy")
#: Each fault's parameters and their defaults; ``POST /admin/fault`` may override any of them.
FAULT_DEFAULTS: dict[str, dict[str, float]] = {
    # /auth/login sleeps delay_ms +- jitter_ms (uniform) before doing its work.
    "slow-auth": {"delay_ms": 150.0, "jitter_ms": 30.0},
    # Every request but /metrics keeps kb_per_request KiB until max_mb MiB are kept: at
    # the demo load's 50 requests/s, 3.75 MiB a wall second, 37.5 MiB per soak hour at
    # time_scale 360, +39 % of the demo process's ~96 MiB in the first soak hour, +28 % in
    # the second, +22 % in the third (each hour over the one before). (192 KiB at the
    # 20 requests/s the load sent until 6 December: the same MiB a second.)
    "memory-leak": {"kb_per_request": 76.8, "max_mb": 1024.0},
    "metrics-outage": {},
    # error_rate of /auth/login and /auth/verify answer 500. The Authorizer logs
    # webhook_errors_per_hour "webhook delivery failure" errors per soak hour, a soak hour
    # lasting 3600 / time_scale wall seconds (the timeline driver passes its time_scale).
    # With the demo load (~18 auth requests/s) at time_scale 360: ~0.9 failed requests and
    # ~1 webhook error per soak hour, ~1.9 Authorizer error entries per soak hour.
    "noisy": {"error_rate": 0.005, "webhook_errors_per_hour": 1.0, "time_scale": 1.0},
}


def write_private_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON to ``path`` with mode 0600, atomically (tmp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a tmp file left by a crash
    os.replace(tmp, path)


def fault_params(name: str, params: dict[str, Any] | None = None) -> dict[str, float]:
    """The fault's full parameters: ``FAULT_DEFAULTS[name]`` overridden by ``params``.

    Raises ``ValueError`` for an unknown fault or parameter, a value that is not a number,
    a negative one, an ``error_rate`` above 1 or a ``time_scale`` of 0.
    """
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; one of {FAULTS}")
    merged = dict(FAULT_DEFAULTS[name])
    for key, value in (params or {}).items():
        if key not in merged:
            raise ValueError(f"fault {name!r} has no parameter {key!r}; it has {sorted(merged) or 'none'}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
            raise ValueError(f"fault {name!r}: {key} must be a number >= 0, not {value!r}")
        merged[key] = float(value)
    if merged.get("error_rate", 0) > 1:
        raise ValueError(f"fault {name!r}: error_rate is a probability (0..1)")
    if "time_scale" in merged and merged["time_scale"] <= 0:
        raise ValueError(f"fault {name!r}: time_scale must be > 0")
    return merged


def should_inject_error(rng: random.Random, error_rate: float) -> bool:
    """Whether this request fails under ``noisy``: one Bernoulli draw with ``error_rate``.

    With a seeded ``rng`` the sequence of decisions is reproducible (the tests use it).
    """
    return rng.random() < error_rate


@dataclass
class AppConfig:
    """The gateway's configuration, kept in a JSON file (mode 0600) that a reload re-reads.

    ``workflow_error_rate`` is the probability (0..1) that a workflow run ends in ERROR.
    ``pool_size`` + ``max_overflow`` is the most connections the gateway's pool opens.
    ``faults``: the faults switched on, name -> parameters (see ``FAULT_DEFAULTS``).
    """

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    scenario: str = "healthy"
    workflow_error_rate: float = 0.02
    pool_size: int = 5
    max_overflow: int = 5
    faults: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self):
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {SCENARIOS}")
        self.faults = {name: fault_params(name, params) for name, params in self.faults.items()}

    @classmethod
    def load(cls, path: Path) -> "AppConfig":
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        write_private_json(path, asdict(self))
