"""sources.sql_guard: which plan SQL texts may run inside the soak's read-only transaction,
decided by PostgreSQL's grammar (pglast), never a regex (comments and strings fool those)."""

import pytest

from migration_soak.plan import SQL_DIR
from migration_soak.sources.sql_guard import UnsafeSql, check


@pytest.mark.parametrize("path", sorted(SQL_DIR.glob("*.sql")), ids=lambda p: p.name)
def test_the_plan_sql_files_pass(path):
    assert check(path.read_text(encoding="utf-8")) >= 1


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "SELECT 'COMMIT; SET statement_timeout = 0' AS text -- COMMIT",
    "/* ROLLBACK */ SELECT $$END$$",
    "EXPLAIN ANALYZE SELECT * FROM users WHERE id = 'x'",
    "EXPLAIN ANALYZE DELETE FROM users",  # the server's read-only transaction refuses it
    "SET LOCAL work_mem = '64MB'; SELECT 1",
    "SELECT set_config('work_mem', '64MB', true)",
    "SELECT set_config('work_mem', '64MB', 'on'::boolean)",
    "SELECT pg_advisory_xact_lock(1)",
    "SHOW statement_timeout",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)",  # three tsqueries: no SQL text
])
def test_allowed(sql):
    check(sql)


@pytest.mark.parametrize("sql, number, why", [
    ("SELECT 1; COMMIT", 2, "transaction control (COMMIT/END)"),
    ("SELECT 1;\n/* done */ END", 2, "it would have ended the soak's read-only transaction"),
    ("ROLLBACK", 1, "transaction control (ROLLBACK/ABORT)"),
    ("ABORT", 1, "transaction control (ROLLBACK/ABORT)"),
    ("BEGIN; SELECT 1", 1, "transaction control (BEGIN)"),
    ("PREPARE TRANSACTION 'x'", 1, "PREPARE TRANSACTION"),
    ("COMMIT PREPARED 'x'", 1, "COMMIT PREPARED"),
    ("SAVEPOINT a; SELECT 1; RELEASE a", 1, "savepoints"),
    ("ROLLBACK TO SAVEPOINT a", 1, "savepoints"),
    ("SET statement_timeout = 0; SELECT pg_sleep(60)", 1, "relies on statement_timeout"),
    ("SET LOCAL statement_timeout = 0", 1, "relies on statement_timeout"),
    ("SET SESSION default_transaction_read_only = off", 1, "relies on default_transaction_read_only"),
    ("RESET statement_timeout", 1, "relies on statement_timeout"),
    ("RESET ALL", 1, "RESET ALL"),
    ("SET TRANSACTION READ WRITE", 1, "transaction's characteristics"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", 1, "transaction's characteristics"),
    ("SET application_name = 'x'", 1, "relies on application_name"),
    ("SET ROLE admin", 1, "runs as the connection's role"),
    ("SET work_mem = '1GB'", 1, "session-wide"),
    ("RESET work_mem", 1, "SET LOCAL work_mem"),
    ("SELECT set_config('statement_timeout', '0', true)", 1, "relies on statement_timeout"),
    ("SELECT set_config('work_mem', '1GB', false)", 1, "session-wide"),
    ("SELECT set_config(name, '1', true) FROM pg_settings", 1, "computed setting name"),
    ("SELECT 1; SELECT pg_advisory_lock(72707369)", 2, "session-level advisory lock"),
    ("EXPLAIN ANALYZE SELECT pg_catalog.pg_try_advisory_lock_shared(1, 2)", 1, "pg_try_advisory_xact_lock_shared"),
    # found by review3 (PostgreSQL 18): a READ ONLY transaction lets pg_backup_start run (a
    # forced checkpoint), and after its ROLLBACK the server session still holds the backup
    # ("a backup is already in progress in this session"), handed by the pooler to the next client
    ("SELECT pg_backup_start('soak', true)", 1, "pg_backup_start() changes the server session past this transaction"),
    ("SELECT pg_catalog.pg_start_backup('soak')", 1, "pg_start_backup() changes the server session"),
    ("SELECT * FROM pg_backup_stop()", 1, "pg_backup_stop() changes the server session"),
    ("SELECT pg_replication_origin_session_setup('o')", 1, "changes the server session past this transaction"),
    ("DO $$ BEGIN PERFORM 1; END $$", 1, "a DO block"),
    ("CALL refresh()", 1, "CALL"),
    ("PREPARE q AS SELECT 1", 1, "prepared statements"),
    ("DISCARD ALL", 1, "DISCARD"),
    ("LOAD 'auto_explain'", 1, "LOAD"),
    # SQL run from text: set_config out of the parser's sight (found by review: ts_stat's
    # query switched the timeout off for the rest of the file)
    ("SELECT * FROM ts_stat('SELECT to_tsvector(set_config(''statement_timeout'',''0'',false))'); "
     "SELECT pg_sleep(2)", 1, "ts_stat() runs SQL given as text"),
    ("SELECT ts_rewrite('a & b'::tsquery, 'SELECT t, s FROM aliases')", 1, "ts_rewrite() runs SQL"),
    ("SELECT query_to_xml('SELECT 1', true, false, '')", 1, "query_to_xml() runs SQL"),
    ("SELECT * FROM dblink('dbname=x', 'SELECT 1') AS t(a int)", 1, "dblink() runs SQL"),
])
def test_refused(sql, number, why):
    with pytest.raises(UnsafeSql) as err:
        check(sql)
    assert err.value.statement == number
    assert f"statement {number} of " in str(err.value) and why in str(err.value), str(err.value)


def test_the_refusal_names_line_and_text_and_a_parse_error_its_line():
    with pytest.raises(UnsafeSql, match=r"^statement 2 of 3 \(line 4: COMMIT\): "):
        check("-- a comment\nSELECT 1;\n\n/* more */ COMMIT;\nSELECT 2")
    with pytest.raises(UnsafeSql, match=r"PostgreSQL's parser \(pglast\) rejects it: syntax error .*\(line 2\)"):
        check("SELECT 1;\nSELEC 2")


@pytest.mark.parametrize("sql, name", [
    # found by review: dblink lives in the schema its extension was created in, so it is
    # usually called schema-qualified; those calls passed check() and check_reads() (only
    # pg_catalog-qualified names were looked at), and dblink_exec runs its text on a
    # connection of its own, outside the soak's read-only transaction: the write commits
    ("SELECT public.dblink_exec('dbname=staging', 'DELETE FROM users')", "dblink_exec"),
    ("SELECT * FROM extensions.dblink('dbname=staging', 'SELECT 1') AS t(a int)", "dblink"),
    # dblink_connect keeps a named connection open in the server session after the
    # transaction: the pooler hands it to the next client
    ("SELECT dblink_connect('c', 'dbname=staging')", "dblink_connect"),
    ("SELECT public.dblink_connect_u('c', 'dbname=staging')", "dblink_connect_u"),
])
def test_dblink_in_any_schema_is_refused(sql, name):
    with pytest.raises(UnsafeSql, match=rf"{name}\(\) runs SQL on a connection of its own"):
        check(sql)


@pytest.mark.parametrize("sql", ["SELECT pg_stat_statements_reset()",
                                 "SELECT public.pg_stat_statements_reset()",
                                 "SELECT extensions.pg_stat_statements_reset(0, 0, 0)"])
def test_resetting_pg_stat_statements_is_refused_at_load(sql):
    """Found by review: pg_stat_reset*() was refused, but the extension's
    pg_stat_statements_reset() (in whatever schema the extension was created in) loaded:
    a read-only transaction lets it through, and every reading wiped the server's query
    statistics the DBA reads the soak's slow queries from."""
    from migration_soak.sources.sql_guard import check_reads

    with pytest.raises(UnsafeSql, match=r"pg_stat_statements_reset\(\) writes or acts on the server"):
        check_reads(sql)
