"""The passive phase's backup: the plan's ``backup`` source kind (seed "Horas 9-24":
"Backup incremental creado"; GO "Backups completados exitosamente").

Each tick dumps the check's tables whole (a full dump, not only the rows changed since the
previous one: "incremental" is the runbook's word), reads the dump back whole and keeps it
(``backup_storage.take_kept_backup``); the value is 1 when verified and kept. Cost per
reading: bench/README.md (``soak_load.py``).

Design notes: docs/design.md#sourcesincremental_backuppy
"""

from __future__ import annotations

import re

from airflow.sdk import ObjectStoragePath

from migration_soak.backup_storage import kept_labels, plan_root, take_kept_backup
from migration_soak.exceptions import BackupError, MeasurementError
from migration_soak.pgconn import PgTarget
from migration_soak.plan import BackupSource, Check, Plan
from migration_soak.sources import Context, Measurement, SourceContext, spec_of


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Take, verify and keep a full backup of ``check.source.tables`` (the runbook's
    "incremental"); the value is 1.0.

    The database is the plan's ``staging_direct`` connection, else ``staging``
    (``pg_dump`` sets session settings and needs one server session for its whole run,
    which a transaction-mode pooler does not give). The label is ``inc_<run>_<n>``
    (``norun`` outside a run), ``n`` counting this check's observations in the run (and
    never reusing a label already kept). Evidence: ``path`` (where it is kept, a URL),
    ``label``, ``size_bytes``, ``sha256``, ``tables`` (with data in the dump),
    ``requested``, ``duration_s``, ``created_at`` (ISO time).
    Raises ``MeasurementError`` with the backup's own error message.
    """
    from migration_soak.report import safe_name

    src = spec_of(check, BackupSource)
    plan = ctx.need_plan(check)
    context = ctx.run_context()
    run = safe_name(context.run_id) if context else "norun"
    target = PgTarget.from_airflow(plan.connections.staging_direct or plan.connections.staging)
    bin_dir = plan.path(plan.pg_bin_dir) if plan.pg_bin_dir else None
    try:
        dest = incremental_root(plan)
        label = f"inc_{run}_{_next_number(dest, run, check, context)}"
        record = take_kept_backup(target, dest, bin_dir, label, tables=src.tables,
                                  conn_id=plan.connections.backup_storage)
    except BackupError as exc:
        raise MeasurementError(f"{check.id}: incremental backup failed: {exc}") from exc
    return Measurement(1.0, {
        "path": record.location, "label": label, "size_bytes": record.size_bytes, "sha256": record.sha256,
        "tables": list(record.tables), "requested": list(src.tables), "duration_s": record.duration_s,
        "created_at": record.created_at.isoformat(),
    })


def incremental_root(plan: Plan) -> ObjectStoragePath:
    """``<backup_location>/<environment>/incremental`` (beside the pre-migration backup)."""
    return plan_root(plan) / "incremental"


def _next_number(dest: ObjectStoragePath, run: str, check: Check, context: Context | None) -> int:
    taken = len(context.store.observations(context.run_id, check_id=check.id)) if context else 0
    pattern = re.compile(rf"inc_{re.escape(run)}_(\d+)")
    kept = [int(m.group(1)) for label in kept_labels(dest, f"inc_{run}_") if (m := pattern.fullmatch(label))]
    return max([taken, *kept]) + 1
