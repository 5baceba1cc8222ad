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
    "migration": {"name": "20251202020032_update_user_schema_final", "migrations_dir": "include/prisma/migrations",
                  "down_sql": "include/sql/rollback/20251202020032_update_user_schema_final.down.sql",
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


# --- what the charts must say: fitted range, deciding reading, stop, readable labels -------------

def _fig(check_id, observations, **kw):
    return charts.figure(PLAN, PLAN.check(check_id), observations, H0, SCALE, **kw)


def _labels(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_far_thresholds_become_edge_arrows_and_the_data_keeps_its_range():
    lo, hi, inside = charts.y_layout([200.0, 215.0], [500.0, 1000.0], "ms")
    assert inside == [False, False] and 195 <= lo <= 200 and 215 <= hi <= 220
    lo, hi, inside = charts.y_layout([200.0, 480.0], [500.0, 1000.0], "ms")
    assert inside == [True, False] and hi == 500.0  # near the data: a line, inside the range
    fig = _fig("login_p95", [o for o in soak() if o.check_id == "login_p95" and (o.value or 0) < 300])
    ax = fig.axes[0]
    assert ax.get_ylim()[1] < 500  # not squashed down to make room for 500 and 1,000 ms
    assert any("expected < 500 ms ↑" in t.get_text() and "NO-GO level > 1,000 ms ↑" in t.get_text() for t in ax.texts)


def test_the_deciding_reading_is_a_star_not_an_orange_warn():
    readings = [obs("login_p95", "intensive", k, 0.25 * k, 210.0, "pass") for k in range(1, 4)]
    readings.append(obs("login_p95", "intensive", 4, 1.0, 450.0, "warn"))  # a warn by itself, a breach by its rule
    fig = _fig("login_p95", readings, deciding=[("intensive", 4, "+48% vs baseline")], stop_hours=1.0,
               stop_label="NO-GO stop")
    ax = fig.axes[0]
    for coll in ax.collections:
        offsets = [tuple(p) for p in coll.get_offsets()]
        color = tuple(round(c, 3) for c in coll.get_facecolor()[0][:3])
        if (1.0, 450.0) in offsets:
            assert color == tuple(round(int(charts.DECIDING[i:i + 2], 16) / 255, 3) for i in (1, 3, 5))
    labels = _labels(fig)
    assert not any(label.startswith("warn") for label in labels)
    assert "decided NO-GO: 450 ms at intensive tick 4 (+48% vs baseline)" in labels
    assert "NO-GO stop at soak 1:00" in labels
    assert any(line.get_xdata()[0] == 1.0 for line in ax.lines if line.get_color() == charts.DECIDING)


def test_legend_counts_add_up_to_the_readings():
    readings = soak()
    for check_id in ("auth_error_rate", "login_p95", "gateway_health"):
        mine = [o for o in readings if o.check_id == check_id]
        labels = _labels(_fig(check_id, mine, deciding=[("passive", 5, "")]))
        counted = sum(int(label.rsplit("(", 1)[1].rstrip(")")) for label in labels
                      if label.split(" (")[0] in ("pass", "warn", "fail", "not measured"))
        stars = sum(1 for label in labels if label.startswith("decided NO-GO"))
        assert counted + stars == len(mine), labels


def test_bytes_are_drawn_in_mib_without_e_notation(tmp_path):
    plan = load_plan("default")
    mem = [Observation("r", "intensive", "app_memory", k, H0 + timedelta(hours=0.25 * k) / SCALE,
                       H0 + timedelta(hours=0.25 * k) / SCALE, 1.02e8 + 3e6 * k, "bytes", "pass") for k in range(1, 9)]
    fig = charts.figure(plan, plan.check("app_memory"), mem, H0, SCALE)
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ax.get_ylabel() == "MiB" and ticks and not any("e" in t.lower() for t in ticks)
    assert 90 < ax.get_ylim()[0] < 100 and 120 < ax.get_ylim()[1] < 130  # MiB, fitted to the data


def test_labels_never_overlap():
    plan = load_plan("default")
    readings = [Observation("r", "baseline", "login_p95", k, H0, H0, 200.0, "ms", "pass") for k in range(1, 5)]
    readings += [o for o in soak() if o.check_id == "login_p95" and o.phase != "baseline"]
    fig = charts.figure(plan, plan.check("login_p95"), readings, H0, SCALE, deciding=[("passive", 4, "")],
                        stop_hours=20.0, stop_label="NO-GO stop, then rollback")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip() and t.get_visible()]
    boxes = [b for b, t in zip(boxes, [t for t in ax.texts if t.get_text().strip()]) if "not measured" not in t.get_text()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    legend = fig.legends[0].get_window_extent(renderer)
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.width and legend.y0 >= 0
    assert legend.y1 <= ax.xaxis.label.get_window_extent(renderer).y0 + 1  # below the x label


def test_every_title_of_the_default_plan_fits_in_its_figure():
    """A new user found ``incremental_backup``'s title cut at the right edge."""
    plan = load_plan("default")
    for check in sorted(plan.checks, key=lambda c: -len(c.title))[:3]:
        reading = Observation("r", "regular", check.id, 1, H0 + timedelta(hours=1), H0 + timedelta(hours=1), 1.0,
                              check.unit, "pass")
        fig = charts.figure(plan, check, [reading], H0, SCALE)
        fig.canvas.draw()
        title = fig.axes[0]._left_title  # set_title(loc="left"); matplotlib has no public getter of the artist
        assert title.get_text().startswith(check.title)
        box = title.get_window_extent(fig.canvas.get_renderer())
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (check.id, box)
        assert title.get_fontsize() >= 7


# --- the layers one by one -----------------------------------------------------------------------

def _chart(check_id: str, observations: list[Observation]) -> charts._Chart:
    from matplotlib.figure import Figure

    fig = Figure()
    unit = PLAN.check(check_id).unit
    return charts._Chart(fig, fig.add_subplot(), unit, charts.scale_of(unit),
                         {id(o): charts.x_of(PLAN, o, H0, SCALE) for o in observations})


def test_x_of_needs_hour0_only_after_the_migration():
    base = obs("login_p95", "baseline", 2, -0.75, 190.0, "pass")
    assert charts.x_of(PLAN, base, None, SCALE) == pytest.approx((2 * 15 - 60 - 7.5) / 60)
    assert charts.x_of(PLAN, obs("login_p95", "hour0", 0, 0, 200.0, "pass"), None, SCALE) == 0.0
    with pytest.raises(ValueError, match="login_p95 intensive tick 1: no hour 0"):
        charts.x_of(PLAN, obs("login_p95", "intensive", 1, 0.25, 200.0, "pass"), None, SCALE)


def test_readings_layers_count_each_reading_once_in_the_legend():
    readings = [obs("login_p95", "intensive", k, 0.25 * k, 200.0 + k, "pass") for k in range(1, 4)]
    readings += [obs("login_p95", "intensive", 4, 1.0, 600.0, "warn"), obs("login_p95", "intensive", 5, 1.25, None, "error")]
    chart = _chart("login_p95", readings)
    measured = charts._measured(readings)
    decided = {("intensive", 4): "+190% vs baseline"}
    charts._draw_statuses(chart, measured, decided)
    charts._draw_errors(chart, readings)
    charts._draw_deciding(chart, measured, decided)
    assert [h.get_label() for h in chart.handles] == [
        "pass (3)", "not measured (1)", "decided NO-GO: 600 ms at intensive tick 4 (+190% vs baseline)"]
    assert len(chart.ax.collections) == 3


def test_threshold_layer_draws_near_levels_and_returns_far_ones_for_the_edges():
    readings = [obs("login_p95", "intensive", k, 0.25 * k, v, "pass") for k, v in enumerate((300.0, 400.0, 480.0), 1)]
    chart = _chart("login_p95", readings)
    lo, hi, above, below = charts._draw_thresholds(chart, PLAN.check("login_p95"), charts._measured(readings), None)
    assert [h.get_label() for h in chart.handles] == ["expected < 500 ms"]  # near the data: a line
    assert above == [("NO-GO level > 1,000 ms", charts.COLORS["fail"])] and below == []
    assert lo == 300.0 and hi == 500.0  # the range grows to the line drawn


def test_stop_layer_shades_after_the_stop_and_labels_it():
    readings = [obs("login_p95", "intensive", 1, 0.25, 200.0, "pass")]
    chart = _chart("login_p95", readings)
    chart.ax.set_xlim(-1, 25)
    charts._draw_stop(chart, 2.5, "")
    assert [h.get_label() for h in chart.handles] == ["soak stopped at soak 2:30"]
    assert [t.get_text() for t in chart.ax.texts] == ["not measured: the soak stopped"]
    charts._draw_stop(chart, None, "ignored")
    assert len(chart.handles) == 1


def test_phase_names_take_the_first_free_label_row():
    taken: list[list[tuple[float, float]]] = [[(0.5, 1.0)], []]
    assert charts._label_row(taken, 0.1, 0.2) == 0  # left of the arrow label
    assert charts._label_row(taken, 0.6, 0.7) == 1  # under it
    assert charts._label_row(taken, 0.65, 0.8) == 2  # both rows taken there: a third row
    assert charts._label_row(taken, 0.66, 0.75) == 2  # never more than three rows
    assert taken[2] == [(0.65, 0.8), (0.66, 0.75)]


@pytest.mark.parametrize("end_hour", [24, 48, 168])
def test_the_hour_axis_stays_readable_up_to_the_longest_soak(end_hour):
    """The x axis had a label every 2 soak hours whatever the soak's length: at 168 h (the
    longest a plan may ask for) 86 labels ran into each other."""
    from migration_soak.charts import _x_step

    plan = PLAN.model_copy(update={"phases": [*PLAN.phases[:2],
                                              PLAN.phases[2].model_copy(update={"end_hour": end_hour})]})
    span = plan.soak_hours() + 1  # the baseline hour before hour 0
    step = _x_step(span)
    assert span / step <= 13 and step in (1, 2, 3, 4, 6, 12, 24)
    if end_hour == 24:
        assert step == 2  # the default soak's axis as before
