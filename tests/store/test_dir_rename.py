"""Directory renames (``rename_prefix``): one rename record on the drives, one index transaction.

A crash at any point leaves the old tree or the new one, in the index and in
what ``rebuild-index`` makes of the drives; later changes of a moved object
win over the rename record when the index is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from trusthelpers import body, live_state, verify

from objfs.store import InvalidArgument, Store

REPO = Path(__file__).resolve().parents[2]


def _tree(store: Store, bucket: str = "pacs") -> list[str]:
    return sorted(o.key for o in store.list_objects(bucket, max_keys=10000).objects)


def _rebuilt_state(store_path: Path, cli) -> dict:
    shutil.rmtree(store_path / "index")
    cli("rebuild-index", str(store_path))
    with Store.open(store_path) as store:
        return live_state(store)


def _fill(store: Store, n: int) -> None:
    store.create_bucket("pacs")
    store.put_object("pacs", "study/", b"", posix={"mode": 0o40755})
    for i in range(n):
        store.put_object("pacs", f"study/s{i % 3}/img{i}", body(f"img{i}", 300 + i))
    store.put_object("pacs", "studyx", body("neighbour", 50))  # shares the prefix text, not the directory


def test_a_directory_rename_moves_every_key_and_rebuild_index_agrees(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        _fill(store, 30)
        assert store.rename_prefix("pacs", "study/", "moved/") == 31
        keys = _tree(store)
        assert not [k for k in keys if k.startswith("study/")] and "studyx" in keys
        assert "moved/" in keys and "moved/s1/img1" in keys
        verify(store.get_object_bytes("pacs", "moved/s2/img5"))
        # Later changes of moved objects win over the rename record.
        store.update_object("pacs", "moved/s0/img0", posix={"mode": 0o100600})
        store.rename_object("pacs", "moved/s1/img1", "elsewhere")
        store.delete_object("pacs", "moved/s2/img2")
        store.put_object("pacs", "study/new", body("new", 10))  # the old name taken again
        assert store.rename_prefix("pacs", "moved/", "again/") == 29  # a second rename of the same tree
        before = live_state(store)
    assert _rebuilt_state(store_path, cli) == before


def test_a_directory_cannot_move_into_itself(store: Store) -> None:
    _fill(store, 2)
    with pytest.raises(InvalidArgument):
        store.rename_prefix("pacs", "study/", "study/sub/")
    assert store.rename_prefix("pacs", "study/s0/", "s0/") == 1  # out of its parent: fine


def _crash_during_rename(store_path: Path, when: str) -> None:
    """Run a rename in another process that SIGKILLs itself ``before`` (its record written) or ``after`` the index commit."""
    script = f"""
import os, signal
from objfs.store import Store
from objfs.store.renames import RenamesMixin
patched = "_write_rename_record" if {when!r} == "before" else "_commit_prefix_rename"
real = getattr(RenamesMixin, patched)
def crash(self, *args):
    real(self, *args)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(RenamesMixin, patched, crash)
store = Store.open({str(store_path)!r})
store.rename_prefix("pacs", "study/", "moved/")
"""
    proc = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_mid_rename_leaves_the_old_tree_or_the_new_one(store_path: Path, cli, when: str) -> None:
    with Store.open(store_path) as store:
        _fill(store, 12)
        old_tree = _tree(store)
    _crash_during_rename(store_path, when)
    record_files = list(store_path.glob("drives/*/renames/*.rename"))
    assert record_files, "the rename record is written before the commit"
    with Store.open(store_path) as store:  # opening the store settles the dead process's rename
        tree = _tree(store)
        if when == "before":
            assert tree == old_tree
            assert not list(store_path.glob("drives/*/renames/*.rename")), "an uncommitted rename leaves no record"
        else:
            assert tree == sorted(k.replace("study/", "moved/", 1) if k.startswith("study/") else k for k in old_tree)
        verify(store.get_object_bytes("pacs", tree[-2]))
        before = live_state(store)
        report = store.scrub()
        assert report.index_trusted and report.unreferenced_fragments == 0
    assert _rebuilt_state(store_path, cli) == before
    counts = json.loads(cli("scrub", str(store_path), "--json").stdout)
    assert counts["unreferenced_fragments"] == 0
