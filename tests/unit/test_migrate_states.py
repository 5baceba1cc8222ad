"""``migrate._states``: the ledger rows and local folders folded into one state per
migration, as ``prisma migrate status`` reads them (no database needed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from migration_soak.migrate import APPLIED, FAILED, PENDING, ROLLED_BACK, _Local, _Row, _states, migration_checksum

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SCRIPT = b"ALTER TABLE users DROP COLUMN legacy;\n"


def local(name: str, script: bytes = SCRIPT) -> _Local:
    return _Local(name=name, path=Path("/migrations") / name, script=script)


def row(name: str, minute: int, *, finished: bool = True, rolled_back: bool = False,
        checksum: str = migration_checksum(SCRIPT), logs: str | None = None) -> _Row:
    started = T0 + timedelta(minutes=minute)
    return _Row(id=f"{name}-{minute}", checksum=checksum, finished_at=started + timedelta(seconds=1) if finished else None,
                migration_name=name, logs=logs, rolled_back_at=started + timedelta(seconds=2) if rolled_back else None,
                started_at=started, applied_steps_count=1 if finished else 0)


def only(states):
    assert len(states) == 1
    return states[0]


def test_no_row_is_pending_with_nothing_from_the_ledger():
    state = only(_states([local("a")], []))
    assert (state.state, state.checksum, state.local) == (PENDING, migration_checksum(SCRIPT), True)
    assert (state.started_at, state.finished_at, state.rolled_back_at, state.logs, state.db_checksum) == (None,) * 5
    assert (state.applied_steps_count, state.modified) == (0, False)


def test_a_failed_row_wins_over_a_finished_one_and_the_latest_failed_row_is_shown():
    rows = [row("a", 1), row("a", 2, finished=False, logs="first"), row("a", 3, finished=False, logs="second")]
    state = only(_states([local("a")], rows))
    assert (state.state, state.logs, state.started_at) == (FAILED, "second", T0 + timedelta(minutes=3))


def test_the_latest_live_row_decides_an_applied_migration():
    rows = [row("a", 1, rolled_back=True), row("a", 2), row("a", 3)]
    state = only(_states([local("a")], rows))
    assert (state.state, state.started_at, state.applied_steps_count) == (APPLIED, T0 + timedelta(minutes=3), 1)
    assert state.rolled_back_at is None


def test_only_rolled_back_rows_is_rolled_back_from_the_latest_one():
    rows = [row("a", 1, rolled_back=True), row("a", 2, finished=False, rolled_back=True)]
    state = only(_states([local("a")], rows))
    assert (state.state, state.started_at, state.finished_at) == (ROLLED_BACK, T0 + timedelta(minutes=2), None)
    assert state.rolled_back_at == T0 + timedelta(minutes=2, seconds=2) and state.is_pending


def test_modified_only_for_an_applied_local_migration_whose_file_changed():
    changed = local("a", b"ALTER TABLE users DROP COLUMN other;\n")
    assert only(_states([changed], [row("a", 1)])).modified
    assert not only(_states([local("a", SCRIPT.replace(b"\n", b"\r\n"))], [row("a", 1)])).modified  # line endings
    assert not only(_states([changed], [row("a", 1, checksum="")])).modified  # no checksum recorded
    assert not only(_states([changed], [row("a", 1, finished=False)])).modified  # failed
    assert not only(_states([changed], [row("a", 1, rolled_back=True)])).modified  # rolled back


def test_ledger_rows_without_a_folder_are_listed_not_local_and_all_in_name_order():
    states = _states([local("b"), local("a")], [row("c", 1), row("a", 2)])
    assert [(s.name, s.state, s.local) for s in states] == [("a", APPLIED, True), ("b", PENDING, True),
                                                          ("c", APPLIED, False)]
    gone = states[2]
    assert (gone.checksum, gone.db_checksum, gone.modified, gone.is_pending) == (None, migration_checksum(SCRIPT),
                                                                                False, False)


def test_rows_of_other_migrations_do_not_mix():
    rows = [row("a", 1, finished=False), replace(row("b", 2), id="b")]
    states = {s.name: s.state for s in _states([local("a"), local("b")], rows)}
    assert states == {"a": FAILED, "b": APPLIED}
