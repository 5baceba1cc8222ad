"""bench/soak_load.py's arithmetic for the passive backup's line, timed as whole soak
chains (1 increment with key lists, then the ones proved by count): a soak's DB time is
the median soak's sum, not the median reading times the readings."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "soak_load.py"


@pytest.fixture(scope="module")
def soak_load():
    spec = importlib.util.spec_from_file_location("bench_soak_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_backup_line_counts_the_median_soak_of_its_chain(soak_load):
    # The 1 M-user run of 6 December: 3 soaks of 4 readings, the first of each with key lists.
    times = [767, 386, 361, 450, 495, 399, 486, 397, 733, 433, 416, 469]
    row = soak_load.Row("incremental_backup", "backup", "increment", times_ms=[float(t) for t in times],
                        readings={"passive": 4}, whole_ms=[float(t) for t in times],
                        soak_ms=[1964.0, 1777.0, 2051.0], soak_whole_ms=[2555.0, 2119.0, 2410.0])
    assert row.per_soak_s == pytest.approx(1.964)  # the median soak, not 4 x the median reading (1.80 s)
    assert row.per_reading_ms == pytest.approx(491.0)  # its mean reading
    assert row.whole_s == pytest.approx(2.410)
    plain = soak_load.Row("x", "sql", "q", times_ms=[10.0, 12.0, 11.0], readings={"regular": 6})
    assert (plain.per_soak_s, plain.whole_s) == (pytest.approx(0.066), pytest.approx(0.066))
