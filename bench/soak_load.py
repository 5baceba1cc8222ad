"""How much database time do the checks of one whole 24 h default-plan soak cost?

Seeds an embedded PostgreSQL with ``--users`` users and execution logs in proportion
(``demo.seed.create_staging``: ``generate_series``; 0.45 logs per user, the demo's
45 000 per 100 000), vacuums it (a settled table, as autovacuum leaves one), records the
data-loss fingerprint as the DAG's ``baseline`` does (``data_loss.record_baseline``),
deploys the pending migration (``LedgerBackend.deploy``, the plan's ``ledger`` backend),
then takes ``--repeat`` readings of every check of the default plan whose source reads
the staging database, through the package's own code (``sources.measure``; for
``authorizer_sync`` its database part ``sample_ids``), and times each (wall time of the
reading: connection, read-only transaction, query; this server has no
``pg_stat_statements``). The passive phase's backup counts the time staging's connection
was open (the increment's ``staging_s``: its transaction, COPYs and ``count(*)``; before,
pg_dump's run), timed as whole soak chains (the first increment since the pre-migration
backup with its key lists, the next ones chained and proved by count); its whole wall time (the client's compression, keep and read-back after the
connection closed) is printed beside it, not counted as DB time.

Prints, per check: source, DB time per reading (median of the repeats), readings in one
24 h soak at ``time_scale`` 1 (hour 0, each phase's ticks, the guard's every minute, the
baseline hour; ``migration_soak.clock.offsets``) and those that query the database now,
DB time per 24 h now and before issue 14 item 3 (measured in the same run: the old
``database_metrics.sql`` with ``COUNT(*)``, one query per check reading a file, the exact
fingerprint ``compare`` at every ``data_loss`` reading, a connection per guard reading,
a full dump of the passive phase's backup tables where it now keeps an increment),
with the ratio; the totals against the issue's goal (60 s a soak); and the alternatives
side by side (``pg_class.reltuples`` against ``COUNT(*)``, ``compare_keys`` against
``compare``, a query inside ``sql.one_connection`` against ``run_readonly``'s
connect-per-reading). The fingerprint taken before the migration counts as one more
reading of ``data_loss``.

    .venv/bin/python bench/soak_load.py                    # 1 000 000 users (make bench)
    .venv/bin/python bench/soak_load.py --users 100000     # quicker
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import EXECUTIONS_PER_USER, create_staging  # noqa: E402
from migration_soak import clock, fingerprint, sources  # noqa: E402
from migration_soak.increment import current_watermark  # noqa: E402
from migration_soak.migrate import LedgerBackend  # noqa: E402
from migration_soak.pgconn import PgTarget, split_table  # noqa: E402
from migration_soak.plan import SQL_DIR, Check, Plan, load_plan  # noqa: E402

#: execution_logs rows rewritten (same values, new xmin) before each chained increment of
#: the passive backup's line: its changed rows, whose keys the count proof looks for in
#: the previous key list (no row's value changes: the other checks read the same data).
TOUCHED = 1000

#: The issue's goal: the checks' DB time over one whole 24 h default-plan soak, seconds.
GOAL_S = 60.0
RUN_ID = "bench-soak-load"
#: Source kinds that never query the staging database, and why.
NO_DB = {
    "http": "HTTP GET of a /health endpoint",
    "openmetrics": "a /metrics scrape (gateway, or the DB host's exporter: psutil, no SQL)",
    "prometheus": "a Prometheus HTTP API query",
    "logs": "a log file tail, or the Authorizer's log API",
}
#: ``database_metrics.sql`` before issue 14 item 3 (an exact ``COUNT(*)`` of users), the "before" figure.
OLD_METRICS_SQL = """SELECT
  (SELECT COUNT(*) FROM users) as total_users,
  (SELECT COUNT(*) FROM users WHERE "authorizerId" IS NULL) as users_without_auth_id,
  (SELECT COUNT(*) FROM execution_logs WHERE "createdAt" > NOW() - INTERVAL '1 hour') as executions_last_hour,
  (SELECT COUNT(*) FROM execution_logs WHERE status = 'ERROR' AND "createdAt" > NOW() - INTERVAL '1 hour') as errors_last_hour;
"""
METRICS = "database_metrics.sql"
#: The fingerprint's row hash and check hash before issue 14 item 3 (format iblt-v1), the "before" figure.
V1_HASHES = (("hash_record_extended(ROW(", "hashtextextended(ROW("), ("), 1) AS vh", ")::text, 1) AS vh"),
             ("hashint8extended(vh, 2)", "('x' || left(md5(vh::text), 16))::bit(64)::bigint"))


@dataclass
class Row:
    """One line of the table: a check (or a part of one: ``data_loss``'s two readings, the
    guard's SQL wake-up). ``times_ms``: wall times of one reading now (ms); ``readings``
    per series in one soak (``hour0``, phase names, ``guard``, ``baseline``); ``runs``: of
    those, the ones that query the database now (``None``: all; a check sharing another's
    query at a tick runs none); ``before_ms``: wall times of one reading before issue 14
    item 3 (``None``: the same query as now), ``before_readings`` their count (``None``:
    ``readings``); ``what`` names its query. ``whole_ms``/``before_whole_ms``: a reading's
    whole wall time where its DB time is only part of it (the passive backup: the client
    compresses, keeps and reads back after staging's connection closed), else ``None``."""

    check_id: str
    kind: str
    what: str
    times_ms: list[float] = field(default_factory=list)
    readings: dict[str, int] = field(default_factory=dict)
    note: str = ""
    runs: dict[str, int] | None = None
    before_ms: list[float] | None = None
    before_readings: int | None = None
    whole_ms: list[float] | None = None
    before_whole_ms: list[float] | None = None
    soak_ms: list[float] | None = None
    soak_whole_ms: list[float] | None = None

    @property
    def per_reading_ms(self) -> float:
        """Median wall time of one reading, ms (0 without readings: no database); a line
        timed as whole soaks (``soak_ms``: the passive backup's chain), the mean reading of
        the median soak."""
        if self.soak_ms:
            return statistics.median(self.soak_ms) / max(1, self.run_count)
        return statistics.median(self.times_ms) if self.times_ms else 0.0

    @property
    def count(self) -> int:
        """Readings of this check in one 24 h soak, all series."""
        return sum(self.readings.values())

    @property
    def run_count(self) -> int:
        """Readings that query the database now, all series."""
        return self.count if self.runs is None else sum(self.runs.values())

    @property
    def per_soak_s(self) -> float:
        """DB time of this line over one soak now, seconds (``soak_ms``: the median soak's)."""
        if self.soak_ms:
            return statistics.median(self.soak_ms) / 1000
        return self.per_reading_ms * self.run_count / 1000

    @property
    def before_s(self) -> float:
        """DB time of this line over one soak before issue 14 item 3, seconds."""
        ms = statistics.median(self.before_ms) if self.before_ms else self.per_reading_ms
        return ms * (self.count if self.before_readings is None else self.before_readings) / 1000

    @property
    def whole_s(self) -> float:
        """Whole wall time of this line over one soak now (DB time where no whole is kept), seconds."""
        if self.soak_whole_ms:
            return statistics.median(self.soak_whole_ms) / 1000
        return (statistics.median(self.whole_ms) * self.run_count / 1000 if self.whole_ms else self.per_soak_s)

    @property
    def before_whole_s(self) -> float:
        """Whole wall time of this line over one soak before issue 14 item 3, seconds."""
        if not self.before_whole_ms:
            return self.before_s
        n = self.count if self.before_readings is None else self.before_readings
        return statistics.median(self.before_whole_ms) * n / 1000


def timed(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    """Call ``fn`` ``repeat`` times; (wall times in ms, the last result)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times, result


def readings_per_soak(plan: Plan, check: Check) -> dict[str, int]:
    """Readings of ``check`` in one soak at ``time_scale`` 1, by series: hour 0, each phase,
    the guard (every ``guard.every_minutes`` for 24 h) and the baseline hour before the migration."""
    out = {}
    for phase in ["hour0", *(p.name for p in plan.phases), "guard", "baseline"]:
        if check.id in {c.id for c in plan.checks_in(phase)}:
            out[phase] = len(clock.offsets(plan, phase))
    return out


def query_runs(plan: Plan, check: Check, readings: dict[str, int]) -> dict[str, int]:
    """Of ``readings`` (by series), those that run ``check``'s SQL file now: in a series where
    an earlier check of the plan reads the same file, none (one query per SQL file per tick,
    ``Store.shared_result``; that check's row carries the runs)."""
    out = {}
    for series, n in readings.items():
        readers = [c for c in plan.checks_in(series) if c.source.kind == "sql" and c.source.sql == check.source.sql]
        out[series] = n if readers and readers[0].id == check.id else 0
    return out


def data_loss_readings(plan: Plan, check: Check) -> tuple[dict[str, int], dict[str, int]]:
    """``data_loss``'s readings in one soak by series: (exact ``values`` readings, ``keys`` readings),
    as ``data_loss.exact_due`` schedules them."""
    from migration_soak.sources.data_loss import exact_due

    exact, keys = {}, {}
    for series, n in readings_per_soak(plan, check).items():
        ticks = [0] if series == "hour0" else range(1, n + 1)
        due = [exact_due(plan, series, t) for t in ticks]
        exact[series], keys[series] = sum(due), len(due) - sum(due)
    return {k: v for k, v in exact.items() if v}, {k: v for k, v in keys.items() if v}


def staging_env(target: PgTarget, store_db: str) -> None:
    """Point the plan's Airflow connections (``soak_staging``, ``soak_staging_direct``,
    ``soak_store``) at the embedded server by ``AIRFLOW_CONN_*`` variables."""
    def pg(database: str) -> str:
        return json.dumps({"conn_type": "postgres", "host": target.host, "port": target.port,
                           "login": target.user, "password": target.password, "schema": database})

    os.environ["AIRFLOW_CONN_SOAK_STAGING"] = pg(target.database)
    os.environ["AIRFLOW_CONN_SOAK_STAGING_DIRECT"] = pg(target.database)
    os.environ["AIRFLOW_CONN_SOAK_STORE"] = pg(store_db)


def admin(target: PgTarget, statement: str) -> None:
    """Run one maintenance statement (autocommit) on ``target``."""
    conn = target.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def measure_check(plan: Plan, check: Check, context: sources.Context, repeat: int, target: PgTarget) -> list[Row]:
    """Time ``repeat`` readings of ``check`` through the package's sources: its rows (none
    timed without a database; ``data_loss``: its exact and its key readings; a guard SQL
    check: its phase readings only, the guard's wake-up is :func:`guard_row`)."""
    src = check.source
    kind = src.kind
    if kind in NO_DB:
        return [Row(check.id, kind, "", readings=readings_per_soak(plan, check), note=NO_DB[kind])]
    if kind == "fingerprint":
        return data_loss_rows(plan, check, context, repeat, target)
    readings = readings_per_soak(plan, check)
    guard_sql = kind == "sql" and plan.guard is not None and check.id in plan.guard.checks
    if guard_sql:
        readings.pop("guard", None)
    what = {"sql": getattr(src, "sql", ""), "fingerprint": f"compare {getattr(src, 'table', '')}",
            "backup": f"increment of {', '.join(getattr(src, 'tables', []))}"}.get(kind, "")
    row = Row(check.id, kind, what, readings=readings)
    if kind == "backup":
        return [backup_row(plan, check, context, repeat, target, row)]
    if kind == "authorizer_sync":
        from migration_soak.sources.authorizer_sync import sample_ids

        row.what = f"sample_ids {src.table}.{src.column}"
        row.times_ms, (ids, drawn) = timed(
            lambda: sample_ids(plan.connections.staging, src.sample, src.table, src.column), repeat)
        row.note = f"DB part only ({len(ids)} ids, {drawn}); then {src.sample} HTTP lookups"
        return [row]
    row.times_ms, result = timed(lambda: sources.measure(check, plan, context=context), repeat)
    row.note = f"value {result.value:g}"
    if kind == "sql":
        row.runs = query_runs(plan, check, readings)
        if src.sql == METRICS:
            from migration_soak.sources.sql import run_readonly

            row.before_ms, _ = timed(lambda: run_readonly(plan.connections.staging, OLD_METRICS_SQL), repeat)
            row.note += f"; before: COUNT(*) of users, one query per check ({row.count} runs), now {row.run_count}"
        if guard_sql:
            row.note += "; its guard readings: the guard row"
    return [row]


def backup_row(plan: Plan, check: Check, context: sources.Context, repeat: int, target: PgTarget,
               row: Row) -> Row:
    """The passive phase's backup: ``repeat`` soaks' chains of increments through the
    source, as a soak takes them (``clock.offsets``: the passive readings; each soak a run
    of its own whose pre-migration backup event holds the same watermark): the first
    increment since the pre-migration backup keeps the key lists, the next ones chain to
    the previous and, nothing having been deleted, are proved by count; before each
    chained reading ``TOUCHED`` execution logs are rewritten with their own values (new
    ``xmin``: the increment copies them, and the proof must find their keys in the chain's
    key list, which the client reads beside the server's ``count(*)``). Each reading timed two ways: ``times_ms`` the seconds staging's connection was
    open (evidence ``staging_s``: its transaction, COPYs and ``count(*)``, the load on
    staging) and ``whole_ms`` the reading's wall time (the client's reading of the chain,
    compression, keep and read-back); ``soak_ms``/``soak_whole_ms`` their sums per soak.
    Before, a full dump
    (``take_kept_backup``): ``before_ms`` pg_dump's run (``archive.write_and_read_back``:
    the dump with its compression and read-back streaming beside it, so an upper bound of
    its session) and ``before_whole_ms`` the whole."""
    from migration_soak import archive
    from migration_soak.backup_storage import take_kept_backup
    from migration_soak.sources.incremental_backup import incremental_root

    src = check.source
    row.times_ms, row.whole_ms, row.soak_ms, row.soak_whole_ms = [], [], [], []
    watermark = next(e["payload"]["watermark"] for e in context.store.events(context.run_id, "backup"))
    by_proof: dict[str, list[tuple[float, float]]] = {"key list": [], "count": []}
    for k in range(repeat):
        run = sources.Context(f"{context.run_id}-backup-{k + 1}", context.store)
        context.store.add_event(run.run_id, "backup", {"watermark": watermark})
        staging = whole = 0.0
        for tick in range(1, max(1, row.run_count) + 1):
            if tick > 1:  # the application's writes between readings (not timed): keys of P in C
                admin(target, f"UPDATE execution_logs SET status = status WHERE id IN (SELECT id FROM execution_logs "
                              f"ORDER BY id LIMIT {TOUCHED} OFFSET {TOUCHED * (tick - 2)})")
            t0 = time.perf_counter()
            result = sources.measure(check, plan, context=run)
            whole_ms = (time.perf_counter() - t0) * 1000
            staging_ms = result.evidence["staging_s"] * 1000
            proofs = {t["deletions"] for t in result.evidence["tables"].values()}
            by_proof["count" if proofs == {"count"} else "key list"].append((staging_ms, whole_ms))
            row.times_ms.append(staging_ms)
            row.whole_ms.append(whole_ms)
            staging, whole = staging + staging_ms, whole + whole_ms
            record(run, check, tick, result)
        row.soak_ms.append(staging)
        row.soak_whole_ms.append(whole)
    ev = result.evidence
    root, bin_dir = incremental_root(plan), plan.path(plan.pg_bin_dir)
    labels = iter(range(1, repeat + 1))
    dump_ms: list[float] = []
    real = archive.write_and_read_back

    def timed_dump(*args, **kwargs):
        t1 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            dump_ms.append((time.perf_counter() - t1) * 1000)

    archive.write_and_read_back = timed_dump
    try:
        row.before_whole_ms, full = timed(
            lambda: take_kept_backup(target, root, bin_dir, f"full_{next(labels)}", tables=src.tables), repeat)
    finally:
        archive.write_and_read_back = real
    row.before_ms = dump_ms
    rows_changed = sum(t["rows"] for t in ev["tables"].values())

    def med(proof: str, i: int) -> str:
        got = [t[i] for t in by_proof[proof]]
        return f"{statistics.median(got):.0f}" if got else "-"

    row.note = (f"value {result.value:g}; a soak's {row.run_count} readings: {len(by_proof['key list']) // repeat} "
                f"with key lists (since the pre-migration backup), {len(by_proof['count']) // repeat} proved by count "
                f"(chained; {TOUCHED} execution logs rewritten before each: {rows_changed} rows changed, "
                f"{sum(t['keys'] for t in ev['tables'].values())} keys); ms now: staging's connection open, the mean "
                f"reading of the median soak (median reading with key lists {med('key list', 0)} ms, proved "
                f"{med('count', 0)} ms; whole reading with the client's chain reading, compression, keep and "
                f"read-back: {med('key list', 1)} / {med('count', 1)} ms, a soak {row.whole_s:.1f} s); before: a "
                f"full dump (take_kept_backup, {full.size_bytes / 2**20:.0f} MiB), ms: pg_dump's run (whole: "
                f"{statistics.median(row.before_whole_ms):.0f} ms)")
    return row


def record(context: sources.Context, check: Check, tick: int, result: "sources.Measurement") -> None:
    """Keep ``result`` as the run's passive observation ``tick`` of ``check``: the next
    reading chains to it (``previous_watermark``, ``previous_increment``)."""
    from datetime import datetime, timezone

    from migration_soak.store import Observation

    now = datetime.now(timezone.utc)
    context.store.record(Observation(run_id=context.run_id, phase="passive", check_id=check.id, tick=tick,
                                     scheduled_at=now, measured_at=now, value=result.value, unit="",
                                     status="pass", evidence=result.evidence))


def v1_scan(target: PgTarget, fp: fingerprint.Fingerprint, *, take: bool) -> None:
    """The fingerprint's one statement as format iblt-v1 ran it (``ROW(...)::text`` hashed,
    ``md5`` for the check hash), in the same read-only session; ``take``: as ``take`` ran it
    (every row, ``max(createdAt)``), else as ``compare`` does. The Python decoding (a few ms)
    is not run: the figure is the database's."""
    schema, name = split_table(fp.table)
    with fingerprint._reading(target, "v1 scan", fingerprint.STATEMENT_TIMEOUT_MS) as cur:
        present = fingerprint._columns_of(cur, schema, name)
        statement = fingerprint._scan_sql(
            schema, name, fp.key, fp.columns, present, max_of=fp.created_column if take else None,
            restrict=None if take else fp.created_column, cells=fp.cells, buckets=len(fp.buckets["n"]))
        text = statement.as_string(cur)
        for new, old in V1_HASHES:
            assert new in text, new
            text = text.replace(new, old)
        cur.execute(text, {"created_max": fp.created_max})
        cur.fetchall()


def data_loss_rows(plan: Plan, check: Check, context: sources.Context, repeat: int, target: PgTarget) -> list[Row]:
    """``data_loss``'s two readings: the exact ``compare`` (hour 0 and the soak's end) and
    ``compare_keys`` (the other ticks); before, each of the 11 was a v1 ``compare``."""
    from migration_soak.sources.data_loss import baseline_of

    before = baseline_of(check, context)
    exact, keys = data_loss_readings(plan, check)
    values_ms, loss = timed(lambda: fingerprint.compare(before, target), repeat)
    v1_ms, _ = timed(lambda: v1_scan(target, before, take=False), repeat)
    keys_ms, reading = timed(lambda: fingerprint.compare_keys(before, target), repeat)
    return [
        Row("data_loss (values)", "fingerprint", f"compare {before.table}", values_ms, exact,
            note=f"exact: rows and preserved values; {loss.lost} lost; before: the v1 statement", before_ms=v1_ms),
        Row("data_loss (keys)", "fingerprint", f"compare_keys {before.table}", keys_ms, keys,
            note=f"rows only (keys intact: {reading.intact}); before: a v1 compare each", before_ms=v1_ms),
    ]


def guard_row(plan: Plan, repeat: int) -> Row:
    """The guard's SQL checks at one wake-up: now on the trigger's held connection
    (``sql.one_connection(held)``: one login a trigger, not timed), before a connection per
    reading; 1 440 wake-ups a soak."""
    from migration_soak.sources.sql import close_held, one_connection

    checks = [plan.check(c) for c in plan.guard.checks if plan.check(c).source.kind == "sql"] if plan.guard else []
    held: dict = {}

    def wake() -> None:
        with one_connection(held):
            for c in checks:
                sources.measure(c, plan)

    def wake_before() -> None:
        for c in checks:
            sources.measure(c, plan)

    wake()  # the trigger's one login
    now_ms, _ = timed(wake, repeat)
    close_held(held)
    before_ms, _ = timed(wake_before, repeat)
    wakes = len(clock.offsets(plan, "guard"))
    return Row("guard (SQL checks)", "sql", ", ".join(c.source.sql for c in checks), now_ms, {"guard": wakes},
               note=f"{len(checks)} readings a wake-up on the trigger's held connection; before: a connection each",
               before_ms=before_ms)


def alternatives(plan: Plan, before: fingerprint.Fingerprint, target: PgTarget, repeat: int) -> list[tuple]:
    """Before and after side by side, on the same data: ``(what, ms before, ms now, note,
    readings a soak or None)``."""
    from migration_soak.sources.sql import one_connection, readonly_transaction, run_readonly

    conn_id = plan.connections.staging
    metrics = (SQL_DIR / METRICS).read_text(encoding="utf-8")
    metrics_runs = sum(sum(readings_per_soak(plan, c).values()) for c in plan.checks
                       if c.source.kind == "sql" and c.source.sql == METRICS)

    def run(sql: str) -> list[tuple]:
        return run_readonly(conn_id, sql)[1]

    out = []
    count_ms, count = timed(lambda: run("SELECT COUNT(*) FROM users"), repeat)
    est_ms, est = timed(lambda: run(metrics), repeat)
    out.append(("total users: COUNT(*) vs database_metrics.sql's estimate", count_ms, est_ms,
                f"{count[0][0]} vs {est[0][0]} (estimated: {est[0][1]})", None))
    old_ms, _ = timed(lambda: run(OLD_METRICS_SQL), repeat)
    out.append(("database_metrics.sql: before (COUNT(*)) vs now", old_ms, est_ms, f"{metrics_runs} readings a soak",
                None))
    cmp_ms, loss = timed(lambda: fingerprint.compare(before, target), repeat)
    v1_ms, _ = timed(lambda: v1_scan(target, before, take=False), repeat)
    out.append(("data loss: fingerprint compare, v1 statement vs v2 (compare)", v1_ms, cmp_ms,
                "v1: ROW(...)::text hashed, md5 check; v2: hash_record_extended, hashint8extended", None))
    key_ms, keys = timed(lambda: fingerprint.compare_keys(before, target), repeat)
    with readonly_transaction(conn_id) as cur:
        cur.execute("EXPLAIN SELECT count(*), bit_xor(hashtextextended(id::text, 0)) FROM users")
        scan = scan_of(cur.fetchall())
    out.append(("data loss: fingerprint compare vs compare_keys", cmp_ms, key_ms,
                f"{keys.rows_now} keys ({scan}); rows only, not values (compare: {loss.lost} lost)", None))
    floor_ms, _ = timed(lambda: run("SELECT 1"), repeat)
    with one_connection():
        run("SELECT 1")  # the login, once
        open_ms, _ = timed(lambda: run("SELECT 1"), repeat)
    out.append(("floor of a SQL reading: run_readonly alone vs inside one_connection", floor_ms, open_ms,
                "connect + read-only transaction + rollback vs the transaction only", None))
    return out


def scan_of(lines: list[tuple]) -> str:
    """The first scan node of an ``EXPLAIN`` output, e.g. ``Parallel Seq Scan``."""
    node = next((line[0] for line in lines if "Scan" in line[0]), "?")
    return node.strip().lstrip("-> ").split(" on ")[0]


def print_report(args, seed, baseline_s: float, baseline_before_s: float, rows: list[Row], alts: list[tuple],
                 server_version: str) -> dict:
    """Print the two tables; returns the totals ``{"now_s", "before_s", "backup_now_s"}``."""
    print(f"\n{seed.users:,} users, {seed.execution_logs:,} execution logs, PostgreSQL {server_version}, "
          f"median of {args.repeat} readings (wall time)")
    print("\nChecks of the default plan over one 24 h soak (time_scale 1), now and before issue 14 item 3:")
    head = (f"{'check':28} {'source':12} {'ms now':>9} {'ms before':>9} {'readings':>8} {'queries':>7}  "
            f"{'series':44} {'s now':>7} {'s before':>8} {'ratio':>6}  note")
    print(head)
    print("-" * len(head))
    rows = sorted(rows, key=lambda r: (-r.before_s, r.check_id))
    for r in rows:
        series = " ".join(f"{k}:{v}" for k, v in r.readings.items())
        ms = f"{r.per_reading_ms:.1f}" if r.times_ms else "0"
        before = f"{statistics.median(r.before_ms):.1f}" if r.before_ms else ms
        ratio = f"{r.per_soak_s / r.before_s:.3f}" if r.before_s else ""
        print(f"{r.check_id:28} {r.kind:12} {ms:>9} {before:>9} {r.count:>8} {r.run_count:>7}  {series:44} "
              f"{r.per_soak_s:>7.2f} {r.before_s:>8.2f} {ratio:>6}  {r.what + ': ' if r.what else ''}{r.note}")
    now = sum(r.per_soak_s for r in rows) + baseline_s
    before = sum(r.before_s for r in rows) + baseline_before_s
    backup = sum(r.per_soak_s for r in rows if r.kind == "backup")
    backup_before = sum(r.before_s for r in rows if r.kind == "backup")
    print(f"{'data_loss (fingerprint take)':28} {'fingerprint':12} {baseline_s * 1000:>9.1f} "
          f"{baseline_before_s * 1000:>9.1f} {1:>8} {1:>7}  {'before the migration (record_baseline)':44} "
          f"{baseline_s:>7.2f} {baseline_before_s:>8.2f} {baseline_s / baseline_before_s:>6.3f}  take users; "
          "before: the v1 statement")
    print(f"\nTOTAL DB time per 24 h soak: now {now:.1f} s, before {before:.1f} s (ratio now/before "
          f"{now / before:.3f}); goal {GOAL_S:.0f} s: now/goal {now / GOAL_S:.2f}, before/goal {before / GOAL_S:.2f}")
    print(f"  without the passive phase's backup (now {backup:.1f} s, before {backup_before:.1f} s): now "
          f"{now - backup:.1f} s, before {before - backup_before:.1f} s")
    backup_whole = sum(r.whole_s for r in rows if r.kind == "backup")
    backup_before_whole = sum(r.before_whole_s for r in rows if r.kind == "backup")
    print(f"  the passive phase's backup counts staging's connection time (increment: its transaction; full dump: "
          f"pg_dump's run); its whole wall time, the client's compression, keep and read-back included (not DB "
          f"time): now {backup_whole:.1f} s, before {backup_before_whole:.1f} s")

    print("\nBefore and after on the same data (median ms, ratio now/before):")
    for what, old_ms, new_ms, note, _ in alts:
        a, b = statistics.median(old_ms), statistics.median(new_ms)
        print(f"  {what:68} {a:>9.2f} ms -> {b:>8.2f} ms  ({b / a:.3f})  {note}")
    return {"now_s": now, "before_s": before, "backup_now_s": backup, "backup_whole_now_s": backup_whole,
            "backup_whole_before_s": backup_before_whole}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--executions", type=int, default=None,
                        help=f"execution logs (default: {EXECUTIONS_PER_USER:g} per user)")
    parser.add_argument("--repeat", type=int, default=3, help="readings timed per check (median shown)")
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    executions = args.executions or max(1, round(args.users * EXECUTIONS_PER_USER))

    logging.getLogger("migration_soak").setLevel(logging.WARNING)  # one line per reading otherwise
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-soak-load-"))
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow"))
    plan = load_plan("default")
    plan = plan.model_copy(update={"backup_location": str(workdir / "backups"),
                                   "pg_bin_dir": str(postgres.bin_dir())})
    server = postgres.start(workdir / "pgdata")
    try:
        t0 = time.monotonic()
        seed = create_staging(server, "staging", users=args.users, executions=executions)
        target = PgTarget(server.host, server.port, "staging", postgres.SUPERUSER, server.password)
        admin(target, "VACUUM ANALYZE clients, users, execution_logs")
        staging_env(target, "soak_store")
        print(f"seeded {seed.users:,} users, {seed.execution_logs:,} execution logs ({time.monotonic() - t0:.0f} s)",
              flush=True)

        from migration_soak.sources import data_loss
        from migration_soak.store import Store

        store = Store.from_airflow(plan.connections.store)
        store.create_schema()
        # The pre-migration backup's watermark, as the DAG's backup task records it: the
        # passive phase's increments start there (backup_row: the first keeps key lists, the next are proved).
        store.add_event(RUN_ID, "backup", {"watermark": current_watermark(target)})
        baseline = data_loss.record_baseline(plan, RUN_ID, store, target)
        m = plan.migration
        deployed = LedgerBackend(target, plan.path(m.migrations_dir), lock_timeout_s=m.lock_timeout_s).deploy()
        take = next(iter(baseline.values()))
        print(f"fingerprint of {take['rows']:,} rows recorded ({take['duration_s']:.1f} s), migration deployed: "
              f"{', '.join(deployed.applied)}", flush=True)

        context = sources.Context(RUN_ID, store)
        sources.measure(plan.check("connection_usage"), plan)  # imports Airflow's hook: not timed
        for kind in ("fingerprint", "backup", "authorizer_sync"):
            sources.source_for(kind)
        import migration_soak.report  # noqa: F401  (imported by the backup source's first reading)

        rows: list[Row] = []
        for check in plan.checks:
            for r in measure_check(plan, check, context, args.repeat, target):
                rows.append(r)
                if r.times_ms:
                    whole = (f"; whole reading {statistics.median(r.whole_ms):.1f} ms "
                             f"({', '.join(f'{t:.0f}' for t in r.whole_ms)})" if r.whole_ms else "")
                    print(f"  {r.check_id}: {r.per_reading_ms:.1f} ms ({', '.join(f'{t:.0f}' for t in r.times_ms)})"
                          f"{whole}", flush=True)
        rows.append(guard_row(plan, args.repeat))
        print(f"  {rows[-1].check_id}: {rows[-1].per_reading_ms:.1f} ms a wake-up", flush=True)
        before = data_loss.baseline_of(plan.check("data_loss"), context)
        alts = alternatives(plan, before, target, args.repeat)
        # The take, now and as v1 ran it, on the same table (the recorded one above ran once, cold).
        take_ms, _ = timed(lambda: fingerprint.take(target, before.table, before.key, before.columns,
                                                    before.created_column), args.repeat)
        take_v1_ms, _ = timed(lambda: v1_scan(target, before, take=True), args.repeat)
        conn = target.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
        conn.close()
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    baseline_s, baseline_before_s = statistics.median(take_ms) / 1000, statistics.median(take_v1_ms) / 1000
    totals = print_report(args, seed, baseline_s, baseline_before_s, rows, alts, version)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "users": seed.users, "execution_logs": seed.execution_logs, "postgres": version,
            "repeat": args.repeat, **totals, "goal_s": GOAL_S, "fingerprint_take_s": baseline_s,
            "fingerprint_take_v1_s": baseline_before_s,
            "checks": [{"check": r.check_id, "kind": r.kind, "what": r.what, "times_ms": r.times_ms,
                        "before_ms": r.before_ms, "whole_ms": r.whole_ms, "before_whole_ms": r.before_whole_ms,
                        "readings": r.readings, "queries": r.run_count,
                        "per_soak_s": r.per_soak_s, "before_s": r.before_s, "note": r.note} for r in rows],
            "before_after": [{"what": w, "before_ms": a, "now_ms": b, "note": n} for w, a, b, n, _ in alts],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
