"""topup.Closing's lock budget: the application's writes queue behind the migration's
transaction no longer than one ``lock_timeout`` in all (the SHARE lock's wait, the copy and
the DDL's wait together), whatever branch the closing top-up takes."""

from __future__ import annotations

from pathlib import Path

from migration_soak import topup


class _Cursor:
    """Records statements; the LOCK takes ``lock_ms`` of the fake clock."""

    def __init__(self, clock: list[float], lock_ms: float):
        self.clock, self.lock_ms, self.executed = clock, lock_ms, []

    def execute(self, statement, params=None):
        text = statement if isinstance(statement, str) else repr(statement)
        self.executed.append((text, params))
        if "LOCK TABLE" in text:
            self.clock[0] += self.lock_ms / 1000


def test_a_lock_granted_at_the_end_of_the_budget_leaves_the_ddl_no_second_budget(monkeypatch, tmp_path: Path):
    # Found by review: when LOCK ... IN SHARE MODE was granted with less than 2 ms of the
    # migration's lock_timeout left, the closing top-up was skipped and returned without
    # setting lock_timeout to what is left, so the DDL waited for its ACCESS EXCLUSIVE lock
    # a whole lock_timeout more while holding SHARE: the application's writes queued up to
    # twice lock_timeout_s (1.0 s for 0.5 s).
    clock = [100.0]
    monkeypatch.setattr(topup.time, "monotonic", lambda: clock[0])
    closing = topup.Closing("users", "id", ["passwordHash"], "1000", tmp_path, 500)
    cur = _Cursor(clock, lock_ms=499.6)
    closing(cur)
    assert closing.taken is None and "the whole 500 ms" in (closing.skipped or "")
    settings = [params for text, params in cur.executed if "set_config('lock_timeout'" in text]
    assert settings == [("1ms",)], cur.executed
