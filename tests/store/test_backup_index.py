"""`objfs backup-index`: a snapshot of the index that a store opens as its own (the restore in docs/operations.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from objfs.stores import init_store, open_store

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "objfs.cli", *args], env=env, capture_output=True, text=True)


def test_backup_index_snapshot_restores(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = init_store(root)
    try:
        store.create_bucket("bk1")
        for i in range(4):
            store.put_object("bk1", f"k{i}", b"z" * (10 + i))
        # taken while the store is open in this process, as under a running service
        done = run("backup-index", str(root), str(tmp_path / "snap"))
        assert done.returncode == 0, done.stderr
        store.put_object("bk1", "after", b"later")  # not in the snapshot
    finally:
        store.close()
    manifest = json.loads((tmp_path / "snap" / "snapshot.json").read_text())
    assert manifest["objects"] == 4 and manifest["bytes"] == 10 + 11 + 12 + 13
    assert run("backup-index", str(root), str(tmp_path / "snap")).returncode == 2  # never over an old one

    # restore: the snapshot's data.mdb in place of the index
    restored = tmp_path / "restored"
    shutil.copytree(root, restored, ignore=shutil.ignore_patterns("index"), symlinks=True)
    (restored / "index").mkdir()
    shutil.copy(tmp_path / "snap" / "data.mdb", restored / "index" / "data.mdb")
    store = open_store(restored)
    try:
        assert store.index.index_id == manifest["index_id"]
        assert sorted(o.key for o in store.list_objects("bk1").objects) == ["k0", "k1", "k2", "k3"]
        assert store.get_object_bytes("bk1", "k2") == b"z" * 12
        assert store.counters.totals()["objects"] == 4
    finally:
        store.close()
