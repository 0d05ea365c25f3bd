"""WORM, versioning and the audit trail through a real mount.

The mount is a subprocess, so its clock cannot be moved: a 7-year retention
is set from this process through a second ``Store.open`` of the same store
(LMDB is multi-process safe), and where a retention must expire it is a
few seconds long and the test waits it out. Every refusal is checked twice:
by errno from Python's own calls, and by the exit status of the shell tools
a PACS administrator would use.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from fragmenthelpers import location  # noqa: E402

from objfs.store import Store  # noqa: E402

SEVEN_YEARS = 7 * 365 * 86400
DATA = b"DICM" + bytes(range(256)) * 4000  # ~1 MiB: more than one read() through the kernel


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def sh(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a shell tool; the caller checks the exit status (refusals are expected here)."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30)


def assert_eperm(call: Callable[[], Any]) -> None:
    with pytest.raises(OSError) as info:
        call()
    assert info.value.errno == errno.EPERM, info.value


def assert_refused(*args: str | Path) -> None:
    done = sh(*args)
    assert done.returncode != 0, f"{args} succeeded on a locked file"
    assert "Operation not permitted" in done.stderr, done.stderr


def xattr(path: Path, name: str) -> str:
    done = sh("getfattr", "--only-values", "-n", name, path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_until(deadline: float) -> None:
    while time.time() <= deadline:
        time.sleep(0.05)


def assert_fragments_immutable(store_path: Path, bucket: str, key: str, cli: Callable[..., Any]) -> None:
    """Root's ``rm -f`` of a fragment of a locked version fails where the drive supports FS_IMMUTABLE_FL."""
    with Store.open(store_path) as store:
        desc = store.head_object(bucket, key).record["parts"][0]
        drive = store.drive_by_id(desc["drives"][0])
        assert drive is not None
        fragment = location(store, desc, 0)[0]  # its file, or the volume holding its entry
        supported = store.immutable_supported(drive)
    assert fragment.exists()
    if supported:
        assert sh("rm", "-f", fragment).returncode != 0
        assert fragment.exists()
    else:
        status = json.loads(cli("status", str(store_path), "--json").stdout)
        entry = next(d for d in status["drives"] if d["id"] == drive.drive_id)
        assert entry["immutable_flag"] is False


def audit(cli: Callable[..., Any], store_path: Path, *args: str) -> list[dict[str, Any]]:
    out = cli("audit", "show", str(store_path), *args).stdout.decode()
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_compliance_locked_file_refuses_every_change(mount, cli) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("worm", object_lock=True)
    study = mount.path / "worm" / "study"
    study.mkdir()
    f = study / "IM1.dcm"
    f.write_bytes(DATA)
    other = mount.path / "worm" / "other.dcm"
    other.write_bytes(b"other")
    assert sh("setfattr", "-n", "user.site", "-v", "north", f).returncode == 0  # before the lock: allowed
    with Store.open(mount.store) as store:
        until = store.clock.now() + SEVEN_YEARS
        store.set_retention("worm", "study/IM1.dcm", "COMPLIANCE", until)
    before = os.stat(f)

    # Delete, rename (the file, its directory, another file over it).
    assert_eperm(lambda: os.unlink(f))
    assert_refused("rm", "-f", f)
    assert_eperm(lambda: os.rename(f, study / "moved.dcm"))
    assert_refused("mv", f, study / "moved.dcm")
    assert_eperm(lambda: os.rename(study, mount.path / "worm" / "study2"))
    assert_refused("mv", study, mount.path / "worm" / "study2")
    assert_eperm(lambda: os.rename(other, f))
    # Content: truncate, overwrite, append, read-write open.
    assert_eperm(lambda: os.truncate(f, 0))
    assert_refused("truncate", "-s", "0", f)
    assert_eperm(lambda: open(f, "wb"))
    assert_refused("sh", "-c", f"echo x > '{f}'")
    assert_eperm(lambda: open(f, "ab"))
    assert_refused("sh", "-c", f"echo x >> '{f}'")
    assert_eperm(lambda: open(f, "r+b"))
    # Attributes and user xattrs.
    assert_eperm(lambda: os.chmod(f, 0o600))
    assert_refused("chmod", "600", f)
    assert_eperm(lambda: os.chown(f, 1000, 1000))
    assert_eperm(lambda: os.utime(f, (1, 1)))
    assert_refused("touch", f)
    assert_eperm(lambda: os.setxattr(f, "user.x", b"1"))
    assert_refused("setfattr", "-n", "user.x", "-v", "1", f)
    assert_eperm(lambda: os.removexattr(f, "user.site"))

    # Nothing changed, and reading is allowed.
    assert f.read_bytes() == DATA
    assert subprocess.run(["cat", str(f)], capture_output=True, timeout=30).stdout == DATA
    after = os.stat(f)
    assert (after.st_size, after.st_mode, after.st_mtime_ns) == (before.st_size, before.st_mode, before.st_mtime_ns)
    assert sorted(os.listdir(study)) == ["IM1.dcm"]
    assert xattr(f, "user.site") == "north"
    assert xattr(f, "user.objfs.retention") == f"COMPLIANCE {iso(until)}"
    assert sh("getfattr", "-n", "user.objfs.legal_hold", f).returncode != 0  # absent: no hold
    with Store.open(mount.store) as store:
        versions = store.list_object_versions("worm", prefix="study/IM1.dcm").versions
        assert [v.delete_marker for v in versions] == [False]
        assert store.get_object_bytes("worm", "study/IM1.dcm") == DATA
        assert store.head_object("worm", "other.dcm").size == len(b"other")
    assert_fragments_immutable(mount.store, "worm", "study/IM1.dcm", cli)


def test_bucket_default_retention_applies_to_files_written_on_the_mount(mount, cli) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("wormd", object_lock=True)
        store.put_lock_configuration("wormd", "COMPLIANCE", days=1)
        written_at = store.clock.now()
    f = mount.path / "wormd" / "new.dcm"
    with open(f, "wb") as fh:
        fh.write(DATA)
    assert_eperm(lambda: os.unlink(f))
    assert_eperm(lambda: open(f, "wb"))
    assert f.read_bytes() == DATA
    with Store.open(mount.store) as store:
        info = store.head_object("wormd", "new.dcm")
    assert info.retention is not None and info.retention["mode"] == "COMPLIANCE"
    assert written_at + 86400 - 5 < info.retention["until"] < written_at + 86400 + 60
    assert xattr(f, "user.objfs.retention") == f"COMPLIANCE {iso(info.retention['until'])}"
    assert_fragments_immutable(mount.store, "wormd", "new.dcm", cli)


def test_legal_hold_blocks_rm_until_lifted_and_retention_expired(mount) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("hold", object_lock=True)
    f = mount.path / "hold" / "case.dcm"
    f.write_bytes(DATA)
    with Store.open(mount.store) as store:
        until = store.clock.now() + 3
        store.set_retention("hold", "case.dcm", "COMPLIANCE", until)
        store.set_legal_hold("hold", "case.dcm", True)
    assert xattr(f, "user.objfs.legal_hold") == "ON"
    assert_eperm(lambda: os.unlink(f))
    assert_refused("rm", "-f", f)
    with Store.open(mount.store) as store:
        store.set_legal_hold("hold", "case.dcm", False)
    assert sh("getfattr", "-n", "user.objfs.legal_hold", f).returncode != 0
    wait_until(until + 0.1)  # the hold is gone, now the retention runs out
    assert sh("rm", f).returncode == 0
    assert not f.exists()
    with Store.open(mount.store) as store:
        versions = store.list_object_versions("hold", prefix="case.dcm").versions
    # A locked bucket is versioned: the rm is a delete marker, the retained version is kept.
    assert [v.delete_marker for v in versions] == [True, False]


def test_audit_names_the_process_behind_reads_and_refusals(mount, cli) -> None:
    me = f"fuse:uid={os.getuid()},pid={os.getpid()}"
    f = mount.path / "pacs" / "study" / "IM1.dcm"
    f.parent.mkdir()
    f.write_bytes(DATA)
    cat = subprocess.Popen(["cat", str(f)], stdout=subprocess.PIPE)
    out, _ = cat.communicate(timeout=30)
    assert out == DATA
    reads = audit(cli, mount.store, "--key", "study/IM1.dcm", "--reads-only")
    # One line per open, not per read(): DATA takes several reads through the kernel.
    assert [(e["who"], e["action"], e["outcome"], e["bucket"]) for e in reads] == [
        (f"fuse:uid={os.getuid()},pid={cat.pid}", "read", "ok", "pacs")
    ]
    writes = [e for e in audit(cli, mount.store, "--key", "study/IM1.dcm") if e["action"] == "write"]
    assert [(e["who"], e["outcome"]) for e in writes] == [(me, "ok")]

    with Store.open(mount.store) as store:
        store.create_bucket("worm", object_lock=True)
    locked = mount.path / "worm" / "IM2.dcm"
    locked.write_bytes(b"evidence")
    with Store.open(mount.store) as store:
        store.set_retention("worm", "IM2.dcm", "COMPLIANCE", store.clock.now() + SEVEN_YEARS)
    assert_eperm(lambda: os.unlink(locked))
    denied = [e for e in audit(cli, mount.store, "--bucket", "worm", "--key", "IM2.dcm") if e["outcome"] == "denied"]
    assert [(e["who"], e["action"]) for e in denied] == [(me, "delete")]
    assert "COMPLIANCE until" in denied[0]["detail"]
    assert cli("audit", "verify", str(mount.store), check=False).returncode == 0


def test_overwrite_in_a_versioned_bucket_keeps_the_old_version(mount) -> None:
    with Store.open(mount.store) as store:
        store.create_bucket("ver")
        store.update_bucket("ver", versioning="Enabled")
    f = mount.path / "ver" / "report.txt"
    f.write_bytes(b"first")
    f.write_bytes(b"second, longer")
    assert f.read_bytes() == b"second, longer"
    with Store.open(mount.store) as store:
        versions = store.list_object_versions("ver", prefix="report.txt").versions
        assert len(versions) == 2
        bodies = [store.get_object_bytes("ver", "report.txt", v.version_id) for v in versions]
    assert bodies == [b"second, longer", b"first"]  # newest first


def test_rsync_into_a_worm_bucket_with_default_retention(mount, tmp_path: Path) -> None:
    """rsync writes a temp file, sets its times, then renames it: the commit grace allows exactly that."""
    with Store.open(mount.store) as store:
        store.create_bucket("wormr", object_lock=True)
        store.put_lock_configuration("wormr", "COMPLIANCE", days=1)
    source = tmp_path / "study"
    (source / "series1").mkdir(parents=True)
    for i in range(3):
        (source / "series1" / f"{i}.dcm").write_bytes(DATA[: 1000 + i])
    done = sh("rsync", "-a", f"{source}/", mount.path / "wormr" / "study")
    assert done.returncode == 0, done.stderr
    assert sh("diff", "-r", source, mount.path / "wormr" / "study").returncode == 0
    locked = mount.path / "wormr" / "study" / "series1" / "0.dcm"
    assert_eperm(lambda: os.unlink(locked))
    assert_eperm(lambda: open(locked, "ab"))
    assert sorted(os.listdir(mount.path / "wormr" / "study" / "series1")) == ["0.dcm", "1.dcm", "2.dcm"]
