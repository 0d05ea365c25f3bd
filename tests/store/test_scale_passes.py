"""Scrub and rebuild-index over the whole store: bounded by structure, resumable after SIGKILL.

Memory boundedness is checked by structure: the passes run with tiny batch
and spill sizes (so every id goes through sorted spill files and merge
joins) and must give the same result as with the defaults. A pass SIGKILLed
half-way and run again must end exactly where an uninterrupted pass on a
copy of the same store ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fragmenthelpers import lose_fragment, tear_fragment
from trusthelpers import body, live_state, verify

from objfs.store import Store

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _fill(store_path: Path, count: int) -> None:
    """Objects, a versioned bucket with a deleted version, damage to repair and a fragment nothing claims."""
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.create_bucket("ver")
        store.update_bucket("ver", versioning="Enabled")
        for i in range(count):
            store.put_object("pacs", f"PAT{i % 5}/st{i % 11}/{i:04d}.dcm", body(f"o{i}", 100 + i * 13))
        for i in range(6):
            store.put_object("ver", "k", body(f"v{i}", 300))
        store.delete_object("pacs", "PAT0/st0/0000.dcm")
        with store.index.read() as txn:
            descs = [r["parts"][0] for _, r in txn.scan("objects") if r.get("parts")]
        # Damage: a missing fragment and a torn one (repaired from parity).
        lose_fragment(store, descs[3], 1)
        tear_fragment(store, descs[40], 2, keep=10)
        # A fragment file that no version claims (no footer): kept and counted.
        # And one outside its fan-out directory, which must not upset the sorted walk of the others.
        drives = store.all_drives()
        stray = drives[0].fragment_path("f" * 32, 0)
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"not a fragment")
        misplaced = drives[1].fragment_path("1" * 32, 1).parent / ("0" * 32 + ".f1")
        misplaced.parent.mkdir(parents=True, exist_ok=True)
        misplaced.write_bytes(b"not a fragment")


def _scrub_json(store_path: Path) -> tuple[dict, str]:
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "scrub", "--json", str(store_path)], env=ENV, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


def _files(store_path: Path) -> list[str]:
    return sorted(str(p.relative_to(store_path)) for p in (store_path / "drives").rglob("*") if p.is_file())


def _kill_when(proc: subprocess.Popen, ready) -> None:
    while proc.poll() is None and not ready():
        time.sleep(0.005)
    assert proc.poll() is None, "the pass ended before it could be killed: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.allow_warnings  # the stray fragment is reported
def test_scrub_killed_half_way_continues_to_the_same_result(store_path: Path, tmp_path: Path) -> None:
    _fill(store_path, 120)
    other = tmp_path / "copy"
    shutil.copytree(store_path, other, symlinks=True)

    # Uninterrupted, defaults, through the command (which prints progress).
    whole, stderr = _scrub_json(other)
    assert "records verified" in stderr and "drive directories walked" in stderr

    # Tiny batches and spill chunks, checkpoint after every batch; killed once it has checkpointed.
    script = (
        "import sys\n"
        "import objfs.store.spill as spill\n"
        "spill.DEFAULT_CHUNK = 3\n"
        "from objfs.store import Store\n"
        "with Store.open(sys.argv[1]) as s:\n"
        "    s.scrub(batch=2, checkpoint_seconds=0)\n"
    )
    checkpoint = store_path / "run" / "scrub" / "checkpoint.json"
    spilled = store_path / "run" / "scrub" / "referenced"

    def half_way() -> bool:
        # Killed once chunks were merged and more spilled after: the resume then reads both levels, and
        # the merge that would leave a single file needs many more chunks than can land before the kill.
        try:
            verified = json.loads(checkpoint.read_text()).get("verified", 0)
        except (OSError, ValueError):
            return False
        return verified >= 30 and any(spilled.glob("L1-*.ids")) and any(spilled.glob("L0-*.ids"))

    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], env=ENV, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, half_way)
    assert checkpoint.exists()
    assert len(list(spilled.glob("*.ids"))) > 1
    resumed, _ = _scrub_json(store_path)
    assert not (store_path / "run" / "scrub").exists()

    for name in ("objects", "blobs", "unreferenced_fragments", "lost", "drive_errors", "index_trusted"):
        assert resumed[name] == whole[name], name
    assert whole["fragments_repaired"] == 2 and whole["unreferenced_fragments"] == 2
    with Store.open(store_path) as a, Store.open(other) as b:
        assert live_state(a) == live_state(b)
        for key in ("PAT1/st1/0001.dcm", "PAT4/st9/0119.dcm"):
            verify(a.get_object_bytes("pacs", key))
    assert _files(store_path) == _files(other)
    # Both are whole now: one more scrub repairs nothing.
    again, _ = _scrub_json(store_path)
    assert again["fragments_repaired"] == 0 and again["objects"] == whole["objects"]


def _index_progress(index: Path):
    """The position a running rebuild committed with its last batch, read straight from LMDB (or None)."""
    import lmdb
    import msgpack

    try:
        env = lmdb.open(str(index), readonly=True, lock=True, max_dbs=64)
    except lmdb.Error:
        return None
    try:
        with env.begin() as txn:
            db = env.open_db(b"settings", txn=txn, create=False)
            raw = txn.get(b"rebuild-progress", db=db)
    except lmdb.Error:
        raw = None
    finally:
        env.close()
    return None if raw is None else msgpack.unpackb(raw, raw=False)


def _scan_progress(spill: Path) -> str | None:
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{spill}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT value FROM state WHERE name = 'scanned_after'").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return None if row is None else row[0]


def _index_entries(store: Store) -> dict[str, list[bytes]]:
    with store.index.read() as txn:
        return {db: sorted(txn.scan_keys(db)) for db in ("buckets", "objects", "versions", "uploads", "parts", "gc", "heal")}


@pytest.mark.allow_warnings
def test_rebuild_killed_in_scan_and_in_writes_continues_to_the_same_index(store_path: Path, tmp_path: Path, cli) -> None:
    _fill(store_path, 120)
    with Store.open(store_path) as store:
        store.create_bucket("plain")
        for i in range(4):  # overwrites without versioning: older versions are garbage
            store.put_object("plain", "again", body(f"p{i}", 200))
        upload = store.create_multipart("pacs", "unfinished")
        store.upload_part(upload, 1, body("part1", 400))
        store.upload_part(upload, 1, body("part1b", 400))  # replaced: garbage
        store.upload_part(upload, 2, body("part2", 400))
        expected = live_state(store)
    other = tmp_path / "copy"
    shutil.copytree(store_path, other, symlinks=True)
    whole = json.loads(cli("rebuild-index", "--force", str(other)).stdout.splitlines()[-1])

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from objfs.store import Store\n"
        "from objfs.store.rebuild import move_index_aside, rebuild_index, index_is_empty, rebuild_in_progress\n"
        "root = Path(sys.argv[1])\n"
        "with Store.open(root) as s:\n"
        "    fresh = not index_is_empty(s) and not rebuild_in_progress(s)\n"
        "if fresh:\n"
        "    move_index_aside(root)\n"
        "with Store.open(root) as s:\n"
        "    rebuild_index(s, batch=2)\n"
    )
    spill = store_path / "run" / "rebuild" / "spill.sqlite"
    # Killed while it scans the drives (a fan-out directory checkpointed), then while it writes the index.
    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], env=ENV, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: _scan_progress(spill) is not None)
    assert _index_progress(store_path / "index") is None  # nothing written yet
    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], env=ENV, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: ((_index_progress(store_path / "index") or {}).get("counts") or {}).get("objects", 0) >= 20)
    assert spill.exists()
    out = cli("rebuild-index", str(store_path))  # no --force: it continues
    resumed = json.loads(out.stdout.splitlines()[-1])
    assert b"versions written" in out.stderr
    assert resumed == whole
    assert not (store_path / "run" / "rebuild").exists()
    with Store.open(store_path) as a, Store.open(other) as b:
        assert live_state(a) == live_state(b) == expected
        assert _index_entries(a) == _index_entries(b)
        assert len(_index_entries(a)["gc"]) >= 4
        verify(a.get_object_bytes("plain", "again"))
    assert not list(store_path.glob("index.old-*"))[1:]  # only the first run moved an index aside
