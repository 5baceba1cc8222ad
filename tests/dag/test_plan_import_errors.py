"""A plan file that does not load shows up where Airflow users look for broken DAGs: the
import errors (UI, ``airflow dags list-import-errors``), naming file, field and value;
the other plans' DAGs stay, and the broken plan keeps its dag id with a stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from tests.conftest import ROOT

ERRORS_FILE = "migration_soak_plan_errors.py"


def _plans(tmp_path: Path, broken: bool) -> Path:
    from migration_soak.plan import REPO_ROOT

    plans = tmp_path / "plans"
    plans.mkdir()
    text = (REPO_ROOT / "include" / "plans" / "default.yaml").read_text()
    (plans / "default.yaml").write_text(text)
    if broken:
        assert "report_location:" in text
        (plans / "canary.yaml").write_text(text.replace("report_location:", "report_locaton:"))
    return plans


def _bag(monkeypatch, plans: Path) -> DagBag:
    import migration_soak.plan as plan_module

    monkeypatch.setattr(plan_module, "PLANS_DIR", plans)  # what MIGRATION_SOAK_PLANS_DIR sets at import
    return DagBag(str(ROOT / "dags"))


def test_a_broken_plan_is_an_import_error_naming_file_field_and_value(tmp_path, monkeypatch):
    bag = _bag(monkeypatch, _plans(tmp_path, broken=True))
    # the good plan's soak stays, the broken one keeps its dag id (a stand-in that fails)
    assert set(bag.dag_ids) == {"migration_soak", "migration_soak__canary"}
    assert len(bag.dags["migration_soak"].tasks) > 40
    assert [t.task_id for t in bag.dags["migration_soak__canary"].tasks] == ["plan_error"]
    # the error, against the errors file only (the soak DAGs' file imports cleanly)
    assert list(bag.import_errors) == [ERRORS_FILE] or [Path(p).name for p in bag.import_errors] == [ERRORS_FILE]
    text = next(iter(bag.import_errors.values()))
    assert "canary.yaml" in text and "migration_soak__canary" in text
    assert "report_locaton: Extra inputs are not permitted" in text  # field and the offending key
    assert "default.yaml" not in text


def test_a_wrong_value_is_named_with_its_value(tmp_path, monkeypatch):
    plans = _plans(tmp_path, broken=False)
    text = (plans / "default.yaml").read_text()
    assert "  min_coverage: 0.9" in text
    (plans / "typo.yaml").write_text(text.replace("  min_coverage: 0.9", "  min_coverage: 7", 1))
    bag = _bag(monkeypatch, plans)
    assert "migration_soak" in bag.dag_ids and "migration_soak__typo" in bag.dag_ids
    (text,) = bag.import_errors.values()
    assert "typo.yaml" in text and "min_coverage" in text and "7" in text


def test_a_plan_file_whose_name_makes_no_dag_id_is_an_import_error_and_hides_nothing(tmp_path, monkeypatch):
    """``my plan.yaml`` (a space: Airflow refuses the dag id) made the soak DAGs' file raise:
    every soak DAG, the default one too, was gone and nothing said why."""
    plans = _plans(tmp_path, broken=False)
    (plans / "my plan.yaml").write_text((plans / "default.yaml").read_text())
    bag = _bag(monkeypatch, plans)
    assert set(bag.dag_ids) == {"migration_soak"}
    (text,) = bag.import_errors.values()
    assert "my plan.yaml: its name makes the DAG id 'migration_soak__my plan', which Airflow refuses" in text
    assert "rename the file" in text


def test_a_plans_folder_that_does_not_exist_is_an_import_error(tmp_path, monkeypatch):
    bag = _bag(monkeypatch, tmp_path / "no-such-folder")
    assert bag.dag_ids == [] or set(bag.dag_ids) == set()
    (text,) = bag.import_errors.values()
    assert "no-such-folder does not exist (MIGRATION_SOAK_PLANS_DIR?)" in text


def test_only_good_plans_no_import_errors(tmp_path, monkeypatch):
    bag = _bag(monkeypatch, _plans(tmp_path, broken=False))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"migration_soak"}


def test_airflow_dags_list_import_errors_shows_the_broken_plan(tmp_path):
    """The CLI an operator runs (``--local``: parse the DAG folder, no scheduler needed)."""
    plans = _plans(tmp_path, broken=True)
    env = {**os.environ,  # the tests' AIRFLOW_HOME (conftest): the CLI wants a migrated metadata DB
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
           "MIGRATION_SOAK_PLANS_DIR": str(plans)}
    airflow = str(Path(sys.executable).with_name("airflow"))
    if not (Path(env["AIRFLOW_HOME"]) / "airflow.db").exists():
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.run([airflow, "dags", "list-import-errors", "--local", "-o", "json"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]  # the CLI exits 1 when it lists any import error
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("[{")]  # after any warning lines
    rows = json.loads(line)
    assert [Path(r["filepath"]).name for r in rows] == [ERRORS_FILE], rows
    assert "canary.yaml" in rows[0]["error"] and "report_locaton: Extra inputs are not permitted" in rows[0]["error"]


def test_a_phase_named_like_a_soak_task_is_an_import_error_and_hides_nothing(tmp_path, monkeypatch):
    """A phase named ``rollback`` made building its DAG raise DuplicateTaskIdFound in the soak
    DAGs' file: every soak DAG, the default one too, was gone, and the import error named
    no plan, field or value."""
    plans = _plans(tmp_path, broken=False)
    text = (plans / "default.yaml").read_text()
    assert text.count("passive") > 3
    (plans / "clash.yaml").write_text(text.replace("passive", "rollback"))
    bag = _bag(monkeypatch, plans)
    assert set(bag.dag_ids) == {"migration_soak", "migration_soak__clash"}
    assert len(bag.dags["migration_soak"].tasks) > 40
    (text,) = bag.import_errors.values()
    assert "clash.yaml" in text and "phases[rollback].name: 'rollback' names one of the soak DAG's own tasks" in text


def test_a_plan_file_ending_in_yml_is_an_import_error_not_silently_ignored(tmp_path, monkeypatch):
    """``cp default.yaml mine.yml`` (the other YAML suffix, which load_plan accepts by path)
    built no DAG and no import error: the plan was just not there."""
    plans = _plans(tmp_path, broken=False)
    (plans / "mine.yml").write_text((plans / "default.yaml").read_text())
    bag = _bag(monkeypatch, plans)
    assert set(bag.dag_ids) == {"migration_soak"}
    (text,) = bag.import_errors.values()
    assert "mine.yml: a plan file's name ends in .yaml: this one builds no DAG; rename it mine.yaml" in text
