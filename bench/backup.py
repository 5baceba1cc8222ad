"""How long does the pre-migration backup take, against the runbook's bare ``pg_dump``?

Issue 14 item 2 asks for a verified backup in at most 1.2 times the runbook's bare
plain-SQL ``pg_dump`` on the same database, no bigger than ``pg_dump -Fc -Z 1``'s dump.
Seeds an embedded PostgreSQL with ``--users`` users (``demo.seed.create_staging``), then
times, on that one database, one after the other (``--repeat`` rounds, best kept):

- ``bare``: the runbook's ``pg_dump`` (plain SQL to a file, not verified);
- ``old``: what ``take_backup`` did before: ``pg_dump -Fc`` (default compression) to a
  file, then ``pg_restore -f /dev/null`` reads it back whole and its SHA-256 is taken;
- ``-Z 0`` and ``-Z 1``: ``pg_dump -Fc -Z N`` to a file and the same read-back;
- ``new``: ``backup.take_backup`` (``pg_dump -Fc -Z 0`` to a pipe, zstd into the file
  while it is read back whole: ``archive.write_and_read_back``; then ``--list``);
- ``verify``: ``backup.verify_backup`` of the new file, what a rollback or a retried
  backup pays before it trusts the file;
- ``floor``: ``pg_dump -Fc -Z 0`` piped straight into ``pg_restore -f /dev/null``: the
  whole read-back STYLE.md asks for with nothing else (no file, no compression, no hash),
  so no verified backup that reads every block can be faster on this machine.

Prints seconds and bytes of each, and the ratios the issue asks about (time / bare,
size / ``-Z 1``), and the CPU each used (this process and its children: ``pg_dump``,
``pg_restore``, zstd and SHA-256 threads; plus the server: the postmaster's own and reaped
children's time and its live children's, from ``/proc``), in core-seconds: no schedule of
that work on this machine's cores can end sooner than CPU / cores ("cpu floor"). Not a
test: nothing asserts a figure.

    .venv/bin/python bench/backup.py                   # 1 000 000 users
    .venv/bin/python bench/backup.py --users 100000    # quicker
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from demo import postgres  # noqa: E402
from demo.seed import create_staging  # noqa: E402
from migration_soak.backup import sha256_file, take_backup, verify_backup  # noqa: E402
from migration_soak.pgconn import PgTarget  # noqa: E402


_TICK = os.sysconf("SC_CLK_TCK")


def _server_cpu(pgdata: Path) -> float:
    """CPU seconds the server has used so far: the postmaster's user+system time, its reaped
    children's (``cutime``/``cstime``) and its live children's (proc(5))."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _client_cpu() -> float:
    """CPU seconds this process and its reaped children have used so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the fastest of each is reported")
    parser.add_argument("--skip", nargs="*", default=[], choices=["old", "z0", "verify", "floor"],
                        help="steps not to time (bare, -Z 1 and new are always timed: the ratios need them)")
    parser.add_argument("--workdir", type=Path, default=None, help="data folder (default: a temporary one)")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-backup-"))
    out = workdir / "out"
    server = postgres.start(workdir / "pgdata")
    best: dict[str, tuple[float, int]] = {}
    cpu: dict[str, tuple[float, float]] = {}  # the fastest round's (client, server) core-seconds
    try:
        t0 = time.monotonic()
        seed = create_staging(server, "bench", users=args.users)
        print(f"seeded {seed.users} users ({time.monotonic() - t0:.0f} s)", flush=True)
        target = PgTarget(server.host, server.port, "bench", postgres.SUPERUSER, server.password)
        env = dict(target.child_env())
        pg_bin = postgres.bin_dir()
        dump, restore = str(pg_bin / "pg_dump"), str(pg_bin / "pg_restore")

        def bare(path: Path) -> None:
            _run([dump, "--no-password", f"--file={path}"], env)

        def custom(level: int | None) -> Callable[[Path], None]:
            def run(path: Path) -> None:
                compress = [] if level is None else [f"--compress={level}"]
                _run([dump, "--format=custom", *compress, "--no-password", f"--file={path}"], env)
                _run([restore, "--file=/dev/null", str(path)])
                sha256_file(path)
            return run

        def new(path: Path) -> None:
            take_backup(target, path.parent, pg_bin, path.stem)

        def verify(path: Path) -> None:
            verify_backup(path, pg_bin)

        def floor(path: Path) -> None:
            with subprocess.Popen([dump, "--format=custom", "--compress=0", "--no-password"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as dumping:
                restored = subprocess.run([restore, "--file=/dev/null"], stdin=dumping.stdout, check=True)
                dumping.stdout.close()
            if dumping.returncode or restored.returncode:
                raise RuntimeError(f"floor: pg_dump exited {dumping.returncode}")
            path.touch()  # nothing is kept: size 0

        steps: list[tuple[str, str, str, Callable[[Path], None]]] = [
            ("bare", "bare pg_dump (plain SQL, unverified)", "bare.sql", bare),
            ("old", "old: -Fc default + read-back", "old.dump", custom(None)),
            ("z0", "-Fc -Z 0 + read-back", "z0.dump", custom(0)),
            ("z1", "-Fc -Z 1 + read-back", "z1.dump", custom(1)),
            ("new", "new: take_backup (zstd)", "new.dump", new),
            ("verify", "verify_backup of the new file", "new.dump", verify),
            ("floor", "floor: pg_dump -Fc -Z 0 | pg_restore", "floor.none", floor),
        ]
        steps = [step for step in steps if step[0] not in args.skip]
        for round_ in range(args.repeat):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            for _, name, file_name, step in steps:
                path = out / file_name
                client, server_cpu = _client_cpu(), _server_cpu(server.data_dir)
                started = time.monotonic()
                step(path)
                seconds = time.monotonic() - started
                time.sleep(0.3)  # the dump's backend has exited: let the postmaster reap it
                used = (_client_cpu() - client, _server_cpu(server.data_dir) - server_cpu)
                size = path.stat().st_size
                print(f"round {round_ + 1}: {name:38} {seconds:7.2f} s {size / 1e6:9.1f} MB "
                      f"cpu {used[0]:6.2f} + {used[1]:6.2f} s", flush=True)
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, size)
                    cpu[name] = used
                if step is not new:  # the new file stays for verify_backup
                    path.unlink()
    finally:
        server.stop()
        shutil.rmtree(out, ignore_errors=True)

    bare_s, _ = best["bare pg_dump (plain SQL, unverified)"]
    _, z1_size = best["-Fc -Z 1 + read-back"]
    cores = os.cpu_count() or 1
    print(f"\n{args.users} users, best of {args.repeat}; ratios: time / bare pg_dump, size / -Fc -Z 1 dump; "
          f"cpu: core-seconds (client + server), cpu floor: cpu / {cores} cores, against the bare pg_dump's time")
    print(f"{'backup':40} {'seconds':>8} {'MB':>9} {'time/bare':>9} {'size/Z1':>8} {'cpu s':>13} {'floor/bare':>10}")
    for name, (seconds, size) in best.items():
        client, server_cpu = cpu[name]
        print(f"{name:40} {seconds:8.2f} {size / 1e6:9.1f} {seconds / bare_s:9.2f} {size / z1_size:8.2f} "
              f"{client:6.2f}+{server_cpu:6.2f} {(client + server_cpu) / cores / bare_s:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
