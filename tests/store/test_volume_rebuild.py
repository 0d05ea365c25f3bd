"""rebuild-index restores blobs whose fragments are packed in volume files.

Real stores on real drive directories: the index is deleted and rebuilt by
the real ``objfs rebuild-index`` command, then every object must read back
byte for byte with its record (ETag, metadata) and its fragment locations
(``vols``) exactly as the writer recorded them; dead versions stay dead,
torn entries are skipped, healed fragments (files beside their old volume
entries) are found, and a rebuild SIGKILLed half-way ends where an
uninterrupted one does.
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
from typing import Any

import pytest
from trusthelpers import body, live_state, verify

from objfs.store import Store
from objfs.store.index import object_key
from objfs.store.volumes import RECORD_SUFFIX, list_volumes, scan, volume_path

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
LARGE = (1 << 20) + 200_000  # over the default pack_max: fragment files


def _placements(store: Store) -> dict[tuple, list[tuple]]:
    """Per version, each blob's id, drives and fragment locations (``vols``; None when all are files)."""
    out = {}
    with store.index.read() as txn:
        for db in ("objects", "versions"):
            for _, rec in txn.scan(db):
                out[(rec["bucket"], rec["key"], rec["version"])] = [
                    (d["id"], tuple(d["drives"]), d.get("vols")) for d in rec.get("parts") or []
                ]
        for key, part in txn.scan("parts"):
            out[("part", key)] = [(part["blob"]["id"], tuple(part["blob"]["drives"]), part["blob"].get("vols"))]
    return out


def _record(store: Store, bucket: str, key: str) -> dict[str, Any]:
    with store.index.read() as txn:
        return txn.get("objects", object_key(bucket, key))


def _rebuild(cli, store_path: Path) -> dict[str, int]:
    shutil.rmtree(store_path / "index")
    return json.loads(cli("rebuild-index", str(store_path)).stdout.splitlines()[-1])


def test_packed_and_large_objects_read_back_identical_after_the_index_is_lost(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.create_bucket("ver")
        store.update_bucket("ver", versioning="Enabled")
        for i in range(12):
            store.put_object("pacs", f"st1/{i:02d}.dcm", body(f"s{i}", 700 + i * 997), metadata={"slice": str(i)})
        for i in range(2):
            store.put_object("pacs", f"big{i}", body(f"b{i}", LARGE + i), content_type="application/dicom")
        for i in range(3):
            store.put_object("ver", "k", body(f"v{i}", 2000 + i))
        store.min_part_size = 1
        upload = store.create_multipart("pacs", "unfinished")
        for number in (1, 2):
            store.upload_part(upload, number, body(f"part{number}", 6000))
        before, places = live_state(store), _placements(store)
        etags = {k: store.head_object("pacs", k).etag for k in ("st1/00.dcm", "big1")}
    vols = [v for parts in places.values() for _, _, v in parts]
    assert sum(v is not None for v in vols) == 17 and sum(v is None for v in vols) == 2  # packed and files both

    counts = _rebuild(cli, store_path)
    assert counts["objects"] == 15 and counts["versions"] == 2 and counts["uploads"] == 1 and counts["unclaimed_blobs"] == 0
    with Store.open(store_path) as store:
        assert live_state(store) == before
        assert _placements(store) == places  # desc["vols"] as BlobWriter.finish made it
        for i in range(12):
            data = store.get_object_bytes("pacs", f"st1/{i:02d}.dcm")
            verify(data)
            assert store.head_object("pacs", f"st1/{i:02d}.dcm").metadata == {"slice": str(i)}
        for i in range(2):
            verify(store.get_object_bytes("pacs", f"big{i}"))
        assert {k: store.head_object("pacs", k).etag for k in etags} == etags
        with store.index.read() as txn:
            assert not list(txn.scan("heal"))
        report = store.scrub()
        assert report.index_trusted and report.fragments_repaired == 0 and not report.lost


def test_a_deleted_and_collected_packed_object_is_not_resurrected(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for name in ("gone", "kept", "gone-too"):
            store.put_object("pacs", name, body(name, 3000))
        store.put_object("pacs", "big-gone", body("big-gone", LARGE))
        store.put_object("pacs", "kept", body("kept-2", 3100))  # the first "kept" is retired: garbage
        for name in ("gone", "gone-too", "big-gone"):
            store.delete_object("pacs", name)
        store.collect_garbage(min_age=0)
        before = live_state(store)
    assert [r[0] for r in before["objects"]] == ["kept"]

    counts = _rebuild(cli, store_path)
    assert counts["objects"] == 1
    with Store.open(store_path) as store:
        assert live_state(store) == before
        data = store.get_object_bytes("pacs", "kept")
        verify(data)
        assert len(data) == 3100
        store.collect_garbage(min_age=0)  # whatever the rebuild queued again goes without touching "kept"
        verify(store.get_object_bytes("pacs", "kept"))
        assert store.scrub().fragments_repaired == 0


def _last_blob_entries(store_path: Path, blob_id: str) -> list[tuple[Path, Any]]:
    out = []
    for drive in sorted((store_path / "drives").iterdir()):
        for path in list_volumes(drive):
            out += [(path, e) for e in scan(path) if e.blob_id == blob_id]
    return sorted(out, key=lambda pe: pe[1].index)


@pytest.mark.allow_warnings  # the damaged fragments are reported when read
def test_torn_entries_are_skipped_and_the_others_restored(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for i in range(6):
            store.put_object("pacs", f"o{i}", body(f"o{i}", 5000 + i))
        last = _record(store, "pacs", "o5")["parts"][0]
        before = live_state(store)
    entries = _last_blob_entries(store_path, last["id"])
    assert len(entries) == 6
    # A crash mid-append: one volume ends inside o5's entry (its header whole, its payload cut).
    (cut_path, cut), (zero_path, zeroed) = entries[0], entries[1]
    os.truncate(cut_path, cut.offset + cut.length // 2)
    # Another lost the end of its payload but kept its size: the entry is there, its footer is not.
    with open(zero_path, "r+b") as f:
        f.seek(zeroed.offset + zeroed.length - 64)
        f.write(bytes(64))
    assert last["id"] not in {e.blob_id for e in scan(cut_path)}

    _rebuild(cli, store_path)
    with Store.open(store_path) as store:
        assert live_state(store) == before
        for i in range(6):
            verify(store.get_object_bytes("pacs", f"o{i}"))
        desc = _record(store, "pacs", "o5")["parts"][0]
        assert desc["vols"][cut.index] is None and desc["vols"][zeroed.index] is None
        assert desc["vols"] == [None if i in (cut.index, zeroed.index) else v for i, v in enumerate(last["vols"])]
        with store.index.read() as txn:
            assert [rec["key"] for _, rec in txn.scan("heal")] == ["o5"]  # missing fragments: repaired by heal
        assert store.scrub().fragments_repaired == 2
        verify(store.get_object_bytes("pacs", "o5"))


@pytest.mark.allow_warnings  # the corrupt fragment is reported
def test_a_healed_fragment_file_is_found_beside_its_old_volume_entry(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for i in range(3):
            store.put_object("pacs", f"o{i}", body(f"o{i}", 20_000))
        desc = _record(store, "pacs", "o1")["parts"][0]
        volume_id, offset, _length = desc["vols"][2]
        drive = store.drive_by_id(desc["drives"][2])
        with open(volume_path(drive.path, volume_id), "r+b") as f:
            f.seek(offset + 100)  # inside the first frame: its CRC fails, the footer stays whole
            f.write(b"\xff" * 16)
        assert store.scrub().fragments_repaired == 1
        healed = _record(store, "pacs", "o1")["parts"][0]
        assert healed["vols"][2] is None and drive.fragment_path(desc["id"], 2).is_file()
        before, places = live_state(store), _placements(store)

    _rebuild(cli, store_path)
    with Store.open(store_path) as store:
        assert live_state(store) == before
        assert _placements(store) == places  # the file, not the damaged entry (whose footer is whole)
        for i in range(3):
            verify(store.get_object_bytes("pacs", f"o{i}"))
        assert store.scrub().fragments_repaired == 0


def _kill_when(proc: subprocess.Popen, ready) -> None:
    while proc.poll() is None and not ready():
        time.sleep(0.002)
    assert proc.poll() is None, "the rebuild ended before it could be killed: " + proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _spill_state(spill: Path, pattern: str) -> int:
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{spill}?mode=ro", uri=True)
        try:
            return db.execute("SELECT count(*) FROM state WHERE name LIKE ?", (pattern,)).fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _objects_written(index: Path) -> int:
    import lmdb
    import msgpack

    try:
        env = lmdb.open(str(index), readonly=True, lock=True, max_dbs=64)
    except lmdb.Error:
        return 0
    try:
        with env.begin() as txn:
            raw = txn.get(b"rebuild-progress", db=env.open_db(b"settings", txn=txn, create=False))
    except lmdb.Error:
        raw = None
    finally:
        env.close()
    return ((msgpack.unpackb(raw, raw=False) if raw else {}).get("counts") or {}).get("objects", 0)


def test_rebuild_killed_half_way_continues_to_the_full_state(store_path: Path, tmp_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for i in range(90):
            store.put_object("pacs", f"PAT{i % 4}/{i:03d}.dcm", body(f"o{i}", 300 + i * 37))
        store.put_object("pacs", "big", body("big", LARGE))
        store.delete_object("pacs", "PAT1/001.dcm")
        store.put_object("pacs", "PAT2/002.dcm", body("again", 900))
        expected, places = live_state(store), _placements(store)
    other = tmp_path / "copy"
    shutil.copytree(store_path, other, symlinks=True)
    shutil.rmtree(other / "index")
    whole = json.loads(cli("rebuild-index", str(other)).stdout.splitlines()[-1])

    shutil.rmtree(store_path / "index")
    script = (
        "import sys\n"
        "from objfs.store import Store\n"
        "from objfs.store.rebuild import rebuild_index\n"
        "with Store.open(sys.argv[1]) as s:\n"
        "    rebuild_index(s, batch=2)\n"
    )
    spill = store_path / "run" / "rebuild" / "spill.sqlite"
    # Killed once the volumes are scanned and blobs are being read, then while it writes the index.
    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], env=ENV, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: _spill_state(spill, "scanned_after") > 0)
    # One data volume per drive, and a record volume (the tombstones of the delete and the overwrite)
    # on each of their m+1 drives: each checkpointed.
    records = [v for d in (store_path / "drives").iterdir() for v in list_volumes(d, RECORD_SUFFIX)]
    assert 3 <= len(records) <= 6
    assert _spill_state(spill, "volume:%") == 6 + len(records)
    proc = subprocess.Popen([sys.executable, "-c", script, str(store_path)], env=ENV, stderr=subprocess.PIPE, text=True)
    _kill_when(proc, lambda: _objects_written(store_path / "index") >= 20)
    out = cli("rebuild-index", str(store_path))  # continues what the killed runs left
    assert json.loads(out.stdout.splitlines()[-1]) == whole
    assert not (store_path / "run" / "rebuild").exists()
    with Store.open(store_path) as a, Store.open(other) as b:
        assert live_state(a) == live_state(b) == expected
        assert _placements(a) == _placements(b) == places
        for rec in expected["objects"]:
            verify(a.get_object_bytes("pacs", rec[0]))
