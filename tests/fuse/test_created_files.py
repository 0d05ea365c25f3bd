"""Files made by ``open(O_CREAT)`` whatever the access mode, and WORM on a descriptor that committed.

``flock newfile cmd`` opens ``O_CREAT|O_RDONLY``: the file must be stored
like any created file, and a directory holding only such files is not
empty. A descriptor whose fsync committed a version into a bucket with a
default retention may not change that version afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time

import pytest

from objfs.store import Store


def sh(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30)


def test_files_created_read_only_are_stored(mount) -> None:
    locks = mount.path / "pacs" / "locks"
    locks.mkdir()
    done = sh("flock", locks / "a.lock", "true")
    assert done.returncode == 0, done.stderr
    fd = os.open(locks / "b.lock", os.O_CREAT | os.O_RDONLY, 0o640)
    empty = mount.path / "pacs" / "empty"
    empty.mkdir()
    try:
        # Renaming an empty directory over one holding such files must not lose them.
        with pytest.raises(OSError) as info:
            os.rename(empty, locks)
        assert info.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        os.rename(empty, locks)
    assert info.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    with Store.open(mount.store) as store:  # stored at close, before any unmount
        assert store.head_object("pacs", "locks/a.lock").size == 0
        assert store.head_object("pacs", "locks/b.lock").size == 0
    mount.stop()
    mount.start()
    assert sorted(os.listdir(locks)) == ["a.lock", "b.lock"]
    assert os.stat(locks / "b.lock").st_size == 0
    assert os.stat(locks / "b.lock").st_mode & 0o777 == 0o640


def test_writes_after_fsync_into_default_retention_are_refused(mount, cli) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("wormf", object_lock=True)
        store.put_lock_configuration("wormf", "COMPLIANCE", days=1)
    f = mount.path / "wormf" / "report.dcm"
    fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"first")
        os.fsync(fd)
        for change in (lambda: os.write(fd, b"second"), lambda: os.ftruncate(fd, 0), lambda: os.fsync(fd)):
            try:
                change()
            except OSError as exc:
                assert exc.errno == errno.EPERM, exc
            else:
                assert change.__code__.co_names == ("os", "fsync"), "a change of a retained version was accepted"
    finally:
        os.close(fd)
    assert f.read_bytes() == b"first"
    with Store.open(mount.store) as store:
        versions = store.list_object_versions("wormf", prefix="report.dcm").versions
        assert [store.get_object_bytes("wormf", "report.dcm", v.version_id) for v in versions] == [b"first"]
    out = cli("audit", "show", str(mount.store), "--bucket", "wormf", "--key", "report.dcm").stdout.decode()
    denied = [json.loads(line) for line in out.splitlines() if line.strip() and json.loads(line)["outcome"] == "denied"]
    assert {e["action"] for e in denied} >= {"write"}
    assert all(e["who"] == f"fuse:uid={os.getuid()},pid={os.getpid()}" for e in denied)


def test_a_second_descriptor_sees_the_committed_lock_too(mount) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("wormg", object_lock=True)
        store.put_lock_configuration("wormg", "GOVERNANCE", days=1)
    f = mount.path / "wormg" / "a.dcm"
    with open(f, "wb") as fh:
        fh.write(b"kept")
    time.sleep(0.6)  # past the kernel's attribute cache
    with pytest.raises(OSError) as info:
        open(f, "r+b")
    assert info.value.errno == errno.EPERM
    assert f.read_bytes() == b"kept"
