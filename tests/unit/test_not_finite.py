"""NaN and infinities are not readings: NaN compares false with every bound, so a NO-GO read
on it would be "clear" (found by review: an exporter publishing NaN got a soak its GO)."""

from __future__ import annotations

import math

import pytest

from migration_soak import sources
from migration_soak.exceptions import MeasurementError
from migration_soak.judge import judge
from migration_soak.sources import openmetrics, sql

from test_judge import PLAN, SCALE, full_soak

NAN_PAGE = "# TYPE db_cpu_usage_ratio gauge\ndb_cpu_usage_ratio NaN\n"


def test_an_openmetrics_gauge_of_nan_is_an_error_naming_the_check(monkeypatch):
    check = PLAN.check("db_cpu")
    monkeypatch.setattr(openmetrics, "scrape", lambda conn_id, path: NAN_PAGE)
    with pytest.raises(MeasurementError, match=r"^db_cpu: the value read is nan, not a finite number$"):
        sources.measure(check, PLAN)


@pytest.mark.parametrize("cell", [float("nan"), float("inf"), float("-inf")])
def test_a_sql_cell_that_is_no_finite_number_is_an_error(cell):
    with pytest.raises(MeasurementError, match="not a finite number"):
        sql.value_of(PLAN.check("users_without_authorizer_id"), ["n"], [(cell,)])


def test_nan_readings_stored_by_an_older_version_do_not_clear_a_no_go():
    v = judge(PLAN, full_soak({"db_cpu": math.nan}), SCALE)
    cpu = next(c for c in v.criteria if c.id == "no_go_db_cpu")
    assert cpu.outcome != "clear", cpu.detail
    assert v.decision != "GO", v.reasons
