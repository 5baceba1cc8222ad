"""migration_soak: take one schema migration through a staging soak, then GO or roll back.

One DAG per plan file in ``include/plans/`` (``default.yaml`` is the seed's runbook and
builds ``migration_soak``; ``other.yaml`` builds ``migration_soak__other``). The builder
reads only the plan file; nothing connects anywhere at import.
"""

from __future__ import annotations

from migration_soak.airflow.builder import build_all

globals().update(build_all())
