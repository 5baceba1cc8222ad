"""A CeleryExecutor deployment without Docker: two Celery workers, each in its own network
namespace, on the local staging stack (issue 13).

What ``docker-compose.yaml`` runs, as local processes (``demo.ui.Deployment(executor="celery")``
starts it all; ``make airflow EXECUTOR=celery``, ``make demo RUNNER=celery``):

- ``WorkerNetwork``: a bridge on the host (``10.213.<n>.1/24``) and one network namespace
  per worker (``ip netns``), joined to it by a veth pair (worker ``a`` ``10.213.<n>.2``,
  ``b`` ``10.213.<n>.3``). A namespace has its own loopback and ports: a worker reaches
  the host's services only at the bridge address, never through ``127.0.0.1``, and two
  workers' log servers both listen on 8793 as on two hosts.
- on the host, every service listens on the bridge address: the embedded PostgreSQL
  (metadata, result backend, observation store, staging; ``listen_addresses`` and a
  ``pg_hba`` line for the subnet), Redis (``Redis``, Debian's ``redis-server``, RDB
  snapshots like the ``redis:7`` image), the api-server (Execution API), the staging
  apps, the Slack stand-in and the S3 server (``demo.s3.LocalS3``) for backups;
  scheduler, dag-processor and triggerer run on the host too.
- ``CeleryWorker``: ``airflow celery worker`` inside its namespace with its own ``HOME``,
  ``TMPDIR``, ``AIRFLOW_HOME`` (task logs) and its own copy of ``dags/``, ``plugins/`` and
  ``include/`` (the Prisma CLI's packages are the "image": linked above the copy, as
  ``deploy/airflow.Dockerfile`` puts them above the mount). Its tasks report the worker's
  address as their hostname (``worker_hostname``), so the REST API says where each ran.
  It runs at ``nice`` ``WORKER_NICE``: on one machine with the staging apps it stands in for
  a worker on its own host, whose tasks (each parses the DAG, ~10 s of CPU) never take the
  apps' CPU; on 2 cores the burst of ~50 check tasks starting at hour 0 made the apps'
  login p95 +20 % in the first compared window once (CI of e110714: the healthy soak INCONCLUSIVE; the burst is the likely cause).

Names carry the owner's pid (``msk<pid>...``): ``WorkerNetwork`` removes the namespaces and
links of owners that are gone (a crashed run) before it creates its own, and its own on
``close``. Needs root (``ip netns``); ``.ci/run`` runs as root and installs ``redis-server``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from demo import private_dir

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "msk"
#: The workers' networks are 10.213.<n>.0/24, n the first free one on this host.
SUPERNET = "10.213"
WORKERS = ("a", "b")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: the worker's address on its network
    (``SOAK_WORKER_ADDRESS``), so a task instance's ``hostname`` says which worker ran it
    and the api-server reaches that worker's log server."""
    return os.environ.get("SOAK_WORKER_ADDRESS") or socket.getfqdn()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process left in namespace ``ns`` (by pid, as ``ip netns pids`` lists), delete it."""
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _ip("netns", "del", ns, check=False)


def remove_leftovers() -> list[str]:
    """Delete the namespaces and links of earlier clusters whose owner process is gone
    (``msk<pid>-<worker>``, ``msk<pid>...``); returns what was removed."""
    removed = []
    for ns in _namespaces():
        m = re.fullmatch(rf"{PREFIX}(\d+)-\w+", ns)
        if m and not _alive(int(m.group(1))):
            _kill_namespace(ns)
            removed.append(ns)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        m = re.fullmatch(rf"{PREFIX}(\d+)\w*", name)
        if m and not _alive(int(m.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


class WorkerNetwork:
    """A bridge on the host and one namespace per worker (module doc).

    After ``__enter__``: ``host`` (the host's address on it), ``cidr``, ``addresses``
    (worker -> address), ``namespaces`` (worker -> name). ``close`` kills what still runs
    in the namespaces and removes them and the bridge; idempotent.
    """

    def __init__(self, workers: tuple[str, ...] = WORKERS):
        self.workers = tuple(workers)
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        self.namespaces = {w: f"{self.tag}-{w}" for w in self.workers}
        self.host = ""
        self.cidr = ""
        self.addresses: dict[str, str] = {}
        self.removed_leftovers: list[str] = []

    def __enter__(self) -> "WorkerNetwork":
        if os.geteuid() != 0:
            raise PermissionError("the Celery cluster's network namespaces need root (ip netns)")
        self.removed_leftovers = remove_leftovers()
        used = set(re.findall(rf"inet {re.escape(SUPERNET)}\.(\d+)\.", _ip("-4", "-o", "addr").stdout))
        n = next(i for i in range(1, 255) if str(i) not in used)
        self.host, self.cidr = f"{SUPERNET}.{n}.1", f"{SUPERNET}.{n}.0/24"
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, w in enumerate(self.workers):
                ns, outside, inside = self.namespaces[w], f"{self.tag}{w}h", f"{self.tag}{w}n"
                address = f"{SUPERNET}.{n}.{i + 2}"
                _ip("netns", "add", ns)
                _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                _ip("link", "set", outside, "master", self.bridge)
                _ip("link", "set", outside, "up")
                _ip("link", "set", inside, "netns", ns)
                _ip("-n", ns, "link", "set", inside, "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self.addresses[w] = address
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def exec_prefix(self, worker: str) -> list[str]:
        """The command prefix that runs a program inside ``worker``'s namespace."""
        return ["ip", "netns", "exec", self.namespaces[worker]]

    def close(self) -> None:
        for ns in self.namespaces.values():
            if ns in _namespaces():
                _kill_namespace(ns)
        _ip("link", "del", self.bridge, check=False)


#: ``nice`` of the Celery workers' processes (module doc): below the staging apps and
#: PostgreSQL, whose latency the soak measures.
WORKER_NICE = 10


class Redis:
    """Debian's ``redis-server`` on ``host:port`` (the Celery broker), data in ``workdir``
    (RDB snapshot on shutdown, like the ``redis:7`` image: a restart keeps queued tasks).
    ``start`` waits until it answers PING (``TimeoutError``); ``restart`` = ``stop`` + ``start``."""

    def __init__(self, workdir: Path | str, host: str, port: int | None = None):
        from demo.postgres import free_port

        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port()
        self.url = f"redis://{host}:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = 30) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server not found: apt-get install redis-server (.ci/run does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [server, "--bind", self.host, "--port", str(self.port), "--dir", str(self.workdir),
             "--dbfilename", "dump.rdb", "--save", "60 1", "--appendonly", "no", "--protected-mode", "no",
             "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}; see {self.workdir / 'redis.log'}")
            if self.ping():
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on {self.host}:{self.port} within {timeout_s:g} s")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM (Redis saves its snapshot and exits), SIGKILL after ``timeout_s``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> float:
        """Stop and start again on the same port; returns the seconds it was down."""
        began = time.monotonic()
        self.stop()
        self.start()
        return time.monotonic() - began


def copy_project(target: Path) -> Path:
    """The worker's own copy of ``dags/``, ``plugins/``, ``include/`` (and ``demo/``, for
    ``worker_hostname``) under ``target``
    (no caches, no ``node_modules``), with the Prisma CLI's packages linked above it as the
    image holds them (``node_modules``: ``npx`` looks in every parent folder). Returns it."""
    target.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules")
    for name in ("dags", "plugins", "include", "demo"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore, dirs_exist_ok=True)
    packages = ROOT / "include" / "prisma" / "node_modules"
    link = target / "node_modules"
    if packages.exists() and not link.exists():
        link.symlink_to(packages.resolve(), target_is_directory=True)
    return target


class CeleryWorker:
    """``airflow celery worker`` named ``name`` inside namespace ``network.namespaces[name]``.

    ``root``: its own folder (``project/`` copy, ``home/``, ``tmp/``, ``airflow/`` with its
    task logs, ``worker.log``). ``env``: the deployment's environment as the worker must see
    it (addresses on the network, no 127.0.0.1); the worker adds its own paths.
    ``queues``: the Celery queues it consumes; ``concurrency``: its task slots.
    """

    def __init__(self, name: str, root: Path, network: WorkerNetwork, env: dict[str, str],
                 queues: tuple[str, ...], concurrency: int = 4, plans_dir: Path | None = None):
        self.name = name
        self.root = Path(root).resolve()
        self.network = network
        self.address = network.addresses[name]
        self.queues = queues
        self.concurrency = concurrency
        self.celery_hostname = f"{name}@{self.address}"
        self.project = self.root / "project"
        self.log_path = self.root / "worker.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.plans_dir = plans_dir
        self.env = dict(env)

    @property
    def log_dir(self) -> Path:
        """Its task logs (``AIRFLOW_HOME/logs``)."""
        return self.root / "airflow" / "logs"

    def prepare(self) -> None:
        copy_project(self.project)
        plans = None
        if self.plans_dir is not None:
            plans = self.project / "plans"
            shutil.copytree(self.plans_dir, plans, dirs_exist_ok=True)
        for sub in ("home", "tmp", "airflow"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        private_dir(self.root / "airflow" / "runtime")  # XDG_RUNTIME_DIR: platformdirs wants it 0700
        self.env.update({
            "HOME": str(self.root / "home"), "TMPDIR": str(self.root / "tmp"),
            "AIRFLOW_HOME": str(self.root / "airflow"), "XDG_RUNTIME_DIR": str(self.root / "airflow" / "runtime"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.project / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.project / "plugins"),
            "PYTHONPATH": os.pathsep.join([str(self.project / "plugins"), str(self.project)]),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "demo.celery_cluster.worker_hostname",
            "SOAK_WORKER_ADDRESS": self.address,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
        })
        if plans is not None:
            self.env["MIGRATION_SOAK_PLANS_DIR"] = str(plans)

    def start(self) -> None:
        if self.running():
            raise RuntimeError(f"worker {self.name} is already running (pid {self.proc.pid})")
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== start {self.starts} of worker {self.name} at {time.strftime('%H:%M:%S')} =====\n")
        log.flush()
        airflow = str(Path(sys.executable).with_name("airflow"))
        self.proc = subprocess.Popen(
            [*self.network.exec_prefix(self.name), "nice", "-n", str(WORKER_NICE), airflow, "celery", "worker", "--celery-hostname",
             self.celery_hostname, "--queues", ",".join(self.queues), "--concurrency", str(self.concurrency)],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.project,
            start_new_session=True)
        log.close()

    def wait_ready(self, timeout_s: float = 180) -> float:
        """Wait for Celery's "<hostname> ready." line of this start; returns the seconds waited."""
        began = time.monotonic()
        marker = f"{self.celery_hostname} ready."
        while time.monotonic() - began < timeout_s:
            if not self.running():
                raise RuntimeError(f"worker {self.name} exited; see {self.log_path}")
            text = self.log_path.read_text(errors="replace")
            if marker in text.rsplit("===== start ", 1)[-1]:
                return time.monotonic() - began
            time.sleep(0.5)
        raise TimeoutError(f"worker {self.name} not ready within {timeout_s:g} s; see {self.log_path}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL every process in the worker's namespace: the host crashed. (Its process
        group is not enough: Airflow's supervisor starts each task process in a session of
        its own, and one that outlives its worker finishes its work unseen.)"""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._signal_all(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def _signal_all(self, sig: int) -> None:
        """Send ``sig`` to every process in the worker's namespace (its task processes too),
        listing again until no new one appeared (one forked meanwhile gets it as well)."""
        sent: set[str] = set()
        for _ in range(5):
            pids = set(_ip("netns", "pids", self.network.namespaces[self.name], check=False).stdout.split())
            if pids <= sent:
                return
            for pid in pids - sent:
                try:
                    os.kill(int(pid), sig)
                except (ProcessLookupError, ValueError):
                    pass
            sent |= pids

    def freeze(self) -> None:
        """SIGSTOP every process in the worker's namespace: nothing it runs can change a task's
        state until ``thaw`` or ``kill`` (a test's way to look, then kill without a race)."""
        if self.running():
            self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what ``freeze`` stopped."""
        if self.running():
            self._signal_all(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM its process group (Celery's warm shutdown) without waiting."""
        if self.running():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (Celery's warm shutdown), SIGKILL of the group after ``timeout_s``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()


def celery_env(network: WorkerNetwork, redis: Redis, metadata_url: str) -> dict[str, str]:
    """The CeleryExecutor settings every component and worker shares (as docker-compose.yaml's
    ``x-airflow-common``): broker, result backend (``metadata_url``'s database; holds the
    password: environment only), and how fast a lost worker's task is failed and retried."""
    backend = "db+" + metadata_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis.url,
        "AIRFLOW__CELERY__RESULT_BACKEND": backend,
        # a worker takes a task only when it has a free process (plugins/soak_celery_config.py)
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "soak_celery_config.CELERY_CONFIG",
        # A SIGKILLed worker's running task is failed (then retried, if it may be) once its
        # heartbeat is this old; the default, 300 s, is the whole soak on the demo's 300x clock.
        # (A task process heartbeats every few seconds: [workers] min_heartbeat_interval.)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
    }
