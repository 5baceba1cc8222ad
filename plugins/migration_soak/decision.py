"""The run's decision: verdict + people's answers + the plan's policy -> what happens next.

Pure: no I/O. ``outcome`` (what the run claims) and ``action`` (``proceed``,
``rollback``, ``keep``); the run succeeds only with ``GO`` and ``proceed``. Rules:
runbook "Criterios de Éxito".

Design notes: docs/verdict.md
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Outcome = Literal["GO", "NO_GO", "INCONCLUSIVE"]
Action = Literal["proceed", "rollback", "keep"]

#: The options of the two questions asked in the Airflow UI (Required actions).
GO_OPTION, ROLLBACK_OPTION = "GO", "Roll back"
APPROVE_OPTION, REJECT_OPTION = "Approve", "Reject"


@dataclass(frozen=True)
class Answer:
    """A person's answer to a Human-in-the-loop question: the chosen option, who chose it
    (``None`` when the response timeout applied the default), and the comment typed in."""

    chosen: str
    by: str | None
    comment: str = ""

    @property
    def timed_out(self) -> bool:
        return self.by is None

    @classmethod
    def from_hitl(cls, result: dict | None) -> "Answer | None":
        """From a HITL operator's XCom result (``chosen_options``, ``responded_by_user``,
        ``params_input``); ``None`` when the question was never asked."""
        if not result:
            return None
        chosen = (result.get("chosen_options") or [""])[0]
        user = result.get("responded_by_user")
        by = (user.get("name") or user.get("id")) if isinstance(user, dict) else user
        comment = str((result.get("params_input") or {}).get("comment") or "").strip()
        return cls(chosen, by or None, comment)


@dataclass(frozen=True)
class Decision:
    """What the run claims (``outcome``), what it does (``action``), who decided (``by``:
    ``judge``, ``person:<name>``, ``policy:<field>=<value>``, ``timeout``) and why.

    ``verdict``: the judge's verdict the decision started from; ``overridden_by``: the
    person who chose GO over a verdict that was not GO (kept after the sign-off, which
    changes ``by``). Both ``""`` in decisions recorded before they were kept: unknown."""

    outcome: Outcome
    action: Action
    by: str
    reason: str
    verdict: str = ""
    overridden_by: str = ""

    @property
    def is_go(self) -> bool:
        return self.outcome == "GO" and self.action == "proceed"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_event(cls, payload: dict) -> "Decision":
        """From a ``decision`` event's payload (:func:`decision_event`; its ``text`` dropped)."""
        return cls(**{k: v for k, v in payload.items() if k != "text"})


def candidate(verdict: str, human: Answer | None, on_inconclusive: str, reasons: list[str] | None = None) -> Decision:
    """The decision before any sign-off: from the verdict (with the judge's ``reasons``)
    and, on INCONCLUSIVE, the person's answer or the unattended policy
    (``on_inconclusive``: ask | rollback | go).

    Raises ``ValueError`` on an unknown verdict or policy.
    """
    why = "; ".join(reasons or [])
    if verdict == "GO":
        return Decision("GO", "proceed", "judge", why or "every GO criterion met; no NO-GO criterion breached", "GO")
    if verdict == "NO_GO":
        return Decision("NO_GO", "rollback", "judge", why or "a NO-GO criterion was breached", "NO_GO")
    if verdict != "INCONCLUSIVE":
        raise ValueError(f"verdict must be GO, NO_GO or INCONCLUSIVE, got {verdict!r}")
    if human is not None:
        if human.timed_out:
            return Decision("INCONCLUSIVE", "rollback", "timeout",
                            "nobody answered the INCONCLUSIVE question in time: rolled back (the safe default)", verdict)
        if human.chosen == GO_OPTION:  # the judge's reasons stay: what the person overrode
            return Decision("GO", "proceed", f"person:{human.by}",
                            override_prefix(str(human.by), verdict) + (f": {why}" if why else ""), verdict, str(human.by))
        return Decision("INCONCLUSIVE", "rollback", f"person:{human.by}", f"{human.by} chose to roll back", verdict)
    if on_inconclusive == "go":
        return Decision("INCONCLUSIVE", "keep", "policy:on_inconclusive=go",
                        "INCONCLUSIVE and nobody was asked: the migration is kept, but this is not a GO", verdict)
    if on_inconclusive in ("rollback", "ask"):
        # "ask" without an answer only happens when the question could not be asked.
        return Decision("INCONCLUSIVE", "rollback", f"policy:on_inconclusive={on_inconclusive}",
                        "INCONCLUSIVE, rolled back unattended" + (f": {why}" if why else ""), verdict)
    raise ValueError(f"on_inconclusive must be ask, rollback or go, got {on_inconclusive!r}")


def override_prefix(person: str, verdict: str) -> str:
    """The start of the reason of a GO a person chose over the judge's ``verdict``
    (the judge's reasons follow it after ": ")."""
    return f"{person} chose GO on an {verdict} verdict"


def needs_sign_off(before: Decision, require_sign_off: bool) -> bool:
    """Ask for the QA sign-off only when the run is about to claim GO."""
    return require_sign_off and before.is_go


def decide(before: Decision, require_sign_off: bool, sign_off: Answer | None, on_sign_off_rejected: str) -> Decision:
    """The final decision: ``before`` (from :func:`candidate`) after the sign-off.

    ``sign_off``: the answer when it was asked (``None`` when it was not). A required
    sign-off that is missing, rejected or timed out is never a GO; the plan's
    ``on_sign_off_rejected`` (rollback | keep) picks the action. Raises ``ValueError``
    on an unknown policy.
    """
    if on_sign_off_rejected not in ("rollback", "keep"):
        raise ValueError(f"verdict.on_sign_off_rejected must be rollback or keep, got {on_sign_off_rejected!r}")
    if not needs_sign_off(before, require_sign_off):
        return before
    if sign_off is None:
        reason = "the QA sign-off was required but never answered"
        by = "judge"
    elif sign_off.timed_out:
        reason, by = "the QA sign-off timed out without an answer", "timeout"
    elif sign_off.chosen == APPROVE_OPTION:
        note = f" ({sign_off.comment})" if sign_off.comment else ""
        return replace(before, by=f"person:{sign_off.by}",
                       reason=f"{before.reason}; QA sign-off approved by {sign_off.by}{note}")
    else:
        reason = f"QA rejected the sign-off: {sign_off.comment or '(no comment)'}"
        by = f"person:{sign_off.by}"
    return replace(before, outcome="NO_GO", action="rollback" if on_sign_off_rejected == "rollback" else "keep",
                   by=by, reason=reason)


def human_event(human: Answer) -> dict:
    """The ``human_decision`` event of the answer to the INCONCLUSIVE question."""
    return {"chosen": [human.chosen], "by": human.by, "timed_out": human.timed_out,
            "text": "nobody answered in time: roll back" if human.timed_out else f"{human.by} chose {human.chosen}"}


def sign_off_event(sign_off: Answer) -> dict:
    """The ``sign_off`` event: ``state`` approved | rejected | timed_out, who, the comment."""
    state = "timed_out" if sign_off.timed_out else "approved" if sign_off.chosen == APPROVE_OPTION else "rejected"
    return {"state": state, "by": sign_off.by, "comment": sign_off.comment,
            "text": f"QA sign-off {state.replace('_', ' ')}" + (f" by {sign_off.by}" if sign_off.by else "")
                    + (f": {sign_off.comment}" if sign_off.comment else "")}


def decision_event(final: Decision) -> dict:
    """The run's single ``decision`` event (read back by :meth:`Decision.from_event`)."""
    return {**final.to_dict(),
            "text": f"{final.outcome.replace('_', '-')}, {final.action}: {final.reason} (decided by {final.by})"}


def failure(final: Decision | None, report_written: bool, rollback_completed: bool) -> str | None:
    """Why the run ends failed, or ``None`` when it is green: only a GO (``is_go``) whose
    report was written ("Criterios de Éxito"; docs/verdict.md). ``rollback_completed``:
    the ``rollback_completed`` event exists."""
    if final is None:
        return "the soak reached no decision: see the failed task above"
    if final.is_go:
        return None if report_written else ("GO was decided but the report was not written (task report failed): "
                                            "not a GO until it is")
    outcome = final.outcome.replace("_", "-")
    if final.action == "rollback":
        return (f"{outcome}: {final.reason}; rollback "
                + ("completed" if rollback_completed else "NOT completed: see the failed rollback task"))
    return f"{outcome}, migration kept without a GO: {final.reason}"
