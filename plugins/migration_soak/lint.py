"""Migration lint with squawk, before anything touches staging (issue 15, docs/lint.md).

Every pending migration's ``migration.sql`` goes through squawk; each finding is
accepted by the plan's ``lint`` section or unaccepted, and :func:`check` raises
:class:`~migration_soak.exceptions.LintError` on any unaccepted one. Squawk runs with
``--config /dev/null``.

Design notes: docs/lint.md
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from migration_soak.exceptions import LintError

if TYPE_CHECKING:
    from migration_soak.plan import Plan

log = logging.getLogger(__name__)

#: the squawk rules the soak's own session settings can cover (``Lint.session_settings_count``)
SESSION_RULES = ("require-lock-timeout",)


def squawk_binary() -> Path:
    """The squawk executable: next to this interpreter (the venv's ``bin/``), else on PATH.

    Raises ``LintError`` when neither exists.
    """
    beside = Path(sys.executable).parent / "squawk"  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("squawk")
    if found:
        return Path(found)
    raise LintError(
        f"squawk is not installed: no {beside} and none on PATH; install the pinned "
        "squawk-cli from requirements.txt (pip install -c constraints.txt squawk-cli)"
    )


@functools.lru_cache(maxsize=8)
def _version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LintError(f"squawk {binary} does not run: {exc}") from None
    if out.returncode != 0:
        raise LintError(f"squawk {binary} --version exited {out.returncode}: {_tail(out.stderr)}")
    return out.stdout.strip().removeprefix("squawk").strip()


def squawk_version() -> str:
    """The installed squawk's version (``2.70.0``); ``LintError`` when it is missing or broken."""
    return _version(str(squawk_binary()))


@functools.lru_cache(maxsize=256)
def rule_problem(rule: str) -> str | None:
    """Why ``rule`` is not a squawk rule name, or ``None`` when it is or cannot be told.

    Asks the installed squawk (its ``--exclude`` refuses unknown names, in milliseconds);
    when squawk is missing or misbehaves, any name passes here and preflight's lint fails
    on the missing binary instead.
    """
    try:
        binary = squawk_binary()
        out = subprocess.run([str(binary), "--exclude", rule, "--reporter", "json", "--config", os.devnull],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (LintError, OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 2 and "invalid rule name" in out.stderr:
        if rule == "syntax-error":
            return "'syntax-error' cannot be accepted: squawk could not parse the SQL, so nothing in it was linted"
        return f"unknown squawk rule {rule!r} (squawk {_version(str(binary))}; rules: https://squawkhq.com/docs/rules)"
    return None


@dataclass(frozen=True)
class Finding:
    """One squawk finding: ``rule`` at ``file``:``line`` (1-based) of ``migration``."""

    rule: str
    migration: str
    file: str
    line: int
    column: int
    message: str
    help: str | None = None
    level: str = "Warning"

    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "migration": self.migration, "file": self.file, "line": self.line,
                "column": self.column, "message": self.message, "help": self.help, "level": self.level}


@dataclass(frozen=True)
class Accepted:
    """A finding the plan accepts, and its reason."""

    finding: Finding
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.finding.to_dict(), "why": self.why}


@dataclass(frozen=True)
class LintResult:
    """The lint of ``migrations``: every finding, split into accepted and unaccepted.

    ``unused``: ``lint.accept`` entries that matched no finding (stale reasons; a note,
    not an error).
    """

    squawk_version: str
    migrations: tuple[str, ...]
    findings: tuple[Finding, ...]
    accepted: tuple[Accepted, ...]
    unaccepted: tuple[Finding, ...]
    unused: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when every finding is accepted."""
        return not self.unaccepted

    @property
    def text(self) -> str:
        """A summary line, then one line per finding (accepted ones with their reason)."""
        lines = [
            f"squawk {self.squawk_version} on {len(self.migrations)} migration(s) "
            f"({', '.join(self.migrations) or 'none'}): {len(self.findings)} finding(s), "
            f"{len(self.accepted)} accepted, {len(self.unaccepted)} not accepted"
        ]
        lines += [f"  NOT ACCEPTED {f.rule} at {f.where()}: {f.message}" for f in self.unaccepted]
        groups: dict[tuple[str, str, str], list[Accepted]] = {}
        for a in self.accepted:  # one line per rule and reason: "at f.sql:9, 10"
            groups.setdefault((a.finding.rule, a.finding.file, a.why), []).append(a)
        for (rule, file, why), items in groups.items():
            at = ", ".join(str(a.finding.line) for a in items)
            lines.append(f"  accepted {rule} at {file}:{at}: {items[0].finding.message} (why: {why})")
        lines += [f"  note: lint.accept entry {u} matched no finding" for u in self.unused]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able payload of the store event ``lint``."""
        return {
            "ok": self.ok,
            "squawk": self.squawk_version,
            "migrations": list(self.migrations),
            "findings": [f.to_dict() for f in self.findings],
            "accepted": [a.to_dict() for a in self.accepted],
            "unaccepted": [f.to_dict() for f in self.unaccepted],
            "unused_accepts": list(self.unused),
            "text": self.text,
        }


def lint_migrations(plan: "Plan", names: Sequence[str] | None = None) -> LintResult:
    """Lint the SQL of ``names`` (migration folder names; ``None``: ``plan.migration.name``).

    Never raises on findings (see :func:`check`). Raises ``LintError`` when squawk is
    missing, crashes, times out or prints no JSON, or a ``migration.sql`` is unreadable.
    """
    names = tuple(dict.fromkeys(names)) if names is not None else (plan.migration.name,)
    binary = squawk_binary()
    version = _version(str(binary))
    migrations_dir = plan.path(plan.migration.migrations_dir)
    findings: list[Finding] = []
    for name in sorted(names):
        findings += _lint_one(binary, plan, migrations_dir / name / "migration.sql", name)
    accepted, unaccepted, used = [], [], set()
    for finding in findings:
        why, entry = _acceptance(plan, finding)
        if why is None:
            unaccepted.append(finding)
        else:
            accepted.append(Accepted(finding, why))
            used.add(entry)
    unused = tuple(
        f"{{rule: {a.rule}{', migration: ' + a.migration if a.migration else ''}}}"
        for i, a in enumerate(plan.lint.accept) if i not in used
    )
    result = LintResult(version, names, tuple(findings), tuple(accepted), tuple(unaccepted), unused)
    log.info("%s", result.text)
    return result


def check(plan: "Plan", names: Sequence[str] | None = None) -> LintResult:
    """:func:`lint_migrations`, raising ``LintError`` (with ``.result``) listing every
    finding the plan does not accept; the result when all are accepted."""
    result = lint_migrations(plan, names)
    if not result.ok:
        listed = "\n".join(f"  {f.rule} at {f.where()}: {f.message}" for f in result.unaccepted)
        raise LintError(
            f"migration lint: {len(result.unaccepted)} squawk finding(s) the plan does not accept "
            f"(fix the migration, or add lint.accept entries with a 'why'):\n{listed}",
            result,
        )
    return result


# ------------------------------------------------------------------ helpers


def _lint_one(binary: Path, plan: "Plan", sql_path: Path, name: str) -> list[Finding]:
    try:
        sql = sql_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LintError(f"migration {name}: cannot read {sql_path}: {exc}") from None
    shown = _display(plan, sql_path)
    lint = plan.lint
    args = [str(binary), "--reporter", "json", "--config", os.devnull, "--stdin-filepath", shown,
            "--assume-in-transaction" if lint.assume_in_transaction else "--no-assume-in-transaction"]
    if lint.pg_version:
        args += ["--pg-version", lint.pg_version]
    try:
        out = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=lint.timeout_s)
    except subprocess.TimeoutExpired:
        raise LintError(f"squawk did not finish linting {shown} within {lint.timeout_s:g} s (lint.timeout_s)") from None
    except OSError as exc:
        raise LintError(f"squawk {binary} cannot run: {exc}") from None
    if out.returncode not in (0, 1):
        raise LintError(f"squawk exited {out.returncode} on {shown}: {_tail(out.stderr) or _tail(out.stdout)}")
    try:
        items = json.loads(out.stdout)
        if not isinstance(items, list):
            raise ValueError(f"expected a JSON list, got {type(items).__name__}")
        found = [
            Finding(rule=str(d["rule_name"]), migration=name, file=shown, line=int(d["line"]) + 1,
                    column=int(d.get("column", 0)) + 1, message=str(d["message"]), help=d.get("help"),
                    level=str(d.get("level", "Warning")))
            for d in items
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise LintError(f"squawk's JSON report on {shown} is unreadable ({exc}): {_tail(out.stdout)}") from None
    if out.returncode == 1 and not found:
        raise LintError(f"squawk exited 1 on {shown} without findings: {_tail(out.stderr)}")
    return found


def _acceptance(plan: "Plan", finding: Finding) -> tuple[str | None, int | None]:
    """The reason ``finding`` is accepted and the ``lint.accept`` index that did it
    (``None`` for session settings), or ``(None, None)``."""
    m = plan.migration
    if finding.rule in SESSION_RULES and plan.lint.session_settings_count:
        if m.backend == "prisma_cli":
            return (f"session settings: the Prisma CLI's connections get lock_timeout = {m.lock_timeout_s:g} s "
                    "(migration.lock_timeout_s) as a startup option"), None
        return (f"session settings: the ledger backend runs the script with lock_timeout = "
                f"{m.lock_timeout_s:g} s (migration.lock_timeout_s) set on its DDL transaction"), None
    if finding.rule == "syntax-error":
        return None, None
    for i, entry in enumerate(plan.lint.accept):
        if entry.rule == finding.rule and entry.migration in (None, finding.migration):
            return entry.why.strip(), i
    return None, None


def _display(plan: "Plan", path: Path) -> str:
    from migration_soak.plan import REPO_ROOT

    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _tail(text: str, limit: int = 800) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else "..." + text[-limit:]
