"""rebuild.py on the real server: the rollback by rebuild and swap (issue 14, item 4).

Each test runs ``rebuild_columns`` on the seeded, migrated database of ``test_rollback``'s
``migrated`` fixture (5000 users backed up, the columns dropped, then 50 sign-ups, 3
deletions and a profile change)."""

from __future__ import annotations

import threading
import time

import pytest

from migration_soak import rebuild
from migration_soak.exceptions import RollbackError
from migration_soak.rebuild import rebuild_columns

from .conftest import DOWN_SQL, SEED_USERS, USERS_COLUMNS, query, snapshot
from .test_rollback import NEW_USERS, _column_defs, migrated  # noqa: F401  (fixture)

DELETED = {"usr_0000007", "usr_0000008", "usr_0000009"}


def _state(target):
    """What must survive a failed rebuild untouched, and what a good one must leave."""
    return {
        "relid": query(target, "SELECT 'public.users'::regclass::oid")[0][0],
        "triggers": query(target, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.users'::regclass "
                                  "AND NOT tgisinternal"),
        "new": query(target, "SELECT to_regclass('public.users_soak_new'), to_regclass('public.users_soak_old')"),
        "scratch": query(target, "SELECT to_regnamespace('soak_rollback')"),
    }


def _indexes(target):
    return query(target, """SELECT c.relname, pg_get_indexdef(i.indexrelid), con.conname, con.contype
                            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                            LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.contype IN ('p', 'u')
                            WHERE i.indrelid = 'public.users'::regclass ORDER BY 1""")


def _foreign_keys(target):
    return query(target, """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
                            FROM pg_constraint WHERE contype = 'f'
                              AND (conrelid = 'public.users'::regclass OR confrelid = 'public.users'::regclass)
                            ORDER BY 1, 2""")


# ------------------------------------------------------------------- (a) every value


def test_rebuild_restores_every_value_and_carries_the_table_over(migrated, pg_bin):  # noqa: F811
    target, backup, backend, before, definitions = migrated
    indexes, fks = _indexes(target), _foreign_keys(target)
    constraints = "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint " \
                  "WHERE conrelid = 'public.users'::regclass AND conname NOT LIKE '%%Verified%%' ORDER BY 1"
    constraints_before = query(target, constraints)
    relid = _state(target)["relid"]
    columns_before = query(target, """SELECT attname FROM pg_attribute WHERE attrelid = 'public.users'::regclass
                                      AND attnum > 0 AND NOT attisdropped ORDER BY attnum""")
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    print(f"\nrebuild of {SEED_USERS} users: {result.to_dict()}")

    assert result.method == "rebuild" and result.table == "public.users"
    assert result.rows_at_backup == SEED_USERS and result.rows_matched == SEED_USERS - 3
    assert result.rows_not_in_backup == NEW_USERS
    assert result.rows_updated == SEED_USERS - 3 and result.values_restored == 2 * (SEED_USERS - 3)
    assert result.mismatches == 0 and result.values_kept == 0
    assert 0 < result.swap_s == result.ddl_s < 1.0
    assert [a.step for a in result.lock_attempts if a.outcome == "ok"][:3] == ["down_sql", "capture trigger", "swap"]

    after = snapshot(target)
    for user_id, value in before.items():
        if user_id in DELETED:
            assert user_id not in after
        else:
            assert after[user_id] == value, user_id
    late = {k: v for k, v in after.items() if k not in before}
    assert len(late) == NEW_USERS and set(late.values()) == {(None, False)}
    assert query(target, "SELECT email FROM users WHERE id = 'usr_0000010'") == [("changed@example.test",)]

    # The same table by every name the application uses, a new one underneath.
    assert _column_defs(target) == definitions
    assert query(target, """SELECT attname FROM pg_attribute WHERE attrelid = 'public.users'::regclass
                            AND attnum > 0 AND NOT attisdropped ORDER BY attnum""")[:len(columns_before)] == columns_before
    assert _indexes(target) == indexes
    assert query(target, constraints) == constraints_before  # names too (PostgreSQL 18's NOT NULL constraints)
    assert _foreign_keys(target) == fks and all(row[3] for row in fks)
    state = _state(target)
    assert state["relid"] != relid
    assert state == {"relid": state["relid"], "triggers": [], "new": [(None, None)], "scratch": [(None,)]}

    # The rolled-back schema is the one Prisma's next deploy expects: it drops the columns again.
    backend.mark_rolled_back(backend_name := "20251202020032_update_user_schema_final")
    assert backend.deploy().applied == (backend_name,)


# ------------------------------------------------------- (b) concurrent application writes


class Writer(threading.Thread):
    """The rolled-back application writing ``users`` while the rebuild runs (from the
    moment the columns are re-added until ``stop``): inserts users with both restored
    columns, changes password hashes (a value written after the re-add), sets
    ``emailVerified``, changes e-mails, deletes users and changes one key. ``expected``
    maps each key it touched to what must be there after (``None``: deleted);
    ``phases`` counts its writes per phase of the rebuild."""

    def __init__(self, target, phase):
        super().__init__(daemon=True)
        self.target, self.phase = target, phase
        self.stop = threading.Event()
        self.expected: dict[str, dict | None] = {}
        self.phases: dict[str, int] = {}
        self.error: BaseException | None = None
        #: held for each write with its phase check: once the test has set the phase
        #: ``verify`` under it, no write of a restored column of a seeded row follows
        self.writing = threading.Lock()

    def _write(self, cur, n) -> str:
        """One write, its phase check under ``writing``; returns the phase."""
        with self.writing:
            name = self.phase["name"]
            seeded = f"usr_{(n * 37) % 4000 + 11:07d}"  # 11..4010, never one the fixture deleted
            op = n % 5
            if (seeded in self.expected and op != 0) or (name in ("verify", "done") and op in (1, 4)):
                op = 0  # after the verification began, no write of a restored column of a seeded row
            if op == 0:
                key = f"w_{n:06d}"
                cur.execute("""INSERT INTO users (id, email, "updatedAt", "passwordHash", "emailVerified")
                               VALUES (%s, %s, now(), %s, true)""", (key, f"{key}@example.test", f"w-{n}"))
                self.expected[key] = {"passwordHash": f"w-{n}", "emailVerified": True}
            elif op == 1:
                cur.execute('UPDATE users SET "passwordHash" = %s WHERE id = %s', (f"app-{n}", seeded))
                self.expected[seeded] = {"passwordHash": f"app-{n}"}
            elif op == 2:
                cur.execute('UPDATE users SET email = %s WHERE id = %s', (f"new-{n}@example.test", seeded))
                self.expected[seeded] = {"email": f"new-{n}@example.test"}
            elif op == 3:
                cur.execute("DELETE FROM users WHERE id = %s", (seeded,))
                self.expected[seeded] = None
            else:
                cur.execute("""UPDATE users SET "emailVerified" = true WHERE id = %s""", (seeded,))
                self.expected[seeded] = {"emailVerified": True}
            if n % 50 == 25:  # a key change: the old key goes, the new one comes
                old = f"w_{n - 25:06d}"
                cur.execute("UPDATE users SET id = %s WHERE id = %s", (old + "_moved", old))
                if cur.rowcount:
                    self.expected[old + "_moved"] = self.expected[old]
                    self.expected[old] = None
        return name

    def run(self):
        try:
            conn = self.target.connect(application_name="app-writer")
            conn.autocommit = True
            try:
                n = 0
                with conn.cursor() as cur:
                    while not self.stop.is_set():
                        n += 1
                        name = self._write(cur, n)
                        self.phases[name] = self.phases.get(name, 0) + 1
                        time.sleep(0.002)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _phased(monkeypatch, phase, pause_s=0.4):
    """Name the rebuild's phases in ``phase`` and pause inside them, so the application
    writes before the trigger, between it and the build's snapshot, after the build and
    between the catch-up rounds and the swap."""
    real = {name: getattr(rebuild._Run, name) for name in ("install_capture", "build", "catch_up", "swap")}
    real_readd = rebuild._readd
    started = threading.Event()

    def readd(*args, **kwargs):
        out = real_readd(*args, **kwargs)
        phase["name"] = "re-added"
        started.set()
        time.sleep(pause_s)
        return out

    def wrap(name):
        def method(self, *args, **kwargs):
            phase["name"] = name
            if name != "install_capture":
                time.sleep(pause_s)
            try:
                return real[name](self, *args, **kwargs)
            finally:
                phase["name"] = f"after {name}"
        return method

    monkeypatch.setattr(rebuild, "_readd", readd)
    for name in real:
        monkeypatch.setattr(rebuild._Run, name, wrap(name))
    return started


@pytest.mark.timeout(120)
def test_writes_made_during_the_rebuild_all_survive(migrated, pg_bin, monkeypatch):  # noqa: F811
    target, backup, _, before, _ = migrated
    phase = {"name": "stage"}
    started = _phased(monkeypatch, phase)
    writer = Writer(target, phase)
    real_verify = rebuild._verify

    def verify(*args, **kwargs):
        with writer.writing:
            phase["name"] = "verify"
        try:
            return real_verify(*args, **kwargs)
        finally:
            phase["name"] = "done"

    monkeypatch.setattr(rebuild, "_verify", verify)
    gate = threading.Thread(target=lambda: started.wait(60) and writer.start(), daemon=True)
    gate.start()
    try:
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        time.sleep(0.1)  # a few writes on the swapped-in table too
    finally:
        writer.stop.set()
        gate.join(10)
        writer.join(10)
    assert writer.error is None, writer.error
    print(f"\nwrites per phase: {writer.phases}; {len(writer.expected)} keys touched; {result.to_dict()}")
    # re-added: before the trigger; build: after it, before and during the build's snapshot;
    # catch_up: after the build, before the rounds; swap: after the rounds, before the swap.
    for name in ("re-added", "build", "catch_up", "swap", "done"):
        assert writer.phases.get(name, 0) >= 5, (name, writer.phases)
    assert result.mismatches == 0 and result.batches >= 2

    after = {row[0]: row[1:] for row in query(
        target, 'SELECT id, email, "passwordHash", "emailVerified" FROM users')}
    backup_values = {k: (v[0].decode() if v[0] is not None else None, v[1]) for k, v in before.items()}
    kept = 0
    for key, want in writer.expected.items():
        if want is None:
            assert key not in after, key  # deleted during the rebuild: stays deleted
            continue
        email, password_hash, verified = after[key]
        if key.startswith("w_"):
            assert (password_hash, verified) == (want["passwordHash"], want["emailVerified"]), key
            continue
        if "passwordHash" in want:  # written after the re-add: wins over the backup
            assert password_hash == want["passwordHash"], key
            assert verified == backup_values[key][1], key
            kept += 1
        elif "emailVerified" in want:
            assert verified is True and password_hash == backup_values[key][0], key
            kept += backup_values[key][1] is False
        else:
            assert email == want["email"] and (password_hash, verified) == backup_values[key], key
    assert result.values_kept == kept > 0
    untouched = {k: v for k, v in snapshot(target).items() if k in before and k not in writer.expected}
    assert untouched == {k: v for k, v in before.items() if k in untouched}
    assert len(untouched) == SEED_USERS - 3 - sum(1 for k in writer.expected if k in before)
    assert _state(target)["triggers"] == [] and _state(target)["new"] == [(None, None)]


# ------------------------------------------------------------ (c) the ACCESS EXCLUSIVE


class ExclusiveWatcher(threading.Thread):
    """Samples ``pg_locks`` every ~2 ms for a granted AccessExclusiveLock on ``users``
    (the table's OID at the start, and whatever ``public.users`` names at each sample);
    ``holds`` are the (first, last) sample times of each run of samples that saw one."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.stop = threading.Event()
        self.samples = 0
        self.holds: list[tuple[float, float]] = []

    def run(self):
        conn = self.target.connect(application_name="lock-watcher")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 'public.users'::regclass::oid")
                first_oid = cur.fetchone()[0]
                run = None
                while not self.stop.is_set():
                    cur.execute("""SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND granted
                                     AND mode = 'AccessExclusiveLock'
                                     AND relation IN (%s, to_regclass('public.users'))""", (first_oid,))
                    now = time.monotonic()
                    self.samples += 1
                    if cur.fetchone()[0]:
                        run = (run[0], now) if run else (now, now)
                    elif run:
                        self.holds.append(run)
                        run = None
                    time.sleep(0.002)
                if run:
                    self.holds.append(run)
        finally:
            conn.close()

    @property
    def longest_s(self) -> float:
        return max((b - a for a, b in self.holds), default=0.0)


@pytest.mark.timeout(120)
def test_no_access_exclusive_on_users_is_held_for_a_second(migrated, pg_bin, monkeypatch):  # noqa: F811
    """The watcher sees the ACCESS EXCLUSIVE of the down SQL and of the swap (the swap is
    slowed by 150 ms inside its transaction, so it is sampled); none lasts 1 s."""
    target, backup, _, _, _ = migrated
    real_round = rebuild._Run._round
    in_swap = {"n": 0}

    def slow_round(self, cur):
        taken = real_round(self, cur)
        if getattr(self, "_swapping", False):
            in_swap["n"] += 1
            time.sleep(0.15)
        return taken

    real_swap = rebuild._Run.swap

    def swap(self):
        self._swapping = True
        return real_swap(self)

    monkeypatch.setattr(rebuild._Run, "_round", slow_round)
    monkeypatch.setattr(rebuild._Run, "swap", swap)
    watcher = ExclusiveWatcher(target)
    watcher.start()
    try:
        time.sleep(0.05)
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    finally:
        watcher.stop.set()
        watcher.join(10)
    print(f"\n{watcher.samples} samples; ACCESS EXCLUSIVE holds (s): "
          f"{[round(b - a, 3) for a, b in watcher.holds]}; swap {result.swap_s} s")
    assert in_swap["n"] == 1 and result.mismatches == 0
    assert watcher.samples > 50
    assert watcher.holds, "the swap's ACCESS EXCLUSIVE was not sampled"
    assert 0.1 <= watcher.longest_s < 1.0
    assert 0.15 <= result.swap_s < 1.0 and result.swap_s == result.ddl_s


# --------------------------------------------------------------------- (d) refusals


REFUSED = {
    "view": ("CREATE VIEW active_users AS SELECT id, email FROM users", "view or materialized view.*active_users"),
    "materialized view": ("CREATE MATERIALIZED VIEW user_count AS SELECT count(*) FROM users",
                          "view or materialized view.*user_count"),
    "policy": ("ALTER TABLE users ENABLE ROW LEVEL SECURITY; CREATE POLICY own ON users USING (true)",
               "row-level security is enabled.*row-level security policy own"),
    "trigger": ("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$; "
                "CREATE TRIGGER touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch()", "trigger touch"),
    "publication": ("CREATE PUBLICATION users_pub FOR TABLE users", "publication users_pub"),
    "inheritance": ("CREATE TABLE admins (level int) INHERITS (users)", "inherits from it.*admins"),
    "serial": ("CREATE SEQUENCE users_n_seq OWNED BY users.id", "sequence owned by it.*users_n_seq"),
    "unlogged": ("ALTER TABLE users SET UNLOGGED", "UNLOGGED"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_table_the_swap_would_break_is_refused_before_any_change(migrated, pg_bin, kind):  # noqa: F811
    target, backup, _, _, _ = migrated
    setup, message = REFUSED[kind]
    if kind == "unlogged":  # a logged table cannot reference an unlogged one
        query(target, 'ALTER TABLE execution_logs DROP CONSTRAINT "execution_logs_userId_fkey"')
    query(target, setup)
    state = _state(target)
    with pytest.raises(RollbackError, match=f"rebuild of public.users refused.*{message}") as err:
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert "rollback_method 'copy'" in str(err.value)
    assert err.value.lock_attempts == ()  # the down SQL never ran ...
    assert _column_defs(target) == []  # ... so the columns are still dropped
    assert _state(target) == state and state["scratch"] == [(None,)]


# ----------------------------------------------------------- (e) foreign keys, grants


@pytest.mark.timeout(120)
def test_foreign_keys_are_valid_and_grants_kept_after_the_swap(migrated, pg_bin):  # noqa: F811
    target, backup, _, _, _ = migrated
    role = f"soak_reader_{target.database[-20:]}"
    query(target, f'DROP ROLE IF EXISTS "{role}"')
    query(target, f'CREATE ROLE "{role}"')
    try:
        query(target, f'GRANT SELECT ON users TO "{role}"')
        query(target, f'GRANT INSERT, UPDATE ON users TO "{role}" WITH GRANT OPTION')
        query(target, """INSERT INTO execution_logs (id, "userId", "workflowId", status, "startedAt")
                         SELECT 'log_' || g, 'usr_' || lpad(g::text, 7, '0'), 'wf', 'SUCCESS', now()
                         FROM generate_series(100, 199) g""")
        acl = query(target, """SELECT grantee::regrole::text, privilege_type, is_grantable
                               FROM pg_class, aclexplode(relacl) WHERE oid = 'public.users'::regclass ORDER BY 1, 2""")
        owner = query(target, "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'public.users'::regclass")
        assert (role, "SELECT", False) in acl

        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        assert result.mismatches == 0

        assert query(target, """SELECT grantee::regrole::text, privilege_type, is_grantable
                                FROM pg_class, aclexplode(relacl) WHERE oid = 'public.users'::regclass
                                ORDER BY 1, 2""") == acl
        assert query(target, "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'public.users'::regclass") == owner
        assert query(target, "SELECT has_table_privilege(%s, 'public.users', 'SELECT')", (role,)) == [(True,)]
        assert query(target, """SELECT conname, convalidated, confrelid::regclass::text FROM pg_constraint
                                WHERE conname IN ('execution_logs_userId_fkey', 'users_clientId_fkey')
                                ORDER BY 1""") == [("execution_logs_userId_fkey", True, "users"),
                                                   ("users_clientId_fkey", True, "clients")]
        # Enforced, with its actions, on the new table.
        with pytest.raises(Exception, match="execution_logs_userId_fkey"):
            query(target, """INSERT INTO execution_logs (id, "userId", "workflowId", status, "startedAt")
                             VALUES ('log_bad', 'usr_nobody', 'wf', 'SUCCESS', now())""")
        query(target, "DELETE FROM users WHERE id = 'usr_0000100'")
        assert query(target, """SELECT "userId" FROM execution_logs WHERE id = 'log_100'""") == [(None,)]  # SET NULL
        query(target, "UPDATE users SET id = 'usr_moved' WHERE id = 'usr_0000101'")
        assert query(target, """SELECT "userId" FROM execution_logs WHERE id = 'log_101'""") == [("usr_moved",)]
    finally:
        query(target, f'DROP OWNED BY "{role}"')
        query(target, f'DROP ROLE "{role}"')


# ------------------------------------------------------ (f) the swap cannot get its lock


@pytest.mark.timeout(120)
def test_a_swap_that_cannot_get_its_lock_is_retried_then_undone(migrated, pg_bin, monkeypatch):  # noqa: F811
    """An application transaction holds ACCESS SHARE on users from the moment the swap
    starts, for 2.5 s: the swap's tries time out (0.3 s, one retry), the rebuild fails and
    removes its trigger (retried until the holder lets go), its new table and its scratch
    schema; the live table keeps its OID, its re-added (empty) columns and its rows, and
    takes writes. A rerun then restores everything."""
    target, backup, _, before, definitions = migrated
    relid = _state(target)["relid"]
    real_swap = rebuild._Run.swap
    holder = target.connect(application_name="app-long-report")
    timer = threading.Timer(2.5, holder.rollback)

    def swap(self):
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
        timer.start()
        return real_swap(self)

    monkeypatch.setattr(rebuild._Run, "swap", swap)
    try:
        with pytest.raises(RollbackError, match=r"swap could not lock public.users .*0.3 s \(lock_timeout\) in "
                                                r"2 attempts") as err:
            rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS,
                            lock_timeout_s=0.3, lock_retries=1)
    finally:
        timer.cancel()
        holder.rollback()
        holder.close()
    steps = [(a["step"], a["outcome"]) for a in err.value.lock_attempts]
    assert steps[:4] == [("down_sql", "ok"), ("capture trigger", "ok"), ("swap", "lock_timeout"),
                         ("swap", "lock_timeout")]
    undo = [outcome for step, outcome in steps if step == "drop capture trigger"]
    assert undo[0] == "lock_timeout" and undo[-1] == "ok"  # retried until the holder let go
    state = _state(target)
    assert state == {"relid": relid, "triggers": [], "new": [(None, None)], "scratch": [(None,)]}
    assert _column_defs(target) == definitions  # re-added, as restore_columns leaves them
    assert query(target, 'SELECT count(*), count("passwordHash") FROM users') == [(SEED_USERS - 3 + NEW_USERS, 0)]
    query(target, """UPDATE users SET "passwordHash" = 'after-failure' WHERE id = 'usr_0000001'""")
    assert query(target, """SELECT "passwordHash" FROM users WHERE id = 'usr_0000001'""") == [("after-failure",)]

    monkeypatch.setattr(rebuild._Run, "swap", real_swap)
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0 and result.values_kept == 1
    after = snapshot(target)
    assert after["usr_0000001"] == (b"after-failure", before["usr_0000001"][1])
    assert all(after[k] == v for k, v in before.items() if k in after and k != "usr_0000001")


# ----------------------------------------------------------- the plan's rollback_method


def test_the_plan_chooses_the_method_and_copy_stays_the_default(monkeypatch):
    from migration_soak import rollback
    from migration_soak.plan import load_plan

    plan = load_plan("default")
    assert plan.migration.rollback_method == "copy"
    rebuilt = plan.migration.model_copy(update={"rollback_method": "rebuild"})
    assert rebuilt.rollback_method == "rebuild"
    with pytest.raises(Exception, match="rollback_method"):
        type(plan.migration).model_validate({**plan.migration.model_dump(), "rollback_method": "swap"})
    called = []
    monkeypatch.setattr(rollback, "restore_columns", lambda *a, **k: called.append(("copy", a, k)))
    monkeypatch.setattr(rebuild, "rebuild_columns", lambda *a, **k: called.append(("rebuild", a, k)))
    rollback.restore_by_method("copy", "t", "b", None, table="users")
    rollback.restore_by_method("rebuild", "t", "b", None, table="users")
    assert called == [("copy", ("t", "b", None), {"table": "users"}), ("rebuild", ("t", "b", None), {"table": "users"})]
    with pytest.raises(RollbackError, match="unknown rollback_method 'swap'"):
        rollback.restore_by_method("swap", "t", "b", None)


def test_the_rehearsal_rehearses_the_rebuild_when_the_plan_says_so(seeded, pg_bin, tmp_path):
    from migration_soak.backup import take_backup
    from migration_soak.migrate import LedgerBackend
    from migration_soak.plan import load_plan
    from migration_soak.rehearsal import rehearse

    from .conftest import MIGRATIONS

    plan = load_plan("default")
    plan = plan.model_copy(update={"migration": plan.migration.model_copy(update={"rollback_method": "rebuild"})})
    backup = take_backup(seeded, tmp_path / "backups", pg_bin, "pre_rehearsal")
    calls = []
    real = rebuild.rebuild_columns

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out)
        return out

    try:
        rebuild.rebuild_columns = spy
        result = rehearse(plan, seeded, backup, pg_bin, run_id="manual__rebuild-rehearsal",
                          backend_for=lambda t: LedgerBackend(t, MIGRATIONS, lock_retries=0))
    finally:
        rebuild.rebuild_columns = real
    assert result.status == "passed" and result.values_restored == 2 * SEED_USERS and result.mismatches == 0
    (restored,) = calls
    assert restored.method == "rebuild" and restored.swap_s > 0


# ------------------------------------------- a change made during the rebuild, at the swap


@pytest.mark.parametrize("ddl, message", [
    ("CREATE VIEW late_view AS SELECT id FROM users", "refused at the swap: view or materialized view.*late_view"),
    ("ALTER TABLE users ADD COLUMN nickname text", "columns or CHECK constraints of public.users changed"),
    ('CREATE INDEX users_created_idx ON users ("createdAt")', "indexes of public.users changed"),
])
def test_a_change_made_during_the_rebuild_is_caught_at_the_swap_and_undone(migrated, pg_bin, monkeypatch,  # noqa: F811
                                                                          ddl, message):
    """Someone changes the table while the new one is built: the swap, which re-reads the
    table under its lock, refuses rather than leave the change on the old table; the
    rebuild is undone and the live table keeps the change."""
    target, backup, _, _, _ = migrated
    relid = _state(target)["relid"]
    real = rebuild._Run.catch_up

    def catch_up(self):
        query(target, ddl)
        return real(self)

    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    with pytest.raises(RollbackError, match=message):
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert _state(target) == {"relid": relid, "triggers": [], "new": [(None, None)], "scratch": [(None,)]}
    assert query(target, 'SELECT count(*), count("passwordHash") FROM users') == [(SEED_USERS - 3 + NEW_USERS, 0)]


def test_a_failure_after_the_swap_keeps_the_restored_table_and_the_old_one(migrated, pg_bin, monkeypatch):  # noqa: F811
    """The verification fails after the swap committed: the restored table stays in place
    (no undo of a committed swap), the old table is kept for inspection and named."""
    target, backup, _, before, _ = migrated
    relid = _state(target)["relid"]

    def failing_verify(*args, **kwargs):
        raise RollbackError("verification of public.users failed: (simulated)")

    monkeypatch.setattr(rebuild, "_verify", failing_verify)
    with pytest.raises(RollbackError, match=r"simulated\); the swap had committed: the restored table is in place; "
                                            r"public.users_soak_old is kept for inspection"):
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    state = _state(target)
    assert state["relid"] != relid and state["triggers"] == [] and state["scratch"] == [(None,)]
    assert query(target, "SELECT 'public.users_soak_old'::regclass::oid") == [(relid,)]
    after = snapshot(target)
    assert all(after[k] == v for k, v in before.items() if k not in DELETED)
