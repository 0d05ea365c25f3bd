"""Two real appliances for the replication tests: `objfs serve` processes on loopback ports.

Each :class:`Appliance` is a store (EC 2+1 on directory drives, small
segments), an admin key, a ``replication`` key for the other side to sign
with, and an ``objfs serve`` process that can be stopped, killed (SIGKILL)
and started again on the same ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from ports import free_port

from objfs.store.remotes import add_remote
from objfs.stores import init_store

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


class Appliance:
    def __init__(self, root: Path, name: str, *, replication_toml: str = "interval_seconds = 0.2\n") -> None:
        self.name = name
        self.root = root / name
        self.store = self.root / "store"
        self.mnt = self.root / "mnt"
        self.log = self.root / "serve.log"
        store = init_store(self.store, ec="2+1", segment_size=256 << 10)
        self.admin = store.keys.create("admin", legal_hold=True, retention=True, bypass_governance=True)
        self.replicator = store.keys.create("peer", replication=True)
        store.close()
        with open(self.store / "objfs.toml", "a") as f:
            f.write("\n[replication]\n" + replication_toml)
        self.s3_port, self.dicom_port, self.admin_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        self.mnt.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "a")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "objfs.cli", "serve", str(self.store), "--mount", str(self.mnt),
                "--port", str(self.s3_port), "--dicom-port", str(self.dicom_port), "--admin-port", str(self.admin_port),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=ENV, text=True,
        )  # fmt: skip
        out.close()
        deadline = time.time() + 90
        while time.time() < deadline:
            if "objfs: ready" in self.log.read_text():
                self.log.write_text("")  # the next start waits for its own line
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: objfs serve did not come up:\n{self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        # A killed process leaves its mount dead (ENOTCONN), which ismount() cannot even see.
        subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.admin.access_key,
            aws_secret_access_key=self.admin.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def replicate_to(self, other: Appliance, remote: str) -> None:
        """Define ``other`` as remote ``remote`` here, signing with its replication key."""
        add_remote(
            self.store,
            remote,
            endpoint=other.endpoint,
            access_key=other.replicator.access_key,
            secret_key=other.replicator.secret_key,
        )

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "objfs.cli", *args[:1], *args[1:2], str(self.store), *args[2:]],
            env=ENV, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def status(self, bucket: str | None = None) -> dict[str, Any]:
        return json.loads(self.cli("replication", "status", *([bucket] if bucket else []), "--json").stdout)


def versioned_bucket(s3: Any, name: str, *, lock: bool = False) -> None:
    """Create bucket ``name`` (unless it exists: the DICOM gateway makes its own) with versioning on."""
    try:
        s3.create_bucket(Bucket=name, **({"ObjectLockEnabledForBucket": True} if lock else {}))
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll ``check`` until it returns something true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        try:
            last = check()
        except Exception as exc:  # noqa: BLE001 - the side may still be starting
            last = exc
        else:
            if last:
                return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def drained(appliance: Appliance) -> bool:
    status = appliance.status()
    return status["converged"]


def versions(s3: Any, bucket: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(key, version id) -> {etag, marker, latest} of a bucket."""
    out = {}
    page = s3.list_object_versions(Bucket=bucket)
    for v in page.get("Versions", []):
        out[(v["Key"], v["VersionId"])] = {"etag": v["ETag"], "marker": False, "latest": v["IsLatest"]}
    for m in page.get("DeleteMarkers", []):
        out[(m["Key"], m["VersionId"])] = {"etag": "", "marker": True, "latest": m["IsLatest"]}
    return out
