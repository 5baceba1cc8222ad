"""How long does the rollback hold ACCESS EXCLUSIVE on users, and what does the app feel?

Seeds an embedded PostgreSQL with ``--users`` users (``demo.seed.create_staging``:
``generate_series``, uuid keys, bcrypt-like hashes), takes the pre-migration backup,
deploys the column drop, then restores the columns twice:

* ``before``: ``restore_columns`` as of ``--before-ref`` (one transaction: down SQL, full
  ``UPDATE ... FROM``, verification, all under ACCESS EXCLUSIVE);
* ``after``: the working tree's ``restore_columns`` (short DDL transaction, batched copy
  under row locks, verification).

Between the two the migration is marked rolled back and deployed again (columns dropped)
and users is vacuumed, so both start from the same state. During each restore a second
connection samples ``pg_locks`` every ``--sample-ms`` ms for a granted
AccessExclusiveLock on users, and a third plays the application: a point read on users
every 20 ms, timed.

Prints, per variant: the longest ACCESS EXCLUSIVE hold seen by the sampler (between the
last sample without it and the first sample without it again: an upper bound, and the
span of samples with it: a lower bound), the DDL transaction's own time (``ddl_s``;
for ``before`` that is the whole restore transaction), the slowest application read,
and the restore's times (total, staging, restore).

    .venv/bin/python bench/rollback_lock.py                  # 1 000 000 users
    .venv/bin/python bench/rollback_lock.py --users 100000   # quicker
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import MIGRATIONS_DIR, create_staging  # noqa: E402
from migration_soak.backup import take_backup  # noqa: E402
from migration_soak.migrate import LedgerBackend  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402

MIGRATIONS = MIGRATIONS_DIR  # the default plan's migrations_dir, as the demo seeds it
DROP = "20251202020032_update_user_schema_final"
DOWN_SQL = REPO / "include" / "sql" / "rollback" / f"{DROP}.down.sql"
#: The last commit whose restore_columns held ACCESS EXCLUSIVE through the whole copy.
BEFORE_REF = "13babc6"


class Sampler(threading.Thread):
    """Polls pg_locks for a granted AccessExclusiveLock on one relation; keeps the runs."""

    def __init__(self, target: PgTarget, relid: int, interval_s: float):
        super().__init__(daemon=True)
        self.target, self.relid, self.interval_s = target, relid, interval_s
        self.stop = threading.Event()
        self.samples = 0
        self.runs: list[tuple[float, float]] = []  # (lower bound, upper bound) seconds

    def run(self) -> None:
        conn = self.target.connect(application_name="bench-lock-sampler")
        conn.autocommit = True
        last_without = time.monotonic()
        first_with = last_with = None
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    cur.execute("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'relation' AND granted "
                                "AND relation = %s AND mode = 'AccessExclusiveLock')", (self.relid,))
                    held = cur.fetchone()[0]
                    now = time.monotonic()
                    self.samples += 1
                    if held:
                        first_with = first_with or now
                        last_with = now
                    else:
                        if first_with is not None:
                            self.runs.append((last_with - first_with, now - last_without))
                            first_with = None
                        last_without = now
                    time.sleep(self.interval_s)
        finally:
            conn.close()

    @property
    def longest(self) -> tuple[float, float]:
        return max(self.runs, default=(0.0, 0.0), key=lambda r: r[1])


class App(threading.Thread):
    """A point read on users every 20 ms; keeps the slowest."""

    def __init__(self, target: PgTarget, ids: list[str]):
        super().__init__(daemon=True)
        self.target, self.ids = target, ids
        self.stop = threading.Event()
        self.reads = 0
        self.slowest = 0.0

    def run(self) -> None:
        conn = self.target.connect(application_name="bench-app")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    t0 = time.monotonic()
                    cur.execute("SELECT email FROM users WHERE id = %s", (self.ids[self.reads % len(self.ids)],))
                    cur.fetchall()
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                    self.reads += 1
                    time.sleep(0.02)
        finally:
            conn.close()


def load_before(ref: str):
    """``migration_soak.rollback`` as of ``ref`` (read with ``git show``), as a module."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:plugins/migration_soak/rollback.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-rollback-")) / "rollback_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("rollback_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def sql(target: PgTarget, text: str, params=None):
    conn = target.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def measure(name: str, restore, target: PgTarget, backup, pg_bin: Path, relid: int, ids, interval_s, **kwargs):
    sql(target, "VACUUM ANALYZE users")
    sampler, app = Sampler(target, relid, interval_s), App(target, ids)
    sampler.start()
    app.start()
    t0 = time.monotonic()
    try:
        result = restore(target, backup, pg_bin, down_sql=DOWN_SQL, table="users",
                         columns=("passwordHash", "emailVerified"), key="id", lock_timeout_s=3.0, **kwargs)
    finally:
        wall = time.monotonic() - t0
        time.sleep(0.1)
        sampler.stop.set()
        app.stop.set()
        sampler.join(10)
        app.join(10)
    low, high = sampler.longest
    ddl_s = getattr(result, "ddl_s", None)
    return {
        "variant": name,
        "ae_hold_ms": (low * 1000, high * 1000),
        "ae_runs": len(sampler.runs),
        "samples": sampler.samples,
        "ddl_ms": (ddl_s if ddl_s is not None else result.restore_s) * 1000,
        "app_reads": app.reads,
        "app_slowest_ms": app.slowest * 1000,
        "total_s": wall,
        "stage_s": result.stage_s,
        "restore_s": result.restore_s,
        "batches": getattr(result, "batches", 1),
        "values_restored": result.values_restored,
        "mismatches": result.mismatches,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=None, help="after: keys per batch (default: the module's)")
    parser.add_argument("--before-ref", default=BEFORE_REF, help=f"git ref of the old rollback.py ({BEFORE_REF})")
    parser.add_argument("--sample-ms", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one)")
    args = parser.parse_args(argv)

    from migration_soak import rollback as after

    before = load_before(args.before_ref)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-rollback-lock-"))
    server = postgres.start(workdir / "pgdata")
    try:
        t0 = time.monotonic()
        seed = create_staging(server, "bench", users=args.users)
        target = PgTarget(server.host, server.port, "bench", postgres.SUPERUSER, server.password)
        pg_bin = postgres.bin_dir()
        backup = take_backup(target, workdir / "backups", pg_bin, "pre_migration", tables=["users"])
        backend = LedgerBackend(target, MIGRATIONS)
        backend.deploy()
        print(f"seeded {seed.users} users, backup {backup.size_bytes / 1e6:.0f} MB, migration deployed "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        relid = sql(target, "SELECT 'public.users'::regclass::oid")[0][0]
        ids = [r[0] for r in sql(target, "SELECT id FROM users ORDER BY random() LIMIT 1000")]
        interval_s = args.sample_ms / 1000

        rows = [measure("before", before.restore_columns, target, backup, pg_bin, relid, ids, interval_s)]
        backend.mark_rolled_back(DROP)
        backend.deploy()  # the columns are dropped again
        extra = {"batch_size": args.batch_size} if args.batch_size else {}
        rows.append(measure("after", after.restore_columns, target, backup, pg_bin, relid, ids, interval_s, **extra))
    finally:
        server.stop()

    print(f"\n{args.users} users, pg_locks sampled every {args.sample_ms:g} ms, app read every 20 ms")
    head = (f"{'variant':8} {'longest ACCESS EXCLUSIVE (ms)':>30} {'DDL tx (ms)':>12} {'slowest app read (ms)':>22} "
            f"{'restore total (s)':>18} {'stage (s)':>10} {'restore (s)':>12} {'batches':>8}")
    print(head)
    for r in rows:
        low, high = r["ae_hold_ms"]
        print(f"{r['variant']:8} {f'{low:.0f} .. {high:.0f}':>30} {r['ddl_ms']:>12.1f} {r['app_slowest_ms']:>22.0f} "
              f"{r['total_s']:>18.1f} {r['stage_s']:>10.1f} {r['restore_s']:>12.1f} {r['batches']:>8}")
    for r in rows:
        assert r["mismatches"] == 0, r
    return 0


if __name__ == "__main__":
    sys.exit(main())
