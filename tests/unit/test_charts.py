"""Charts for the report: one readable PNG per check with observations, quickly."""

from __future__ import annotations

import struct
import time
from datetime import datetime, timedelta, timezone

import pytest

from migration_soak import charts
from migration_soak.plan import load_plan, parse_plan
from migration_soak.store import Observation

H0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SCALE = 360.0  # the demo's: 24 soak hours in 4 wall minutes

PLAN = parse_plan({
    "name": "charts",
    "migration": {"name": "m", "migrations_dir": "demo/prisma/migrations", "down_sql": "x.sql",
                  "dropped_columns": ["passwordHash"]},
    "restart": {"connection": "soak_gateway", "endpoint": "/admin/reload"},
    "phases": [{"name": "intensive", "start_hour": 0, "end_hour": 2, "every_minutes": 15},
               {"name": "regular", "start_hour": 2, "end_hour": 8, "every_minutes": 60},
               {"name": "passive", "start_hour": 8, "end_hour": 24, "every_minutes": 240}],
    "baseline": {"minutes": 60, "every_minutes": 15, "checks": ["login_p95"]},
    "checks": [
        {"id": "auth_error_rate", "title": "Authentication error rate", "unit": "ratio",
         "source": {"kind": "openmetrics", "connection": "soak_gateway", "measure": "counter_ratio",
                    "metric": "http_requests_total", "numerator": {"status": "5.."}},
         "expect": {"op": "<", "value": 0.001}, "no_go": {"op": ">", "value": 0.01}, "rule": "seed"},
        {"id": "login_p95", "title": "/auth/login p95", "unit": "ms",
         "source": {"kind": "openmetrics", "connection": "soak_gateway", "measure": "histogram_quantile",
                    "metric": "http_request_duration_seconds", "quantile": 0.95},
         "expect": {"op": "<", "value": 500}, "no_go": {"op": ">", "value": 1000}, "rule": "seed"},
        {"id": "gateway_health", "title": "Gateway /health", "unit": "up",
         "source": {"kind": "http", "connection": "soak_gateway"}, "expect": {"op": "==", "value": 1}, "rule": "seed"},
        {"id": "authorizer_health", "title": "Authorizer /health", "unit": "up",
         "source": {"kind": "http", "connection": "soak_authorizer"}, "expect": {"op": "==", "value": 1}, "rule": "seed"},
    ],
}, "<charts test>")


def obs(check_id: str, phase: str, tick: int, hours: float, value: float | None, status: str) -> Observation:
    at = H0 + timedelta(hours=hours) / SCALE
    return Observation("r", phase, check_id, tick, at, at, value, PLAN.check(check_id).unit, status,
                       {} if value is not None else {"error": "connection refused"})


def soak() -> list[Observation]:
    out = []
    for k in range(1, 5):  # baseline: the hour before the migration
        out.append(obs("login_p95", "baseline", k, -1 + 0.25 * (k - 1), 180 + 10 * k, "pass"))
    for cid, good in (("auth_error_rate", 0.0004), ("login_p95", 210.0)):
        out.append(obs(cid, "hour0", 0, 0, good, "pass"))
        for k in range(1, 9):
            out.append(obs(cid, "intensive", k, 0.25 * k, good * (1 + 0.1 * k), "pass"))
        for k in range(1, 7):
            out.append(obs(cid, "regular", k, 2 + k, good * 3 if k == 3 else good, "warn" if k == 3 else "pass"))
        for k in range(1, 5):
            out.append(obs(cid, "passive", k, 8 + 4 * k, None if k == 2 else good, "error" if k == 2 else "pass"))
    out.append(obs("auth_error_rate", "passive", 5, 23.5, 0.02, "fail"))
    out += [obs("gateway_health", "regular", k, 2 + k, None, "error") for k in range(1, 4)]
    return out


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", data[16:24])


def test_one_png_per_check_with_observations(tmp_path):
    written = charts.render(PLAN, soak(), H0, SCALE, tmp_path / "charts")
    assert list(written) == ["auth_error_rate", "login_p95", "gateway_health"]  # plan order; no data, no chart
    assert sorted(p.name for p in (tmp_path / "charts").iterdir()) == sorted(f"{c}.png" for c in written)
    for path in written.values():
        assert png_size(path) == (720, 288)
        assert 5_000 < path.stat().st_size < 80_000


def test_a_check_with_only_errors_still_gets_a_chart(tmp_path):
    only_errors = [o for o in soak() if o.check_id == "gateway_health"]
    assert {o.status for o in only_errors} == {"error"}
    written = charts.render(PLAN, only_errors, H0, SCALE, tmp_path)
    assert list(written) == ["gateway_health"] and png_size(written["gateway_health"]) == (720, 288)


def test_the_pngs_decode_to_pictures(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    written = charts.render(PLAN, soak(), H0, SCALE, tmp_path)
    pixels = image.imread(written["auth_error_rate"])
    assert pixels.shape[:2] == (288, 720)
    assert pixels[..., :3].std() > 0.05  # not a blank image


def test_soak_hours_from_wall_time():
    assert charts.soak_hours(H0 + timedelta(seconds=10), H0, SCALE) == pytest.approx(1.0)
    assert charts.soak_hours(H0 - timedelta(seconds=5), H0, SCALE) == pytest.approx(-0.5)  # baseline


def test_rendering_is_fast_on_a_whole_default_soak(tmp_path, capsys):
    plan = load_plan("default")
    observations = []
    for n, (phase, cid) in enumerate(plan.schedule()):
        ticks = [0] if phase == "hour0" else range(1, len(plan.phase(phase).tick_offsets()) + 1)
        for tick in ticks:
            hours = 0 if phase == "hour0" else plan.phase(phase).tick_offsets()[tick - 1].total_seconds() / 3600
            at = H0 + timedelta(hours=hours) / SCALE
            observations.append(Observation("r", phase, cid, tick, at, at, 1.0 + (n + tick) % 3,
                                            plan.check(cid).unit, "pass"))
    charts.render(plan, observations[:1], H0, SCALE, tmp_path / "warm")  # matplotlib's first import and fonts
    started = time.perf_counter()
    written = charts.render(plan, observations, H0, SCALE, tmp_path / "all")
    per_chart = (time.perf_counter() - started) / len(written)
    sizes = [p.stat().st_size for p in written.values()]
    with capsys.disabled():
        print(f"\ncharts: {len(written)} checks, {per_chart * 1000:.0f} ms per chart, "
              f"{min(sizes) // 1000}-{max(sizes) // 1000} kB")
    assert len(written) == len({cid for _, cid in plan.schedule()})
    assert per_chart < 0.5  # about 0.1 s on a 2-core machine; generous for loaded CI runners
