"""A Prometheus exporter for the database host: the embedded PostgreSQL's processes and disk.

The runbook's "CPU usage (DB) < 70 %", "Memory usage (DB) < 80 %", "Database CPU > 90 %
sostenido", "Alert if Disk I/O > 90 %" need the database *host's* figures, which SQL does
not give. On Railway they come from the platform; here ``DbHostCollector`` reads them with
psutil from the server's process tree (the postmaster's pid is the first line of
``<data_dir>/postmaster.pid``) and the data directory's filesystem.

Families (all gauges but the counter):

* ``db_up``: 1 if the postmaster runs, else 0 (then only ``db_up`` and the disk families).
* ``db_cpu_usage_ratio``: CPU seconds of all postgres processes over the wall seconds since
  the reference scrape, divided by the number of cores (0..1). The reference is the latest
  earlier scrape at least ``min_window_s`` (1 s) old, or the exporter's start: two scrapers
  do not shorten each other's window to nothing. CPU of exited backends counts (the
  postmaster's ``children_*`` times).
* ``db_cpu_seconds_total`` (counter): the same CPU time, cumulative, for a consumer that
  prefers its own rate.
* ``db_memory_rss_bytes``: RSS summed over the postgres processes. Shared memory
  (shared_buffers) is counted in every process that touched it, so this overstates the
  real use a little; it is what ``ps`` / ``top`` would add up.
* ``db_memory_usage_ratio``: ``db_memory_rss_bytes`` / the machine's total memory (0..1).
* ``db_processes``: how many postgres processes run.
* ``db_disk_usage_ratio``: used / (used + available) of the data directory's filesystem,
  as ``df`` shows it (0..1). ``db_disk_used_bytes`` / ``db_disk_total_bytes`` alongside.
* ``db_disk_io_busy_ratio{device}``: share of the wall time the data directory's block
  device was busy since the reference scrape (psutil's ``busy_time``, Linux). Omitted when
  the device cannot be found or has no such counter (an overlay filesystem, macOS...).

``DbExporter(data_dir)`` serves the page at ``/metrics`` (and ``/health``) on 127.0.0.1 in a
``ServerThread``; the stack starts one and puts its base URL in ``stack.json`` as
``db_metrics_url``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

MIN_WINDOW_S = 1.0
KEEP_SAMPLES_S = 120.0


def postmaster_pid(data_dir: Path) -> int | None:
    """The postmaster's pid from ``<data_dir>/postmaster.pid`` if it runs, else None."""
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


def block_device(path: Path) -> str | None:
    """The name psutil's per-disk counters use for the device holding ``path`` (``vda``,
    ``sda1``, ``dm-0``, ``nvme0n1p2``), or None if it has none (overlay, tmpfs...)."""
    counters = psutil.disk_io_counters(perdisk=True) or {}
    # /sys/dev/block/<major>:<minor> is a link to the device's sysfs folder (Linux).
    st_dev = os.stat(path).st_dev
    link = Path(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
    try:
        name = link.resolve().name
        if name in counters:
            return name
    except OSError:
        pass
    # Else: the partition mounted at the longest prefix of the path.
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for part in psutil.disk_partitions(all=False):
        mount = part.mountpoint.rstrip("/") or "/"
        if real == mount or real.startswith(mount.rstrip("/") + "/"):
            name = os.path.basename(os.path.realpath(part.device))
            if name in counters and (best is None or len(mount) > best[0]):
                best = (len(mount), name)
    return best[1] if best else None


@dataclass(frozen=True)
class _Sample:
    at: float  # monotonic seconds
    cpu_s: float | None  # cumulative CPU seconds of the server (None: not running)
    busy_ms: float | None  # cumulative busy ms of the device (None: unknown)


class DbHostCollector(Collector):
    """A prometheus_client custom collector over the server whose data is in ``data_dir``.

    Register it in a ``CollectorRegistry``; every ``collect()`` (= a scrape) samples the
    processes and the disk. Thread-safe.
    """

    def __init__(self, data_dir: Path | str, min_window_s: float = MIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic):
        self.data_dir = Path(data_dir).resolve()
        self.min_window_s = min_window_s
        self._clock = clock
        self._cores = psutil.cpu_count() or 1
        self._total_memory = psutil.virtual_memory().total
        self._device = block_device(self.data_dir)
        self._lock = threading.Lock()
        self._samples: list[_Sample] = []
        with self._lock:
            self._samples.append(self._sample()[0])

    @property
    def device(self) -> str | None:
        """The block device ``db_disk_io_busy_ratio`` reports, or None (family omitted)."""
        return self._device

    def _server_processes(self) -> list[psutil.Process]:
        pid = postmaster_pid(self.data_dir)
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _sample(self) -> tuple[_Sample, int, int]:
        """(sample, RSS bytes, process count) now; the postmaster is the first process."""
        processes = self._server_processes()
        cpu_s, rss, count = 0.0, 0, 0
        for index, proc in enumerate(processes):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info()
            except psutil.Error:  # exited in between
                continue
            cpu_s += times.user + times.system
            if index == 0:  # the postmaster: CPU of its exited (reaped) children too
                cpu_s += times.children_user + times.children_system
            rss += mem.rss
            count += 1
        busy_ms = None
        if self._device:
            disk = (psutil.disk_io_counters(perdisk=True) or {}).get(self._device)
            busy_ms = getattr(disk, "busy_time", None) if disk else None
        sample = _Sample(self._clock(), cpu_s if count else None, busy_ms)
        return sample, rss, count

    def _reference(self, now: float) -> _Sample:
        """The latest sample at least ``min_window_s`` old, else the oldest one."""
        old_enough = [s for s in self._samples if now - s.at >= self.min_window_s]
        return old_enough[-1] if old_enough else self._samples[0]

    def collect(self) -> Iterator:
        with self._lock:
            cur, rss, count = self._sample()
            ref = self._reference(cur.at)
            window = cur.at - ref.at
            self._samples.append(cur)
            # Keep a little history, always at least the reference the next scrape may need.
            horizon = cur.at - max(KEEP_SAMPLES_S, self.min_window_s)
            while len(self._samples) > 2 and self._samples[1].at < horizon:
                self._samples.pop(0)

        up = GaugeMetricFamily("db_up", "1 if the PostgreSQL postmaster runs, else 0.")
        up.add_metric([], 1.0 if count else 0.0)
        yield up
        if count:
            cpu_ratio = 0.0
            if window > 0 and ref.cpu_s is not None and cur.cpu_s is not None:
                cpu_ratio = max(0.0, cur.cpu_s - ref.cpu_s) / window / self._cores
            yield GaugeMetricFamily(
                "db_cpu_usage_ratio",
                "CPU of all postgres processes since the previous scrape (>= 1 s ago) / cores, 0..1.",
                value=min(1.0, cpu_ratio),
            )
            yield CounterMetricFamily(
                "db_cpu_seconds", "CPU seconds used by the postgres processes (exited ones included).",
                value=cur.cpu_s or 0.0,
            )
            yield GaugeMetricFamily("db_memory_rss_bytes", "RSS summed over the postgres processes, bytes.",
                                    value=float(rss))
            yield GaugeMetricFamily("db_memory_usage_ratio", "RSS of the postgres processes / machine memory, 0..1.",
                                    value=rss / self._total_memory)
            yield GaugeMetricFamily("db_processes", "PostgreSQL processes running.", value=float(count))
        try:
            disk = psutil.disk_usage(str(self.data_dir))
        except OSError:
            disk = None
        if disk is not None:
            usable = disk.used + disk.free  # df's Use%: blocks reserved for root do not count
            yield GaugeMetricFamily("db_disk_usage_ratio", "Used share of the data directory's filesystem (df), 0..1.",
                                    value=disk.used / usable if usable else 0.0)
            yield GaugeMetricFamily("db_disk_used_bytes", "Used bytes of the data directory's filesystem.",
                                    value=float(disk.used))
            yield GaugeMetricFamily("db_disk_total_bytes", "Size of the data directory's filesystem, bytes.",
                                    value=float(disk.total))
        if cur.busy_ms is not None and ref.busy_ms is not None and window > 0:
            busy = GaugeMetricFamily(
                "db_disk_io_busy_ratio",
                "Share of wall time the data directory's block device was busy since the previous scrape, 0..1.",
                labels=["device"],
            )
            busy.add_metric([self._device], min(1.0, max(0.0, (cur.busy_ms - ref.busy_ms) / 1000 / window)))
            yield busy


class DbExporter:
    """``DbHostCollector`` in its own registry, as an ASGI ``app`` serving ``GET /metrics``
    (Prometheus text) and ``GET /health``. Serve it with ``demo.server.ServerThread``."""

    def __init__(self, data_dir: Path | str, min_window_s: float = MIN_WINDOW_S):
        self.registry = CollectorRegistry()
        self.collector = DbHostCollector(data_dir, min_window_s=min_window_s)
        self.registry.register(self.collector)
        self.app = self._build_app()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="demo database host exporter", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/metrics")
        def metrics():
            return Response(self.render(), media_type=CONTENT_TYPE_LATEST)

        @app.get("/health")
        def health():
            return {"status": "ok", "postgres": "up" if postmaster_pid(self.collector.data_dir) else "down"}

        return app
