"""The engine's side of replication on a real store: what is queued, in which transaction, and replica placement."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from objfs.store.errors import InvalidArgument, ObjectLocked
from objfs.store.remotes import add_remote
from objfs.store.replication import QUEUE_DB, ReplicationRefused
from objfs.stores import open_store


@pytest.fixture
def source(store_path: Path):
    add_remote(store_path, "peer", endpoint="http://127.0.0.1:9", access_key="AK", secret_key="SK")
    with open_store(store_path) as store:
        store.create_bucket("images", object_lock=True)
        store.put_replication(
            "images", {"rules": [{"id": "r", "remote": "peer", "bucket": "copy", "prefix": "ct/", "delete_markers": True}]}
        )
        yield store


def _ops(store) -> list[tuple[str, str, str]]:
    return [(e["op"], e["key"], e["version"]) for _, e in store.replication_due(limit=1000, now=float("inf"))]


def test_rules_need_versioning_and_a_known_remote(store_path: Path) -> None:
    add_remote(store_path, "peer", endpoint="http://127.0.0.1:9", access_key="AK", secret_key="SK")
    with open_store(store_path) as store:
        store.create_bucket("plain")
        rule = {"rules": [{"remote": "peer", "bucket": "x"}]}
        with pytest.raises(ReplicationRefused):
            store.put_replication("plain", rule)
        store.update_bucket("plain", versioning="Enabled")
        with pytest.raises(ReplicationRefused):
            store.put_replication("plain", {"rules": [{"remote": "nobody", "bucket": "x"}]})
        store.put_replication("plain", rule)
        assert store.remotes_in_use() == {"peer": ["plain"]}


def test_changes_are_queued_in_order_and_version_deletions_are_not(source) -> None:
    store = source
    v1 = store.put_object("images", "ct/1", b"one").version_id
    store.put_object("images", "mr/1", b"outside the prefix")
    store.update_object("images", "ct/1", tags={"a": "1"})
    store.set_legal_hold("images", "ct/1", True)
    store.set_legal_hold("images", "ct/1", False)
    marker = store.delete_object("images", "ct/1")["version_id"]
    store.delete_object("images", "ct/1", version_id=marker)  # by id: not replicated
    assert _ops(store)[:1] == [("put", "ct/1", v1)]  # one entry per key at a time
    with store.index.read() as txn:
        entries = [(e["op"], e["version"]) for _, e in txn.scan(QUEUE_DB)]
    assert entries == [("put", v1), ("update", v1), ("update", v1), ("update", v1), ("marker", marker)]
    info = store.head_object("images", "ct/1")
    assert store.replication_status(info.record) == "PENDING"
    backlog = store.replication_backlog()
    assert backlog["backlog_objects"] == 5 and backlog["backlog_bytes"] == 3


def test_replicas_converge_whatever_order_they_arrive_in(store_path: Path) -> None:
    versions = [
        {"version": "a1", "created": 100.0, "seq": 1_000_000_000},
        {"version": "b1", "created": 101.0, "seq": 2_000_000_000},
        {"version": "b0", "created": 101.0, "seq": 3_000_000_000},  # a tie in time: the larger version id wins
        {"version": "m1", "created": 99.0, "seq": 4_000_000_000, "delete_marker": True},
    ]
    with open_store(store_path) as store:
        for n, order in enumerate(itertools.permutations(versions)):
            bucket = f"order{n}"
            store.create_bucket(bucket)
            store.update_bucket(bucket, versioning="Enabled")
            for desc in order:
                body = b"" if desc.get("delete_marker") else desc["version"].encode()
                _, fresh = store.put_replica(bucket, "k", body, desc)
                assert fresh
            assert store.head_object(bucket, "k").version_id == "b1"
            info, fresh = store.put_replica(bucket, "k", b"b1", versions[1])  # a second send: a no-op
            assert not fresh and store.replication_status(info.record) == "REPLICA"
            listed = {v.version_id for v in store.list_object_versions(bucket).versions}
            assert {"a1", "b1", "b0"} <= listed
            assert store.replication_due(now=float("inf")) == []  # a replica is never queued again


def test_a_replica_keeps_its_lock(source) -> None:
    store = source
    until = store.clock.now() + 3600
    desc = {"version": "v1", "created": 1.0, "retention": {"mode": "COMPLIANCE", "until": until}, "legal_hold": True}
    store.put_replica("images", "ct/x", b"evidence", desc)
    with pytest.raises(ObjectLocked):
        store.delete_object("images", "ct/x", version_id="v1")
    with pytest.raises(ObjectLocked):
        store.update_replica("images", "ct/x", {"version": "v1", "retention": None})
    store.create_bucket("nolock")
    store.update_bucket("nolock", versioning="Enabled")
    with pytest.raises(InvalidArgument):
        store.put_replica("nolock", "k", b"x", desc)
