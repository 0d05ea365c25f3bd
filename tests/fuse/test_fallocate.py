"""fallocate(2) on the mount: allocate, keep-size, punch-hole, zero-range; other modes, locks and space refused.

Everything through a real mount process (with the pyfuse3 that
scripts/install-pyfuse3.sh builds: an unpatched one answers every call
EOPNOTSUPP and these tests fail) and real drive directories; fragment bytes
are counted on the drives themselves. The modes are called through libc
(no fallback), and through util-linux's ``fallocate`` as an admin would.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from objfs.store import Store

MIB = 1 << 20
HOLE_BLOCK = 64 << 10  # objfs.fuse.holes: the commit's smallest hole in data it reads
KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE = 0x01, 0x02, 0x08, 0x10, 0x20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself (glibc's posix_fallocate would fall back to writing zeros)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def errno_of(call, *args) -> int:
    with pytest.raises(OSError) as info:
        call(*args)
    return info.value.errno


def drive_bytes(store_path: Path) -> int:
    """Bytes of every file under the drives (fragments, footers, meta files)."""
    return sum(f.stat().st_size for f in (store_path / "drives").rglob("*") if f.is_file())


def util_linux(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["fallocate", *map(str, args)], capture_output=True, text=True, timeout=60)


def head(store_path: Path, key: str, bucket: str = "pacs"):
    with Store.open(store_path) as store:
        return store.head_object(bucket, key)


def test_allocation_extends_the_file_without_storing_zeros(mount) -> None:
    path = mount.path / "pacs" / "allocated.bin"
    before = drive_bytes(mount.store)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"abc")
        os.posix_fallocate(fd, 0, 64 * MIB)
        assert os.fstat(fd).st_size == 64 * MIB
        fallocate(fd, 0, 0, 16 * MIB)  # inside the file: changes nothing
        assert os.fstat(fd).st_size == 64 * MIB
    finally:
        os.close(fd)
    assert path.stat().st_size == 64 * MIB and path.stat().st_blocks * 512 <= 128 * 1024
    info = head(mount.store, "allocated.bin")
    assert info.size == 64 * MIB and info.stored_size <= HOLE_BLOCK  # the block holding "abc"
    assert drive_bytes(mount.store) - before < MIB
    with open(path, "rb") as f:
        assert f.read(3) == b"abc"
        f.seek(40 * MIB)
        assert f.read(MIB) == bytes(MIB)

    # The admin's tool: mode 0 from an offset, on a file nobody else has open.
    done = util_linux("-o", 64 * MIB, "-l", 36 * MIB, path)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_size == 100 * MIB
    assert head(mount.store, "allocated.bin").stored_size <= HOLE_BLOCK
    with open(path, "rb") as f:
        f.seek(100 * MIB - 4096)
        assert f.read() == bytes(4096)


def test_keep_size_changes_nothing_and_stores_no_new_version(mount) -> None:
    path = mount.path / "pacs" / "kept.bin"
    data = os.urandom(MIB + 123)
    path.write_bytes(data)
    stored = head(mount.store, "kept.bin")
    before = path.stat()
    done = util_linux("--keep-size", "-o", 0, "-l", 8 * MIB, path)
    assert done.returncode == 0, done.stderr
    fd = os.open(path, os.O_WRONLY)
    try:
        fallocate(fd, KEEP_SIZE, MIB, 4 * MIB)
    finally:
        os.close(fd)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert path.read_bytes() == data
    assert head(mount.store, "kept.bin").version_id == stored.version_id


def test_punched_range_reads_as_zeros_survives_a_remount_and_costs_no_fragments(
    store_path: Path, tmp_path: Path, mounter
) -> None:
    m = mounter(store_path, tmp_path / "mnt").start()
    (m.path / "pacs").mkdir()
    path = m.path / "pacs" / "punched.bin"
    data = bytearray(os.urandom(8 * MIB))
    path.write_bytes(data)
    assert head(store_path, "punched.bin").stored_size == 8 * MIB
    before = drive_bytes(store_path)

    # 6 MiB from 1 MiB with the admin's tool, then 10 bytes inside the data through a descriptor.
    done = util_linux("--punch-hole", "-o", MIB, "-l", 6 * MIB, path)
    assert done.returncode == 0, done.stderr
    data[MIB : 7 * MIB] = bytes(6 * MIB)
    # The new version's fragments: 2 MiB with parity (4+2), where a dense one would take 12 MiB.
    assert drive_bytes(store_path) - before < 4 * MIB
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 7 * MIB + 5, 10)
        data[7 * MIB + 5 : 7 * MIB + 15] = bytes(10)
        assert os.pread(fd, 32, 7 * MIB) == bytes(data[7 * MIB : 7 * MIB + 32])  # the same descriptor sees it at once
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 8 * MIB - 100, MIB)  # past the end: cut at it, the size stays
        data[8 * MIB - 100 :] = bytes(100)
        assert os.fstat(fd).st_size == 8 * MIB
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert path.stat().st_blocks * 512 <= 2 * MIB + 64 * 1024, "st_blocks counts the punched range"

    info = head(store_path, "punched.bin")
    assert info.size == 8 * MIB
    assert info.stored_size <= 2 * MIB, f"the punched range was stored: {info.stored_size} bytes"
    assert not any(o < 7 * MIB and o + n > MIB for o, n in info.record["extents"]), info.record["extents"]
    m.stop()

    with Store.open(store_path) as store:
        assert store.get_object_bytes("pacs", "punched.bin") == data  # what S3 GET reads
    m = mounter(store_path, tmp_path / "mnt2").start()
    assert (m.path / "pacs" / "punched.bin").read_bytes() == data
    m.stop()


def test_zero_range_zeroes_and_may_extend(mount) -> None:
    path = mount.path / "pacs" / "zeroed.bin"
    data = bytearray(os.urandom(2 * MIB))
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, ZERO_RANGE | KEEP_SIZE, 0, MIB)
        data[:MIB] = bytes(MIB)
        fallocate(fd, ZERO_RANGE, 2 * MIB - 10, 4 * MIB)  # grows the file to 6 MiB - 10
        data[2 * MIB - 10 :] = bytes(4 * MIB)
        assert os.fstat(fd).st_size == 6 * MIB - 10
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    info = head(mount.store, "zeroed.bin")
    assert info.size == 6 * MIB - 10 and info.stored_size <= MIB


def test_other_modes_are_refused_and_change_nothing(mount) -> None:
    path = mount.path / "pacs" / "modes.bin"
    data = os.urandom(MIB)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        for mode in (COLLAPSE_RANGE, INSERT_RANGE, PUNCH_HOLE, PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE):
            assert errno_of(fallocate, fd, mode, 0, 64 * 1024) == errno.EOPNOTSUPP, hex(mode)
    finally:
        os.close(fd)
    done = util_linux("--collapse-range", "-o", 0, "-l", 64 * 1024, path)
    assert done.returncode != 0 and "Operation not supported" in done.stderr, done.stderr
    assert path.read_bytes() == data


def test_an_allocation_larger_than_the_free_space_is_enospc(mount) -> None:
    path = mount.path / "pacs" / "huge.bin"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDWR)
    try:
        for mode in (0, KEEP_SIZE):
            assert errno_of(fallocate, fd, mode, 0, 1 << 50) == errno.ENOSPC  # a PiB
        assert errno_of(os.posix_fallocate, fd, 0, 1 << 50) == errno.ENOSPC
        assert os.fstat(fd).st_size == 1
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x"


def test_fallocate_on_a_locked_version_is_refused_as_write(mount, cli) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("wormfa", object_lock=True)
        store.put_lock_configuration("wormfa", "COMPLIANCE", days=1)
    path = mount.path / "wormfa" / "study.dcm"
    data = os.urandom(MIB)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)  # committed into a bucket with a default retention: locked from now on
        for mode, offset, length in (
            (0, 0, 4 * MIB),
            (KEEP_SIZE, 0, MIB),
            (PUNCH_HOLE | KEEP_SIZE, 0, MIB),
            (ZERO_RANGE, 0, MIB),
        ):
            assert errno_of(fallocate, fd, mode, offset, length) == errno.EPERM, hex(mode)
        assert errno_of(os.write, fd, b"x") == errno.EPERM  # the same refusal as write
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    with Store.open(mount.store) as store:
        versions = store.list_object_versions("wormfa", prefix="study.dcm").versions
        assert len(versions) == 1 and store.get_object_bytes("wormfa", "study.dcm") == data
    out = cli("audit", "show", str(mount.store), "--bucket", "wormfa", "--key", "study.dcm").stdout.decode()
    denied = [e for e in map(json.loads, filter(str.strip, out.splitlines())) if e["outcome"] == "denied"]
    assert len(denied) >= 5 and {e["action"] for e in denied} == {"write"}


def test_a_punch_while_the_file_is_streamed_is_in_the_stored_version(mount) -> None:
    path = mount.path / "pacs" / "streamed.bin"
    data = bytearray(os.urandom(4 * MIB))
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for pos in range(0, len(data), MIB):  # sequential from 0: streamed into a put while written
            os.write(fd, data[pos : pos + MIB])
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, MIB, 2 * MIB)  # bytes the put already had
        data[MIB : 3 * MIB] = bytes(2 * MIB)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    info = head(mount.store, "streamed.bin")
    assert info.size == 4 * MIB and info.stored_size == 2 * MIB
