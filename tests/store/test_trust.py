"""The trust model (docs/trust-model.md): what removes or rebuilds data never destroys live data.

Each test is one finding of issue 9 ("Wave 2, 1 of 8 · Trust"), on real drive
directories, through the real engine and the real ``objfs`` command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fragmenthelpers import corrupt_fragment, fragments, lose_fragment
from trusthelpers import body, live_state, verify

from objfs.store import Principal, Store
from objfs.store.errors import DataLoss, InsufficientDrives
from objfs.store.fragments import frame_offset

REPO = Path(__file__).resolve().parents[2]
SEG = 1 << 20
DAY = 86400
ADMIN = Principal("admin", bypass_governance=True)


def test_scrub_with_a_lost_index_deletes_nothing_and_says_rebuild(store_path: Path, cli) -> None:
    """Finding 1: `rm -rf S/index; objfs scrub S` used to delete every fragment, locked ones included."""
    with Store.open(store_path) as store:
        store.create_bucket("locked", object_lock=True)
        for i in range(3):
            store.put_object("locked", f"f{i}", body(f"f{i}", 5000 + i))
        store.set_retention("locked", "f1", "COMPLIANCE", store.clock.now() + 30 * DAY)
        before = live_state(store)
        files = fragments(store)
    shutil.rmtree(store_path / "index")
    scrub = cli("scrub", str(store_path), "--json", check=False)
    report = json.loads(scrub.stdout)
    assert scrub.returncode == 1 and b"rebuild-index" in scrub.stderr
    assert not report["index_trusted"] and report["intents_collected"] == 0
    assert fragments(Store.open(store_path)) == files  # not one file removed
    shutil.rmtree(store_path / "index")
    cli("rebuild-index", str(store_path))
    with Store.open(store_path) as store:
        assert live_state(store) == before
        for i in range(3):
            verify(store.get_object_bytes("locked", f"f{i}"))
        assert store.scrub().index_trusted  # the rebuilt index is the one the drives know now


def test_scrub_with_an_index_restored_from_an_older_backup_collects_nothing(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "old", body("old", 3000))
        assert store.scrub().index_trusted
    shutil.copytree(store_path / "index", store_path.parent / "backup")
    with Store.open(store_path) as store:
        for i in range(5):
            store.put_object("pacs", f"new{i}", body(f"new{i}", 3000))
        store.scrub()
        after = live_state(store)
    files = fragments(Store.open(store_path))
    shutil.rmtree(store_path / "index")
    shutil.copytree(store_path.parent / "backup", store_path / "index")
    scrub = cli("scrub", str(store_path), "--json", check=False)
    assert scrub.returncode == 1 and "older" in json.loads(scrub.stdout)["index_problem"]
    assert fragments(Store.open(store_path)) == files
    cli("rebuild-index", str(store_path), "--force")
    with Store.open(store_path) as store:
        assert live_state(store) == after


def _multipart(store: Store, key: str, parts: int, tag: str) -> bytes:
    store.min_part_size = 1
    data = body(tag, parts * SEG + 1000)
    upload = store.create_multipart("pacs", key)
    chunks = [data[i * SEG : (i + 1) * SEG] for i in range(parts)] + [data[parts * SEG :]]
    etags = [store.upload_part(upload, n + 1, c)["etag"] for n, c in enumerate(chunks)]
    store.complete_multipart(upload, list(zip(range(1, len(etags) + 1), etags)))
    return data


@pytest.mark.parametrize("change", ["delete", "put", "multipart", "collect-now"])
def test_a_reader_keeps_its_version_while_it_is_replaced(store: Store, change: str) -> None:
    """Finding 2: a GET of a multipart object followed by DELETE/PUT/multipart of the key ended truncated."""
    store.create_bucket("pacs")
    data = _multipart(store, "big", 3, "v1")
    with store.open_object("pacs", "big") as reader:
        stream = reader.iter_range()
        got = [next(stream)]
        if change == "delete":
            store.delete_object("pacs", "big")
        elif change in ("put", "collect-now"):
            store.put_object("pacs", "big", body("v2", 10))
        else:
            _multipart(store, "big", 2, "v2")
        report = store.collect_garbage(min_age=0)  # even with no minimum age, a leased blob stays
        assert report.collected == 0 and report.leased >= 1
        got += list(stream)
    assert b"".join(got) == data
    assert store.heal_queue() == []  # a reader that lost no race queues no false heal
    assert store.collect_garbage(min_age=0).collected >= 4  # released: now it goes
    assert store.status()["degraded_objects"] == 0


def test_a_reader_in_another_process_keeps_its_version(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        data = body("x", 3 * SEG)
        store.put_object("pacs", "k", data)
    script = textwrap.dedent(
        """
        import sys, hashlib
        from objfs.store import Store
        store = Store.open(sys.argv[1])
        with store.open_object("pacs", "k") as reader:
            stream = reader.iter_range()
            out = [next(stream)]
            print("opened", flush=True)
            sys.stdin.readline()
            out += list(stream)
        print(hashlib.sha256(b"".join(out)).hexdigest(), flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(store_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout.readline() == b"opened\n"
        with Store.open(store_path) as store:
            store.delete_object("pacs", "k")
            assert store.collect_garbage(min_age=0).leased == 1
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        import hashlib

        assert proc.stdout.readline().strip().decode() == hashlib.sha256(data).hexdigest()
    finally:
        proc.kill()
        proc.wait()
    with Store.open(store_path) as store:
        assert store.collect_garbage(min_age=0).collected == 1


def test_rebuild_index_restores_exactly_the_live_state(store_path: Path, cli) -> None:
    """Finding 3: deleted objects and versions came back, later tag/mode/xattr changes were reverted,
    unfinished uploads were lost."""
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.create_bucket("ver")
        store.update_bucket("ver", versioning="Enabled")
        store.create_bucket("gone")
        store.delete_bucket("gone")
        for i in range(6):
            store.put_object("pacs", f"k{i}", body(f"k{i}", 2000 + i))
        store.delete_object("pacs", "k0")
        store.put_object("pacs", "k1", body("k1-again", 100))
        store.update_object("pacs", "k2", tags={"a": "1"}, posix={"mode": 0o100600, "uid": 7}, xattrs={"user.x": b"y"})
        store.update_object("pacs", "k2", tags={"b": "2"}, xattrs={"user.x": None, "user.z": b"w"})
        store.rename_object("pacs", "k3", "k1")  # over an existing key
        v1 = store.put_object("ver", "doc", body("doc1", 100)).version_id
        store.put_object("ver", "doc", body("doc2", 100))
        store.put_object("ver", "doc", body("doc3", 100))
        store.delete_object("ver", "doc", v1)  # one version deleted by id
        store.delete_object("ver", "doc")  # then a delete marker
        store.put_object("ver", "gone", body("g", 10))
        store.delete_object("ver", "gone")
        store.min_part_size = 1
        upload = store.create_multipart("pacs", "unfinished")
        store.upload_part(upload, 1, b"a" * 1000)
        store.upload_part(upload, 1, b"b" * 1000)  # replaced part
        store.upload_part(upload, 2, b"c" * 10)
        aborted = store.create_multipart("pacs", "aborted")
        store.upload_part(aborted, 1, b"x" * 10)
        store.abort_multipart(aborted)
        before = live_state(store)
    for collect_first in (False, True):
        if collect_first:
            with Store.open(store_path) as store:
                assert store.collect_garbage(min_age=0).collected > 0
        shutil.rmtree(store_path / "index")
        counts = json.loads(cli("rebuild-index", str(store_path)).stdout)
        with Store.open(store_path) as store:
            assert live_state(store) == before
            assert counts["unclaimed_blobs"] == 0
            verify(store.get_object_bytes("pacs", "k1"))
            assert store.list_parts(upload)[1][0]["etag"] == store.list_parts(upload)[1][0]["etag"]
            report = store.scrub()
            assert report.index_trusted and not report.lost and report.unreferenced_fragments == 0


def test_a_failed_read_fails_visibly_and_is_audited(store: Store) -> None:
    """Finding 4: with more than m fragments of a later segment gone, the read raised nothing."""
    store.create_bucket("pacs")
    data = body("big", 3 * SEG)
    info = store.put_object("pacs", "big", data)
    desc = info.record["parts"][0]
    for index in range(desc["m"] + 1):
        # corrupt segment 2 only: the first two segments still read
        corrupt_fragment(store, desc, index, frame_offset(2, desc["fsz"], desc.get("cb", 0)) + 3)
    got = []
    with pytest.raises(DataLoss):
        with store.open_object("pacs", "big", principal=Principal("s3:reader")) as reader:
            for chunk in reader.iter_range():
                got.append(chunk)
    assert b"".join(got) == data[: 2 * SEG]
    lines = [e for e in store.audit.show(key="big") if e["action"] == "read"]
    assert [e["outcome"] for e in lines] == ["ok", "failed"] and lines[1]["who"] == "s3:reader"


def _filled(store_path: Path, count: int) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for i in range(count):
            store.put_object("pacs", f"k{i}", body(f"k{i}", 3000))


def test_wiped_read_only_and_missing_drives(store_path: Path, cli) -> None:
    """Finding 5: a wiped drive crashed scrub, was called healthy, and writes recreated files in it."""
    _filled(store_path, 8)
    d2 = store_path / "drives" / "d2"
    for child in d2.iterdir():  # `rm -rf d2/*`: the dot-file marker survives
        if not child.name.startswith("."):
            shutil.rmtree(child)
    status = json.loads(cli("status", str(store_path), "--json", check=False).stdout)  # exits 1: degraded
    assert [d["state"] for d in status["drives"]].count("wiped") == 1
    with Store.open(store_path) as store:
        for i in range(8, 16):
            store.put_object("pacs", f"k{i}", body(f"k{i}", 3000))
        assert sorted(os.listdir(d2)) == [".objfs-drive"]  # nothing recreated under a wiped layout
        report = store.scrub()
        assert not report.lost
    out = cli("replace-drive", str(store_path), "hot-2")  # a wiped drive is accepted for replacement
    assert json.loads(out.stdout.splitlines()[-1])["fragments_repaired"] > 0
    with Store.open(store_path) as store:
        assert store.drive_state(store.drive_by_id("hot-2")) == "ok"
        for i in range(16):
            verify(store.get_object_bytes("pacs", f"k{i}"))


def _bind_read_only(path: Path) -> bool:
    ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    return ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode == 0


def test_a_read_only_drive_is_read_not_written_and_reported(store_path: Path, cli) -> None:
    _filled(store_path, 6)
    d4 = store_path / "drives" / "d4"
    assert _bind_read_only(d4), "tests run as root and need bind mounts"
    try:
        status = json.loads(cli("status", str(store_path), "--json", check=False).stdout)  # exits 1: degraded
        assert [d["state"] for d in status["drives"]].count("read-only") == 1
        with Store.open(store_path) as store:
            for i in range(6):
                verify(store.get_object_bytes("pacs", f"k{i}"))
            store.put_object("pacs", "new", body("new", 3000))  # k+1 writable drives remain
            verify(store.get_object_bytes("pacs", "new"))
            store.delete_object("pacs", "k0")
            report = store.collect_garbage(min_age=0)
            assert report.unreachable == 1  # the read-only drive keeps its fragment: the entry stays
            assert store.gc_pending() == 1
        scrub = cli("scrub", str(store_path), "--json", check=False)
        assert scrub.returncode == 1 and b"Traceback" not in scrub.stderr
        assert any("read-only" in e for e in json.loads(scrub.stdout)["drive_errors"])
    finally:
        subprocess.run(["umount", str(d4)], check=True)
    with Store.open(store_path) as store:
        assert store.collect_garbage(min_age=0).collected == 1 and store.gc_pending() == 0


def test_too_few_writable_drives_refuse_writes_cleanly(store: Store) -> None:
    store.create_bucket("pacs")
    for name in ("d0", "d1"):
        shutil.rmtree(store.root / "drives" / name)
    store.refresh_drive_health()
    with pytest.raises(InsufficientDrives):
        store.put_object("pacs", "x", b"x" * 100)
    assert not any((store.root / "drives" / n).exists() for n in ("d0", "d1"))


def test_scrub_during_overwrites_reports_no_false_loss(store_path: Path) -> None:
    """Finding 6: scrub run during overwrites printed false LOST lines and exited 1."""
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for i in range(20):
            store.put_object("pacs", f"k{i}", body(f"k{i}-0", SEG + 10))
    script = textwrap.dedent(
        """
        import sys
        from objfs.store import Store
        sys.path.insert(0, sys.argv[2])
        from trusthelpers import body
        store = Store.open(sys.argv[1])
        for n in range(1, 400):
            for i in range(20):
                store.put_object("pacs", f"k{i}", body(f"k{i}-{n}", 1000 + n))
                store.collect_garbage(min_age=0)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writer = subprocess.Popen([sys.executable, "-c", script, str(store_path), str(Path(__file__).parent)], env=env)
    try:
        time.sleep(0.5)
        with Store.open(store_path) as store:
            for _ in range(3):
                report = store.scrub()
                assert report.lost == [] and report.drive_errors == []
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.allow_warnings  # "beyond repair" is logged as an error, as it must be
def test_scrub_keeps_lost_objects_degraded_and_repairs_bad_footers(store: Store) -> None:
    store.create_bucket("pacs")
    lost = store.put_object("pacs", "lost", body("lost", 5000)).record["parts"][0]
    fine = store.put_object("pacs", "fine", body("fine", 5000)).record["parts"][0]
    for index in range(lost["m"] + 1):
        lose_fragment(store, lost, index)
    corrupt_fragment(store, fine, 1, -20)  # damage the footer, not a frame
    report = store.scrub()
    assert report.lost == ["pacs/lost@null"] and report.fragments_repaired == 1
    assert store.status()["degraded_objects"] == 1  # the lost object keeps its heal entry
    assert store.scrub().lost == ["pacs/lost@null"]
    verify(store.get_object_bytes("pacs", "fine"))
    assert [e["who"] for e in store.audit.show(key="fine") if e["action"] == "heal"] == ["heal"]


@pytest.mark.allow_warnings  # the refusal is logged as an error
def test_locked_versions_are_never_collected(store: Store) -> None:
    store.create_bucket("locked", object_lock=True)
    info = store.put_object(
        "locked", "study", body("s", 3000), retention={"mode": "GOVERNANCE", "until": store.clock.now() + DAY}
    )
    # Even an entry forged into the gc queue (an older engine, a bug) cannot make the collector delete it.
    with store.index.write() as txn:
        store._queue_gc(txn, [info.record])
    report = store.collect_garbage(min_age=0)
    assert report.locked == 1 and report.collected == 0
    verify(store.get_object_bytes("locked", "study", info.version_id))
    # An authorised GOVERNANCE bypass is the one way a locked version becomes garbage.
    with store.index.write() as txn:
        txn.delete("gc", info.record["parts"][0]["id"].encode())
    store.delete_object("locked", "study", info.version_id, principal=ADMIN, bypass_governance=True)
    assert store.collect_garbage(min_age=0).collected == 1
    assert [e["who"] for e in store.audit.show(key="study") if e["action"] == "collect"] == ["gc"]


@pytest.mark.allow_warnings
def test_spool_files_of_dead_processes_are_swept(store_path: Path) -> None:
    """Finding 7 (engine part): spool files of a killed process stay until the store is opened again."""
    script = "import sys, os, time\nfrom objfs.store import Store\ns = Store.open(sys.argv[1])\nfd, p = s.new_spool_file('fuse')\nos.write(fd, b'x' * 1000)\nprint(p, flush=True)\ntime.sleep(60)\n"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], stdout=subprocess.PIPE, env=env)
    path = Path(proc.stdout.readline().decode().strip())
    with Store.open(store_path) as store:
        assert path.exists()  # its owner lives: kept
    proc.kill()
    proc.wait()
    with Store.open(store_path) as store:
        assert not path.exists()
        assert store.sweep_spool() == 0


class _BodyThatWaits:
    """A body whose reading is interrupted by another front's change (deterministic race)."""

    def __init__(self, data: bytes, during) -> None:
        self.data, self.pos, self.during = data, 0, during

    def read(self, size: int = -1) -> bytes:
        if self.pos == 0 and self.during is not None:
            self.during()
            self.during = None
        chunk = self.data[self.pos : self.pos + (size if size >= 0 else len(self.data))]
        self.pos += len(chunk)
        return chunk


def test_new_content_keeps_attributes_changed_during_the_write(store: Store) -> None:
    """Finding 11: the mount's commit read the metadata, then put: a change in between was lost."""
    store.create_bucket("pacs")
    store.put_object("pacs", "report", b"v1", metadata={"author": "a"}, xattrs={"user.keep": b"1"})

    def other_front() -> None:
        store.update_object("pacs", "report", metadata={"author": "b", "reviewed": "yes"}, xattrs={"user.new": b"2"})

    data = body("v2", 100_000)
    info = store.put_object(
        "pacs", "report", _BodyThatWaits(data, other_front), length=len(data), keep_attributes=True,
        xattr_changes={"user.mine": b"3"},
    )  # fmt: skip
    assert info.metadata == {"author": "b", "reviewed": "yes"}
    assert info.xattrs == {"user.keep": b"1", "user.new": b"2", "user.mine": b"3"}
    verify(store.get_object_bytes("pacs", "report"))
    assert store.head_object("pacs", "report").metadata == {"author": "b", "reviewed": "yes"}
