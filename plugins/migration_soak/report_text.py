"""Words, marks and small formatters shared by the report and the post-mortem.

Times are UTC; durations are wall seconds; soak time is hours from the soak clock's hour 0.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from migration_soak.judge import format_value

UTC = timezone.utc
STATUSES = ("pass", "warn", "fail", "error")
#: Marks of a check's or criterion's outcome.
MARK = {"met": "✅", "clear": "✅", "not_met": "❌", "breached": "❌", "not_enough_data": "❔", "not_judged": "❔",
        "not_measured": "⏹️", "partial": "◐"}
OUTCOME_WORDS = {"met": "met", "clear": "clear", "not_met": "not met", "breached": "breached", "not_judged": "not judged",
                 "not_enough_data": "not enough data", "not_measured": "not measured",
                 "partial": "as expected until the stop"}
#: Event kinds of the rollback group (``restart``/``prisma_status`` only after ``rollback_started``).
ROLLBACK_KINDS = ("rollback_started", "restore", "ledger", "prisma_status", "rollback_restart", "restart", "health",
                  "rollback_completed")
LABELS = {
    "preflight": "Pre-flight checks passed",
    "baseline_start": "Baseline readings started (before the migration)",
    "backup": "Backup taken and read back",
    "fingerprint": "Data fingerprint taken",
    "topup": "Top-up kept (dropped columns of rows written since the backup)",
    "topup_gap": "Values written between the top-up and the migration's lock are not restorable",
    "migrate": "Migration applied",
    "migrate_failed": "Migration FAILED",
    "prisma_status": "prisma migrate status",
    "verified": "Migration verified (hour 0)",
    "restart": "Applications restarted (Hora 0)",
    "hour0": "Hora 0 checks done, the soak clock starts",
    "alert": "Alert fired",
    "no_go": "NO-GO, the soak stops",
    "verdict": "Judge's verdict",
    "human_decision": "A person answered the INCONCLUSIVE question",
    "sign_off": "QA sign-off",
    "decision": "Final decision",
    "report": "Report written",
    "rollback_started": "Rollback started",
    "restore": "Columns and values restored from the backup",
    "ledger": "Migration marked rolled back in the ledger",
    "rollback_restart": "Applications restarted after the rollback",
    "health": "Post-rollback health check",
    "rollback_completed": "Rollback completed",
}
#: Event kinds whose Slack message is sent as they are recorded; their payload's
#: ``notified`` says whether Slack accepted it (events recorded before it existed have none).
NOTIFIED_KINDS = ("rollback_started", "alert")


def notified(payload: dict) -> str:
    """Whether the team was told on Slack, as an event's payload recorded it: ``team
    notified``, ``Slack notification FAILED``, or "" when the event does not say."""
    sent = payload.get("notified")
    if sent is True:
        return "team notified"
    if sent is False:
        return "Slack notification FAILED"
    return ""


def label(e: dict) -> str:
    """An event's label (``LABELS``), with whether Slack accepted its message for the kinds
    that send one (``Rollback started; Slack notification FAILED``)."""
    text = LABELS.get(e["kind"], e["kind"])
    said = notified(e.get("payload") or {}) if e["kind"] in NOTIFIED_KINDS else ""
    return f"{text}; {said}" if said else text


def utc(value: Any) -> datetime | None:
    """A datetime (or ISO-8601 text) as an aware UTC datetime; naive means UTC; ``None``
    for ``None`` or unparsable text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(at: datetime | None) -> str:
    """``2026-01-01 12:00:09 UTC``."""
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "n/a"


def duration(seconds: float) -> str:
    """Wall time as people say it: ``8 s``, ``4.9 min``, ``2 h 05 min``."""
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


def soak_clock(hours: float) -> str:
    """Soak time from hour 0: ``0:45``, ``24:00``."""
    minutes = round(hours * 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def clock_kind(time_scale: float) -> str:
    """``compressed`` (faster than real time) or ``stretched``."""
    return "compressed" if time_scale > 1 else "stretched"


def soak_length(hours: float, adjective: bool = False) -> str:
    """The plan's soak length in the unit its size asks, as the clock's phrases say it
    (the report's banner, the soak view, the trigger form, Slack's and the demo's clock
    caveat): ``45 min`` under an hour, else ``24 h``; ``45-minute``, ``24-hour`` as an
    adjective. A 45-minute plan read "compressed clock (0.75 h in 1.0 min)"."""
    if hours < 1:
        return f"{hours * 60:g}-minute" if adjective else f"{hours * 60:g} min"
    return f"{hours:g}-hour" if adjective else f"{hours:g} h"


def wall_length(seconds: float) -> str:
    """The wall time a soak took on its clock, in the unit its size asks: ``0.86 s``,
    ``29 s``, ``1.0 min``, ``4.8 min``, ``48.0 h`` (the other side of :func:`soak_length`)."""
    minutes = seconds / 60
    return (short_duration(seconds) if minutes < 1 else f"{minutes:.1f} min" if minutes < 120
            else f"{minutes / 60:.1f} h")


def short_duration(seconds: float) -> str:
    """Wall time under 10 s with its figures (``36 ms``, ``0.86 s``, ``4.5 s``), else ``duration``:
    the banner of a clock as fast as the form allows must not read "0 s"."""
    if seconds < 1:
        return f"{seconds:.2f} s" if seconds >= 0.5 else f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 10 else duration(seconds)


def cell(text: Any) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, one line)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def span(lo: float, hi: float, unit: str) -> str:
    """``12–15 ms`` (one unit), or the single value."""
    a, b = format_value(lo, unit), format_value(hi, unit)
    if a == b:
        return a
    for suffix in (" ms", " s", " MiB", "%", "/min"):
        if a.endswith(suffix) and b.endswith(suffix):
            a = a[: -len(suffix)]
            break
    return f"{a}–{b}"


def ticks(numbers: list[int]) -> str:
    """``3–5, 8`` from [3, 4, 5, 8]."""
    numbers = sorted(set(numbers))
    runs: list[str] = []
    start: int | None = None
    for i, t in enumerate(numbers):
        start = t if start is None else start
        if i + 1 == len(numbers) or numbers[i + 1] != t + 1:
            runs.append(str(t) if start == t else f"{start}–{t}")
            start = None
    return ", ".join(runs)


def who(by: Any) -> str:
    """A decider as people read it: ``person:alice`` -> ``alice``."""
    if isinstance(by, dict):
        by = by.get("name") or by.get("id")
    if not by:
        return "nobody (timed out)"
    by = str(by)
    if by == "judge":
        return "the judge"
    if by == "timeout":
        return "the timeout (nobody answered)"
    if by.startswith("person:"):
        return by.removeprefix("person:")
    if by.startswith("policy:"):
        return f"the policy `{by.removeprefix('policy:')}`"
    return by


def mask(text: str) -> str:
    """``text`` with credentials masked (the log source's masking)."""
    from migration_soak.sources.logs import mask as mask_secrets

    return mask_secrets(text)


def unit_name(unit: str) -> str:
    """A unit as the per-check table heads it (``ratio`` -> ``%``)."""
    return {"ratio": "%", "bytes": "MiB", "per_minute": "per min", "up": "up/down", "seconds": "s"}.get(unit, unit)
