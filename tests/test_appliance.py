"""The appliance as `make run` starts it: `objfs serve` with every front over one store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from ports import free_port
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from objfs.appliance import prepare
from objfs.store.keys import KeyRing

REPO = Path(__file__).resolve().parent.parent


def wait_ready(proc: subprocess.Popen, diagnostics: Callable[[], str] = str) -> list[str]:
    """The lines ``objfs serve`` printed up to "objfs: ready" (within 60 s); fails the test if it never got there."""
    output: list[str] = []
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("objfs: ready"):
            return output
    pytest.fail("objfs serve did not come up:\n" + "".join(output) + diagnostics())


def stop_serve(proc: subprocess.Popen, mnt: Path) -> str:
    """SIGTERM ``objfs serve`` (SIGKILL after 60 s), lift a mount it left behind; returns what it printed since."""
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
    if os.path.ismount(mnt):
        subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
    return rest or ""


def serve_command(store: Path, mnt: Path, s3_port: int, dicom_port: int, admin_port: int | None = None) -> list[str]:
    """`objfs serve` on loopback ports of the test's choosing (the admin port a free one unless given)."""
    return [
        sys.executable,
        "-m",
        "objfs.cli",
        "serve",
        str(store),
        "--mount",
        str(mnt),
        "--port",
        str(s3_port),
        "--dicom-port",
        str(dicom_port),
        "--admin-port",
        str(admin_port or free_port()),
    ]


def test_prepare_creates_the_store_and_one_key_once(tmp_path: Path) -> None:
    store = tmp_path / "var" / "store"
    key = prepare(store)
    assert key is not None and (store / "objfs.toml").exists()
    assert [k.access_key for k in KeyRing.of_store(store).all()] == [key["access_key"]]
    assert prepare(store) is None  # a second `make run` reuses the store and its key


def test_serve_runs_every_front_and_stops_cleanly(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    key = prepare(store)
    s3_port, dicom_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        serve_command(store, mnt, s3_port, dicom_port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        output = wait_ready(proc)
        assert os.path.ismount(mnt)

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            aws_access_key_id=key["access_key"],
            aws_secret_access_key=key["secret_key"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        s3.create_bucket(Bucket="radiology")
        s3.put_object(Bucket="radiology", Key="study/1.dcm", Body=b"from s3")
        assert (mnt / "radiology" / "study" / "1.dcm").read_bytes() == b"from s3"
        (mnt / "radiology" / "study" / "2.dcm").write_bytes(b"from the mount")
        assert s3.get_object(Bucket="radiology", Key="study/2.dcm")["Body"].read() == b"from the mount"

        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", dicom_port, ae_title="OBJFS")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
    finally:
        rest = stop_serve(proc, mnt)
    assert proc.returncode == 0, "".join(output) + rest
    assert not os.path.ismount(mnt)
    verify = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "audit", "verify", str(store)], env=env, capture_output=True, text=True
    )
    assert verify.returncode == 0 and json.loads(verify.stdout.splitlines()[-1])["ok"]


def test_serve_fails_cleanly_when_a_front_cannot_start(tmp_path: Path) -> None:
    """A taken DICOM port: the appliance exits with an error, unmounted, instead of hanging."""
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    prepare(store)
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        started = time.time()
        done = subprocess.run(
            serve_command(store, mnt, free_port(), busy_port),
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
        )
    assert done.returncode != 0, done.stdout + done.stderr
    assert time.time() - started < 60
    assert not os.path.ismount(mnt)
    assert f"DICOM port {busy_port} is in use" in done.stderr and "Traceback" not in done.stderr
