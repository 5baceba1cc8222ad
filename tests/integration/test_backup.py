"""backup.py on the real server: atomic zstd-compressed custom-format dump, whole read-back,
no secrets; plain custom-format dumps of earlier versions still verify."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import time

import pytest
import zstandard

from migration_soak import archive
from migration_soak.backup import BackupRecord, pg_dump_argv, take_backup, verify_backup
from migration_soak.exceptions import BackupError, SoakError
from migration_soak.pgconn import PgTarget

from .conftest import SEED_USERS, query


def test_take_backup_writes_a_verified_dump_atomically(seeded, pg_bin, tmp_path):
    dest = tmp_path / "backups"
    record = take_backup(seeded, dest, pg_bin, "pre_migration")

    assert record.path == dest / "pre_migration.dump"
    assert sorted(p.name for p in dest.iterdir()) == ["pre_migration.dump", "pre_migration.source.json"]  # no partial
    data = record.path.read_bytes()
    assert record.size_bytes == len(data) > 0
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert data[:4] == archive.ZSTD_MAGIC  # one zstd frame...
    inner = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert inner[:5] == b"PGDMP"  # ...holding a custom-format archive
    assert stat.S_IMODE(record.path.stat().st_mode) == 0o600  # it holds password hashes
    server_version = query(seeded, "SHOW server_version")[0][0].split()[0]
    assert record.server_version == server_version
    assert record.pg_dump_version.split(".")[0] == server_version.split(".")[0]
    assert {"public.users", "public.clients", "public._prisma_migrations"} <= set(record.tables)
    assert record.duration_s > 0
    assert record.created_at.tzinfo is not None

    # JSON round trip, as it travels through XCom.
    again = BackupRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record

    check = verify_backup(record.path, pg_bin, expected_sha256=record.sha256)
    assert check.sha256 == record.sha256 and check.tables == record.tables

    # The dump holds every row of users (it is a real backup, not just a readable file).
    script = archive.run_restore([str(pg_bin / "pg_restore"), "--data-only", "--table=users", "--file=-"],
                                 record.path, timeout_s=60, what="users data")
    assert script.count("\nusr_") == SEED_USERS


def _plain_dump(seeded, pg_bin, path):
    """A plain custom-format dump as ``take_backup`` wrote before it compressed (pg_dump's
    own default compression, to a file)."""
    subprocess.run([str(pg_bin / "pg_dump"), "--format=custom", "--no-password", f"--file={path}"],
                   env=seeded.child_env(), check=True)
    return path


def test_truncated_dump_lists_fine_but_fails_verification(seeded, pg_bin, tmp_path):
    full = _plain_dump(seeded, pg_bin, tmp_path / "full.dump")
    assert verify_backup(full, pg_bin).tables  # an earlier version's dump still verifies
    cut = tmp_path / "cut.dump"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    # The trap STYLE.md warns about: --list reads only the TOC and still succeeds.
    listing = subprocess.run([str(pg_bin / "pg_restore"), "--list", str(cut)], capture_output=True, text=True)
    assert listing.returncode == 0 and "TABLE DATA public users" in listing.stdout

    with pytest.raises(BackupError) as err:
        verify_backup(cut, pg_bin)
    assert "read" in str(err.value) and "end of file" in str(err.value)


def test_cut_or_corrupted_compressed_dump_fails_verification(seeded, pg_bin, tmp_path):
    record = take_backup(seeded, tmp_path, pg_bin, "full")
    data = record.path.read_bytes()
    cut = tmp_path / "cut.dump"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackupError, match="cut short|reading backup .* whole"):
        verify_backup(cut, pg_bin)

    # One byte changed in the middle: pg_restore alone might read garbled rows without a
    # complaint; the frame's content checksum (XXH64) does not match.
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flipped.dump"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(BackupError) as err:
        verify_backup(bad, pg_bin)
    assert str(bad) in str(err.value)

    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a dump at all")
    with pytest.raises(BackupError, match="not a pg_dump archive"):
        verify_backup(junk, pg_bin)


def test_checksum_mismatch_is_an_error(seeded, pg_bin, tmp_path):
    record = take_backup(seeded, tmp_path, pg_bin, "full")
    with pytest.raises(BackupError, match="checksum mismatch"):
        verify_backup(record.path, pg_bin, expected_sha256="0" * 64)

    # A changed file: not ours, and not one whole zstd frame any more either.
    with open(record.path, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BackupError, match="checksum mismatch"):
        verify_backup(record.path, pg_bin, expected_sha256=record.sha256)
    with pytest.raises(BackupError, match="does not decompress"):
        verify_backup(record.path, pg_bin)

    # A plain custom-format dump (an earlier version's): pg_restore ignores a trailing
    # byte, so only the recorded checksum tells the change.
    plain = _plain_dump(seeded, pg_bin, tmp_path / "plain.dump")
    sha = verify_backup(plain, pg_bin).sha256
    with open(plain, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BackupError, match="checksum mismatch"):
        verify_backup(plain, pg_bin, expected_sha256=sha)
    verify_backup(plain, pg_bin)


def test_an_earlier_plain_dump_is_reused_and_read_through_a_seekable_copy(seeded, pg_bin, tmp_path):
    """A plain custom-format ``<label>.dump`` kept before dumps were compressed is reused
    by a retry (never dumped again); ``archive.seekable`` hands a compressed dump to
    readers that must seek as a private decompressed copy, removed afterwards."""
    dest = tmp_path / "backups"
    plain = _plain_dump(seeded, pg_bin, (dest.mkdir() or dest) / "pre.dump")
    again = take_backup(seeded, dest, pg_bin, "pre")
    assert again.reused and again.sha256 == hashlib.sha256(plain.read_bytes()).hexdigest()
    with archive.seekable(plain) as same:
        assert same == plain

    record = take_backup(seeded, tmp_path / "z", pg_bin, "pre")
    with archive.seekable(record.path) as copy:
        assert copy != record.path and stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert copy.read_bytes() == zstandard.ZstdDecompressor().decompressobj().decompress(record.path.read_bytes())
        listing = subprocess.run([str(pg_bin / "pg_restore"), "--list", str(copy)], capture_output=True,
                                 text=True, check=True).stdout
        assert "TABLE DATA public users" in listing
    assert not copy.exists()


def test_missing_table_data_fails_and_leaves_no_file(seeded, pg_bin, tmp_path):
    dest = tmp_path / "backups"
    with pytest.raises(BackupError, match=r"no table data for public\.accounts") as err:
        take_backup(seeded, dest, pg_bin, "pre", required_tables=("public.users", "public.accounts"))
    assert "public.users" in str(err.value)  # names what the dump does hold
    assert list(dest.iterdir()) == []  # neither the final name nor a partial file


def test_older_pg_dump_is_refused(seeded, pg_bin, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "dump-was-run"
    script = fake / "pg_dump"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 16.4"; exit 0; fi\n'
        f'touch "{marker}"; exit 0\n'
    )
    script.chmod(0o755)
    dest = tmp_path / "out"
    with pytest.raises(BackupError) as err:
        take_backup(seeded, dest, fake, "pre")
    text = str(err.value)
    assert "pg_dump 16.4" in text and "older than the server 18" in text
    assert not marker.exists()
    assert not dest.exists() or list(dest.iterdir()) == []


def test_bad_label_is_refused(seeded, pg_bin, tmp_path):
    with pytest.raises(BackupError, match="not a plain file name"):
        take_backup(seeded, tmp_path, pg_bin, "../escape")


def test_password_only_in_the_child_environment(seeded, pg_bin, tmp_path, popen_recorder):
    password = seeded.password
    record = take_backup(seeded, tmp_path, pg_bin, "pre")
    assert record.path.exists()
    dump_calls = [(argv, env) for argv, env in popen_recorder.calls if argv[0].endswith("pg_dump") and "--version" not in argv]
    assert len(dump_calls) == 1
    argv, env = dump_calls[0]
    assert argv == pg_dump_argv(pg_bin / "pg_dump", 60.0)
    assert "--no-password" in argv and "--format=custom" in argv and "--compress=0" in argv
    assert env is not None and env["PGPASSWORD"] == password and env["PGDATABASE"] == seeded.database
    for argv, _ in popen_recorder.calls:
        assert not any(password in part for part in argv), argv
    assert password not in repr(seeded) and password not in str(seeded)


def test_errors_never_carry_the_password(pg_server, fresh_db, pg_bin, tmp_path):
    secret = "Sup3r-Secret-Value"
    wrong = PgTarget(pg_server.host, pg_server.port, fresh_db, "postgres", secret)
    with pytest.raises(BackupError) as err:
        take_backup(wrong, tmp_path, pg_bin, "pre")
    assert "password authentication failed" in str(err.value)
    assert secret not in str(err.value)

    # The libpq message names the user; a user name containing the password is scrubbed.
    leaky = PgTarget(pg_server.host, pg_server.port, fresh_db, f"u_{secret}", secret)
    with pytest.raises(SoakError) as err:
        take_backup(leaky, tmp_path / "b", pg_bin, "pre")
    assert secret not in str(err.value) and "u_***" in str(err.value)
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_missing_password_fails_at_once_instead_of_prompting(pg_server, fresh_db, pg_bin, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))
    nopw = PgTarget(pg_server.host, pg_server.port, fresh_db, "postgres", None)
    argv = pg_dump_argv(pg_bin / "pg_dump", 60.0)
    assert "--no-password" in argv
    started = time.monotonic()
    out = subprocess.run(argv, env=nopw.child_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "no password supplied" in out.stderr
    assert time.monotonic() - started < 10
    env = nopw.child_env()
    assert "PGPASSWORD" not in env and env["PGPASSFILE"] == str(tmp_path / "no-such-pgpass")
    with pytest.raises(BackupError, match="no password supplied"):
        take_backup(nopw, tmp_path / "b", pg_bin, "pre")


def test_passfile_is_0600_and_works(pg_server, fresh_db, pg_bin, tmp_path):
    target = PgTarget(pg_server.host, pg_server.port, fresh_db, "postgres", pg_server.password)
    passfile = tmp_path / "pgpass"
    env = target.child_env(passfile=passfile)
    assert "PGPASSWORD" not in env and env["PGPASSFILE"] == str(passfile)
    assert stat.S_IMODE(os.stat(passfile).st_mode) == 0o600
    out = subprocess.run([str(pg_bin / "psql"), "--no-password", "-tAc", "SELECT current_database()"],
                         env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == fresh_db
    with pytest.raises(FileExistsError):
        target.child_env(passfile=passfile)  # never overwrites an existing file
