"""A restore's error text holds no row value (a password hash is a secret): the server's
primary message and SQLSTATE only, quoted values removed (pgconn.server_error_text), in
the RollbackError and in the lock attempts it carries (both go into the ``restore_failed``
event, the task log, the report and Slack)."""

from __future__ import annotations

import json

import psycopg2
import pytest

from migration_soak.backup import take_backup
from migration_soak.exceptions import RollbackError
from migration_soak.migrate import LedgerBackend
from migration_soak.pgconn import server_error_text
from migration_soak.rollback import restore_by_method

from .conftest import DOWN_SQL, MIGRATIONS, USERS_COLUMNS, query, snapshot


@pytest.mark.parametrize("method", ["copy", "rebuild"])
def test_a_failed_cast_puts_no_password_hash_in_the_error(seeded, pg_bin, tmp_path, method):
    """Reviewer's reproduction (test_a_failed_cast_puts_a_password_hash_in_the_error): a down
    SQL re-adding ``passwordHash`` as UUID; the server's cast error quotes the hash."""
    hashes = {v[0].decode() for v in snapshot(seeded).values()}
    backup = take_backup(seeded, tmp_path / "b", pg_bin, "pre")
    LedgerBackend(seeded, MIGRATIONS).deploy()
    down = tmp_path / "down.sql"
    down.write_text(DOWN_SQL.read_text().replace('"passwordHash" TEXT', '"passwordHash" UUID'))
    with pytest.raises(RollbackError) as caught:
        restore_by_method(method, seeded, backup, pg_bin, down_sql=down, **USERS_COLUMNS)
    text = str(caught.value)
    assert 'invalid input syntax for type uuid: "…" (SQLSTATE 22P02)' in text, text
    attempts = json.dumps(getattr(caught.value, "lock_attempts", ()), ensure_ascii=False)
    for where in (text, attempts):
        leaked = [h for h in hashes if h in where]
        assert not leaked, f"stored passwordHash values {leaked[:3]} in {where[:400]!r}"


def _error(target, statement: str, copy_text: str | None = None) -> psycopg2.Error:
    conn = target.connect()
    try:
        with conn.cursor() as cur:
            if copy_text is None:
                cur.execute(statement)
            else:
                import io

                cur.copy_expert(statement, io.StringIO(copy_text))
    except psycopg2.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{statement} did not fail")


def test_server_errors_that_quote_row_values_lose_them(target):
    """The real server's messages: COPY's CONTEXT quotes the line, 23505's DETAIL the key,
    a cast error the value (with quotes and a newline in it), 22003 puts it mid-message."""
    query(target, """CREATE TABLE t (id int PRIMARY KEY, h text UNIQUE, n smallint);
                     INSERT INTO t VALUES (1, 'secret-hash-1', 1)""")
    secret = 'secret "quoted"\nhash-2'
    cases = [
        (_error(target, "COPY t (id, h, n) FROM STDIN", "2\tsecret-hash-2\tsecret-n\n"),
         'invalid input syntax for type smallint: "…" (SQLSTATE 22P02)'),
        (_error(target, "COPY t (id, h, n) FROM STDIN", "2\tsecret-hash-2\t2\textra\n"),
         "extra data after last expected column (SQLSTATE 22P04)"),
        (_error(target, "INSERT INTO t VALUES (2, 'secret-hash-1', 2)"),
         'duplicate key value violates unique constraint "t_h_key" (SQLSTATE 23505)'),
        (_error(target, "SELECT %s::uuid" % psycopg2.extensions.QuotedString(secret).getquoted().decode()),
         'invalid input syntax for type uuid: "…" (SQLSTATE 22P02)'),
        (_error(target, "SELECT '12345678'::text::smallint"),
         'value "…" is out of range for type smallint (SQLSTATE 22003)'),
        (_error(target, "UPDATE t SET id = NULL"),
         'null value in column "id" of relation "t" violates not-null constraint (SQLSTATE 23502)'),
    ]
    for exc, expected in cases:
        assert "secret" in str(exc) or "12345678" in str(exc)  # the raw text has it
        text = server_error_text(exc)
        assert text == expected, (text, str(exc))
        assert "secret" not in text and "12345678" not in text
