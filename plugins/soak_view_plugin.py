"""Registers the soak view (``migration_soak/airflow/soak_view.py``) with Airflow.

The top-level plugin module: ``fastapi_apps`` (the view at ``/soak``, built on the first
request) and ``external_views`` (the run's *Soak* tab and the *Soaks* nav entry).

Design notes: docs/design.md#soak_view_pluginpy
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
