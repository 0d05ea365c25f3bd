"""Promotion: reads of cold versions queue their move back to the first tier; the mover does it, never the read.

Also ``objfs tier promote`` (a patient's priors ahead of a visit), the rules
leaving a promoted version on the first tier for ``promoted_days``, and a
reader streaming across a promotion done by another process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fragmenthelpers import blob_fragments
from tierhelpers import tiered_store, unlock_tree
from trusthelpers import body, verify

from objfs.store import Store

REPO = Path(__file__).resolve().parents[2]
RULES = {
    "Rules": [{"ID": "warm", "Status": "Enabled", "Filter": {}, "Transitions": [{"Days": 0, "StorageClass": "STANDARD_IA"}]}]
}


@pytest.fixture
def promoting(tmp_path: Path):
    root = tiered_store(tmp_path / "store")
    with open(root / "objfs.toml", "a") as f:  # [lifecycle] is the file's last table
        f.write("promote_on_read = true\npromoted_days = 2\n")
    yield root
    unlock_tree(tmp_path)


def objfs(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "objfs.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_a_read_of_a_cold_version_queues_its_promotion_and_the_mover_does_it(promoting: Path) -> None:
    with Store.open(promoting) as store:
        store.create_bucket("bkt")
        store.put_lifecycle("bkt", RULES)
        data = body("prior", 300000)
        store.put_object("bkt", "prior", data)
        store.put_object("bkt", "other", body("other", 1000))
        assert len(store.run_lifecycle().moved) == 2
        assert store.queued_moves() == []
        verify(store.get_object_bytes("bkt", "prior"))  # the read is served from warm ...
        assert store.tier_of(store.head_object("bkt", "prior").record) == "warm"  # ... and moves nothing itself
        (entry,) = store.queued_moves()
        assert (entry["key"], entry["tier"], entry["reason"]) == ("prior", "hot", "read")
        verify(store.get_object_bytes("bkt", "prior"))
        assert len(store.queued_moves()) == 1  # queued once
        report = store.run_queued_moves()
        assert report["moved"] == [f"bkt/prior@{entry['version']} -> hot"] and report["failed"] == []
        assert store.queued_moves() == []
        promoted = store.head_object("bkt", "prior").record
        assert store.tier_of(promoted) == "hot" and promoted["promoted"] > 0
        assert store.get_object_bytes("bkt", "prior") == data
        assert store.queued_moves() == []  # a hot version is not queued
        assert store.run_lifecycle().moved == []  # the rules leave it on the first tier for promoted_days
        time.sleep(2.2)
        assert [m.split(" ")[0] for m in store.run_lifecycle().moved] == [f"bkt/prior@{entry['version']}"]
        assert "promoted" not in store.head_object("bkt", "prior").record


def test_a_queued_promotion_of_a_version_that_went_is_dropped(promoting: Path) -> None:
    with Store.open(promoting) as store:
        store.create_bucket("bkt")
        store.put_object("bkt", "k", body("k", 1000))
        store.move_version("bkt", "k", tier="warm")
        store.get_object_bytes("bkt", "k")
        store.delete_object("bkt", "k")
        report = store.run_queued_moves()
        assert report["moved"] == [] and len(report["dropped"]) == 1 and store.queued_moves() == []


def test_tier_promote_brings_one_patients_priors_back_and_leaves_the_others(promoting: Path) -> None:
    with Store.open(promoting) as store:
        store.create_bucket("pacs")
        for patient in ("P1", "P2"):
            for study in range(3):
                store.put_object("pacs", f"{patient}/{study}.dcm", body(f"{patient}{study}", 20000 + study))
                store.move_version("pacs", f"{patient}/{study}.dcm", tier="warm")
    queued = objfs("tier", "promote", str(promoting), "pacs/P1/", "--queue")
    assert queued.returncode == 0, queued.stderr
    assert "3 versions queued" in queued.stdout
    with Store.open(promoting) as store:
        assert sorted(e["key"] for e in store.queued_moves()) == ["P1/0.dcm", "P1/1.dcm", "P1/2.dcm"]
        assert store.tier_of(store.head_object("pacs", "P1/0.dcm").record) == "warm"
        store.run_queued_moves()
    now = objfs("tier", "promote", str(promoting), "pacs/P2/1")
    assert now.returncode == 0 and "1 versions promoted" in now.stdout
    listed = json.loads(objfs("tier", "list", str(promoting), "--json").stdout)
    assert {t["name"]: t["versions"] for t in listed} == {"hot": 4, "warm": 2}
    with Store.open(promoting) as store:
        for patient in ("P1", "P2"):
            for study in range(3):
                verify(store.get_object_bytes("pacs", f"{patient}/{study}.dcm"))


def test_a_reader_streaming_across_a_promotion_by_another_process_gets_every_byte(promoting: Path) -> None:
    with Store.open(promoting) as store:
        store.create_bucket("bkt")
        store.put_object("bkt", "big", body("big", 5 * (1 << 20) + 99))
        old = store.move_version("bkt", "big", tier="warm").record["parts"][0]["id"]
        with store.open_object("bkt", "big") as reader:
            chunks = reader.iter_range()
            got = [next(chunks)]  # streaming has begun on the warm blob
            done = objfs("tier", "promote", str(promoting), "bkt")
            assert done.returncode == 0 and "1 versions promoted" in done.stdout, done.stderr
            gc = objfs("gc", str(promoting), "--min-age", "0", "--json")
            assert gc.returncode == 0, gc.stderr
            assert json.loads(gc.stdout)["leased"] == 1  # our lease keeps the warm blob
            got += list(chunks)
        verify(b"".join(got))
        assert store.tier_of(store.head_object("bkt", "big").record) == "hot"
        assert store.collect_garbage(min_age=0).collected == 1
        assert not blob_fragments(promoting.parent, old)
        verify(store.get_object_bytes("bkt", "big"))
