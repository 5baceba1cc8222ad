"""rebuild.py under attack: writes in every window, catalog carry-over, refusals that
must come before anything changes, leftovers, kills, odd names, the application role.

Each test runs on ``test_rollback``'s ``migrated`` fixture (5000 users backed up, the
columns dropped, 50 sign-ups, 3 deletions, a profile change) or on a small table of its
own; the outcome is compared with what ``rollback.restore_columns`` (``copy``) leaves."""

from __future__ import annotations

import threading
import time

import pytest
from psycopg2 import sql

from migration_soak import rebuild
from migration_soak.backup import take_backup
from migration_soak.exceptions import RollbackError
from migration_soak.pgconn import PgTarget
from migration_soak.rebuild import rebuild_columns
from migration_soak.rollback import restore_by_method

from .conftest import DOWN_SQL, SEED_USERS, USERS_COLUMNS, query, snapshot
from .test_rebuild import _state
from .test_rollback import NEW_USERS, _column_defs, migrated  # noqa: F401  (fixture)


def _row(target, key):
    rows = query(target, 'SELECT email, "passwordHash", "emailVerified" FROM users WHERE id = %s', (key,))
    return rows[0] if rows else None


# ------------------------------------------------------ 1. writes in every window


@pytest.mark.timeout(120)
def test_key_changes_reinserts_upserts_and_email_swaps_in_every_window_match_copy(migrated, pg_bin,  # noqa: F811
                                                                                 monkeypatch):
    """Between the trigger and the build's snapshot, between the build and the catch-up,
    and between the last catch-up round and the swap's lock: a key change, a delete then
    re-insert of the same key, an INSERT ... ON CONFLICT DO UPDATE, and two rows that
    swap e-mails (a unique index) across two windows. The result is what copy gives."""
    target, backup, _, before, _ = migrated
    pw = {k: (v[0].decode() if v[0] is not None else None, v[1]) for k, v in before.items()}
    windows = ["build", "catch_up", "swap"]
    expected: dict[str, tuple | None] = {}
    a, b = "usr_0000500", "usr_0000501"
    a_mail, b_mail = "user500@example.test", "user501@example.test"

    def writes(window: int) -> None:
        moved = f"usr_{600 + window:07d}"
        reinserted = f"usr_{700 + window:07d}"
        upserted = f"usr_{800 + window:07d}"
        query(target, "UPDATE users SET id = %s WHERE id = %s", (f"moved_{window}", moved))
        expected[moved] = None
        expected[f"moved_{window}"] = (f"user{600 + window}@example.test", None, False)  # not in the backup
        query(target, """BEGIN; DELETE FROM users WHERE id = %(k)s;
                         INSERT INTO users (id, email, "updatedAt") VALUES (%(k)s, %(e)s, now()); COMMIT""",
              {"k": reinserted, "e": f"again{window}@example.test"})
        expected[reinserted] = (f"again{window}@example.test", *pw[reinserted])  # copy fills it from the backup
        query(target, """INSERT INTO users (id, email, "updatedAt", "passwordHash") VALUES (%s, 'x', now(), %s)
                         ON CONFLICT (id) DO UPDATE SET "passwordHash" = excluded."passwordHash" """,
              (upserted, f"upsert-{window}"))
        expected[upserted] = (f"user{800 + window}@example.test", f"upsert-{window}", pw[upserted][1])
        query(target, """INSERT INTO users (id, email, "updatedAt", "emailVerified") VALUES (%s, %s, now(), true)
                         ON CONFLICT (id) DO UPDATE SET "emailVerified" = true""",
              (f"fresh_{window}", f"fresh{window}@example.test"))
        expected[f"fresh_{window}"] = (f"fresh{window}@example.test", None, True)
        if window == 0:
            query(target, "UPDATE users SET email = 'swap-tmp@example.test' WHERE id = %s", (a,))
        elif window == 1:
            query(target, "BEGIN; UPDATE users SET email = %s WHERE id = %s; UPDATE users SET email = %s WHERE id = %s;"
                          "COMMIT", (a_mail, b, b_mail, a))
            expected[a] = (b_mail, *pw[a])
            expected[b] = (a_mail, *pw[b])

    real_build, real_catch_up, real_swap, real_relid = (rebuild._Run.build, rebuild._Run.catch_up,
                                                        rebuild._Run.swap, rebuild._Run._relid)
    in_swap = {"on": False, "done": False}

    def build(self):
        writes(0)
        return real_build(self)

    def catch_up(self):
        writes(1)
        return real_catch_up(self)

    def swap(self):
        in_swap["on"] = True
        return real_swap(self)

    def relid(self, cur):
        if in_swap["on"] and not in_swap["done"]:  # inside the swap, before its LOCK
            in_swap["done"] = True
            writes(2)
        return real_relid(self, cur)

    monkeypatch.setattr(rebuild._Run, "build", build)
    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    monkeypatch.setattr(rebuild._Run, "swap", swap)
    monkeypatch.setattr(rebuild._Run, "_relid", relid)
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert in_swap["done"] and result.mismatches == 0
    assert len(windows) == 3
    for key, want in expected.items():
        assert _row(target, key) == want, key
    after = snapshot(target)
    untouched = [k for k in before if k in after and k not in expected and not k.startswith("usr_00006")
                 and not k.startswith("usr_00007") and not k.startswith("usr_00008")]
    assert all(after[k] == before[k] for k in untouched)


@pytest.mark.timeout(120)
def test_a_transaction_that_began_before_the_trigger_and_writes_after_it_is_caught(migrated, pg_bin,  # noqa: F811
                                                                                  monkeypatch):
    """An application transaction (REPEATABLE READ, FOR UPDATE: ROW SHARE, which CREATE
    TRIGGER does not wait for) begins before the trigger exists, writes after the build's
    snapshot and commits before the swap: its write is there after the rebuild."""
    target, backup, _, before, _ = migrated
    app = target.connect(application_name="app-early")
    real_install, real_build, real_catch_up = rebuild._Run.install_capture, rebuild._Run.build, rebuild._Run.catch_up

    def install_capture(self):
        with app.cursor() as cur:  # after the down SQL, before the trigger
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT id FROM users WHERE id = 'usr_0000042' FOR UPDATE")
        return real_install(self)

    def build(self):
        with app.cursor() as cur:  # the trigger exists now; this transaction began before it
            cur.execute('UPDATE users SET "passwordHash" = %s WHERE id = %s', ("early-tx", "usr_0000042"))
        return real_build(self)

    def catch_up(self):
        app.commit()  # after the build's snapshot
        return real_catch_up(self)

    monkeypatch.setattr(rebuild._Run, "install_capture", install_capture)
    monkeypatch.setattr(rebuild._Run, "build", build)
    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    try:
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    finally:
        app.rollback()
        app.close()
    assert result.mismatches == 0 and result.values_kept == 1
    assert snapshot(target)["usr_0000042"] == (b"early-tx", before["usr_0000042"][1])


# ------------------------------------------------------ 2. the key must not be NULL


@pytest.mark.timeout(120)
def test_writes_to_rows_with_a_null_key_are_not_lost(migrated, pg_bin, monkeypatch):  # noqa: F811
    """``key`` is a unique but nullable column (``authorizerId``): copy leaves rows with a
    NULL key unrestored but intact. The rebuild must not lose a row inserted with a NULL
    key during the rebuild, nor an update to one: or refuse such a key before anything
    changes."""
    target, backup, _, _, _ = migrated
    query(target, """UPDATE users SET "authorizerId" = NULL WHERE id IN ('usr_0005001', 'usr_0005002')""")
    real = rebuild._Run.catch_up

    def catch_up(self):
        query(target, """INSERT INTO users (id, email, "updatedAt", "passwordHash") VALUES
                         ('null_key_new', 'nk@example.test', now(), 'written during the rebuild')""")
        query(target, """UPDATE users SET email = 'nk-changed@example.test' WHERE id = 'usr_0005001'""")
        query(target, "DELETE FROM users WHERE id = 'usr_0005002'")
        return real(self)

    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    columns = {**USERS_COLUMNS, "key": "authorizerId"}
    try:
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **columns)
    except RollbackError as exc:
        assert "refused, nothing changed" in str(exc) and "authorizerId" in str(exc)
        assert _column_defs(target) == [] and _state(target)["scratch"] == [(None,)]
        return
    assert query(target, "SELECT email, \"passwordHash\" FROM users WHERE id = 'null_key_new'") == [
        ("nk@example.test", "written during the rebuild")]
    assert query(target, "SELECT email FROM users WHERE id = 'usr_0005001'") == [("nk-changed@example.test",)]
    assert query(target, "SELECT count(*) FROM users WHERE id = 'usr_0005002'") == [(0,)]


# ------------------------------------------------------ 3. CHECK constraints NOT VALID


def test_a_not_valid_check_constraint_is_kept_or_refused_before_any_change(migrated, pg_bin):  # noqa: F811
    """A CHECK constraint added NOT VALID (old rows violate it): ``LIKE ... INCLUDING
    CONSTRAINTS`` makes it valid on the new table, so the build fails on the old rows (or
    the swap calls it a concurrent change, "retry", forever). Carried over as NOT VALID,
    or refused before the down SQL like the other things a swap cannot carry."""
    target, backup, _, _, _ = migrated
    query(target, "UPDATE users SET email = 'no-at-sign' WHERE id = 'usr_0000020'")
    query(target, "ALTER TABLE users ADD CONSTRAINT email_has_at CHECK (email LIKE '%%@%%') NOT VALID")
    try:
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    except RollbackError as exc:
        assert "refused, nothing changed" in str(exc) and "email_has_at" in str(exc), str(exc)
        assert exc.lock_attempts == () and _column_defs(target) == []
        return
    assert result.mismatches == 0
    assert query(target, """SELECT convalidated FROM pg_constraint WHERE conname = 'email_has_at'""") == [(False,)]


# ------------------------------------------------------ 4. a leftover of another table


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["rebuild", "copy"])
def test_a_leftover_trigger_on_another_table_is_not_dropped_without_lock_timeout(migrated, pg_bin, method):  # noqa: F811
    """A killed rebuild of ``execution_logs`` left its capture trigger (its function in the
    scratch schema). The users rollback's staging (either method) drops the scratch schema
    CASCADE, which drops that trigger: ACCESS EXCLUSIVE on execution_logs, and it must not
    wait for it without lock_timeout (queued, it blocks every reader of execution_logs)."""
    target, backup, _, _, _ = migrated
    query(target, """CREATE SCHEMA soak_rollback; CREATE TABLE soak_rollback.execution_logs_capture (k text);
                     CREATE FUNCTION soak_rollback.execution_logs_capture_fn() RETURNS trigger LANGUAGE plpgsql
                       SECURITY DEFINER SET search_path = pg_catalog AS $$BEGIN
                       INSERT INTO soak_rollback.execution_logs_capture (k) VALUES (NEW.id); RETURN NULL; END$$;
                     CREATE TRIGGER soak_rebuild_capture AFTER INSERT OR UPDATE OR DELETE ON execution_logs
                       FOR EACH ROW EXECUTE FUNCTION soak_rollback.execution_logs_capture_fn()""")
    holder = target.connect(application_name="app-report")
    with holder.cursor() as cur:
        cur.execute("SELECT count(*) FROM execution_logs")  # ACCESS SHARE until rollback
    out: dict = {}

    def run():
        try:
            out["result"] = restore_by_method(method, target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS,
                                              lock_timeout_s=0.3, lock_retries=1)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(6)
    waiting = query(target, """SELECT a.application_name, l.mode FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                               WHERE NOT l.granted AND l.relation = 'public.execution_logs'::regclass""")
    holder.rollback()
    holder.close()
    thread.join(30)
    assert not waiting, f"still waiting on execution_logs after 6 s (lock_timeout 0.3 s): {waiting}"
    assert "result" in out or isinstance(out.get("error"), RollbackError), out
    if "error" in out:  # the holder has let go: a rerun drops the leftover and restores
        assert "could not lock" in str(out["error"]) and _column_defs(target) == [], out
        result = restore_by_method(method, target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        assert result.mismatches == 0
    assert query(target, "SELECT count(*) FROM pg_trigger WHERE tgname = 'soak_rebuild_capture'") == [(0,)]


# ------------------------------------------------------ 5. the application role


@pytest.mark.timeout(120)
def test_the_application_role_writes_through_the_trigger_and_cannot_use_it_otherwise(migrated, pg_bin,  # noqa: F811
                                                                                    monkeypatch):
    target, backup, _, before, _ = migrated
    role = f"soak_app_{target.database[-20:]}"
    query(target, f'DROP ROLE IF EXISTS "{role}"')
    query(target, f"""CREATE ROLE "{role}" LOGIN PASSWORD 'app-pw'""")
    app = PgTarget(host=target.host, port=target.port, database=target.database, user=role, password="app-pw")
    seen: dict = {}
    try:
        query(target, f'GRANT SELECT, INSERT, UPDATE, DELETE ON users, execution_logs TO "{role}"')
        real = rebuild._Run.catch_up

        def catch_up(self):
            query(app, """UPDATE users SET "passwordHash" = 'by-app' WHERE id = 'usr_0000030'""")
            query(app, """INSERT INTO users (id, email, "updatedAt", "emailVerified")
                          VALUES ('app_new', 'app@example.test', now(), true)""")
            query(app, "DELETE FROM users WHERE id = 'usr_0000031'")
            for attempt in ("SELECT soak_rollback.users_capture_fn()",
                            "INSERT INTO soak_rollback.users_capture (k) VALUES ('usr_0000001')",
                            "CREATE TABLE public.mine (id text); CREATE TRIGGER t AFTER INSERT ON public.mine "
                            "FOR EACH ROW EXECUTE FUNCTION soak_rollback.users_capture_fn()"):
                try:
                    query(app, attempt)
                    seen[attempt] = "allowed"
                except Exception as exc:
                    seen[attempt] = type(exc).__name__
            return real(self)

        monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        assert result.mismatches == 0
        assert "allowed" not in seen.values(), seen
        after = snapshot(target)
        assert after["usr_0000030"] == (b"by-app", before["usr_0000030"][1])
        assert after["app_new"] == (None, True) and "usr_0000031" not in after
        query(app, """UPDATE users SET "passwordHash" = 'after' WHERE id = 'usr_0000032'""")  # grants kept
    finally:
        query(target, f'DROP OWNED BY "{role}"')
        query(target, f'DROP ROLE "{role}"')


# ------------------------------------------------------ 6. catalog carry-over


def _catalog(target):
    return {
        "indexes": query(target, """SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisreplident,
                                           i.indimmediate, obj_description(i.indexrelid, 'pg_class')
                                    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                                    WHERE i.indrelid = 'public.users'::regclass ORDER BY 1"""),
        "constraints": query(target, """SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid),
                                               convalidated, condeferrable, condeferred,
                                               obj_description(oid, 'pg_constraint')
                                        FROM pg_constraint
                                        WHERE (conrelid = 'public.users'::regclass
                                               OR confrelid = 'public.users'::regclass)
                                          AND conname NOT LIKE '%%Verified%%' ORDER BY 1, 2"""),
        "table": query(target, """SELECT relowner::regrole::text, reloptions, relreplident,
                                         obj_description(oid, 'pg_class')
                                  FROM pg_class WHERE oid = 'public.users'::regclass"""),
        "acl": query(target, """SELECT coalesce(nullif(grantee, 0)::regrole::text, 'PUBLIC'), privilege_type,
                                       is_grantable
                                FROM pg_class, aclexplode(relacl) WHERE oid = 'public.users'::regclass
                                ORDER BY 1, 2"""),
        "columns": query(target, """SELECT attname, format_type(atttypid, atttypmod), attnotnull,
                                           pg_get_expr(adbin, adrelid), col_description(attrelid, attnum),
                                           attcollation
                                    FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
                                    WHERE attrelid = 'public.users'::regclass AND attnum > 0 AND NOT attisdropped
                                    ORDER BY attnum"""),
    }


CATALOG_SETUP = """
ALTER TABLE users SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.05);
CREATE INDEX users_lower_email_idx ON users (lower(email) text_pattern_ops) WHERE "clientId" IS NOT NULL;
CREATE INDEX users_created_desc_idx ON users ("createdAt" DESC NULLS LAST) INCLUDE (email) WITH (fillfactor = 80);
CREATE INDEX "Users Email C" ON users (email COLLATE "C");
ALTER TABLE users ADD CONSTRAINT users_auth_client_key UNIQUE NULLS NOT DISTINCT ("authorizerId", "clientId")
  DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE users ADD CONSTRAINT email_nonempty CHECK (email <> '');
ALTER TABLE users REPLICA IDENTITY USING INDEX users_email_key;
COMMENT ON TABLE users IS 'people';
COMMENT ON COLUMN users.email IS 'login';
COMMENT ON INDEX users_lower_email_idx IS 'index comment';
COMMENT ON CONSTRAINT users_pkey ON users IS 'primary key comment';
COMMENT ON CONSTRAINT "users_clientId_fkey" ON users IS 'own foreign key comment';
COMMENT ON CONSTRAINT email_nonempty ON users IS 'check comment';
CREATE TABLE sessions (id text PRIMARY KEY, user_email text REFERENCES users (email) ON DELETE CASCADE
  ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED);
INSERT INTO sessions VALUES ('s1', 'user100@example.test');
COMMENT ON CONSTRAINT sessions_user_email_fkey ON sessions IS 'incoming foreign key comment';
CREATE TABLE audits (id text PRIMARY KEY, user_id text);
INSERT INTO audits VALUES ('a1', 'usr_gone');
ALTER TABLE audits ADD CONSTRAINT audits_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;
GRANT SELECT ON users TO PUBLIC;
"""


@pytest.mark.timeout(120)
def test_the_catalog_is_carried_over(migrated, pg_bin):  # noqa: F811
    target, backup, _, _, _ = migrated
    role = f"soak_owner_{target.database[-20:]}"
    query(target, f'DROP ROLE IF EXISTS "{role}"')
    query(target, f'CREATE ROLE "{role}"')
    try:
        query(target, CATALOG_SETUP)
        query(target, f'GRANT UPDATE ON users TO "{role}" WITH GRANT OPTION')
        query(target, f'ALTER TABLE users OWNER TO "{role}"')
        query(target, DOWN_SQL.read_text())  # the columns as the down SQL re-adds them, for the comparison
        catalog = _catalog(target)
        query(target, 'ALTER TABLE users DROP COLUMN "passwordHash", DROP COLUMN "emailVerified"')
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
        assert result.mismatches == 0
        after = _catalog(target)
        for part in catalog:
            assert after[part] == catalog[part], (part, "lost:", [r for r in catalog[part] if r not in after[part]],
                                                  "gained:", [r for r in after[part] if r not in catalog[part]])
    finally:
        query(target, f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
        query(target, f'DROP OWNED BY "{role}"')
        query(target, f'DROP ROLE "{role}"')


@pytest.mark.timeout(120)
def test_a_partitioned_table_referencing_it_is_handled_or_refused_before_any_change(migrated, pg_bin):  # noqa: F811
    target, backup, _, _, _ = migrated
    query(target, """CREATE TABLE events (id int, user_id text REFERENCES users (id), at date) PARTITION BY RANGE (at);
                     CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
                     INSERT INTO events VALUES (1, 'usr_0000001', '2025-03-01')""")
    fks = query(target, """SELECT conrelid::regclass::text, conname, convalidated FROM pg_constraint
                           WHERE contype = 'f' AND confrelid = 'public.users'::regclass ORDER BY 1, 2""")
    try:
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    except RollbackError as exc:
        assert "refused, nothing changed" in str(exc), str(exc)
        return
    assert result.mismatches == 0
    assert query(target, """SELECT conrelid::regclass::text, conname, convalidated FROM pg_constraint
                            WHERE contype = 'f' AND confrelid = 'public.users'::regclass ORDER BY 1, 2""") == fks


# ------------------------------------------------------ 7. odd names


def _own_table(target, pg_bin, tmp_path, table, key, column):
    t, k, c = (sql.Identifier(n).as_string(target.connect()) for n in (table, key, column))
    query(target, "CREATE TABLE clients (id int)")  # what the name tries to drop
    query(target, f"CREATE TABLE public.{t} ({k} text PRIMARY KEY, {c} text, other int)")
    query(target, f"INSERT INTO public.{t} SELECT 'k' || g, 'v' || g, g FROM generate_series(1, 300) g")
    backup = take_backup(target, tmp_path / "backups", pg_bin, "pre", required_tables=(f"public.{table}",))
    query(target, f"ALTER TABLE public.{t} DROP COLUMN {c}")
    query(target, f"INSERT INTO public.{t} ({k}, other) VALUES ('late', 0)")
    query(target, f"DELETE FROM public.{t} WHERE {k} = 'k7'")
    down = tmp_path / "down.sql"
    down.write_text(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} text;\n", encoding="utf-8")
    return t, k, c, down, backup


@pytest.mark.parametrize("table, key, column", [
    # no space in the table's name: backup.verify_backup reads `pg_restore -l` names up to a space
    ('Odd"Tbl;DROP_TABLE_clients--', 'My "Key"', "Pass Word"),
    ("ü" * 30, "id", "secret"),
    ("pct%tbl", "k%(d0)s", "rate%s"),  # psycopg2 reads % in a query run with parameters
    ("pct_tbl", "id", "rate%s"),  # only the restored column: refused before the down SQL too  # 60 bytes: "<table>_soak_new" and "_soak_old" truncate to the same 63 bytes
])
@pytest.mark.timeout(120)
def test_odd_names_rebuild_like_copy(target, pg_bin, tmp_path, table, key, column):
    t, k, c, down, backup = _own_table(target, pg_bin, tmp_path, table, key, column)
    try:
        result = restore_by_method("rebuild", target, backup, pg_bin, down_sql=down,
                                   table=table, columns=(column,), key=key)
    except RollbackError as exc:
        assert ("refused" in str(exc) and "nothing changed" in str(exc)) or "too long" in str(exc), str(exc)
        assert exc.lock_attempts == () if hasattr(exc, "lock_attempts") else True
        assert query(target, "SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s",
                     (f"public.{t}", column)) == [(0,)]  # nothing changed: the column is still dropped
        return
    assert result.mismatches == 0 and result.rows_matched == 299 and result.rows_not_in_backup == 1
    rows = dict(query(target, f"SELECT {k}, {c} FROM public.{t}"))
    assert rows == {**{f"k{g}": f"v{g}" for g in range(1, 301) if g != 7}, "late": None}
    assert query(target, "SELECT to_regclass('public.clients') IS NOT NULL") == [(True,)]


# ------------------------------------------------------ 8. kills and failures in the swap


class _KillAtEndOfSwap:
    """Inside the swap, after every DDL statement ran (the body's last act sets ``shape``):
    raise, or terminate the rebuild's backend, so the swap never commits."""

    def __init__(self, target, mode):
        self.target, self.mode, self.fired = target, mode, False

    def install(self, monkeypatch):
        hook = self

        def get(self):
            return self.__dict__.get("_shape")

        def set_(self, value):
            if getattr(self, "_swapping", False) and value is not None and not hook.fired:
                hook.fired = True
                if hook.mode == "raise":
                    raise RuntimeError("simulated failure after the swap's DDL")
                query(hook.target, "SELECT pg_terminate_backend(%s)", (self.conn.get_backend_pid(),))
            self.__dict__["_shape"] = value

        real_swap = rebuild._Run.swap

        def swap(self):
            self._swapping = True
            try:
                return real_swap(self)
            finally:
                self._swapping = False

        monkeypatch.setattr(rebuild._Run, "shape", property(get, set_), raising=False)
        monkeypatch.setattr(rebuild._Run, "swap", swap)


@pytest.mark.parametrize("mode", ["raise", "kill"])
@pytest.mark.parametrize("rerun", ["rebuild", "copy"])
@pytest.mark.timeout(120)
def test_a_swap_that_fails_after_its_ddl_leaves_the_table_intact_and_a_rerun_completes(
        migrated, pg_bin, monkeypatch, mode, rerun, request):  # noqa: F811
    target, backup, _, before, definitions = migrated
    relid = _state(target)["relid"]
    hook = _KillAtEndOfSwap(target, mode)
    with monkeypatch.context() as m:
        hook.install(m)
        with pytest.raises(RollbackError):
            rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert hook.fired
    state = _state(target)
    assert state["relid"] == relid and state["new"][0][1] is None
    assert _column_defs(target) == definitions
    assert query(target, 'SELECT count(*), count("passwordHash") FROM users') == [(SEED_USERS - 3 + NEW_USERS, 0)]
    query(target, """UPDATE users SET "passwordHash" = 'between' WHERE id = 'usr_0000001'""")
    result = restore_by_method(rerun, target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0
    after = snapshot(target)
    assert after["usr_0000001"] == (b"between", before["usr_0000001"][1])
    assert all(after[k] == v for k, v in before.items() if k in after and k != "usr_0000001")
    state = _state(target)
    assert state["triggers"] == [] and state["new"] == [(None, None)] and state["scratch"] == [(None,)]
    assert query(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated") == [(0,)]


# ------------------------------------------------------ 9. more refusals and failures after the swap


def test_an_invalid_index_is_refused_before_any_change(migrated, pg_bin):  # noqa: F811
    """A failed ``CREATE UNIQUE INDEX CONCURRENTLY`` leaves an INVALID index: the build
    would re-create it (valid) and fail on the duplicates after all the work, or turn a
    broken index into a working one. Refused before the down SQL."""
    target, backup, _, _, _ = migrated
    conn = target.connect()
    conn.autocommit = True
    try:
        with pytest.raises(Exception, match="could not create unique index"), conn.cursor() as cur:
            cur.execute('CREATE UNIQUE INDEX CONCURRENTLY users_client_uq ON users ("clientId")')
    finally:
        conn.close()
    assert query(target, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_client_uq'::regclass") == [(False,)]
    with pytest.raises(RollbackError, match="refused, nothing changed.*users_client_uq") as err:
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert err.value.lock_attempts == () and _column_defs(target) == []


@pytest.mark.timeout(120)
def test_a_validation_that_fails_after_the_swap_says_which_foreign_keys_are_left_not_valid(
        migrated, pg_bin, monkeypatch):  # noqa: F811
    """After the swap the foreign keys are NOT VALID until validated; when the validation
    cannot get its lock the error must say so (a later rebuild reads them as NOT VALID
    before and never validates them)."""
    target, backup, _, _, _ = migrated
    holder = target.connect(application_name="app-maintenance")
    real = rebuild._Run.validate_foreign_keys

    def validate(self):
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE execution_logs IN SHARE UPDATE EXCLUSIVE MODE")
        return real(self)

    monkeypatch.setattr(rebuild._Run, "validate_foreign_keys", validate)
    try:
        with pytest.raises(RollbackError, match="the swap had committed") as err:
            rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS,
                            lock_timeout_s=0.3, lock_retries=0)
    finally:
        holder.rollback()
        holder.close()
    assert query(target, """SELECT conname FROM pg_constraint WHERE contype = 'f' AND NOT convalidated""") == [
        ("execution_logs_userId_fkey",)]
    assert "NOT VALID" in str(err.value) and "execution_logs_userId_fkey" in str(err.value), str(err.value)


@pytest.mark.timeout(120)
def test_a_deadlock_of_the_swap_with_the_application_is_retried_like_a_lock_timeout(migrated, pg_bin,  # noqa: F811
                                                                                   monkeypatch):
    """The swap locks the referenced table (clients, SHARE ROW EXCLUSIVE) before users: an
    application transaction that wrote users and then writes clients closes a cycle. The
    swap waited first, so the deadlock detector (deadlock_timeout 1 s < lock_timeout 3 s)
    aborts the swap: that is a lock conflict with the application like a lock timeout,
    and must be retried, not undo the whole rebuild."""
    target, backup, _, _, _ = migrated
    app = target.connect(application_name="app-deadlock")
    real = rebuild._Run.swap
    outcome: dict = {}

    def second_write():
        try:
            with app.cursor() as cur:
                cur.execute("UPDATE clients SET name = 'renamed' WHERE id = 'cli_1'")
            app.commit()
            outcome["app"] = "committed"
        except Exception as exc:
            app.rollback()
            outcome["app"] = type(exc).__name__

    def swap(self):
        if "started" not in outcome:
            outcome["started"] = True
            with app.cursor() as cur:
                cur.execute("UPDATE users SET email = 'deadlock@example.test' WHERE id = 'usr_0000050'")
            threading.Timer(0.3, second_write).start()
        return real(self)

    monkeypatch.setattr(rebuild._Run, "swap", swap)
    try:
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    finally:
        time.sleep(0.5)
        app.close()
    assert result.mismatches == 0
    swaps = [a.outcome for a in result.lock_attempts if a.step == "swap"]
    assert swaps[-1] == "ok" and len(swaps) >= 2, swaps
    assert any("deadlock" in (a.error or "") for a in result.lock_attempts if a.step == "swap")
    assert outcome.get("app") == "committed", outcome
    if outcome.get("app") == "committed":
        assert _row(target, "usr_0000050")[0] == "deadlock@example.test"


@pytest.mark.timeout(120)
def test_the_old_tables_foreign_keys_do_not_block_the_application_after_the_swap(migrated, pg_bin,  # noqa: F811
                                                                               monkeypatch):
    """ON DELETE RESTRICT from users to clients. After the swap the application moves the
    users of a client elsewhere and deletes the client: the old table's rows (and its
    foreign key) must not stop it."""
    target, backup, _, _, _ = migrated
    query(target, """ALTER TABLE users DROP CONSTRAINT "users_clientId_fkey",
                     ADD CONSTRAINT "users_clientId_fkey" FOREIGN KEY ("clientId") REFERENCES clients (id)
                     ON DELETE RESTRICT ON UPDATE CASCADE""")
    real = rebuild._verify
    seen: dict = {}

    def verify(*args, **kwargs):
        try:
            query(target, """BEGIN; UPDATE users SET "clientId" = NULL WHERE "clientId" = 'cli_3';
                             DELETE FROM clients WHERE id = 'cli_3'; COMMIT""")
            seen["delete"] = "ok"
        except Exception as exc:
            seen["delete"] = str(exc).splitlines()[0]
        return real(*args, **kwargs)

    monkeypatch.setattr(rebuild, "_verify", verify)
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0
    assert seen["delete"] == "ok", seen


@pytest.mark.timeout(120)
def test_storage_parameters_and_column_comments_changed_during_the_rebuild_are_not_lost(migrated, pg_bin,  # noqa: F811
                                                                                       monkeypatch):
    """The build copies reloptions and column comments when it starts; the swap re-reads
    owner, grants and comments but not these: a change made meanwhile must be carried
    (or the swap refuses it, like an index change, and a retry carries it)."""
    target, backup, _, _, _ = migrated
    real = rebuild._Run.catch_up

    def catch_up(self):
        query(target, "ALTER TABLE users SET (fillfactor = 50); COMMENT ON COLUMN users.email IS 'changed'")
        return real(self)

    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    try:
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    except RollbackError as exc:
        assert "changed during the rebuild; retry" in str(exc), str(exc)
        monkeypatch.setattr(rebuild._Run, "catch_up", real)
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert query(target, """SELECT reloptions, col_description('public.users'::regclass, 2)
                            FROM pg_class WHERE oid = 'public.users'::regclass""") == [(["fillfactor=50"], "changed")]


@pytest.mark.parametrize("identity", ["FULL", "NOTHING", "DEFAULT"])
@pytest.mark.timeout(120)
def test_replica_identity_is_carried_over(migrated, pg_bin, identity):  # noqa: F811
    target, backup, _, _, _ = migrated
    query(target, f"ALTER TABLE users REPLICA IDENTITY {identity}")
    expected = query(target, "SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass")
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0
    assert query(target, "SELECT relreplident FROM pg_class WHERE oid = 'public.users'::regclass") == expected


@pytest.mark.parametrize("step", ["build", "catch_up", "validate_foreign_keys"])
@pytest.mark.timeout(120)
def test_a_connection_killed_at_a_step_raises_rollback_error_and_a_rerun_completes(migrated, pg_bin,  # noqa: F811
                                                                                   monkeypatch, step):
    """pg_terminate_backend of the rebuild's session as ``step`` begins: a RollbackError
    (not a psycopg2 error); before the swap the live table keeps its OID and takes writes,
    and a rerun restores; after it the restored table is in place."""
    target, backup, _, before, _ = migrated
    relid = _state(target)["relid"]
    real = getattr(rebuild._Run, step)

    def killed(self, *args, **kwargs):
        query(target, "SELECT pg_terminate_backend(%s)", (self.conn.get_backend_pid(),))
        return real(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(rebuild._Run, step, killed)
        with pytest.raises(RollbackError) as err:
            rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    if step == "validate_foreign_keys":
        assert "the swap had committed" in str(err.value), str(err.value)
        assert _state(target)["relid"] != relid
        after = snapshot(target)
        assert all(after[k] == v for k, v in before.items() if k in after)
        return
    assert "the connection is gone" in str(err.value), str(err.value)
    assert _state(target)["relid"] == relid
    query(target, """UPDATE users SET "passwordHash" = 'between' WHERE id = 'usr_0000001'""")
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0 and result.values_kept == 1
    state = _state(target)
    assert state["triggers"] == [] and state["new"] == [(None, None)] and state["scratch"] == [(None,)]


@pytest.mark.timeout(120)
def test_a_self_referencing_foreign_key_is_carried_over_and_validated(migrated, pg_bin, monkeypatch):  # noqa: F811
    target, backup, _, before, _ = migrated
    query(target, """ALTER TABLE users ADD COLUMN "referrerId" text
                     CONSTRAINT users_referrer_fkey REFERENCES users (id) ON DELETE SET NULL DEFERRABLE;
                     UPDATE users SET "referrerId" = 'usr_0000001' WHERE id IN ('usr_0000002', 'usr_0000003')""")
    real = rebuild._Run.catch_up

    def catch_up(self):
        query(target, """UPDATE users SET "referrerId" = 'usr_0000004' WHERE id = 'usr_0000005'""")
        query(target, "DELETE FROM users WHERE id = 'usr_0000001'")  # SET NULL on its referrals
        return real(self)

    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0
    assert query(target, """SELECT id, "referrerId" FROM users WHERE "referrerId" IS NOT NULL OR id IN
                            ('usr_0000002', 'usr_0000003') ORDER BY 1""") == [
        ("usr_0000002", None), ("usr_0000003", None), ("usr_0000005", "usr_0000004")]
    assert query(target, """SELECT conrelid::regclass::text, confrelid::regclass::text, convalidated, condeferrable
                            FROM pg_constraint WHERE conname = 'users_referrer_fkey'""") == [
        ("users", "users", True, True)]
    with pytest.raises(Exception, match="users_referrer_fkey"):
        query(target, """UPDATE users SET "referrerId" = 'nobody' WHERE id = 'usr_0000006'""")


@pytest.mark.timeout(120)
def test_writes_during_the_swaps_lock_retries_are_caught_up_outside_its_lock(migrated, pg_bin, monkeypatch):  # noqa: F811
    """The last catch-up round before the swap is small, but the swap's lock timeouts are
    retried after backoffs (0.5, 1, 2 s ...): whatever the application wrote meanwhile
    would be copied again inside the swap, under ACCESS EXCLUSIVE, however much it is.
    The round inside the swap must stay small (SMALL_ROUND)."""
    target, backup, _, _, _ = migrated
    monkeypatch.setattr(rebuild, "SMALL_ROUND", 100)
    holder = target.connect(application_name="app-long-report")
    stop = threading.Event()
    written = {"n": 0}

    def writer():
        conn = target.connect(application_name="app-writer")
        conn.autocommit = True
        with conn.cursor() as cur:
            while not stop.is_set():
                written["n"] += 1
                cur.execute("""INSERT INTO users (id, email, "updatedAt") VALUES (%s, %s, now())""",
                            (f"burst_{written['n']:06d}", f"burst{written['n']}@example.test"))
                time.sleep(0.002)
        conn.close()

    real_round, real_swap = rebuild._Run._round, rebuild._Run.swap
    in_swap: list[int] = []

    def round_(self, cur):
        taken = real_round(self, cur)
        if getattr(self, "_swapping", False):
            in_swap.append(taken)
        return taken

    def swap(self):
        with holder.cursor() as cur:
            cur.execute("SELECT count(*) FROM users")
        threading.Timer(3.0, holder.rollback).start()
        self._swapping = True
        return real_swap(self)

    monkeypatch.setattr(rebuild._Run, "_round", round_)
    monkeypatch.setattr(rebuild._Run, "swap", swap)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS,
                                 lock_timeout_s=0.2, lock_retries=6)
    finally:
        stop.set()
        thread.join(10)
        holder.close()
    assert result.mismatches == 0 and result.lock_retries >= 2
    assert in_swap and in_swap[-1] <= 100, (in_swap, written)
    assert query(target, "SELECT count(*) FROM users WHERE id LIKE 'burst_%%'") == [(written["n"],)]


@pytest.mark.timeout(120)
def test_nulls_in_a_unique_column_and_values_moved_between_rows_across_rounds(migrated, pg_bin,  # noqa: F811
                                                                             monkeypatch):
    """``authorizerId`` is UNIQUE and nullable: several rows go to NULL, and a value moves
    from one row to another across two catch-up rounds (freed in one, taken in the next);
    the new table's unique index holds at every round and the result is the live table."""
    target, backup, _, _, _ = migrated
    real_round = rebuild._Run._round
    calls = {"n": 0}

    def round_(self, cur):
        calls["n"] += 1
        if calls["n"] == 1:
            query(target, """UPDATE users SET "authorizerId" = NULL WHERE id IN ('usr_0000060', 'usr_0000061',
                             'usr_0000062')""")
        elif calls["n"] == 2:
            query(target, """UPDATE users SET "authorizerId" = 'auth-60' WHERE id = 'usr_0000063';
                             UPDATE users SET "authorizerId" = 'auth-63' WHERE id = 'usr_0000060'""")
        taken = real_round(self, cur)
        return max(taken, rebuild.SMALL_ROUND + 1) if calls["n"] <= 2 else taken  # force more rounds

    monkeypatch.setattr(rebuild._Run, "_round", round_)
    result = rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0 and result.batches >= 4
    assert query(target, """SELECT id, "authorizerId" FROM users WHERE id IN ('usr_0000060', 'usr_0000061',
                            'usr_0000062', 'usr_0000063') ORDER BY 1""") == [
        ("usr_0000060", "auth-63"), ("usr_0000061", None), ("usr_0000062", None), ("usr_0000063", "auth-60")]


@pytest.mark.timeout(120)
def test_a_capture_trigger_disabled_during_the_rebuild_is_not_trusted_at_the_swap(migrated, pg_bin,  # noqa: F811
                                                                                 monkeypatch):
    """``ALTER TABLE users DISABLE TRIGGER ALL`` (a bulk load, a restore tool) during the
    rebuild: writes made meanwhile are not captured. Still disabled at the swap: the swap
    must not trust the capture (refused, undone) rather than lose them."""
    target, backup, _, _, _ = migrated
    relid = _state(target)["relid"]
    real = rebuild._Run.catch_up

    def catch_up(self):
        query(target, """ALTER TABLE users DISABLE TRIGGER ALL;
                         UPDATE users SET "passwordHash" = 'uncaptured' WHERE id = 'usr_0000070'""")
        return real(self)

    monkeypatch.setattr(rebuild._Run, "catch_up", catch_up)
    try:
        rebuild_columns(target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    except RollbackError as exc:
        assert "disabled" in str(exc), str(exc)
        assert _state(target)["relid"] == relid
        assert _row(target, "usr_0000070")[1] == "uncaptured"
        return
    assert _row(target, "usr_0000070")[1] == "uncaptured"


def test_copy_drops_only_the_new_table_a_rebuild_marked(migrated, pg_bin):  # noqa: F811
    """``copy`` drops a killed rebuild's ``users_soak_new`` (above: it carries the marker),
    but a table of that name without the marker is someone else's: left as it was."""
    target, backup, _, _, _ = migrated
    query(target, "CREATE TABLE users_soak_new (id text PRIMARY KEY, note text)")
    query(target, "INSERT INTO users_soak_new VALUES ('x', 'not ours')")
    result = restore_by_method("copy", target, backup, pg_bin, down_sql=DOWN_SQL, **USERS_COLUMNS)
    assert result.mismatches == 0
    assert query(target, "SELECT id, note FROM users_soak_new") == [("x", "not ours")]
