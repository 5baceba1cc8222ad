"""How long does the rollback rehearsal take, and does it estimate the real rollback?

Seeds an embedded PostgreSQL with ``--users`` users (``demo.seed.create_staging``), takes
the pre-migration backup of the whole database (as the DAG's ``backup`` task does), runs
``rehearsal.rehearse`` with the default plan (scratch copy on the same server), then, for
comparison, the real thing on the seeded database: the migration deployed and the columns
restored by ``rollback.restore_columns``.

Prints the rehearsal's steps (restore, migrate, validate, rollback, verify, total), the
real rollback's time, and the ratio of the rehearsal's rollback step to it (how good the
report's "estimate of the real rollback's duration" is).

    .venv/bin/python bench/rehearsal.py                  # 1 000 000 users
    .venv/bin/python bench/rehearsal.py --users 100000   # quicker
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import create_staging  # noqa: E402
from migration_soak.backup import take_backup  # noqa: E402
from migration_soak.migrate import LedgerBackend  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402
from migration_soak.plan import load_plan  # noqa: E402
from migration_soak.rehearsal import rehearse  # noqa: E402
from migration_soak.rollback import restore_columns  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one)")
    args = parser.parse_args(argv)

    plan = load_plan("default")
    plan = plan.model_copy(update={"rehearsal": plan.rehearsal.model_copy(update={"max_database_mb": 1e9})})
    m = plan.migration
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-rehearsal-"))
    server = postgres.start(workdir / "pgdata")
    try:
        t0 = time.monotonic()
        seed = create_staging(server, "bench", users=args.users)
        target = PgTarget(server.host, server.port, "bench", postgres.SUPERUSER, server.password)
        pg_bin = postgres.bin_dir()
        seeded_s = time.monotonic() - t0
        t0 = time.monotonic()
        backup = take_backup(target, workdir / "backups", pg_bin, "pre_migration")
        backup_s = time.monotonic() - t0
        print(f"seeded {seed.users} users ({seeded_s:.0f} s); backup {backup.size_bytes / 1e6:.0f} MB "
              f"({backup_s:.1f} s)", flush=True)

        def backend_for(t):
            return LedgerBackend(t, plan.path(m.migrations_dir), lock_timeout_s=m.lock_timeout_s)

        result = rehearse(plan, target, backup, pg_bin, run_id="bench", backend_for=backend_for)
        print(result.text, flush=True)

        backend_for(target).deploy()
        real = restore_columns(target, backup, pg_bin, down_sql=plan.path(m.down_sql), table=m.table,
                               columns=tuple(m.dropped_columns), key=m.key, lock_timeout_s=m.lock_timeout_s)
    finally:
        server.stop()

    print(f"\n{args.users} users, database {result.database_bytes / 2**20:.0f} MiB, one server on this machine")
    print(f"{'step':32} {'seconds':>8}")
    for name in ("restore", "migrate", "validate", "rollback", "verify", "total"):
        print(f"{'rehearsal ' + name:32} {getattr(result, name + '_s'):>8.1f}")
    print(f"{'real rollback (restore_columns)':32} {real.duration_s:>8.1f}")
    rehearsed = result.rollback_s + result.verify_s
    print(f"rehearsal rollback+verify / real rollback: {rehearsed / real.duration_s:.2f}")
    print(f"rehearsal total / backup: {result.total_s / backup_s:.2f}")
    assert result.mismatches == 0 and real.mismatches == 0
    assert result.values_restored == real.values_restored, (result.values_restored, real.values_restored)
    return 0


if __name__ == "__main__":
    sys.exit(main())
