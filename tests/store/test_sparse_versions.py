"""Sparse versions in the engine: the mover, scrub and the collector work on their blobs; holes stay free."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tierhelpers import tiered_store, unlock_tree

from objfs.store import InvalidArgument, Store

SIZE = 16 << 20


@pytest.fixture
def tiered(tmp_path: Path):
    root = tiered_store(tmp_path / "store")
    yield root
    unlock_tree(tmp_path)


def _sparse(store: Store, key: str) -> bytes:
    logical = bytearray(SIZE)
    logical[:5000] = b"h" * 5000
    logical[SIZE // 2 : SIZE // 2 + 70000] = bytes(range(256)) * 273 + b"x" * 112
    extents = [(0, 5000), (SIZE // 2, 70000)]
    stored = b"".join(bytes(logical[o : o + n]) for o, n in extents)
    info = store.put_object("bkt", key, stored, length=SIZE, extents=extents)
    assert info.etag == hashlib.md5(logical).hexdigest() and info.stored_size == 75000
    return bytes(logical)


def test_a_sparse_version_moves_scrubs_and_is_collected(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("bkt")
        logical = _sparse(store, "k")
        moved = store.move_version("bkt", "k", tier="warm")
        assert store.tier_of(moved.record) == "warm" and moved.record["extents"] == [[0, 5000], [SIZE // 2, 70000]]
        assert moved.record["parts"][0]["size"] == 75000
        assert store.get_object_bytes("bkt", "k") == logical
        assert store.scrub().lost == []
        store.delete_object("bkt", "k")
        assert store.collect_garbage(min_age=0).collected == 2  # the hot blob the move retired, and the warm one


def test_bad_extents_are_refused_and_full_extents_make_a_dense_version(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("bkt")
        with pytest.raises(InvalidArgument):
            store.put_object("bkt", "k", b"ab", length=10, extents=[(5, 1), (4, 1)])
        info = store.put_object("bkt", "k", b"abc", length=3, extents=[(0, 2), (2, 1)])
        assert "extents" not in info.record and store.get_object_bytes("bkt", "k") == b"abc"


def test_small_reads_of_a_sparse_version_give_its_logical_bytes(tiered: Path) -> None:
    with Store.open(tiered) as store:
        store.create_bucket("bkt")
        logical = _sparse(store, "k")
        with store.open_object("bkt", "k") as reader:
            for offset in (0, 4999, 5000, 100_000, SIZE // 2 - 1, SIZE // 2, SIZE // 2 + 69_999, SIZE // 2 + 70_000, SIZE - 1):
                start, data = reader.read_piece(offset)
                assert start <= offset < start + len(data) and data == logical[start : start + len(data)], offset
