"""How long does the pre-migration backup take, against the runbook's bare ``pg_dump``?

Issue 14 item 2 asks for a verified backup in at most 1.2 times the runbook's bare
plain-SQL ``pg_dump`` on the same database, no bigger than ``pg_dump -Fc -Z 1``'s dump.
Seeds an embedded PostgreSQL with ``--users`` users (``demo.seed.create_staging``), then
times, on that one database, one after the other:

- ``bare``: the runbook's ``pg_dump`` (plain SQL to a file, not verified);
- ``take_backup``: today's ``backup.take_backup`` (``-Fc``, default compression, then
  ``pg_restore -f /dev/null`` reads it back whole);
- ``-Fc -Z 0`` and ``-Fc -Z 1``, each followed by the same read-back;
- ``stream <codec>``: a candidate design. ``pg_dump -Fc -Z 0`` writes to a pipe; Python
  reads it in 1 MiB blocks, hashes them (SHA-256 of the archive), hands each block to a
  ``pg_restore -f /dev/null`` reading stdin (the read-back, while the dump runs) and to a
  compressor writing the kept file. Then the kept file is read back: decompressed whole
  and its SHA-256 compared with the archive's (``keptcheck``). Codecs: ``zlib`` level 1
  (Python's standard library, in-process), ``zstd-cli`` (``zstd -1`` from the system's
  ``PATH``, a stand-in for the ``zstandard`` library: same libzstd) and ``zstandard``
  level 1 when that package is importable.

Prints seconds, bytes and the ratios the issue asks about (time / bare, size / ``-Z 1``).
Not a test: nothing asserts a figure.

    .venv/bin/python bench/backup.py                   # 1 000 000 users
    .venv/bin/python bench/backup.py --users 100000    # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import create_staging  # noqa: E402
from migration_soak.backup import sha256_file, take_backup  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402

_BLOCK = 1 << 20  # bytes read from pg_dump's pipe at a time


class _Zlib:
    """zlib level 1, in-process (the standard library's deflate releases the GIL)."""

    name = "zlib"

    def __init__(self) -> None:
        self._c = zlib.compressobj(1)

    def compress(self, block: bytes) -> bytes:
        return self._c.compress(block)

    def flush(self) -> bytes:
        return self._c.flush()

    @staticmethod
    def decompressed_blocks(path: Path):
        d = zlib.decompressobj()
        with open(path, "rb") as handle:
            while block := handle.read(_BLOCK):
                yield d.decompress(block)
        yield d.flush()


class _Zstandard:
    """The ``zstandard`` package, level 1, when importable."""

    name = "zstandard"

    def __init__(self) -> None:
        import zstandard  # type: ignore[import-not-found]

        self._z = zstandard
        self._c = zstandard.ZstdCompressor(level=1, threads=-1).compressobj()

    def compress(self, block: bytes) -> bytes:
        return self._c.compress(block)

    def flush(self) -> bytes:
        return self._c.flush()

    @staticmethod
    def decompressed_blocks(path: Path):
        import zstandard  # type: ignore[import-not-found]

        with open(path, "rb") as handle, zstandard.ZstdDecompressor().stream_reader(handle) as reader:
            while block := reader.read(_BLOCK):
                yield block


def _timed(argv: list[str], env: dict[str, str] | None) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - started


def _stream(pg_bin: Path, env: dict[str, str], out: Path, codec: str) -> dict[str, float]:
    """The candidate: dump to a pipe, read back and compress concurrently; then check the kept file.

    Returns seconds (``stream``, ``keptcheck``) and bytes (``raw``, ``kept``).
    """
    started = time.monotonic()
    dump = subprocess.Popen([str(pg_bin / "pg_dump"), "--format=custom", "--compress=0", "--no-password"],
                            env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    check = subprocess.Popen([str(pg_bin / "pg_restore"), "--file=/dev/null"], stdin=subprocess.PIPE)
    to_check: queue.Queue = queue.Queue(maxsize=16)
    to_pack: queue.Queue = queue.Queue(maxsize=16)
    errors: list[BaseException] = []

    def feed_check() -> None:
        try:
            assert check.stdin is not None
            while (block := to_check.get()) is not None:
                check.stdin.write(block)
            check.stdin.close()
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    def pack() -> None:
        try:
            if codec == "zstd-cli":
                z = subprocess.Popen(["zstd", "-1", "-q", "-f", "-o", str(out)], stdin=subprocess.PIPE)
                assert z.stdin is not None
                while (block := to_pack.get()) is not None:
                    z.stdin.write(block)
                z.stdin.close()
                if z.wait() != 0:
                    raise RuntimeError("zstd failed")
                return
            c = _Zlib() if codec == "zlib" else _Zstandard()
            with open(out, "wb") as handle:
                while (block := to_pack.get()) is not None:
                    handle.write(c.compress(block))
                handle.write(c.flush())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=feed_check), threading.Thread(target=pack)]
    for t in threads:
        t.start()
    digest, raw = hashlib.sha256(), 0
    assert dump.stdout is not None
    while block := dump.stdout.read(_BLOCK):
        digest.update(block)
        raw += len(block)
        to_check.put(block)
        to_pack.put(block)
    to_check.put(None)
    to_pack.put(None)
    for t in threads:
        t.join()
    if dump.wait() != 0 or check.wait() != 0 or errors:
        raise RuntimeError(f"stream {codec}: pg_dump {dump.returncode}, pg_restore {check.returncode}, {errors}")
    streamed = time.monotonic() - started

    started = time.monotonic()
    again = hashlib.sha256()
    blocks: Callable
    if codec == "zstd-cli":
        unz = subprocess.Popen(["zstd", "-dc", "-q", str(out)], stdout=subprocess.PIPE)
        assert unz.stdout is not None
        while block := unz.stdout.read(_BLOCK):
            again.update(block)
        if unz.wait() != 0:
            raise RuntimeError("zstd -d failed")
    else:
        blocks = _Zlib.decompressed_blocks if codec == "zlib" else _Zstandard.decompressed_blocks
        for block in blocks(out):
            again.update(block)
    sha256_file(out)  # the kept bytes' own SHA-256, as a backup record holds it
    if again.digest() != digest.digest():
        raise RuntimeError(f"stream {codec}: the kept file does not decompress to the archive")
    return {"stream": streamed, "keptcheck": time.monotonic() - started, "raw": raw, "kept": out.stat().st_size}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one)")
    parser.add_argument("--codecs", nargs="*", default=None,
                        help="stream codecs to time (default: zlib, zstd-cli if on PATH, zstandard if importable)")
    args = parser.parse_args(argv)
    codecs = args.codecs
    if codecs is None:
        codecs = ["zlib"] + (["zstd-cli"] if shutil.which("zstd") else [])
        try:
            import zstandard  # type: ignore[import-not-found]  # noqa: F401

            codecs.append("zstandard")
        except ImportError:
            print("zstandard is not importable: its stream is not timed", flush=True)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-backup-"))
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    server = postgres.start(workdir / "pgdata")
    rows: list[tuple[str, float, int, str]] = []
    try:
        t0 = time.monotonic()
        seed = create_staging(server, "bench", users=args.users)
        print(f"seeded {seed.users} users ({time.monotonic() - t0:.0f} s)", flush=True)
        target = PgTarget(server.host, server.port, "bench", postgres.SUPERUSER, server.password)
        env = dict(target.child_env())
        pg_bin = postgres.bin_dir()
        dump, restore = str(pg_bin / "pg_dump"), str(pg_bin / "pg_restore")

        def keep(name: str, seconds: float, size: int, note: str = "") -> None:
            rows.append((name, seconds, size, note))
            print(f"{name:34} {seconds:8.1f} s {size / 1e6:10.1f} MB {note}", flush=True)

        def drop(path: Path) -> None:
            path.unlink(missing_ok=True)

        plain = out / "bare.sql"
        keep("bare pg_dump (plain SQL)", _timed([dump, "--no-password", f"--file={plain}"], env), plain.stat().st_size)
        drop(plain)

        record = take_backup(target, out, pg_bin, "old")
        keep("take_backup (-Fc default + read-back)", record.duration_s, record.size_bytes)
        drop(out / "old.dump")

        for level in (0, 1):
            path = out / f"z{level}.dump"
            d = _timed([dump, "--format=custom", f"--compress={level}", "--no-password", f"--file={path}"], env)
            r = _timed([restore, "--file=/dev/null", str(path)], None)
            keep(f"-Fc -Z {level} + read-back", d + r, path.stat().st_size, f"(dump {d:.1f} s, read-back {r:.1f} s)")
            drop(path)

        for codec in codecs:
            path = out / f"stream.{codec}"
            got = _stream(pg_bin, env, path, codec)
            keep(f"stream {codec} (+ kept-file check)", got["stream"] + got["keptcheck"], int(got["kept"]),
                 f"(stream {got['stream']:.1f} s, kept-file check {got['keptcheck']:.1f} s, "
                 f"archive {got['raw'] / 1e6:.1f} MB)")
            drop(path)
    finally:
        server.stop()

    bare_s = rows[0][1]
    z1 = next(size for name, _, size, _ in rows if name.startswith("-Fc -Z 1"))
    print(f"\n{args.users} users; ratios: time / bare pg_dump, size / -Fc -Z 1 dump")
    print(f"{'backup':40} {'seconds':>8} {'MB':>9} {'time/bare':>9} {'size/Z1':>8}")
    for name, seconds, size, _ in rows:
        print(f"{name:40} {seconds:8.1f} {size / 1e6:9.1f} {seconds / bare_s:9.2f} {size / z1:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
