"""migrate.check_drops: the plan's dropped_columns against what the migration's SQL drops (pglast)."""

import pytest

from migration_soak.exceptions import MigrationError


@pytest.mark.parametrize(("script", "listed", "message"), [
    ('ALTER TABLE "users" DROP COLUMN "a", DROP COLUMN "b";', ["a", "b"], None),
    ('ALTER TABLE public.users DROP COLUMN IF EXISTS "b" CASCADE; ALTER TABLE users DROP COLUMN a', ["b", "a"], None),
    ('ALTER TABLE "users" DROP COLUMN "a", DROP COLUMN "b";', ["a"], r"leaves out \['b'\]"),
    ('ALTER TABLE "users" DROP COLUMN "a";', ["a", "c"], r"lists \['c'\], which the migration does not drop"),
    ('ALTER TABLE "users" DROP COLUMN "a"; ALTER TABLE orders DROP COLUMN note;', ["a"],
     r"drops column public.orders.note: the rollback can restore only"),
    ('ALTER TABLE "users" DROP COLUMN "a"; DROP TABLE legacy.sessions;', ["a"], r"drops table legacy.sessions"),
    ('ALTER TABLE "users" ADD COLUMN "a" text', ["a"], r"lists \['a'\], which the migration does not drop"),
    ('ALTER TABLE "users" DROP COLUMN', ["a"], "does not parse"),
])
def test_check_drops_holds_the_plan_to_what_the_migration_drops(script, listed, message):
    from migration_soak.migrate import check_drops

    if message is None:
        check_drops(script, "users", listed)
    else:
        with pytest.raises(MigrationError, match=message):
            check_drops(script, "users", listed)


@pytest.mark.parametrize(("script", "message"), [
    ('ALTER TABLE users DROP COLUMN a; DO $$ BEGIN IF true THEN ALTER TABLE users DROP COLUMN b; END IF; END $$;',
     r"leaves out \['b'\]"),
    ("ALTER TABLE users DROP COLUMN a; DO $$ BEGIN EXECUTE 'ALTER TABLE users DROP COLUMN ' || 'b'; END $$;",
     "dynamic SQL .* mentions DROP"),
    ("ALTER TABLE users DROP COLUMN a; DO LANGUAGE plperl $$ 1; $$;", "DO block in plperl"),
])
def test_a_do_block_is_read_as_part_of_the_migration(script, message):
    from migration_soak.migrate import check_drops

    with pytest.raises(MigrationError, match=message):
        check_drops(script, "users", ["a"])


def test_a_do_block_without_drops_and_a_function_body_are_fine():
    from migration_soak.migrate import check_drops

    check_drops("ALTER TABLE users DROP COLUMN a; DO $$ BEGIN UPDATE users SET x = 1; "
                "EXECUTE 'ANALYZE users'; END $$; CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$ "
                "BEGIN ALTER TABLE users DROP COLUMN b; END $f$;", "users", ["a"])


@pytest.mark.parametrize(("script", "table", "message"), [
    # The migration moves its own search_path: its unqualified names are then in that schema
    # (both backends run it with search_path = the plan's schema, public, first). On main
    # these two passed: check_drops read public.users while the DDL dropped app.users' column.
    ('SET search_path TO app;\nALTER TABLE "users" DROP COLUMN "a";', "users", r"drops column app\.users\.a"),
    ("SELECT pg_catalog.set_config('search_path', 'app', false); ALTER TABLE users DROP COLUMN a", "users",
     r"drops column app\.users\.a"),
    ("SET search_path TO app; DROP TABLE sessions; ALTER TABLE users DROP COLUMN a", "app.users",
     r"drops table app\.sessions"),
    # A path whose first schema is not certain, or one the SQL does not say: refused, named.
    ("SET search_path TO app, public; ALTER TABLE users DROP COLUMN a", "users",
     r"'SET search_path TO app, public'.*ALTER TABLE users DROP COLUMN a.*qualify"),
    ("SET search_path = '$user'; ALTER TABLE users DROP COLUMN a", "users", "search_path"),
    ("RESET search_path; ALTER TABLE users DROP COLUMN a", "users", r"RESET search_path.*qualify"),
    ("SET LOCAL search_path TO DEFAULT; ALTER TABLE users DROP COLUMN a", "users", "qualify"),
    ("SELECT set_config(name, 'app', false) FROM (VALUES ('search_path')) v(name); ALTER TABLE users DROP COLUMN a",
     "users", "qualify"),
    ("DO $$ BEGIN PERFORM set_config('search_path', 'app', false); END $$; ALTER TABLE users DROP COLUMN a", "users",
     r"DO block.*search_path.*qualify"),
])
def test_unqualified_names_follow_the_migrations_own_search_path(script, table, message):
    from migration_soak.migrate import check_drops

    with pytest.raises(MigrationError, match=message):
        check_drops(script, table, ["a"])


@pytest.mark.parametrize(("script", "table"), [
    ("SET search_path TO app; ALTER TABLE public.users DROP COLUMN a", "users"),
    ("SET search_path TO app; ALTER TABLE users DROP COLUMN a", "app.users"),
    ('SET search_path = "public"; ALTER TABLE users DROP COLUMN a', "users"),
    ("SET search_path TO app; SET search_path TO public; ALTER TABLE users DROP COLUMN a", "users"),
    ("SET search_path TO app, public; ALTER TABLE public.users DROP COLUMN a", "users"),
])
def test_a_search_path_that_decides_nothing_or_one_schema_is_fine(script, table):
    from migration_soak.migrate import check_drops

    check_drops(script, table, ["a"])
