"""pgconn.server_error_text, the one way a restore's error text is built from a database
error: primary message and SQLSTATE only, no row value (no database here)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from migration_soak.pgconn import server_error_text


class FakeServerError(Exception):
    def __init__(self, code: str, primary: str | None, full: str = ""):
        super().__init__(full or f"ERROR:  {primary}")
        self.pgcode = code
        self.pgerror = full or f"ERROR:  {primary}\nDETAIL:  Key (h)=(secret) already exists.\n"
        self.diag = SimpleNamespace(message_primary=primary)


@pytest.mark.parametrize("code, primary, expected", [
    # a value holding quotes and a newline: everything to the message's last quote goes
    ("22P02", 'invalid input syntax for type uuid: "quote\'s "double"\nsecret"',
     'invalid input syntax for type uuid: "…" (SQLSTATE 22P02)'),
    ("22003", 'value "99999" is out of range for type smallint', 'value "…" is out of range for type smallint '
                                                                  "(SQLSTATE 22003)"),
    ("22021", 'invalid byte sequence for encoding "UTF8": 0xe2 0x28', 'invalid byte sequence for encoding "UTF8": … '
                                                                     "(SQLSTATE 22021)"),
    ("22001", "value too long for type character varying(12)",
     "value too long for type character varying(12) (SQLSTATE 22001)"),
    ("22P04", 'missing data for column "passwordHash"', 'missing data for column "passwordHash" (SQLSTATE 22P04)'),
    ("23514", 'new row for relation "users" violates check constraint "c"',
     'new row for relation "users" violates check constraint "c" (SQLSTATE 23514)'),
    ("23505", 'duplicate key value violates unique constraint "users_email_key"',
     'duplicate key value violates unique constraint "users_email_key" (SQLSTATE 23505)'),
    ("P0001", "bad hash $2b$10$secret", "message not shown (a PL/pgSQL RAISE, e.g. a trigger's: it may quote row "
                                        "values) (SQLSTATE P0001)"),
    ("42703", 'column "x" does not exist', 'column "x" does not exist (SQLSTATE 42703)'),
    ("55P03", "canceling statement due to lock timeout", "canceling statement due to lock timeout (SQLSTATE 55P03)"),
])
def test_the_primary_message_and_sqlstate_without_values(code, primary, expected):
    assert server_error_text(FakeServerError(code, primary)) == expected


def test_never_detail_or_context_and_the_first_line_without_diag():
    exc = FakeServerError("22P02", None, 'ERROR:  invalid input syntax for type integer: "secret"\n'
                                         'CONTEXT:  COPY t, line 3, column n: "secret"\n')
    assert server_error_text(exc) == 'invalid input syntax for type integer: "…" (SQLSTATE 22P02)'
    assert "already exists" not in server_error_text(FakeServerError("23505", "duplicate key value"))


def test_an_error_without_sqlstate_is_its_first_line():
    assert server_error_text(OSError("server closed the connection unexpectedly\n\tThis probably means")) == \
        "server closed the connection unexpectedly"
    assert server_error_text(RuntimeError()) == "RuntimeError"


def test_a_syntax_error_keeps_the_statement_excerpt_that_finds_the_typo():
    exc = FakeServerError("42601", 'syntax error at or near "EXISTS"',
                          'ERROR:  syntax error at or near "EXISTS"\nLINE 1: ALTER TABLE "users" ADD COLUMNN IF NOT '
                          'EXISTS "x" TEXT;\n                                           ^\n')
    assert server_error_text(exc) == ('syntax error at or near "EXISTS" (SQLSTATE 42601) at LINE 1: ALTER TABLE "users" '
                                      'ADD COLUMNN IF NOT EXISTS "x" TEXT;')
