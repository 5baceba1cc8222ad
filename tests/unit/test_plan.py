"""Plan loading and validation: the default plan encodes the seed; bad plans name file, field, value."""

import copy
import re

import pytest
import yaml

from migration_soak.exceptions import PlanError
from migration_soak.plan import PLANS_DIR, load_plan, parse_plan


@pytest.fixture
def raw():
    return yaml.safe_load((PLANS_DIR / "default.yaml").read_text())


def test_default_plan_encodes_the_seed_schedule():
    plan = load_plan("default")
    ticks = {p.name: len(p.tick_offsets()) for p in plan.phases}
    # Cronograma: every 15 min in hours 0-2, hourly in 2-8, every 4 h in 8-24.
    assert ticks == {"intensive": 8, "regular": 6, "passive": 4}
    assert [str(o) for o in plan.phase("passive").tick_offsets()] == ["12:00:00", "16:00:00", "20:00:00", "1 day, 0:00:00"]
    assert plan.soak_hours() == 24


def test_default_plan_thresholds_are_the_seeds():
    plan = load_plan("default")
    auth = plan.check("auth_error_rate")
    assert (auth.expect.op, auth.expect.value) == ("<", 0.001)  # < 0.1 %
    assert (auth.no_go.op, auth.no_go.value) == (">", 0.01)  # > 1 %
    assert plan.check("login_p95").expect.value == 500
    assert plan.check("verify_p95").expect.value == 200
    # the runbook's 90 % is an alert, not a NO-GO: the check has no level of its own
    assert plan.check("connection_usage").no_go is None
    assert next(a for a in plan.alerts if a.checks == ["connection_usage"]).rule.value == 0.9
    assert plan.check("users_without_authorizer_id").no_go.holds(1)
    assert not plan.check("users_without_authorizer_id").no_go.holds(0)


def test_schedule_runs_the_hour0_checklist_then_each_phase(raw):
    plan = load_plan("default")
    pairs = plan.schedule()
    hour0 = [c for p, c in pairs if p == "hour0"]
    assert pairs[: len(hour0)] == [("hour0", c) for c in hour0]
    # Checklist Hora 0: schema validated, health checks passing, logs without critical errors
    assert {"deprecated_columns_absent", "gateway_health", "authorizer_health", "critical_errors"} <= set(hour0)
    assert [p for p, _ in pairs[len(hour0):]] == sorted([p for p, _ in pairs[len(hour0):]],
                                                       key=["intensive", "regular", "passive"].index)
    for phase in plan.phases:
        assert plan.checks_in(phase.name), phase.name


def test_criteria_name_known_checks_and_baseline_rules_need_a_baseline(raw):
    bad = copy.deepcopy(raw)
    bad["no_go"][0]["checks"] = ["nope"]
    with pytest.raises(PlanError, match=r"no_go\[no_go_critical_errors_per_hour\] names unknown checks \['nope'\]"):
        parse_plan(bad, "p.yaml")
    bad = copy.deepcopy(raw)
    del bad["baseline"]
    with pytest.raises(PlanError, match="a 'baseline' rule needs a 'baseline' section"):
        parse_plan(bad, "p.yaml")
    bad = copy.deepcopy(raw)
    bad["go"][0]["rule"] = {"kind": "sustained", "op": ">", "value": 1}
    with pytest.raises(PlanError, match=r"go\[go_no_critical_errors\]\.rule\.minutes: required field is missing"):
        parse_plan(bad, "p.yaml")


def test_wrong_threshold_type_names_file_field_and_value(raw):
    bad = copy.deepcopy(raw)
    bad["checks"][[c["id"] for c in bad["checks"]].index("auth_error_rate")]["expect"]["value"] = "one percent"
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "plans/x.yaml")
    msg = str(err.value)
    assert "plans/x.yaml" in msg and "checks[auth_error_rate].expect.value" in msg and "'one percent'" in msg


def test_unknown_field_and_missing_sql_file_are_errors(raw):
    bad = copy.deepcopy(raw)
    bad["checks"][0]["source"]["sql"] = "nope.sql"
    bad["phases"][0]["every_minuts"] = 15
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    msg = str(err.value)
    assert "no such file include/sql/nope.sql" in msg
    assert "phases[intensive].every_minuts" in msg


def test_phase_window_and_repeats_are_checked(raw):
    bad = copy.deepcopy(raw)
    bad["phases"][1]["end_hour"] = 1
    with pytest.raises(PlanError, match=r"phases\[regular\].*end_hour 1 must be after start_hour 2"):
        parse_plan(bad, "p.yaml")
    bad = copy.deepcopy(raw)
    bad["checks"].append(copy.deepcopy(bad["checks"][0]))
    with pytest.raises(PlanError, match="check ids repeat"):
        parse_plan(bad, "p.yaml")


def test_overlapping_phases_an_empty_environment_and_levels_that_both_hold_are_refused(raw):
    bad = copy.deepcopy(raw)
    bad["phases"][1]["start_hour"] = 1  # regular from hour 1, intensive until hour 2
    with pytest.raises(PlanError, match=r"phases 'intensive' \(hours 0-2\) and 'regular' \(hours 1-8\) overlap"):
        parse_plan(bad, "p.yaml")
    bad = copy.deepcopy(raw)
    bad["environment"] = " "
    with pytest.raises(PlanError, match="environment"):
        parse_plan(bad, "p.yaml")
    bad = copy.deepcopy(raw)
    check = next(c for c in bad["checks"] if c["id"] == "login_p95")
    check["expect"], check["no_go"] = {"op": "<", "value": 2000}, {"op": ">", "value": 1000}
    with pytest.raises(PlanError, match=r"checks\[login_p95\].*expect < 2000 and no_go > 1000 both hold for 1500: a reading"):
        parse_plan(bad, "p.yaml")


def test_a_fingerprint_of_a_column_the_migration_drops_is_refused(raw):
    """Every value of a dropped column reads as lost at hour 0: a NO-GO the migration causes."""
    for table in ("users", "public.users"):
        bad = copy.deepcopy(raw)
        check = next(c for c in bad["checks"] if c["id"] == "data_loss")
        check["source"]["table"] = table
        check["source"]["columns"].append("emailVerified")
        with pytest.raises(PlanError, match=r"checks\[data_loss\]\.source: fingerprints 'emailVerified' of "
                                            rf"{table}, which migration\.dropped_columns drops"):
            parse_plan(bad, "p.yaml")
    other = copy.deepcopy(raw)  # the same column name in another table is not dropped
    check = next(c for c in other["checks"] if c["id"] == "data_loss")
    check["source"]["table"], check["source"]["columns"] = "archive.users", ["passwordHash"]
    parse_plan(other, "p.yaml")


@pytest.mark.parametrize("endpoint, holds", [("/admin/users", "none"), ("/admin/users/{user_id}", "['user_id']"),
                                              ("/admin/users/{0}", "['0']"), ("/u/{id}?again={id}", "['id', 'id']")])
def test_an_authorizer_endpoint_must_hold_the_id_once(raw, endpoint, holds):
    """'/admin/users'.format(id=...) is '/admin/users': every sampled id "looked up" at a list
    endpoint answering 200, nothing unknown, a GO without one lookup; '{user_id}' failed at
    the first reading, after the DDL."""
    check = next(c for c in raw["checks"] if c["id"] == "authorizer_sync")
    check["source"]["endpoint"] = endpoint
    with pytest.raises(PlanError, match=r"checks\[authorizer_sync\]\.source\.endpoint: endpoint "
                                        + re.escape(f"'{endpoint}' must hold '{{id}}' exactly once and no other "
                                                    f"field (it holds {holds})")):
        parse_plan(raw, "p.yaml")


def test_unknown_plan_lists_known_ones():
    with pytest.raises(PlanError, match=r"no plan 'nope'.*known plans: \['default'"):
        load_plan("nope")


def test_the_prisma_cli_backend_needs_a_project(raw):
    assert load_plan("default").migration.prisma_project == "include/prisma"  # runbook step 3 on the real CLI
    bad = copy.deepcopy(raw)
    bad["migration"].update(backend="prisma_cli", prisma_project=None)
    with pytest.raises(PlanError, match=r"migration.*backend 'prisma_cli' needs prisma_project"):
        parse_plan(bad, "p.yaml")
    bad["migration"]["backend"] = "flyway"
    with pytest.raises(PlanError, match=r"migration\.backend.*'flyway'"):
        parse_plan(bad, "p.yaml")
    good = copy.deepcopy(raw)
    good["migration"].update(backend="prisma_cli", prisma_project="include/prisma")
    assert parse_plan(good, "p.yaml").migration.backend == "prisma_cli"


def _first_phase_dup(bad):
    bad["phases"][1]["name"] = "intensive"


def _hour0_phase(bad):
    bad["phases"][2]["name"] = "hour0"


def _unknown_phase(bad):
    bad["checks"][0]["phases"] = ["hour0", "nightly"]


def _alert_unknown_check(bad):
    bad["alerts"][0]["checks"] = ["auth_error_rate", "nope"]


def _guard_unknown_check(bad):
    bad["guard"]["checks"] = ["nope", "critical_errors"]


def _baseline_unknown_check(bad):
    bad["baseline"]["checks"] = ["login_p95", "nope"]


def _criterion_id_repeats(bad):
    bad["no_go"][0]["id"] = bad["go"][0]["id"]


def _baseline_rule_in_an_alert_only(bad):
    # no baseline rule left in go/no_go: the alert's is the one that needs the section
    for section in ("go", "no_go"):
        bad[section] = [c for c in bad[section] if c["rule"]["kind"] != "baseline"]
    bad["alerts"][0]["rule"] = {"kind": "baseline", "op": ">", "value": 0.3}
    del bad["baseline"]


def _requests_of_a_gauge(bad):
    bad["report"]["requests"][0]["check"] = "app_memory"


def _requests_of_an_unknown_check(bad):
    bad["report"]["requests"][0]["check"] = "nope"


def _requirement_id_repeats(bad):
    bad["preflight"]["require"].append(dict(bad["preflight"]["require"][0]))


def _ratio_as_percent(bad):
    next(c for c in bad["no_go"] if c["id"] == "no_go_auth_error_rate")["rule"]["value"] = 1.5  # meant as 1.5 %


def _check_level_as_percent(bad):
    next(c for c in bad["checks"] if c["id"] == "cache_hit_rate")["expect"]["value"] = 90


def _negative_level(bad):
    next(c for c in bad["no_go"] if c["id"] == "no_go_critical_errors_per_hour")["rule"]["value"] = -5


def _never_firing_ratio(bad):
    next(c for c in bad["no_go"] if c["id"] == "no_go_workflows")["rule"]["value"] = 1  # > 100 %


def _below_zero_count(bad):
    next(c for c in bad["go"] if c["id"] == "go_no_critical_errors")["rule"].update(op="<", value=0)


def _up_is_two(bad):
    next(c for c in bad["checks"] if c["id"] == "gateway_health")["expect"]["value"] = 2


def _mixed_units(bad):
    bad["checks"].append({"id": "login_p95_s", "title": "/auth/login p95 (seconds)", "unit": "seconds",
                          "source": {"kind": "openmetrics", "connection": "soak_gateway", "measure": "gauge",
                                     "metric": "login_p95_seconds"},
                          "expect": {"op": "<", "value": 0.5}, "phases": ["regular"], "rule": "Dashboard 1 P95"})
    bad["go"].append({"id": "go_login_fast", "text": "login < 500 ms", "checks": ["login_p95", "login_p95_s"],
                      "rule": {"kind": "threshold", "op": "<", "value": 500}})


def _go_ratio_as_percent_one(bad):
    next(c for c in bad["go"] if c["id"] == "go_auth_error_rate")["rule"]["value"] = 1  # meant as 1 %


def _go_always_met(bad):
    next(c for c in bad["go"] if c["id"] == "go_cache_hit_rate")["rule"].update(op=">=", value=0)


def _expect_always_met(bad):
    bad["go"], bad["no_go"] = [], []  # each check's expect is then a GO criterion
    next(c for c in bad["checks"] if c["id"] == "connection_usage")["expect"].update(op="<=", value=1)


def _go_without_no_go(bad):
    bad["no_go"] = []


def _go_coverage_below_the_verdicts(bad):
    _criterion(bad, "go_auth_error_rate")["min_coverage"] = 0.6  # verdict.min_coverage: 0.9


def _no_go_coverage_of_its_own(bad):
    _criterion(bad, "no_go_workflows")["min_coverage"] = 0.95


def _fingerprint_in_the_guard(bad):
    bad["guard"]["checks"].append("data_loss")


def _baseline_rule_check_not_in_the_baseline(bad):
    bad["baseline"]["checks"] = ["app_memory"]


def _slow_guard(bad):
    bad["guard"]["every_minutes"] = 30


def _sustained_off_the_guard(bad):
    bad["guard"]["checks"].remove("db_cpu")


CROSS_FIELD_ERRORS = [
    (_slow_guard, "no_go[no_go_auth_error_rate]: a 5-minute sustained rule needs readings at most 2.5 min apart; "
                  "guard.every_minutes is 30"),
    (_sustained_off_the_guard, "no_go[no_go_db_cpu]: a 10-minute sustained rule needs readings at most 5 min "
                               "apart, which only the guard takes: add ['db_cpu'] to guard.checks"),
    (_never_firing_ratio, "criterion 'no_go_workflows' rule: > 1 can never hold (no ratio reading is above 1): "
                          "a rule that cannot fire"),
    (_below_zero_count, "criterion 'go_no_critical_errors' rule: < 0 can never hold (no reading is below 0): "
                        "a rule that cannot fire"),
    (_up_is_two, "check 'gateway_health' expect: == 2 can never hold (an up reading is 0 or 1): a rule that "
                 "cannot fire"),
    (_mixed_units, "criterion 'go_login_fast' rule: value 500 is compared with checks in different units "
                   "(login_p95: ms, login_p95_s: seconds): one level cannot be in both; split it into one rule a unit"),
    (_go_ratio_as_percent_one, "criterion 'go_auth_error_rate' rule: < 1 always holds (1 is 100 %: every ratio "
                               "reading short of all of it meets it) (write 0.01 for 1 %): a GO no reading can fail"),
    (_go_always_met, "criterion 'go_cache_hit_rate' rule: >= 0 always holds (every reading is 0 or more): a GO no "
                     "reading can fail"),
    (_expect_always_met, "check 'connection_usage' expect: <= 1 always holds (every ratio reading is 1 or less) "
                         "(write 0.01 for 1 %): a GO no reading can fail"),
    (_go_without_no_go, "the plan states GO criteria but no NO-GO criterion (no_go: []): nothing could stop the "
                        "soak or roll it back; state the NO-GO criteria, or neither (each check's levels then)"),
    (_go_coverage_below_the_verdicts, "go[go_auth_error_rate].min_coverage 0.6 is below verdict.min_coverage 0.9: "
                                      "the GO would be met on readings the verdict calls too few to judge its NO-GO "
                                      "criteria on; give 0.9 or more, or leave it out (the verdict's then)"),
    (_no_go_coverage_of_its_own, "no_go[no_go_workflows].min_coverage 0.95: a NO-GO criterion is judged on "
                                 "verdict.min_coverage (0.9), so this would be ignored; leave it out"),
    (_fingerprint_in_the_guard, "guard: check 'data_loss' reads a fingerprint source, too heavy to run every guard "
                                "interval; give it phase ticks instead"),
    (_baseline_rule_check_not_in_the_baseline, "criterion 'go_performance_stable': its 'baseline' rule reads "
                                               "['login_p95', 'verify_p95', 'auth_query_time'], which "
                                               "baseline.checks does not measure: it could never be judged"),
    (_ratio_as_percent, "criterion 'no_go_auth_error_rate' rule: value 1.5 is a ratio 0..1 (write 0.015 for 1.5 %)"),
    (_check_level_as_percent, "check 'cache_hit_rate' expect: value 90 is a ratio 0..1 (write 0.9 for 90 %)"),
    (_negative_level, "criterion 'no_go_critical_errors_per_hour' rule: value -5 is negative; no count reading is"),
    (_first_phase_dup, "phase names repeat: ['intensive', 'intensive', 'passive']"),
    (_hour0_phase, "'hour0' is reserved for the checks at hour 0"),
    (_unknown_phase, "check 'users_without_authorizer_id' names unknown phases ['nightly'] "
                     "(known: ['intensive', 'regular', 'passive'])"),
    (_alert_unknown_check, "alerts[high_auth_error_rate] names unknown checks ['nope']"),
    (_guard_unknown_check, "guard names unknown checks ['nope']"),
    (_baseline_unknown_check, "baseline names unknown checks ['nope']"),
    (_criterion_id_repeats, "criterion ids repeat: ['go_no_critical_errors']"),
    (_baseline_rule_in_an_alert_only, "a 'baseline' rule needs a 'baseline' section"),
    (_requests_of_a_gauge, "report.requests[app_memory]: check 'app_memory' counts no requests (its source is "
                           "openmetrics gauge; needs openmetrics counter_ratio)"),
    (_requests_of_an_unknown_check, "report.requests[nope] names unknown checks ['nope']"),
    (_requirement_id_repeats, "preflight.require ids repeat: ['users_without_authorizer_id']"),
]


def test_a_go_criterion_may_ask_more_coverage_than_the_verdict(raw):
    data = copy.deepcopy(raw)
    _criterion(data, "go_auth_error_rate")["min_coverage"] = 0.95
    assert next(c for c in parse_plan(data, "p.yaml").go if c.id == "go_auth_error_rate").min_coverage == 0.95


@pytest.mark.parametrize("mutate, message", CROSS_FIELD_ERRORS, ids=[m.__name__.lstrip("_") for m, _ in CROSS_FIELD_ERRORS])
def test_each_cross_field_rule_names_what_is_wrong(raw, mutate, message):
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == f"p.yaml: {message}"


def _criterion(data, cid):
    return next(c for section in ("go", "no_go") for c in data[section] if c["id"] == cid)


@pytest.mark.parametrize("cid, value, message", [
    ("no_go_performance", 30, "no_go[no_go_performance].rule.value: value 30 is a change as a ratio (0.3 = 30 %): "
                              "write 0.3 for 30 %; levels above 10 (1000%) are refused"),
    ("go_no_memory_leak", 20, "go[go_no_memory_leak].rule.value: value 20 is a change as a ratio (0.3 = 30 %): "
                              "write 0.2 for 20 %; levels above 10 (1000%) are refused"),
    ("no_go_memory_leak", -2, "no_go[no_go_memory_leak].rule.value: value -2 is a change below -100 %: no reading "
                              "can fall that far"),
])
def test_a_relative_level_written_as_a_percentage_is_refused(raw, cid, value, message):
    """``baseline`` and ``growth`` levels are changes as ratios: ``value: 30`` meant as 30 %
    is +3000 %, a rule that would never fire. The path names no pydantic union branch."""
    bad = copy.deepcopy(raw)
    _criterion(bad, cid)["rule"]["value"] = value
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == f"p.yaml: {message}"
    _criterion(bad, cid)["rule"]["value"] = 2.5  # +250 %: a level a plan may mean
    assert parse_plan(bad, "p.yaml")


def test_a_source_field_error_names_the_field_not_the_union_branch(raw):
    bad = copy.deepcopy(raw)
    bad["checks"][0]["source"]["sql"] = 5  # the sql source's own field 'sql'
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == "p.yaml: checks[users_without_authorizer_id].source.sql: Input should be a valid string (got 5)"


@pytest.mark.parametrize("where, value, message", [
    (("verdict", "min_coverage"), 0, "verdict.min_coverage: Input should be greater than or equal to 0.5 (got 0)"),
    (("verdict", "min_coverage"), "0.9", "verdict.min_coverage: Input should be a valid number (got '0.9')"),
    (("rehearsal", "enabled"), "yes", "rehearsal.enabled: Input should be a valid boolean (got 'yes')"),
    (("baseline", "minutes"), 1, "baseline: every_minutes 15 is longer than minutes 1: no baseline reading would "
                                 "be taken"),
    (("phases", 0), {"name": "intensive", "start_hour": 0, "end_hour": 2, "every_minutes": 0.001},
     "phases[intensive].every_minutes: Input should be greater than or equal to 1 (got 0.001)"),
    (("human_gates", 0), {"id": "", "text": "", "why": "x"},
     "human_gates[0].id: String should match pattern '^[a-z][a-z0-9_]{1,62}$' (got '')\n"
     "p.yaml: human_gates[0].text: String should have at least 1 character (got '')"),
])
def test_values_pydantic_would_coerce_or_that_leave_nothing_to_judge_are_refused(raw, where, value, message):
    """Strict types (a YAML string is no number, "yes" no boolean), a coverage under half the
    readings, a baseline with no reading: each named with its value."""
    bad = copy.deepcopy(raw)
    bad[where[0]][where[1]] = value
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == f"p.yaml: {message}"


def test_a_criterion_naming_a_check_twice_is_refused(raw):
    bad = copy.deepcopy(raw)
    _criterion(bad, "no_go_data_loss")["checks"] = ["data_loss", "data_loss"]
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == "p.yaml: no_go[no_go_data_loss]: checks repeat: ['data_loss']"


def test_check_ids_repeat_lists_each_repeated_id_once_sorted(raw):
    bad = copy.deepcopy(raw)
    bad["checks"] += [copy.deepcopy(bad["checks"][1]), copy.deepcopy(bad["checks"][0]),
                      copy.deepcopy(bad["checks"][0])]
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == "p.yaml: check ids repeat: ['deprecated_columns_absent', 'users_without_authorizer_id']"


def test_the_first_broken_cross_field_rule_is_the_one_reported(raw):
    # Phases are checked before checks, checks before criteria, criteria before the
    # baseline section: one message, the earliest.
    bad = copy.deepcopy(raw)
    _hour0_phase(bad)
    bad["checks"].append(copy.deepcopy(bad["checks"][0]))
    _criterion_id_repeats(bad)
    del bad["baseline"]
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == "p.yaml: 'hour0' is reserved for the checks at hour 0"
    _first_phase_dup(bad)
    bad["phases"][2]["name"] = "passive"
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == "p.yaml: phase names repeat: ['intensive', 'intensive', 'passive']"
    bad["phases"][1]["name"] = "regular"
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == "p.yaml: check ids repeat: ['users_without_authorizer_id']"
    bad["checks"].pop()
    _unknown_phase(bad)
    with pytest.raises(PlanError, match=r"^p\.yaml: check 'users_without_authorizer_id' names unknown phases"):
        parse_plan(bad, "p.yaml")
    bad["checks"][0]["phases"] = "all"
    bad["go"][0]["checks"] = ["nope"]
    with pytest.raises(PlanError, match=r"^p\.yaml: go\[go_no_critical_errors\] names unknown checks \['nope'\]$"):
        parse_plan(bad, "p.yaml")
    bad["go"][0]["checks"] = ["critical_errors"]
    with pytest.raises(PlanError, match=r"^p\.yaml: criterion ids repeat"):
        parse_plan(bad, "p.yaml")
    bad["no_go"][0]["id"] = "no_go_critical_errors_per_hour"
    with pytest.raises(PlanError, match=r"^p\.yaml: a 'baseline' rule needs a 'baseline' section$"):
        parse_plan(bad, "p.yaml")


def test_default_plan_names_its_preflight_requirement_headline_requests_and_sampled_column():
    plan = load_plan("default")
    (req,) = plan.preflight.require
    assert (req.id, req.sql_file, str(req.expect)) == ("users_without_authorizer_id", "users_without_authorizer_id.sql",
                                                       "== 0")
    assert req.why == "Pre-requisito: todos los usuarios tienen authorizerId"
    assert [(r.check, r.label, r.failed) for r in plan.report.requests] == [
        ("auth_error_rate", "Authentication requests", "answered 5xx")]
    src = plan.check("authorizer_sync").source
    assert (src.table, src.column) == ("users", "authorizerId")


@pytest.mark.parametrize("requirement, message", [
    ({"id": "r1", "expect": {"op": "==", "value": 0}, "why": "w"},
     "p.yaml: preflight.require[r1]: requirement 'r1': give exactly one of 'sql_file', 'sql'"),
    ({"id": "r1", "sql": "SELECT 0", "sql_file": "users_without_authorizer_id.sql", "expect": {"op": "==", "value": 0},
      "why": "w"}, "p.yaml: preflight.require[r1]: requirement 'r1': give exactly one of 'sql_file', 'sql'"),
    ({"id": "r1", "sql": "SELECT 0", "expect": {"op": "==", "value": 0}, "why": " "},
     "p.yaml: preflight.require[r1]: requirement 'r1': 'why' is empty (quote the runbook's prerequisite)"),
    ({"id": "r1", "sql_file": "nope.sql", "expect": {"op": "==", "value": 0}, "why": "w"},
     "p.yaml: preflight.require[r1].sql_file: no such file include/sql/nope.sql"),
    ({"id": "r1", "sql": "SELECT 0; COMMIT", "expect": {"op": "==", "value": 0}, "why": "w"},
     "p.yaml: preflight.require[r1].sql: the query: "),
    ({"id": "r1", "sql": "SELECT 0", "expect": {"op": "about", "value": 0}, "why": "w"},
     "p.yaml: preflight.require[r1].expect.op: "),
])
def test_a_bad_preflight_requirement_names_its_field_and_value(raw, requirement, message):
    bad = copy.deepcopy(raw)
    bad["preflight"]["require"] = [requirement]
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value).startswith(message), str(err.value)


def test_the_sampled_table_and_column_are_checked_names(raw):
    bad = copy.deepcopy(raw)
    sync = next(c for c in bad["checks"] if c["id"] == "authorizer_sync")
    sync["source"]["column"] = ""
    sync["source"]["table"] = "x" * 64
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert "checks[authorizer_sync].source.column: String should have at least 1 character (got '')" \
        in str(err.value), str(err.value)
    assert "checks[authorizer_sync].source.table: String should have at most 63 characters" \
        in str(err.value), str(err.value)


def test_a_boolean_is_not_a_number(raw):
    """YAML's ``true`` would be read as 1 (s, %, ...); a new user's plan had ``lock_timeout_s: true``."""
    bad = copy.deepcopy(raw)
    bad["migration"]["lock_timeout_s"] = True
    with pytest.raises(PlanError, match=r"migration.*lock_timeout_s must be a number, got true"):
        parse_plan(bad, "p.yaml")


@pytest.mark.parametrize("path, value, message", [
    (("no_go", "no_go_performance", "min_delta"), True, r"min_delta must be a number, got true"),
    (("no_go", "no_go_performance", "min_delta", "login_p95"), True, r"the floor of login_p95 must be a number, got true"),
    (("no_go", "no_go_data_loss", "value"), float("inf"), r"no_go\[no_go_data_loss\].*value.*finite number"),
    (("no_go", "no_go_users_without_authorizer_id", "value"), float("nan"), r"value.*finite number"),
])
def test_booleans_infinities_and_nan_are_not_levels(raw, path, value, message):
    """A new user's plans: ``min_delta: true`` read as 1 ms; ``value: .inf`` made a NO-GO
    that 5 000 lost rows could not breach; ``.nan`` compares false with everything."""
    bad = copy.deepcopy(raw)
    section, cid, *keys = path
    node = next(c for c in bad[section] if c["id"] == cid)["rule"]
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    with pytest.raises(PlanError, match=message):
        parse_plan(bad, "p.yaml")


def test_noise_floors_per_check_name_exactly_the_criterions_checks(raw):
    plan = parse_plan(copy.deepcopy(raw), "p.yaml")
    rule = next(c for c in plan.no_go if c.id == "no_go_performance").rule
    assert (rule.floor("login_p95"), rule.floor("auth_query_time")) == (0, 2)  # the p95s: their buckets
    bad = copy.deepcopy(raw)
    floors = next(c for c in bad["no_go"] if c["id"] == "no_go_performance")["rule"]["min_delta"]
    del floors["auth_query_time"]
    floors["login_p99"] = 50
    with pytest.raises(PlanError, match=r"no_go\[no_go_performance\].*rule\.min_delta must give each of its checks a "
                                        r"floor: missing \['auth_query_time'\]; not among its checks \['login_p99'\]"):
        parse_plan(bad, "p.yaml")


def test_levels_no_reading_can_meet_are_refused():
    from migration_soak.plan import BaselineRule, GrowthRule

    with pytest.raises(ValueError, match=r"< -1 can never hold: a change below -100 % needs a reading below 0"):
        BaselineRule(kind="baseline", op="<", value=-1)
    with pytest.raises(ValueError, match=r"< -1 can never hold"):
        GrowthRule(kind="growth", op="<", value=-1)
    GrowthRule(kind="growth", op="<=", value=-1)  # a reading of 0 meets it


def test_a_count_level_that_is_not_a_whole_number_cannot_be_equalled(raw):
    bad = copy.deepcopy(raw)
    check = next(c for c in bad["checks"] if c["id"] == "critical_errors")
    check["expect"] = {"op": "==", "value": 0.5}
    with pytest.raises(PlanError, match=r"== 0.5 can never hold \(a count reading is a whole number\)"):
        parse_plan(bad, "p.yaml")


def test_a_down_sql_that_does_not_exist_is_a_plan_error(raw):
    """Nothing read migration.down_sql before the migration unless the rehearsal ran
    (rehearsal.enabled false, or staging above rehearsal.max_database_mb): the first
    reader was the NO-GO rollback, after the columns were dropped."""
    bad = copy.deepcopy(raw)
    bad["rehearsal"] = {"enabled": False}
    bad["migration"]["down_sql"] = "include/sql/rollback/no_such.down.sql"
    with pytest.raises(PlanError, match=r"x\.yaml: migration\.down_sql: no such file "
                                        r"'include/sql/rollback/no_such\.down\.sql'"):
        parse_plan(bad, "x.yaml")
    bad["migration"]["down_sql"] = "include/sql/rollback"  # a folder is no file either
    with pytest.raises(PlanError, match=r"migration\.down_sql: no such file 'include/sql/rollback'"):
        parse_plan(bad, "x.yaml")


def test_a_down_sql_that_is_not_utf8_is_a_plan_error(raw, tmp_path):
    down = tmp_path / "down.sql"
    down.write_bytes(b"ALTER TABLE users ADD COLUMN \xff text;")
    bad = copy.deepcopy(raw)
    bad["migration"]["down_sql"] = str(down)
    with pytest.raises(PlanError, match=rf"migration\.down_sql: '{down}' cannot be read: 'utf-8' codec"):
        parse_plan(bad, "x.yaml")


def test_a_prisma_project_that_does_not_exist_is_a_plan_error(raw):
    """With the ledger backend the Prisma project was first used by `migrate status`, after the DDL."""
    bad = copy.deepcopy(raw)
    bad["migration"]["prisma_project"] = "include/no_such_prisma"
    with pytest.raises(PlanError, match=r"migration\.prisma_project: no such folder 'include/no_such_prisma'"):
        parse_plan(bad, "x.yaml")
    del bad["migration"]["prisma_project"]  # optional: no project, no check
    assert parse_plan(bad, "x.yaml").migration.prisma_project is None


def test_a_lock_timeout_postgresql_cannot_take_is_a_plan_error(raw):
    """lock_timeout is an int of milliseconds (max 2147483647): 3,000,000 s passed `gt=0`
    and failed at the ledger backend's set_config on staging."""
    bad = copy.deepcopy(raw)
    bad["migration"]["lock_timeout_s"] = 3_000_000
    with pytest.raises(PlanError, match=r"migration\.lock_timeout_s: Input should be less than or equal to 2147483 "
                                        r"\(got 3000000\)"):
        parse_plan(bad, "x.yaml")
    bad["migration"]["lock_timeout_s"] = 2147483
    assert parse_plan(bad, "x.yaml").migration.lock_timeout_s == 2147483


def _renamed_phase(raw, old: str, new: str) -> dict:
    bad = copy.deepcopy(raw)
    next(p for p in bad["phases"] if p["name"] == old)["name"] = new
    for check in bad["checks"]:
        if isinstance(check["phases"], list):
            check["phases"] = [new if p == old else p for p in check["phases"]]
    return bad


def test_a_phase_named_like_a_task_of_the_soak_dag_is_refused_naming_the_phase(raw):
    """A phase named ``rollback`` (or ``guard``, ``report``, ``baseline``...) passed the plan
    and then made the DAG's task group clash with the soak's own (DuplicateTaskIdFound while
    building the DAG): the DAG file failed to import, every plan's DAG was gone, and the
    import errors file said nothing (the plan itself loaded)."""
    from migration_soak.airflow.builder import build_dag

    built = build_dag("default", load_plan("default"))
    own = {task_id.split(".")[0] for task_id in built.task_ids} - {p.name for p in load_plan("default").phases}
    assert {"rollback", "guard", "report", "baseline", "load", "decide"} <= own
    for name in sorted(own - {"hour0"}):
        with pytest.raises(PlanError) as err:
            parse_plan(_renamed_phase(raw, "passive", name), "p.yaml")
        assert str(err.value) == (f"p.yaml: phases[{name}].name: {name!r} names one of the soak DAG's own tasks or "
                                  "task groups: the phase's task group would clash with it (no DAG would load); "
                                  "name the phase otherwise"), name
    parse_plan(_renamed_phase(raw, "passive", "nightly"), "p.yaml")  # any other name is a phase


def test_a_migrations_dir_or_migration_that_does_not_exist_is_a_plan_error(raw, tmp_path):
    """A plan pointing at a missing migrations folder, or naming a migration it does not
    hold, loaded and built its DAG; the first to notice was preflight, after a trigger,
    with 'migrations folder /abs/path does not exist' (no field named). Like down_sql and
    prisma_project, they are read at load now."""
    bad = copy.deepcopy(raw)
    bad["migration"]["migrations_dir"] = "include/prisma/migration"  # a typo
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "x.yaml")
    assert str(err.value) == "x.yaml: migration.migrations_dir: no such folder 'include/prisma/migration'"
    bad["migration"]["migrations_dir"] = "include/plans/default.yaml"  # a file is no folder
    with pytest.raises(PlanError, match=r"x\.yaml: migration\.migrations_dir: no such folder "
                                        r"'include/plans/default\.yaml'"):
        parse_plan(bad, "x.yaml")
    bad = copy.deepcopy(raw)
    bad["migration"]["name"] = "20251202020032_update_user_schema_fnal"
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "x.yaml")
    assert str(err.value) == (
        "x.yaml: migration.name: no migration '20251202020032_update_user_schema_fnal' in migration.migrations_dir "
        "'include/prisma/migrations' (no 20251202020032_update_user_schema_fnal/migration.sql there; its "
        "migrations: ['20250101000000_init', '20251202020032_update_user_schema_final'])")
    folder = tmp_path / "migrations"
    (folder / "20260101000000_drop").mkdir(parents=True)  # a folder without its migration.sql
    bad["migration"].update(name="20260101000000_drop", migrations_dir=str(folder))
    with pytest.raises(PlanError, match=r"migration\.name: no migration '20260101000000_drop' in "
                                        r"migration\.migrations_dir .*\(no 20260101000000_drop/migration\.sql there; "
                                        r"its migrations: \[\]\)"):
        parse_plan(bad, "x.yaml")
    (folder / "20260101000000_drop" / "migration.sql").write_text('ALTER TABLE "users" DROP COLUMN "x";\n')
    assert parse_plan(bad, "x.yaml").migration.migrations_dir == str(folder)


def test_a_check_no_tick_reads_is_refused_where_it_could_never_be_judged(raw):
    """``phases: []`` loaded: a GO criterion on such a check could never be met (guard
    readings never count as coverage), so every soak of the plan ended INCONCLUSIVE after
    its 24 hours; a check nothing reads at all was silently never measured."""
    bad = copy.deepcopy(raw)
    next(c for c in bad["checks"] if c["id"] == "cache_hit_rate")["phases"] = []
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == ("p.yaml: go[go_cache_hit_rate]: check 'cache_hit_rate' has no scheduled reading "
                              "(phases: []): the GO criterion could never be met (guard readings never count as its "
                              "coverage); give it phases")
    bad = copy.deepcopy(raw)
    bad["go"], bad["no_go"] = [], []  # each check's expect is then a GO
    bad["checks"] = [c for c in bad["checks"] if c["id"] in ("critical_errors", "cache_hit_rate")]
    for key in ("guard", "baseline", "report", "alerts"):
        bad.pop(key, None)
    next(c for c in bad["checks"] if c["id"] == "cache_hit_rate")["phases"] = []
    with pytest.raises(PlanError, match=r"p\.yaml: checks\[cache_hit_rate\]: no scheduled reading \(phases: \[\]\) "
                                        r"and its expect is a GO criterion \(the plan states none\): it could never "
                                        r"be met; give it phases"):
        parse_plan(bad, "p.yaml")
    bad = copy.deepcopy(raw)
    next(c for c in bad["checks"] if c["id"] == "login_p99")["phases"] = []  # no criterion reads it
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == ("p.yaml: checks[login_p99].phases: [] and neither guard nor baseline reads it: the "
                              "check would never be measured")
    bad = copy.deepcopy(raw)  # the guard alone may read a check no GO criterion names
    next(c for c in bad["checks"] if c["id"] == "db_memory")["phases"] = []
    assert parse_plan(bad, "p.yaml").check("db_memory").phases == []


@pytest.mark.parametrize("where, value, message", [
    (("migration", "table"), "", "migration.table: table name '' is not 'table' or 'schema.table'"),
    (("migration", "table"), "public.", "migration.table: table name 'public.' is not 'table' or 'schema.table'"),
    (("migration", "key"), "", "migration.key: String should have at least 1 character (got '')"),
    (("migration", "dropped_columns"), ["passwordHash", ""],
     "migration.dropped_columns[1]: String should have at least 1 character (got '')"),
    (("data_loss", "table"), ".users", "checks[data_loss].source.table: table name '.users' is not 'table' or 'schema.table'"),
    (("data_loss", "key"), "", "checks[data_loss].source.key: String should have at least 1 character (got '')"),
    (("incremental_backup", "tables"), ["users", ""],
     "checks[incremental_backup].source.tables[1]: table name '' is not 'table' or 'schema.table'"),
])
def test_an_empty_table_key_or_column_name_is_refused_naming_its_field(raw, where, value, message):
    """migration.table '' was refused as "table name '' is not 'table' or 'schema.table'",
    naming no field (a cross-field rule tripped over it), 'public.' or a fingerprint's
    '.users' loaded, and an empty migration.key or dropped column loaded as well."""
    bad = copy.deepcopy(raw)
    section, field = where
    if section == "migration":
        bad["migration"][field] = value
    else:
        next(c for c in bad["checks"] if c["id"] == section)["source"][field] = value
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert message in str(err.value).splitlines()[0], str(err.value)


def test_a_plan_path_that_does_not_exist_lists_the_plans_of_its_own_folder(tmp_path):
    """``python -m demo.run --plans-dir /nope`` said "no plan '/nope/default.yaml' (...; known
    plans: ['default'])": the known plans were include/plans', not the folder looked in,
    so the plan it could not find was listed as known."""
    with pytest.raises(PlanError) as err:
        load_plan(str(tmp_path / "nope" / "default.yaml"))
    assert str(err.value) == (f"plan: no plan '{tmp_path}/nope/default.yaml' (looked for {tmp_path}/nope/default.yaml; "
                              f"the folder {tmp_path}/nope does not exist)")
    (tmp_path / "mine.yaml").write_text("name: x\n")
    with pytest.raises(PlanError) as err:
        load_plan(str(tmp_path / "other.yaml"))
    assert str(err.value).endswith(f"(looked for {tmp_path}/other.yaml; plans in {tmp_path}: ['mine'])")


def test_alert_ids_may_not_repeat(raw):
    """Two alerts of one id loaded; the guard posts an alert once per id (observe.alerts_settled
    keys on it), so once one fired the other, a different rule, could never reach Slack."""
    bad = copy.deepcopy(raw)
    cpu = next(a for a in bad["alerts"] if a["id"] == "db_cpu_high")
    bad["alerts"].append({**copy.deepcopy(cpu), "text": "Alert if CPU > 95% for 5 minutes",
                          "rule": {**cpu["rule"], "value": 0.95}})
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == ("p.yaml: alert ids repeat: ['db_cpu_high']: Slack hears each alert id once a run, so "
                              "one of them would never be posted")


def _with_check_sql(raw, tmp_path, monkeypatch, check_id: str, sql: str) -> dict:
    """A copy of the plan ``raw`` whose check ``check_id`` reads ``sql`` from ``mine.sql``, in
    a SQL folder at ``tmp_path`` holding the default plan's files besides."""
    import migration_soak.plan as plan_module

    monkeypatch.setattr(plan_module, "SQL_DIR", tmp_path)
    for f in plan_module.REPO_ROOT.joinpath("include", "sql").glob("*.sql"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "mine.sql").write_text(sql)
    plan = copy.deepcopy(raw)
    next(c for c in plan["checks"] if c["id"] == check_id)["source"]["sql"] = "mine.sql"
    return plan


@pytest.mark.parametrize("sql, why", [
    ("SELECT count(*) FROM public.users;\n", "statement 1 of 1 (line 1: SELECT count(*) FROM public.users) is no EXPLAIN"),
    ("EXPLAIN SELECT 1;\n", "statement 1 of 1 (line 1: EXPLAIN SELECT 1) does not ANALYZE: a plan without it has no "
                            "'Execution Time'"),
    ("EXPLAIN (ANALYZE false) SELECT 1;\n", "does not ANALYZE"),
    ("EXPLAIN (ANALYZE, FORMAT JSON) SELECT 1;\n", "is in FORMAT JSON: the reading parses the text format"),
])
def test_explain_ms_on_a_file_that_is_no_explain_analyze_is_a_plan_error(raw, tmp_path, monkeypatch, sql, why):
    """measure: explain_ms on a file whose last statement is not EXPLAIN ANALYZE (text)
    loaded; every reading was then an error ("no 'Execution Time' in the EXPLAIN ANALYZE
    output"), so go_performance_stable could never be met: INCONCLUSIVE after 24 h."""
    bad = _with_check_sql(raw, tmp_path, monkeypatch, "auth_query_time", sql)
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    text = str(err.value)
    assert text.startswith("p.yaml: checks[auth_query_time].source: measure 'explain_ms' reads the 'Execution Time' "
                           "of an EXPLAIN ANALYZE: include/sql/mine.sql's last "), text
    assert why in text, text
    (tmp_path / "mine.sql").write_text("EXPLAIN (ANALYZE on, BUFFERS) SELECT 1;\n")
    parse_plan(bad, "p.yaml")


def test_dropped_columns_may_not_repeat(raw):
    """dropped_columns [passwordHash, emailVerified, passwordHash] loaded (preflight's
    check_drops compares membership, so it passed too); the rollback's health then compared
    the columns back (two) with the list (three) and could never pass
    (runbook.health_ok), after every value had been restored."""
    from migration_soak.runbook import health_ok

    listed = ["passwordHash", "emailVerified", "passwordHash"]
    assert not health_ok({"columns_back": ["emailVerified", "passwordHash"]}, listed)  # what the dup did
    bad = copy.deepcopy(raw)
    bad["migration"]["dropped_columns"] = listed
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == ("p.yaml: migration.dropped_columns: ['passwordHash'] listed twice: each column is "
                              "dropped, backed up and restored once")


@pytest.mark.parametrize("section, check", [("baseline", "login_p95"), ("guard", "db_cpu")])
def test_a_check_named_twice_in_the_baseline_or_the_guard_is_refused(raw, section, check):
    """baseline.checks [..., login_p95, login_p95] loaded, and building its DAG raised
    DuplicateTaskIdFound ('baseline.login_p95'): the DAG file failed to import and every
    plan's DAG was gone."""
    bad = copy.deepcopy(raw)
    bad[section]["checks"].append(check)
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == f"p.yaml: {section}.checks: [{check!r}] named twice"


@pytest.mark.parametrize("sql, why", [
    ("INSERT INTO public.clients (id) VALUES ('x') RETURNING 1;\n", "statement 1 of 1 (line 1: INSERT INTO "),
    ("SELECT 0 AS n;\nUPDATE public.users SET email = email;\n", "statement 2 of 2 (line 2: UPDATE public.users"),
    ("WITH gone AS (DELETE FROM public.users RETURNING 1) SELECT count(*) FROM gone;\n",
     "it writes (DELETE in a WITH query or subquery)"),
    ("EXPLAIN ANALYZE DELETE FROM public.users;\n", "EXPLAIN ANALYZE runs what it explains: it writes (DELETE)"),
    ("CREATE TABLE public.soak_scratch (i int);\n", "it is no read (CREATE statement)"),
    ("TRUNCATE public.clients;\n", "it is no read (TRUNCATE statement)"),
    ("SELECT 1 INTO public.soak_scratch;\n", "SELECT ... INTO creates a table"),
    ("SELECT count(*) FROM public.users FOR UPDATE;\n", "SELECT ... FOR UPDATE locks the rows it reads"),
    ("SELECT count(*) FROM (SELECT 1 FROM public.users FOR SHARE) s;\n", "SELECT ... FOR SHARE locks the rows"),
    ("SELECT nextval('public.users_seq');\n", "nextval() writes or acts on the server"),
    ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity;\n", "pg_terminate_backend() writes or acts"),
])
def test_a_check_query_that_writes_is_refused_at_load(raw, tmp_path, monkeypatch, sql, why):
    """A check file that writes (INSERT/UPDATE/DELETE, DDL, a data-modifying WITH, SELECT ...
    FOR UPDATE, nextval()...) loaded: every reading was then an error (the read-only
    transaction refuses the write) and a GO on it could never be met, or it acted on the
    server (FOR UPDATE and pg_terminate_backend pass a read-only transaction). Now the plan is
    refused at load, naming the check, the file and the statement."""
    bad = _with_check_sql(raw, tmp_path, monkeypatch, "users_without_authorizer_id", sql)
    parse_plan(copy.deepcopy(raw), "p.yaml")  # the default plan's own files are reads
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    text = str(err.value)
    assert text.startswith("p.yaml: checks[users_without_authorizer_id].source.sql: include/sql/mine.sql: "), text
    assert why in text, text


@pytest.mark.parametrize("sql", [
    "SET LOCAL work_mem = '64MB';\nSELECT count(*) FROM public.users;\n",
    "EXPLAIN DELETE FROM public.users;\n",  # no ANALYZE: planned, never run
    "SHOW work_mem;\n",
    "SELECT pg_advisory_xact_lock(1), 0 AS n;\n",
    "VALUES (0);\n",
])
def test_check_queries_that_only_read_load(raw, tmp_path, monkeypatch, sql):
    parse_plan(_with_check_sql(raw, tmp_path, monkeypatch, "users_without_authorizer_id", sql), "p.yaml")


def test_a_preflight_requirement_that_writes_is_refused(raw):
    bad = copy.deepcopy(raw)
    bad["preflight"]["require"] = [{"id": "r1", "sql": "DELETE FROM public.users RETURNING 0",
                                    "expect": {"op": "==", "value": 0}, "why": "w"}]
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value).startswith("p.yaml: preflight.require[r1].sql: the query: statement 1 of 1 (line 1: DELETE "
                                     "FROM public.users RETURNING 0): it writes (DELETE)"), str(err.value)


@pytest.mark.parametrize("where, value, message", [
    (("phases", 2, "end_hour"), 10_000, "p.yaml: phases[passive]: end_hour 10000 h is past the longest soak a "
                                        "plan may ask for, 168 h (7 days)"),
    (("phases", 2, "end_hour"), 168.5, "p.yaml: phases[passive]: end_hour 168.5 h is past the longest soak"),
    (("baseline", "minutes"), 168 * 60 + 1, "p.yaml: baseline: minutes 10081 (168.017 h) is longer than the "
                                            "longest soak a plan may ask for, 168 h (7 days)"),
])
def test_a_soak_longer_than_a_week_is_refused(raw, where, value, message):
    """A phase end_hour of 10 000 loaded: 600 000 guard ticks, the check sensors deferred for
    417 days, and each report chart took 18 s with an x label every 2 h (5 203 ticks,
    matplotlib's 'exceeds Locator.MAXTICKS'). Now refused at load, naming the bound."""
    bad = copy.deepcopy(raw)
    node = bad
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value).startswith(message), str(err.value)


def test_a_week_long_soak_loads(raw):
    from migration_soak.plan import MAX_SOAK_HOURS

    good = copy.deepcopy(raw)
    good["phases"][2]["end_hour"] = MAX_SOAK_HOURS
    good["baseline"]["minutes"] = MAX_SOAK_HOURS * 60
    assert parse_plan(good, "p.yaml").soak_hours() == MAX_SOAK_HOURS == 168


@pytest.mark.parametrize("field, value", [("human_timeout_hours", 10_000), ("sign_off_timeout_hours", 1e12)])
def test_a_human_wait_longer_than_a_week_is_refused(raw, field, value):
    """Found by review: the soak's length was bounded (168 h) but not the waits for a person:
    verdict.sign_off_timeout_hours 1e12 loaded and the DAG file then failed to import
    (builder's timedelta(hours=...): 'OverflowError: Python int too large to convert to C
    int', no field named); 10 000 loaded and the QA sign-off's HITL task stayed open for
    417 days. Now refused at load, naming the field, its value and the bound."""
    bad = copy.deepcopy(raw)
    bad["verdict"][field] = value
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value).startswith(f"p.yaml: verdict: {field} {value:g} h is longer than the longest wait for an "
                                     "answer a plan may ask for, 168 h (7 days)"), str(err.value)
    good = copy.deepcopy(raw)
    good["verdict"][field] = 168
    assert getattr(parse_plan(good, "p.yaml").verdict, field) == 168


@pytest.mark.parametrize("where, value, message", [
    (("guard", "every_minutes"), 0.001, "p.yaml: guard: every_minutes 0.001 gives 1,440,000 readings a check over the "
                                        "24 h soak; at most 10,080 (one a minute over the longest soak, 168 h)"),
    (("baseline", "every_minutes"), 0.001, "p.yaml: baseline: every_minutes 0.001 gives 60,000 readings a check over "
                                           "its 60 minutes; at most 10,080 (one a minute over the longest soak, 168 h)"),
])
def test_a_guard_or_baseline_cadence_past_a_reading_a_minute_over_a_week_is_refused(raw, where, value, message):
    """Found by review: MAX_SOAK_HOURS was said to keep the guard at most 10,080 ticks a
    check, but guard.every_minutes 0.001 (min_wall_seconds 0, now refused) loaded: 10,080,000 guard ticks
    a check over a 168 h soak (clock.offsets took 2.5 s to list them; the guard would read
    each check 16 times a wall second at time_scale 1). Now the cadence is refused at load
    when it asks more readings than one a minute over the longest soak."""
    bad = copy.deepcopy(raw)
    bad[where[0]][where[1]] = value
    if where[0] == "guard":
        bad["guard"]["min_wall_seconds"] = 1
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value).startswith(message), str(err.value)


def test_a_sub_minute_guard_on_a_day_long_soak_loads(raw):
    good = copy.deepcopy(raw)
    good["guard"]["every_minutes"] = 0.5
    assert parse_plan(good, "p.yaml").guard.every_minutes == 0.5


@pytest.mark.parametrize("value", [0, 0.5])
def test_a_guard_floor_below_what_a_reading_takes_is_refused(raw, value):
    """guard.min_wall_seconds 0 loaded (``ge=0``): at time_scale 300 and every_minutes 1 it
    asked the guard for a reading every 0.2 s of wall time (at 100 000, every 0.6 ms), yet a
    counter reading's window lasts at least openmetrics.MIN_WINDOW_S (1 s; it sleeps until
    then), so the guard read the latest due tick and passed over the others, which the judge
    then counted as missed. Now the floor is refused at load below what a reading takes,
    naming the field, the value and the smallest allowed."""
    from migration_soak.plan import MIN_GUARD_WALL_SECONDS
    from migration_soak.sources.openmetrics import MIN_WINDOW_S

    assert MIN_GUARD_WALL_SECONDS >= MIN_WINDOW_S
    bad = copy.deepcopy(raw)
    bad["guard"]["min_wall_seconds"] = value
    with pytest.raises(PlanError) as err:
        parse_plan(bad, "p.yaml")
    assert str(err.value) == (f"p.yaml: guard.min_wall_seconds: min_wall_seconds {value:g} would ask the guard for "
                              "readings closer in wall time than it can take them (a counter reading's window lasts "
                              "at least 1 s; at time_scale 300 and every_minutes 1 it would be a reading every "
                              f"{max(value, 0.2):g} s): at least 1"), str(err.value)
    good = copy.deepcopy(raw)
    good["guard"]["min_wall_seconds"] = 1
    assert parse_plan(good, "p.yaml").guard.min_wall_seconds == 1


def test_a_guard_floor_that_slows_the_real_time_guard_or_overflows_its_clock_is_refused(raw):
    """Found by review3: min_wall_seconds had no upper side. 180 loaded, yet clock.guard_every
    holds the guard to it in real time too (max(every_minutes, min_wall_seconds / 60): a
    reading every 3 min at time_scale 1), so the default plan's 5-minute sustained NO-GO
    (no_go_auth_error_rate, readings at most 2.5 min apart) could never be judged: every soak
    INCONCLUSIVE, though guard.every_minutes 3 is refused for that at load. And 1e12 loaded,
    then the run's guard and judge failed on the clock at time_scale 300 ("OverflowError:
    Python int too large to convert to C int", no field named)."""
    from migration_soak import clock

    slow = copy.deepcopy(raw)
    slow["guard"]["min_wall_seconds"] = 180
    with pytest.raises(PlanError) as err:
        parse_plan(slow, "p.yaml")
    assert str(err.value) == (
        "p.yaml: no_go[no_go_auth_error_rate]: a 5-minute sustained rule needs readings at most 2.5 min apart; "
        "guard.min_wall_seconds 180 holds the guard to one reading every 3 min even in real time (time_scale 1): "
        "at most 150"), str(err.value)
    huge = copy.deepcopy(raw)
    huge["guard"]["min_wall_seconds"] = 1e12
    with pytest.raises(PlanError) as err:
        parse_plan(huge, "p.yaml")
    assert str(err.value) == ("p.yaml: guard.min_wall_seconds: min_wall_seconds 1e+12 is longer than the longest soak "
                              "a plan may ask for, 168 h (604,800 s): the guard would not read once; at most 604,800")
    good = copy.deepcopy(raw)
    good["guard"]["min_wall_seconds"] = 150  # a reading every 2.5 min in real time: the 5-minute windows judged
    plan = parse_plan(good, "p.yaml")
    assert clock.guard_every(plan, 1).total_seconds() == 150 and clock.guard_every(plan, 100_000) is not None
