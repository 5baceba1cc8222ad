"""The results report and the post-mortem, as Markdown (Jinja2 templates in ``templates/``).

Seed "Documentación de Resultados" and rollback step 6 (the post-mortem). Says no more
than was measured or decided. Sections: ``report_run.py``, ``report_sections.py``,
``report_postmortem.py``, ``report_checks.py``, ``report_text.py``.
Report: docs/plans.md#the-report.

Design notes: docs/design.md#reportpy
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from migration_soak import report_postmortem as pm
from migration_soak import report_sections as sections
from migration_soak.judge import Verdict
from migration_soak.plan import Plan
from migration_soak.report_run import Run, analyse, rule_of
from migration_soak.report_text import cell, duration, soak_clock, when
from migration_soak.store import Observation

__all__ = ["duration", "render_postmortem", "render_report", "safe_name", "soak_clock", "when", "write"]

log = logging.getLogger(__name__)

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)

# The Airflow view (airflow/soak_view.py) reads the report's own analysis under these names.
_analyse = analyse
_chart_marks = sections.chart_marks
_rule = rule_of


def _draw_charts(run: Run, time_scale: float, chart_dir: Path) -> tuple[dict[str, str], str | None]:
    """One PNG per check in ``chart_dir``: ``({check id: link relative to the report's folder},
    None)``, or ``({}, note)`` when drawing failed."""
    try:
        from migration_soak import charts as charts_mod

        deciding, stop_h, stop_label = sections.chart_marks(run)
        written = charts_mod.render(run.plan, run.observations, run.clock0 or run.start, time_scale, Path(chart_dir),
                                    deciding=deciding, stop_hours=stop_h, stop_label=stop_label)
        return {cid: f"{Path(chart_dir).name}/{p.name}" for cid, p in written.items()}, None
    except Exception as exc:  # charts illustrate; they never cost the report
        log.warning("charts not drawn: %s", exc, exc_info=True)
        return {}, f"charts could not be drawn: {type(exc).__name__}: {exc}"


def render_report(
    plan: Plan,
    run_id: str,
    verdict: Verdict,
    observations: list[Observation],
    events: list[dict[str, Any]],
    time_scale: float,
    chart_dir: Path | None = None,
) -> str:
    """The results report as Markdown.

    ``events``: the run's store events (``verified``, ``hour0``, ``no_go``, ``sign_off``,
    ``decision``, rollback events, ...; ``at`` in UTC); ``time_scale``: the run's clock
    speed (1 = real time). With ``chart_dir``, one PNG per check is written there and
    linked relative to the report's folder (``chart_dir``'s parent).
    """
    run = analyse(plan, verdict, observations, events, time_scale)
    charts: dict[str, str] = {}
    chart_note = None
    if chart_dir is not None and observations:
        charts, chart_note = _draw_charts(run, time_scale, chart_dir)
    return _ENV.get_template("report.md.j2").render(
        plan=plan, run_id=run_id, verdict=verdict, verdict_reasons=verdict.reasons, phases=run.phases, cell=cell,
        banner=sections.banner(plan, time_scale), guard_cadence=sections.guard_cadence(plan, time_scale), guard_span=sections.guard_span(run),
        checkbox=sections.checkbox(run, time_scale),
        period=sections.period(run, time_scale), final=sections.final(run), deciding=pm.why(run),
        human_gates=sections.human_gates(run), results=sections.results(run),
        final_metrics=sections.final_metrics(run), backup=sections.backup(run), rehearsal=sections.rehearsal(run),
        migration=sections.migration(run), lint=run.payload("lint"), rows=sections.rows(run),
        criteria=sections.criteria(run), checks=sections.check_lines(run, charts), chart_note=chart_note,
        incidents=sections.incidents(run), no_incidents=sections.no_incidents(run), alerts=sections.alerts(run), stop=sections.stop(run),
        rollback=sections.rollback_lines(run), rollback_duration=sections.rollback_duration(run),
    )


def render_postmortem(
    plan: Plan,
    run_id: str,
    verdict: Verdict,
    observations: list[Observation],
    events: list[dict[str, Any]],
) -> str:
    """The post-mortem of a rolled-back soak as Markdown (seed, rollback step 6): why, the
    deciding evidence (masked log lines), impact, durations, and the timeline (UTC)."""
    run = analyse(plan, verdict, observations, events, None)
    run.time_scale = pm.infer_scale(run)
    samples, figures = pm.evidence_lines(run)
    day: datetime = pm.day(run)
    return _ENV.get_template("postmortem.md.j2").render(
        plan=plan, run_id=run_id, verdict=verdict, date=f"{day:%Y-%m-%d}", final=sections.final(run),
        scale=run.time_scale, deciding=pm.why(run), samples=samples, figures=figures,
        stop_where=run.stop_where, impact=pm.impact(run), durations=pm.durations(run), timeline=pm.timeline(run),
        follow_up=pm.follow_up(run), samples_heading=pm.samples_heading(run, len(samples)),
    )


def safe_name(run_id: str) -> str:
    """A file-name-safe form of an Airflow run id."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id)


def write(folder: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``folder/name`` (folders created); returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
