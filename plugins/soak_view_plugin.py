"""Registers the soak view (``migration_soak/airflow/soak_view.py``) with Airflow.

Airflow's plugin loader imports every ``.py`` file of the plugins folder that
``.airflowignore`` does not exclude (``migration_soak/`` is excluded: it is a package, not
a set of plugin files), so this top-level module is the plugin. Every component loads
plugins (scheduler, triggerer, dag-processor, task processes); only the API server mounts
``fastapi_apps``, so the view's FastAPI app, and Airflow's API security it imports, are
built on the first request, not when the plugin is loaded.

- ``fastapi_apps``: the view at ``/soak`` (``/soak/``: the latest soak runs;
  ``/soak/dags/<dag>/runs/<run>``: one run), every route behind the Airflow login and the
  DAG's access rights.
- ``external_views``: the run's *Soak* tab (``destination: dag_run``) and the *Soaks* entry
  of the navigation (``destination: nav``), shown in the UI's frame.
"""

from __future__ import annotations

import threading

from airflow.plugins_manager import AirflowPlugin


class _LazySoakView:
    """An ASGI app that imports and builds the soak view on its first request."""

    def __init__(self):
        self._app = None
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from migration_soak.airflow.soak_view import create_app

                    self._app = create_app()
        await self._app(scope, receive, send)


class SoakViewPlugin(AirflowPlugin):
    name = "migration_soak_view"
    fastapi_apps = [{"app": _LazySoakView(), "url_prefix": "/soak", "name": "Soak view"}]
    external_views = [
        {"name": "Soak", "href": "/soak/dags/{DAG_ID}/runs/{RUN_ID}", "destination": "dag_run",
         "url_route": "soak-run"},
        {"name": "Soaks", "href": "/soak/", "destination": "nav", "category": "browse", "url_route": "soaks"},
    ]
