"""Data lost since the pre-migration fingerprint: the plan's ``fingerprint`` source kind
(seed "Pérdida de datos"; NO-GO "Cualquier pérdida de datos detectada").

Before the migration, :func:`record_baseline` fingerprints the table of every
``fingerprint`` check and stores it as a ``fingerprint`` event of the run (payload:
``Fingerprint.to_dict()`` plus ``check_id`` and ``text``). At each tick, :func:`measure`
reads the table against that event, one of two ways (evidence ``reading``):

- ``values`` (``fingerprint.compare``): every row and every preserved value compared
  exactly; the value is ``rows_lost + values_lost``. At hour 0, at the soak's end (the
  passive phase's last tick, just before the verdict) and at any unscheduled reading:
  about 13 s at 10 M users (bench/README.md).
- ``keys`` (``fingerprint.compare_keys``): the other ticks; the count and digest of the
  keys of the fingerprinted rows (0.9 s at 10 M users). It proves no row was lost, not
  that the values are intact; when it finds a difference (or a preserved column gone) the
  same reading goes on to the exact compare, whose figures are the value.

No recorded fingerprint is an error, never a pass.
"""

from __future__ import annotations

import logging
from typing import Any

from migration_soak import clock, fingerprint
from migration_soak.exceptions import MeasurementError
from migration_soak.pgconn import PgTarget, split_table
from migration_soak.plan import Check, FingerprintSource, Plan
from migration_soak.sources import Context, Measurement, SourceContext, spec_of

log = logging.getLogger(__name__)

EVENT = "fingerprint"
#: The creation-time column ``record_baseline`` uses when the table has it (Prisma's
#: ``createdAt``); without it every row is compared (see ``fingerprint.take``).
CREATED_COLUMN = "createdAt"


#: What each reading proves, as the evidence and the report say it.
PROVES = {
    "values": "exact: no row of the fingerprint lost and no preserved value nulled (every value compared)",
    "keys": "rows only: no row of the fingerprint lost (keys counted and digested); values not read",
}


def exact_due(plan: Plan | None, phase: str | None, tick: int | None, check: Check | None = None) -> bool:
    """Whether this reading compares every preserved value (``values``) rather than the
    keys only: hour 0, the soak's end (the last tick of the last of ``check``'s phases, in
    the plan's order: the passive phase's, the reading just before the verdict; without a
    check, the plan's last phase), the baseline, and any unscheduled reading."""
    if plan is None or phase is None or tick is None or phase in ("hour0", "baseline"):
        return True
    try:
        ticks = len(clock.offsets(plan, phase))
    except (KeyError, ValueError):  # a phase the plan does not know: read exactly
        return True
    own = [p.name for p in plan.phases if check is None or check.phases == "all" or p.name in check.phases]
    return tick >= ticks and (not own or phase == own[-1])


def measure(check: Check, ctx: SourceContext) -> Measurement:
    """Read the check's table on ``ctx.staging`` against its pre-migration fingerprint
    (recorded in ``ctx.run_id``'s events in ``ctx.store``): ``values`` or ``keys`` (see the
    module doc; :func:`exact_due` says which).

    The value is a count (rows lost plus values lost; 0 for an intact ``keys`` reading).
    Evidence: ``reading``, ``proves`` (:data:`PROVES`), then ``DataLoss.to_dict()`` or
    ``KeyReading.to_dict()``; a ``keys`` reading that found a difference is followed by the
    exact compare (``reading`` ``values``, its ``keys`` figures under ``keys_reading``).
    Raises ``MeasurementError`` without the run context, when no fingerprint was recorded
    for the check in this run, when it was taken of other columns than the check names,
    or when the table cannot be read.
    """
    before = baseline_of(check, ctx.need_run(check))
    target = PgTarget.from_airflow(ctx.need_staging(check))
    found: dict[str, Any] = {}
    if not exact_due(ctx.plan, ctx.phase, ctx.tick, check):
        keys = fingerprint.compare_keys(before, target)
        if keys.intact:
            return Measurement(0.0, {"reading": "keys", "proves": PROVES["keys"], **keys.to_dict()})
        found = {"keys_reading": keys.to_dict()}
    loss = fingerprint.compare(before, target)
    return Measurement(float(loss.lost), {"reading": "values", "proves": PROVES["values"], **loss.to_dict(), **found})


def baseline_of(check: Check, context: Context) -> fingerprint.Fingerprint:
    """The run's first ``fingerprint`` event for ``check`` (the one nearest the
    pre-migration state), as a ``Fingerprint``; raises ``MeasurementError`` if none."""
    src = spec_of(check, FingerprintSource)
    for event in context.store.events(context.run_id, EVENT):
        payload = event["payload"]
        if payload.get("check_id", check.id) != check.id:
            continue
        fp = fingerprint.Fingerprint.from_dict(payload)
        if (fp.table, fp.key, list(fp.columns)) != (src.table, src.key, list(dict.fromkeys(src.columns))):
            raise MeasurementError(
                f"{check.id}: the recorded fingerprint is of {fp.table}.{fp.key} {list(fp.columns)}, "
                f"the check names {src.table}.{src.key} {src.columns}"
            )
        return fp
    raise MeasurementError(f"{check.id}: no pre-migration fingerprint recorded")


def record_baseline(plan: Plan, run_id: str, store: Any, target: PgTarget | None = None) -> dict[str, dict[str, Any]]:
    """Fingerprint the table of every ``fingerprint`` check of ``plan`` and store it as a
    ``fingerprint`` event of ``run_id``. Run before the migration.

    Idempotent: a check that already has a fingerprint in the run keeps it (a retried
    baseline task must not replace the pre-migration state with a later one).
    ``target``: the staging database (default: the plan's ``staging`` connection).
    Returns ``{check_id: {"rows", "taken_at", "duration_s", "recorded"}}``.
    Raises ``MeasurementError`` when a table cannot be fingerprinted.
    """
    checks = [c for c in plan.checks if isinstance(c.source, FingerprintSource)]
    if not checks:
        return {}
    have = {e["payload"].get("check_id") for e in store.events(run_id, EVENT)}
    target = target or PgTarget.from_airflow(plan.connections.staging)
    done: dict[str, dict[str, Any]] = {}
    for check in checks:
        if check.id in have:
            fp = baseline_of(check, Context(run_id, store))
            done[check.id] = {"rows": fp.rows, "taken_at": fp.taken_at, "duration_s": fp.duration_s, "recorded": False}
            continue
        src = spec_of(check, FingerprintSource)
        created = CREATED_COLUMN if _has_column(target, src.table, CREATED_COLUMN) else None
        fp = fingerprint.take(target, src.table, src.key, src.columns, created_column=created)
        text = (f"fingerprint of {src.table}: {fp.rows} rows, columns {', '.join(fp.columns)}"
                + (f", created up to {fp.created_max}" if fp.created_max else ", no creation time"))
        store.add_event(run_id, EVENT, {**fp.to_dict(), "check_id": check.id, "text": text})
        log.info("%s: %s (%.3f s)", check.id, text, fp.duration_s)
        done[check.id] = {"rows": fp.rows, "taken_at": fp.taken_at, "duration_s": fp.duration_s, "recorded": True}
    return done


def _has_column(target: PgTarget, table: str, column: str) -> bool:
    """Whether ``table`` has ``column``, asked in a read-only transaction with the checks'
    ``statement_timeout`` (issue 14 item 5) and the soak's application name (``PgTarget``)."""
    from migration_soak.sources.sql import STATEMENT_TIMEOUT_MS

    schema, name = split_table(table)
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
            cur.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                " AND column_name = %s",
                (schema, name, column),
            )
            return cur.fetchone() is not None
    finally:
        conn.rollback()
        conn.close()
