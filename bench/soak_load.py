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
``pg_stat_statements``).

Prints, per check: source, DB time per reading (median of the repeats), readings in one
24 h soak at ``time_scale`` 1 (hour 0, each phase's ticks, the guard's every minute, the
baseline hour; ``migration_soak.clock.offsets``), DB time per 24 h; the total against the
issue's goal (60 s a soak); what one query per SQL file per tick, shared by every check
reading it, would save; and cheap alternatives on the same data (``pg_class.reltuples``
against ``COUNT(*)``, a key-only digest against the fingerprint ``compare``, and a query on
an open connection against ``run_readonly``'s connect-per-reading). The fingerprint taken
before the migration counts as one more reading of ``data_loss``.

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
from datetime import timedelta
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import EXECUTIONS_PER_USER, create_staging  # noqa: E402
from migration_soak import clock, fingerprint, sources  # noqa: E402
from migration_soak.migrate import LedgerBackend  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402
from migration_soak.plan import SQL_DIR, Check, Plan, load_plan  # noqa: E402

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
#: ``database_metrics.sql``'s exact count, and the planner's estimate in its place.
COUNT_USERS = "(SELECT COUNT(*) FROM users) as total_users"
RELTUPLES_USERS = "(SELECT reltuples::bigint FROM pg_class WHERE oid = 'users'::regclass) as total_users"
#: A key-only digest of users (rows present, not their values), and the same forced to read
#: the primary key's index only (the planner may prefer the heap on a small table).
KEY_DIGEST_SQL = "SELECT count(*), bit_xor(hashtextextended(id, 0)) FROM users"
INDEX_ONLY = ("SET LOCAL enable_seqscan = off", "SET LOCAL enable_bitmapscan = off")


@dataclass
class Row:
    """One check: ``times_ms`` the wall times of its readings (ms); ``readings`` per series
    in one soak (``hour0``, phase names, ``guard``, ``baseline``); ``what`` names its query."""

    check_id: str
    kind: str
    what: str
    times_ms: list[float] = field(default_factory=list)
    readings: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def per_reading_ms(self) -> float:
        """Median wall time of one reading, ms (0 without readings: no database)."""
        return statistics.median(self.times_ms) if self.times_ms else 0.0

    @property
    def count(self) -> int:
        """Readings of this check in one 24 h soak, all series."""
        return sum(self.readings.values())

    @property
    def per_soak_s(self) -> float:
        """DB time of this check over one soak, seconds."""
        return self.per_reading_ms * self.count / 1000


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


def reading_times(plan: Plan, check: Check) -> set[tuple[str, timedelta]]:
    """Soak-time points of ``check``'s readings: ``("soak", offset from hour 0)`` for hour 0,
    the phases and the guard; ``("baseline", offset)`` for the baseline hour."""
    points = set()
    for phase in ["hour0", *(p.name for p in plan.phases), "guard", "baseline"]:
        if check.id in {c.id for c in plan.checks_in(phase)}:
            origin = "baseline" if phase == "baseline" else "soak"
            points |= {(origin, off) for off in clock.offsets(plan, phase)}
    return points


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


def measure_check(plan: Plan, check: Check, context: sources.Context, repeat: int) -> Row:
    """Time ``repeat`` readings of ``check`` through the package's sources; no database: none."""
    src = check.source
    kind = src.kind
    if kind in NO_DB:
        return Row(check.id, kind, "", readings=readings_per_soak(plan, check), note=NO_DB[kind])
    what = {"sql": getattr(src, "sql", ""), "fingerprint": f"compare {getattr(src, 'table', '')}",
            "backup": f"pg_dump {', '.join(getattr(src, 'tables', []))}"}.get(kind, "")
    row = Row(check.id, kind, what, readings=readings_per_soak(plan, check))
    if kind == "authorizer_sync":
        from migration_soak.sources.authorizer_sync import sample_ids

        row.what = f"sample_ids {src.table}.{src.column}"
        row.times_ms, (ids, drawn) = timed(
            lambda: sample_ids(plan.connections.staging, src.sample, src.table, src.column), repeat)
        row.note = f"DB part only ({len(ids)} ids, {drawn}); then {src.sample} HTTP lookups"
        return row
    row.times_ms, result = timed(lambda: sources.measure(check, plan, context=context), repeat)
    row.note = f"value {result.value:g}"
    if kind == "backup":
        row.note += (f", {result.evidence['size_bytes'] / 2**20:.0f} MiB, take_backup "
                     f"{result.evidence['duration_s']:.1f} s (dump + read-back)")
    return row


def alternatives(plan: Plan, before: fingerprint.Fingerprint, target: PgTarget, repeat: int) -> list[tuple]:
    """The issue's cheap alternatives, each beside what it would replace, on the same data:
    ``(what, ms of the current query, ms of the alternative, note, readings a soak it would
    replace or None)``."""
    from migration_soak.sources.sql import readonly_transaction, run_readonly

    conn_id = plan.connections.staging
    metrics = (SQL_DIR / "database_metrics.sql").read_text(encoding="utf-8")
    metrics_runs = sum(sum(readings_per_soak(plan, c).values()) for c in plan.checks
                       if c.source.kind == "sql" and c.source.sql == "database_metrics.sql")
    compares = sum(readings_per_soak(plan, plan.check("data_loss")).values())
    assert COUNT_USERS in metrics, "database_metrics.sql changed: update COUNT_USERS"

    def run(sql: str) -> list[tuple]:
        return run_readonly(conn_id, sql)[1]

    def run_index_only(sql: str) -> list[tuple]:
        """``sql`` in the checks' read-only transaction with sequential and bitmap scans off."""
        with readonly_transaction(conn_id) as cur:
            for setting in INDEX_ONLY:
                cur.execute(setting)
            cur.execute(sql)
            return cur.fetchall()

    out = []
    count_ms, count = timed(lambda: run("SELECT COUNT(*) FROM users"), repeat)
    est_ms, est = timed(lambda: run("SELECT reltuples::bigint FROM pg_class WHERE oid = 'users'::regclass"), repeat)
    out.append(("total users: COUNT(*) vs pg_class.reltuples", count_ms, est_ms,
                f"{count[0][0]} vs {est[0][0]} (estimate from the last ANALYZE)", None))
    full_ms, _ = timed(lambda: run(metrics), repeat)
    light_ms, _ = timed(lambda: run(metrics.replace(COUNT_USERS, RELTUPLES_USERS)), repeat)
    out.append(("database_metrics.sql vs the same with reltuples for total_users", full_ms, light_ms,
                f"{metrics_runs} runs a soak", metrics_runs))
    cmp_ms, loss = timed(lambda: fingerprint.compare(before, target), repeat)
    for label, runner in (("planner's choice", run), ("index only", run_index_only)):
        key_ms, digest = timed(lambda: runner(KEY_DIGEST_SQL), repeat)
        out.append((f"data loss: fingerprint compare vs key-only digest ({label})", cmp_ms, key_ms,
                    f"{digest[0][0]} keys, {scan_of(runner, KEY_DIGEST_SQL)}; sees rows lost, not values "
                    f"nulled (compare: {loss.lost} lost)", compares))
    floor_ms, _ = timed(lambda: run("SELECT 1"), repeat)
    sql_readings = sum(sum(readings_per_soak(plan, c).values()) for c in plan.checks if c.source.kind == "sql")
    conn = target.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            open_ms, _ = timed(lambda: (cur.execute("SELECT 1"), cur.fetchall()), repeat)
    finally:
        conn.close()
    out.append(("floor of a SQL reading: SELECT 1 via run_readonly vs on an open connection", floor_ms, open_ms,
                f"connect + read-only transaction + rollback; {sql_readings} sql readings a soak", sql_readings))
    return out


def scan_of(run: Callable[[str], list[tuple]], query: str) -> str:
    """The scan node PostgreSQL plans for ``query`` when ``run`` runs it, e.g. ``Index Only Scan``."""
    lines = run("EXPLAIN " + query)
    node = next((line[0] for line in lines if "Scan" in line[0]), "?")
    return node.strip().lstrip("-> ").split(" on ")[0]


def shared_sql(plan: Plan, rows: dict[str, Row]) -> list[tuple]:
    """Per SQL file read by several checks: ``(file, check ids, runs a soak now, distinct
    soak times it is read at, ms per run)``: one query per file per tick runs it once per
    distinct time, shared by every check reading it."""
    by_file: dict[str, list[Check]] = {}
    for check in plan.checks:
        if check.source.kind == "sql":
            by_file.setdefault(check.source.sql, []).append(check)
    out = []
    for name, checks in by_file.items():
        runs = sum(rows[c.id].count for c in checks)
        times = set().union(*(reading_times(plan, c) for c in checks))
        ms = statistics.median(t for c in checks for t in rows[c.id].times_ms)
        out.append((name, [c.id for c in checks], runs, len(times), ms))
    return out


def print_report(args, seed, baseline_s: float, rows: list[Row], shared: list[tuple], alts: list[tuple],
                 server_version: str) -> float:
    """Print the three tables; returns the total DB seconds of one soak."""
    print(f"\n{seed.users:,} users, {seed.execution_logs:,} execution logs, PostgreSQL {server_version}, "
          f"median of {args.repeat} readings (wall time)")
    print("\nChecks of the default plan over one 24 h soak (time_scale 1):")
    head = f"{'check':28} {'source':16} {'ms/reading':>10} {'readings':>8}  {'series':54} {'s/24h':>8}  note"
    print(head)
    print("-" * len(head))
    rows = sorted(rows, key=lambda r: (-r.per_soak_s, r.check_id))
    for r in rows:
        series = " ".join(f"{k}:{v}" for k, v in r.readings.items())
        ms = f"{r.per_reading_ms:.1f}" if r.times_ms else "0"
        print(f"{r.check_id:28} {r.kind:16} {ms:>10} {r.count:>8}  {series:54} {r.per_soak_s:>8.2f}  "
              f"{r.what + ': ' if r.what else ''}{r.note}")
    total = sum(r.per_soak_s for r in rows)
    print(f"{'data_loss (fingerprint take)':28} {'fingerprint':16} {baseline_s * 1000:>10.1f} {1:>8}  "
          f"{'before the migration (record_baseline)':54} {baseline_s:>8.2f}")
    total += baseline_s
    print(f"\nTOTAL DB time per 24 h soak: {total:.1f} s; goal {GOAL_S:.0f} s; ratio total/goal "
          f"{total / GOAL_S:.2f}")
    print(f"  without the incremental backup: {total - sum(r.per_soak_s for r in rows if r.kind == 'backup'):.1f} s")
    floor_ms = statistics.median(alts[-1][1])
    sql_readings = sum(r.count for r in rows if r.kind == "sql")
    print(f"  of which the floor of the {sql_readings} sql readings (connect + read-only transaction, "
          f"{floor_ms:.1f} ms each): {sql_readings * floor_ms / 1000:.1f} s")

    print("\nOne query per SQL file per tick (shared by every check reading it):")
    print(f"{'sql file':34} {'checks':>6} {'runs now':>8} {'shared':>7} {'ms/run':>8} {'s now':>7} "
          f"{'s shared':>8} {'saved s':>8}")
    saved_total = 0.0
    for name, ids, runs, distinct, ms in sorted(shared, key=lambda s: -s[2] * s[4]):
        now_s, shared_s = runs * ms / 1000, distinct * ms / 1000
        saved_total += now_s - shared_s
        print(f"{name:34} {len(ids):>6} {runs:>8} {distinct:>7} {ms:>8.1f} {now_s:>7.2f} {shared_s:>8.2f} "
              f"{now_s - shared_s:>8.2f}")
    print(f"saved by sharing: {saved_total:.1f} s a soak")

    print("\nCheap alternatives on the same data (median ms, ratio alternative/current, DB s a soak saved):")
    for what, now_ms, alt_ms, note, runs in alts:
        a, b = statistics.median(now_ms), statistics.median(alt_ms)
        saved = f"{(a - b) * runs / 1000:>7.1f} s" if runs else f"{'':>9}"
        print(f"  {what:72} {a:>9.2f} ms -> {b:>8.2f} ms  ({b / a:.3f}) {saved}  {note}")
    return total


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

        rows = {}
        for check in plan.checks:
            rows[check.id] = measure_check(plan, check, context, args.repeat)
            r = rows[check.id]
            if r.times_ms:
                print(f"  {check.id}: {r.per_reading_ms:.1f} ms ({', '.join(f'{t:.0f}' for t in r.times_ms)})",
                      flush=True)
        before = data_loss.baseline_of(plan.check("data_loss"), context)
        alts = alternatives(plan, before, target, args.repeat)
        conn = target.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
        conn.close()
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    baseline_s = next(iter(baseline.values()))["duration_s"]
    shared = shared_sql(plan, rows)
    total = print_report(args, seed, baseline_s, list(rows.values()), shared, alts, version)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "users": seed.users, "execution_logs": seed.execution_logs, "postgres": version,
            "repeat": args.repeat, "total_s": total, "goal_s": GOAL_S, "fingerprint_take_s": baseline_s,
            "checks": [{"check": r.check_id, "kind": r.kind, "what": r.what, "times_ms": r.times_ms,
                        "readings": r.readings, "per_soak_s": r.per_soak_s, "note": r.note} for r in rows.values()],
            "shared_sql": [{"file": f, "checks": c, "runs": n, "shared_runs": d, "ms": ms} for f, c, n, d, ms in shared],
            "alternatives": [{"what": w, "now_ms": a, "alt_ms": b, "note": n, "runs_per_soak": r}
                             for w, a, b, n, r in alts],
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
