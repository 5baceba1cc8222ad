"""Faults around the pre-migration backup (issue 4, item 4): each fails with a
``BackupError`` naming the target (never its password) and leaves no dump behind, so the
DAG's ``backup`` task fails and ``migrate`` never starts."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from migration_soak import archive
from migration_soak.backup import BackupRecord, take_backup, verify_backup
from migration_soak.exceptions import BackupError
from migration_soak.migrate import LedgerBackend
from migration_soak.pgconn import PgTarget
from tests.integration.conftest import DROP, MIGRATIONS, query
from tests.integration.test_backup import (
    test_missing_password_fails_at_once_instead_of_prompting as _missing_password_case,
    test_older_pg_dump_is_refused as _older_pg_dump_case,
    test_truncated_dump_lists_fine_but_fails_verification as _truncated_verify_case,
)

REPO = Path(__file__).resolve().parents[2]


def _fake_bin(tmp_path: Path, pg_bin: Path, pg_dump_body: str) -> Path:
    """A bin folder: the real ``pg_restore`` and a ``pg_dump`` shell script whose
    ``--version`` is the real one and whose dump is ``pg_dump_body`` (``$REAL`` is the
    real pg_dump; ``take_backup`` reads the archive from the script's stdout)."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "pg_restore").symlink_to(pg_bin / "pg_restore")
    script = fake / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        f'REAL="{pg_bin / "pg_dump"}"\n'
        'if [ "$1" = "--version" ]; then exec "$REAL" --version; fi\n'
        + pg_dump_body
    )
    script.chmod(0o755)
    return fake


def _left_in(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


@pytest.mark.timeout(60)
def test_staging_db_unreachable_during_backup(seeded, pg_bin, tmp_path, closed_port):
    password = seeded.password
    started = time.monotonic()

    # 1. Unreachable before the dump starts: nothing listens on the port.
    gone = PgTarget(seeded.host, closed_port, seeded.database, seeded.user, password)
    dest = tmp_path / "closed"
    with pytest.raises(BackupError) as err:
        take_backup(gone, dest, pg_bin, "pre")
    text = str(err.value)
    assert gone.describe() in text and "cannot connect" in text and password not in text
    assert _left_in(dest) == []
    assert time.monotonic() - started < 5

    # 2. Lost mid-way: pg_dump is connected and waiting for its ACCESS SHARE locks (the
    # application holds ACCESS EXCLUSIVE on users) when its server session is killed,
    # as a restarting or failing-over server would.
    holder = seeded.connect(application_name="fault-holder")
    killer = seeded.connect(application_name="fault-killer")
    killer.autocommit = True
    dest = tmp_path / "midway"
    outcome: dict = {}

    def run():
        try:
            outcome["record"] = take_backup(seeded, dest, pg_bin, "pre")
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=run)
        worker.start()
        killed = []
        deadline = time.monotonic() + 20
        while not killed and time.monotonic() < deadline:
            with killer.cursor() as cur:
                cur.execute("""SELECT pid FROM pg_stat_activity
                               WHERE application_name = 'migration-soak' AND wait_event_type = 'Lock'
                                 AND datname = current_database()""")
                killed = [r[0] for r in cur.fetchall()]
            time.sleep(0.05)
        assert killed, "pg_dump never waited on the lock"
        partial = [p for p in _left_in(dest) if ".partial-" in p]
        assert partial, "the dump was being written under a temporary name"
        with killer.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
        worker.join(30)
        assert not worker.is_alive()
    finally:
        holder.rollback()
        holder.close()
        killer.close()
    error = outcome.get("error")
    assert isinstance(error, BackupError), outcome
    text = str(error)
    assert f"pg_dump of {seeded.describe()} failed" in text and password not in text
    assert "terminat" in text or "server closed the connection" in text, text
    assert _left_in(dest) == []  # neither a final nor a partial file

    # For the DAG: the backup task raises, so migrate never runs; the target is untouched.
    assert LedgerBackend(seeded, MIGRATIONS).status()[-1].name == DROP
    assert {s.name: s.state for s in LedgerBackend(seeded, MIGRATIONS).status()}[DROP] == "pending"


@pytest.mark.timeout(60)
def test_empty_dump_is_refused(seeded, pg_bin, tmp_path):
    """A pg_dump that exits 0 but writes nothing (full disk, killed writer)."""
    fake = _fake_bin(tmp_path, pg_bin, 'exit 0\n')
    dest = tmp_path / "out"
    with pytest.raises(BackupError, match="is empty") as err:
        take_backup(seeded, dest, fake, "pre")
    assert seeded.password not in str(err.value)
    assert _left_in(dest) == []
    empty = tmp_path / "empty.dump"
    empty.write_bytes(b"")
    with pytest.raises(BackupError, match="is empty"):
        verify_backup(empty, pg_bin)


@pytest.mark.timeout(120)
def test_truncated_dump_is_refused(seeded, pg_bin, tmp_path):
    """A pg_dump that exits 0 after writing half a dump is refused by ``take_backup``'s
    whole read-back, and nothing is left; the ``pg_restore --list`` trap itself (a
    truncated dump still lists) is shown by the integration test this one reuses."""
    (tmp_path / "verify").mkdir()
    _truncated_verify_case(seeded, pg_bin, tmp_path / "verify")
    fake = _fake_bin(tmp_path, pg_bin,
                     f'whole="{tmp_path / "whole"}"; "$REAL" "$@" > "$whole" || exit $?\n'
                     'size=$(stat -c %s "$whole"); head -c $((size / 2)) "$whole"\nexit 0\n')
    dest = tmp_path / "out"
    with pytest.raises(BackupError) as err:
        take_backup(seeded, dest, fake, "pre")
    text = str(err.value)
    assert "reading backup" in text and "pg_restore -f /dev/null" in text, text
    assert _left_in(dest) == []


@pytest.mark.timeout(60)
def test_a_hung_pg_dump_is_stopped_at_the_time_limit(seeded, pg_bin, tmp_path):
    """A ``pg_dump`` that wrote its archive but never exits (its stdout stays open): the
    time limit kills it and the read-back, and nothing is left."""
    fake = _fake_bin(tmp_path, pg_bin, '"$REAL" "$@" || exit $?\nexec sleep 30\n')
    dest = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(BackupError, match="did not finish within 2 s"):
        take_backup(seeded, dest, fake, "pre", timeout_s=2)
    assert time.monotonic() - started < 15
    assert _left_in(dest) == []


def test_pg_dump_older_than_server_is_refused(seeded, pg_bin, tmp_path):
    """Reuses the integration case (a fake ``pg_dump`` printing 16.4 is refused before
    it runs, no file left); adds a ``pg_dump`` whose ``--version`` prints no version."""
    (tmp_path / "older").mkdir()
    _older_pg_dump_case(seeded, pg_bin, tmp_path / "older")
    fake = tmp_path / "garbled"
    fake.mkdir()
    (fake / "pg_dump").write_text("#!/bin/sh\necho 'pg_dump (SomethingElse) x'\nexit 0\n")
    (fake / "pg_dump").chmod(0o755)
    with pytest.raises(BackupError, match="printed no PostgreSQL version"):
        take_backup(seeded, tmp_path / "out", fake, "pre")
    assert _left_in(tmp_path / "out") == []


_NO_PASSWORD_CHILD = r"""
import json, os, sys, time
from pathlib import Path
from migration_soak.backup import take_backup
from migration_soak.migrate import LedgerBackend
from migration_soak.pgconn import PgTarget
host, port, db, bindir, dest, migrations = sys.argv[1:7]
target = PgTarget(host, int(port), db, "postgres", None)
out = {"stdin_closed": not os.path.exists("/proc/self/fd/0")}
for name, call in (("backup", lambda: take_backup(target, Path(dest), Path(bindir), "pre")),
                   ("deploy", lambda: LedgerBackend(target, Path(migrations)).deploy())):
    t0 = time.monotonic()
    try:
        call()
        out[name] = ["no error", time.monotonic() - t0]
    except Exception as exc:
        out[name] = [f"{type(exc).__name__}: {exc}", time.monotonic() - t0]
print(json.dumps(out))
"""


@pytest.mark.timeout(60)
def test_no_password_source_fails_at_once(pg_server, fresh_db, pg_bin, tmp_path, monkeypatch):
    """No password anywhere (none given, no ``PGPASSWORD``, ``PGPASSFILE`` naming a
    missing file, a ``HOME`` without ``.pgpass``), stdin closed: backup and deploy fail
    within seconds with libpq's "no password supplied", never waiting on a prompt."""
    (tmp_path / "case").mkdir()
    _missing_password_case(pg_server, fresh_db, pg_bin, tmp_path / "case", monkeypatch)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSFILE=str(tmp_path / "nowhere" / "pgpass"), HOME=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "plugins")]))
    dest = tmp_path / "out"
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", _NO_PASSWORD_CHILD, pg_server.host, str(pg_server.port), fresh_db,
         str(pg_bin), str(dest), str(MIGRATIONS)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=30,
        preexec_fn=lambda: os.close(0),  # stdin closed, not merely empty
    )
    elapsed = time.monotonic() - started
    assert child.returncode == 0, child.stderr
    import json

    out = json.loads(child.stdout.strip().splitlines()[-1])
    assert out["stdin_closed"] is True
    for name, kind in (("backup", "BackupError"), ("deploy", "MigrationError")):
        message, seconds = out[name]
        assert message.startswith(kind) and "no password supplied" in message, (name, message)
        assert seconds < 5, (name, seconds)
    assert elapsed < 20  # interpreter start-up included
    assert _left_in(dest) == []
    assert query(PgTarget(pg_server.host, pg_server.port, fresh_db, "postgres", pg_server.password),
                 "SELECT to_regclass('_prisma_migrations')") == [(None,)]


@pytest.mark.timeout(120)
def test_task_retried_after_backup_is_idempotent(seeded, pg_bin, tmp_path):
    """Decision (documented in ``take_backup``): a complete, verified ``<label>.dump`` is
    reused, never dumped again, so a retry (even after ``migrate`` ran) keeps the
    pre-migration values; a file that does not verify is replaced by a new dump."""
    dest = tmp_path / "backups"
    first = take_backup(seeded, dest, pg_bin, "pre_run1")
    first_bytes = first.path.read_bytes()
    first_mtime = first.path.stat().st_mtime_ns
    assert first.reused is False

    again = take_backup(seeded, dest, pg_bin, "pre_run1")
    assert again.reused is True
    assert (again.path, again.sha256, again.size_bytes, again.tables) == (
        first.path, first.sha256, first.size_bytes, first.tables)
    assert again.pg_dump_version == first.pg_dump_version and again.server_version == first.server_version
    assert first.path.read_bytes() == first_bytes and first.path.stat().st_mtime_ns == first_mtime
    assert BackupRecord.from_dict(again.to_dict()) == again
    assert BackupRecord.from_dict({k: v for k, v in first.to_dict().items() if k != "reused"}) == first
    assert _left_in(dest) == ["pre_run1.dump", "pre_run1.source.json"]
    verify_backup(first.path, pg_bin, expected_sha256=first.sha256)  # the first record stays valid

    # Re-run after the migration dropped the columns: still the pre-migration dump.
    LedgerBackend(seeded, MIGRATIONS).deploy()
    after = take_backup(seeded, dest, pg_bin, "pre_run1")
    assert after.reused and after.sha256 == first.sha256
    listing = archive.run_restore([str(pg_bin / "pg_restore"), "--data-only", "--table=users", "--file=-"],
                                  after.path, timeout_s=60, what="users data")
    assert "passwordHash" in listing

    # A damaged file is not a backup: a new one (of the current database) replaces it.
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])
    fresh = take_backup(seeded, dest, pg_bin, "pre_run1")
    assert fresh.reused is False and fresh.sha256 != first.sha256
    verify_backup(fresh.path, pg_bin, expected_sha256=fresh.sha256)
    assert _left_in(dest) == ["pre_run1.dump", "pre_run1.source.json"]


_KEPT_BACKUP_CHILD = r"""
import sys
from pathlib import Path
from migration_soak.backup_storage import storage_root, take_kept_backup
from migration_soak.pgconn import PgTarget
host, port, db, password, bindir, store = sys.argv[1:7]
take_kept_backup(PgTarget(host, int(port), db, "postgres", password), storage_root(store), Path(bindir), "pre_run1")
"""


@pytest.mark.timeout(90)
def test_backup_task_killed_mid_dump_then_retried(seeded, pg_bin, tmp_path):
    """The worker running ``backup`` dies (SIGKILL, as the OOM killer or a lost node does)
    after ``pg_dump`` wrote a whole-looking dump but before it was verified and kept: the
    storage holds nothing under the backup's name, so the retried task takes a new
    backup, verifies it and keeps it. Nothing of the killed attempt counts as a backup."""
    marker = tmp_path / "dumped"
    fake = _fake_bin(tmp_path, pg_bin, f'"$REAL" "$@" || exit $?\ntouch "{marker}"\nsleep 60\n')
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    store = tmp_path / "store"
    env = {**os.environ, "TMPDIR": str(worker_tmp), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _KEPT_BACKUP_CHILD, seeded.host, str(seeded.port), seeded.database, seeded.password,
         str(fake), str(store)], env=env, cwd=REPO, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "pg_dump never finished writing"
            time.sleep(0.05)
        os.killpg(child.pid, 9)  # the task and its pg_dump, as a dying worker loses them
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, 9)
    # The killed attempt's dump exists on the worker's scratch disk, complete, yet unkept.
    leftovers = list(worker_tmp.rglob("*.dump*"))
    assert leftovers and all(p.stat().st_size > 0 for p in leftovers)
    assert _left_in(store) == []

    from migration_soak.backup_storage import fetched, storage_root, take_kept_backup

    retried = take_kept_backup(seeded, storage_root(str(store)), pg_bin, "pre_run1")
    assert not retried.reused and _left_in(store) == ["pre_run1.dump", "pre_run1.source.json"]
    with fetched(retried) as local:
        assert verify_backup(local.path, pg_bin, expected_sha256=retried.sha256).tables == retried.tables
