"""Writes through the mount: spool semantics, close-to-open, failed commits, degraded reads, lifecycle."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from objfs.store import NoSuchKey, Store


def store_bytes(store_path: Path, key: str) -> bytes:
    with Store.open(store_path) as store:
        return store.get_object_bytes("pacs", key)


def test_spool_semantics_random_append_truncate(mount) -> None:
    f = mount.path / "pacs" / "f.bin"
    with open(f, "wb") as fh:
        fh.write(b"a" * 10_000)
    with open(f, "r+b") as fh:  # random overwrite in place
        fh.seek(5000)
        fh.write(b"B" * 10)
    expected = bytearray(b"a" * 10_000)
    expected[5000:5010] = b"B" * 10
    assert f.read_bytes() == expected
    with open(f, "ab") as fh:
        fh.write(b"tail")
    expected += b"tail"
    assert store_bytes(mount.store, "f.bin") == expected
    os.truncate(f, 100)
    assert f.read_bytes() == expected[:100] and os.stat(f).st_size == 100
    with open(f, "r+b") as fh:
        fh.truncate(300)
    assert f.read_bytes() == expected[:100] + b"\0" * 200
    with open(f, "wb") as fh:  # O_TRUNC
        fh.write(b"new")
    assert store_bytes(mount.store, "f.bin") == b"new"
    fd = os.open(f, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"1")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"2")  # O_APPEND ignores the offset
    os.close(fd)
    assert f.read_bytes() == b"new12"


def test_close_to_open_and_fsync(mount) -> None:
    f = mount.path / "pacs" / "c2o.bin"
    f.write_bytes(b"old")
    with open(f, "r+b") as fh:
        fh.write(b"NEW!")
        fh.flush()
        assert store_bytes(mount.store, "c2o.bin") == b"old"  # not before close/fsync
        os.fsync(fh.fileno())
        assert store_bytes(mount.store, "c2o.bin") == b"NEW!"
    with open(mount.path / "pacs" / "pending", "wb") as fh:
        fh.write(b"x")
        fh.flush()
        with Store.open(mount.store) as store, pytest.raises(NoSuchKey):
            store.head_object("pacs", "pending")
        assert os.stat(mount.path / "pacs" / "pending").st_size == 1
        assert "pending" in os.listdir(mount.path / "pacs")


def test_concurrent_opens_share_one_file(mount) -> None:
    f = mount.path / "pacs" / "shared.bin"
    a = os.open(f, os.O_CREAT | os.O_RDWR, 0o644)
    b = os.open(f, os.O_RDWR)
    os.pwrite(a, b"A" * 100, 0)
    os.pwrite(b, b"B" * 100, 100)
    assert os.pread(b, 200, 0) == b"A" * 100 + b"B" * 100
    os.close(a)
    os.pwrite(b, b"C", 0)
    os.close(b)
    assert store_bytes(mount.store, "shared.bin") == b"C" + b"A" * 99 + b"B" * 100


def test_unlinked_open_file_lives_until_last_close(mount) -> None:
    f = mount.path / "pacs" / "ghost.bin"
    f.write_bytes(b"g" * 3_000_000)
    reader = open(f, "rb", buffering=0)
    writer = open(f, "r+b", buffering=0)
    os.unlink(f)
    assert not f.exists()
    assert reader.read(10) == b"g" * 10
    writer.seek(0)
    writer.write(b"W")
    writer.flush()
    writer.seek(0)
    assert writer.read(2) == b"Wg"
    assert os.fstat(writer.fileno()).st_size == 3_000_000
    # What the reader sees now is the version it opened (tests/fuse/test_open_version.py).
    writer.close()
    reader.close()
    assert not f.exists()
    with Store.open(mount.store) as store:
        assert store.list_objects("pacs").objects == []
    deadline = time.monotonic() + 5
    while any((mount.store / "spool" / "fuse").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((mount.store / "spool" / "fuse").iterdir()) == []


def test_other_fronts_see_writes_within_a_second(mount, cli) -> None:
    f = mount.path / "pacs" / "seen.bin"
    f.write_bytes(b"from the mount")
    # Another process opening the store (the S3 sidecar, the CLI) sees it as soon as close returned.
    assert cli("get", str(mount.store), "pacs/seen.bin").stdout == b"from the mount"
    os.stat(f)  # cached by the kernel now
    cli("put", str(mount.store), "pacs/seen.bin", "-", input=b"from another process, longer")
    cli("put", str(mount.store), "pacs/new/from-s3.bin", "-", input=b"s3")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            if f.read_bytes() == b"from another process, longer" and (mount.path / "pacs" / "new" / "from-s3.bin").exists():
                break
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    assert f.read_bytes() == b"from another process, longer"
    assert os.stat(f).st_size == len(b"from another process, longer")
    assert (mount.path / "pacs" / "new" / "from-s3.bin").read_bytes() == b"s3"


def test_failed_commit_is_returned_by_close(mount) -> None:
    f = mount.path / "pacs" / "lost.bin"
    f.write_bytes(b"before")
    for d in ("d0", "d1"):  # 4 of 6 drives left: below the write quorum k+1 = 5
        shutil.rmtree(mount.store / "drives" / d)
    fh = open(f, "wb")
    fh.write(b"x" * 200_000)
    with pytest.raises(OSError) as info:
        fh.close()
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as info:
        with open(mount.path / "pacs" / "new.bin", "wb") as fh:
            fh.write(b"y")
            os.fsync(fh.fileno())
    assert info.value.errno == errno.ENOSPC
    time.sleep(0.6)  # past the attribute timeout: what the mount says now comes from the store
    assert f.read_bytes() == b"before"
    assert not (mount.path / "pacs" / "new.bin").exists()


def test_degraded_read_with_m_drives_removed(mount) -> None:
    data = os.urandom(3_500_000)
    (mount.path / "pacs" / "study").mkdir()
    for i in range(3):
        (mount.path / "pacs" / "study" / f"{i}.dcm").write_bytes(data[i:])
    mount.stop()
    for d in ("d0", "d3"):
        shutil.rmtree(mount.store / "drives" / d)
    mount.start()
    for i in range(3):
        assert (mount.path / "pacs" / "study" / f"{i}.dcm").read_bytes() == data[i:]


def test_mount_refuses_busy_or_non_empty_mount_points(mount, cli, tmp_path: Path) -> None:
    busy = cli("mount", str(mount.store), str(mount.path), "--foreground", check=False, timeout=30)
    assert busy.returncode != 0 and b"busy" in busy.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "old-pacs-file").write_bytes(b"")
    refused = cli("mount", str(mount.store), str(full), "--foreground", check=False, timeout=30)
    assert refused.returncode != 0 and b"not empty" in refused.stderr


def test_background_mount_and_sigint(store_path: Path, tmp_path: Path, cli, mounter) -> None:
    mnt = tmp_path / "bg"
    mnt.mkdir()
    try:
        done = cli("mount", str(store_path), str(mnt), timeout=30)  # returns once mounted
        assert done.returncode == 0 and os.path.ismount(mnt)
        (mnt / "pacs").mkdir()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    deadline = time.monotonic() + 10
    while os.path.ismount(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.ismount(mnt)
    # Foreground, SIGINT: a clean unmount and exit status 0.
    m = mounter(store_path, mnt).start()
    assert m.proc is not None
    proc = m.proc
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0, m.log()
    assert not os.path.ismount(mnt)
    m.proc = None
    assert os.listdir(mnt) == []
