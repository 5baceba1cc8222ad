"""The judge: NO-GO on any breach, INCONCLUSIVE on missing data or missed expectations, GO otherwise."""

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from migration_soak.judge import expected_observations, judge, status_of
from migration_soak.plan import load_plan
from migration_soak.store import Observation

PLAN = load_plan("default")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def full_soak(value_for=lambda check: None, status="pass"):
    """Every scheduled observation of the default plan, passing with an in-range value."""
    obs = []
    good = {c.id: _passing_value(c) for c in PLAN.checks}
    for n, (phase, cid) in enumerate(PLAN.schedule()):
        ticks = [0] if phase == "hour0" else range(1, len(PLAN.phase(phase).tick_offsets()) + 1)
        for tick in ticks:
            at = T0 + timedelta(minutes=n, seconds=tick)
            obs.append(Observation("r", phase, cid, tick, at, at, good[cid], PLAN.check(cid).unit, status))
    return obs


def _passing_value(check):
    e = check.expect
    return {"<": e.value / 2 if e.value else -1, "<=": e.value, ">": e.value + 1, ">=": e.value, "==": e.value, "!=": e.value + 1}[e.op]


def replace(obs, check_id, phase, tick, **changes):
    out = []
    for o in obs:
        if (o.check_id, o.phase, o.tick) == (check_id, phase, tick):
            o = Observation(**{**o.__dict__, **changes})
        out.append(o)
    return out


def test_all_pass_is_go():
    v = judge(PLAN, full_soak())
    assert v.decision == "GO"
    assert all(c.outcome == "met" and c.coverage == 1.0 for c in v.checks)


def test_expected_observations_counts_hour0_and_every_tick():
    assert expected_observations(PLAN, "auth_error_rate") == 1 + 8 + 6 + 4


def test_one_breach_is_no_go_naming_the_check_value_and_tick():
    obs = replace(full_soak(), "auth_error_rate", "intensive", 3, value=0.05, status="fail")
    v = judge(PLAN, obs)
    assert v.decision == "NO_GO"
    assert len(v.reasons) == 1 and v.reasons[0].startswith("auth_error_rate:")
    assert "0.05 ratio at intensive tick 3" in v.reasons[0]


def test_errors_are_missing_data_never_a_pass():
    obs = full_soak()
    for tick in (1, 2, 3):  # 3 of 19 errors: coverage 84 % < 90 %
        obs = replace(obs, "login_p95", "intensive", tick, value=None, status="error")
    v = judge(PLAN, obs)
    assert v.decision == "INCONCLUSIVE"
    login = next(c for c in v.checks if c.check_id == "login_p95")
    assert login.outcome == "not_enough_data" and login.errors == 3


def test_one_error_within_coverage_still_go():
    obs = replace(full_soak(), "login_p95", "passive", 2, value=None, status="error")  # 18/19 = 94.7 %
    assert judge(PLAN, obs).decision == "GO"


def test_missing_observations_count_against_coverage():
    obs = [o for o in full_soak() if not (o.check_id == "verify_p95" and o.phase == "passive")]
    v = judge(PLAN, obs)
    assert v.decision == "INCONCLUSIVE"
    assert "15 of 19" in next(c.detail for c in v.checks if c.check_id == "verify_p95")


def test_warn_means_go_criterion_not_met():
    obs = replace(full_soak(), "auth_error_rate", "regular", 2, value=0.005, status="warn")
    v = judge(PLAN, obs)
    assert v.decision == "INCONCLUSIVE"
    assert "expected < 0.001 ratio, got 0.005" in v.reasons[0]


def test_status_of_thresholds_at_just_below_and_above():
    c = PLAN.check("auth_error_rate")  # expect < 0.001, no-go > 0.01
    assert status_of(c.expect, c.no_go, 0.0009) == "pass"
    assert status_of(c.expect, c.no_go, 0.001) == "warn"
    assert status_of(c.expect, c.no_go, 0.01) == "warn"
    assert status_of(c.expect, c.no_go, 0.0101) == "fail"


RANK = {"GO": 0, "INCONCLUSIVE": 1, "NO_GO": 2}
# A missing value (error) is tolerated up to the plan's coverage; a measured miss (warn) is not.
STATUS_RANK = {"pass": 0, "error": 1, "warn": 2, "fail": 3}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 19 * len(PLAN.checks) - 1), st.sampled_from(["warn", "fail", "error"])), max_size=6))
def test_worse_observations_never_improve_the_verdict(changes):
    obs = full_soak()
    before = judge(PLAN, obs).decision
    for idx, status in changes:
        o = obs[idx]
        if STATUS_RANK[status] <= STATUS_RANK[o.status]:
            continue
        value = None if status == "error" else (o.value if o.value is not None else 1.0)
        obs[idx] = Observation(**{**o.__dict__, "status": status, "value": value})
        after = judge(PLAN, obs).decision
        assert RANK[after] >= RANK[before]
        before = after


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 19 * len(PLAN.checks) - 1), min_size=1, max_size=40))
def test_error_observations_never_make_a_go_out_of_missing_data(idxs):
    obs = full_soak()
    for i in idxs:
        obs[i] = Observation(**{**obs[i].__dict__, "status": "error", "value": None})
    v = judge(PLAN, obs)
    for c in v.checks:
        if c.outcome == "met":
            assert c.coverage >= PLAN.verdict.min_coverage
    if v.decision == "GO":
        assert all(c.coverage >= PLAN.verdict.min_coverage for c in v.checks)
