"""A local S3-compatible server for backups: ``moto`` in server mode, as a child process.

Backups kept in S3 go through Airflow's ``ObjectStoragePath`` and the amazon provider's
``s3fs`` filesystem (``backup_storage.py``); this server lets the tests and the demo run
that exact path without AWS. Keys are dummies (moto accepts any); the Airflow connection
(``conn_type`` aws) reaches it through its ``endpoint_url`` extra::

    with LocalS3(workdir) as s3:
        s3.create_bucket("soak-backups")
        env = {s3.env_var("soak_s3"): s3.connection_json()}  # AIRFLOW_CONN_SOAK_S3
        # backup_location: s3://soak-backups/..., connections.backup_storage: soak_s3

``LocalS3`` keeps objects in memory: they are gone when it stops.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from demo.postgres import free_port

#: Dummy credentials: moto signs nothing for real, but botocore needs some to sign with.
ACCESS_KEY = "moto-test-key"
SECRET_KEY = "moto-test-secret"
REGION = "us-east-1"


class LocalS3:
    """``moto_server`` on ``127.0.0.1:<free port>`` (or ``host``/``port``), its log in
    ``<workdir>/moto.log``. ``start`` waits until it answers (``TimeoutError`` after
    ``timeout_s`` seconds); ``stop`` ends it."""

    def __init__(self, workdir: Path | str, host: str = "127.0.0.1", port: int | None = None):
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port()
        self.endpoint_url = f"http://{self.host}:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LocalS3":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        server = Path(sys.executable).with_name("moto_server")
        log = open(self.workdir / "moto.log", "ab")
        self.proc = subprocess.Popen([str(server), "-H", self.host, "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited {self.proc.returncode}; see {self.workdir / 'moto.log'}")
            try:
                requests.get(f"{self.endpoint_url}/moto-api/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"moto_server did not answer on {self.endpoint_url} within {timeout_s:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self):
        """A boto3 S3 client of this server (for setting up and inspecting buckets)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def sha256_of_objects(self, bucket: str) -> dict[str, str]:
        """key -> sha256 (hex) of every object in ``bucket`` (read whole)."""
        import hashlib

        client = self.client()
        found = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=o["Key"])["Body"]
                digest = hashlib.sha256()
                for chunk in iter(lambda: body.read(1 << 20), b""):
                    digest.update(chunk)
                found[o["Key"]] = digest.hexdigest()
        return found

    def connection_json(self) -> str:
        """The Airflow connection (aws) of this server, as ``AIRFLOW_CONN_<ID>`` JSON."""
        return json.dumps({"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY,
                           "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION}})

    @staticmethod
    def env_var(conn_id: str) -> str:
        """``AIRFLOW_CONN_<CONN_ID>``: where Airflow reads connection ``conn_id`` from."""
        return f"AIRFLOW_CONN_{conn_id.upper()}"
