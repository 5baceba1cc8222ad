"""Lock safety on a live database (issue 9, items 2-3): DDL retried after lock timeouts,
the rollback's ACCESS EXCLUSIVE only for the metadata change, and nothing left on a
pooled server connection (PgBouncer in transaction mode, one server connection).

The application's traffic goes through the real PgBouncer (``pgbouncer`` fixture); the
soak's DDL, copy and ledger go through a direct connection, as ``connections.staging_direct``
does in a plan."""

from __future__ import annotations

import threading
import time

import pytest

from migration_soak import rollback
from migration_soak.backup import take_backup
from migration_soak.exceptions import MigrationError
from migration_soak.migrate import PRISMA_ADVISORY_LOCK_KEY, LedgerBackend, verify_applied
from migration_soak.rollback import ROLLBACK_LOCK, restore_columns

from .conftest import DOWN_SQL, DROP, INIT, MIGRATIONS, SEED_USERS, USERS_COLUMNS, query, seed_users, snapshot
from .test_rollback import migrated  # noqa: F401  (fixture)

DROPPED = ("passwordHash", "emailVerified")


def _ledger(target):
    return query(target, "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NULL, logs, "
                         "applied_steps_count FROM _prisma_migrations ORDER BY started_at, migration_name")


def _hold_access_share(target):
    """An application transaction that read users and stays open (ACCESS SHARE)."""
    conn = target.connect(application_name="app-long-report")
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM users")
    return conn


class AppReader(threading.Thread):
    """The application: point reads on users in a loop through ``target``; records how
    long each one took."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self):
        try:
            conn = self.target.connect(application_name="app")
            conn.autocommit = True
            try:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    t0 = time.monotonic()
                    with conn.cursor() as cur:
                        cur.execute("SELECT email FROM users WHERE id = %s", (f"usr_{n % SEED_USERS + 1:07d}",))
                        cur.fetchall()
                    self.latencies.append(time.monotonic() - t0)
                    time.sleep(0.02)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


class LockSampler(threading.Thread):
    """Samples ``pg_locks`` on one table every ~5 ms from a connection of its own;
    ``samples`` holds ``(phase, {lock modes granted on the table})``."""

    def __init__(self, target, table="public.users", phase=None):
        super().__init__(daemon=True)
        self.target, self.table = target, table
        self.phase = phase if phase is not None else {"name": "-"}
        self.stop = threading.Event()
        self.samples: list[tuple[str, frozenset]] = []

    def run(self):
        conn = self.target.connect(application_name="lock-sampler")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    phase = self.phase["name"]
                    cur.execute("SELECT mode FROM pg_locks WHERE locktype = 'relation' AND granted "
                                "AND relation = to_regclass(%s) AND pid <> pg_backend_pid()", (self.table,))
                    self.samples.append((phase, frozenset(r[0] for r in cur.fetchall())))
                    time.sleep(0.005)
        finally:
            conn.close()


# ------------------------------------------------------------------- (a) lock queue


@pytest.mark.timeout(120)
def test_rollback_retries_behind_a_long_reader_and_the_app_never_waits_longer_than_lock_timeout(
        migrated, pg_bin, pgbouncer):  # noqa: F811
    """A session holds ACCESS SHARE on users for 8 s (a long report, an incremental
    pg_dump). The rollback's down SQL times out after 3 s, backs off, retries, and
    completes; meanwhile the application's reads through the pooler queue behind the
    waiting ALTER for at most one lock_timeout at a time."""
    target, backup, _, before, _ = migrated
    lock_timeout_s, hold_s = 3.0, 8.0
    app = AppReader(pgbouncer.target(target.database))
    app.start()
    holder = _hold_access_share(target)
    release = threading.Timer(hold_s, holder.rollback)
    try:
        time.sleep(0.3)
        release.start()
        started = time.monotonic()
        result = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS,
                                 lock_timeout_s=lock_timeout_s, lock_retries=5)
        elapsed = time.monotonic() - started
    finally:
        release.cancel()
        app.stop.set()
        app.join(10)
        holder.close()
    assert app.error is None, app.error
    worst = max(app.latencies)
    ddl = [a for a in result.lock_attempts if a.step == "down_sql"]
    print(f"\nrestore {elapsed:.2f} s; down SQL tries: "
          + ", ".join(f"{a.outcome} {a.elapsed_s:.2f} s (+{a.backoff_s:g} s)" for a in ddl)
          + f"; app: {len(app.latencies)} reads through PgBouncer, slowest {worst:.3f} s")

    assert result.mismatches == 0 and result.rows_updated == SEED_USERS - 3
    assert [a.outcome for a in ddl][-1] == "ok" and 2 <= len(ddl) <= 4
    timeouts = [a for a in ddl if a.outcome == "lock_timeout"]
    assert timeouts and all(lock_timeout_s - 0.1 <= a.elapsed_s < lock_timeout_s + 1.0 for a in timeouts)
    assert [a.backoff_s for a in timeouts] == [0.5, 1.0, 2.0][:len(timeouts)]
    assert result.ddl_s < lock_timeout_s + 0.5
    assert len(app.latencies) > 50
    assert worst >= 1.0  # the reads did queue behind the waiting ALTER ...
    assert worst < lock_timeout_s + 0.75  # ... but never longer than one lock_timeout
    after = snapshot(target)
    assert all(after[k] == v for k, v in before.items() if k in after)


# -------------------------------------------------------- (b) forward deploy retried


@pytest.mark.timeout(60)
def test_deploy_retries_a_lock_timeout_and_the_ledger_reads_as_a_clean_deploy(seeded):
    holder = _hold_access_share(seeded)
    slept: list[float] = []

    def backoff(seconds):  # the application's long transaction ends during the backoff
        slept.append(seconds)
        holder.rollback()
        time.sleep(seconds)

    try:
        backend = LedgerBackend(seeded, MIGRATIONS, lock_timeout_s=0.5, lock_retries=3, _sleep=backoff)
        result = backend.deploy()
    finally:
        holder.close()
    assert result.applied == (DROP,) and result.already_applied == (INIT,)
    assert [(a.step, a.attempt, a.outcome) for a in result.attempts] == [(DROP, 1, "lock_timeout"), (DROP, 2, "ok")]
    assert 0.45 <= result.attempts[0].elapsed_s < 1.5 and result.attempts[0].backoff_s == slept[0] == 0.5
    assert "55P03" in result.attempts[0].error or "lock timeout" in result.attempts[0].error
    assert result.lock_retries == 1 and result.to_dict()["attempts"][1]["outcome"] == "ok"
    # Exactly what a clean deploy leaves: one finished row per migration, steps 1, no logs.
    assert _ledger(seeded) == [(INIT, True, True, None, 1), (DROP, True, True, None, 1)]
    assert {s.name: s.state for s in backend.status()} == {INIT: "applied", DROP: "applied"}
    verify_applied(seeded, DROP, "users", DROPPED)


@pytest.mark.timeout(60)
def test_deploy_that_exhausts_its_lock_retries_leaves_the_row_failed(seeded):
    holder = _hold_access_share(seeded)
    slept: list[float] = []
    try:
        backend = LedgerBackend(seeded, MIGRATIONS, lock_timeout_s=0.3, lock_retries=2, _sleep=slept.append)
        with pytest.raises(MigrationError) as err:
            backend.deploy()
    finally:
        holder.rollback()
        holder.close()
    text = str(err.value)
    assert text.startswith(f"P3018: migration {DROP} failed") and "55P03" in text
    assert "Lock attempts (lock_timeout 0.3 s, lock_retries 2): 3 attempts: 1 lock timeout after 0.3" in text
    assert [a["outcome"] for a in err.value.lock_attempts] == ["lock_timeout"] * 3
    assert slept == [0.5, 1.0] and [a["backoff_s"] for a in err.value.lock_attempts] == [0.5, 1.0, 0.0]
    (row,) = [r for r in _ledger(seeded) if r[0] == DROP]
    assert row[1:3] == (False, True) and row[4] == 0 and "55P03" in row[3]  # failed, as today
    with pytest.raises(MigrationError, match="P3009"):
        backend.deploy()
    assert set(DROPPED) <= {r[0] for r in query(seeded, "SELECT column_name FROM information_schema.columns "
                                                        "WHERE table_name = 'users'")}


# ------------------------------------------------------ (c) nothing left on the pool


def _pooled_state(pooled):
    conn = pooled.connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW lock_timeout")
            lock_timeout = cur.fetchone()[0]
            cur.execute("SHOW search_path")
            search_path = cur.fetchone()[0]
            cur.execute("SHOW statement_timeout")
            statement_timeout = cur.fetchone()[0]
            cur.execute("""SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""")
            advisory = cur.fetchone()[0]
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            # The copy batches' own SET LOCALs (rollback._BATCH_SETTINGS).
            cur.execute("""SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin'),
                                  current_setting('synchronous_commit')""")
            batch_settings = cur.fetchone()
    finally:
        conn.close()
    return {"lock_timeout": lock_timeout, "search_path": search_path, "statement_timeout": statement_timeout,
            "advisory_locks": advisory, "server_pid": pid, "batch_settings": batch_settings}


CLEAN = {"lock_timeout": "0", "search_path": '"$user", public', "statement_timeout": "0", "advisory_locks": 0,
         "batch_settings": ("on", "on", "on")}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("route", ["direct", "pooled"])
def test_deploy_and_rollback_leave_nothing_on_a_pooled_server_connection(seeded, pg_bin, pgbouncer, tmp_path,
                                                                         route):
    """Deploy, rollback and ledger through the direct connection (``direct``, what a plan
    does) or even through the pooler itself (``pooled``: PgBouncer in transaction mode
    with one server connection, so the next pooled client gets the very server
    connection the soak used): the next pooled client sees no setting of ours and no
    advisory lock."""
    pooled = pgbouncer.target(seeded.database)
    soak = seeded if route == "direct" else pooled
    first = _pooled_state(pooled)
    assert {k: v for k, v in first.items() if k != "server_pid"} == CLEAN
    backup = take_backup(seeded, tmp_path / "backups", pg_bin, "pre_migration")

    backend = LedgerBackend(soak, MIGRATIONS, lock_timeout_s=3)
    assert backend.deploy().applied == (DROP,)
    after_deploy = _pooled_state(pooled)
    result = restore_columns(soak, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS, lock_timeout_s=3, batch_size=1000)
    assert result.mismatches == 0 and result.batches == 5
    assert backend.mark_rolled_back(DROP) == 1
    after_rollback = _pooled_state(pooled)

    for state in (after_deploy, after_rollback):
        assert {k: v for k, v in state.items() if k != "server_pid"} == CLEAN
        assert state["server_pid"] == first["server_pid"]  # the same server connection every time
    assert query(seeded, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid IN (%s, %s)",
                 (PRISMA_ADVISORY_LOCK_KEY, ROLLBACK_LOCK[1])) == [(0,)]


# ------------------------------------------------- (d) no ACCESS EXCLUSIVE while copying


class AppWriter(threading.Thread):
    """The rolled-back application changing password hashes while the copy runs (only
    while ``phase`` is ``copy``): ``written`` maps user id -> the value it wrote."""

    def __init__(self, target, phase):
        super().__init__(daemon=True)
        self.target, self.phase = target, phase
        self.stop = threading.Event()
        self.written: dict[str, str] = {}
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        # Held for each write, phase check included: whoever ends the copy phase takes it
        # once to know that no write is in flight (none commits after the copy).
        self.writing = threading.Lock()

    def run(self):
        try:
            conn = self.target.connect(application_name="app-writer")
            conn.autocommit = True
            try:
                n = 0
                while not self.stop.is_set():
                    with self.writing:
                        copying = self.phase["name"] == "copy"
                        if copying:
                            n += 1
                            user_id = f"usr_{(n * 7919) % 190_000 + 10_001:07d}"  # spread over the key range
                            value = f"app-{n}"
                            t0 = time.monotonic()
                            with conn.cursor() as cur:
                                cur.execute('UPDATE users SET "passwordHash" = %s WHERE id = %s', (value, user_id))
                            self.latencies.append(time.monotonic() - t0)
                            self.written[user_id] = value
                    time.sleep(0.01 if copying else 0.005)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.mark.timeout(300)
def test_the_batched_copy_never_holds_access_exclusive(seeded, pg_bin, tmp_path, monkeypatch):
    """200 000 users copied in batches of 5000 while ``pg_locks`` is sampled every ~5 ms:
    no sample taken during the copy shows ACCESS EXCLUSIVE on users. Meanwhile the
    rolled-back application writes password hashes: its writes wait for one batch at
    most, and none of its values is overwritten by the backup's."""
    total = 200_000
    seed_users(seeded, SEED_USERS + 1, total)
    before = snapshot(seeded)
    backup = take_backup(seeded, tmp_path / "backups", pg_bin, "pre_migration")
    LedgerBackend(seeded, MIGRATIONS).deploy()

    phase = {"name": "stage"}
    real_copy, real_readd = rollback._copy, rollback._readd

    def readd(*args, **kwargs):
        phase["name"] = "ddl"
        try:
            return real_readd(*args, **kwargs)
        finally:
            phase["name"] = "between"

    def copy(*args, **kwargs):
        phase["name"] = "copy"
        try:
            return real_copy(*args, **kwargs)
        finally:
            phase["name"] = "verify"
            with writer.writing:  # a write begun during the copy has committed: none after it
                pass

    monkeypatch.setattr(rollback, "_readd", readd)
    monkeypatch.setattr(rollback, "_copy", copy)
    sampler = LockSampler(seeded, phase=phase)
    writer = AppWriter(seeded, phase)
    sampler.start()
    writer.start()
    try:
        result = restore_columns(seeded, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS, batch_size=5000)
    finally:
        sampler.stop.set()
        writer.stop.set()
        sampler.join(10)
        writer.join(10)
    assert writer.error is None, writer.error
    copying = [modes for name, modes in sampler.samples if name == "copy"]
    print(f"\n{total} users, {result.batches} batches: copy {result.copy_s:.2f} s, {len(copying)} samples; "
          f"ddl {result.ddl_s * 1000:.1f} ms; app wrote {len(writer.written)} users meanwhile, slowest write "
          f"{max(writer.latencies, default=0) * 1000:.0f} ms")
    assert result.batches == total // 5000 and result.mismatches == 0
    assert len(writer.written) >= 10 and result.values_kept == len(writer.written)
    assert result.rows_updated <= total
    assert len(copying) >= 20
    assert not any("AccessExclusiveLock" in modes for modes in copying)
    assert sum("RowExclusiveLock" in modes for modes in copying) >= len(copying) // 4  # the batches were seen
    after = snapshot(seeded)
    for user_id, value in writer.written.items():
        assert after[user_id][0] == value.encode()  # the application's write won
    assert {k: v for k, v in after.items() if k not in writer.written} == \
        {k: v for k, v in before.items() if k not in writer.written}


# --------------------------------------------- a crash in the middle of the copy, rerun


@pytest.mark.timeout(120)
def test_a_rerun_after_a_crash_mid_copy_finishes_and_keeps_values_written_since(
        migrated, pg_bin, monkeypatch):  # noqa: F811
    """The worker dies after 2 of 5 batches (its scratch schema stays behind). The
    rolled-back application is already writing the re-added columns: one user (in a
    copied batch) and another (not yet copied) change their password hash. The rerun
    fills the rest and keeps both new values."""
    target, backup, _, before, _ = migrated
    real = rollback.run_with_lock_retries
    batches = []

    def dying(step, *args, **kwargs):
        if step.startswith("copy batch"):
            batches.append(step)
            if len(batches) == 3:
                raise KeyboardInterrupt  # the worker is killed
        return real(step, *args, **kwargs)

    monkeypatch.setattr(rollback, "run_with_lock_retries", dying)
    with pytest.raises(KeyboardInterrupt):
        restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS, batch_size=1000)
    monkeypatch.setattr(rollback, "run_with_lock_retries", real)
    assert query(target, "SELECT to_regnamespace('soak_rollback') IS NOT NULL") == [(True,)]  # left behind
    assert query(target, """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'""") == [(0,)]
    filled = query(target, 'SELECT count(*) FROM users WHERE "passwordHash" IS NOT NULL')[0][0]
    assert filled == 2000 - 3  # batches 1-2 (3 of their users were deleted after the backup)

    query(target, """UPDATE users SET "passwordHash" = 'new-after-rollback' WHERE id IN ('usr_0000001', 'usr_0004000')""")
    result = restore_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS, batch_size=1000)
    assert result.mismatches == 0 and result.values_kept == 2
    assert result.rows_updated == SEED_USERS - 3 - filled - 1  # the rest, minus the one written since
    after = snapshot(target)
    assert after["usr_0000001"][0] == after["usr_0004000"][0] == b"new-after-rollback"
    assert after["usr_0004000"][1] == before["usr_0004000"][1]  # its other column came from the backup
    assert all(after[k] == v for k, v in before.items() if k in after and k not in ("usr_0000001", "usr_0004000"))
    assert query(target, "SELECT to_regnamespace('soak_rollback')") == [(None,)]


@pytest.mark.timeout(60)
def test_a_script_with_its_own_commit_is_not_retried_and_leaves_nothing(seeded, tmp_path, pgbouncer):
    """Such a script may have committed part of itself before the lock timeout: running it
    again is not safe, so it gets one try whatever lock_retries says. Its lock_timeout
    holds after its own COMMIT too (a session setting, reset after it: deployed through
    the pooler, the next pooled client sees none of it)."""
    import shutil

    migrations = tmp_path / "m"
    migrations.mkdir()
    shutil.copy2(MIGRATIONS / "migration_lock.toml", migrations)
    shutil.copytree(MIGRATIONS / INIT, migrations / INIT)
    name = "20260101000000_own_tx"
    (migrations / name).mkdir()
    (migrations / name / "migration.sql").write_text(
        'BEGIN;\nCREATE TABLE "notes" ("id" TEXT);\nCOMMIT;\nALTER TABLE "users" ADD COLUMN "nick" TEXT;\n')
    pooled = pgbouncer.target(seeded.database)
    holder = _hold_access_share(seeded)
    slept: list[float] = []
    started = time.monotonic()
    try:
        with pytest.raises(MigrationError) as err:
            LedgerBackend(pooled, migrations, lock_timeout_s=0.3, lock_retries=5, _sleep=slept.append).deploy()
    finally:
        holder.rollback()
        holder.close()
    assert time.monotonic() - started < 10
    assert "1 attempt: 1 lock timeout after 0.3" in str(err.value) and "not retried" in str(err.value)
    assert slept == [] and len(err.value.lock_attempts) == 1
    assert query(seeded, "SELECT to_regclass('notes') IS NOT NULL") == [(True,)]  # why: the part before COMMIT stayed
    assert {k: v for k, v in _pooled_state(pooled).items() if k != "server_pid"} == CLEAN
