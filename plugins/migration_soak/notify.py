"""Slack messages: a task failed, a rollback started, the verdict is in.

Sent through ``SlackWebhookHook`` on the plan's Slack connection (seed: "Slack:
#staging-alerts"; rollback step 1 "ROLLBACK INITIATED - Reason: ..."). Notification is
optional: when Slack is unreachable or not configured the soak goes on and the failure
is logged. Messages carry no secrets: only ids, check names, figures and exception
classes with their first line, with connection passwords masked.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

DEFAULT_CONN = "soak_slack"


def _mask(text: str) -> str:
    """Remove known secrets (Airflow's masker knows every connection password it loaded)."""
    from airflow.sdk._shared.secrets_masker import redact

    return str(redact(text))


def send(text: str, conn_id: str = DEFAULT_CONN) -> bool:
    """Post ``text`` to the Slack webhook connection; True when Slack accepted it.

    Never raises: a missing connection or an unreachable Slack is logged and ignored.
    """
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=10).send_text(_mask(text))
        return True
    except Exception as exc:  # notification must never fail the soak it reports on
        log.warning("Slack notification on %r not sent: %s", conn_id, type(exc).__name__)
        return False


def on_task_failure(context) -> None:
    """Airflow ``on_failure_callback``: one message per failed task, built per call.

    (A shared ``SlackWebhookNotifier`` in ``default_args`` is mutated by rendering and
    resends the first text; a plain function is safe under ``dag.test()`` too.)
    """
    ti = context.get("ti") or context.get("task_instance")
    exc = context.get("exception")
    first_line = str(exc).strip().splitlines()[0][:300] if exc and str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {first_line}" if exc else "unknown reason"
    params = context.get("params") or {}
    env = params.get("environment", "staging")
    text = (f":red_circle: [{env}] migration soak task failed: `{ti.dag_id}.{ti.task_id}`"
            f"{'' if getattr(ti, 'map_index', -1) < 0 else f'[{ti.map_index}]'} (run `{ti.run_id}`, "
            f"try {ti.try_number})\nReason: {reason}")
    send(text, slack_conn_of(params.get("plan", "default")))


def slack_conn_of(plan_name: str) -> str:
    """The Slack connection id of a plan, or the default one if the plan cannot be read."""
    try:
        from migration_soak.plan import load_plan

        return load_plan(plan_name).connections.slack
    except Exception:  # a broken plan must not hide the failure message
        return DEFAULT_CONN
