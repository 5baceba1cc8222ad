"""The backup file: a ``pg_dump --format=custom --compress=0`` archive in one zstd frame.

``pg_dump`` writes the uncompressed archive to a pipe; ``write_and_read_back`` compresses
it (zstd level 1 with the frame's XXH64 content checksum, the ``zstandard`` package) into
the file while a second thread reads the file back as it grows, decompresses it into
``pg_restore -f /dev/null`` and hashes the bytes kept. Every reader detects the kind by its first bytes (``kind``), so a plain
custom-format ``.dump`` of an earlier version still verifies and restores.

Design notes: docs/design.md#archivepy
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

import zstandard

from migration_soak.exceptions import BackupError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # RFC 8878, section 3.1.1: every zstd frame starts so
CUSTOM_MAGIC = b"PGDMP"  # pg_dump's custom format (pg_backup_archiver.c, WriteHead)
ZSTD_LEVEL = 1  # 0.87 of pg_dump -Z 1's size on the demo schema; 420 MB/s on one core (bench/README.md)
_BLOCK = 1 << 20  # bytes moved per read (1 MiB): an archive is never held in memory
_POLL_S = 0.005  # seconds the read-back waits for the file to grow
_STDERR_TAIL = 1500  # characters of a tool's stderr kept in an error message


def kind(path: Path) -> str:
    """``"zstd"`` for a compressed archive, ``"custom"`` for a plain custom-format one.

    Raises ``BackupError`` when the file is missing or starts with neither magic.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(CUSTOM_MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read backup {path}: {exc}") from None
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head == CUSTOM_MAGIC:
        return "custom"
    raise BackupError(f"backup {path} is not a pg_dump archive: it starts with {head!r}, "
                      f"neither zstd's {ZSTD_MAGIC!r} nor the custom format's {CUSTOM_MAGIC!r}")


def restore_argv(argv: Sequence[str], dump: Path) -> list[str]:
    """The ``pg_restore`` command line that reads ``dump``: ``argv`` plus the file for a
    plain archive; ``argv`` alone (the archive on stdin) for a compressed one."""
    return [*argv] if kind(dump) == "zstd" else [*argv, str(dump)]


@contextmanager
def restoring(argv: Sequence[str], dump: Path, **popen: Any) -> Iterator[subprocess.Popen]:
    """``pg_restore`` (``argv`` without the archive) started on ``dump``, for the block.

    A compressed archive is decompressed into the child's stdin by a thread; a plain one
    is passed as its file argument. ``popen``: ``subprocess.Popen`` keywords (not
    ``stdin``). On leaving, the child is waited for (killed first when the block raised).
    Raises ``BackupError`` when the file is not a whole zstd frame (corrupt, cut short,
    bytes after its end); a child that stopped reading early is not an error here: its
    exit status says why.
    """
    feeder = None
    if kind(dump) == "custom":
        proc = subprocess.Popen(restore_argv(argv, dump), stdin=subprocess.DEVNULL, **popen)
    else:
        read_end, write_end = os.pipe()
        try:
            proc = subprocess.Popen(list(argv), stdin=read_end, **popen)
        finally:
            os.close(read_end)
        feeder = _Feeder(dump, os.fdopen(write_end, "wb"))
        feeder.start()
    try:
        yield proc
    except BaseException:
        _reap(proc)
        raise
    finally:
        proc.wait()
        if feeder is not None:
            feeder.join()
    if feeder is not None and feeder.error is not None:
        raise BackupError(f"backup {dump} does not decompress: {feeder.error}")


def run_restore(argv: Sequence[str], dump: Path, *, timeout_s: float, env: dict[str, str] | None = None,
                what: str) -> str:
    """Run ``pg_restore`` (``argv`` without the archive) on ``dump``; return its stdout (text).

    Raises ``BackupError`` naming ``what`` with the stderr tail when it fails or takes
    longer than ``timeout_s`` seconds, or when a compressed file does not decompress.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            with restoring(argv, dump, env=env, stdout=out, stderr=err) as proc:
                try:
                    code = proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    raise BackupError(f"{what} did not finish within {timeout_s:.0f} s") from None
        except OSError as exc:
            raise BackupError(f"{what} could not start: {exc}") from None
        if code != 0:
            raise BackupError(f"{what} failed (exit {code}): {_tail(err)}")
        out.seek(0)
        return out.read().decode("utf-8", "replace")


@contextmanager
def seekable(dump: Path) -> Iterator[Path]:
    """A plain custom-format archive of ``dump`` for the block: ``dump`` itself, or a
    private (0600) decompressed copy in ``TMPDIR``, removed afterwards. For readers that
    must seek (``pg_restore --jobs``). Raises ``BackupError`` as ``restoring`` does."""
    if kind(dump) == "custom":
        yield dump
        return
    with tempfile.TemporaryDirectory(prefix="soak-archive-") as folder:
        plain = Path(folder) / dump.name
        with open(plain, "wb", opener=_private) as out:
            error = _decompress(dump, out)
        if error is not None:
            raise BackupError(f"backup {dump} does not decompress: {error}")
        yield plain


@dataclass(frozen=True)
class Written:
    """What ``write_and_read_back`` kept: ``sha256`` (hex) and ``size`` (bytes) of the
    compressed file as read back, ``archive_bytes``: the archive's size uncompressed."""

    sha256: str
    size: int
    archive_bytes: int


def write_and_read_back(dump_argv: Sequence[str], env: dict[str, str], out: Path, pg_restore: Path, *,
                        timeout_s: float, dump_what: str, scrub: Callable[[str], str] = lambda s: s) -> Written:
    """Run ``pg_dump`` (``dump_argv``, archive on stdout), compress its output into
    ``out`` and, at the same time, read ``out`` back whole.

    The read-back thread follows ``out`` as it grows: it hashes the bytes it reads (the
    SHA-256 of the file kept), decompresses them and feeds ``pg_restore -f /dev/null``,
    which reads every data block. ``out`` must exist (the caller creates it 0600); it is
    truncated first. ``timeout_s`` (seconds) bounds the whole run.

    Raises ``BackupError``: ``"<dump_what> failed (exit N): <stderr tail>"`` (scrubbed
    with ``scrub``) when ``pg_dump`` fails; ``"reading backup <out> whole (pg_restore -f
    /dev/null) failed ..."`` when the read-back does; ``"backup <out> is empty"`` when
    ``pg_dump`` wrote nothing; ``"writing backup <out> failed: ..."`` when the file cannot
    be written (full disk). The caller removes ``out``.
    """
    done = threading.Event()
    with tempfile.TemporaryFile() as dump_err:
        try:
            dump = subprocess.Popen(list(dump_argv), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=dump_err)
        except OSError as exc:
            raise BackupError(f"{dump_what} could not start: {exc}") from None
        _widen(dump.stdout)
        reader = _ReadBack(out, done, pg_restore, on_failure=lambda: _stop(dump))
        timer = threading.Timer(timeout_s, _kill_all, (dump, reader))
        timer.start()
        try:
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
            with open(out, "wb") as sink:
                reader.start()
                assert dump.stdout is not None
                while block := os.read(dump.stdout.fileno(), _BLOCK):  # what the pipe holds, up to 1 MiB
                    sink.write(compressor.compress(block))
                    # End the zstd block and hand it to the OS: the read-back follows the
                    # file, not this process's buffers (costs 0.1 % of size: bench/backup.py).
                    sink.write(compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
                    sink.flush()
                sink.write(compressor.flush())
            code = dump.wait()
        except OSError as exc:  # the working folder is full or gone
            _kill_all(dump, reader)
            raise BackupError(f"writing backup {out} failed: {exc}") from None
        except BaseException:
            _kill_all(dump, reader)
            raise
        finally:
            done.set()
            if reader.ident is not None:  # started
                reader.join()
            timer.cancel()
            _reap(dump)
            if dump.stdout is not None:
                dump.stdout.close()
        if reader.killed:
            raise BackupError(f"{dump_what} did not finish within {timeout_s:.0f} s")
        if reader.stopped_dump:
            raise BackupError(f"reading backup {out} whole (pg_restore -f /dev/null) failed: {reader.error}")
        if code != 0:
            raise BackupError(f"{dump_what} failed (exit {code}): {scrub(_tail(dump_err))}")
    if reader.archive_bytes == 0:
        raise BackupError(f"backup {out} is empty: pg_dump exited 0 but wrote nothing")
    if reader.error is not None:
        raise BackupError(f"reading backup {out} whole (pg_restore -f /dev/null) failed: {reader.error}")
    return Written(sha256=reader.digest.hexdigest(), size=reader.size, archive_bytes=reader.archive_bytes)


def read_back(path: Path, pg_restore: Path, *, timeout_s: float) -> None:
    """Read the archive ``path`` whole: ``pg_restore -f /dev/null`` reads every data block.

    Raises ``BackupError`` ``"reading backup <path> whole (pg_restore -f /dev/null)
    failed ..."``.
    """
    run_restore([str(pg_restore), "--file=/dev/null"], path, timeout_s=timeout_s,
                what=f"reading backup {path} whole (pg_restore -f /dev/null)")


def _decompress(path: Path, sink: IO[bytes]) -> str | None:
    """Decompress the zstd file ``path`` into ``sink``; the reason it is not one whole
    frame, or ``None``. ``BrokenPipeError`` (the reader stopped) propagates."""
    frame = zstandard.ZstdDecompressor().decompressobj()
    try:
        with open(path, "rb") as src:
            while block := src.read(_BLOCK):
                sink.write(frame.decompress(block))
    except zstandard.ZstdError as exc:
        return f"not a whole zstd frame ({exc})"
    return _frame_problem(frame)


def _frame_problem(frame: Any) -> str | None:
    """Why a finished ``decompressobj`` did not get exactly one whole frame, or ``None``."""
    if not frame.eof:
        return "the zstd frame is cut short"
    if frame.unused_data:
        return f"{len(frame.unused_data)} bytes follow the end of the zstd frame"
    return None


class _Feeder(threading.Thread):
    """``_decompress`` into a pipe, closing it after; ``error`` as ``_decompress`` says."""

    def __init__(self, path: Path, sink: IO[bytes]) -> None:
        super().__init__(name=f"zstd-feed-{path.name}", daemon=True)
        self.path, self.sink = path, sink
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.error = _decompress(self.path, self.sink)
        except BrokenPipeError:
            pass  # the reader stopped (pg_restore --list, or a failure its exit status reports)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self.sink.close()
            except BrokenPipeError:
                pass


class _ReadBack(threading.Thread):
    """Follow a growing compressed file: hash it, decompress it into ``pg_restore -f /dev/null``."""

    def __init__(self, path: Path, done: threading.Event, pg_restore: Path, on_failure: Callable[[], bool]) -> None:
        super().__init__(name=f"read-back-{path.name}", daemon=True)
        self.path, self.done, self.pg_restore, self.on_failure = path, done, pg_restore, on_failure
        self.digest = hashlib.sha256()
        self.size = 0
        self.archive_bytes = 0
        self.error: str | None = None
        self.killed = False
        self.stopped_dump = False
        self.proc: subprocess.Popen | None = None

    def run(self) -> None:
        with tempfile.TemporaryFile() as err:
            try:
                self.proc = subprocess.Popen([str(self.pg_restore), "--file=/dev/null"], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=err)
                assert self.proc.stdin is not None
                frame = zstandard.ZstdDecompressor().decompressobj()
                with open(self.path, "rb") as src:
                    while block := self._next(src):
                        self.digest.update(block)
                        self.size += len(block)
                        data = frame.decompress(block)
                        self.archive_bytes += len(data)
                        self.proc.stdin.write(data)
                self.proc.stdin.close()
                code = self.proc.wait()
                if self.killed:
                    self.error = "stopped: the time limit passed"
                elif code != 0:
                    self.error = f"exit {code}: {_tail(err)}"
                elif self.archive_bytes and _frame_problem(frame):
                    self.error = _frame_problem(frame)
            except BrokenPipeError:
                code = self.proc.wait() if self.proc is not None else -1
                self.error = f"exit {code}: {_tail(err)}"
            except (zstandard.ZstdError, OSError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                if self.proc is not None:
                    _reap(self.proc)
            if self.error is not None and not self.done.is_set():
                self.stopped_dump = self.on_failure()  # no point dumping on: the backup already failed

    def _next(self, src: IO[bytes]) -> bytes:
        """The next bytes of the file, waiting for it to grow until the writer is done."""
        while not self.killed:
            block = src.read(_BLOCK)
            if block:
                return block
            if self.done.is_set():
                return src.read(_BLOCK)  # what landed between the last read and ``done``
            time.sleep(_POLL_S)
        return b""

    def kill(self) -> None:
        self.killed = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


def _kill_all(dump: subprocess.Popen, reader: _ReadBack) -> None:
    reader.kill()
    if dump.poll() is None:
        dump.kill()


def _widen(pipe: IO[bytes] | None) -> None:
    """Let the pipe hold 1 MiB (Linux ``F_SETPIPE_SZ``; 64 KiB by default): fewer, larger
    reads, so fewer zstd block flushes. Best effort: elsewhere it stays as it is."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), _BLOCK)  # type: ignore[union-attr]
    except (ImportError, OSError, AttributeError):
        pass


def _stop(proc: subprocess.Popen) -> bool:
    """Kill ``proc`` if it still runs; whether it did."""
    if proc.poll() is not None:
        return False
    proc.kill()
    return True


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _tail(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode("utf-8", "replace").strip()[-_STDERR_TAIL:]


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
