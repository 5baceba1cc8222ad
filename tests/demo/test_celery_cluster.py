"""demo/celery_cluster.py's parts on their own (seconds): the workers' network namespaces
reach the host only at its address on their network, leftovers of a crashed run are
removed, and a restarted Redis keeps what was queued. The whole distributed soak is in
tests/e2e/test_soak.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from demo import celery_cluster
from demo.celery_cluster import Redis, WorkerNetwork, copy_project

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2 (CI runs as root)")


def _connect_from(network: WorkerNetwork, worker: str, host: str, port: int) -> str:
    """Connect from inside ``worker``'s namespace; returns "ok" or the error's name."""
    code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()"
            "\n print('ok')\nexcept OSError as e:\n print(type(e).__name__)")
    out = subprocess.run([*network.exec_prefix(worker), sys.executable, "-c", code, host, str(port)],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _listener(host: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((host, 0))
    sock.listen()
    return sock


def test_workers_reach_the_host_only_at_its_address_on_their_network():
    with WorkerNetwork() as network:
        assert set(network.addresses) == {"a", "b"} and network.host.startswith("10.213.")
        assert len({network.host, *network.addresses.values()}) == 3
        on_host, on_loopback = _listener(network.host), _listener("127.0.0.1")
        try:
            for worker in ("a", "b"):
                assert _connect_from(network, worker, network.host, on_host.getsockname()[1]) == "ok"
                # the namespace's own loopback: the host's 127.0.0.1 services are out of reach
                assert _connect_from(network, worker, "127.0.0.1", on_loopback.getsockname()[1]) == \
                    "ConnectionRefusedError"
        finally:
            on_host.close()
            on_loopback.close()
        namespaces = set(network.namespaces.values())
        assert namespaces <= set(celery_cluster._namespaces())
    assert not namespaces & set(celery_cluster._namespaces())  # removed on exit
    assert network.bridge not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_a_crashed_runs_namespaces_are_removed_by_the_next_one(monkeypatch):
    dead = 4_000_000  # above any pid the kernel hands out here (pid_max is at most 4194304)
    monkeypatch.setattr(celery_cluster.os, "getpid", lambda: dead)
    crashed = WorkerNetwork(workers=("a",)).__enter__()  # never closed: as after a SIGKILL
    monkeypatch.undo()
    assert crashed.namespaces["a"] in celery_cluster._namespaces()
    with WorkerNetwork() as network:
        assert {crashed.namespaces["a"], crashed.bridge} <= set(network.removed_leftovers)
        assert crashed.namespaces["a"] not in celery_cluster._namespaces()
        assert crashed.host != "" and network.host  # the subnet is free again or another is used


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed (.ci/run installs it)")
def test_a_restarted_redis_keeps_the_queued_tasks(tmp_path):
    import redis

    server = Redis(tmp_path, "127.0.0.1")
    server.start()
    try:
        client = redis.Redis(host=server.host, port=server.port)
        client.lpush("default", b"task-1", b"task-2")
        down_s = server.restart()
        assert server.starts == 2 and down_s < 30
        assert client.lrange("default", 0, -1) == [b"task-2", b"task-1"]
    finally:
        server.stop()
    assert not server.ping()


def test_a_workers_project_is_its_own_copy(tmp_path):
    project = copy_project(tmp_path / "project")
    for name in ("dags", "plugins", "include", "demo"):
        assert (project / name).is_dir() and not (project / name).is_symlink()
    assert (project / "include" / "plans" / "default.yaml").read_bytes() == \
        (celery_cluster.ROOT / "include" / "plans" / "default.yaml").read_bytes()
    assert not list(project.rglob("__pycache__"))
    assert not (project / "include" / "prisma" / "node_modules").exists()  # the image's packages: linked above
    if (celery_cluster.ROOT / "include" / "prisma" / "node_modules").exists():
        assert (project / "node_modules").is_symlink()
