"""The rollback rehearsed on a scratch copy, after the backup and before the migration.

Runbook pre-requisites: "Plan de rollback revisado y aprobado". :func:`rehearse` runs
``restore``, ``migrate``, ``validate``, ``rollback``, ``verify`` on a scratch database,
dropped afterwards; above ``rehearsal.max_database_mb`` it is skipped.

Design notes: docs/rehearsal.md
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from psycopg2 import sql

from migration_soak import archive
from migration_soak.backup import BackupRecord, tool_path
from migration_soak.exceptions import BackupError, MeasurementError, RehearsalError, SoakError
from migration_soak.pgconn import PgTarget
from migration_soak.plan import SQL_DIR, Check, Plan, SqlSource

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class RehearsalResult:
    """What one rehearsal found. ``status``: ``passed`` or ``skipped`` (then ``reason``).

    Durations in seconds; ``database_bytes``: staging's size (bytes) when checked;
    ``validations``: ``{check, value, expect, ok}`` per validation query on the migrated
    copy; ``values_restored`` and ``mismatches`` as in ``RestoreResult``.
    """

    status: str
    database_bytes: int
    reason: str = ""
    scratch: str = ""
    restore_s: float = 0.0
    migrate_s: float = 0.0
    validate_s: float = 0.0
    rollback_s: float = 0.0
    verify_s: float = 0.0
    total_s: float = 0.0
    rows_at_backup: int = 0
    values_restored: int = 0
    mismatches: int = 0
    validations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The report's line, e.g. ``rollback rehearsed: 200000 values restored, 0 mismatches, 12.3 s``."""
        if self.status == "skipped":
            return f"rollback not rehearsed: {self.reason}"
        return (f"rollback rehearsed: {self.values_restored} values restored, {self.mismatches} mismatches, "
                f"{self.total_s:.1f} s (restore {self.restore_s:.1f} s, migrate {self.migrate_s:.1f} s, "
                f"rollback {self.rollback_s:.1f} s, verify {self.verify_s:.1f} s)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.text}


def scratch_name(run_id: str) -> str:
    """The scratch database's name for ``run_id``: ``soak_rehearsal_<10 hex digits>`` (a
    retried task finds, drops and recreates the same one)."""
    return "soak_rehearsal_" + hashlib.sha256(run_id.encode()).hexdigest()[:10]


def database_bytes(target: PgTarget) -> int:
    """``pg_database_size`` of ``target``'s database (bytes). Raises ``RehearsalError``."""
    try:
        conn = target.connect()
    except Exception as exc:
        raise RehearsalError("scratch", f"cannot connect to {target.describe()}: "
                                        f"{target.scrub(str(exc)).strip()}") from None
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database())")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def rehearse(plan: Plan, staging: PgTarget, backup: BackupRecord, pg_bin_dir: Path | None, *, run_id: str,
             backend_for: Callable[[PgTarget], Any], server: PgTarget | None = None) -> RehearsalResult:
    """Rehearse the plan's rollback on a scratch copy of ``backup`` (docs/rehearsal.md).

    ``staging``: the staging database (direct connection; only its size is read).
    ``backup``: the verified pre-migration backup with a local ``path``. ``backend_for``:
    builds the run's ``MigrationBackend`` for a target (the scratch). ``server``: where the
    scratch database is created (default: ``staging``'s server, same role).

    Returns ``RehearsalResult`` (``skipped`` above ``plan.rehearsal.max_database_mb``).
    Raises ``RehearsalError`` naming the step; the scratch database is dropped either way.
    """
    cfg, m = plan.rehearsal, plan.migration
    size = database_bytes(staging)
    if size > cfg.max_database_mb * MIB:
        return RehearsalResult(status="skipped", database_bytes=size, reason=(
            f"staging is {size / MIB:.0f} MiB, above rehearsal.max_database_mb {cfg.max_database_mb:g} MiB"))
    if backup.path is None:
        raise RehearsalError("restore", "the backup has no local copy (backup_storage.fetched)")
    server = server or staging
    scratch = replace(server, database=scratch_name(run_id))
    started = time.monotonic()
    times: dict[str, float] = {}
    _drop(server, scratch.database)  # a retried task's leftover
    try:
        _create(server, scratch.database)
        with _timed(times, "restore"):
            _restore(scratch, backup.path, pg_bin_dir, cfg.jobs, cfg.timeout_s)
        backend = backend_for(scratch)
        with _timed(times, "migrate"):
            try:
                backend.deploy()
            except SoakError as exc:
                raise RehearsalError("migrate", str(exc)) from None
        with _timed(times, "validate"):
            validations = _validate(scratch, _validation_checks(plan))
        from migration_soak.rollback import restore_by_method

        with _timed(times, "rollback"):
            try:
                restored = restore_by_method(m.rollback_method, scratch, backup, pg_bin_dir,
                                             down_sql=plan.path(m.down_sql), table=m.table,
                                             columns=tuple(m.dropped_columns), key=m.key,
                                             lock_timeout_s=m.lock_timeout_s, lock_retries=0, timeout_s=cfg.timeout_s)
                backend.mark_rolled_back(m.name)
            except SoakError as exc:  # restore_columns names its own sub-step
                raise RehearsalError("rollback", str(exc)) from None
        with _timed(times, "verify"):
            _verify(backend, m.name, restored)
    finally:
        _drop(server, scratch.database)
    # restore_columns' own value-by-value verification belongs to "verify", not "rollback"
    rollback_s, verify_s = times["rollback"] - restored.verify_s, times["verify"] + restored.verify_s
    out = RehearsalResult(
        status="passed", database_bytes=size, scratch=scratch.database,
        restore_s=round(times["restore"], 3), migrate_s=round(times["migrate"], 3),
        validate_s=round(times["validate"], 3), rollback_s=round(rollback_s, 3), verify_s=round(verify_s, 3),
        total_s=round(time.monotonic() - started, 3), rows_at_backup=restored.rows_at_backup,
        values_restored=restored.values_restored, mismatches=restored.mismatches, validations=validations)
    log.info("%s", out.text)
    return out


# ----------------------------------------------------------------------- steps


class _timed:
    def __init__(self, into: dict[str, float], name: str):
        self.into, self.name = into, name

    def __enter__(self):
        self.t0 = time.monotonic()

    def __exit__(self, *exc):
        self.into[self.name] = time.monotonic() - self.t0


def _admin(server: PgTarget, statement: sql.Composable, step: str) -> None:
    """Run one database-level statement (CREATE/DROP DATABASE: not in a transaction)."""
    try:
        conn = server.connect()
    except Exception as exc:
        raise RehearsalError(step, f"cannot connect to {server.describe()}: {server.scrub(str(exc)).strip()}") from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    except Exception as exc:
        raise RehearsalError(step, f"{server.scrub(str(exc)).strip()} (on {server.describe()})") from None
    finally:
        conn.close()


def _create(server: PgTarget, name: str) -> None:
    # template0: an empty database the dump restores into exactly (pg_restore docs)
    _admin(server, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)), "scratch")


def _drop(server: PgTarget, name: str) -> None:
    # WITH (FORCE) (PostgreSQL 13+): a connection left by a killed step cannot keep it alive
    _admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)), "scratch")


def _restore(scratch: PgTarget, dump: Path, pg_bin_dir: Path | None, jobs: int, timeout_s: float) -> None:
    """``pg_restore`` the whole dump into ``scratch`` (the target through the child's
    environment, never the command line). ``--jobs`` needs a seekable plain archive
    (pg_restore refuses stdin): a compressed dump is first decompressed to a private
    temporary file (``archive.seekable``), as large as the archive."""
    try:
        with archive.seekable(dump) as plain:
            argv = [str(tool_path("pg_restore", pg_bin_dir)), "--no-password", "--no-owner", "--no-privileges",
                    "--exit-on-error", f"--jobs={jobs}", f"--dbname={scratch.database}", str(plain)]
            done = subprocess.run(argv, env=scratch.child_env(), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RehearsalError("restore", f"pg_restore took longer than {timeout_s:g} s") from None
    except BackupError as exc:
        raise RehearsalError("restore", str(exc)) from None
    if done.returncode != 0:
        tail = scratch.scrub(done.stderr.strip())[-1500:]
        raise RehearsalError("restore", f"pg_restore exited {done.returncode}: {tail}")


def _validation_checks(plan: Plan) -> list[Check]:
    """The hour-0 SQL checks except timings (``explain_ms``): the runbook's validation
    queries on data and schema, meaningful on a copy."""
    return [c for c in plan.checks_in("hour0")
            if isinstance(c.source, SqlSource) and c.expect is not None and c.source.measure != "explain_ms"]


def _validate(scratch: PgTarget, checks: list[Check]) -> list[dict[str, Any]]:
    """Each check's file through ``sources.sql.run_readonly``, the path the soak's own
    readings take: read-only, the checks' ``statement_timeout``, one statement at a time
    with the soak's settings read back after each, ``sql_guard`` first. A file refused,
    cut short or failing there fails the step naming the check (the error as the soak's
    reading would record it)."""
    from migration_soak.sources.sql import run_readonly, value_of

    out = []
    for check in checks:
        src = check.source
        if not isinstance(src, SqlSource):
            raise RehearsalError("validate", f"{check.id} is a {src.kind} check; the rehearsal runs SQL checks only")
        try:
            columns, rows = run_readonly(scratch, (SQL_DIR / src.sql).read_text(encoding="utf-8"))
            value = value_of(check, columns, rows).value
        except MeasurementError as exc:
            raise RehearsalError("validate", f"{check.id} ({src.sql}): {scratch.scrub(str(exc))}") from None
        except Exception as exc:  # connection failures propagate from run_readonly as the driver raises them
            raise RehearsalError("validate", f"{check.id} ({src.sql}): {scratch.scrub(str(exc)).strip()} "
                                             f"(on {scratch.describe()})") from None
        ok = check.expect.holds(value)
        out.append({"check": check.id, "value": value, "expect": str(check.expect), "ok": ok})
        if not ok:
            raise RehearsalError("validate", f"{check.id} is {value:g} after the migration on the copy, "
                                             f"expected {check.expect} ({src.sql})")
    return out


def _verify(backend: Any, name: str, restored: Any) -> None:
    if restored.mismatches:
        raise RehearsalError("verify", f"{restored.mismatches} values differ from the backup after the rollback")
    try:
        states = {s.name: s for s in backend.status()}
    except SoakError as exc:
        raise RehearsalError("verify", f"reading the ledger after the rollback: {exc}") from None
    if name not in states or not states[name].is_pending:
        state = states[name].state if name in states else "absent"
        raise RehearsalError("verify", f"{name} is {state} after the rollback, not pending")
