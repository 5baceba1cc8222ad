"""The rollback at scale: the project's ``restore_columns`` against the naive path.

Issue 14 item 4. Seeds an embedded PostgreSQL with ``--users`` users
(``demo.seed.create_staging``), backs ``users`` up (``take_backup``), deploys the column
drop and keeps that database as a template. Each variant then runs on its own fresh copy
(``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY``: the same rows in the same
pages, the same indexes, nothing left over from the variant before):

* ``naive``: what the runbook's script would do: stream the table's rows out of the dump
  (``pg_restore --data-only --table=users -f -``) into a typed table of a scratch schema,
  index its key, then one transaction: the down SQL and ``UPDATE users ... FROM scratch``
  joined on the key (ACCESS EXCLUSIVE on users for the whole ``UPDATE``);
* ``project``: the working tree's ``rollback.restore_columns`` (stage, a short DDL
  transaction, the batched copy under row locks, verify);
* ``project-<option>=<value>``: the same with a keyword of ``restore_columns`` changed,
  e.g. ``project-batch_size=100000`` (``--variants``);
* ``project@<ref>``: ``restore_columns`` as of a git ref (``git show``, resolved once at
  the start), e.g. ``project@main``; ``project@14a35aa`` is the physical-order sweep that
  was measured and not kept (bench/README.md);
* ``rebuild``: the project's ``rebuild.rebuild_columns`` (the plan's
  ``migration.rollback_method: rebuild``): refusals, stage, re-add, a capture trigger, the
  new table in one ``INSERT ... SELECT``, its indexes, catch-up rounds, the swap under
  ``lock_timeout``, foreign keys validated after, verify (``ddl_s`` is the swap);
  ``rebuild-<option>=<value>`` with a keyword changed, as for ``project``;
* ``rebuild-experiment``: the experiment that preceded it, not the project's code: a
  rebuild-and-swap without the capture of concurrent writes, grants or refusals
  (``rebuild_restore``; bench/README.md's 5.98x at 2 M users was measured with it);
* ``proto-order=key|ctid,batch=N,sync=on|off,walc=pglz``: an experiment, not the
  project's code: plain ``UPDATE ... FROM`` batches without row locks or checks, in key
  or physical (``ctid`` page range) order, with transaction-local ``synchronous_commit``
  and ``wal_compression``.

During each restore ``bench/rollback_lock.py``'s sampler polls ``pg_locks`` every 10 ms
for a granted AccessExclusiveLock on users and its application probe reads one user every
20 ms. Measured per variant: wall time, its split (stage, DDL + copy, verify), the longest
ACCESS EXCLUSIVE hold, the slowest application read, WAL written (``pg_current_wal_lsn``
before and after), checkpoints requested/timed (``pg_stat_checkpointer``) and, after the
restore, every restored value compared with the backup's by an independent query against a
typed copy of the dump kept in the template (``mismatches`` must be 0).

Not a test: it prints the figures and the ratios to ``naive`` and asserts only that every
value matched.

    .venv/bin/python bench/rollback_scale.py                     # 2 000 000 users (~12 minutes)
    .venv/bin/python bench/rollback_scale.py --users 200000      # quicker (~1.5 minutes)
    .venv/bin/python bench/rollback_scale.py --variants naive project project-batch_size=100000
    .venv/bin/python bench/rollback_scale.py --variants naive project rebuild
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from psycopg2 import sql  # noqa: E402

from bench.rollback_lock import DOWN_SQL, DROP, MIGRATIONS, App, Sampler, load_before  # noqa: E402
from demo import postgres  # noqa: E402
from demo.seed import create_staging  # noqa: E402
from migration_soak import archive, rebuild, rollback  # noqa: E402
from migration_soak.backup import take_backup  # noqa: E402
from migration_soak.migrate import LedgerBackend  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402

TEMPLATE = "bench_template"
COLUMNS = ("passwordHash", "emailVerified")
#: The dropped columns' types (the init migration), for the typed copies of the dump.
DROPPED_TYPES = {"passwordHash": "text", "emailVerified": "boolean"}
TRUTH = "bench_truth"  # schema of the template's typed copy of the dump (the independent check)
NAIVE = "naive_rollback"


def run(target: PgTarget, text, params=None, *, autocommit: bool = True):
    conn = target.connect(application_name="bench-rollback-scale")
    conn.autocommit = autocommit
    try:
        with conn.cursor() as cur:
            cur.execute(text, params)
            out = cur.fetchall() if cur.description else None
        if not autocommit:
            conn.commit()
        return out
    finally:
        conn.close()


def load_typed_copy(conn, dump: Path, schema: str) -> int:
    """``schema.users``: the dump's users rows, typed as before the drop (the current
    table's columns plus the dropped ones), indexed on id. Returns the rows loaded."""
    argv = rollback._data_argv(postgres.bin_dir() / "pg_restore", "public", "users")
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("CREATE TABLE {}.users (LIKE public.users)").format(sql.Identifier(schema)))
        for name, typ in DROPPED_TYPES.items():
            cur.execute(sql.SQL("ALTER TABLE {}.users ADD COLUMN {} {}").format(
                sql.Identifier(schema), sql.Identifier(name), sql.SQL(typ)))
        with archive.restoring(argv, dump, stdout=__import__("subprocess").PIPE) as proc:
            encoding, header = rollback._read_header(proc.stdout, "public.users")
            _, cols = rollback.parse_copy_header(header)
            body = rollback.CopyBody(proc.stdout)
            copy = sql.SQL("COPY {}.users ({}) FROM STDIN").format(
                sql.Identifier(schema), sql.SQL(", ").join(sql.Identifier(c) for c in cols))
            cur.copy_expert(copy.as_string(conn), body)
            proc.stdout.close()
        cur.execute(sql.SQL("CREATE INDEX ON {}.users (id)").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("ANALYZE {}.users").format(sql.Identifier(schema)))
    conn.commit()
    return body.rows


def naive_restore(target: PgTarget, backup, pg_bin, *, down_sql, **_ignored) -> dict:
    """The runbook's path: the dump's table into a scratch schema, then one ``UPDATE ... FROM``."""
    down = Path(down_sql).read_text()
    conn = target.connect(application_name="bench-naive")
    try:
        t0 = time.monotonic()
        staged = load_typed_copy(conn, backup.path, NAIVE)
        t1 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '3s'")
            cur.execute(down)
            cur.execute(
                sql.SQL('UPDATE public.users u SET "passwordHash" = b."passwordHash", '
                        '"emailVerified" = b."emailVerified" FROM {}.users b WHERE u.id = b.id').format(
                    sql.Identifier(NAIVE)))
            updated = cur.rowcount
        conn.commit()
        t2 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(sql.SQL('SELECT count(*) FROM public.users u JOIN {}.users b ON u.id = b.id '
                                'WHERE u."passwordHash" IS DISTINCT FROM b."passwordHash" '
                                'OR u."emailVerified" IS DISTINCT FROM b."emailVerified"').format(
                sql.Identifier(NAIVE)))
            mismatches = cur.fetchone()[0]
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(NAIVE)))
        conn.commit()
        t3 = time.monotonic()
    finally:
        conn.close()
    return {"stage_s": t1 - t0, "ddl_s": t2 - t1, "copy_s": t2 - t1, "verify_s": t3 - t2, "batches": 1,
            "rows_updated": updated, "values_restored": 2 * updated, "mismatches": mismatches, "staged": staged}


def project_restore(module=rollback, function: str = "restore_columns", **options):
    """``module.<function>`` (``rollback.restore_columns``, ``rebuild.rebuild_columns``) with
    ``options`` added to its keywords."""
    def restore(target, backup, pg_bin, **kwargs) -> dict:
        result = getattr(module, function)(target, backup, pg_bin, **kwargs, **options)
        return {"stage_s": result.stage_s, "ddl_s": result.ddl_s, "copy_s": result.copy_s,
                "verify_s": result.verify_s, "batches": result.batches, "rows_updated": result.rows_updated,
                "values_restored": result.values_restored, "mismatches": result.mismatches,
                "swap_s": getattr(result, "swap_s", 0.0)}  # project@<ref>: older RestoreResults lack it
    return restore


def proto_restore(order: str = "key", batch: int = 20_000, sync: str = "on", walc: str = "", **_o):
    """An experiment, not the project's code: the staged typed copy, the down SQL, then plain
    ``UPDATE ... FROM`` batches in key order (ranges of the copy's key) or in physical order
    (page ranges of users, ``ctid``), with transaction-local ``synchronous_commit`` and
    ``wal_compression``; no row locks, no per-batch check."""

    def restore(target, backup, pg_bin, *, down_sql, **_ignored) -> dict:
        conn = target.connect(application_name="bench-proto")
        schema = sql.Identifier(NAIVE)
        try:
            t0 = time.monotonic()
            staged = load_typed_copy(conn, backup.path, NAIVE)
            t1 = time.monotonic()
            with conn.cursor() as cur:
                cur.execute("SET LOCAL lock_timeout = '3s'")
                cur.execute(Path(down_sql).read_text())
            conn.commit()
            ddl = time.monotonic() - t1
            setting = ("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
                       "SET LOCAL synchronous_commit = " + sync) + (f"; SET LOCAL wal_compression = {walc}" if walc else "")
            update = ('UPDATE public.users u SET "passwordHash" = b."passwordHash", "emailVerified" = b."emailVerified" '
                      "FROM {s}.users b WHERE u.id = b.id AND ")
            batches = updated = 0
            if order == "key":
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM {}.users) x "
                                        "WHERE n %% %s = 0 ORDER BY id").format(schema), (batch,))
                    bounds = [r[0] for r in cur.fetchall()]
                conn.commit()
                edges = [None, *bounds, None]
                for lo, hi in zip(edges, edges[1:]):
                    cond = " AND ".join(c for c in ("b.id > %(lo)s" if lo is not None else "",
                                                    "b.id <= %(hi)s" if hi is not None else "") if c) or "true"
                    with conn.cursor() as cur:
                        cur.execute(setting)
                        cur.execute(sql.SQL(update + cond).format(s=schema), {"lo": lo, "hi": hi})
                        updated += cur.rowcount
                    conn.commit()
                    batches += 1
            else:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_relation_size('public.users') / current_setting('block_size')::int, "
                                "reltuples / greatest(relpages, 1) FROM pg_class WHERE oid = 'public.users'::regclass")
                    pages, per_page = cur.fetchone()
                conn.commit()
                step = max(1, int(batch / max(per_page, 1)))
                for p in range(0, int(pages), step):
                    with conn.cursor() as cur:
                        cur.execute(setting)
                        cur.execute(sql.SQL(update + "u.ctid >= %(lo)s::tid AND u.ctid < %(hi)s::tid").format(s=schema),
                                    {"lo": f"({p},0)", "hi": f"({p + step},0)"})
                        updated += cur.rowcount
                    conn.commit()
                    batches += 1
            t2 = time.monotonic()
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
            conn.commit()
            t3 = time.monotonic()
        finally:
            conn.close()
        return {"stage_s": t1 - t0, "ddl_s": ddl, "copy_s": t2 - t1, "verify_s": t3 - t2, "batches": batches,
                "rows_updated": updated, "values_restored": 2 * updated, "mismatches": 0, "staged": staged}

    return restore


REBUILT = "users_rebuilt"


def rebuild_restore(target: PgTarget, backup, pg_bin, *, down_sql, lock_timeout_s: float = 3.0, **_ignored) -> dict:
    """Variant ``rebuild-experiment``, kept to reproduce the figure it gave; the project's
    code is ``rebuild.rebuild_columns`` (variant ``rebuild``). An experiment: the cost of a
    rebuild-and-swap (what issue 14 item 4 names for the 3x goal), without the capture of
    concurrent writes that a real one needs (the application here only reads). The staged typed copy and the down SQL as
    ``naive``, then: ``users_rebuilt`` built in one pass (``INSERT ... SELECT`` of users
    left-joined to the copy: every row written once, sequentially), its indexes built by
    sorting (the definitions of users' own), then one short transaction under
    ``lock_timeout`` that swaps the names (indexes too), re-points the foreign key
    ``execution_logs_userId_fkey`` (``NOT VALID``; validated after, outside the lock) and
    drops the old table. Reports the swap transaction's time as ``ddl_s``."""
    conn = target.connect(application_name="bench-rebuild")
    schema = sql.Identifier(NAIVE)
    try:
        t0 = time.monotonic()
        staged = load_typed_copy(conn, backup.path, NAIVE)
        t1 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{lock_timeout_s}s'")
            cur.execute(Path(down_sql).read_text())
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
                        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")
            cols = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisprimary "
                        "FROM pg_index WHERE indrelid = 'public.users'::regclass")
            indexes = cur.fetchall()
            cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = 'public.execution_logs'::regclass AND confrelid = 'public.users'::regclass")
            fks = cur.fetchall()
            cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = 'public.users'::regclass AND contype = 'f'")
            own_fks = cur.fetchall()
            cur.execute(sql.SQL("CREATE TABLE public.{} (LIKE public.users INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                        .format(sql.Identifier(REBUILT)))
            restored = set(COLUMNS)
            select = sql.SQL(", ").join(
                sql.SQL("b.{}").format(sql.Identifier(c)) if c in restored else sql.SQL("u.{}").format(sql.Identifier(c))
                for c in cols)
            cur.execute(sql.SQL("INSERT INTO public.{} ({}) SELECT {} FROM public.users u LEFT JOIN {}.users b "
                                "ON b.id = u.id").format(sql.Identifier(REBUILT),
                                                         sql.SQL(", ").join(map(sql.Identifier, cols)), select, schema))
            updated = cur.rowcount
        conn.commit()
        built = []
        with conn.cursor() as cur:
            for name, definition, primary in indexes:
                new = f"{name.strip(chr(34))}_rebuilt"
                cur.execute(definition.replace(f"INDEX {name} ON public.users ", f'INDEX "{new}" ON public.{REBUILT} '))
                built.append((name.strip('"'), new, primary))
        conn.commit()
        t2 = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(f"SET LOCAL lock_timeout = '{lock_timeout_s}s'")
            cur.execute("LOCK TABLE public.users, public.execution_logs IN ACCESS EXCLUSIVE MODE")
            for conname, _ in fks:
                cur.execute(sql.SQL("ALTER TABLE public.execution_logs DROP CONSTRAINT {}").format(sql.Identifier(conname)))
            cur.execute("ALTER TABLE public.users RENAME TO users_old")
            for old, _, primary in built:
                cur.execute(sql.SQL("ALTER INDEX public.{} RENAME TO {}").format(
                    sql.Identifier(old), sql.Identifier(old + "_old")))
            cur.execute(sql.SQL("ALTER TABLE public.{} RENAME TO users").format(sql.Identifier(REBUILT)))
            for old, new, primary in built:
                if primary:
                    cur.execute(sql.SQL("ALTER TABLE public.users ADD CONSTRAINT {} PRIMARY KEY USING INDEX {}").format(
                        sql.Identifier(old), sql.Identifier(new)))
                else:
                    cur.execute(sql.SQL("ALTER INDEX public.{} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(old)))
            for conname, definition in own_fks:
                cur.execute(sql.SQL("ALTER TABLE public.users ADD CONSTRAINT {} " + definition + " NOT VALID").format(
                    sql.Identifier(conname)))
            for conname, definition in fks:
                cur.execute(sql.SQL("ALTER TABLE public.execution_logs ADD CONSTRAINT {} " + definition + " NOT VALID")
                            .format(sql.Identifier(conname)))
            cur.execute("DROP TABLE public.users_old")
        conn.commit()
        t3 = time.monotonic()
        with conn.cursor() as cur:
            for conname, _ in fks:
                cur.execute(sql.SQL("ALTER TABLE public.execution_logs VALIDATE CONSTRAINT {}").format(sql.Identifier(conname)))
            for conname, _ in own_fks:
                cur.execute(sql.SQL("ALTER TABLE public.users VALIDATE CONSTRAINT {}").format(sql.Identifier(conname)))
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
        conn.commit()
        t4 = time.monotonic()
    finally:
        conn.close()
    return {"stage_s": t1 - t0, "ddl_s": t3 - t2, "copy_s": t3 - t1, "verify_s": t4 - t3, "batches": 1,
            "rows_updated": updated, "values_restored": 2 * updated, "mismatches": 0, "staged": staged,
            "build_s": t2 - t1, "swap_s": t3 - t2, "validate_s": t4 - t3}


def _options(text: str) -> dict:
    options = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def variant(name: str):
    if name == "naive":
        return naive_restore
    if name == "rebuild-experiment":
        return rebuild_restore
    if name == "rebuild":
        return project_restore(rebuild, "rebuild_columns")
    if name.startswith("rebuild-"):
        return project_restore(rebuild, "rebuild_columns", **_options(name[len("rebuild-"):]))
    if name.startswith("proto"):
        return proto_restore(**_options(name[len("proto-"):])) if name != "proto" else proto_restore()
    if name == "project":
        return project_restore()
    if name.startswith("project@"):  # restore_columns as of a git ref, e.g. project@main
        return project_restore(load_before(name[len("project@"):]))
    if name.startswith("project-"):
        return project_restore(**_options(name[len("project-"):]))
    raise SystemExit(f"unknown variant {name!r}")


def wal_lsn(target: PgTarget):
    return run(target, "SELECT pg_current_wal_lsn()")[0][0]


def checkpoints(target: PgTarget) -> tuple[int, int]:
    row = run(target, "SELECT num_requested, num_timed FROM pg_stat_checkpointer")[0]
    return int(row[0]), int(row[1])


def measure(name: str, restore, server, admin: PgTarget, relid: int, ids, interval_s: float) -> dict:
    db = "bench_run"
    run(admin, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
    t0 = time.monotonic()
    run(admin, sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
        sql.Identifier(db), sql.Identifier(TEMPLATE)))
    copy_db_s = time.monotonic() - t0
    target = PgTarget(server.host, server.port, db, postgres.SUPERUSER, server.password)
    run(target, "CHECKPOINT")  # each variant starts right after a checkpoint
    backup = measure.backup  # type: ignore[attr-defined]
    sampler, app = Sampler(target, relid, interval_s), App(target, ids)
    sampler.start()
    app.start()
    lsn0, cp0 = wal_lsn(target), checkpoints(target)
    t0 = time.monotonic()
    try:
        out = restore(target, backup, postgres.bin_dir(), down_sql=DOWN_SQL, table="users", columns=COLUMNS,
                      key="id", lock_timeout_s=3.0)
    finally:
        wall = time.monotonic() - t0
        time.sleep(0.1)
        sampler.stop.set()
        app.stop.set()
        sampler.join(10)
        app.join(10)
    lsn1, cp1 = wal_lsn(target), checkpoints(target)
    wal = run(target, "SELECT pg_wal_lsn_diff(%s, %s)", (lsn1, lsn0))[0][0]
    # Independent check: every value of every row present at backup time equals the dump's.
    checked, wrong = run(target, sql.SQL(
        'SELECT count(*), count(*) FILTER (WHERE u."passwordHash" IS DISTINCT FROM b."passwordHash" '
        'OR u."emailVerified" IS DISTINCT FROM b."emailVerified") '
        "FROM public.users u JOIN {}.users b ON u.id = b.id").format(sql.Identifier(TRUTH)))[0]
    run(admin, sql.SQL("DROP DATABASE {}").format(sql.Identifier(db)))
    low, high = sampler.longest
    out.update({
        "variant": name, "total_s": wall, "ae_low_ms": low * 1000, "ae_high_ms": high * 1000,
        "ae_runs": len(sampler.runs), "app_reads": app.reads, "app_slowest_ms": app.slowest * 1000,
        "wal_bytes": int(wal), "checkpoints": (cp1[0] - cp0[0], cp1[1] - cp0[1]),
        "checked_rows": checked, "wrong_values_rows": wrong, "copy_db_s": copy_db_s,
    })
    print(json.dumps(out), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--variants", nargs="+", default=["naive", "project", "rebuild"],
                        help="naive, project, project-<kw>=<value>[,<kw>=<value>] (restore_columns keywords), rebuild "
                             "(rebuild_columns), rebuild-<kw>=<value>, rebuild-experiment, proto-...")
    parser.add_argument("--sample-ms", type=float, default=10.0)
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    # Built once, before anything runs: project@HEAD is the code as it was at the start.
    restorers = {name: variant(name) for name in args.variants}

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-rollback-scale-"))
    server = postgres.start(workdir / "pgdata")
    rows = []
    try:
        t0 = time.monotonic()
        seed = create_staging(server, TEMPLATE, users=args.users)
        target = PgTarget(server.host, server.port, TEMPLATE, postgres.SUPERUSER, server.password)
        admin = PgTarget(server.host, server.port, "postgres", postgres.SUPERUSER, server.password)
        backup = take_backup(target, workdir / "backups", postgres.bin_dir(), "pre_migration", tables=["users"])
        measure.backup = backup  # type: ignore[attr-defined]
        LedgerBackend(target, MIGRATIONS).deploy()
        conn = target.connect()
        try:
            truth_rows = load_typed_copy(conn, backup.path, TRUTH)
        finally:
            conn.close()
        run(target, "VACUUM ANALYZE")
        relid = run(target, "SELECT 'public.users'::regclass::oid")[0][0]
        ids = [r[0] for r in run(target, "SELECT id FROM users ORDER BY random() LIMIT 1000")]
        size = run(target, "SELECT pg_total_relation_size('public.users')")[0][0]
        print(f"seeded {seed.users} users (users {size / 2**20:.0f} MiB with indexes), backup "
              f"{backup.size_bytes / 1e6:.0f} MB ({truth_rows} rows), migration {DROP} deployed "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        for name in args.variants:
            rows.append(measure(name, restorers[name], server, admin, relid, ids, args.sample_ms / 1000))
    finally:
        server.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))

    base = next((r for r in rows if r["variant"] == "naive"), rows[0])
    print(f"\n{args.users} users; pg_locks sampled every {args.sample_ms:g} ms, an app read every 20 ms; "
          f"ratios: naive's time / the variant's (higher is faster)")
    print(f"{'variant':34} {'total s':>8} {'stage':>6} {'DDL+copy':>9} {'verify':>7} {'batches':>7} "
          f"{'longest AE ms':>14} {'slowest read ms':>15} {'WAL GiB':>8} {'ckpt':>6} {'wrong':>6} {'speed-up':>8}")
    for r in rows:
        ae = f"{r['ae_low_ms']:.0f}..{r['ae_high_ms']:.0f}"
        print(f"{r['variant']:34} {r['total_s']:8.1f} {r['stage_s']:6.1f} {r['copy_s']:9.1f} {r['verify_s']:7.1f} "
              f"{r['batches']:7} {ae:>14} {r['app_slowest_ms']:15.0f} "
              f"{r['wal_bytes'] / 2**30:8.2f} {sum(r['checkpoints']):6} {r['wrong_values_rows']:6} "
              f"{base['total_s'] / r['total_s']:8.2f}")
    for r in rows:
        assert r["wrong_values_rows"] == 0 and r["mismatches"] == 0, r
    return 0


if __name__ == "__main__":
    sys.exit(main())
