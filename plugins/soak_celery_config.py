"""``[celery] celery_config_options`` of migration-soak's Celery deployments
(``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=soak_celery_config.CELERY_CONFIG``;
docker-compose.yaml and demo/celery_cluster.py set it): Airflow's own Celery settings, and
a worker takes a task from Redis only when it has a free process.

Why: with Airflow's defaults (``task_acks_late``, prefetch multiplier 1) a worker also
holds tasks it has not started yet, unacknowledged; when it dies (SIGKILL, a lost node)
those tasks stay "queued" in Airflow until Redis hands them out again after the
``visibility_timeout`` (a day) or the scheduler's ``task_queued_timeout`` (10 min) gives
up on them. Seen in the distributed test soak: an hour-0 check waited there while the
other worker was idle. Tasks a dead worker was running are failed after the heartbeat
timeout and retried where they may be.
"""

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "worker_disable_prefetch": True}
