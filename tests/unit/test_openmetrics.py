"""openmetrics source: rates and quantiles between two scrapes, as PromQL computes them."""

from datetime import datetime, timezone

import pytest

from migration_soak.exceptions import MeasurementError
from migration_soak.plan import load_plan
from migration_soak.sources import openmetrics
from migration_soak.sources.openmetrics import compute, histogram_quantile, select

PLAN = load_plan("default")


def page(ok_login, err_login, ok_verify, buckets):
    lines = [
        "# HELP http_requests_total Requests.", "# TYPE http_requests_total counter",
        f'http_requests_total{{endpoint="/auth/login",status="200"}} {ok_login}',
        f'http_requests_total{{endpoint="/auth/login",status="500"}} {err_login}',
        f'http_requests_total{{endpoint="/auth/verify",status="200"}} {ok_verify}',
        'http_requests_total{endpoint="/workflows/run",status="500"} 999',
        "# HELP http_request_duration_seconds Latency.", "# TYPE http_request_duration_seconds histogram",
    ]
    cum = 0
    for le, n in buckets:
        cum += n
        lines.append(f'http_request_duration_seconds_bucket{{endpoint="/auth/login",le="{le}"}} {cum}')
    lines.append(f'http_request_duration_seconds_count{{endpoint="/auth/login"}} {cum}')
    lines.append('http_request_duration_seconds_sum{endpoint="/auth/login"} 1.0')
    return "\n".join(lines) + "\n"


BUCKETS = ["0.1", "0.2", "0.5", "1.0", "+Inf"]


def test_error_ratio_uses_the_increase_between_scrapes_and_ignores_other_endpoints():
    src = PLAN.check("auth_error_rate").source
    before = select(page(100, 0, 300, zip(BUCKETS, [0] * 5)), "http_requests_total", src.match)
    value, _, figures = compute(src, "ratio", before, page(190, 10, 400, zip(BUCKETS, [0] * 5)))
    assert figures == {"numerator": 10, "denominator": 200}
    assert value == pytest.approx(0.05)


def test_counter_reset_counts_from_zero():
    src = PLAN.check("auth_error_rate").source
    before = select(page(1000, 50, 1000, zip(BUCKETS, [0] * 5)), "http_requests_total", src.match)
    value, _, figures = compute(src, "ratio", before, page(20, 0, 30, zip(BUCKETS, [0] * 5)))  # app restarted
    assert figures["denominator"] == 50 and value == 0


def test_no_traffic_is_an_error_not_a_pass():
    src = PLAN.check("auth_error_rate").source
    text = page(5, 0, 5, zip(BUCKETS, [0] * 5))
    with pytest.raises(MeasurementError, match="no traffic"):
        compute(src, "ratio", select(text, "http_requests_total", src.match), text)


def test_histogram_quantile_interpolates_like_promql():
    # 100 observations: 50 <= 0.1 s, 40 in (0.1, 0.2], 10 in (0.2, 0.5]
    assert histogram_quantile(0.95, [(0.1, 50), (0.2, 90), (0.5, 100), (float("inf"), 100)]) == pytest.approx(0.35)
    assert histogram_quantile(0.5, [(0.1, 50), (0.2, 90), (0.5, 100), (float("inf"), 100)]) == pytest.approx(0.1)
    # rank in +Inf bucket: the largest finite bound
    assert histogram_quantile(0.99, [(0.1, 50), (float("inf"), 100)]) == pytest.approx(0.1)


def test_p95_in_ms_over_the_window_only():
    src = PLAN.check("login_p95").source
    old = page(0, 0, 0, zip(BUCKETS, [1000, 0, 0, 0, 0]))  # history: all fast
    new = page(0, 0, 0, zip(BUCKETS, [1000, 0, 0, 100, 0]))  # window: 100 slow ones in (0.5, 1]
    before = select(old, "http_request_duration_seconds_bucket", src.match)
    value, _, _ = compute(src, "ms", before, new)
    assert value == pytest.approx(975.0)  # 0.5 + 0.5 * 95/100 s


def test_empty_histogram_window_is_an_error():
    src = PLAN.check("login_p95").source
    text = page(0, 0, 0, zip(BUCKETS, [3, 0, 0, 0, 0]))
    with pytest.raises(MeasurementError):
        compute(src, "ms", select(text, "http_request_duration_seconds_bucket", src.match), text)


def test_a_first_reading_starts_its_window_at_the_newest_page_old_enough(monkeypatch):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    pages = [(now - timedelta(seconds=s), f"page-{s}") for s in (40, 7, 3.5, 0.2)]
    monkeypatch.setattr(openmetrics, "_PAGES", {("gw", "/metrics"): pages})
    # not the freshest page (a 0.2 s window), not the oldest (40 s): the newest >= MIN_WINDOW_S
    monkeypatch.setattr(openmetrics, "MIN_WINDOW_S", 3.0)
    assert openmetrics._window_start("gw", "/metrics")[1] == "page-3.5"
    # only fresh pages: the oldest of them (measure then waits out the rest of the window)
    monkeypatch.setattr(openmetrics, "_PAGES", {("gw", "/metrics"): pages[3:]})
    assert openmetrics._window_start("gw", "/metrics")[1] == "page-0.2"


def source(check_id, **changes):
    return PLAN.check(check_id).source.model_copy(update=changes)


def test_a_gauge_sums_the_matching_samples_of_the_current_page_only():
    src = source("auth_error_rate", measure="gauge", match={"endpoint": "/auth/.*"})
    old = select(page(1, 1, 1, zip(BUCKETS, [0] * 5)), "http_requests_total", src.match)
    value, snap, figures = compute(src, "count", old, page(100, 7, 300, zip(BUCKETS, [0] * 5)))
    assert value == 407 and figures == {"series": 3} and len(snap) == 3


def test_a_counter_rate_is_the_increase_per_minute_of_the_window():
    src = source("auth_error_rate", measure="counter_rate", match={"endpoint": "/auth/login"})
    before = select(page(100, 10, 300, zip(BUCKETS, [0] * 5)), "http_requests_total", src.match)
    value, _, figures = compute(src, "per_min", before, page(130, 12, 999, zip(BUCKETS, [0] * 5)), 30.0004)
    assert figures == {"increase": 32, "seconds": 30.0}
    assert value == pytest.approx(32 / 30.0004 * 60)


@pytest.mark.parametrize("elapsed", [None, 0.0, -1.0])
def test_a_counter_rate_without_time_between_the_scrapes_is_an_error(elapsed):
    src = source("auth_error_rate", measure="counter_rate")
    text = page(1, 1, 1, zip(BUCKETS, [0] * 5))
    with pytest.raises(MeasurementError, match="no time between the two scrapes"):
        compute(src, "per_min", None, text, elapsed)


@pytest.mark.parametrize(("measure", "sample"), [("gauge", "nope"), ("counter_rate", "nope"), ("counter_ratio", "nope"),
                                                 ("histogram_quantile", "nope_bucket")])
def test_no_matching_sample_is_an_error_naming_the_sample_and_the_selector(measure, sample):
    src = source("login_p95", measure=measure, metric="nope", match={"endpoint": "/auth/login"}, quantile=0.95)
    with pytest.raises(MeasurementError, match=f"^no sample {sample} matching {{'endpoint': '/auth/login'}}$"):
        compute(src, "ms", None, page(1, 1, 1, zip(BUCKETS, [1] * 5)), 1.0)


def test_a_quantile_in_seconds_unless_the_unit_is_ms_and_its_figures():
    src = PLAN.check("login_p95").source
    new = page(0, 0, 0, zip(BUCKETS, [50, 40, 10, 0, 0]))
    value, _, figures = compute(src, "s", None, new)  # no previous page: every observation is in the window
    assert value == pytest.approx(0.35)
    assert figures == {"observations": 100, "quantile": src.quantile,
                       "buckets": [[0.1, 50], [0.2, 90], [0.5, 100], [1.0, 100], ["+Inf", 100]]}


def test_a_quantile_records_the_windows_requests_per_bucket_for_the_judge_to_pool():
    """The judge compares the p95 of an hour's requests with the baseline's: it needs each
    reading's requests per bucket (the increase since the previous scrape), JSON-safe."""
    import json

    from migration_soak.rules import pooled_quantile
    from migration_soak.store import Observation

    src = PLAN.check("login_p95").source
    before = select(page(0, 0, 0, zip(BUCKETS, [50, 40, 10, 0, 0])), "http_request_duration_seconds_bucket", src.match)
    value, _, figures = compute(src, "ms", before, page(0, 0, 0, zip(BUCKETS, [50, 40, 10, 0, 0 + 100])))
    assert figures["buckets"] == [[0.1, 0], [0.2, 0], [0.5, 0], [1.0, 0], ["+Inf", 100]]
    assert value == pytest.approx(1000.0)  # every request of the window over the largest bound
    assert json.loads(json.dumps(figures, allow_nan=False)) == figures
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    _, _, first = compute(src, "ms", None, page(0, 0, 0, zip(BUCKETS, [50, 40, 10, 0, 0])))
    readings = [Observation("r", "guard", "login_p95", k, at, at, 1.0, "ms", "pass", f) for k, f in enumerate([first, figures])]
    pooled = pooled_quantile(readings)
    # 200 requests: 50 under 100 ms, 90 under 200 ms, 100 under 500 ms, 100 over 1 s
    assert pooled is not None and pooled.requests == 200 and pooled.value == pytest.approx(1000.0)


def test_a_quantile_without_quantile_is_an_error():
    src = source("login_p95", quantile=None)
    with pytest.raises(MeasurementError, match="needs 'quantile'"):
        compute(src, "ms", None, page(0, 0, 0, zip(BUCKETS, [1] * 5)))


def test_the_first_reading_after_the_migration_counts_no_request_from_before_it(monkeypatch):
    # make demo SCENARIO=legacy-code: hour0's auth_error_rate started its window at a page kept
    # from the baseline's scrapes, 60 s back: 184 requests, 126 of them from before the
    # migration, 3 answered 5xx (1.63 %) where the 58 since it had those 3 (5.2 %); the
    # post-mortem then called the 184 "seen meanwhile" (while the migrated schema was live)
    from datetime import timedelta
    from types import SimpleNamespace

    from migration_soak.sources import SourceContext

    now = datetime.now(timezone.utc)
    migrated = now - timedelta(seconds=5)
    pages = {("soak_gateway", "/metrics"): [(now - timedelta(seconds=40), page(100, 0, 0, []))]}  # the baseline's
    later = iter([page(226, 0, 0, []), page(281, 3, 0, [])])  # after the migration: 0, then 3 of 58 failed

    def scrape(conn_id, path):
        text = next(later)
        pages[(conn_id, path)].append((datetime.now(timezone.utc), text))
        return text

    monkeypatch.setattr(openmetrics, "_PAGES", pages)
    monkeypatch.setattr(openmetrics, "scrape", scrape)
    monkeypatch.setattr(openmetrics, "MIN_WINDOW_S", 0.0)
    store = SimpleNamespace(events=lambda run_id, kind: [{"kind": kind, "at": migrated, "payload": {}}]
                            if kind == "migrate" else [])
    check = PLAN.check("auth_error_rate").model_copy(update={"source": source("auth_error_rate",
                                                                               match={"endpoint": "/auth/login"})})
    ctx = SourceContext(plan=PLAN, run_id="r", store=store, phase="hour0", tick=0)
    m = openmetrics.measure(check, ctx)
    assert datetime.fromisoformat(m.evidence["window_from"]) >= migrated
    assert (m.evidence["numerator"], m.evidence["denominator"]) == (3, 58)
