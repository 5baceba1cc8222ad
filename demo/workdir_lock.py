"""One demo per working folder: ``make demo`` and ``make airflow`` start a fresh deployment
in theirs (``.state/demo``, ``.state/airflow``) by deleting the previous one's stack,
PostgreSQL's data folder included. A second ``make demo`` started while the first one
runs (the README's next scenario, in another terminal) deleted the first one's database
under it. :func:`hold` takes the folder for the process's lifetime (``flock``: released
when the process ends, even killed) and refuses a second holder, naming it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

LOCK_FILE = ".demo.lock"


class WorkdirBusy(RuntimeError):
    """The folder is held by another demo; the message names it and the holder."""


@contextmanager
def hold(workdir: Path | str) -> Iterator[None]:
    """Hold ``workdir`` (created if missing) until the block ends; ``WorkdirBusy`` at once,
    touching nothing in it, when another process holds it."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirBusy(f"--workdir {workdir}: another demo is running in it ({holder}); starting here would "
                              "delete its stack, database included. Wait for it to end (or stop it with Ctrl-C), "
                              "or give this one its own folder: --workdir <another folder>") from None
        os.ftruncate(fd, 0)
        started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        os.pwrite(fd, f"pid {os.getpid()}, started {started}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
