"""One chart per check for the report: what was measured, when, against which thresholds.

Seed, "Documentación de Resultados". x: soak hours from hour 0; y: the check's unit;
points by status, the deciding reading and the stop marked, phase boundaries dashed.
Matplotlib's object API on the Agg canvas (no ``pyplot``): safe inside a worker.

Design notes: docs/design.md#chartspy
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from migration_soak.judge import format_condition, format_value
from migration_soak.plan import Check, Plan
from migration_soak.rules import baseline_value
from migration_soak.store import Observation

COLORS = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828", "error": "#c62828"}
DECIDING = "#b71c1c"
_SIZE_IN = (8.0, 3.2)
_DPI = 90
_LEFT, _RIGHT, _TOP, _BOTTOM = 0.09, 0.985, 0.9, 0.3  # bottom: grows with the legend
_FONT = 7.5
_LEGEND_FONT = 7
#: Width of one character of a ``_FONT`` pt label, in axes fractions (DejaVu Sans averages ~0.6 em).
_CHAR = _FONT * 0.6 / 72 / (_SIZE_IN[0] * (_RIGHT - _LEFT))
#: Characters of a 9.5 pt title that fit between the axes' left edge and the figure's right one.
_TITLE_CHARS = 95
#: Smallest y span drawn, per unit (in drawn units: % for ratios, MiB for bytes).
_MIN_SPAN = {"ratio": 1.0, "bytes": 1.0, "ms": 5.0, "seconds": 1.0, "up": 1.0, "count": 2.0, "rows": 2.0,
             "per_minute": 10.0}


def soak_hours(at: datetime, hour0: datetime, time_scale: float) -> float:
    """Soak hours from hour 0 of a wall-clock time (negative before hour 0)."""
    return (at - hour0).total_seconds() * time_scale / 3600.0


def scale_of(unit: str) -> float:
    """Factor from the stored unit to the drawn one (ratio -> %, bytes -> MiB)."""
    return {"ratio": 100.0, "bytes": 1.0 / 2**20}.get(unit, 1.0)


def x_of(plan: Plan, o: Observation, hour0: datetime | None, time_scale: float) -> float:
    """Where a reading sits on the soak-hours axis (see the module doc). Raises
    ``ValueError`` for a reading after hour 0 when ``hour0`` is unknown (``None``)."""
    if o.phase == "hour0":
        return 0.0
    if o.phase == "baseline" and plan.baseline:
        return (o.tick * plan.baseline.every_minutes - plan.baseline.minutes - plan.baseline.every_minutes / 2) / 60
    if hour0 is None:
        raise ValueError(f"{o.check_id} {o.phase} tick {o.tick}: no hour 0 to place it from")
    return soak_hours(o.scheduled_at, hour0, time_scale)


def render(
    plan: Plan,
    observations: Iterable[Observation],
    hour0: datetime | None,
    time_scale: float,
    out_dir: Path,
    *,
    deciding: dict[str, list[tuple[str, int, str]]] | None = None,
    stop_hours: float | None = None,
    stop_label: str = "",
) -> dict[str, Path]:
    """Write ``out_dir/<check_id>.png`` for every check of ``plan`` that has readings
    (``error`` ones included: a check that never measured gets a chart saying so).

    ``hour0``: wall time of soak hour 0 (UTC; ``None``: unknown, then a reading
    after hour 0 raises ``ValueError``); ``deciding``: per check, the readings
    (phase, tick, label) that decided a NO-GO; ``stop_hours``: soak hour the soak
    stopped at. Returns ``{check_id: path}`` in plan order; readings of checks the plan
    does not name are ignored.
    """
    by_check: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        by_check[obs.check_id].append(obs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for check in plan.checks:
        if by_check.get(check.id):
            written[check.id] = render_check(plan, check, by_check[check.id], hour0, time_scale,
                                             out_dir / f"{check.id}.png", deciding=(deciding or {}).get(check.id, ()),
                                             stop_hours=stop_hours, stop_label=stop_label)
    return written


def _y_range(values: list[float], unit: str) -> tuple[float, float]:
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if unit in ("count", "rows", "up") and lo >= 0:  # counts read from 0
        lo = 0.0
    floor = _MIN_SPAN.get(unit, 1.0)
    if hi - lo < floor:
        mid = (hi + lo) / 2
        lo, hi = mid - floor / 2, mid + floor / 2
        if min(values or [0.0]) >= 0 and lo < 0:  # non-negative data: keep the axis at 0
            lo, hi = 0.0, floor
    return lo, hi


def render_check(
    plan: Plan,
    check: Check,
    observations: list[Observation],
    hour0: datetime | None,
    time_scale: float,
    path: Path,
    *,
    deciding: Iterable[tuple[str, int, str]] = (),
    stop_hours: float | None = None,
    stop_label: str = "",
) -> Path:
    """Draw one check's chart to ``path`` (PNG); see the module doc."""
    fig = figure(plan, check, observations, hour0, time_scale, deciding=deciding, stop_hours=stop_hours,
                 stop_label=stop_label)
    path = Path(path)
    fig.savefig(path, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def y_layout(values: list[float], levels: list[float], unit: str) -> tuple[float, float, list[bool]]:
    """The y range (drawn units) for ``values`` and which threshold ``levels`` it shows as
    lines (``True``); the others are too far from the data and get an arrow at the edge."""
    lo, hi = _y_range(values, unit)
    span = hi - lo
    inside = [lo - 0.6 * span <= level <= hi + 0.6 * span for level in levels]
    for level, shown in zip(levels, inside):
        if shown:
            lo, hi = min(lo, level), max(hi, level)
    return lo, hi, inside


@dataclass
class _Chart:
    """One chart being drawn: the figure and its axes, the check's unit and its factor to
    the drawn unit (``k``), each reading's x (soak hours, by ``id``), the legend so far."""

    fig: Any
    ax: Any
    unit: str
    k: float
    x: dict[int, float]
    handles: list[Any] = field(default_factory=list)

    def frac(self, h: float) -> float:
        """Soak hour ``h`` as a fraction of the x axis (after the x range is set)."""
        x0, x1 = self.ax.get_xlim()
        return (h - x0) / (x1 - x0)


class _Point(NamedTuple):
    """A reading with a value: the observation and its value in the check's stored unit."""

    o: Observation
    value: float


def _measured(observations: list[Observation]) -> list[_Point]:
    return [_Point(o, o.value) for o in observations if o.value is not None and o.status != "error"]


def _draw_statuses(chart: _Chart, measured: list[_Point], decided: dict[tuple[str, int], str]) -> None:
    """Layer: readings as dots coloured by status (the deciding ones are drawn apart)."""
    from matplotlib.lines import Line2D

    for status in ("pass", "warn", "fail"):
        plain = [p for p in measured if p.o.status == status and (p.o.phase, p.o.tick) not in decided]
        if plain:
            chart.ax.scatter([chart.x[id(p.o)] for p in plain], [p.value * chart.k for p in plain], s=18,
                             color=COLORS[status], zorder=3, linewidths=0)
            chart.handles.append(Line2D([], [], ls="", marker="o", ms=5, color=COLORS[status],
                                        label=f"{status} ({len(plain)})"))


def _draw_errors(chart: _Chart, observations: list[Observation]) -> None:
    """Layer: readings without a value as red crosses along the bottom edge, "not measured
    (N)" in the legend (never "error (N)": on an error rate's chart it read as failed requests)."""
    from matplotlib.lines import Line2D

    errors = [o for o in observations if o.status == "error" or o.value is None]
    if errors:
        chart.ax.scatter([chart.x[id(o)] for o in errors], [0.04] * len(errors), marker="x", s=28,
                         color=COLORS["error"], transform=chart.ax.get_xaxis_transform(), zorder=3, linewidths=1.4,
                         clip_on=False)
        chart.handles.append(Line2D([], [], ls="", marker="x", ms=6, color=COLORS["error"],
                                    label=f"not measured ({len(errors)})"))


def _draw_deciding(chart: _Chart, measured: list[_Point], decided: dict[tuple[str, int], str]) -> None:
    """Layer: the readings that decided a NO-GO as large red stars, whatever their status."""
    from matplotlib.lines import Line2D

    stars = [p for p in measured if (p.o.phase, p.o.tick) in decided]
    if not stars:
        return
    chart.ax.scatter([chart.x[id(p.o)] for p in stars], [p.value * chart.k for p in stars], marker="*", s=170,
                     color=DECIDING, edgecolors="black", linewidths=0.6, zorder=5)
    last = stars[-1]
    extra = decided[(last.o.phase, last.o.tick)]
    label = (f"decided NO-GO: {format_value(last.value, chart.unit)} at {last.o.phase} tick {last.o.tick}"
             + (f" ({extra})" if extra else "") + (f" (+{len(stars) - 1} more)" if len(stars) > 1 else ""))
    chart.handles.append(Line2D([], [], ls="", marker="*", ms=11, color=DECIDING, markeredgecolor="black",
                                markeredgewidth=0.6, label=label))


#: A threshold off the y range: its label and colour.
_EdgeLabel = tuple[str, str]


def _draw_thresholds(chart: _Chart, check: Check, measured: list[_Point],
                     median: float | None) -> tuple[float, float, list[_EdgeLabel], list[_EdgeLabel]]:
    """Layer: the expected and NO-GO levels as dashed lines when near the data. Returns the
    y range (drawn units) and the levels above and below it (drawn later as edge arrows)."""
    from matplotlib.lines import Line2D

    lines = [(c, color, name) for c, color, name in ((check.expect, COLORS["pass"], "expected"),
                                                      (check.no_go, COLORS["fail"], "NO-GO level")) if c is not None]
    values = [p.value * chart.k for p in measured]
    lo, hi, inside = y_layout(values + ([median] if median is not None else []),
                              [c.value * chart.k for c, _, _ in lines], chart.unit)
    above: list[_EdgeLabel] = []
    below: list[_EdgeLabel] = []
    for (cond, color, name), shown in zip(lines, inside):
        level = cond.value * chart.k
        text = f"{name} {format_condition(cond, chart.unit)}"
        if shown:  # near the data: a line, inside the range
            chart.ax.axhline(level, color=color, ls="--", lw=1, alpha=0.85, zorder=2)
            chart.handles.append(Line2D([], [], color=color, ls="--", lw=1, label=text))
        else:
            (above if level > hi else below).append((text, color))
    return lo, hi, above, below


def _draw_median(chart: _Chart, median: float | None, label: str = "baseline median") -> None:
    """Layer: the baseline (its median, or its requests' pooled quantile) as a dotted blue line."""
    from matplotlib.lines import Line2D

    if median is None:
        return
    chart.ax.axhline(median, color="#1565c0", ls=":", lw=1.3, zorder=2)
    chart.handles.append(Line2D([], [], color="#1565c0", ls=":", lw=1.3,
                                label=f"{label} {format_value(median / chart.k, chart.unit)}"))


def _set_y_axis(chart: _Chart, lo: float, hi: float, room_above: bool, room_below: bool) -> None:
    """The y range with room for edge labels and error crosses; ticks without e-notation."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    span = hi - lo
    top_room, bottom_room = 0.42 if room_above else 0.32, 0.4 if room_below else 0.18
    chart.ax.set_ylim(lo - bottom_room * span, hi + top_room * span)
    chart.ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    if chart.unit == "up":
        chart.ax.set_yticks([0, 1])
        chart.ax.set_yticklabels(["down", "up"])
    else:
        chart.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v)))


def _set_x_axis(chart: _Chart, plan: Plan) -> float:
    """The x range: the whole soak, and the baseline hour before it when there is one.
    Returns its left end (soak hours; negative with baseline readings)."""
    from matplotlib.ticker import MultipleLocator

    end = plan.soak_hours()
    xs = list(chart.x.values())
    left = min(min(xs), 0.0)
    pad = 0.02 * (end - left) + 0.1
    chart.ax.set_xlim(left - pad, max(max(xs), end) + pad)
    chart.ax.xaxis.set_major_locator(MultipleLocator(_x_step(end - left)))
    return left


#: Steps of the hour axis's labels, in soak hours.
_X_STEPS = (1, 2, 3, 4, 6, 12, 24)


def _x_step(span_hours: float) -> int:
    """Soak hours between two labels of an hour axis ``span_hours`` long: the first of
    :data:`_X_STEPS` giving at most 13 labels (2 for the default 24 h and its baseline
    hour; every 12 h at the longest soak, plan.MAX_SOAK_HOURS). It was 2 whatever the
    length: 86 labels ran into each other at 168 h."""
    return next((s for s in _X_STEPS if span_hours / s <= 13), _X_STEPS[-1])


#: Label rows at the top: occupied (from, to) spans in axes fractions, per row.
_Rows = list[list[tuple[float, float]]]


def _draw_edge_arrows(chart: _Chart, above: list[_EdgeLabel], below: list[_EdgeLabel]) -> _Rows:
    """Layer: thresholds off the chart as an arrow at the edge, labelled, right-aligned.
    Returns the label rows at the top with the space the upper label takes."""
    taken: _Rows = [[], []]
    for items, y_edge, up, va in ((above, 0.985, True, "top"), (below, 0.085, False, "bottom")):
        if not items:
            continue
        text = "   ".join(f"{t} {'↑' if up else '↓'}" for t, _ in items)
        right = 0.985
        chart.ax.annotate("", xy=(0.995, 1.0 if up else 0.0), xytext=(0.995, 0.86 if up else 0.14),
                          xycoords="axes fraction",
                          arrowprops={"arrowstyle": "-|>", "color": items[-1][1], "lw": 1.4})
        chart.ax.text(right, y_edge, text, transform=chart.ax.transAxes, ha="right", va=va, fontsize=_FONT,
                      color=items[-1][1], bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none",
                                                "alpha": 0.85}, zorder=6)
        if up:
            taken[0].append((right - len(text) * _CHAR - 0.01, 1.0))
    return taken


def _draw_stop(chart: _Chart, stop_hours: float | None, stop_label: str) -> None:
    """Layer: the stop as a red vertical line, the soak time after it shaded (nothing was measured there)."""
    from matplotlib.lines import Line2D

    if stop_hours is None:
        return
    x1 = chart.ax.get_xlim()[1]
    chart.ax.axvline(stop_hours, color=DECIDING, lw=1.6, zorder=4)
    chart.ax.axvspan(stop_hours, x1, color="#9e9e9e", alpha=0.12, zorder=0, lw=0)
    minutes = round(stop_hours * 60)
    chart.handles.append(Line2D([], [], color=DECIDING, lw=1.6,
                                label=f"{stop_label or 'soak stopped'} at soak {minutes // 60}:{minutes % 60:02d}"))
    if chart.frac(x1) - chart.frac(stop_hours) > 0.3:
        chart.ax.text((chart.frac(stop_hours) + 1) / 2, 0.5, "not measured: the soak stopped",
                      transform=chart.ax.transAxes, ha="center", va="center", fontsize=9, color="#757575", zorder=1)


def _label_row(taken: _Rows, f0: float, f1: float) -> int:
    """The first of 3 label rows where (f0, f1) overlaps nothing (the last row if none is free);
    the span is recorded as taken."""
    row = next((r for r in range(3) if all(f1 <= a or f0 >= b for a, b in (taken[r] if r < len(taken) else []))), 2)
    while len(taken) <= row:
        taken.append([])
    taken[row].append((f0, f1))
    return row


def _draw_phases(chart: _Chart, plan: Plan, left: float, taken: _Rows) -> None:
    """Layer: phase boundaries (hour 0 solid) and names, left-aligned in each phase, in the
    first label row where they overlap nothing (the arrow labels included)."""
    spans = [(p.name, p.start_hour) for p in plan.phases]
    if left < 0:
        spans.insert(0, ("baseline", left))
    bounds = sorted({*(p.start_hour for p in plan.phases), *(p.end_hour for p in plan.phases)} - {0.0})
    for b in bounds:
        chart.ax.axvline(b, color="#757575", ls="--", lw=0.8, zorder=1)
    chart.ax.axvline(0.0, color="#424242", ls="-", lw=1, zorder=1)
    for name, start in spans:
        f0 = chart.frac(start) + 0.004
        row = _label_row(taken, f0, f0 + (len(name) + 1) * _CHAR)
        chart.ax.text(f0, 0.975 - 0.095 * row, name, transform=chart.ax.transAxes, ha="left", va="top",
                      fontsize=_FONT, color="#424242",
                      bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75}, zorder=6)


def _label_axes(chart: _Chart, check: Check, left: float, any_value: bool) -> None:
    """Title, axis labels, tick size, grid; a note when no reading has a value."""
    ax = chart.ax
    title = f"{check.title}  [{check.id}]"
    # one line across the figure: about _TITLE_CHARS at 9.5 pt, a longer title in a smaller font
    ax.set_title(title, fontsize=min(9.5, 9.5 * _TITLE_CHARS / len(title)), loc="left", pad=5)
    ax.set_xlabel("soak hours from hour 0 (baseline: the hour before the migration)" if left < 0
                  else "soak hours from hour 0", fontsize=8)
    ax.set_ylabel({"ratio": "%", "bytes": "MiB", "up": "", "per_minute": "per minute"}.get(chart.unit, chart.unit),
                  fontsize=8)
    ax.tick_params(labelsize=_FONT)
    ax.grid(axis="y", color="#e0e0e0", lw=0.6, zorder=0)
    if not any_value:
        ax.text(0.5, 0.5, "no value measured: every reading is an error", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color=COLORS["error"])


def _draw_legend(chart: _Chart) -> None:
    """The legend below the axes, as many columns as fit; the bottom margin grows with its rows."""
    ncol, rows = _legend_shape([str(h.get_label()) for h in chart.handles])
    chart.fig.subplots_adjust(bottom=0.2 + 0.05 * rows)
    chart.fig.legend(handles=chart.handles, loc="lower center", ncol=ncol, fontsize=_LEGEND_FONT, frameon=False,
                     bbox_to_anchor=(0.5, 0.0), columnspacing=1.2, handletextpad=0.4)


def figure(
    plan: Plan,
    check: Check,
    observations: list[Observation],
    hour0: datetime | None,
    time_scale: float,
    *,
    deciding: Iterable[tuple[str, int, str]] = (),
    stop_hours: float | None = None,
    stop_label: str = "",
) -> Any:
    """One check's chart as a matplotlib ``Figure`` (Agg canvas); see the module doc.
    ``observations``: at least one (the x range comes from them). Raises ``ValueError``
    for a reading after hour 0 when ``hour0`` is ``None``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE_IN, dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=_LEFT, right=_RIGHT, top=_TOP, bottom=_BOTTOM)
    chart = _Chart(fig, fig.add_subplot(), check.unit, scale_of(check.unit),
                   {id(o): x_of(plan, o, hour0, time_scale) for o in observations})
    decided = {(phase, tick): label for phase, tick, label in deciding}
    measured = _measured(observations)
    # Layers in drawing order: it sets the legend's order and which mark lies on top.
    _draw_statuses(chart, measured, decided)
    _draw_errors(chart, observations)
    _draw_deciding(chart, measured, decided)
    # the baseline the relative rules compare with: the baseline's requests pooled (p95s
    # with histograms), else the median of its readings
    baseline = baseline_value([p.o for p in measured if p.o.phase == "baseline"])
    median = baseline * chart.k if baseline is not None else None
    lo, hi, above, below = _draw_thresholds(chart, check, measured, median)
    _draw_median(chart, median, "baseline median" if baseline is None or baseline.pooled is None
                 else f"baseline p{baseline.pooled.quantile * 100:g} of its requests")
    _set_y_axis(chart, lo, hi, bool(above), bool(below))
    left = _set_x_axis(chart, plan)
    taken = _draw_edge_arrows(chart, above, below)
    _draw_stop(chart, stop_hours, stop_label)
    _draw_phases(chart, plan, left, taken)
    _label_axes(chart, check, left, bool(measured))
    _draw_legend(chart)
    return fig


def _legend_shape(labels: list[str]) -> tuple[int, int]:
    """(columns, rows) of the legend: as many columns as fit the figure's width."""
    if not labels:
        return 1, 0
    char_in = _LEGEND_FONT * 0.62 / 72
    entry_in = (2.0 + 0.4 + 1.2) * _LEGEND_FONT / 72  # handle, its padding, column spacing
    for ncol in range(min(len(labels), 4), 0, -1):
        rows = -(-len(labels) // ncol)
        columns = [labels[j * rows:(j + 1) * rows] for j in range(ncol)]  # matplotlib fills column by column
        width = sum(max(len(t) for t in col) * char_in + entry_in for col in columns if col)
        if width <= _SIZE_IN[0] * 0.96:
            return ncol, rows
    return 1, len(labels)


def _tick(v: float) -> str:
    """A y tick label without e-notation or an offset."""
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    text = f"{v:.4f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
