"""Sources: one module per kind of measurement, each with
``measure(check: Check, ctx: SourceContext) -> Measurement``.

``SOURCES`` maps the plan's ``source.kind`` to the module that measures it; :func:`measure`
is the dispatcher the soak calls. A source either returns a :class:`Measurement` or
raises :class:`~migration_soak.exceptions.MeasurementError`; the caller records the
latter as an ``error`` observation, which never counts as a pass.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check, Plan


@dataclass(frozen=True)
class Measurement:
    """A measured ``value`` in the check's unit, with the ``evidence`` (JSON) behind it."""

    value: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # NaN compares false with every bound: a NO-GO would read "clear" on it. Not a reading.
        if not math.isfinite(self.value):
            raise NotFinite(f"the value read is {self.value!r}, not a finite number")


class NotFinite(MeasurementError):
    """A source read NaN or an infinity (an exporter's 0/0, a SQL ``'NaN'::float``)."""


@dataclass(frozen=True)
class Context:
    """Where a measurement belongs: the Airflow ``run_id`` and the observation ``store``
    (sources that compare with something recorded earlier in the run read it there), and
    the reading's ``phase`` and ``tick`` index when it is one of a schedule (``None``: an
    unscheduled reading, e.g. a benchmark's; ``data_loss`` then reads exactly, ``sql`` runs
    its file without sharing the result)."""

    run_id: str
    store: Any
    phase: str | None = None
    tick: int | None = None


@dataclass(frozen=True)
class SourceContext:
    """What a source reads besides its check; a field a source needs and does not get is a
    ``MeasurementError`` (see the ``need_*`` methods).

    ``plan``: the whole plan (``incremental_backup``, ``data_loss``: connections, paths).
    ``staging``: the Airflow Postgres connection id of the staging database as the checks
    reach it, maybe through a pooler (``sql``, ``authorizer_sync``).
    ``previous``: the evidence of this check's previous observation in the run, or
    ``None`` (``openmetrics`` scrapes, ``logs`` offsets).
    ``run_id``, ``store``: the Airflow run and its observation store, ``None`` outside a
    run (``data_loss``, ``incremental_backup``).
    ``phase``, ``tick``: the scheduled reading this is (``observe.take``), ``None`` outside
    a schedule (``data_loss``: which reading is due; ``sql``: the result shared per tick).
    """

    plan: Plan | None = None
    staging: str | None = None
    previous: dict[str, Any] | None = None
    run_id: str | None = None
    store: Any = None
    phase: str | None = None
    tick: int | None = None

    def need_plan(self, check: Check) -> Plan:
        """``plan``; raises ``MeasurementError`` naming the check when there is none."""
        if self.plan is None:
            raise MeasurementError(f"{check.id}: the {check.source.kind} source needs the plan")
        return self.plan

    def need_staging(self, check: Check) -> str:
        """``staging``; raises ``MeasurementError`` naming the check when there is none."""
        if not self.staging:
            raise MeasurementError(f"{check.id}: the {check.source.kind} source needs the staging connection id")
        return self.staging

    def run_context(self) -> Context | None:
        """``run_id`` and ``store`` as a :class:`Context`, ``None`` when either is missing."""
        return None if self.run_id is None or self.store is None else Context(self.run_id, self.store)

    def need_run(self, check: Check) -> Context:
        """:meth:`run_context`; raises ``MeasurementError`` naming the check when there is none."""
        context = self.run_context()
        if context is None:
            raise MeasurementError(f"{check.id}: the {check.source.kind} source needs the run context (run id and store)")
        return context


#: ``source.kind`` (plan.py's ``Source`` union) -> the module under ``sources`` whose
#: ``measure(check, ctx)`` measures it. Names, not functions: a module is imported when a
#: check of its kind is first measured, so loading a plan (which imports ``sql_guard``)
#: does not pull in ``airflow.sdk`` or ``prometheus_client``, and the modules can import
#: ``Measurement`` from here without a cycle. Keys are the plan's spellings; two modules
#: are named for what they measure (``fingerprint`` -> data loss, ``backup`` -> an
#: incremental backup).
SOURCES: dict[str, str] = {
    "sql": "sql",
    "http": "http",
    "openmetrics": "openmetrics",
    "prometheus": "prometheus",
    "logs": "logs",
    "authorizer_sync": "authorizer_sync",
    "fingerprint": "data_loss",
    "backup": "incremental_backup",
}

Measure = Callable[[Check, SourceContext], Measurement]


def source_for(kind: str) -> Measure:
    """The ``measure`` function of ``kind``; ``KeyError`` for an unknown kind."""
    module = importlib.import_module(f"{__name__}.{SOURCES[kind]}")
    fn: Measure = module.measure
    return fn


S = TypeVar("S")


def spec_of(check: Check, spec: type[S]) -> S:
    """``check.source`` as the spec class ``spec`` (a ``plan.*Source``) a source reads.

    Raises ``MeasurementError`` when the check's source is of another kind (a check
    handed to the wrong source module).
    """
    src = check.source
    if not isinstance(src, spec):
        raise MeasurementError(f"{check.id}: a {src.kind!r} source, not a {spec.__name__}")
    return src


def measure(check: Check, plan: Plan, previous: dict[str, Any] | None = None, context: Context | None = None) -> Measurement:
    """Measure ``check`` now with the source of its kind (``SOURCES``).

    ``previous`` is the evidence of this check's previous observation in the run: sources
    that compare with the last reading (``openmetrics`` scrapes, ``logs`` offsets) take
    it from there. ``context`` is needed by ``fingerprint`` and used by ``backup``.
    Raises ``MeasurementError`` when the value cannot be measured: any other exception
    becomes one naming the check, and so does an unknown kind.
    """
    kind = check.source.kind
    if kind not in SOURCES:
        raise MeasurementError(f"{check.id}: unknown source kind {kind!r}")
    try:
        ctx = SourceContext(
            plan=plan, staging=plan.connections.staging if plan is not None else None, previous=previous,
            run_id=context.run_id if context else None, store=context.store if context else None,
            phase=context.phase if context else None, tick=context.tick if context else None,
        )
        return source_for(kind)(check, ctx)
    except NotFinite as exc:
        raise MeasurementError(f"{check.id}: {exc}") from None
    except MeasurementError:
        raise
    except Exception as exc:  # any failure to measure is an error observation, with its reason
        raise MeasurementError(f"{check.id}: {type(exc).__name__}: {exc}") from exc
