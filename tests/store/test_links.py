"""Hard links in the engine: each name is a key, the bytes stay until the last name is gone (and rebuild agrees)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fragmenthelpers import blob_fragments
from trusthelpers import body, live_state, verify

from objfs.store import KeyExists, ObjectLocked, Store


def _fragments(store_path: Path) -> int:
    return len(blob_fragments(store_path / "drives"))


def test_a_link_shares_the_bytes_until_the_last_name_is_deleted(store_path: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        info = store.put_object("pacs", "a", body("a", 5000))
        link = store.link_object("pacs", "a", "b")
        assert link.object_id != info.object_id and link.etag == info.etag
        assert sorted(o.key for o in store.list_objects("pacs").objects) == ["a", "b"]
        assert store.link_count(store.head_object("pacs", "a")) == store.link_count(link) == 2
        with pytest.raises(KeyExists):
            store.link_object("pacs", "a", "b")
        store.link_object("pacs", "b", "c")
        assert store.link_count(link) == 3
        fragments = _fragments(store_path)
        store.delete_object("pacs", "a")
        store.put_object("pacs", "c", body("c-new", 100))  # overwritten: c lets go of the shared bytes
        store.collect_garbage(min_age=0)
        verify(store.get_object_bytes("pacs", "b"))
        assert store.link_count(store.head_object("pacs", "b")) == 1
        assert _fragments(store_path) == fragments + 6  # the shared blob stayed; c's new one came
        store.delete_object("pacs", "b")
        assert store.collect_garbage(min_age=0).collected == 1
        assert _fragments(store_path) == fragments


def test_rebuild_index_keeps_linked_bytes_and_recounts_links(store_path: Path, cli) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        store.put_object("pacs", "dir/a", body("a", 3000))
        store.link_object("pacs", "dir/a", "dir/b")
        store.link_object("pacs", "dir/a", "other")
        store.delete_object("pacs", "dir/a")  # a tombstone naming the shared blob
        store.rename_prefix("pacs", "dir/", "moved/")
        before = live_state(store)
    shutil.rmtree(store_path / "index")
    counts = json.loads(cli("rebuild-index", str(store_path)).stdout)
    assert counts["garbage"] == 0
    with Store.open(store_path) as store:
        assert live_state(store) == before
        store.collect_garbage(min_age=0)
        verify(store.get_object_bytes("pacs", "moved/b"))
        assert store.link_count(store.head_object("pacs", "other")) == 2
        store.delete_object("pacs", "other")
        assert store.link_count(store.head_object("pacs", "moved/b")) == 1


def test_worm_applies_to_the_bytes_whichever_name_is_used(store: Store) -> None:
    store.create_bucket("locked", object_lock=True)
    store.put_object("locked", "a", body("a", 100), retention={"mode": "COMPLIANCE", "until": store.clock.now() + 3600})
    link = store.link_object("locked", "a", "b")
    assert link.retention and link.retention["mode"] == "COMPLIANCE"
    with pytest.raises(ObjectLocked):
        store.delete_object("locked", "b", link.version_id)
