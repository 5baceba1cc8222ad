"""What does one passive-phase backup reading cost: an increment against the full dump?

Issue 14 item 3: "the passive phase's backup truly incremental ... its cost per reading in
the README". Seeds an embedded PostgreSQL with ``--users`` users and ``--executions``
execution logs (``demo.seed.create_staging``), vacuums it (a settled table), deploys the
pending migration (the soak's readings come after it), reads a watermark
(``increment.current_watermark``, as the pre-migration backup records it), then changes
about ``--changed`` of the rows (users: 70 % of it updated, 20 % inserted, 10 % deleted;
execution logs: as many inserted as ``--changed`` of them) and times, alternately on the
same data, ``--repeat`` times each:

- ``increment``: ``increment.take_increment`` of ``users`` and ``execution_logs`` since
  that watermark (rows changed + key lists, zstd, kept, read back whole), what the
  ``incremental_backup`` source now does at each reading;
- ``full``: ``backup_storage.take_kept_backup`` of the same two tables (``pg_dump`` of
  both, zstd, read back whole, kept), what it did before.

Also one increment with no watermark (``base: full``, every row: the first reading of a
run without a pre-migration backup). Prints the median seconds and bytes of each and the
ratio increment / full (one run: the machine is shared, the ratio is the figure to trust).
Not a test: nothing asserts a figure.

    .venv/bin/python bench/increment.py                   # 1 000 000 users, 450 000 logs
    .venv/bin/python bench/increment.py --users 100000    # quicker
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import create_staging  # noqa: E402
from migration_soak.migrate import LedgerBackend  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402
from migration_soak.plan import load_plan  # noqa: E402

TABLES = ["users", "execution_logs"]


def admin(target: PgTarget, *statements: str) -> None:
    conn = target.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
    finally:
        conn.close()


def change(target: PgTarget, users: int, executions: int, fraction: float) -> dict[str, int]:
    """Change about ``fraction`` of the rows (see the module doc); counts of each change."""
    n = max(1, round(users * fraction))
    updated, inserted, deleted = round(n * 0.7), round(n * 0.2), max(1, round(n * 0.1))
    logs = max(1, round(executions * fraction))
    step = max(1, users // max(1, updated + deleted))
    conn = target.connect()
    try:
        with conn, conn.cursor() as cur:
            # Spread over the table: every ``step``-th user by key, updated or deleted.
            cur.execute("""CREATE TEMP TABLE bench_pick ON COMMIT DROP AS
                           SELECT id, row_number() OVER (ORDER BY id) AS n FROM users""")
            cur.execute("""UPDATE users u SET "authorizerId" = 'bench-' || u.id, "updatedAt" = now()
                           FROM bench_pick p WHERE p.id = u.id AND p.n %% %s = 0 AND p.n / %s <= %s""",
                        (step, step, updated))
            cur.execute("""DELETE FROM users u USING bench_pick p
                           WHERE p.id = u.id AND p.n %% %s = 1 AND p.n / %s < %s""", (step, step, deleted))
            cur.execute("""INSERT INTO users (id, email, "authorizerId", "updatedAt")
                           SELECT 'bench_' || g, 'bench' || g || '@example.test', 'bench-auth-' || g, now()
                           FROM generate_series(1, %s) g""", (inserted,))
            cur.execute("""INSERT INTO execution_logs (id, "workflowId", status, "startedAt")
                           SELECT 'bench_log_' || g, 'wf_bench', 'SUCCESS', now() FROM generate_series(1, %s) g""",
                        (logs,))
    finally:
        conn.close()
    return {"users updated": updated, "users inserted": inserted, "users deleted": deleted, "logs inserted": logs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--executions", type=int, default=450_000)
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of the rows changed (default 1 %%)")
    parser.add_argument("--repeat", type=int, default=3, help="readings timed each way (median shown)")
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)

    logging.getLogger("migration_soak").setLevel(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-increment-"))
    os.environ.setdefault("AIRFLOW_HOME", str(workdir / "airflow"))
    from airflow.sdk import ObjectStoragePath

    from migration_soak.backup_storage import take_kept_backup
    from migration_soak.increment import current_watermark, take_increment

    plan = load_plan("default")
    server = postgres.start(workdir / "pgdata")
    try:
        t0 = time.monotonic()
        seed = create_staging(server, "staging", users=args.users, executions=args.executions)
        target = PgTarget(server.host, server.port, "staging", postgres.SUPERUSER, server.password)
        admin(target, "VACUUM ANALYZE clients, users, execution_logs")
        m = plan.migration
        LedgerBackend(target, plan.path(m.migrations_dir), lock_timeout_s=m.lock_timeout_s).deploy()
        print(f"seeded {seed.users:,} users, {seed.execution_logs:,} execution logs, migration deployed "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        since = current_watermark(target)
        changed = change(target, seed.users, seed.execution_logs, args.changed)
        admin(target, "VACUUM ANALYZE users, execution_logs")  # as autovacuum would after the changes
        print("changed: " + ", ".join(f"{v:,} {k}" for k, v in changed.items()), flush=True)

        root = ObjectStoragePath((workdir / "backups").resolve().as_uri())
        bin_dir = postgres.bin_dir()
        inc_s, full_s, inc_bytes, full_bytes, counts = [], [], [], [], {}
        for k in range(1, args.repeat + 1):
            started = time.monotonic()
            inc = take_increment(target, root, f"inc_bench_{k}", TABLES, since)
            inc_s.append(time.monotonic() - started)
            inc_bytes.append(inc.size_bytes)
            counts = {name: (t.rows, t.keys, t.rows_bytes, t.keys_bytes) for name, t in inc.tables.items()}
            started = time.monotonic()
            full = take_kept_backup(target, root, bin_dir, f"full_bench_{k}", tables=TABLES)
            full_s.append(time.monotonic() - started)
            full_bytes.append(full.size_bytes)
            print(f"  round {k}: increment {inc_s[-1]:.2f} s ({inc.size_bytes:,} bytes), full dump "
                  f"{full_s[-1]:.2f} s ({full.size_bytes:,} bytes)", flush=True)
        started = time.monotonic()
        whole = take_increment(target, root, "inc_bench_whole", TABLES, None)
        whole_s = time.monotonic() - started
        conn = target.connect()
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            version = cur.fetchone()[0]
        conn.close()
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    inc_med, full_med = statistics.median(inc_s), statistics.median(full_s)
    print()
    print(f"PostgreSQL {version}; {seed.users:,} users, {seed.execution_logs:,} execution logs; about "
          f"{args.changed:.1%} of the rows changed since the watermark; median of {args.repeat}")
    for name, (rows, keys, rows_bytes, keys_bytes) in counts.items():
        print(f"  {name}: {rows:,} rows changed ({rows_bytes:,} bytes kept), {keys:,} keys ({keys_bytes:,} bytes, "
              f"{keys_bytes / max(1, keys):.1f} a key)")
    print("| reading | s per reading (median) | bytes kept | ratio to full |")
    print("|---|---|---|---|")
    print(f"| increment (rows changed + key lists) | {inc_med:.2f} | {statistics.median(inc_bytes):,.0f} | "
          f"{inc_med / full_med:.3f} |")
    print(f"| full dump of both tables (before) | {full_med:.2f} | {statistics.median(full_bytes):,.0f} | 1.000 |")
    print(f"| increment without a watermark (every row, once) | {whole_s:.2f} | {whole.size_bytes:,.0f} | "
          f"{whole_s / full_med:.3f} |")
    print(f"per 24 h soak (4 readings): increments {4 * inc_med:.1f} s against full dumps {4 * full_med:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
