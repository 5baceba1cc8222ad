"""Slack messages: a task failed, a rollback started, the verdict is in.

Sent through ``SlackWebhookHook`` on the plan's Slack connection (seed: "Slack:
#staging-alerts"; rollback step 1 "ROLLBACK INITIATED - Reason: ..."). Notification is
optional: when Slack is unreachable or not configured the soak goes on and the failure
is logged. Messages carry no secrets: only ids, check names, figures and exception
classes with their first line, with connection passwords masked.
"""

from __future__ import annotations

import logging
import re
import time

log = logging.getLogger(__name__)

DEFAULT_CONN = "soak_slack"

#: Seconds ``SlackWebhookHook`` waits for Slack per HTTP attempt (connect and read).
#: slack_sdk's default retry handler retries a connection error once, so one ``send``
#: blocks at most about ``2 * TIMEOUT_S`` plus a ~1 s back-off before it gives up
#: (slack_sdk ``http_retry.builtin_handlers.ConnectionErrorRetryHandler``). Read at each
#: call: tests may monkeypatch it; ``send`` takes ``timeout_s`` too.
TIMEOUT_S = 10

_URL_PATH = re.compile(r"(https?://[^/\s]+)/\S*")


class _RedactWebhookPath(logging.Filter):
    """Masks the path of any URL in a record: a webhook URL's path is its token.

    slack_sdk logs the full URL (``Going to retry the same request: POST https://hooks...
    /T0/B0/token`` at INFO, ``Sending a request - url: ...`` at DEBUG) through the logger
    the hook hands it; ``send`` hands it this module's ``slack_client`` logger, which
    carries this filter, so the token never reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _URL_PATH.sub(r"\1/***", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


#: The logger slack_sdk's ``WebhookClient`` writes to (see ``_RedactWebhookPath``).
client_log = logging.getLogger(f"{__name__}.slack_client")
client_log.addFilter(_RedactWebhookPath())


def _mask(text: str) -> str:
    """Remove known secrets (Airflow's masker knows every connection password it loaded)
    and any URL's password (``redis://:pw@host`` in an exception's first line)."""
    from airflow.sdk._shared.secrets_masker import redact

    from migration_soak.sources.logs import URL_CREDENTIALS

    return str(redact(URL_CREDENTIALS.sub(r"\1***@", text)))


def send(text: str, conn_id: str = DEFAULT_CONN, *, timeout_s: float | None = None) -> bool:
    """Post ``text`` to the Slack webhook connection; True when Slack accepted it.

    ``timeout_s``: seconds per HTTP attempt (default ``TIMEOUT_S``; see there for the
    overall bound). Never raises: a missing connection, an unreachable or silent Slack,
    or a refusal (non-2xx) is logged as a warning and ``False`` is returned (docs/design.md,
    "Slack": an unreachable Slack never fails the soak; STYLE.md, "optional features
    degrade and log"). The warning names the connection id and the exception class only:
    a webhook URL carries its token, so exception texts are not logged.
    """
    started = time.monotonic()
    timeout = TIMEOUT_S if timeout_s is None else timeout_s
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=timeout,  # type: ignore[arg-type]
                         logger=client_log).send_text(_mask(text))
        return True
    except Exception as exc:  # notification must never fail the soak it reports on
        log.warning("Slack notification on %r not sent after %.1f s: %s", conn_id,
                    time.monotonic() - started, type(exc).__name__)
        return False


def on_task_failure(context) -> None:
    """Airflow ``on_failure_callback``: one message per failed task, built per call.

    (A shared ``SlackWebhookNotifier`` in ``default_args`` is mutated by rendering and
    resends the first text; a plain function is safe under ``dag.test()`` too.)
    """
    ti = context.get("ti") or context.get("task_instance")
    state = getattr(ti, "state", None)
    if getattr(state, "value", state) == "up_for_retry":
        return  # Airflow will try again: only the last failure is news
    exc = context.get("exception")
    first_line = str(exc).strip().splitlines()[0][:300] if exc and str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {first_line}" if exc else "unknown reason"
    params = context.get("params") or {}
    env = params.get("environment", "staging")
    text = (f":red_circle: [{env}] migration soak task failed: `{ti.dag_id}.{ti.task_id}`"
            f"{'' if getattr(ti, 'map_index', -1) < 0 else f'[{ti.map_index}]'} (run `{ti.run_id}`, "
            f"try {ti.try_number})\nReason: {reason}")
    send(text, slack_conn_of(params.get("plan", "default")))


#: Characters of the verdict's reasons the INCONCLUSIVE message shows (whole reasons only).
INCONCLUSIVE_REASONS_CHARS = 600


def inconclusive_text(plan, reasons: list[str], time_scale: float = 1.0) -> str:
    """Slack: the soak is INCONCLUSIVE and waits for a person in the Airflow UI (with the
    clock's caveat when it is not real time). Whole reasons up to ``INCONCLUSIVE_REASONS_CHARS``
    (at least the first, cut with "…" only if it alone is longer), then how many more there
    are: a cut mid-reason ended the metrics-outage's message on "(coverage 8" and said
    nothing of the other reasons."""
    shown: list[str] = []
    for reason in reasons:
        if shown and len("; ".join(shown + [reason])) > INCONCLUSIVE_REASONS_CHARS:
            break
        shown.append(reason)
    text = "; ".join(shown)
    if len(text) > INCONCLUSIVE_REASONS_CHARS:
        text = text[:INCONCLUSIVE_REASONS_CHARS - 1].rstrip() + "…"
    left = len(reasons) - len(shown)
    if left:
        text += (f"; (and {left} more reason{'s' if left != 1 else ''}: the question in the Airflow UI and the soak "
                 f"view list {'them all' if left != 1 else 'it'})")
    return (f":grey_question: [{plan.environment}] soak of `{plan.migration.name}` is INCONCLUSIVE"
            f"{clock_caveat(plan, time_scale)}: {text} — decide in the Airflow UI (Required actions)")


def inconclusive_question(plan, reasons: list[str], time_scale: float) -> str:
    """The body of the INCONCLUSIVE question (Markdown): the verdict, the clock when it is
    not real time (a GO on a compressed clock is demonstration evidence, never an approval
    for production), the judge's reasons one per list item, and what each answer does.
    Pushed by ``judge_soak``; the ``human_decision`` task's ``body`` template pulls it."""
    clock = clock_caveat(plan, time_scale)
    head = f"The judge's verdict is **INCONCLUSIVE**{clock}: its readings decide neither GO nor NO-GO."
    if time_scale != 1:  # compressed or stretched: neither is the plan's soak
        head += " A GO here keeps the migration on staging; it is not an approval for production."
    why = "\n".join(f"- {r}" for r in reasons) or "- (no reason recorded)"
    answers = ("**GO** keeps the migration (a person's GO over the judge's verdict, named as such in the report and "
               "on Slack); **Roll back** gives every dropped value back. No answer within "
               f"{plan.verdict.human_timeout_hours:g} h: **Roll back**.")
    return f"{head}\n\nWhat the judge found:\n\n{why}\n\n{answers}"


def clock_caveat(plan, time_scale: float) -> str:
    """" (compressed clock x300: demonstration evidence, not a 24-hour soak)" ("" in real time)."""
    if time_scale == 1:
        return ""
    from migration_soak.report_text import soak_length

    kind = "compressed" if time_scale > 1 else "stretched"  # report_text.clock_kind's words
    if time_scale > 1:
        return (f" ({kind} clock x{time_scale:g}: demonstration evidence, not a "
                f"{soak_length(plan.soak_hours(), adjective=True)} soak)")
    return (f" ({kind} clock x{time_scale:g}: not the plan's soak, its readings {1 / time_scale:g} times further "
            "apart in wall time)")


def sign_off_question(plan, before, time_scale: float) -> str:
    """The body of the QA sign-off question (Markdown), from the decision it would confirm
    (``before``: ``decision.Decision``, a GO): the judge's own GO, or a person's GO over
    another verdict with what the judge found; the clock when it is not real time; the
    runbook's human GO criteria QA vouches for. Pushed by ``ask_sign_off``; the ``sign_off``
    task's ``body`` template pulls it."""
    from migration_soak.decision import override_prefix

    clock = clock_caveat(plan, time_scale)
    verdict, person = before.verdict, before.overridden_by
    if person:
        found = before.reason.removeprefix(override_prefix(person, verdict)).removeprefix(": ")
        head = (f"The judge's verdict is **{verdict}**, not GO{clock}: **{person} overrode it and chose GO**. "
                f"What the judge found: {found or '(no reason recorded)'}.")
    elif verdict == "GO":
        head = f"The judge's verdict is GO{clock}: {before.reason}."
    else:
        head = f"The decision so far is {before.outcome} (by {before.by}){clock}: {before.reason}."
    if time_scale != 1:  # as the GO's Slack line and the report's closing line say
        head += (" Approving completes this run on staging; it is not an approval for production, which takes a "
                 "real-time soak (time_scale 1).")
    gates = "; ".join(f"\"{g.text}\"" for g in plan.human_gates)
    ask = ("Approve only if manual testing passed and no related support ticket is open (runbook, Criterios de Éxito"
           + (f": {gates}" if gates else "") + "). Rejecting, or no answer within "
           f"{plan.verdict.sign_off_timeout_hours:g} h, is not a GO: {plan.verdict.on_sign_off_rejected}.")
    return f"{head}\n\n{ask}"


def decision_text(plan, final, time_scale: float, report_name: str, sign_off: dict | None = None) -> str:
    """Slack: the final decision when the migration stays (``final``: ``decision.Decision``
    or ``None``; ``sign_off``: the ``sign_off`` event's payload, ``None`` when not asked).

    Says "verdict: GO" only for the judge's own GO; a GO a person chose over an
    INCONCLUSIVE verdict is "decision: GO by <person> over an INCONCLUSIVE verdict:
    <the judge's reasons>". A real-time GO is "approved for production" only when every
    human gate of the plan (runbook "Criterios de Éxito") was approved; otherwise each gate
    and its state is named. A compressed clock is named, since it proves less than 24 hours.
    """
    head = f"[{plan.environment}] soak of `{plan.migration.name}`"
    clock = clock_caveat(plan, time_scale)
    if final is None:
        return f":warning: {head}: no decision recorded; report {report_name}"
    if not final.is_go:
        return (f":large_yellow_circle: {head} ended {final.outcome.replace('_', '-')}: the migration is kept "
                f"without a GO: {final.reason}; report {report_name}")
    verdict, person = getattr(final, "verdict", ""), getattr(final, "overridden_by", "")
    gates = gates_text(plan, time_scale, sign_off)
    if person:
        from migration_soak.decision import override_prefix

        what = (f"decision: GO by {person} over an {verdict} verdict{clock}: "
                + final.reason.removeprefix(override_prefix(person, verdict) + ": "))
    elif verdict == "GO" or (not verdict and getattr(final, "by", "judge") == "judge"):
        what = (f"GO on the measured criteria: {final.reason}" if gates.startswith("; not approved")
                else f"verdict: GO{clock}: {final.reason}")
    else:  # a decision recorded before the judge's verdict was kept in it
        what = f"decision: GO{clock}: {final.reason}"
    return f":large_green_circle: {head} {what}{gates}; report {report_name}"


def gates_text(plan, time_scale: float, sign_off: dict | None) -> str:
    """After a real-time GO: "; approved for production (<gate>: approved by <who>; ...)" when
    every human gate of the plan was approved (the QA sign-off), else "; not approved for
    production: <gate>: <state>; ..." ("" on a compressed clock: its caveat already says it is
    demonstration evidence, which approves nothing). A stretched clock's caveat says only
    that it is not the plan's soak, so its GO says here that it approves nothing either, as
    the report's closing line does (``report_sections._go_closing``)."""
    if time_scale < 1:
        return (f"; not an approval for production: a stretched clock (time_scale {time_scale:g}) is not the "
                "plan's soak; that takes a real-time soak (time_scale 1)")
    if time_scale != 1:
        return ""
    approved = bool(sign_off and sign_off.get("state") == "approved")
    state = (f"approved by {sign_off.get('by')}" if sign_off and approved else
             str((sign_off or {}).get("state") or "not asked").replace("_", " "))
    gates = "; ".join(f"{g.text}: {state}" for g in plan.human_gates)
    if approved or not plan.human_gates:
        return f"; approved for production ({gates})" if gates else "; approved for production"
    return f"; not approved for production: {gates}"


def rollback_reason(final) -> str:
    """Rollback step 1's line, "ROLLBACK INITIATED - Reason: ..." (``final``: the
    ``decision.Decision`` that rolls back); also the ``rollback_started`` event's text."""
    return f"ROLLBACK INITIATED - Reason: {final.outcome}: {final.reason}"


def rollback_text(plan, reason: str) -> str:
    """Slack: the rollback started (``reason``: :func:`rollback_reason`)."""
    return f":rotating_light: [{plan.environment}] {plan.migration.name}: {reason}"


def rollback_done_text(plan, post_mortem_name: str, health: dict | None = None) -> str:
    """Slack: the rollback completed (step 6), naming the post-mortem file; with step 5's
    ``health`` payload, what it read again after the rollback (runbook.read_again_text:
    what decided the NO-GO may outlive the rollback, as the sync-drift demo's users without
    authorizerId do)."""
    from migration_soak.runbook import read_again_text

    again = read_again_text((health or {}).get("read_again") or {})
    return (f":white_check_mark: [{plan.environment}] rollback of {plan.migration.name} completed{again}; "
            f"post-mortem {post_mortem_name}")


def slack_conn_of(plan_name: str) -> str:
    """The Slack connection id of a plan, or the default one if the plan cannot be read."""
    try:
        from migration_soak.plan import load_plan

        return load_plan(plan_name).connections.slack
    except Exception:  # a broken plan must not hide the failure message
        return DEFAULT_CONN
