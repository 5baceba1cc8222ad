"""The trigger form (the DAG's params) tells a new user what a value does before the run
starts: a compressed clock is not the plan's soak, an unattended "go" is never a GO."""

from __future__ import annotations

from pathlib import Path

from migration_soak.airflow.builder import build_dag
from migration_soak.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]


def _param(plan_stem: str, plan, name: str):
    return build_dag(plan_stem, plan).params.get_param(name)


def test_time_scale_says_a_compressed_clock_is_demonstration_evidence_of_the_plans_length():
    """(h-ui) The form read 'Soak clock speed-up: 1 = real time (24 h); 360 = 24 h in 4
    minutes.' for every plan (the browser plan soaks 45 minutes) and nothing of what a
    compressed run proves: 300 reads as a 24 h soak done quickly."""
    text = _param("default", load_plan("default"), "time_scale").description
    assert "1 = real time, the plan's 24 h soak" in text, text
    assert "300 = 24 h in 4.8 min" in text, text
    assert "demonstration evidence, not a 24-hour soak" in text and "never an approval for production" in text
    short = load_plan(ROOT / "tests" / "browser" / "plans" / "browser.yaml")
    text = _param("browser", short, "time_scale").description
    assert "24 h" not in text and "the plan's 45 min soak" in text and "300 = 45 min in 9.0 s" in text, text  # the banner's units


def test_on_inconclusive_go_reads_as_keeping_the_migration_without_a_go():
    """(h-ui) The dropdown offered 'go' described as 'decide unattended': an INCONCLUSIVE
    run with it keeps the migration as INCONCLUSIVE and fails (decision.candidate), never
    a GO, which the form did not say."""
    param = _param("default", load_plan("default"), "on_inconclusive")
    shown = param.schema["values_display"]
    assert set(shown) == {"ask", "rollback", "go"}
    assert "never a GO" in shown["go"] and "keep" in shown["go"], shown["go"]
    assert "4 h" in shown["ask"] and "Roll back" in shown["ask"], shown["ask"]
    assert "never a GO" in param.description


def test_an_out_of_range_number_is_refused_by_the_form_not_clamped_to_its_bound():
    """The trigger form's time_scale 100001 ran at 100000, unsaid: Airflow 3.3's form gives a
    number param's schema ``minimum`` / ``maximum`` to its number field (FieldNumber.tsx:
    ``max={param.schema.maximum}``), which clamps a value beyond them on blur, so the run
    never saw what was typed. The bounds stay in the schema Airflow validates on trigger
    (under allOf, which the field does not read): the value typed reaches that validation and
    is refused, naming the param and the bound, as time_scale 0 is (exclusiveMinimum)."""
    import pytest
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_dag("default", load_plan("default"))
    for name in ("time_scale", "clock_lead_s"):
        schema = dag.params.get_param(name).schema
        assert "maximum" not in schema and "minimum" not in schema, (name, schema)  # what the form clamps to

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))  # what the api-server triggers

    def validate(**conf):  # as its create_dagrun does (a ParamValidationError is the form's HTTP 400)
        return serialized.params.deep_merge(conf).validate()

    assert validate(time_scale=100000)["time_scale"] == 100000 and validate(time_scale=300)["time_scale"] == 300
    with pytest.raises(Exception, match=r"time_scale.*100001 is greater than the maximum of 100000"):
        validate(time_scale=100001)
    with pytest.raises(Exception, match=r"time_scale.*0 is less than or equal to the minimum of 0"):
        validate(time_scale=0)
    assert validate(clock_lead_s=0)["clock_lead_s"] == 0
    with pytest.raises(Exception, match=r"clock_lead_s.*-1 is less than the minimum of 0"):
        validate(clock_lead_s=-1)
    with pytest.raises(Exception, match=r"clock_lead_s.*601 is greater than the maximum of 600"):
        validate(clock_lead_s=601)
    assert "at most 100,000: a value beyond is refused" in dag.params.get_param("time_scale").description


def test_clock_lead_s_names_when_the_plans_first_tick_falls_on_a_300x_clock():
    """The form said 'on a 300x clock the first intensive tick is 1 s after hour 0': the
    default plan's first tick (intensive at soak minute 15, the guard floored at 15 soak
    minutes on that clock) falls 3 s after hour 0; 1 s held for no plan here."""
    text = _param("default", load_plan("default"), "clock_lead_s").description
    assert "1 s after hour 0" not in text, text
    assert "on a 300x clock the plan's first tick (soak minute 15) is 3 s after hour 0" in text, text
    short = load_plan(ROOT / "tests" / "browser" / "plans" / "browser.yaml")
    first = min(p.tick_offsets()[0] for p in short.phases).total_seconds() / 60
    text = _param("browser", short, "clock_lead_s").description
    assert f"(soak minute {first:g})" in text, text
