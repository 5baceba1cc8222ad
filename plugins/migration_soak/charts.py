"""One chart per check for the report: what was measured, when, against which thresholds.

The seed asks the soak to explain itself ("Documentación de Resultados" with real
figures); a table of ranges hides *when* a value moved. Each chart shows a check's
observations over soak time:

- x: soak hours from hour 0 (wall ``scheduled_at`` converted with ``time_scale``), so a
  compressed demo and a real 24 h soak draw alike; baseline observations, taken before
  the migration, fall at negative hours;
- y: the check's unit (a ratio in %);
- points coloured by status (pass green, warn orange, fail red); ``error`` observations
  have no value and show as red crosses along the bottom;
- horizontal lines at the check's ``expect`` and ``no_go`` thresholds, a dotted line at
  the baseline median when there is a baseline, and dashed vertical lines at the phase
  boundaries with the phases' names.

Matplotlib's object API on the Agg canvas (no ``pyplot``, no global backend switch), so
it is safe inside a worker; about 0.1 s and 20-40 kB per chart.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Iterable

from migration_soak.plan import Check, Condition, Plan
from migration_soak.store import Observation

COLORS = {"pass": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828", "error": "#c62828"}
_SIZE_IN = (8.0, 3.2)
_DPI = 90


def soak_hours(at: datetime, hour0: datetime, time_scale: float) -> float:
    """Soak hours from hour 0 of a wall-clock time (negative before hour 0)."""
    return (at - hour0).total_seconds() * time_scale / 3600.0


def render(
    plan: Plan, observations: Iterable[Observation], hour0: datetime, time_scale: float, out_dir: Path
) -> dict[str, Path]:
    """Write ``out_dir/<check_id>.png`` for every check of ``plan`` that has observations
    (``error`` ones included: a check that never measured gets a chart saying so).

    Returns ``{check_id: path}`` in plan order. Observations of checks the plan does not
    name are ignored.
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
                                             out_dir / f"{check.id}.png")
    return written


def render_check(
    plan: Plan, check: Check, observations: list[Observation], hour0: datetime, time_scale: float, path: Path
) -> Path:
    """Draw one check's chart to ``path`` (PNG); see the module doc."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MultipleLocator

    scale = 100.0 if check.unit == "ratio" else 1.0
    fig = Figure(figsize=_SIZE_IN, dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.09, right=0.985, top=0.9, bottom=0.25)
    ax = fig.add_subplot()
    handles = []

    # Points by status; errors have no value and are drawn along the bottom edge.
    measured = [o for o in observations if o.value is not None and o.status != "error"]
    for status in ("pass", "warn", "fail"):
        pts = [o for o in measured if o.status == status]
        if pts:
            ax.scatter([soak_hours(o.scheduled_at, hour0, time_scale) for o in pts],
                       [o.value * scale for o in pts], s=18, color=COLORS[status], zorder=3, linewidths=0)
            handles.append(Line2D([], [], ls="", marker="o", ms=5, color=COLORS[status], label=f"{status} ({len(pts)})"))
    errors = [o for o in observations if o.status == "error" or o.value is None]
    if errors:
        ax.scatter([soak_hours(o.scheduled_at, hour0, time_scale) for o in errors], [0.04] * len(errors),
                   marker="x", s=28, color=COLORS["error"], transform=ax.get_xaxis_transform(), zorder=3,
                   linewidths=1.4, clip_on=False)
        handles.append(Line2D([], [], ls="", marker="x", ms=6, color=COLORS["error"], label=f"error ({len(errors)})"))

    # Thresholds and the baseline median.
    levels = [o.value * scale for o in measured]
    for cond, color, name in ((check.expect, COLORS["pass"], "expect"), (check.no_go, COLORS["fail"], "NO-GO")):
        if cond is not None:
            ax.axhline(cond.value * scale, color=color, ls="--", lw=1, alpha=0.8, zorder=2)
            handles.append(Line2D([], [], color=color, ls="--", lw=1, label=f"{name} {_cond(cond, check.unit)}"))
            levels.append(cond.value * scale)
    base = [o.value for o in measured if o.phase == "baseline"]
    if base:
        median = statistics.median(base) * scale
        ax.axhline(median, color="#1565c0", ls=":", lw=1.3, zorder=2)
        handles.append(Line2D([], [], color="#1565c0", ls=":", lw=1.3,
                              label=f"baseline median {_fmt(median / scale, check.unit)}"))
        levels.append(median)

    # Axes: y from the values and thresholds, room below for the error crosses.
    lo, hi = (min(levels), max(levels)) if levels else (0.0, 1.0)
    span = hi - lo or max(abs(hi), 1.0)
    ax.set_ylim(lo - 0.18 * span, hi + 0.3 * span)  # room above for the phase names
    xs = [soak_hours(o.scheduled_at, hour0, time_scale) for o in observations]
    end = plan.soak_hours()
    left = min(min(xs), 0.0)
    ax.set_xlim(left - 0.02 * (end - left) - 0.1, max(max(xs), end) + 0.02 * (end - left) + 0.1)
    ax.xaxis.set_major_locator(MultipleLocator(2 if end - left > 12 else 1))

    # Phase boundaries (hour 0 solid) and names, left-aligned in each phase; a name that
    # would run into the previous one drops to a second row.
    trans = ax.get_xaxis_transform()
    spans = [(p.name, p.start_hour) for p in plan.phases]
    if left < 0:
        spans.insert(0, ("baseline", left))
    bounds = sorted({*(p.start_hour for p in plan.phases), *(p.end_hour for p in plan.phases)} - {0.0})
    for x in bounds:
        ax.axvline(x, color="#757575", ls="--", lw=0.8, zorder=1)
    ax.axvline(0.0, color="#424242", ls="-", lw=1, zorder=1)
    x0, x1 = ax.get_xlim()
    hours_per_char = (x1 - x0) / (_SIZE_IN[0] * 0.895 * 72 / (7.5 * 0.55))  # axes width in 7.5 pt characters
    row_end = [float("-inf"), float("-inf")]
    for name, start in spans:
        x = start + 0.1
        row = 0 if x >= row_end[0] else 1
        row_end[row] = x + (len(name) + 0.5) * hours_per_char
        ax.text(x, 0.97 - 0.09 * row, name, transform=trans, ha="left", va="top", fontsize=7.5, color="#424242",
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})

    ax.set_title(f"{check.title}  [{check.id}]", fontsize=9.5, loc="left", pad=5)
    ax.set_xlabel("soak hours from hour 0 (the migration verified)", fontsize=8)
    ax.set_ylabel("%" if check.unit == "ratio" else check.unit, fontsize=8)
    ax.tick_params(labelsize=7.5)
    ax.grid(axis="y", color="#e0e0e0", lw=0.6, zorder=0)
    if not measured:
        ax.text(0.5, 0.5, "no value measured: every observation is an error", transform=ax.transAxes,
                ha="center", va="center", fontsize=9, color=COLORS["error"])
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.01))
    path = Path(path)
    fig.savefig(path, format="png", dpi=_DPI, metadata={"Software": None})
    return path


def _fmt(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value * 100:.3g}%"
    return f"{value:g} {unit}" if unit in ("ms", "bytes", "seconds") else f"{value:g}"


def _cond(cond: Condition, unit: str) -> str:
    return f"{cond.op} {_fmt(cond.value, unit)}"
