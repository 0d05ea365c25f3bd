"""Tombstones packed into record volumes (issue 10): retiring a version creates no file, and rebuild honours them.

Real stores on real drive directories; writers killed with SIGKILL at the
two moments a retirement can be cut (after its index commit, before the
tombstone is appended; after the append, before its sync returned):

- an overwrite and a delete leave no ``.meta`` file: each retired version's
  tombstone is a record entry in a ``.rec`` volume on m+1 of its drives;
- ``rebuild-index`` from the drives alone brings back exactly the live
  state (a deleted object is not resurrected, an overwritten one is not
  current again), also after the collector punched the retired fragments;
- a writer killed between its commit and its tombstone: the collector
  appends the tombstone before it punches anything, so a rebuild after that
  still does not resurrect the deleted key.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from trusthelpers import body, live_state, verify

from objfs.store import Store
from objfs.store.errors import NoSuchKey
from objfs.store.fragments import parse_meta
from objfs.store.rebuild import rebuild_index
from objfs.store.volumes import RECORD_SUFFIX, list_volumes, read_record, scan_records

REPO = Path(__file__).resolve().parents[2]


def _records(store_path: Path) -> dict[str, list[dict]]:
    """Per object id, the records (tombstones) the drives' record volumes hold."""
    out: dict[str, list[dict]] = {}
    for drive in sorted((store_path / "drives").iterdir()):
        for volume in list_volumes(drive, RECORD_SUFFIX):
            for entry in scan_records(volume):
                rec = parse_meta(read_record(volume, entry.offset, entry.length))
                assert rec is not None and rec["id"] == entry.blob_id
                out.setdefault(entry.blob_id, []).append(rec)
    return out


def _meta_files(store_path: Path) -> list[str]:
    return [f for d in (store_path / "drives").iterdir() for _, _, files in os.walk(d / "blobs") for f in files]


def _rebuilt_state(store_path: Path) -> dict:
    shutil.rmtree(store_path / "index")
    with Store.open(store_path) as store:
        rebuild_index(store)
        return live_state(store)


def test_overwrite_and_delete_write_record_entries_that_rebuild_honours(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        old = {k: store.put_object("pacs", k, body(f"old-{k}", 20_000)).object_id for k in ("a", "b", "c")}
        store.put_object("pacs", "a", body("new-a", 21_000))
        store.delete_object("pacs", "b")
        m = store.config.hot.m
        expected = live_state(store)
    assert _meta_files(store_path) == []  # no file per retirement: fragments packed, tombstones too
    records = _records(store_path)
    assert set(records) == {old["a"], old["b"]}
    for object_id in (old["a"], old["b"]):
        assert len(records[object_id]) == m + 1 and all(r["deleted"] for r in records[object_id])
    assert _rebuilt_state(store_path) == expected
    with Store.open(store_path) as store:
        with_index = live_state(store)
        # The collector punches the retired fragments; the tombstones stay, so a rebuild still agrees.
        report = store.collect_garbage(min_age=0)
        assert report.collected == 2 and store.gc_pending() == 0
        verify(store.get_object_bytes("pacs", "a"))
    assert with_index == expected
    assert _rebuilt_state(store_path) == expected
    with Store.open(store_path) as store:
        with pytest.raises(NoSuchKey):  # the deleted key stays deleted
            store.head_object("pacs", "b")
        assert store.get_object_bytes("pacs", "a") == body("new-a", 21_000)


def _killed_retirement(store_path: Path, where: str) -> None:
    """In another process: put "doomed", then delete it, SIGKILLed at ``where`` of the delete's retirement."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        from objfs.store import Store
        from objfs.store import gc, volumes
        where = sys.argv[2]
        store = Store.open(sys.argv[1])
        store.put_object("pacs", "doomed", b"x" * 30_000)
        if where == "before-append":
            gc.GarbageMixin._write_tombstones = lambda self, records: os.kill(os.getpid(), signal.SIGKILL)
        else:
            sync = volumes.Volume.sync_through
            def sync_through(self, end):
                if self.path.suffix == volumes.RECORD_SUFFIX:
                    os.kill(os.getpid(), signal.SIGKILL)  # appended, never synced by us
                return sync(self, end)
            volumes.Volume.sync_through = sync_through
        store.delete_object("pacs", "doomed")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, str(store_path), where], env=env, capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr


def test_a_retirement_killed_before_or_after_its_append_is_never_resurrected(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "kept", body("kept", 25_000))
    for where in ("before-append", "after-append"):
        _killed_retirement(store_path, where)
        with Store.open(store_path) as store:
            with pytest.raises(NoSuchKey):  # the committed delete is not lost
                store.head_object("pacs", "doomed")
            # The collector writes the tombstone (again) before it punches the fragments.
            report = store.collect_garbage(min_age=0)
            assert report.collected == 1 and store.gc_pending() == 0
            expected = live_state(store)
        assert any(r["key"] == "doomed" and r["deleted"] for rs in _records(store_path).values() for r in rs)
        assert _rebuilt_state(store_path) == expected
        with Store.open(store_path) as store:
            assert store.get_object_bytes("pacs", "kept") == body("kept", 25_000)
            try:
                store.head_object("pacs", "doomed")
                raise AssertionError("rebuild-index resurrected a deleted object")
            except NoSuchKey:
                pass
