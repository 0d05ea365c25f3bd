"""The mount's namespace: buckets, prefixes, errno, rename, symlinks, attributes, xattrs, statfs."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from objfs.store import Store
from objfs.store.index import object_key

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1


def renameat2(src: Path, dst: Path, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def test_buckets_are_top_level_directories(mount) -> None:
    root = mount.path
    (root / "study-archive").mkdir()
    with Store.open(mount.store) as store:
        assert {b["name"] for b in store.list_buckets()} == {"pacs", "study-archive"}
        store.put_object("study-archive", "s1/i1.dcm", b"x")
    assert errno_of(os.mkdir, root / "study-archive") == errno.EEXIST
    assert errno_of(os.mkdir, root / "Bad_Name") == errno.EINVAL
    assert errno_of(os.rmdir, root / "study-archive") == errno.ENOTEMPTY
    os.unlink(root / "study-archive" / "s1" / "i1.dcm")
    os.rmdir(root / "study-archive")
    assert sorted(os.listdir(root)) == ["pacs"]
    assert errno_of(os.stat, root / "study-archive") == errno.ENOENT


def test_errno_mapping(mount) -> None:
    b = mount.path / "pacs"
    (b / "f").write_bytes(b"data")
    (b / "d").mkdir()
    assert errno_of(open, b / "missing") == errno.ENOENT
    assert errno_of(os.mkdir, b / "f") == errno.EEXIST
    assert errno_of(os.mkdir, b / "d") == errno.EEXIST
    assert errno_of(os.listdir, b / "f") == errno.ENOTDIR
    assert errno_of(open, b / "f" / "x") == errno.ENOTDIR
    assert errno_of(os.rmdir, b / "f") == errno.ENOTDIR
    assert errno_of(os.unlink, b / "d") == errno.EISDIR
    assert errno_of(open, b / "d", "wb") == errno.EISDIR
    assert errno_of(open, b / ("n" * 256), "wb") == errno.ENAMETOOLONG
    (b / "d" / "child").write_bytes(b"")
    assert errno_of(os.rmdir, b / "d") == errno.ENOTEMPTY
    assert errno_of(os.rename, b / "f", mount.path / "other-bucket-missing" / "f") in (errno.ENOENT, errno.EXDEV)


def test_directories_explicit_and_implicit(mount) -> None:
    b = mount.path / "pacs"
    (b / "empty" / "deeper").mkdir(parents=True)
    os.chmod(b / "empty", 0o750)
    with Store.open(mount.store) as store:
        store.put_object("pacs", "p1/st1/se1/i1.dcm", b"dicom")  # another front, implicit dirs
    assert (b / "p1" / "st1" / "se1" / "i1.dcm").read_bytes() == b"dicom"
    assert stat.S_ISDIR(os.stat(b / "p1" / "st1").st_mode)
    assert sorted(os.listdir(b)) == ["empty", "p1"]
    mount.stop()
    mount.start()
    assert os.listdir(b / "empty") == ["deeper"]
    assert stat.S_IMODE(os.stat(b / "empty").st_mode) == 0o750
    os.rmdir(b / "empty" / "deeper")
    os.rmdir(b / "empty")
    assert os.listdir(b) == ["p1"]


def test_rename_files_and_directories(mount) -> None:
    b = mount.path / "pacs"
    (b / "a" / "sub").mkdir(parents=True)
    for i in range(3):
        (b / "a" / "sub" / f"f{i}").write_bytes(bytes([i]) * 1000)
    (b / "x").write_bytes(b"x")
    (b / "y").write_bytes(b"y")
    ino = os.stat(b / "x").st_ino
    os.rename(b / "x", b / "z")
    assert (b / "z").read_bytes() == b"x" and not (b / "x").exists()
    assert os.stat(b / "z").st_ino == ino  # an index-only move: same file
    assert errno_of(renameat2, b / "z", b / "y", RENAME_NOREPLACE) == errno.EEXIST
    assert (b / "y").read_bytes() == b"y"
    renameat2(b / "z", b / "w", RENAME_NOREPLACE)
    os.rename(b / "w", b / "y")  # replaces
    assert (b / "y").read_bytes() == b"x"
    os.rename(b / "a", b / "b")
    assert sorted(os.listdir(b / "b" / "sub")) == ["f0", "f1", "f2"]
    assert (b / "b" / "sub" / "f2").read_bytes() == b"\2" * 1000
    assert not (b / "a").exists()
    (mount.path / "other").mkdir()
    assert errno_of(os.rename, b / "y", mount.path / "other" / "y") == errno.EXDEV
    (b / "full").mkdir()
    (b / "full" / "f").write_bytes(b"")
    assert errno_of(os.rename, b / "b", b / "full") == errno.ENOTEMPTY
    with Store.open(mount.store) as store:
        keys = {o.key for o in store.list_objects("pacs").objects}
    assert keys == {"b/", "b/sub/", "b/sub/f0", "b/sub/f1", "b/sub/f2", "y", "full/", "full/f"}


def test_symlinks(mount) -> None:
    b = mount.path / "pacs"
    (b / "target.dcm").write_bytes(b"T")
    os.symlink("target.dcm", b / "link")
    assert os.readlink(b / "link") == "target.dcm"
    assert (b / "link").read_bytes() == b"T"
    assert stat.S_ISLNK(os.lstat(b / "link").st_mode)
    subprocess.run(["ln", "-s", "/nowhere", str(b / "dangling")], check=True)
    assert os.readlink(b / "dangling") == "/nowhere"


def test_posix_attributes_persist_across_remount(mount) -> None:
    f = mount.path / "pacs" / "img.dcm"
    f.write_bytes(b"z" * 5000)
    os.chmod(f, 0o640)
    os.chown(f, 1234, 5678)
    os.utime(f, ns=(1_600_000_000_000_000_000, 1_500_000_000_123_456_789))
    st = os.stat(f)
    assert st.st_size == 5000 and st.st_blocks == 10
    mount.stop()
    mount.start()
    st2 = os.stat(f)
    assert stat.S_IMODE(st2.st_mode) == 0o640
    assert (st2.st_uid, st2.st_gid) == (1234, 5678)
    assert st2.st_mtime_ns == 1_500_000_000_123_456_789
    assert st2.st_atime_ns == 1_600_000_000_000_000_000
    assert st2.st_ino == os.stat(f).st_ino  # stable while mounted


def test_statfs_reports_usable_capacity(mount) -> None:
    vfs = os.statvfs(mount.path)
    with Store.open(mount.store) as store:
        cap = store.capacity()
    drive = os.statvfs(mount.store / "drives" / "d0")
    assert abs(vfs.f_blocks * vfs.f_frsize - cap["total"]) < 1 << 20
    # One disk behind six directory drives, EC 4+2: two thirds of it is usable.
    assert abs(vfs.f_blocks * vfs.f_frsize - drive.f_blocks * drive.f_frsize * 4 / 6) < 1 << 20
    assert 0 < vfs.f_bavail <= vfs.f_blocks
    assert vfs.f_namemax == 255


def test_xattrs(mount) -> None:
    f = mount.path / "pacs" / "x.dcm"
    f.write_bytes(b"hello")
    os.setxattr(f, "user.study", b"1.2.3")
    assert os.getxattr(f, "user.study") == b"1.2.3"
    assert os.getxattr(f, "user.objfs.etag") == hashlib.md5(b"hello").hexdigest().encode()
    assert os.getxattr(f, "user.objfs.content_type") == b"application/octet-stream"
    assert {"user.study", "user.objfs.etag"} <= set(os.listxattr(f))
    assert errno_of(os.setxattr, f, "user.objfs.etag", b"forged") == errno.EPERM
    assert errno_of(os.getxattr, f, "user.nothing") == errno.ENODATA
    with Store.open(mount.store) as store:
        assert store.head_object("pacs", "x.dcm").xattrs == {"user.study": b"1.2.3"}
        store.put_object("pacs", "s3.dcm", b"s", metadata={"patient": "anon"})
    assert os.getxattr(mount.path / "pacs" / "s3.dcm", "user.objfs.meta.patient") == b"anon"
    with open(f, "ab") as fh:  # an edit keeps the xattrs
        fh.write(b"!")
    os.removexattr(f, "user.study")
    assert "user.study" not in os.listxattr(f)
    assert errno_of(os.removexattr, f, "user.study") == errno.ENODATA
    (mount.path / "pacs" / "dir").mkdir()
    os.setxattr(mount.path / "pacs" / "dir", "user.series", b"S")
    assert os.getxattr(mount.path / "pacs" / "dir", "user.series") == b"S"


def test_directory_of_100000_entries_lists_quickly(mount) -> None:
    count = 100_000
    with Store.open(mount.store) as store:
        # Seeding through put_object would take minutes: write empty records in one transaction.
        base = store.put_object("pacs", "seed", b"")
        record = base.record
        with store.index.write() as txn:
            for i in range(count):
                key = f"big/f{i:06d}.dcm"
                txn.put("objects", object_key("pacs", key), dict(record, key=key, id=f"{i:032x}"))
    start = time.monotonic()
    names = os.listdir(mount.path / "pacs" / "big")
    elapsed = time.monotonic() - start
    assert len(names) == count and len(set(names)) == count
    assert sorted(names)[0] == "f000000.dcm" and sorted(names)[-1] == f"f{count - 1:06d}.dcm"
    assert elapsed < 15, f"listing 100,000 entries took {elapsed:.1f} s"
    out = subprocess.run(["ls", "-l", str(mount.path / "pacs" / "big")], capture_output=True, check=True)
    assert out.stdout.count(b"\n") == count + 1
