"""What a migration or down SQL may not do itself (pglast): set its own lock_timeout or
statement_timeout, control its transaction (down SQL), re-add a dropped column with a
DEFAULT that is not a constant (down SQL)."""

import re

import pytest

from migration_soak.exceptions import MigrationError
from migration_soak.migrate import (check_down_sql, check_own_timeouts, own_timeout_statements, readded_defaults,
                                    transaction_statements)
from migration_soak.plan import REPO_ROOT, load_plan

PLAN = load_plan("default")
DOWN = (REPO_ROOT / PLAN.migration.down_sql).read_text()
DROP = 'ALTER TABLE "users" DROP COLUMN "passwordHash";'


@pytest.mark.parametrize("setting", [
    "SET lock_timeout = 0;",
    "SET LOCAL lock_timeout = '1h';",
    "set Lock_Timeout to default;",
    'SET "statement_timeout" = 0;',
    "SET SESSION statement_timeout = '10min';",
    "RESET lock_timeout;",
    "RESET ALL;",
    "SELECT set_config('lock_timeout', '0', false);",
    "SELECT pg_catalog.set_config('STATEMENT_TIMEOUT', '0', true);",
    "SELECT set_config(current_setting('app.which'), '0', true);",  # cannot tell which setting: refused
    "DO $$ BEGIN PERFORM set_config('lock_timeout', '0', true); END $$;",
    "DO $$ BEGIN EXECUTE 'SET lock_timeout = 0'; END $$;",
    "ALTER ROLE app SET lock_timeout = 0;",
    "CREATE FUNCTION f() RETURNS void LANGUAGE sql SET lock_timeout = 0 AS 'SELECT 1';",
])
def test_a_script_that_sets_its_own_timeout_is_refused_naming_the_file_and_statement(setting):
    script = setting + "\n" + DROP
    assert own_timeout_statements(script) == [setting.rstrip(";")]
    with pytest.raises(MigrationError, match=r"^migrations/x/migration\.sql sets its own timeout: ['\"]"
                                             + re.escape(setting.rstrip(";")[:12])):
        check_own_timeouts(script, "migrations/x/migration.sql")


@pytest.mark.parametrize("script", [
    DROP,
    "SELECT set_config('search_path', 'public', true); " + DROP,
    "SET LOCAL work_mem = '64MB'; " + DROP,
    "SELECT 'SET lock_timeout = 0' AS quoted_text; " + DROP,  # a string, not a statement
    "-- SET lock_timeout = 0\n" + DROP,
])
def test_other_settings_and_mentions_in_text_pass(script):
    assert own_timeout_statements(script) == []
    check_own_timeouts(script, "m.sql")


def test_a_script_that_does_not_parse_is_refused_naming_it():
    with pytest.raises(MigrationError, match=r"^m\.sql does not parse"):
        check_own_timeouts("ALTER TABLE users DROP COLUMN", "m.sql")


def test_transaction_statements_are_found_at_top_level_and_in_do_blocks():
    script = ("BEGIN; " + DROP + " COMMIT; SAVEPOINT s; DO $$ BEGIN COMMIT; END $$; "
              "SELECT 'COMMIT'; DO $$ BEGIN PERFORM 1; END $$;")
    assert transaction_statements(script) == ["BEGIN", "COMMIT", "SAVEPOINT s", "DO $$ BEGIN COMMIT; END $$"]


@pytest.mark.parametrize(("default", "constant"), [
    ("false", True), ("'x'::text", True), ("NULL", True), ("-1", True), ("'2025-01-01'::timestamp", True),
    ("CURRENT_TIMESTAMP", False), ("now()", False), ("gen_random_uuid()::text", False), ("random()", False),
    ("clock_timestamp()", False), ("1 + 1", False),
])
def test_readded_defaults_names_a_dropped_column_whose_default_is_not_a_literal(default, constant):
    script = (f'ALTER TABLE "users" ADD COLUMN IF NOT EXISTS "passwordHash" TEXT DEFAULT {default}, '
              'ADD COLUMN "other" timestamp DEFAULT now();')  # not a dropped column: not ours to judge
    found = readded_defaults(script, "users", ["passwordHash"])
    assert found == ([] if constant else [("passwordHash", default)])
    assert readded_defaults(script.replace('"users"', "orders"), "users", ["passwordHash"]) == []
    assert len(readded_defaults(script.replace('"users"', "public.users"), "users", ["passwordHash"])) == (not constant)


def test_the_default_plans_down_sql_passes():
    check_down_sql(DOWN, "down.sql", PLAN.migration.table, PLAN.migration.dropped_columns)


@pytest.mark.parametrize(("script", "message"), [
    ("BEGIN;\n" + DOWN + "COMMIT;\nALTER TABLE execution_logs ADD COLUMN note text;",
     r"down\.sql has its own transaction control: 'BEGIN'"),
    ("SET lock_timeout = 0;\n" + DOWN, r"down\.sql sets its own timeout: 'SET lock_timeout = 0'"),
    (DOWN.replace('"passwordHash" TEXT', '"passwordHash" TEXT DEFAULT gen_random_uuid()::text'),
     r"down\.sql re-adds users\.passwordHash with DEFAULT gen_random_uuid\(\)::text, not a constant \(a volatile"),
    (DOWN.replace("DEFAULT false", "DEFAULT (now() > '2000-01-01')"),
     r"re-adds users\.emailVerified with DEFAULT \(now\(\) > '2000-01-01'\), not a constant"),
    (DOWN + "ALTER TABLE users ADD COLUMN", r"down\.sql does not parse"),
])
def test_a_down_sql_that_would_run_without_the_lock_timeout_or_lose_values_is_refused(script, message):
    with pytest.raises(MigrationError, match=message):
        check_down_sql(script, "down.sql", "users", ["passwordHash", "emailVerified"])
