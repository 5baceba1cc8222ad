"""Broken plan files, where Airflow users look for them: the DAG import errors.

Holds no DAG. When some ``include/plans/*.yaml`` (or ``MIGRATION_SOAK_PLANS_DIR``) does
not load, importing this file fails with a ``PlanError`` naming each broken file, field
and value, so the Airflow UI's "DAG Import Errors" and ``airflow dags list-import-errors``
show it against this file. The soak DAGs are built by ``migration_soak.py``, which never
raises for a bad plan: the other plans' DAGs stay, and the broken plan keeps its dag id
with a stand-in whose only task, ``plan_error``, fails with the same message (a run half
way through its 24 hours still finds its DAG).

Reads only the plan files; nothing connects anywhere at import.
"""

from __future__ import annotations

from migration_soak import plan as _plan
from migration_soak.airflow.builder import dag_id_for, unusable_name
from migration_soak.exceptions import PlanError


def _broken_plans() -> dict[str, str]:
    """``{file name: PlanError text}`` of every plan in the plans folder that does not load
    (the same files, in the same order, as ``builder.build_all``)."""
    broken = {}
    if not _plan.PLANS_DIR.is_dir():  # a typo in MIGRATION_SOAK_PLANS_DIR would hide every soak DAG silently
        return {str(_plan.PLANS_DIR): f"the plans folder {_plan.PLANS_DIR} does not exist (MIGRATION_SOAK_PLANS_DIR?): "
                                      "no soak DAG is built"}
    for path in sorted(_plan.PLANS_DIR.glob("*.yml")):  # builder.build_all reads *.yaml only
        broken[path.name] = (f"{path.name}: a plan file's name ends in .yaml: this one builds no DAG; rename it "
                             f"{path.stem}.yaml")
    for path in sorted(_plan.PLANS_DIR.glob("*.yaml")):
        why = unusable_name(path)
        if why is not None:
            broken[path.name] = f"{path.name}: {why}"
            continue
        try:
            _plan.load_plan(str(path))
        except PlanError as exc:
            broken[path.name] = f"{path.name} (DAG {dag_id_for(path.stem)}): {exc}"
    return broken


_BROKEN = _broken_plans()
if _BROKEN:
    raise PlanError(
        f"{len(_BROKEN)} plan file(s) in {_plan.PLANS_DIR} do not load; each one's DAG only fails with "
        "this error until the file is fixed (the other plans' DAGs are unaffected):\n"
        + "\n".join(_BROKEN.values())
    )
