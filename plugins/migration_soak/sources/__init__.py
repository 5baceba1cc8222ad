"""Sources: one module per kind of measurement. ``measure(check, ...) -> Measurement``.

A source either returns a :class:`Measurement` or raises
:class:`~migration_soak.exceptions.MeasurementError`; the caller records the latter as an
``error`` observation, which never counts as a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check, Plan


@dataclass(frozen=True)
class Measurement:
    """A measured ``value`` in the check's unit, with the ``evidence`` (JSON) behind it."""

    value: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """Where a measurement belongs: the Airflow ``run_id`` and the observation ``store``
    (sources that compare with something recorded earlier in the run read it there)."""

    run_id: str
    store: Any


def measure(check: Check, plan: Plan, previous: dict[str, Any] | None = None, context: Context | None = None) -> Measurement:
    """Measure ``check`` now.

    ``previous`` is the evidence of this check's previous observation in the run: sources
    that compare with the last reading (``openmetrics`` scrapes, ``logs`` offsets) take
    it from there. ``context`` is needed by ``fingerprint`` and ``backup``.
    Raises ``MeasurementError`` when the value cannot be measured.
    """
    kind = check.source.kind
    try:
        if kind == "sql":
            from migration_soak.sources import sql

            return sql.measure(check, plan.connections.staging)
        if kind == "http":
            from migration_soak.sources import http

            return http.measure(check)
        if kind == "openmetrics":
            from migration_soak.sources import openmetrics

            return openmetrics.measure(check, previous)
        if kind == "prometheus":
            from migration_soak.sources import prometheus

            return prometheus.measure(check)
        if kind == "logs":
            from migration_soak.sources import logs

            return logs.measure(check, previous)
        if kind == "authorizer_sync":
            from migration_soak.sources import authorizer_sync

            return authorizer_sync.measure(check, plan.connections.staging)
        if kind == "fingerprint":
            from migration_soak.sources import data_loss

            return data_loss.measure(check, plan, context)
        if kind == "backup":
            from migration_soak.sources import incremental_backup

            return incremental_backup.measure(check, plan, context)
    except MeasurementError:
        raise
    except Exception as exc:  # any failure to measure is an error observation, with its reason
        raise MeasurementError(f"{check.id}: {type(exc).__name__}: {exc}") from exc
    raise MeasurementError(f"{check.id}: unknown source kind {kind!r}")
