"""The runbook's steps around the migration, as plain functions: no Airflow.

Each step takes the plan, the run id, the store and the I/O it needs (database targets, a
migration backend, callables for the read-only query and the health endpoints), records
its event in the store and raises the package's errors (``exceptions.py``) with the
message the run fails with; ``airflow/tasks.py`` turns those into failed tasks. Sections
named below are the seed runbook's ("Pre-requisitos para Staging", "Hora 0",
"Procedimiento de Rollback en Staging").
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from migration_soak import lint as lint_mod
from migration_soak import report
from migration_soak.backup import BackupRecord
from migration_soak.decision import Decision
from migration_soak.exceptions import (BackupError, LintError, MeasurementError, MigrationError, PlanError,
                                       RehearsalError, RollbackError, SoakError)
from migration_soak.identity import DatabaseIdentity, identify
from migration_soak.judge import Verdict, format_condition, format_value, implicit_criteria, judge
from migration_soak.migrate import LedgerBackend, MigrationBackend, check_down_sql, check_drops, check_own_timeouts
from migration_soak.pgconn import PgTarget
from migration_soak.plan import Check, Condition, Plan, Requirement
from migration_soak.pooler import require_direct
from migration_soak.prisma_cli import PrismaCliBackend, confirm_status
from migration_soak.rehearsal import RehearsalResult
from migration_soak.rehearsal import rehearse as run_rehearsal
from migration_soak.rollback import restore_by_method, restore_summary
from migration_soak.store import Store

log = logging.getLogger(__name__)

#: Rows of a read-only query on the staging database (``sources.sql.run_readonly``).
Query = Callable[[str], list[tuple]]

#: The kept backup as a local file for a block (``backup_storage.fetched(record)``, which
#: needs Airflow's object storage: the glue passes it in).
Fetch = Callable[[], AbstractContextManager[BackupRecord]]

#: Ledger states a deploy applies: the migration to soak must be in one of them.
APPLICABLE = ("pending", "rolled_back")


# ------------------------------------------------------------------ backends


def prisma(plan: Plan, target: PgTarget) -> PrismaCliBackend | None:
    """The real Prisma CLI in the plan's ``prisma_project`` on ``target``; ``None`` without one."""
    m = plan.migration
    if not m.prisma_project:
        return None
    return PrismaCliBackend(target, plan.path(m.prisma_project), timeout_s=m.prisma_timeout_s,
                            migrations_dir=plan.path(m.migrations_dir), lock_timeout_s=m.lock_timeout_s)


def backend(plan: Plan, target: PgTarget) -> MigrationBackend:
    """The plan's ``MigrationBackend`` on ``target``: ``LedgerBackend`` or the Prisma CLI."""
    m = plan.migration
    if m.backend == "prisma_cli":
        cli = prisma(plan, target)
        assert cli is not None  # plan.py requires prisma_project for backend prisma_cli
        return cli
    return LedgerBackend(target, plan.path(m.migrations_dir), lock_timeout_s=m.lock_timeout_s,
                         lock_retries=m.lock_retries)


def pg_bin_dir(plan: Plan) -> Path | None:
    """The folder of ``pg_dump``/``pg_restore``/``psql`` the plan names; ``None``: on ``PATH``."""
    return plan.path(plan.pg_bin_dir) if plan.pg_bin_dir else None


def moment(store: Store, run_id: str, kind: str, key: str, text: str, lead_s: float = 0.0) -> str:
    """The time (ISO-8601, UTC) recorded as the run's event ``kind`` under ``payload[key]``:
    now plus ``lead_s`` seconds, recorded when there is none: a retried task keeps the
    first time, so a clock computed from it never restarts."""
    known = store.events(run_id, kind)
    if known:
        return known[0]["payload"][key]
    at = (datetime.now(timezone.utc) + timedelta(seconds=lead_s)).isoformat()
    store.add_event(run_id, kind, {key: at, "text": text})
    return at


#: The database a run's plan changes (``identity.identify`` on its direct connection).
Identify = Callable[[], DatabaseIdentity]
#: The same for another plan, by the name its runs pass as the ``plan`` param.
IdentifyPlan = Callable[[str], DatabaseIdentity]


def admit(plan: Plan, run_id: str, store: Store, *, environment: str, plan_param: str,
          identify: Identify, identify_plan: IdentifyPlan, dag_run: str | None = None) -> None:
    """The trigger form's ``environment`` must be the plan's (``PlanError`` otherwise); then
    take the lease of the staging database the run changes (``identify()``: read from the
    server, ``identity.py``): one soak per database, since two would migrate, judge and roll
    back each other's tables, whatever their plans' environment names
    (``SoakError`` naming both runs, both plans and the database). ``dag_run``: which
    Airflow dag run this is (``context.dag_run_key``); see :func:`_claim`."""
    if environment != plan.environment:
        raise PlanError(f"environment: the plan {plan.name!r} is for {plan.environment!r}, "
                        f"the run asked for {environment!r}")
    _claim(run_id, store, plan_param, opening=True, dag_run=dag_run)
    _take(plan, run_id, store, plan_param, identify(), identify_plan,
          f"this run {run_id} (plan {plan_param}, environment {plan.environment!r}) is refused", opening=True)


def hold(plan: Plan, run_id: str, store: Store, plan_param: str, refused: str, *,
         identify: Identify, identify_plan: IdentifyPlan, dag_run: str | None = None) -> None:
    """Hold the staging database's lease for ``run_id``: nothing to do while the run holds
    it; otherwise (a task of a finished run cleared in the UI, or a soak started before the
    upgrade) its database is read again (``identify()``) and its lease taken when free.
    ``SoakError`` naming the run that holds it, then ``refused``. Every task that changes
    staging calls it first, so a cleared task of an old run never restores, migrates or
    restarts under another run's soak, whatever that run's plan calls its environment.
    The run id must be this dag run's first (:func:`_claim`; ``dag_run``), lease or not."""
    _claim(run_id, store, plan_param, opening=False, dag_run=dag_run)
    if store.lease_of(run_id, plan_param) is not None:
        return
    _take(plan, run_id, store, plan_param, identify(), identify_plan, refused, opening=False)


def _claim(run_id: str, store: Store, plan_param: str, *, opening: bool, dag_run: str | None) -> None:
    """The run id must be this Airflow dag run's in the store (``store.claim_run``;
    ``dag_run``: its ``run_after``, ``start_date`` and ``clear_number``, ``store.DagRunKey``): a run deleted in Airflow and triggered again with the
    same id in the same plan would read the first one's events (its backup, its
    migration, its decision) as its own and add its readings to that run's report
    (``SoakError`` naming both dag runs; nothing is claimed). Without ``dag_run`` only the
    plan is compared (:func:`_take`)."""
    if dag_run is None:
        return
    owner = store.claim_run(run_id, plan_param, file_name=report.safe_name(run_id), opening=opening, dag_run=dag_run)
    if owner is None or owner["run_id"] != run_id or owner["plan"] != plan_param:
        return  # another plan's or a twin's claim: _take says so
    first = owner.get("dag_run") or "before dag runs were recorded"
    if owner.get("dag_run_started") is not None:
        first += f", started {owner['dag_run_started']:%Y-%m-%d %H:%M:%S UTC}"
    this = str(dag_run)
    if getattr(dag_run, "started", None) is not None:
        this += f", started {dag_run.started:%Y-%m-%d %H:%M:%S UTC}"  # type: ignore[attr-defined]
    raise SoakError(f"run id {run_id!r} of plan {plan_param} was already used by another Airflow run (created "
                    f"{first}, claimed {owner['claimed_at']:%Y-%m-%d %H:%M UTC}); this run, created {this}, "
                    "would read and add to that run's readings, events, report and backup "
                    f"(pre_{report.safe_name(run_id)}.dump) as its own, so it touches nothing; trigger it again "
                    "with another run id (the first run's evidence stays in the store)")


def _take(plan: Plan, run_id: str, store: Store, plan_param: str, ident: DatabaseIdentity,
          identify_plan: IdentifyPlan, refused: str, *, opening: bool) -> None:
    """Take ``ident``'s lease for the run, or raise ``SoakError`` (see :func:`admit`).

    A lease taken before the upgrade (keyed on an environment name,
    ``store.legacy_leases``) by another run refuses too when it names this plan's
    environment, or when its plan's database (``identify_plan``) is ``ident`` or cannot be
    read: a soak started before the upgrade keeps its database.

    First the run id must be this plan's in the store (``store.claim_run``; ``opening``:
    from ``admit``): Airflow's run ids are unique per DAG only, and a run of another plan
    with the same id would read and write that run's readings, events, report and backups
    (``SoakError``)."""
    name = report.safe_name(run_id)
    owner = store.claim_run(run_id, plan_param, file_name=name, opening=opening)
    if owner is not None and owner["run_id"] != run_id:
        raise SoakError(f"run id {run_id!r} names its files as run {owner['run_id']!r} of plan {owner['plan']} "
                        f"(since {owner['claimed_at']:%Y-%m-%d %H:%M UTC}) does (report soak-{name}.md, backup "
                        f"pre_{name}.dump): one would overwrite or reuse the other's, so this run of plan "
                        f"{plan_param} touches nothing; trigger it again with another run id")
    if owner is not None:
        whose = (f"plan {owner['plan']} (since {owner['claimed_at']:%Y-%m-%d %H:%M UTC})" if owner["plan"]
                 else f"an earlier run ({owner['events']} events recorded)")
        raise SoakError(f"run id {run_id!r} is already used in the observation store by {whose}: readings, events, "
                        f"the report and the backups are keyed on the run id, so this run of plan {plan_param} "
                        "touches nothing; trigger it again with another run id")
    if not ident.strong and not plan.preflight.allow_address_lease:
        field = "connections.staging_direct" if plan.connections.staging_direct else "connections.staging"
        role = ident.role if re.fullmatch(r"[a-z_][a-z0-9_$]*", ident.role) else '"' + ident.role.replace('"', '""') + '"'
        raise SoakError(f"{field}: role {ident.role!r} cannot read the server's system identifier "
                        f"(pg_control_system()), so the lease would key on {ident.key.rsplit('/', 1)[0]}, which a "
                        "plan whose role can read it never sees as the same database: both would soak it. Run "
                        f"GRANT EXECUTE ON FUNCTION pg_control_system() TO {role} in database {ident.database!r} "
                        "(docs/operations.md), or set preflight.allow_address_lease: true in the plan when every "
                        f"plan that soaks this database keys on its address; {refused}")
    for old in store.legacy_leases():
        if (old["run_id"], old["plan"]) == (run_id, plan_param):
            continue
        held = (f"run {old['run_id']} (plan {old['plan']}, environment {old['environment']!r}, since "
                f"{old['taken_at']:%Y-%m-%d %H:%M UTC}) holds a lease taken before leases followed the database")
        if old["environment"] == plan.environment:
            raise SoakError(f"{held}, on this plan's environment; {refused} ({ident})")
        try:
            theirs = identify_plan(old["plan"]).key
        except Exception as exc:  # noqa: BLE001 - whatever failed, we cannot tell: refuse
            raise SoakError(f"{held}, and which database it soaks cannot be read ({type(exc).__name__}: {exc}); "
                            f"{refused} ({ident}) until it is released") from None
        if theirs == ident.key:
            raise SoakError(f"{ident} is being soaked: {held}; {refused}")
    lease = store.take_lease(ident.key, str(ident), run_id, plan_param, plan.environment)
    if (lease["run_id"], lease["plan"]) != (run_id, plan_param):
        raise SoakError(f"{lease['database']} is being soaked by run {lease['run_id']} (plan {lease['plan']}, "
                        f"environment {lease['environment']!r}, since {lease['taken_at']:%Y-%m-%d %H:%M UTC}); "
                        f"{refused}")


# ------------------------------------------------------------------ preflight


def applicable(plan: Plan, states: dict[str, str]) -> list[str]:
    """The migrations a deploy would apply (``states``: name -> ledger state), after
    checking that the plan's migration is one of them ("Pre-requisitos": nothing to soak
    otherwise). Raises ``MigrationError`` when it is missing or already applied."""
    name = plan.migration.name
    if name not in states:
        raise MigrationError(f"migration {name!r} not found in {plan.migration.migrations_dir}")
    if states[name] not in APPLICABLE:
        raise MigrationError(f"migration {name!r} is {states[name]}, not pending: nothing to soak")
    return [n for n, st in states.items() if st in APPLICABLE]


def lint(plan: Plan, run_id: str, store: Store, names: list[str]) -> None:
    """squawk over ``names`` (deploy applies them all), recorded as the ``lint`` event;
    raises ``LintError`` on findings the plan does not accept (lint.py)."""
    try:
        linted = lint_mod.check(plan, names)
    except LintError as exc:
        if exc.result is not None:
            store.add_event(run_id, "lint", exc.result.to_dict())
        raise
    store.add_event(run_id, "lint", linted.to_dict())


def drops(plan: Plan, names: list[str]) -> None:
    """What the migrations ``names`` drop (deploy applies them all: whatever they drop, the
    rollback must give back) against the plan's ``migration.table`` and
    ``dropped_columns`` (``migrate.check_drops``). Raises ``MigrationError`` naming the
    field and the column, or a ``migration.sql`` that cannot be read."""
    m = plan.migration
    scripts = []
    for name in names:
        try:
            scripts.append((plan.path(m.migrations_dir) / name / "migration.sql").read_text(encoding="utf-8"))
        except OSError as exc:
            raise MigrationError(f"migration {name!r}: cannot read its migration.sql ({exc.strerror})") from None
    check_drops("\n;\n".join(scripts), m.table, m.dropped_columns)


def own_timeouts(plan: Plan, names: list[str]) -> None:
    """No migration ``names`` sets ``lock_timeout`` or ``statement_timeout`` itself
    (``migrate.check_own_timeouts``), with either backend: the ledger runs each script
    with ``lock_timeout = migration.lock_timeout_s`` on its transaction, the Prisma CLI's
    connections get it as a startup option (``PrismaCliBackend.lock_timeout_s``), and a
    script's own ``SET`` replaces either for the rest of the script (a ``SET lock_timeout
    = 0`` let the DDL wait without bound, the application's queries queued behind it:
    with the real CLI, still waiting 3 s into a 1 s ``lock_timeout_s``). Raises
    ``MigrationError`` naming the file and the statement."""
    m = plan.migration
    for name in names:
        path = plan.path(m.migrations_dir) / name / "migration.sql"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationError(f"migration {name!r}: cannot read its migration.sql ({exc})") from None
        check_own_timeouts(text, f"{m.migrations_dir}/{name}/migration.sql")


def down_sql(plan: Plan) -> None:
    """The rollback's ``migration.down_sql`` read and checked before the migration: the
    first to read it would otherwise be the NO-GO rollback, after the columns were dropped.
    It must parse (PostgreSQL's grammar), hold no transaction control and no
    ``lock_timeout``/``statement_timeout`` of its own, and re-add no dropped column with a
    DEFAULT that is not a constant (``migrate.check_down_sql``; the rollback checks the same
    again before running it). Raises ``MigrationError`` naming the field, the file and the
    statement."""
    m = plan.migration
    where = f"migration.down_sql {m.down_sql}"
    try:
        text = plan.path(m.down_sql).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationError(f"{where}: cannot be read ({exc}): the migration must not start") from None
    try:
        check_down_sql(text, where, m.table, m.dropped_columns)
    except MigrationError as exc:
        raise MigrationError(f"{exc}: the migration must not start") from None


def logs_readable(plan: Plan) -> None:
    """Every ``logs`` check's reader works now: its file can be read (its ``$VARIABLE`` set,
    the file there), its command runs and exits 0 (run once, as a reading runs it). Found
    only at the first reading, after the DDL, it would leave the soak INCONCLUSIVE with the
    columns already dropped. Raises ``MigrationError`` naming the check and the field."""
    from migration_soak.plan import LogsSource
    from migration_soak.sources import logs

    for check in plan.checks:
        src = check.source
        if isinstance(src, LogsSource):
            field = "command" if src.command else "file"
            try:
                if src.command:
                    logs.read_command(src.command)
                else:
                    logs.mark(check)
            except MeasurementError as exc:
                raise MigrationError(f"checks[{check.id}].source.{field}: {exc}: the migration must not "
                                     "start") from None


def fingerprint_columns(plan: Plan, query: Query) -> None:
    """Every ``fingerprint`` check's table has its ``key`` and ``columns`` now: found only
    by the fingerprint task, after the backup, it would cost the backup's time. Raises
    ``MigrationError`` naming the check and the missing table or columns."""
    from migration_soak.pgconn import table_identifier
    from migration_soak.plan import FingerprintSource

    for check in plan.checks:
        src = check.source
        if not isinstance(src, FingerprintSource):
            continue
        ident = table_identifier(src.table)
        rows = query("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass("
                     f"{_sql_literal(ident)}) AND attnum > 0 AND NOT attisdropped")
        present = {str(r[0]) for r in rows}
        if not present:
            raise MigrationError(f"checks[{check.id}].source.table: {src.table!r} does not exist: "
                                 "the migration must not start")
        missing = [c for c in (src.key, *src.columns) if c not in present]
        if missing:
            raise MigrationError(f"checks[{check.id}].source: {src.table} has no column "
                                 f"{', '.join(map(repr, missing))}: the migration must not start")


def require(requirement: Requirement, query: Query) -> float:
    """One of the plan's ``preflight.require`` ("Pre-requisitos para Staging"): its query's
    first cell, which must be a number meeting ``requirement.expect``; returns it. Raises
    ``MigrationError`` naming the requirement, the value, the expectation and the runbook's
    reason, e.g. ``preflight.require[users_without_authorizer_id]: 3, expected == 0
    (Pre-requisito: todos los usuarios tienen authorizerId): the migration must not start``."""
    where = f"preflight.require[{requirement.id}]"
    rows = query(requirement.query())
    cell = rows[0][0] if rows and rows[0] else None
    try:
        value = float(cell)  # type: ignore[arg-type]  # None and text are refused below
    except (TypeError, ValueError):
        raise MigrationError(f"{where}: the query's first cell is {cell!r}, not a number ({requirement.why}): "
                             "the migration must not start") from None
    if not requirement.expect.holds(value):
        shown = f"{value:.0f}" if value.is_integer() else f"{value:g}"  # a count in full: 1234567, not 1.23457e+06
        raise MigrationError(f"{where}: {shown}, expected {requirement.expect} ({requirement.why}): "
                             "the migration must not start")
    return value


def preflight(plan: Plan, run_id: str, store: Store, *, direct: PgTarget, direct_field: str,
              migrations: MigrationBackend, query: Query, health_status: Callable[[str], int]) -> dict:
    """Before touching anything ("Pre-requisitos para Staging"): the connection for DDL
    (``direct``, named ``direct_field``) not behind a transaction pooler, the migration
    pending, its SQL linted, what it drops exactly the plan's ``migration.dropped_columns``
    (``migrate.check_drops``), no script setting its own ``lock_timeout``/``statement_timeout``
    (``own_timeouts``), the down SQL readable and safe to run (``down_sql``), every
    ``logs`` check's file readable (``logs_readable``),
    every ``fingerprint`` check's table and columns there (``fingerprint_columns``),
    the plan's ``preflight.require`` in order (the default plan:
    no user without ``authorizerId``, "Horas 1-2" query 1), the gateway and authorizer
    ``/health`` (``health_status(conn_id)`` -> HTTP status) 200.

    Returns ``{"migrations": {name: state}}``, also recorded as the ``preflight`` event.
    Raises ``MigrationError`` or ``LintError``; query and HTTP errors propagate as raised.
    """
    try:
        # DDL, dumps and advisory locks behind a transaction pooler leak into the app's sessions.
        require_direct(direct, direct_field)
        states = {s.name: s.state for s in migrations.status()}
    except MigrationError as exc:
        raise MigrationError(f"migration status: {exc}") from exc
    names = applicable(plan, states)
    lint(plan, run_id, store, names)
    drops(plan, names)
    own_timeouts(plan, names)
    down_sql(plan)
    logs_readable(plan)
    fingerprint_columns(plan, query)
    for requirement in plan.preflight.require:
        require(requirement, query)
    for conn_id in {plan.connections.gateway, plan.connections.authorizer}:
        status = health_status(conn_id)
        if status != 200:
            raise MigrationError(f"{conn_id}: /health answered {status} before the migration")
    store.add_event(run_id, "preflight", {"migrations": states, "text": "all prerequisites hold"})
    return {"migrations": states}


# ------------------------------------------------------------------ Hora 0


def backup_required_tables(plan: Plan) -> tuple[str, ...]:
    """The tables (``schema.table``) whose data a pre-migration backup must hold (Hora 0
    step 1): the plan's migration table, in ``public`` as the rollback restores it
    (``restore_columns``' schema; ``pgconn.qualified_table``). A dump without them cannot
    roll this plan back."""
    from migration_soak.pgconn import qualified_table

    return (qualified_table(plan.migration.table),)


def backup_event(record: BackupRecord) -> dict:
    """The ``backup`` event of a kept backup (Hora 0 step 1): its dict and a summary."""
    return {**record.to_dict(), "text": f"{record.size_bytes} bytes, sha256 {record.sha256[:12]}, kept at "
                                        f"{record.location}" + (" (reused)" if record.reused else "")}


def lock_attempts(exc: Exception) -> list[dict]:
    """The lock-timeout attempts a ``MigrationError``/``RollbackError`` carries, as dicts."""
    return [a if isinstance(a, dict) else a.to_dict() for a in getattr(exc, "lock_attempts", ()) or ()]


def mark_logs(plan: Plan, run_id: str, store: Store) -> dict[str, dict]:
    """Just before the migration: where each ``logs`` check's file ends
    (``sources.logs.mark``), recorded as the ``log_marks`` event (``marks``: ``{check_id: position}``)
    (``{"error": ...}`` when the file cannot be read now, which preflight's ``logs_readable``
    refused already; a series without a mark reads the log's last 500 lines, saying so).
    The first reading after the migration of each series starts there
    (``observe.previous_reading``). Once this run's migration is applied (a ``migrate``
    event), a run again returns the marks recorded and takes none."""
    from migration_soak.sources import logs

    known = store.events(run_id, "log_marks")
    if known and store.events(run_id, "migrate"):
        # migrate run again after its DDL committed (cleared in the UI): a new mark would
        # skip what the application logged since the DDL; the first marks stand.
        return dict(known[-1]["payload"].get("marks") or {})
    marks: dict[str, dict] = {}
    for check in plan.checks:
        if check.source.kind != "logs":
            continue
        try:
            position = logs.mark(check)
        except MeasurementError as exc:
            marks[check.id] = {"error": str(exc)[:500]}
            continue
        if position is not None:
            marks[check.id] = position
    if marks:
        store.add_event(run_id, "log_marks", {"marks": marks,
                                              "text": f"log positions of {', '.join(marks)} before the DDL"})
    return marks


def take_topup(plan: Plan, run_id: str, store: Store, target: PgTarget) -> dict | None:
    """Hora 0 between steps 1 and 2: the dropped columns of the rows written since the
    run's backup (the ``watermark`` of its last ``backup`` event), kept next to it
    (``topup.take``) just before the DDL, so the rollback gives back values written while
    the rehearsal and the fingerprint ran. Recorded as the ``topup`` event; returns it, or
    ``None`` when the columns are already gone (a retried ``migrate`` task: the first try's
    top-up stands). Raises ``BackupError`` (then the migration must not start), also when
    the run recorded no backup."""
    from migration_soak.backup_storage import plan_root
    from migration_soak.report import safe_name
    from migration_soak.topup import take

    backups = store.events(run_id, "backup")
    if not backups:
        raise BackupError("no backup recorded for this run: the top-up has nothing to start from")
    watermark = (backups[-1].get("payload") or {}).get("watermark")
    m = plan.migration
    label = f"topup_{safe_name(run_id)}_{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"
    taken = take(target, plan_root(plan), label, m.table, m.key, m.dropped_columns, watermark,
                 conn_id=plan.connections.backup_storage)
    if taken is None:
        return None
    since = (f"since the backup (watermark {taken.since})" if taken.since
             else "(every row: the backup recorded no watermark that selects rows here)")
    payload = {**taken.to_dict(), "text": f"top-up of {taken.table}: {taken.rows} rows written {since}, their "
                                          f"{', '.join(taken.columns)} kept just before the migration"}
    store.add_event(run_id, "topup", payload)
    return payload


def deploy(run_id: str, store: Store, migrations: MigrationBackend, plan: Plan | None = None) -> dict:
    """Apply the pending migrations (Hora 0 step 2, ``prisma migrate deploy``); returns
    the ``DeployResult`` as a dict, recorded as the ``migrate`` event. A ``MigrationError``
    is recorded as ``migrate_failed`` (with its lock attempts) and re-raised.

    With ``plan`` and a run that took a top-up (:func:`take_topup`), the gap between that
    top-up's snapshot and the DDL's lock is closed on the ledger backend: ``topup.Closing``
    copies the dropped columns again inside the migration's transaction, under the lock,
    and once the migration committed that copy is kept and recorded as the run's last
    ``topup`` event (the one the rollback overlays). When it cannot be (the Prisma CLI
    backend, the copy past ``lock_timeout_s``, the storage failing) the first top-up
    stands and a ``topup_gap`` event says values written between it and the DDL are not
    restored. The copy is not tried when the first top-up took longer than half of
    ``lock_timeout_s`` (a large table): it scans the same rows and would not fit."""
    closing, started = None, time.monotonic()
    topups = store.events(run_id, "topup") if plan is not None else []
    with contextlib.ExitStack() as stack:
        if plan is not None and topups:
            from migration_soak.backup_storage import working_folder
            from migration_soak.topup import Closing

            first = topups[-1]["payload"]
            m = plan.migration
            scan_s = float(first.get("duration_s") or 0.0)
            if isinstance(migrations, LedgerBackend) and scan_s > m.lock_timeout_s / 2:
                # the copy under the lock scans what the first top-up scanned: it would not fit
                # its half of the budget, and the application would wait behind the lock for nothing
                _topup_gap(run_id, store, first,
                           f"the first top-up took {scan_s:.2f} s; its copy under the migration's lock may take "
                           f"{m.lock_timeout_s / 2:g} s (half of migration.lock_timeout_s), so it was not tried")
            elif isinstance(migrations, LedgerBackend):
                closing = Closing(m.table, m.key, m.dropped_columns, first.get("since"),
                                  stack.enter_context(working_folder()), int(m.lock_timeout_s * 1000))
                migrations.before_script[m.name] = closing
            else:
                _topup_gap(run_id, store, first, "the Prisma CLI runs the DDL in a transaction of its own")
        try:
            payload = migrations.deploy().to_dict()
        except MigrationError as exc:
            if closing is not None and closing.committed and plan is not None:
                # the drop committed, a later migration of the deploy failed: the rollback needs this copy
                try:
                    _keep_closing(plan, run_id, store, closing, topups[-1]["payload"], started)
                except Exception as keep_exc:  # noqa: BLE001 - the migration's failure is what is raised
                    _topup_gap(run_id, store, topups[-1]["payload"],
                               f"the copy taken under the lock could not be kept: {keep_exc}")
            store.add_event(run_id, "migrate_failed", {"text": str(exc)[:2000], "lock_attempts": lock_attempts(exc)})
            raise
        if closing is not None and plan is not None:
            if closing.taken is None and not closing.skipped and plan.migration.name in (payload.get("applied") or []):
                # applied, yet the hook never ran: LedgerBackend runs none for a script with its own BEGIN/COMMIT
                closing.skipped = ("the migration's script opens its own transaction (BEGIN/COMMIT), so no copy "
                                   "could be taken under its lock")
            _keep_closing(plan, run_id, store, closing, topups[-1]["payload"], started)
    waits = [a for a in payload.get("attempts", []) if a.get("outcome") == "lock_timeout"]
    store.add_event(run_id, "migrate", {**payload, "text": f"applied {payload.get('applied')}"
                                        + (f" after {len(waits)} lock timeout(s), retried" if waits else "")})
    return payload


def _keep_closing(plan: Plan, run_id: str, store: Store, closing: Any, first: dict, started: float) -> None:
    """:func:`deploy`'s last top-up kept and recorded (or the gap recorded)."""
    from migration_soak.backup_storage import plan_root
    from migration_soak.report import safe_name

    if closing.taken is None:
        if closing.skipped:  # else the hook never ran: nothing applied now (a retried task), or no drop
            _topup_gap(run_id, store, first, closing.skipped)
        return
    label = f"topup_{safe_name(run_id)}_{datetime.now(timezone.utc):%Y%m%dT%H%M%S}_closing"
    try:
        taken = closing.keep(plan_root(plan), label, plan.connections.backup_storage, started)
    except BackupError as exc:
        _topup_gap(run_id, store, first, f"the copy taken under the lock could not be kept: {exc}")
        return
    if taken is None:
        return
    since = f"since the backup (watermark {taken.since})" if taken.since else "(every row)"
    store.add_event(run_id, "topup", {**taken.to_dict(), "closing": True,
                                      "text": f"top-up of {taken.table}: {taken.rows} rows written {since}, their "
                                              f"{', '.join(taken.columns)} copied under the migration's lock"})


def _topup_gap(run_id: str, store: Store, first: dict, why: str) -> None:
    """Record that values written after the top-up ``first`` are not restorable, once per
    top-up: a retried ``migrate`` task (the Prisma CLI's, whose retry keeps the first try's
    top-up) says it again with the same words, and that is not a second gap."""
    text = (f"values of {', '.join(first.get('columns') or [])} written between the top-up ({first.get('taken_at')}) "
            f"and the migration's lock are not restored by a rollback: {why}")
    log.warning("%s", text)
    last = next((e for e in reversed(store.events(run_id)) if e["kind"] in ("topup", "topup_gap")), None)
    if last is not None and last["kind"] == "topup_gap" and (last.get("payload") or {}).get("text") == text:
        log.info("topup_gap already recorded for this top-up (a retried migrate task): not recorded again")
        return
    store.add_event(run_id, "topup_gap", {"why": why, "text": text})


def confirm_with_prisma(run_id: str, store: Store, cli: PrismaCliBackend | None, name: str,
                        expect: Literal["applied", "pending"]) -> None:
    """Hora 0 step 3 / rollback step 3, ``npx prisma migrate status``: the real CLI must
    agree that ``name`` is ``expect``; recorded as a ``prisma_status`` event. Raises the
    CLI's ``MigrationError`` (naming its own state) otherwise. No-op when ``cli`` is None."""
    if cli is None:
        return
    try:
        outcome = confirm_status(cli, name, expect)
    except MigrationError as exc:
        store.add_event(run_id, "prisma_status", {"expect": expect, "agrees": False, "text": str(exc)[:500]})
        raise
    store.add_event(run_id, "prisma_status", {
        "expect": expect, "agrees": True, "kind": outcome.kind, "migrations": outcome.migrations,
        "text": f"after the {'deploy' if expect == 'applied' else 'rollback'}, prisma migrate status says "
                f"{outcome.kind}" + (f" ({', '.join(outcome.migrations)})" if outcome.migrations else "")})


# ------------------------------------------------------------------ verdict and reports


def recorded_decision(store: Store, run_id: str) -> Decision | None:
    """The run's final decision, recorded once by the ``decide`` task; ``None`` before."""
    events = store.events(run_id, "decision")
    return Decision.from_event(events[-1]["payload"]) if events else None


def dropped_already(plan: Plan, query: Query) -> list[str]:
    """Which of ``migration.dropped_columns`` ``migration.table`` lacks now (read-only
    catalog query): after a failed ``migrate``, a non-empty answer means the migration
    committed part of its change (two pending migrations, the first one done; a script
    with its own transactions) and the run must go on to a decision and a rollback."""
    present = {str(r[0]) for r in query(columns_present_sql(plan.migration.table, plan.migration.dropped_columns))}
    return [c for c in plan.migration.dropped_columns if c not in present]


def with_failed_tasks(verdict: Verdict, failed: Sequence[str], unmeasured: Mapping[str, str] | None = None) -> Verdict:
    """``verdict`` when no task failed; else at best INCONCLUSIVE, naming the ``failed``
    tasks (a NO-GO stands: a breach was read). ``unmeasured``: failed check tasks that
    measured nothing, by task id, with what they read (``observe.unmeasured_task``): named
    with it, not as "failed or could not run". ``judge_soak``'s rule, also the soak view's
    provisional judgement while a run has no verdict yet."""
    if not failed or verdict.decision == "NO_GO":
        return verdict
    unmeasured = unmeasured or {}
    others = [t for t in failed if t not in unmeasured]
    why = [f"task {t} measured nothing ({unmeasured[t]}): the soak did not run as planned"
           for t in failed if t in unmeasured]
    if others:
        why.insert(0, f"task{'s' if len(others) > 1 else ''} {', '.join(others[:8])}{', ...' if len(others) > 8 else ''} "
                      f"failed or could not run after the migration: the soak did not run as planned")
    reasons = why + (list(verdict.reasons) if verdict.decision == "INCONCLUSIVE" else [])
    return replace(verdict, decision="INCONCLUSIVE", reasons=reasons)


def judge_soak(plan: Plan, run_id: str, store: Store, time_scale: float, failed: Sequence[str] = (),
               partial: Sequence[str] = ()) -> Verdict:
    """Judge the soak from the store's observations alone (judge.py), recorded as the
    ``verdict`` event. ``time_scale``: the run's clock speed-up (the readings' soak time).
    ``failed``: tasks of the run that failed (or could not run) after the migration: the
    soak did not run as planned, so a GO becomes INCONCLUSIVE (a NO-GO stands: a breach
    was read). ``partial``: dropped columns already gone after ``migrate`` failed
    (``dropped_already``): NO-GO, the rollback gives them back."""
    verdict = judge(plan, store.observations(run_id, clock=store.clock(run_id, time_scale)), time_scale)
    if partial:
        why = (f"the migration failed after committing part of its change: {plan.migration.table}."
               f"{', '.join(partial)} already dropped; roll back to give the values back")
        verdict = replace(verdict, decision="NO_GO", reasons=[why])
    else:
        from migration_soak.observe import unmeasured_task

        named = {t: said for t in failed if (said := unmeasured_task(store, run_id, t))}
        verdict = with_failed_tasks(verdict, failed, named)
    text = f"{verdict.decision}: {'; '.join(verdict.reasons)}"
    store.add_event(run_id, "verdict", {**verdict.to_dict(), "text": text})
    return verdict


def write_report(plan: Plan, run_id: str, store: Store, verdict: Verdict, time_scale: float) -> Path:
    """Render and write the run's results report (``soak-<run>.md`` under the plan's
    ``report_location``, charts beside it), recorded as the ``report`` event; returns its path."""
    name, where = report.safe_name(run_id), plan.path(plan.report_location)
    text = report.render_report(plan, run_id, verdict, store.observations(run_id), store.events(run_id), time_scale,
                                chart_dir=where / f"charts-{name}")
    path = report.write(where, f"soak-{name}.md", text)
    store.add_event(run_id, "report", {"path": str(path), "text": f"report written to {path}"})
    return path


def write_post_mortem(plan: Plan, run_id: str, store: Store, verdict: Verdict, report_path: str) -> Path:
    """Rollback step 6, "Documentar incidente": the post-mortem as
    ``incidents/YYYY-MM-DD-<environment>-rollback-<run>.md`` under ``report_location``,
    recorded as the ``rollback_completed`` event; returns its path."""
    text = report.render_postmortem(plan, run_id, verdict, store.observations(run_id), store.events(run_id))
    path = report.write(plan.path(plan.report_location) / "incidents",
                        f"{datetime.now(timezone.utc):%Y-%m-%d}-{plan.environment}-rollback-"
                        f"{report.safe_name(run_id)}.md", text)
    store.add_event(run_id, "rollback_completed", {"post_mortem": str(path), "report": report_path,
                                                   "text": "rollback completed"})
    return path


# ------------------------------------------------------------------ rollback


def rehearse(plan: Plan, run_id: str, store: Store, *, fetch: Fetch, staging: PgTarget, pg_bin_dir: Path | None,
             backend_for: Callable[[PgTarget], MigrationBackend], server: PgTarget | None) -> RehearsalResult:
    """Rehearse the rollback on a scratch copy of the backup ``fetch()`` yields locally
    (rehearsal.py; "Pre-requisitos": "Plan de rollback revisado y aprobado"), recorded as
    the ``rehearsal`` event. A ``RehearsalError`` or ``BackupError`` is recorded as
    ``rehearsal_failed`` with its ``step`` (``restore`` for a backup that cannot be read)
    and re-raised."""
    try:
        with fetch() as local:
            result = run_rehearsal(plan, staging, local, pg_bin_dir, run_id=run_id, backend_for=backend_for,
                                   server=server)
    except (RehearsalError, BackupError) as exc:
        store.add_event(run_id, "rehearsal_failed", {"step": getattr(exc, "step", "restore"), "text": str(exc)[:2000]})
        raise
    store.add_event(run_id, "rehearsal", result.to_dict())
    return result


def restore(plan: Plan, run_id: str, store: Store, *, fetch: Fetch, direct: PgTarget,
            pg_bin_dir: Path | None, direct_field: str = "connections.staging_direct") -> dict:
    """Rollback step 2: re-add the dropped columns on ``direct`` and copy every value back
    from the backup ``fetch()`` yields locally, the run's ``topup`` laid over it (rows
    written after the backup; rollback.py); returns the result as a dict,
    recorded as the ``restore`` event. A ``RollbackError`` is recorded as ``restore_failed``
    (with its lock attempts) and re-raised; a ``BackupError`` (nothing restored) is not.
    A backup of another database than ``direct``'s (``same_database``; ``direct_field``:
    the plan field naming it) is refused before anything is touched."""
    from migration_soak.topup import TopUp

    m = plan.migration
    topups = store.events(run_id, "topup")
    topup = TopUp.from_dict(topups[-1]["payload"]) if topups else None
    try:
        with fetch() as local:
            same_database(local, direct, direct_field)
            result = restore_by_method(m.rollback_method, direct, local, pg_bin_dir, table=m.table,
                                       columns=tuple(m.dropped_columns), key=m.key, down_sql=plan.path(m.down_sql),
                                       lock_timeout_s=m.lock_timeout_s, lock_retries=m.lock_retries, topup=topup)
    except RollbackError as exc:
        store.add_event(run_id, "restore_failed", {"text": str(exc)[:2000], "lock_attempts": lock_attempts(exc)})
        raise
    payload = result.to_dict()
    event = restore_event(payload)
    kinds = [e["kind"] for e in store.events(run_id) if e["kind"] in ("topup", "topup_gap")]
    if kinds and kinds[-1] == "topup_gap":  # the gap before the DDL stayed open (runbook.deploy)
        event["text"] += "; " + store.events(run_id, "topup_gap")[-1]["payload"]["text"]
    store.add_event(run_id, "restore", event)
    return payload


def same_database(backup: BackupRecord, direct: PgTarget, field: str = "connections.staging_direct") -> None:
    """Refuse, before anything is touched, to restore ``backup`` into a database other than
    the one it was taken from: its ``source`` (the lease key read from the server when it
    was dumped, ``identity.identify``) must be ``direct``'s key now. A connection
    re-pointed since the backup, or a run id re-created, would otherwise give the table
    another database's values of the dropped columns. A backup recorded before sources
    were kept (``source`` None) is restored as before, with a warning. Raises
    ``RollbackError`` (recorded by ``restore`` as ``restore_failed``)."""
    name = backup.path.name if backup.path is not None else (backup.location or "the backup")
    if not backup.source:
        log.warning("backup %s records no source database (taken before sources were recorded): restored into %s "
                    "without checking it came from there", name, direct.describe())
        return
    try:
        here = identify(direct, field)
    except SoakError as exc:
        raise RollbackError(f"cannot tell which database the rollback would restore into, nothing restored: {exc}") \
            from None
    if here.key != backup.source:
        taken = backup.source.rsplit("/", 1)[-1]
        raise RollbackError(
            f"backup {name} was taken from database {taken!r} ({backup.source}), but the rollback would restore "
            f"it into {here} ({here.key}): nothing restored (it would give {here.database!r} the other database's "
            f"values). Point {field} at the database the backup was taken from and clear the "
            "restore task; the table is as the migration left it")


def restored_already(plan: Plan, run_id: str, store: Store, query: Query) -> dict | None:
    """The payload of this run's completed restore (its ``restore`` event) when the dropped
    columns are all on the table now (read-only ``query``), else None. A restore run again
    after that (the rollback group cleared in the UI, ``decide`` re-run) must not copy: the
    copy takes a row still holding the re-added value (NULL, ``false``) for one never
    filled, so it would write the backup's old value over what the application wrote
    since the rollback (a verification reset, a password removed)."""
    done = store.events(run_id, "restore")
    if not done or dropped_already(plan, query):
        return None
    return {k: v for k, v in done[-1]["payload"].items() if k != "text"}


def restore_event(payload: dict) -> dict:
    """The ``restore`` event of a ``rollback.RestoreResult.to_dict()`` (rollback step 2)."""
    if payload.get("method") == "rebuild":
        how = (f"; rebuilt and swapped in: ACCESS EXCLUSIVE only for the re-add and the {payload.get('swap_s', 0):.2f} s "
               f"swap, after {payload.get('batches', 0)} catch-up rounds")
    else:
        how = (f"; ACCESS EXCLUSIVE only for the {payload.get('ddl_s', 0):.2f} s re-add, then "
               f"{payload.get('batches', 0)} row-locked batches")
    return {**payload, "text": (
        restore_summary(payload) + how)}


def mark_rolled_back(plan: Plan, run_id: str, store: Store, migrations: MigrationBackend, direct: PgTarget) -> dict:
    """Rollback step 3: mark the migration rolled back so it reads as pending again; returns
    the ledger's states (name -> state) as read by ``LedgerBackend`` on ``direct`` whatever
    the backend, recorded as the ``ledger`` event. Raises ``MigrationError``."""
    name = plan.migration.name
    migrations.mark_rolled_back(name)
    states = {s.name: s.state for s in LedgerBackend(direct, plan.path(plan.migration.migrations_dir)).status()}
    store.add_event(run_id, "ledger", {"migrations": states, "removed_rows": getattr(migrations, "removed_rows", []),
                                       "text": f"{name} is {states[name]} again"})
    return states


def _sql_literal(text: str) -> str:
    """``text`` as a PostgreSQL string constant: quotes doubled, under
    ``standard_conforming_strings`` (on since PostgreSQL 9.1), where a backslash is an
    ordinary character. ``Query`` takes SQL text alone, no parameters."""
    if "\x00" in text:
        raise PlanError(f"a name holds a NUL character: {text!r}")
    return "'" + text.replace("'", "''") + "'"


def columns_present_sql(table: str, columns: Sequence[str]) -> str:
    """The read-only query listing which of ``columns`` ``table`` has (``column_name``
    rows), from ``information_schema.columns``: "Horas 1-2" query 2 for any plan's
    ``migration.table`` and ``dropped_columns`` (rollback step 5: they are back). The
    table in its schema (``pgconn.split_table``: ``public`` for a bare name), as the
    migration and the rollback change it: a ``users`` of another schema (first on the
    role's search path, or anywhere) is not read."""
    from migration_soak.pgconn import split_table

    schema, name = split_table(table)
    names = ", ".join(_sql_literal(c) for c in columns)
    return ("SELECT column_name FROM information_schema.columns "
            f"WHERE table_schema = {_sql_literal(schema)} AND table_name = {_sql_literal(name)} "
            f"AND column_name IN ({names})")


def health_ok(results: dict[str, Any], dropped_columns: list[str]) -> bool:
    """Rollback step 5's rule: every health check (``results``: check id -> value, 1.0 is
    up) is up and ``results["columns_back"]`` holds exactly the dropped columns."""
    return all(v == 1.0 for k, v in results.items() if k != "columns_back") and \
        sorted(results["columns_back"]) == sorted(dropped_columns)


def rechecks(plan: Plan, verdict: Verdict) -> dict[str, Condition]:
    """The checks to read again after a rollback, with the NO-GO condition each met: every
    ``sql`` check whose reading decided a breached ``threshold`` NO-GO criterion (one reading
    can show such a rule; not a degradation, a growth, a sustained or windowed count). The
    rollback gives back the dropped columns, not what such a check found (the sync-drift
    demo's 5 users without authorizerId), and the runbook's step 5 script counts it again."""
    criteria = {c.id: c for c in implicit_criteria(plan)[1]}
    out: dict[str, Condition] = {}
    for c in verdict.criteria:
        crit = criteria.get(c.id)
        if c.kind != "no_go" or c.outcome != "breached" or crit is None or crit.rule.kind != "threshold":
            continue
        for d in c.deciding:
            cid = str(d.get("check_id"))
            if cid in crit.checks and plan.check(cid).source.kind == "sql":
                out[cid] = Condition(op=crit.rule.op, value=crit.rule.value)
    return out


def _read_again(plan: Plan, measure: Callable[[Check], float], recheck: dict[str, Condition]) -> dict[str, dict]:
    """``{check id: {"value", "still", "no_go"} | {"error"}}``: ``recheck`` read once more; a
    failure to read is recorded (its exception class only: a text may carry a DSN), never raised."""
    out: dict[str, dict] = {}
    for cid, cond in recheck.items():
        check = plan.check(cid)
        try:
            value = float(measure(check))
        except Exception as exc:  # step 5 reports it; the restored columns are what it must not fail on
            out[cid] = {"error": type(exc).__name__}
            continue
        out[cid] = {"value": value, "still": cond.holds(value), "no_go": format_condition(cond, check.unit),
                    "shown": format_value(value, check.unit)}
    return out


def read_again_text(again: dict[str, dict]) -> str:
    """``; read again after the rollback: `users_without_authorizer_id` 5, still meets the NO-GO > 0 (...)``."""
    parts = []
    for cid, r in again.items():
        if "error" in r:
            parts.append(f"`{cid}` could not be read: {r['error']}")
        elif r["still"]:
            parts.append(f"`{cid}` {r['shown']}, still meets the NO-GO {r['no_go']} (the rollback gave back the "
                         "dropped columns, not this)")
        else:
            parts.append(f"`{cid}` {r['shown']}, no longer meets the NO-GO {r['no_go']}")
    return "; read again after the rollback: " + "; ".join(parts) if parts else ""


def post_rollback_health(plan: Plan, run_id: str, store: Store, *, measure: Callable[[Check], float],
                         query: Query, recheck: dict[str, Condition] | None = None) -> dict:
    """Rollback step 5, "Validar que sistema volvió a estado previo": the plan's ``http``
    checks (``measure(check)`` -> 1.0 up, 0.0 down) and the plan's dropped columns back on
    its migration table (query 2, ``columns_present_sql``); then ``recheck`` (``rechecks``:
    what decided the NO-GO) read again, said in the event's text and kept under
    ``read_again``, which does not change ``ok``: the rollback is of the migration.

    Returns ``{check_id: value, ..., "columns_back": [sorted names]}``, recorded as the
    ``health`` event with ``ok``. Raises ``RollbackError`` when not ok; measurement and
    query errors propagate as raised.
    """
    results: dict[str, Any] = {c.id: measure(c) for c in plan.checks if c.source.kind == "http"}
    results["columns_back"] = sorted(r[0] for r in query(columns_present_sql(plan.migration.table,
                                                                            plan.migration.dropped_columns)))
    ok = health_ok(results, plan.migration.dropped_columns)
    again = _read_again(plan, measure, recheck or {}) if ok else {}
    store.add_event(run_id, "health", {**results, "ok": ok, **({"read_again": again} if again else {}),
                                       "text": f"post-rollback health {'ok' if ok else 'FAILED'}{read_again_text(again)}"})
    if not ok:
        raise RollbackError(f"post-rollback health failed: {results}")
    return results
