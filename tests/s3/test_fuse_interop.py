"""The S3 sidecar beside a running FUSE mount of the same store (two processes, one store)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3helpers import env


@pytest.fixture(scope="module")
def mounted(s3_store: Path, server, tmp_path_factory):
    """``objfs mount STORE MNT --foreground`` as a subprocess, beside the session's sidecar."""
    mnt = tmp_path_factory.mktemp("fuse") / "mnt"
    mnt.mkdir()
    log = mnt.parent / "mount.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "objfs.cli", "mount", str(s3_store), str(mnt), "--foreground"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env(),
        )
    try:
        _wait_until_answering(mnt, proc, log)
        yield mnt
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if _in_mount_table(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def _in_mount_table(mnt: Path) -> bool:
    # Never stat a mount point to ask: a mount that does not answer would hang the caller.
    return any(line.split()[1] == str(mnt) for line in Path("/proc/self/mounts").read_text().splitlines())


def _wait_until_answering(mnt: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not _in_mount_table(mnt):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the mount did not come up:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    # The first request through the mount is made by a child that can be killed
    # if the file system never answers, so a broken mount fails the test instead of hanging it.
    try:
        subprocess.run(["stat", str(mnt)], capture_output=True, timeout=15, check=True)
    except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
        proc.kill()
        pytest.fail(f"the mount does not answer ({exc}):\n{log.read_text(errors='replace')}")


def test_put_over_s3_reads_through_the_mount(mounted: Path, s3, bucket):
    body = os.urandom(3 << 20)
    s3.put_object(Bucket=bucket, Key="series1/img1.dcm", Body=body)
    path = mounted / bucket / "series1" / "img1.dcm"
    assert path.stat().st_size == len(body)
    assert path.read_bytes() == body
    assert "img1.dcm" in os.listdir(mounted / bucket / "series1")


def test_file_written_to_the_mount_is_got_over_s3(mounted: Path, s3, bucket):
    body = os.urandom(2 << 20) + b"end"
    (mounted / bucket / "legacy").mkdir()
    with open(mounted / bucket / "legacy" / "study.dcm", "wb") as f:
        f.write(body)
    # close() committed it: S3 sees the new object at once.
    got = s3.get_object(Bucket=bucket, Key="legacy/study.dcm")
    assert got["Body"].read() == body
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="legacy/")["Contents"]]
    assert "legacy/study.dcm" in keys
    s3.delete_object(Bucket=bucket, Key="legacy/study.dcm")
    assert not (mounted / bucket / "legacy" / "study.dcm").exists()
