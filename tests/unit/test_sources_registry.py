"""sources: one registry entry per plan source kind, one ``measure(check, ctx)`` signature,
and the dispatcher's contract (anything but a MeasurementError becomes one naming the check)."""

from __future__ import annotations

import inspect
import typing
from types import SimpleNamespace

import pytest

from migration_soak import plan as plan_module
from migration_soak import sources
from migration_soak.exceptions import MeasurementError
from migration_soak.plan import Check, Connections, HttpHealthSource, SqlSource
from migration_soak.sources import SourceContext


def plan_kinds() -> set[str]:
    union = typing.get_args(plan_module.Source)[0]
    return {typing.get_args(spec.model_fields["kind"].annotation)[0] for spec in typing.get_args(union)}


def http_check() -> Check:
    return Check.model_validate({
        "id": "gateway_up", "title": "t", "unit": "up", "rule": "test", "expect": {"op": "==", "value": 1},
        "source": {"kind": "http", "connection": "soak_gateway"},
    })


def test_every_plan_kind_has_a_source_and_every_source_one_signature():
    assert set(sources.SOURCES) == plan_kinds()
    for kind in sources.SOURCES:
        params = list(inspect.signature(sources.source_for(kind)).parameters)
        assert params == ["check", "ctx"], kind


def test_the_renamed_modules_keep_the_plan_kinds():
    assert sources.source_for("fingerprint").__module__ == "migration_soak.sources.data_loss"
    assert sources.source_for("backup").__module__ == "migration_soak.sources.incremental_backup"


def test_unknown_kind_and_foreign_exceptions_become_measurement_errors(monkeypatch):
    plan = SimpleNamespace(connections=Connections())
    unknown = SimpleNamespace(id="odd", source=SimpleNamespace(kind="carrier_pigeon"))
    with pytest.raises(MeasurementError, match="odd: unknown source kind 'carrier_pigeon'"):
        sources.measure(unknown, plan)

    seen: list[SourceContext] = []

    def broken(check, ctx):
        seen.append(ctx)
        raise RuntimeError("boom")

    monkeypatch.setattr(sources, "source_for", lambda kind: broken)
    with pytest.raises(MeasurementError, match="gateway_up: RuntimeError: boom"):
        sources.measure(http_check(), plan, {"offset": 3}, sources.Context("run-1", "store"))
    assert seen == [SourceContext(plan=plan, staging="soak_staging", previous={"offset": 3},
                                  run_id="run-1", store="store")]


def test_a_source_reads_only_its_own_spec_and_names_what_it_lacks():
    check = http_check()
    assert isinstance(sources.spec_of(check, HttpHealthSource), HttpHealthSource)
    with pytest.raises(MeasurementError, match="gateway_up: a 'http' source, not a SqlSource"):
        sources.spec_of(check, SqlSource)
    with pytest.raises(MeasurementError, match="needs the staging connection id"):
        SourceContext().need_staging(check)
    with pytest.raises(MeasurementError, match="needs the run context"):
        SourceContext(run_id="r").need_run(check)
    with pytest.raises(MeasurementError, match="needs the plan"):
        SourceContext().need_plan(check)
    assert SourceContext(run_id="r", store="s").need_run(check) == sources.Context("r", "s")
