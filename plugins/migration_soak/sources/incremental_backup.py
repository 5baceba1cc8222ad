"""The passive phase's incremental backup: the plan's ``backup`` source kind (seed "Horas
9-24": "Backup incremental creado"; GO "Backups completados exitosamente").

Each tick keeps an *increment* of the check's tables (``increment.take_increment``): the
rows inserted or updated since the previous backup of the run, plus each table's key list
(deletions) unless a count proves nothing was deleted since the previous increment
(``increment`` module doc), read back whole through the storage; the value is 1 when verified and kept.
"Since the previous backup": this check's last reading with a ``watermark`` in the run,
else the run's pre-migration backup (its ``backup`` event's ``watermark``), else nothing
(``base: full``: whole tables). Cost per reading: bench/README.md (``increment.py``).

Design notes: docs/design.md#sourcesincremental_backuppy
"""

from __future__ import annotations

import re
from typing import Any

from airflow.sdk import ObjectStoragePath

from migration_soak.backup_storage import plan_root
from migration_soak.exceptions import BackupError, MeasurementError
from migration_soak.increment import take_increment
from migration_soak.pgconn import PgTarget
from migration_soak.plan import BackupSource, Check, Plan
from migration_soak.sources import Context, Measurement, SourceContext, spec_of


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Take, keep and verify the increment of ``check.source.tables`` since the previous
    backup of the run (see the module doc); the value is 1.0.

    The database is the plan's ``staging_direct`` connection, else ``staging``. The label
    is ``inc_<run>_<n>`` (``norun`` outside a run), ``n`` counting this check's
    observations in the run (and never reusing a label already kept); the increment is the
    folder ``<backup_location>/<environment>/incremental/<label>/``. Evidence: ``path``
    (the folder, a URL), ``label``, ``since`` (the watermark it starts from, or ``None``),
    ``since_from`` (``"increment <label>"``, ``"pre-migration backup"`` or ``None``),
    ``watermark`` (the next one's ``since``), ``base`` (``"increment"``, or ``"full"``
    with ``full_reason``), ``previous`` (the previous increment's location, or ``None``),
    ``tables`` (``schema.table`` -> ``{"rows": changed rows, "keys": keys in the snapshot,
    "deletions": "key list" (kept, with ``key_list_reason``: why no count proof) or
    "count" (nothing deleted, proved by count: no key list kept)}``), ``size_bytes`` (compressed, all files), ``duration_s`` (the whole
    reading), ``staging_s`` (of it, the seconds staging's connection was open: the load on
    staging), ``created_at`` (ISO time of the snapshot).
    Raises ``MeasurementError`` with the increment's own error message.
    """
    from migration_soak.report import safe_name

    src = spec_of(check, BackupSource)
    plan = ctx.need_plan(check)
    context = ctx.run_context()
    run = safe_name(context.run_id) if context else "norun"
    target = PgTarget.from_airflow(plan.connections.staging_direct or plan.connections.staging)
    since, since_from = previous_watermark(context, check) if context else (None, None)
    try:
        dest = incremental_root(plan)
        label = f"inc_{run}_{_next_number(dest, run, check, context)}"
        previous = previous_increment(context, check) if context and since_from != "pre-migration backup" else None
        record = take_increment(target, dest, label, src.tables, since, conn_id=plan.connections.backup_storage,
                                previous=previous)
    except BackupError as exc:
        raise MeasurementError(f"{check.id}: incremental backup failed: {exc}") from exc
    return Measurement(1.0, {
        "path": record.location, "label": label, "since": record.since, "since_from": since_from,
        "watermark": record.watermark, "base": record.base, "full_reason": record.full_reason,
        "previous": record.previous,
        "tables": {name: {"rows": t.rows, "keys": t.keys, "deletions": t.deletions.get("proof"),
                          **({"key_list_reason": t.deletions["reason"]} if "reason" in t.deletions else {})}
                   for name, t in record.tables.items()},
        "size_bytes": record.size_bytes, "duration_s": record.duration_s, "staging_s": record.staging_s,
        "created_at": record.created_at.isoformat(),
    })


def previous_watermark(context: Context, check: Check) -> tuple[str | None, str | None]:
    """``(since, since_from)`` of the run's next increment: the watermark of this check's
    latest reading that kept one (``"increment <label>"``), else of the run's last
    ``backup`` event that has one (``"pre-migration backup"``), else ``(None, None)``.
    Error readings carry no watermark and are passed over: the next increment starts from
    the last one kept, so no change falls between two links of the chain."""
    for obs in reversed(context.store.observations(context.run_id, check_id=check.id)):
        evidence: dict[str, Any] = obs.evidence or {}
        if evidence.get("watermark"):
            return str(evidence["watermark"]), f"increment {evidence.get('label')}"
    for event in reversed(context.store.events(context.run_id, "backup")):
        if (event.get("payload") or {}).get("watermark"):
            return str(event["payload"]["watermark"]), "pre-migration backup"
    return None, None


def previous_increment(context: Context, check: Check) -> str | None:
    """The location (evidence ``path``) of the increment whose watermark
    ``previous_watermark`` returns, or ``None``: the next increment's ``previous``."""
    for obs in reversed(context.store.observations(context.run_id, check_id=check.id)):
        evidence: dict[str, Any] = obs.evidence or {}
        if evidence.get("watermark"):
            return str(evidence["path"]) if evidence.get("path") else None
    return None


def incremental_root(plan: Plan) -> ObjectStoragePath:
    """``<backup_location>/<environment>/incremental`` (beside the pre-migration backup)."""
    return plan_root(plan) / "incremental"


def _next_number(dest: ObjectStoragePath, run: str, check: Check, context: Context | None) -> int:
    taken = len(context.store.observations(context.run_id, check_id=check.id)) if context else 0
    pattern = re.compile(rf"inc_{re.escape(run)}_(\d+)(?:\.dump)?")
    kept = [int(m.group(1)) for name in _kept_names(dest, f"inc_{run}_") if (m := pattern.fullmatch(name))]
    return max([taken, *kept]) + 1


def _kept_names(root: ObjectStoragePath, prefix: str) -> list[str]:
    """Names directly under ``root`` starting with ``prefix``: increment folders (finished
    or not: a label is never reused) and the ``.dump`` files of earlier versions."""
    try:
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if p.name.startswith(prefix))
    except Exception as exc:
        raise BackupError(f"cannot list backup storage {root}: {type(exc).__name__}: {exc}") from None
