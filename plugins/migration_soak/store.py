"""The observation store: every measured value and every soak event, in PostgreSQL.

SQLAlchemy Core over the ``soak_store`` connection. Tasks share results only through
here (and XCom for small values), so any Airflow executor works and a restarted task
finds what was already measured. The decision reads only this store.

Observations are unique per (run, phase, check, tick): recording the same tick twice
(a retried task, a restarted scheduler) keeps the first and reports the duplicate.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Literal, Mapping

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert

Status = Literal["pass", "warn", "fail", "error"]
STATUSES: tuple[str, ...] = ("pass", "warn", "fail", "error")

metadata = sa.MetaData()

observations = sa.Table(
    "soak_observations",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("phase", sa.Text, nullable=False),
    sa.Column("check_id", sa.Text, nullable=False),
    sa.Column("tick", sa.Integer, nullable=False),
    sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("unit", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("evidence", JSONB, nullable=False),
    sa.UniqueConstraint("run_id", "phase", "check_id", "tick", name="soak_observations_tick_key"),
    sa.CheckConstraint("status IN ('pass','warn','fail','error')", name="soak_observations_status_check"),
)

events = sa.Table(
    "soak_events",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False, index=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", JSONB, nullable=False),
)

#: One query per SQL file per tick (issue 14): the first check reading ``sql_file`` for
#: (run, phase, tick) runs it and records its result here; the others read it.
query_results = sa.Table(
    "soak_query_results",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("sql_file", sa.Text, primary_key=True),
    sa.Column("phase", sa.Text, primary_key=True),
    sa.Column("tick", sa.Integer, primary_key=True),
    sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("result", JSONB, nullable=False),
)


#: One soak per staging database: the row of the run that soaks it, keyed on the
#: database's identity as its server reports it (``identity.DatabaseIdentity.key``).
database_leases = sa.Table(
    "soak_database_leases",
    metadata,
    sa.Column("database_key", sa.Text, primary_key=True),
    sa.Column("database", sa.Text, nullable=False),  # str(DatabaseIdentity): for messages, no secret
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("environment", sa.Text, nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
)

#: Which plan (DAG) each run id belongs to. Airflow's run ids are unique per DAG only,
#: while readings, events, the report's and the backups' names are keyed on the run id
#: alone: the first run to open claims it, another plan's run with that id is refused,
#: and so is a later Airflow run of the same plan with that id (one deleted and
#: triggered again): ``dag_run`` names the Airflow dag run that claimed it (its
#: ``run_after``, ISO 8601; NULL in claims from before), ``dag_run_started`` and
#: ``dag_run_clears`` its ``start_date`` and ``clear_number`` as its latest task saw them
#: (NULL in claims from before: :class:`DagRunKey`), ``dag_run_superseded`` when another
#: dag run with this run id and ``run_after`` was first refused (the claiming one is gone).
runs = sa.Table(
    "soak_runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("plan", sa.Text, nullable=False),
    # report.safe_name(run_id): what the run's files are named by (two ids may share one)
    sa.Column("file_name", sa.Text, nullable=False, unique=True),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dag_run", sa.Text),
    sa.Column("dag_run_started", sa.DateTime(timezone=True)),
    sa.Column("dag_run_clears", sa.Integer),
    sa.Column("dag_run_superseded", sa.DateTime(timezone=True)),
)

#: The columns of ``soak_runs`` added since it was first created, with their SQL types.
_NEW_RUN_COLUMNS = {"dag_run": "text", "dag_run_started": "timestamptz", "dag_run_clears": "integer",
                    "dag_run_superseded": "timestamptz"}

#: How much the worker's clock (a claim's ``claimed_at``) may lag the scheduler's (a dag
#: run's ``start_date``) before a claim recorded with ``run_after`` only is taken for
#: another dag run's (:func:`other_dag_run`).
CLOCK_SKEW = timedelta(seconds=60)


class DagRunKey(str):
    """Which Airflow dag run asks (``context.dag_run_key``): the string is its ``run_after``
    (ISO 8601), what claims recorded before; ``started`` and ``clears`` are its
    ``start_date`` and ``clear_number`` (None when unknown).

    ``run_after`` alone does not tell two dag runs apart: a REST trigger may give the run
    id and the ``run_after`` of a deleted run. Neither the task context nor the REST API
    exposes the dag run's primary key; its ``start_date`` is set when it starts running
    (before any of its tasks) and changes only when a finished run is cleared, which also
    raises ``clear_number``. So a dag run re-created after its namesake was deleted starts
    after that run's claim, with another ``start_date`` and a ``clear_number`` of 0."""

    started: datetime | None
    clears: int | None

    def __new__(cls, run_after: str, started: datetime | None = None, clears: int | None = None) -> "DagRunKey":
        self = super().__new__(cls, run_after)
        self.started, self.clears = started, clears
        return self


def _instant(text: Any) -> Any:
    """``text`` (ISO 8601) as an aware datetime, to compare instants; as is when not one."""
    try:
        when = datetime.fromisoformat(str(text))
    except ValueError:
        return text
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _started_after(claim: Mapping[str, Any], started: datetime) -> bool:
    """Whether a dag run that started at ``started`` started after ``claim`` was made
    (beyond :data:`CLOCK_SKEW`): then none of its tasks made it."""
    return claim.get("claimed_at") is not None and started > claim["claimed_at"] + CLOCK_SKEW


def other_dag_run(claim: Mapping[str, Any], dag_run: str | None, *, opening: bool = False) -> bool:
    """Whether ``claim`` (a ``soak_runs`` row) was made by another Airflow dag run than
    ``dag_run`` (:class:`DagRunKey`, or a plain ``run_after``). False when it cannot be told:
    no ``dag_run``, or a claim recorded before dag runs were (``claim_run`` decides those).

    Another run when: its ``run_after`` differs; or the claim's dag run was already
    superseded (another dag run with its ``run_after`` was refused: the first is gone) and
    this one's start differs. Only when ``opening`` (``load``, the run's first task) also:
    the claim recorded a ``start_date`` and this one's differs without a higher
    ``clear_number`` (a clear would have raised it), or the claim recorded ``run_after`` only
    and this dag run, never cleared, started after the claim was made (beyond
    :data:`CLOCK_SKEW`). A later task never is on its start alone: a running dag run set
    back to ``queued`` (REST ``PATCH state``) gets a new start without a higher clear number
    (Airflow 3.3 ``DagRun.set_state``), and refusing its tasks would refuse its rollback;
    a re-created run is refused at its ``load``, which marks the claim superseded."""
    if dag_run is None:
        return False
    started, clears = getattr(dag_run, "started", None), getattr(dag_run, "clears", None)
    superseded = claim.get("dag_run_superseded") is not None
    if claim.get("dag_run") is None:  # recorded before dag runs were: only a start after it tells
        return started is not None and (superseded or (opening and clears == 0 and _started_after(claim, started)))
    if _instant(claim["dag_run"]) != _instant(dag_run):
        return True
    if started is None:
        return False
    recorded = claim.get("dag_run_started")
    if recorded is not None and started == recorded:
        return False
    if superseded:
        return True
    if not opening:
        return False
    if recorded is None:
        return clears == 0 and _started_after(claim, started)
    was = claim.get("dag_run_clears")
    return not (clears is not None and was is not None and clears > was)


#: The leases of releases before the lease followed the database: keyed on the plan's
#: environment NAME. Never written now; read so that a soak that took one before an
#: upgrade keeps its database (``runbook.admit``), and emptied by ``release_lease``.
leases = sa.Table(
    "soak_leases",
    metadata,
    sa.Column("environment", sa.Text, primary_key=True),
    sa.Column("run_id", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class RunClock:
    """A run's soak clock: wall time ``hour0`` is soak time 0 and the clock runs
    ``time_scale`` times faster than the wall clock."""

    hour0: datetime
    time_scale: float

    def soak_s(self, at: datetime) -> float:
        """Soak seconds from hour 0 to wall time ``at`` (negative before it)."""
        return (at - self.hour0).total_seconds() * self.time_scale


@dataclass(frozen=True)
class Observation:
    """One measured value of one check at one tick.

    ``tick`` is 1-based within the phase (hour 0 has tick 0). ``value`` is ``None`` for
    an ``error`` observation. ``evidence`` is JSON: the query, the figures it used, the
    error text.

    ``soak_s`` and ``measured_soak_s``: the soak time (seconds from hour 0, negative
    before it) of ``scheduled_at`` and ``measured_at``, set when the store loads the
    reading on the run's clock (:meth:`Store.observations` with ``clock``); not stored.
    The rules read soak time from them, so the judge needs no ``time_scale``.
    """

    run_id: str
    phase: str
    check_id: str
    tick: int
    scheduled_at: datetime
    measured_at: datetime
    value: float | None
    unit: str
    status: Status
    evidence: dict[str, Any] = field(default_factory=dict)
    soak_s: float | None = None
    measured_soak_s: float | None = None

    def on_clock(self, clock: RunClock) -> "Observation":
        """This reading with its soak times on ``clock``."""
        return replace(self, soak_s=clock.soak_s(self.scheduled_at), measured_soak_s=clock.soak_s(self.measured_at))

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"observation status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "error" and self.value is None:
            raise ValueError(f"observation {self.check_id}@{self.phase}#{self.tick}: status {self.status} needs a value")


_ENGINES: dict[str, sa.Engine] = {}


def _add_new_columns(conn: sa.Connection) -> None:
    """Add the columns of ``soak_runs`` added since it was first created (``create_all``
    adds no column) when the store lacks them: ``create_schema`` (a run's first task) and
    ``claim_run`` (any staging task: a run claimed before the upgrade may have none left
    to run ``create_schema``). Read first, so the usual call takes no ACCESS EXCLUSIVE
    lock on the table; the ``ALTER`` (metadata only: a nullable column without default)
    runs once per store."""
    present = set(conn.execute(sa.text(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('soak_runs') AND attnum > 0 "
        "AND NOT attisdropped")).scalars())
    if not present:
        return
    for column, kind in _NEW_RUN_COLUMNS.items():
        if column not in present:
            conn.execute(sa.text(f"ALTER TABLE soak_runs ADD COLUMN IF NOT EXISTS {column} {kind}"))


def _seen(dag_run: str | None) -> dict[str, Any]:
    """The ``soak_runs`` values of what ``dag_run`` (a :class:`DagRunKey`) says of its start."""
    started = getattr(dag_run, "started", None)
    return {} if started is None else {"dag_run_started": started, "dag_run_clears": getattr(dag_run, "clears", None)}


class Store:
    """Read and write observations and events for soak runs.

    ``engine`` is a SQLAlchemy engine on the store database (PostgreSQL).
    """

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    @classmethod
    def from_airflow(cls, conn_id: str) -> "Store":
        """A store on an Airflow Postgres connection (through ``PostgresHook``).

        One engine (and its connection pool) per connection id and process: a check task
        wakes up every tick, and a new pool each time costs a login each time.
        """
        if conn_id not in _ENGINES:
            from airflow.providers.postgres.hooks.postgres import PostgresHook

            hook = PostgresHook(postgres_conn_id=conn_id)
            _ENGINES[conn_id] = hook.get_sqlalchemy_engine(engine_kwargs={"pool_pre_ping": True, "pool_size": 2})
        return cls(_ENGINES[conn_id])

    def create_schema(self) -> None:
        """Create the tables if they do not exist (idempotent, and safe when several runs'
        first ``load`` tasks start at once: ``CREATE TABLE`` races on PostgreSQL's type names,
        so one transaction-level advisory lock orders them)."""
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('migration_soak.store.schema'))"))
            metadata.create_all(conn, checkfirst=True)
            _add_new_columns(conn)

    def record(self, obs: Observation) -> bool:
        """Store ``obs``; returns False (and keeps the first) if its tick is already recorded."""
        row = {k: getattr(obs, k) for k in observations.c.keys() if k != "id"}
        stmt = (insert(observations).values(**row).on_conflict_do_nothing(constraint="soak_observations_tick_key")
                .returning(observations.c.id))
        with self.engine.begin() as conn:
            # RETURNING, not rowcount: psycopg 3 (PostgresHook's driver) reports -1 here
            return conn.execute(stmt).first() is not None

    def observations(self, run_id: str, phase: str | None = None, check_id: str | None = None,
                     clock: RunClock | None = None) -> list[Observation]:
        """Observations of a run in tick order, optionally of one phase and/or check; with
        the run's ``clock`` (:meth:`clock`), each carries its soak time (what the judge reads)."""
        q = sa.select(observations).where(observations.c.run_id == run_id)
        if phase is not None:
            q = q.where(observations.c.phase == phase)
        if check_id is not None:
            q = q.where(observations.c.check_id == check_id)
        q = q.order_by(observations.c.scheduled_at, observations.c.id)
        with self.engine.connect() as conn:
            found = [Observation(**{k: v for k, v in r._mapping.items() if k != "id"}) for r in conn.execute(q)]
        return [o.on_clock(clock) for o in found] if clock else found

    def clock(self, run_id: str, time_scale: float) -> RunClock:
        """The run's soak clock: hour 0 as ``start_clock`` recorded it (the ``hour0`` event).
        Before hour 0 (or in a soak stopped at hour 0) the clock starts at the migration's
        verification (``verified``), else the baseline's start: the only readings then are
        the baseline's and the Hora 0 checks', one per check, and rules read only the soak
        time between readings of one series."""
        q = (sa.select(events.c.kind, events.c.payload)
             .where(events.c.run_id == run_id, events.c.kind.in_(["hour0", "verified", "baseline_start"]))
             .order_by(events.c.id))
        with self.engine.connect() as conn:
            first: dict[str, dict[str, Any]] = {}
            for kind, payload in conn.execute(q):
                first.setdefault(kind, payload)
        for kind, key in (("hour0", "hour0"), ("verified", "at"), ("baseline_start", "at")):
            if kind in first and first[kind].get(key):
                return RunClock(datetime.fromisoformat(first[kind][key]), float(time_scale))
        return RunClock(datetime(1970, 1, 1, tzinfo=timezone.utc), float(time_scale))

    def latest(self, run_id: str, check_id: str, phases: Collection[str] | None = None,
               exclude_phases: Collection[str] = (), valued: bool = False) -> Observation | None:
        """The most recent observation of a check in a run, in ``phases`` (None: any) but
        none of ``exclude_phases``; with ``valued`` the most recent that is not an ``error``."""
        q = (
            sa.select(observations)
            .where(observations.c.run_id == run_id, observations.c.check_id == check_id)
            .order_by(observations.c.measured_at.desc(), observations.c.id.desc())
            .limit(1)
        )
        if phases is not None:
            q = q.where(observations.c.phase.in_(list(phases)))
        if exclude_phases:
            q = q.where(observations.c.phase.not_in(list(exclude_phases)))
        if valued:
            q = q.where(observations.c.status != "error")
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        return Observation(**{k: v for k, v in r._mapping.items() if k != "id"}) if r else None

    def measured_pairs(self, run_id: str) -> set[tuple[str, str]]:
        """The (phase, check_id) pairs of the run that hold at least one observation."""
        t = observations
        q = sa.select(t.c.phase, t.c.check_id).where(t.c.run_id == run_id).distinct()
        with self.engine.connect() as conn:
            return {(r.phase, r.check_id) for r in conn.execute(q)}

    def checks_at(self, run_id: str, phase: str, tick: int) -> set[str]:
        """The check ids already recorded for ``phase`` at ``tick`` (one indexed query)."""
        t = observations
        q = sa.select(t.c.check_id).where(t.c.run_id == run_id, t.c.phase == phase, t.c.tick == tick)
        with self.engine.connect() as conn:
            return set(conn.scalars(q))

    def first_failure(self, run_id: str) -> Observation | None:
        """The earliest ``fail`` observation of a run (a NO-GO breach), if any."""
        q = (
            sa.select(observations)
            .where(observations.c.run_id == run_id, observations.c.status == "fail")
            .order_by(observations.c.measured_at, observations.c.id)
            .limit(1)
        )
        with self.engine.connect() as conn:
            r = conn.execute(q).first()
        return Observation(**{k: v for k, v in r._mapping.items() if k != "id"}) if r else None

    def shared_result(self, run_id: str, sql_file: str, phase: str, tick: int,
                      run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], datetime, bool]:
        """The result of ``sql_file`` at (run, ``phase``, ``tick``): the recorded one, else
        ``run()``'s (JSON), recorded for the other checks reading that file at that tick.

        One transaction-level advisory lock per key orders the readers (separate triggers,
        maybe separate processes): the first runs the query while the others wait for its
        row. An exception from ``run()`` records nothing and propagates (the next reader
        tries again). Returns (result, when it was measured, whether this call ran it).
        """
        t = query_results
        where = (t.c.run_id == run_id, t.c.sql_file == sql_file, t.c.phase == phase, t.c.tick == tick)
        with self.engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                         {"k": f"migration_soak.query\x1f{run_id}\x1f{sql_file}\x1f{phase}\x1f{tick}"})
            row = conn.execute(sa.select(t.c.result, t.c.measured_at).where(*where)).first()
            if row is not None:
                return row.result, row.measured_at, False
            result = run()
            measured_at = datetime.now(timezone.utc)
            conn.execute(insert(t).values(run_id=run_id, sql_file=sql_file, phase=phase, tick=tick,
                                          measured_at=measured_at, result=result).on_conflict_do_nothing())
            return result, measured_at, True

    def claim_run(self, run_id: str, plan: str, *, file_name: str, opening: bool,
                  dag_run: str | None = None) -> dict[str, Any] | None:
        """Claim ``run_id`` for ``plan`` (its ``plan`` param), its files named by
        ``file_name`` (``report.safe_name(run_id)``); None when it is that plan's (claimed
        now, or before: a retried task). Otherwise what holds it, nothing claimed: the claim
        row of another plan's run with this id, or of another run whose files are named the
        same (``soak:1`` and ``soak_1``), or, when ``opening`` (the run's first task, which
        records nothing before), ``{"plan": None, "events": n}`` if the store already holds
        events of that run id that nobody claimed (a run opened before claims existed).
        Not ``opening``, unclaimed events are the run's own (opened before the upgrade).

        ``dag_run``: which Airflow dag run asks (``context.dag_run_key``, a :class:`DagRunKey`:
        its ``run_after``, ``start_date`` and ``clear_number``), recorded with the claim. The
        claim of this plan made by another dag run (this run id deleted in Airflow and
        triggered again, even with the same ``run_after``: :func:`other_dag_run`) is returned,
        not taken for this one's, and marked superseded; this dag run's own claim records its
        latest ``start_date`` and ``clear_number`` (a clear moves them). A claim from before
        dag runs were recorded is adopted (its dag run recorded) unless a never-cleared run
        that started after it asks (:func:`other_dag_run`); by a run that opens (a ``load``
        retried across the upgrade) only when that run started before the claim was made:
        one that started after it, or whose start is unknown, is refused."""
        with self.engine.begin() as conn:
            # a run claimed before the upgrade whose next task is not a load (create_schema)
            _add_new_columns(conn)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                         {"k": f"migration_soak.run\x1f{file_name}"})
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
            if row is not None:
                if row.plan != plan:
                    return dict(row._mapping)
                if dag_run is None:
                    return None
                if other_dag_run(dict(row._mapping), dag_run, opening=opening):
                    if row.dag_run_superseded is None and (row.dag_run is None
                                                           or _instant(row.dag_run) == _instant(dag_run)):
                        # the same run_after (or none recorded), another dag run: the claimant is gone for good
                        conn.execute(runs.update().where(runs.c.run_id == run_id)
                                     .values(dag_run_superseded=datetime.now(timezone.utc)))
                    return dict(row._mapping)
                started = getattr(dag_run, "started", None)
                if row.dag_run is None and opening and (started is None or _started_after(dict(row._mapping), started)):
                    # a claim from before dag runs were recorded, and nothing says this run made it:
                    # a retried load started before the claim; a run that started after it and was
                    # cleared since may as well be another one re-created and cleared
                    return dict(row._mapping)
                seen = _seen(dag_run)
                if row.dag_run is None or (seen and (row.dag_run_started, row.dag_run_clears)
                                           != (seen["dag_run_started"], seen["dag_run_clears"])):
                    conn.execute(runs.update().where(runs.c.run_id == run_id)
                                 .values(dag_run=row.dag_run or str(dag_run), **seen))
                return None
            twin = conn.execute(sa.select(runs).where(runs.c.file_name == file_name)).first()
            if twin is not None:
                return dict(twin._mapping)
            known = conn.execute(sa.select(sa.func.count()).select_from(events)
                                 .where(events.c.run_id == run_id)).scalar()
            if known and opening:
                return {"run_id": run_id, "plan": None, "events": int(known)}
            conn.execute(insert(runs).values(run_id=run_id, plan=plan, file_name=file_name,
                                             claimed_at=datetime.now(timezone.utc),
                                             dag_run=None if dag_run is None else str(dag_run), **_seen(dag_run)))
            return None

    def run_claim(self, run_id: str) -> dict[str, Any] | None:
        """The claim of ``run_id`` (``soak_runs``: plan, file name, claimed_at, dag_run), or None."""
        with self.engine.begin() as conn:
            _add_new_columns(conn)
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
        return None if row is None else dict(row._mapping)

    def take_lease(self, database_key: str, database: str, run_id: str, plan: str,
                   environment: str) -> dict[str, Any]:
        """Hold the staging database ``database_key`` (``DatabaseIdentity.key``; ``database``:
        how messages name it) for ``run_id`` of ``plan``: one soak per database at a time,
        whatever DAG (plan) or environment name it comes from. Returns the lease row; it
        belongs to another run when the database is already held (the caller refuses to
        start). Taking it again from the same run is a no-op (a retried task)."""
        stmt = insert(database_leases).values(database_key=database_key, database=database, run_id=run_id,
                                              plan=plan, environment=environment,
                                              taken_at=datetime.now(timezone.utc)).on_conflict_do_nothing()
        with self.engine.begin() as conn:
            conn.execute(stmt)
            row = conn.execute(sa.select(database_leases)
                               .where(database_leases.c.database_key == database_key)).one()
        return dict(row._mapping)

    def lease_of(self, run_id: str, plan: str) -> dict[str, Any] | None:
        """The lease ``run_id`` of ``plan`` holds now, if any."""
        t = database_leases
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.run_id == run_id, t.c.plan == plan)).first()
        return dict(row._mapping) if row else None

    def legacy_leases(self) -> list[dict[str, Any]]:
        """Leases taken before the lease followed the database (keyed on an environment
        name; ``soak_leases``), oldest first."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(leases).order_by(leases.c.taken_at))]

    def release_lease(self, run_id: str, plan: str, dag_run: str | None = None) -> bool:
        """Give back what ``run_id`` of ``plan`` holds (its database lease and a lease taken
        before the upgrade); True when something was released. ``dag_run``: the Airflow dag
        run asking (``claim_run``'s): nothing is released when the run id of this plan is
        claimed by another dag run (this one deleted and triggered again, refused by
        ``load``: the lease is the first dag run's, kept like that of a run stopped by hand)."""
        with self.engine.begin() as conn:
            if dag_run is not None:
                _add_new_columns(conn)
                claim = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
                if claim is not None and claim.plan == plan and other_dag_run(dict(claim._mapping), dag_run):
                    return False
            t = database_leases
            new = conn.execute(t.delete().where(t.c.run_id == run_id, t.c.plan == plan).returning(t.c.run_id)).all()
            old = conn.execute(leases.delete().where(leases.c.run_id == run_id, leases.c.plan == plan)
                               .returning(leases.c.run_id)).all()
            return bool(new or old)

    def no_go(self, run_id: str) -> dict[str, Any] | None:
        """The run's first recorded NO-GO breach (the stop signal), as its event payload."""
        q = (sa.select(events.c.payload).where(events.c.run_id == run_id, events.c.kind == "no_go")
             .order_by(events.c.id).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    def add_event(self, run_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Append an event (backup taken, migration applied, verdict, rollback step...)."""
        with self.engine.begin() as conn:
            conn.execute(
                events.insert().values(run_id=run_id, kind=kind, at=datetime.now(timezone.utc), payload=payload)
            )

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Events of a run in order, as dicts with ``kind``, ``at`` and ``payload``."""
        q = sa.select(events.c.kind, events.c.at, events.c.payload).where(events.c.run_id == run_id)
        if kind is not None:
            q = q.where(events.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(events.c.id))]
