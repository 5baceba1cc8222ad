"""The real Prisma CLI as a ``MigrationBackend``, next to the built-in ``LedgerBackend``.

``PrismaCliBackend`` runs ``npx --no-install prisma migrate status`` / ``migrate deploy``
in the Prisma project folder and classifies the output (``classify``). The CLI runs in
its own process group; the connection string only as ``DATABASE_URL``;
``mark_rolled_back`` writes the ledger directly.

Design notes: docs/design.md#prisma_clipy
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence
from urllib.parse import quote

from migration_soak.exceptions import MigrationError
from migration_soak.migrate import (
    APPLIED,
    FAILED,
    PENDING,
    DeployResult,
    LedgerBackend,
    MigrationState,
    migration_checksum,
)
from migration_soak.pgconn import PgTarget

log = logging.getLogger(__name__)

OutcomeKind = Literal[
    "up_to_date",
    "pending",
    "failed_migration",
    "failed_to_apply",
    "unreachable",
    "lock_timeout",
    "diverged",
    "not_managed",
    "error",
]

#: Variables given to every CLI run (on top of the inherited environment): no engine
#: download (query compiler instead of the Rust query engine), no update check, no
#: telemetry, no colours.
PRISMA_ENV = {
    "PRISMA_CLIENT_ENGINE_TYPE": "client",
    "PRISMA_CLI_QUERY_ENGINE_TYPE": "client",
    "PRISMA_HIDE_UPDATE_MESSAGE": "1",
    "CHECKPOINT_DISABLE": "1",
    "NO_COLOR": "1",
    "FORCE_COLOR": "0",
}

#: Inherited variables removed from the child's environment: another database's URL or
#: libpq settings must never leak into the run.
_DROPPED_ENV = ("DATABASE_URL", "DIRECT_URL", "SHADOW_DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT",
                "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGOPTIONS")

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CODE = re.compile(r"\bError:\s*(P\d{4})\b")
_ANY_CODE = re.compile(r"\b(P[1-3]\d{3})\b")
_TREE_DIR = re.compile(r"└─\s*([^/\s]+)/\s*$", re.MULTILINE)
_P3009_NAME = re.compile(r"The `([^`]+)` migration started at .*? failed")
_P3018_NAME = re.compile(r"^Migration name:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class CliOutcome:
    """What one CLI run means.

    Fields:
        kind: see the module's table (``OutcomeKind``).
        code: the Prisma error code (``"P3009"``, ``"P1001"`` ...) when the output names
            one or the kind implies one, else ``None``.
        migrations: migration names the output lists for that kind: pending ones
            (``pending``), failed ones (``failed_migration``, ``failed_to_apply``), the
            ones applied now (``up_to_date`` after a deploy), unapplied then unknown-locally
            ones (``diverged``); else empty.
        message: the first meaningful lines of the output (scrubbed), for logs and errors.
    """

    kind: OutcomeKind
    code: str | None
    migrations: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        """True for the states a soak can proceed from (``up_to_date``, ``pending``)."""
        return self.kind in ("up_to_date", "pending")


@dataclass(frozen=True)
class CliRun:
    """One finished (or killed) CLI run: exit code, output (scrubbed), seconds, timeout flag."""

    args: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False


class PrismaCliError(MigrationError):
    """The Prisma CLI reported a state that forbids the operation, or failed to run.

    ``outcome`` is the classified ``CliOutcome`` (``kind``, ``code``, ``migrations``);
    ``timed_out`` is true when the run was killed. The message holds no password.
    """

    def __init__(self, message: str, outcome: CliOutcome, timed_out: bool = False):
        super().__init__(message)
        self.outcome = outcome
        self.kind = outcome.kind
        self.code = outcome.code
        self.timed_out = timed_out


# -------------------------------------------------------------------- classify


def classify(returncode: int | None, stdout: str, stderr: str) -> CliOutcome:
    """Classify the output of ``prisma migrate status`` or ``prisma migrate deploy``.

    Pure function of the exit code and the two streams (ANSI colours are ignored).
    Errors are recognised before states, because an error text may quote a state line
    (a diverged history also lists "have not yet been applied"). A zero exit code is
    required for ``up_to_date``; unknown text is ``error``.
    """
    out = _ANSI.sub("", stdout or "")
    err = _ANSI.sub("", stderr or "")
    text = out + "\n" + err
    code = _error_code(text, err)
    message = _summary(err) or _summary(out)
    for recognise in _RECOGNISERS:
        found = recognise(text, code, returncode)
        if found is not None:
            kind, kind_code, names = found
            return CliOutcome(kind, kind_code, _unique(names), message)
    return CliOutcome("error", code, [], message or f"exit code {returncode}, no output")


def _error_code(text: str, err: str) -> str | None:
    """The Prisma error code of a run: ``Error: P1234`` in either stream (``text``), else
    a bare ``P1000``..``P3999`` in stderr (``err``); ``None`` when neither names one."""
    match = _CODE.search(text) or _ANY_CODE.search(err)
    return match.group(1) if match else None


#: What a recogniser found: ``(kind, code, migration names as listed)``, or ``None`` when
#: the output is not of its kind. Every recogniser takes ``(text, code, returncode)``:
#: both streams without colours, ``_error_code``'s code and the exit code.
_Found = tuple[OutcomeKind, str | None, list[str]] | None

_FAILED_LIST = re.compile(r"Following migrations? have failed:")
_PENDING_LIST = re.compile(r"Following migrations? have not yet been applied:")
_DIVERGED_UNAPPLIED = re.compile(r"The migrations? have not yet been applied:")
_DIVERGED_UNKNOWN = re.compile(r"The migrations? from the database are not found locally[^\n]*:")


def _failed_migration(text: str, code: str | None, returncode: int | None) -> _Found:
    """P3009: a failed migration blocks deploys. Names: the status's "have failed:" list,
    else the migrations named by P3009's "The `x` migration started at ... failed"."""
    if code != "P3009" and "have failed:" not in text:
        return None
    return "failed_migration", "P3009", _list_after(text, _FAILED_LIST) or _P3009_NAME.findall(text)


def _failed_to_apply(text: str, code: str | None, returncode: int | None) -> _Found:
    """P3018: the deploy ran a migration that failed; named by "Migration name: x"."""
    if code != "P3018" and "A migration failed to apply" not in text:
        return None
    return "failed_to_apply", "P3018", _P3018_NAME.findall(text)


def _unreachable(text: str, code: str | None, returncode: int | None) -> _Found:
    """P1001: no database server at the URL."""
    if code != "P1001" and "Can't reach database server" not in text:
        return None
    return "unreachable", "P1001", []


def _lock_timeout(text: str, code: str | None, returncode: int | None) -> _Found:
    """P1002: Prisma's advisory lock was not granted in time (another deploy holds it)."""
    if code != "P1002" and not ("advisory lock" in text and "timed out" in text.lower()):
        return None
    return "lock_timeout", "P1002", []


def _diverged(text: str, code: str | None, returncode: int | None) -> _Found:
    """The ledger and the local folders disagree; the code is whatever the output named.
    Names: the unapplied local ones, then the ledger's ones missing locally."""
    if "migrations table from your database are different" not in text:
        return None
    return "diverged", code, _list_after(text, _DIVERGED_UNAPPLIED) + _list_after(text, _DIVERGED_UNKNOWN)


def _not_managed(text: str, code: str | None, returncode: int | None) -> _Found:
    """P3005: a non-empty schema without Prisma's ledger."""
    if code != "P3005" and "not managed by Prisma Migrate" not in text:
        return None
    return "not_managed", "P3005", []


def _pending(text: str, code: str | None, returncode: int | None) -> _Found:
    """Migrations not yet applied (status), listed; only when no error code was named."""
    if code is not None or "have not yet been applied:" not in text:
        return None
    return "pending", None, _list_after(text, _PENDING_LIST)


def _up_to_date(text: str, code: str | None, returncode: int | None) -> _Found:
    """Nothing left to apply: status's "up to date", deploy's "No pending migrations", or
    deploy's "have been applied" with the applied folders (its tree's ``└─ x/`` lines).
    Needs exit code 0 and no error code."""
    if returncode != 0 or code is not None:
        return None
    if "Database schema is up to date!" in text or "No pending migrations to apply." in text:
        return "up_to_date", None, []
    if "have been applied" in text:
        return "up_to_date", None, _TREE_DIR.findall(text)
    return None


#: Tried in this order, errors before states; the first that finds its kind decides.
_RECOGNISERS = (_failed_migration, _failed_to_apply, _unreachable, _lock_timeout, _diverged, _not_managed,
                _pending, _up_to_date)


def _list_after(text: str, heading: re.Pattern[str]) -> list[str]:
    """The non-empty lines right after ``heading``, up to the first blank line."""
    match = heading.search(text)
    if not match:
        return []
    names = []
    for line in text[match.end():].lstrip("\r\n").splitlines():
        line = line.strip()
        if not line:
            break
        names.append(line)
    return names


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def _summary(text: str, limit: int = 1200) -> str:
    """The output without the CLI's banner lines, trimmed to ``limit`` characters."""
    noise = ("Loaded Prisma config", "Prisma config detected", "Prisma schema loaded", "Environment variables loaded")
    lines = [ln.rstrip() for ln in text.splitlines() if not ln.startswith(noise)]
    return "\n".join(lines).strip()[:limit]


# --------------------------------------------------------------------- backend


@dataclass
class PrismaCliBackend:
    """``MigrationBackend`` that shells out to the user's Prisma CLI.

    Args:
        target: the database; it becomes ``DATABASE_URL`` in the child's environment.
        project_dir: the Prisma project folder the CLI runs in (its ``prisma.config.ts``
            names the schema and the migrations folder).
        timeout_s: seconds one CLI run may take; then its whole process group is killed
            and ``PrismaCliError`` (kind ``error``, ``timed_out``) is raised.
        npx: the ``npx`` executable (a path or a name on ``PATH``); run as
            ``npx --no-install prisma ...`` so it never fetches a package.
        schema: the PostgreSQL schema (``?schema=`` of the URL, default ``public``).
        migrations_dir: the migrations folder, for local names and checksums (default
            ``project_dir/migrations``, else ``project_dir/prisma/migrations``).
        kill_grace_s: seconds between SIGTERM and SIGKILL of the process group.
        lock_timeout_s: PostgreSQL ``lock_timeout`` (seconds) of the CLI's own
            connections (the plan's ``migration.lock_timeout_s``; ``None``: none). The CLI
            cannot take the ledger's ``SET LOCAL``, so it goes in as a startup option,
            ``options=-c lock_timeout=<ms>`` in ``DATABASE_URL`` (Prisma's Rust engine,
            quaint, and node-postgres both read it) and ``PGOPTIONS`` (node-postgres, when
            an adapter builds its connection without the URL): it is the session default
            of those connections only, nothing else on the server sees it. A script's own
            ``SET lock_timeout`` still replaces it for the rest of that script.
    """

    target: PgTarget
    project_dir: Path
    timeout_s: float = 300.0
    npx: str = "npx"
    schema: str = "public"
    migrations_dir: Path | None = None
    kill_grace_s: float = 5.0
    lock_timeout_s: float | None = None

    # ----------------------------------------------------------------- public

    def migrate_status(self) -> CliOutcome:
        """Run ``prisma migrate status`` and classify it; never raises on a state.

        Raises ``PrismaCliError`` only when the run times out (or cannot start).
        """
        run = self.run_cli("migrate", "status")
        outcome = classify(run.returncode, run.stdout, run.stderr)
        log.info("prisma migrate status on %s: %s%s (%.1f s)", self.target.describe(), outcome.kind,
                 f" {outcome.code}" if outcome.code else "", run.duration_s)
        return outcome

    def status(self) -> list[MigrationState]:
        """Every local migration with its state according to ``prisma migrate status``.

        ``up_to_date``: all applied; ``pending``: the listed ones pending, the others
        applied; ``failed_migration``: the listed ones failed, the others applied as far
        as the CLI tells (it lists only the failed ones). Any other outcome raises
        ``PrismaCliError`` naming the kind and code (e.g. ``unreachable P1001``).
        """
        outcome = self.migrate_status()
        local = self._local()
        if outcome.kind == "up_to_date":
            marked, default = {}, APPLIED
        elif outcome.kind == "pending":
            marked, default = {n: PENDING for n in outcome.migrations}, APPLIED
        elif outcome.kind == "failed_migration":
            marked, default = {n: FAILED for n in outcome.migrations}, APPLIED
        else:
            raise self._error("migrate status", outcome)
        states = [MigrationState(name=n, checksum=c, state=marked.get(n, default)) for n, c in local.items()]
        states += [MigrationState(name=n, checksum=None, state=s, local=False) for n, s in marked.items()
                   if n not in local]
        return sorted(states, key=lambda s: s.name)

    def deploy(self) -> DeployResult:
        """Run ``prisma migrate deploy``; return what it applied.

        ``already_applied`` holds the local migrations it did not apply now. Raises
        ``PrismaCliError`` for any outcome other than success (P3009 failed migration,
        P3018 failed to apply, P1001, P1002, not managed, diverged, timeout, other).
        Needs a project on a schema engine that supports deploy (see the module doc).
        """
        started = time.monotonic()
        run = self.run_cli("migrate", "deploy")
        outcome = classify(run.returncode, run.stdout, run.stderr)
        if outcome.kind != "up_to_date":
            raise self._error("migrate deploy", outcome)
        applied = tuple(outcome.migrations)
        already = tuple(n for n in self._local() if n not in applied)
        log.info("prisma migrate deploy on %s: applied %s", self.target.describe(), ", ".join(applied) or "nothing")
        return DeployResult(applied, already, (), round(time.monotonic() - started, 3))

    def mark_rolled_back(self, name: str) -> int:
        """Make ``name`` pending again after the soak's rollback; return the rows changed.

        Done in the ledger, not with ``prisma migrate resolve --rolled-back``: that
        command accepts only *failed* migrations (it refuses a finished one), and after
        the soak's rollback the migration is finished but no longer in effect. This is
        exactly ``LedgerBackend.mark_rolled_back`` (same statements, same advisory lock;
        the removed rows end up in ``self.removed_rows``); afterwards ``prisma migrate
        status`` lists the migration as pending.
        """
        ledger = LedgerBackend(self.target, self._migrations_dir(), schema=self.schema)
        changed = ledger.mark_rolled_back(name)
        self.removed_rows = list(getattr(ledger, "removed_rows", []))
        return changed

    # ---------------------------------------------------------------- running

    def database_url(self) -> str:
        """The ``postgresql://`` URL for the child's ``DATABASE_URL`` (holds the password)."""
        t = self.target
        user = quote(t.user, safe="")
        auth = f"{user}:{quote(t.password, safe='')}@" if t.password is not None else f"{user}@"
        db = quote(t.database, safe="")
        params = f"schema={quote(self.schema, safe='')}"
        options = self.session_options()
        if options:
            params += f"&options={quote(options, safe='')}"
        if t.host.startswith("/"):  # a Unix socket directory
            return f"postgresql://{auth}localhost:{t.port}/{db}?host={quote(t.host, safe='')}&{params}"
        host = f"[{t.host}]" if ":" in t.host else t.host
        return f"postgresql://{auth}{host}:{t.port}/{db}?{params}"

    def session_options(self) -> str | None:
        """The startup options of the CLI's connections (``-c lock_timeout=3000``), or ``None``."""
        if self.lock_timeout_s is None:
            return None
        return f"-c lock_timeout={max(1, int(self.lock_timeout_s * 1000))}"

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The CLI's environment: ``base`` (default ``os.environ``) without inherited
        database variables, plus ``DATABASE_URL``, ``PGOPTIONS`` (with ``lock_timeout_s``)
        and ``PRISMA_ENV``."""
        env = dict(os.environ if base is None else base)
        for name in _DROPPED_ENV:
            env.pop(name, None)
        env.update(PRISMA_ENV)
        env["DATABASE_URL"] = self.database_url()
        options = self.session_options()
        if options:
            env["PGOPTIONS"] = options
        return env

    def run_cli(self, *args: str) -> CliRun:
        """Run ``npx --no-install prisma <args>`` in ``project_dir``; output scrubbed.

        On timeout the process group is killed (SIGTERM, then SIGKILL after
        ``kill_grace_s``) and ``PrismaCliError`` is raised. Raises ``PrismaCliError``
        when ``npx`` cannot be started.
        """
        argv = [self.npx, "--no-install", "prisma", *args]
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=str(self.project_dir),
                env=self.child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
        except OSError as exc:
            outcome = CliOutcome("error", None, [], f"cannot run {self.npx}: {exc.strerror or exc}")
            raise PrismaCliError(f"prisma {' '.join(args)}: {outcome.message}", outcome) from None
        try:
            stdout, stderr = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            stdout, stderr = self._kill_group(proc)
            tail = self._scrub(stderr or stdout or "").strip()[-500:]
            outcome = CliOutcome("error", None, [], f"timed out after {self.timeout_s:g} s "
                                 f"({time.monotonic() - started:.1f} s in all); process group killed"
                                 + (f"; last output: {tail}" if tail else ""))
            log.warning("prisma %s on %s: %s", " ".join(args), self.target.describe(), outcome.message)
            raise PrismaCliError(f"prisma {' '.join(args)} on {self.target.describe()}: {outcome.message}",
                                 outcome, timed_out=True) from None
        return CliRun(tuple(argv), proc.returncode, self._scrub(stdout), self._scrub(stderr),
                      round(time.monotonic() - started, 3))

    # ---------------------------------------------------------------- helpers

    def _kill_group(self, proc: subprocess.Popen) -> tuple[str, str]:
        """SIGTERM the child's process group, SIGKILL it after the grace period; reap."""
        for sig, wait_s in ((signal.SIGTERM, self.kill_grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)  # the child leads its own session: pgid == pid
            except ProcessLookupError:
                pass
            try:
                # Waits until every process holding the pipes is gone, not only the child.
                return proc.communicate(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        proc.kill()
        proc.wait()
        return "", ""

    def _scrub(self, text: str | None) -> str:
        text = self.target.scrub(text or "")
        password = self.target.password
        if password and len(password) >= 4:
            text = text.replace(quote(password, safe=""), "***")
        return text

    def _error(self, what: str, outcome: CliOutcome) -> PrismaCliError:
        code = f" {outcome.code}" if outcome.code else ""
        names = f" ({', '.join(outcome.migrations)})" if outcome.migrations else ""
        return PrismaCliError(
            f"prisma {what} on {self.target.describe()}: {outcome.kind}{code}{names}: {outcome.message}", outcome
        )

    def _migrations_dir(self) -> Path:
        if self.migrations_dir is not None:
            return Path(self.migrations_dir)
        for candidate in (Path(self.project_dir) / "migrations", Path(self.project_dir) / "prisma" / "migrations"):
            if candidate.is_dir():
                return candidate
        raise MigrationError(f"no migrations folder in {self.project_dir} (migrations/ or prisma/migrations/)")

    def _local(self) -> dict[str, str]:
        """``{name: checksum}`` of the local migrations, in name order."""
        root = self._migrations_dir()
        found = {}
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            script = entry / "migration.sql"
            if entry.is_dir() and not entry.name.startswith(".") and script.is_file():
                found[entry.name] = migration_checksum(script.read_bytes())
        return found


def confirm_status(backend: PrismaCliBackend, name: str, expect: Literal["applied", "pending"]) -> CliOutcome:
    """Run the real ``prisma migrate status`` and require what the runbook expects of it.

    ``expect="applied"`` (seed "Hora 0" step 3, after the deploy): the CLI must say the
    schema is up to date. ``expect="pending"`` (rollback step 3): it must list ``name``
    among the migrations not yet applied. Returns the outcome; raises ``PrismaCliError``
    naming the kind and code the CLI gave instead (e.g. ``failed_migration P3009``), or
    on timeout.
    """
    outcome = backend.migrate_status()
    if expect == "applied":
        agrees = outcome.kind == "up_to_date"
        wanted = "the schema up to date"
    else:
        agrees = outcome.kind == "pending" and name in outcome.migrations
        wanted = f"{name} pending"
    if not agrees:
        listed = f" ({', '.join(outcome.migrations)})" if outcome.migrations else ""
        raise PrismaCliError(
            f"prisma migrate status in {backend.project_dir} does not show {wanted}: it says "
            f"{outcome.kind}{' ' + outcome.code if outcome.code else ''}{listed}: {outcome.message[:400]}", outcome)
    return outcome
