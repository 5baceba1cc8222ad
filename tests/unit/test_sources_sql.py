"""sources.sql.value_of: the check's value from its query's result, for every ``measure``
(the query itself runs in tests/integration against a real PostgreSQL)."""

from decimal import Decimal

import pytest

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import load_plan
from migration_soak.sources.sql import value_of

PLAN = load_plan("default")
BASE = next(c for c in PLAN.checks if c.source.kind == "sql")


def check(**source):
    return BASE.model_copy(update={"id": "q", "source": BASE.source.model_copy(update=source)})


def test_a_cell_is_the_named_column_of_the_first_row_with_the_first_rows_in_the_evidence():
    m = value_of(check(measure="cell", column="b"), ["a", "b"], [(1, Decimal("2.5")), (3, 4)])
    assert m.value == 2.5
    assert m.evidence == {"sql": BASE.source.sql, "columns": ["a", "b"], "rows": [[1, "2.5"], [3, 4]]}


def test_a_cell_defaults_to_the_first_column_and_the_evidence_keeps_20_rows():
    m = value_of(check(measure="cell", column=None), ["n"], [(i,) for i in range(30)])
    assert m.value == 0.0 and len(m.evidence["rows"]) == 20


@pytest.mark.parametrize(("columns", "rows", "message"), [
    (["a"], [], "^q: .* returned no row$"),
    (["a"], [(1,)], r"^q: column 'b' not in \['a'\]$"),
    (["a", "b"], [(1, None)], "^q: b is NULL$"),
])
def test_a_cell_that_is_not_there_is_an_error(columns, rows, message):
    with pytest.raises(MeasurementError, match=message):
        value_of(check(measure="cell", column="b"), columns, rows)


def test_rows_counts_the_rows_even_none():
    assert value_of(check(measure="rows"), ["a"], []).value == 0.0
    assert value_of(check(measure="rows"), ["a"], [(None,)] * 3).value == 3.0


def test_explain_ms_reads_the_execution_time_and_keeps_the_plan_not_the_rows():
    rows = [("Seq Scan on users",), ("Planning Time: 0.1 ms",), ("Execution Time: 12.25 ms",)]
    m = value_of(check(measure="explain_ms"), ["QUERY PLAN"], rows)
    assert m.value == 12.25
    assert m.evidence == {"sql": BASE.source.sql, "plan": "\n".join(r[0] for r in rows)}
    with pytest.raises(MeasurementError, match="^q: no 'Execution Time' in the EXPLAIN ANALYZE output$"):
        value_of(check(measure="explain_ms"), ["QUERY PLAN"], rows[:2])


def test_a_ratio_divides_two_cells_of_the_first_row():
    m = value_of(check(measure="ratio", numerator="bad", denominator="all"), ["all", "bad"], [(200, 10), (1, 1)])
    assert m.value == pytest.approx(0.05) and m.evidence["rows"] == [[200, 10], [1, 1]]
    # A state (connections in use of the maximum) is exact: no counts for the rules.
    assert "numerator" not in m.evidence and "denominator" not in m.evidence


def test_a_ratio_of_event_counts_in_a_window_carries_its_counts_for_the_rules():
    m = value_of(check(measure="ratio", numerator="bad", denominator="all", window_minutes=60), ["all", "bad"],
                 [(3, 1)])
    assert m.value == pytest.approx(1 / 3)
    assert (m.evidence["numerator"], m.evidence["denominator"], m.evidence["window_s"]) == (1.0, 3.0, 3600)
    assert PLAN.check("workflow_error_rate").source.window_minutes == 60


def test_only_a_count_or_a_ratio_has_a_window():
    for measure in ("rows", "explain_ms"):
        with pytest.raises(ValueError, match="window_minutes 60: only a count of events .a cell. or a ratio of two "
                                             "has a window"):
            explain = {"sql": "auth_query_plan.sql"} if measure == "explain_ms" else {}  # explain_ms needs one
            type(BASE.source).model_validate({**BASE.source.model_dump(), "measure": measure, "window_minutes": 60,
                                              **explain})
    cell = value_of(check(measure="cell", column="n", window_minutes=60), ["n"], [(7,)])
    assert cell.value == 7.0 and cell.evidence["window_s"] == 3600 and "numerator" not in cell.evidence


@pytest.mark.parametrize(("row", "message"), [
    ((None, 10), r"^q: columns 'bad'/'all' not in \['all', 'bad'\]$"),
    ((0, 10), "^q: all is 0, the ratio is undefined$"),
])
def test_a_ratio_without_a_denominator_is_an_error(row, message):
    with pytest.raises(MeasurementError, match=message):
        value_of(check(measure="ratio", numerator="bad", denominator="all"), ["all", "bad"], [row])


def test_a_ratio_of_a_column_the_query_does_not_return_is_an_error():
    with pytest.raises(MeasurementError, match=r"^q: columns 'bad'/'nope' not in"):
        value_of(check(measure="ratio", numerator="bad", denominator="nope"), ["all", "bad"], [(1, 1)])
