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
from trusthelpers import body, fragment_files, live_state, verify

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
        files = fragment_files(store)
    # Damage: a missing fragment and a torn one (repaired from parity).
    files[3].unlink()
    with open(files[40], "r+b") as f:
        f.truncate(10)
    # A fragment file that no version claims (no footer): kept and counted.
    # And one outside its fan-out directory, which must not upset the sorted walk of the others.
    (files[50].parent / ("f" * 32 + ".f0")).write_bytes(b"not a fragment")
    (files[60].parent / ("0" * 32 + ".f1")).write_bytes(b"not a fragment")


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

    def half_way() -> bool:
        try:
            return json.loads(checkpoint.read_text()).get("verified", 0) >= 30
        except (OSError, ValueError):
            return False

    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], env=ENV, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, half_way)
    assert checkpoint.exists()
    assert len(list((store_path / "run" / "scrub" / "referenced").glob("*.ids"))) > 1
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
