"""Tiers and the mover: objects change tiers with identical bytes, locks intact, and rebuild-index knows where they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fragmenthelpers import blob_fragments
from tierhelpers import tiered_store, unlock_tree
from trusthelpers import body, live_state, verify

from objfs.store import ConfigError, Store
from objfs.store.rebuild import rebuild_index
from objfs.store.tiers import add_tier

DAY = 86400


@pytest.fixture
def tiered(tmp_path: Path):
    root = tiered_store(tmp_path / "store")
    yield root
    unlock_tree(tmp_path)


def _fragments(root: Path, blob_id: str) -> list[str]:
    return blob_fragments(root.parent, blob_id)  # every tier's drives lie beside the store


def test_a_second_tier_is_configured_formatted_and_mapped_to_storage_classes(tiered: Path) -> None:
    with Store.open(tiered) as store:
        assert [t.name for t in store.config.tiers] == ["hot", "warm"]
        assert (store.config.tier("warm").k, store.config.tier("warm").m) == (3, 2)
        assert store.config.storage_classes == {"STANDARD": "hot", "STANDARD_IA": "warm"}
        assert all(store.drive_state(d) == "ok" for d in store.drives["warm"])
        store.create_bucket("bkt")
        info = store.put_object("bkt", "ia", body("ia", 5000), tier=store.tier_for_class("STANDARD_IA"))
        assert store.storage_class_of(info.record) == "STANDARD_IA"
        assert all("warm" in str(p) for p in _fragments(tiered, info.object_id))
        with pytest.raises(ConfigError):
            add_tier(tiered, "warm", [str(tiered.parent / "x0")], "1+1")
        with pytest.raises(ConfigError):  # too few drives: objfs.toml is left as it was
            add_tier(tiered, "cold", [str(tiered.parent / "c0")], "2+1")
        assert "cold" not in (tiered / "objfs.toml").read_text()
        usage = {t["name"]: t for t in store.tier_usage()}
        assert (usage["hot"]["versions"], usage["warm"]["versions"], usage["warm"]["bytes"]) == (0, 1, 5000)


def test_a_move_copies_verifies_switches_and_retires_the_old_blob(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("bkt")
        data = body("moved", 3 * (1 << 20) + 123)
        info = store.put_object("bkt", "k", data, tags={"t": "1"})
        old_blob = info.record["parts"][0]["id"]
        with store.open_object("bkt", "k") as early:  # a reader that opened the version before the move
            moved = store.move_version("bkt", "k", tier="warm")
            assert store.tier_of(moved.record) == "warm" and moved.etag == info.etag and moved.tags == {"t": "1"}
            assert moved.version_id == info.version_id and moved.record["gen"] > info.record["gen"]
            assert store.collect_garbage(min_age=0).leased == 1  # the early reader keeps the old blob
            assert early.readall() == data
        assert store.get_object_bytes("bkt", "k") == data
        assert store.collect_garbage(min_age=0).collected == 1
        assert _fragments(tiered, old_blob) == []
        assert len(_fragments(tiered, moved.record["parts"][0]["id"])) == 5
        assert store.move_version("bkt", "k", tier="warm").record["gen"] == moved.record["gen"]  # already there
        assert store.scrub().lost == []


def test_multipart_and_encrypted_versions_move_too(tiered: Path) -> None:
    from objfs.store import Encryption

    with Store.open(tiered) as store:
        store.create_bucket("bkt")
        store.min_part_size = 1
        upload = store.create_multipart("bkt", "mp")
        parts = [store.upload_part(upload, n, body(f"p{n}", 70000 + n)) for n in (1, 2, 3)]
        store.complete_multipart(upload, [(p["number"], p["etag"]) for p in parts])
        whole = store.get_object_bytes("bkt", "mp")
        sealed = store.put_object("bkt", "enc", body("enc", 9000), encryption=Encryption("S3"))
        for key in ("mp", "enc"):
            store.move_version("bkt", key, tier="warm")
        assert store.get_object_bytes("bkt", "mp") == whole
        verify(store.get_object_bytes("bkt", "enc"))
        assert [p["tier"] for p in store.head_object("bkt", "mp").record["parts"]] == ["warm"] * 3
        assert store.head_object("bkt", "enc").record["sse"] == sealed.record["sse"]
        before = live_state(store)
    shutil.rmtree(tiered / "index")
    with Store.open(tiered) as store:
        rebuild_index(store)
        assert live_state(store) == before
        assert store.get_object_bytes("bkt", "mp") == whole
        assert [p["tier"] for p in store.head_object("bkt", "mp").record["parts"]] == ["warm"] * 3


def test_locked_versions_keep_their_lock_and_stay_immutable_after_a_move(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("worm", object_lock=True)
        until = store.clock.now() + DAY
        info = store.put_object(
            "worm", "study", body("s", 4000), retention={"mode": "COMPLIANCE", "until": until}, legal_hold=True
        )
        moved = store.move_version("worm", "study", info.version_id, tier="warm")
        assert moved.retention["mode"] == "COMPLIANCE" and moved.retention["until"] == until and moved.legal_hold
        new_files = _fragments(tiered, moved.record["parts"][0]["id"])
        assert len(new_files) == 5
        if store.immutable_supported(store.drives["warm"][0]):
            for path in {Path(f.split("#")[0]) for f in new_files}:  # its files, or the volumes holding its entries
                with pytest.raises(PermissionError):
                    path.unlink()
        from objfs.store import ObjectLocked

        with pytest.raises(ObjectLocked):
            store.delete_object("worm", "study", info.version_id)
        # The old (hot) fragments are retired: the collector removes them, the lock lives on in the new ones.
        assert store.collect_garbage(min_age=0).collected == 1
        assert _fragments(tiered, info.object_id) == []
        verify(store.get_object_bytes("worm", "study"))
        assert store.lock_state(store.head_object("worm", "study")) == "legal hold"


def test_rebuild_index_knows_each_objects_tier(tiered: Path, cli) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("bkt")
        store.update_bucket("bkt", versioning="Enabled")
        for i in range(4):
            store.put_object("bkt", f"k{i}", body(f"k{i}", 2000 + i))
        old = store.put_object("bkt", "k0", body("k0-new", 100))
        store.move_version("bkt", "k1", tier="warm")
        store.move_version("bkt", "k0", tier="warm")
        before = live_state(store)
        tiers = {r["key"] + "@" + r["version"]: store.tier_of(r) for db in ("objects", "versions") for r in _records(store, db)}
        assert tiers[f"k0@{old.version_id}"] == "warm" and tiers["k1@" + store.head_object("bkt", "k1").version_id] == "warm"
    for collect_first in (False, True):
        if collect_first:
            with Store.open(tiered) as store:
                assert store.collect_garbage(min_age=0).collected == 2
        shutil.rmtree(tiered / "index")
        json.loads(cli("rebuild-index", str(tiered)).stdout)
        with Store.open(tiered) as store:
            assert live_state(store) == before
            after = {
                r["key"] + "@" + r["version"]: store.tier_of(r) for db in ("objects", "versions") for r in _records(store, db)
            }
            assert after == tiers
            for i in range(4):
                verify(store.get_object_bytes("bkt", f"k{i}"))


def _records(store: Store, db: str) -> list[dict]:
    with store.index.read() as txn:
        return [r for _, r in txn.scan(db)]
