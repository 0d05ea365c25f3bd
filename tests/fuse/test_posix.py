"""The mount as a POSIX filesystem: directory renames, times and link counts, special files, names.

Everything through a real mount process; crashes are a real SIGKILL of it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from objfs.store import Store

REPO = Path(__file__).resolve().parents[2]


def _content(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (20 + i % 7)


def _index_tree(store_path: Path) -> dict[str, str]:
    with Store.open(store_path) as store:
        return {o.key: o.etag for o in store.list_objects("pacs", max_keys=100000).objects}


def test_a_directory_rename_is_atomic_when_the_mount_is_killed_mid_rename(store_path: Path, tmp_path: Path, mounter) -> None:
    count = 120
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "a/", b"", posix={"mode": 0o40755})
        for i in range(count):
            store.put_object("pacs", f"a/s{i % 4}/img{i}", _content(i))
    names = {"a": "b", "b": "a"}
    current = "a"
    for delay in (0.0, 0.01, 0.05):
        mount = mounter(store_path, tmp_path / "mnt").start()
        pacs = mount.path / "pacs"
        errors: list[str] = []
        stop = threading.Event()
        reader = threading.Thread(target=_read_loop, args=(pacs / current / "s1" / "img1", stop, errors))
        reader.start()
        renamer = threading.Thread(target=_try_rename, args=(pacs / current, pacs / names[current]))
        renamer.start()
        time.sleep(delay)
        mount.kill()
        stop.set()
        renamer.join(10)
        reader.join(10)
        assert not errors, errors
        tree = _index_tree(store_path)
        old = {k for k in tree if k.startswith(current + "/")}
        new = {k for k in tree if k.startswith(names[current] + "/")}
        assert len(old) + len(new) == count + 1, "every file is in the old tree or the new one"
        assert not old or not new, f"a mix: {len(old)} old names, {len(new)} new"
        current = names[current] if new else current
    before = _index_tree(store_path)
    shutil.rmtree(store_path / "index")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", str(store_path)], check=True, env=env, capture_output=True
    )
    assert _index_tree(store_path) == before, "rebuild-index gives the same tree"
    mount = mounter(store_path, tmp_path / "mnt").start()
    assert (mount.path / "pacs" / current / "s3" / "img7").read_bytes() == _content(7)


def _read_loop(path: Path, stop: threading.Event, errors: list[str]) -> None:
    """A reader keeps reading a file of the directory while the directory is renamed under it."""
    try:
        with open(path, "rb") as f:
            while not stop.is_set():
                f.seek(0)
                if f.read() != _content(1):
                    errors.append("the open file read wrong bytes")
                    return
    except OSError:
        pass  # the mount died under it


def _try_rename(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError:
        pass  # the mount was killed first


def test_directory_times_and_link_counts_follow_their_entries(mount) -> None:
    pacs = mount.path / "pacs"
    study = pacs / "study"
    study.mkdir()
    assert os.stat(study).st_nlink == 2
    (study / "s1").mkdir()
    (study / "s2").mkdir()
    (study / "s2" / "deep").mkdir()
    assert os.stat(study).st_nlink == 4, "2 + one per subdirectory"
    before = os.stat(study)
    time.sleep(0.02)
    (study / "f").write_bytes(b"x")
    after_add = os.stat(study)
    assert after_add.st_mtime_ns > before.st_mtime_ns and after_add.st_ctime_ns > before.st_ctime_ns
    time.sleep(0.02)
    file_before = os.stat(study / "f")
    time.sleep(0.02)
    os.rename(study / "f", study / "g")
    after_rename = os.stat(study)
    assert after_rename.st_mtime_ns > after_add.st_mtime_ns
    assert os.stat(study / "g").st_ctime_ns > file_before.st_ctime_ns, "rename(2) changes the file's ctime"
    time.sleep(0.02)
    os.unlink(study / "g")
    assert os.stat(study).st_mtime_ns > after_rename.st_mtime_ns
    with open(study / "open", "wb") as f:
        f.write(b"y")
        f.flush()
        os.unlink(study / "open")
        assert os.fstat(f.fileno()).st_nlink == 0, "an unlinked open file has no names"


def test_special_files_survive_a_remount_and_rebuild_index(store_path: Path, tmp_path: Path, mounter) -> None:
    mount = mounter(store_path, tmp_path / "mnt").start()
    pacs = mount.path / "pacs"
    pacs.mkdir()
    os.mkfifo(pacs / "fifo", 0o640)
    os.mknod(pacs / "sock", stat.S_IFSOCK | 0o600)
    os.mknod(pacs / "chr", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(pacs / "blk", stat.S_IFBLK | 0o640, os.makedev(8, 1))
    expected = {
        "fifo": (stat.S_IFIFO | 0o640, 0),
        "sock": (stat.S_IFSOCK | 0o600, 0),
        "chr": (stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        "blk": (stat.S_IFBLK | 0o640, os.makedev(8, 1)),
    }

    def check() -> None:
        for name, (mode, rdev) in expected.items():
            st = os.lstat(pacs / name)
            assert (st.st_mode, st.st_rdev, st.st_size) == (mode, rdev, 0), name
        assert sorted(os.listdir(pacs)) == sorted(expected)

    check()
    mount.stop()
    shutil.rmtree(store_path / "index")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", str(store_path)], check=True, env=env, capture_output=True
    )
    assert json.loads(out.stdout)["objects"] == 4
    mount.start()
    check()
    os.rename(pacs / "fifo", pacs / "fifo2")
    os.unlink(pacs / "fifo2")
    assert not (pacs / "fifo2").exists()


def test_a_4000_byte_path_is_created_listed_renamed_and_removed(mount) -> None:
    segments = [f"{i:02d}" + "n" * 246 for i in range(15)]  # 15 names of 248 bytes: 3,735 bytes of directories
    top = "pacs/" + "/".join(segments)
    name = "f" * 255
    path = f"{top}/{name}"
    assert 3990 <= len(path.encode()) < 4096
    here = os.getcwd()
    os.chdir(mount.path)  # a path string is at most PATH_MAX: walk it from the mount's root
    try:
        os.makedirs(top)
        with open(path, "wb") as f:
            f.write(b"deep")
        assert os.listdir(top) == [name]
        assert os.stat(path).st_size == 4
        os.rename(path, f"{top}/{'g' * 255}")
        os.rename("pacs/" + segments[0], "pacs/renamed")  # the whole tree, keys of ~4000 bytes
        moved = "pacs/renamed/" + "/".join(segments[1:]) + "/" + "g" * 255
        with open(moved, "rb") as f:
            assert f.read() == b"deep"
        os.unlink(moved)
        assert os.listdir(os.path.dirname(moved)) == []
        shutil.rmtree("pacs/renamed")
        assert os.listdir("pacs") == []
        try:
            os.mkdir("pacs/" + "n" * 256)
        except OSError as exc:
            assert exc.errno == errno.ENAMETOOLONG
        else:
            raise AssertionError("a 256-byte name was accepted")
    finally:
        os.chdir(here)


def test_df_counts_only_used_blocks_as_used(mount) -> None:
    fs = os.statvfs(mount.path)
    disk = os.statvfs(mount.store / "drives" / "d0")  # the six directory drives share this filesystem
    assert fs.f_bfree >= fs.f_bavail
    used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
    disk_used = (disk.f_blocks - disk.f_bfree) * disk.f_frsize * 4 / 6  # EC 4+2: usable share
    assert abs(used - disk_used) <= max(0.02 * disk_used, 64 << 20), (used, disk_used)
    if disk.f_bfree > disk.f_bavail:  # root-reserved blocks are free, not used
        assert fs.f_bfree > fs.f_bavail


def test_flock_and_fcntl_locks_are_seen_by_every_process_of_the_mount(mount) -> None:
    path = mount.path / "pacs" / "locked"
    path.write_bytes(b"x" * 10)
    probe = (
        "import fcntl, sys\n"
        "f = open(sys.argv[1], 'r+b')\n"
        "try:\n"
        "    (fcntl.flock if sys.argv[2] == 'flock' else fcntl.lockf)(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    print('held')\n"
        "else:\n"
        "    print('free')\n"
    )

    def other_process_sees(kind: str) -> str:
        out = subprocess.run([sys.executable, "-c", probe, str(path), kind], capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or out.stderr

    for kind, lock in (("flock", fcntl.flock), ("fcntl", fcntl.lockf)):
        with open(path, "r+b") as f:
            lock(f, fcntl.LOCK_EX)
            assert other_process_sees(kind) == "held", kind
            lock(f, fcntl.LOCK_UN)
            assert other_process_sees(kind) == "free", kind


def test_hard_links_share_an_inode_and_bytes_and_either_name_is_removable(mount) -> None:
    pacs = mount.path / "pacs"
    (pacs / "a").write_bytes(b"shared bytes")
    os.link(pacs / "a", pacs / "b")
    (pacs / "d").mkdir()
    os.link(pacs / "b", pacs / "d" / "c")
    sa, sb, sc = (os.stat(p) for p in (pacs / "a", pacs / "b", pacs / "d" / "c"))
    assert sa.st_ino == sb.st_ino == sc.st_ino and sa.st_nlink == sb.st_nlink == sc.st_nlink == 3
    assert (pacs / "d" / "c").read_bytes() == b"shared bytes"
    with Store.open(mount.store) as store:  # S3 and every front see each name as a key
        assert sorted(o.key for o in store.list_objects("pacs").objects) == ["a", "b", "d/", "d/c"]
    os.unlink(pacs / "a")
    assert os.stat(pacs / "b").st_nlink == 2
    assert (pacs / "b").read_bytes() == b"shared bytes"
    os.rename(pacs / "b", pacs / "b2")
    os.unlink(pacs / "d" / "c")
    assert os.stat(pacs / "b2").st_nlink == 1 and (pacs / "b2").read_bytes() == b"shared bytes"
    try:
        os.link(pacs / "d", pacs / "dirlink")
    except OSError as exc:
        assert exc.errno == errno.EPERM
    else:
        raise AssertionError("a directory was hard-linked")


def test_a_hard_links_attributes_are_its_inodes_and_losing_a_name_changes_its_ctime(mount) -> None:
    """pjdfstest link/00.t, unlink/00.t, rename/23.t: attributes set through one name hold for every name."""
    pacs = mount.path / "pacs"
    (pacs / "a").write_bytes(b"x")
    os.link(pacs / "a", pacs / "b")
    os.link(pacs / "b", pacs / "c")
    os.chmod(pacs / "b", 0o640)
    os.chown(pacs / "b", 65534, 65533)
    os.unlink(pacs / "a")  # the name the inode was first known by
    for name in ("b", "c"):
        st = os.lstat(pacs / name)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_nlink) == (0o640, 65534, 65533, 2), name
    before = os.stat(pacs / "c").st_ctime_ns
    time.sleep(0.02)
    os.unlink(pacs / "b")
    assert os.stat(pacs / "c").st_ctime_ns > before, "losing a link changes the inode's ctime"
    before = os.stat(pacs / "c").st_ctime_ns
    time.sleep(0.02)
    os.link(pacs / "c", pacs / "keep")
    assert os.stat(pacs / "c").st_ctime_ns > before, "link(2) changes the inode's ctime"
    (pacs / "other").write_bytes(b"y")
    before = os.stat(pacs / "keep").st_ctime_ns
    time.sleep(0.02)
    os.rename(pacs / "other", pacs / "c")  # replaces one name of the linked file
    assert os.stat(pacs / "keep").st_ctime_ns > before and os.stat(pacs / "keep").st_nlink == 1


def test_rsync_of_a_tree_with_hard_links_round_trips(mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "study" / "series").mkdir(parents=True)
    (src / "study" / "one.dcm").write_bytes(b"1" * 5000)
    (src / "study" / "other.dcm").write_bytes(b"2" * 300)
    os.link(src / "study" / "one.dcm", src / "study" / "series" / "same.dcm")
    os.link(src / "study" / "one.dcm", src / "study" / "again.dcm")
    into = subprocess.run(["rsync", "-aH", f"{src}/", f"{mount.path / 'pacs' / 'tree'}/"], capture_output=True, text=True)
    assert into.returncode == 0, into.stderr
    on_mount = mount.path / "pacs" / "tree" / "study"
    assert os.stat(on_mount / "one.dcm").st_ino == os.stat(on_mount / "series" / "same.dcm").st_ino
    assert os.stat(on_mount / "again.dcm").st_nlink == 3
    out = tmp_path / "out"
    back = subprocess.run(["rsync", "-aH", f"{mount.path / 'pacs' / 'tree'}/", f"{out}/"], capture_output=True, text=True)
    assert back.returncode == 0, back.stderr
    names = ("one.dcm", "series/same.dcm", "again.dcm")
    stats = [os.stat(out / "study" / n) for n in names]
    assert len({s.st_ino for s in stats}) == 1 and stats[0].st_nlink == 3, "the links came back as links"
    assert os.stat(out / "study" / "other.dcm").st_nlink == 1
    for path in src.rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(src)).read_bytes() == path.read_bytes()
