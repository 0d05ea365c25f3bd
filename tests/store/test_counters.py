"""Kept counters (objfs/store/counters.py) equal a full scan of the index after every kind of change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tierhelpers import tiered_store, unlock_tree

from objfs.store.counters import DB, READY
from objfs.store.errors import PreconditionFailed
from objfs.store.tiers import tier_of_record
from objfs.stores import open_store

REPO = Path(__file__).resolve().parents[2]


def scanned(store: Any) -> dict[str, Any]:
    """What the counters must say, from a pass over every record."""
    per_tier: dict[str, list[int]] = {}
    objects = noncurrent = size = 0
    with store.index.read() as txn:
        for db in ("objects", "versions"):
            for _, rec in txn.scan(db):
                if db == "versions":
                    noncurrent += 1
                elif not rec.get("delete_marker"):
                    objects += 1
                if rec.get("delete_marker"):
                    continue
                size += rec["size"]
                entry = per_tier.setdefault(tier_of_record(rec, store.config.hot.name), [0, 0])
                entry[0] += 1
                entry[1] += rec["size"]
    return {"objects": objects, "noncurrent_versions": noncurrent, "bytes": size, "per_tier": per_tier}


def kept(store: Any) -> dict[str, Any]:
    totals = store.counters.totals()
    return {
        "objects": totals["objects"],
        "noncurrent_versions": totals["noncurrent_versions"],
        "bytes": totals["bytes"],
        "per_tier": {t: [v["versions"], v["bytes"]] for t, v in totals["per_tier"].items() if v["versions"]},
    }


def test_counters_follow_every_change(tmp_path: Path) -> None:
    root = tiered_store(tmp_path / "store")
    store = open_store(root)
    try:
        store.create_bucket("plain")
        store.create_bucket("kept")
        store.update_bucket("kept", versioning="Enabled")
        for i in range(6):
            store.put_object("plain", f"k{i}", b"x" * (100 + i))
            store.put_object("kept", f"k{i}", b"y" * (200 + i))
        assert kept(store) == scanned(store)
        store.put_object("plain", "k0", b"overwritten, longer than before")  # unversioned overwrite
        store.put_object("kept", "k0", b"second version")  # versioned overwrite: one noncurrent
        store.delete_object("plain", "k1")
        store.delete_object("kept", "k1")  # a delete marker over a version
        first = store.head_object("kept", "k0").version_id
        store.delete_object("kept", "k0", version_id=first)  # the current version: the previous one is promoted
        upload = store.create_multipart("kept", "big")
        etags = [store.upload_part(upload, n, bytes([n]) * (5 << 20 if n == 1 else 1000)) for n in (1, 2)]
        store.complete_multipart(upload, [(n, e if isinstance(e, str) else e["etag"]) for n, e in zip((1, 2), etags)])
        store.move_version("kept", "k2", tier="warm")
        store.move_version("plain", "k3", tier="warm")
        store.rename_object("plain", "k4", "renamed")
        store.collect_garbage(min_age=0)
        expected = scanned(store)
        assert kept(store) == expected
        assert expected["per_tier"]["warm"][0] == 2 and expected["noncurrent_versions"] == 1
        # a change refused inside its transaction leaves the counters as they were
        before = kept(store)
        with pytest.raises(PreconditionFailed):
            store.put_object("kept", "k3", b"not stored", if_none_match=True)
        assert kept(store) == before
        per_bucket = store.counters.totals()["per_bucket"]
        assert per_bucket["plain"]["objects"] == 5 and set(per_bucket) == {"plain", "kept"}
        status = store.status()
        assert status["objects"] == expected["objects"] and status["bytes"] == expected["bytes"]
        usage = {t["name"]: (t["versions"], t["bytes"]) for t in store.tier_usage()}
        assert usage["warm"] == tuple(expected["per_tier"]["warm"])
    finally:
        store.close()
    try:
        # rebuild-index writes a fresh index record by record: the counters come back with it
        env = dict(os.environ, PYTHONPATH=str(REPO))
        done = subprocess.run(
            [sys.executable, "-m", "objfs.cli", "rebuild-index", str(root), "--force"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        store = open_store(root)
        try:
            assert kept(store) == scanned(store) == expected
        finally:
            store.close()
    finally:
        unlock_tree(tmp_path)


def test_an_index_without_counters_is_counted_once_and_recount_repairs(tmp_path: Path) -> None:
    root = tiered_store(tmp_path / "store")
    store = open_store(root)
    try:
        store.create_bucket("bb1")
        for i in range(5):
            store.put_object("bb1", f"k{i}", b"q" * i)
        truth = scanned(store)
        with store.index.write() as txn:  # as an index written before counters existed, or counters gone wrong
            for key in list(txn.scan_keys(DB)):
                txn.delete(DB, key)
    finally:
        store.close()
    store = open_store(root)  # no ready mark: counted when opened
    try:
        assert kept(store) == truth
        with store.index.write() as txn:  # drift (a writer without counters): recount repairs it
            txn.put(DB, b"bb1\0hot", {"current": [99, 99]})
            assert txn.get(DB, READY)
    finally:
        store.close()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "status", str(root), "--json", "--recount"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["objects"] == truth["objects"] == 5 and status["bytes"] == truth["bytes"]
    listed = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "tier", "list", str(root), "--json"], env=env, capture_output=True, text=True
    )
    assert {t["name"]: t["versions"] for t in json.loads(listed.stdout)}["hot"] == 5
    unlock_tree(tmp_path)
