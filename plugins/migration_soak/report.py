"""The results report and the post-mortem, as Markdown (Jinja2 templates in ``templates/``).

The report follows the seed's "Documentación de Resultados": the monitoring period, the
results, the final metrics, incidents and the decision, with real figures from the
observation store. On a rollback, a post-mortem is written as the seed's rollback step 6
asks ("docs/incidents/YYYY-MM-DD-staging-rollback.md").
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from migration_soak.judge import Verdict
from migration_soak.plan import Plan
from migration_soak.store import Observation

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
_MARK = {"met": "✅", "not_met": "⚠️", "breached": "❌", "not_enough_data": "❔"}
_CRIT_MARK = {"met": "✅", "not_met": "⚠️", "breached": "❌", "clear": "✅", "not_enough_data": "❔"}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value * 100:.2f}%"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:g}"


def _cell(obs: list[Observation], unit: str) -> str:
    if not obs:
        return "-"
    counts = "/".join(str(sum(1 for o in obs if o.status == s)) for s in ("pass", "warn", "fail", "error"))
    vals = [o.value for o in obs if o.value is not None]
    rng = f" {_fmt(min(vals), unit)}..{_fmt(max(vals), unit)}" if vals else ""
    return f"{len(obs)} ({counts}){rng}"


def _result(verdict: Verdict, check_id: str):
    return next((c for c in verdict.checks if c.check_id == check_id), None)


def render_report(
    plan: Plan,
    run_id: str,
    verdict: Verdict,
    observations: list[Observation],
    events: list[dict[str, Any]],
    time_scale: float,
    rollback: list[str] | None = None,
    chart_dir: Path | None = None,
) -> str:
    """The report as Markdown.

    ``events`` are the store's events of the run (``backup``, ``migrate``, ``hour0``, ...);
    ``rollback`` lines describe a rollback that ran (``None`` when none did); with
    ``chart_dir``, a PNG chart per check is written there and linked (relative to the
    report's folder, which must be ``chart_dir``'s parent).
    """
    by_kind = {e["kind"]: e for e in events}
    times = [o.measured_at for o in observations]
    hour0 = by_kind.get("hour0")
    observations = [o for o in observations if o.phase != "baseline"] + [o for o in observations if o.phase == "baseline"]
    start = datetime.fromisoformat(hour0["payload"]["hour0"]) if hour0 else (min(times) if times else None)
    end = max(times) if times else start
    wall_minutes = f"{(end - start).total_seconds() / 60:.1f}" if start and end else "0"
    phases = ["hour0"] + [p.name for p in plan.phases]
    rows = []
    for check in plan.checks:
        res = _result(verdict, check.id)
        rows.append({
            "id": check.id, "title": check.title, "unit": check.unit, "expect": str(check.expect),
            "no_go": str(check.no_go) if check.no_go else "-",
            "cells": [_cell([o for o in observations if o.check_id == check.id and o.phase == p], check.unit)
                      for p in phases],
            "outcome": f"{_MARK[res.outcome]} {res.outcome}" if res else "-",
        })
    fails = [o for o in observations if o.status == "fail"]
    errors = [o for o in observations if o.status == "error"]
    summary = []
    summary.append(f"{'✅' if not fails else '❌'} {len(fails)} critical errors (NO-GO breaches) detected")
    for c in verdict.checks:
        summary.append(f"{_MARK[c.outcome]} {c.title}: {c.outcome.replace('_', ' ')}; "
                       f"last {_fmt(c.last, c.unit)}, worst range {_fmt(c.min, c.unit)}..{_fmt(c.max, c.unit)}, "
                       f"coverage {c.coverage:.0%}")
    final = []
    auth = [o for o in observations if o.check_id == "auth_error_rate" and "denominator" in o.evidence]
    if auth:
        total = sum(o.evidence["denominator"] for o in auth)
        failed = sum(o.evidence["numerator"] for o in auth)
        final.append(f"Auth requests observed: {total:g} ({failed:g} failed, {failed / total:.3%})")
    for cid, label in (("login_p95", "Login p95"), ("verify_p95", "Verify p95"), ("cache_hit_rate", "Cache hit rate"),
                       ("recent_executions", "Workflow executions in the last hour (last tick)")):
        res = _result(verdict, cid)
        if res and res.last is not None:
            vals = [o.value for o in observations if o.check_id == cid and o.value is not None]
            mean = sum(vals) / len(vals)
            final.append(f"{label}: last {_fmt(res.last, res.unit)}, mean {_fmt(mean, res.unit)}")
    final.append(f"Observations recorded: {len(observations)} ({len(errors)} errors)")
    incidents = [f"{o.measured_at:%Y-%m-%d %H:%M:%S} {o.check_id} at {o.phase} tick {o.tick}: {o.status}"
                 f" {_fmt(o.value, o.unit)} {o.evidence.get('error', '')}".rstrip()
                 for o in observations if o.status in ("fail", "error")]
    migration = by_kind.get("migrate", {}).get("payload")
    migration_text = None
    if migration:
        migration_text = ", ".join(f"`{m}` applied" for m in migration.get("applied", [])) or "nothing pending"
    charts = {}
    if chart_dir is not None and start is not None and observations:
        from migration_soak import charts as charts_mod

        charts = {cid: f"{chart_dir.name}/{p.name}" for cid, p in
                  charts_mod.render(plan, observations, start, time_scale, chart_dir).items()}
    criteria = [{"mark": _CRIT_MARK[c.outcome], **c.__dict__} for c in verdict.criteria]
    decision_text = {
        "GO": "✅ APPROVED to proceed to production",
        "NO_GO": "❌ NO-GO: rolled back; see the reasons above",
        "INCONCLUSIVE": "❔ INCONCLUSIVE: not approved; " + ("rolled back" if rollback else "a person decides"),
    }[verdict.decision]
    return _ENV.get_template("report.md.j2").render(
        plan=plan, run_id=run_id, verdict=verdict, time_scale=time_scale,
        period={"start": f"{start:%Y-%m-%d %H:%M:%S}" if start else "n/a",
                "end": f"{end:%Y-%m-%d %H:%M:%S}" if end else "n/a", "wall_minutes": wall_minutes},
        verdict_line=f"{verdict.decision}: " + "; ".join(verdict.reasons),
        summary=summary, final_metrics=final, backup=by_kind.get("backup", {}).get("payload"),
        migration=migration_text, phases=phases, rows=rows, incidents=incidents[:50],
        rollback=rollback, decision_text=decision_text, criteria=criteria, charts=charts,
        human_gates=plan.human_gates,
    )


def render_postmortem(plan: Plan, run_id: str, verdict: Verdict, events: list[dict[str, Any]], rollback: list[str]) -> str:
    """The post-mortem of a rolled-back soak as Markdown (seed, rollback step 6)."""
    timeline = [{"at": f"{e['at']:%Y-%m-%d %H:%M:%S}", "kind": e["kind"], "text": e["payload"].get("text", "")}
                for e in events]
    return _ENV.get_template("postmortem.md.j2").render(
        plan=plan, run_id=run_id, verdict=verdict, timeline=timeline, rollback=rollback,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
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
