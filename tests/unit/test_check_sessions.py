"""Issue 14 item 5: the data-loss readings' queries run read-only, with a
``statement_timeout``, on a connection carrying the soak's application name; checked on
the statements sent, before the first that reads the table."""

from __future__ import annotations

import pytest

from migration_soak import fingerprint
from migration_soak.pgconn import PgTarget
from migration_soak.sources import data_loss


class _Cursor:
    def __init__(self, sent: list[str], answers: list):
        self.sent, self.answers = sent, answers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, statement, params=None):
        self.sent.append(statement if isinstance(statement, str) else repr(statement))

    def fetchone(self):
        return self.answers.pop(0)

    def fetchall(self):
        return self.answers.pop(0)


class _Conn:
    def __init__(self, sent, answers):
        self.sent, self.answers, self.closed = sent, answers, False

    def cursor(self):
        return _Cursor(self.sent, self.answers)

    def rollback(self):
        self.sent.append("ROLLBACK")

    def close(self):
        self.closed = True


@pytest.fixture
def target(monkeypatch):
    sent: list[str] = []
    answers: list = []
    kwargs: dict = {}
    t = PgTarget("h", 5432, "db", "u", "pw")

    def connect(**kw):
        kwargs.update(kw)
        return _Conn(sent, answers)

    monkeypatch.setattr(PgTarget, "connect", lambda self, **kw: connect(**kw))
    monkeypatch.setattr(fingerprint, "_columns_of", lambda cur, schema, name: {"id", "email", "createdAt"})
    return t, sent, answers


def _session_first(sent: list[str], reads: str) -> None:
    first_read = next(i for i, s in enumerate(sent) if reads in s.replace("'", ""))
    head = " | ".join(sent[:first_read])
    assert "READ ONLY" in sent[0] and "statement_timeout" in head


def test_the_key_reading_is_read_only_with_a_statement_timeout(target):
    t, sent, answers = target
    fp = fingerprint.Fingerprint("users", "id", ("email",), "createdAt", "2025-01-01", "2025-01-01T00:00:00", 2,
                                 {"email": 2}, 2, {f: [0] * 6 for f in ("n", "key", "row", "mask", "check")},
                                 {"n": [1, 1], "digest": [0, 0], "non_null": {"email": [1, 1]}})
    answers.append((2, 0))
    reading = fingerprint.compare_keys(fp, t)
    assert reading.rows_now == 2
    _session_first(sent, "bit_xor")
    assert sent[-1] == "ROLLBACK"


def test_the_baselines_column_probe_is_read_only_with_a_statement_timeout(target):
    t, sent, answers = target
    answers.append((1,))
    assert data_loss._has_column(t, "users", "createdAt")
    _session_first(sent, "information_schema.columns")
