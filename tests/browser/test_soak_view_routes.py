"""The soak view's plugin and routes, without a server (fast; the browser tests in
``test_ui.py`` prove the same against the real API server).

Every route of the view's FastAPI app must depend on Airflow's user (``get_user``, the
dependency behind ``GetUserDep``), and every route of one run on the DAG access check:
a mounted FastAPI app gets no Airflow auth by itself.
"""

from __future__ import annotations

from fastapi.routing import APIRoute


def _calls(dependant) -> list:
    out = []
    for dep in dependant.dependencies:
        out.append(dep.call)
        out.extend(_calls(dep))
    return out


def test_every_route_requires_the_airflow_user_and_run_pages_the_dags_access():
    from airflow.api_fastapi.core_api.security import get_user
    from migration_soak.airflow.soak_view import create_app

    routes = [r for r in create_app().routes if isinstance(r, APIRoute)]
    assert len(routes) >= 6
    for route in routes:
        calls = _calls(route.dependant)
        assert get_user in calls, f"{route.path} does not require the Airflow user"
        if "{dag_id}" in route.path:
            assert any(getattr(c, "__qualname__", "").startswith("requires_access_dag") for c in calls), route.path


def test_the_plugin_mounts_the_view_and_adds_a_run_tab_and_a_nav_entry():
    import soak_view_plugin

    plugin = soak_view_plugin.SoakViewPlugin
    assert [a["url_prefix"] for a in plugin.fastapi_apps] == ["/soak"]
    views = {v["destination"]: v for v in plugin.external_views}
    assert views["dag_run"]["href"] == "/soak/dags/{DAG_ID}/runs/{RUN_ID}"
    assert views["nav"]["href"] == "/soak/"
    assert len({v["url_route"] for v in plugin.external_views}) == 2  # a clash would drop one of them
