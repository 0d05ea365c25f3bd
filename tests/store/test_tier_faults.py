"""SIGKILL during tier moves while other processes stream the same objects: nothing is lost, nothing read wrong."""

from __future__ import annotations

from pathlib import Path

from tierhelpers import MOVED_KEYS, copy_without_index, fill_for_moves, kill_movers, tiered_store, unlock_tree
from trusthelpers import live_state, verify

from objfs.store import Store
from objfs.store.rebuild import rebuild_index


def test_sigkill_during_moves_with_readers_loses_nothing(tmp_path: Path) -> None:
    root = tiered_store(tmp_path / "store")
    try:
        with Store.open(root) as store:
            before = fill_for_moves(store)

        def check() -> None:
            with Store.open(root) as store:
                assert live_state(store) == before
                for key in MOVED_KEYS:
                    verify(store.get_object_bytes("pacs", key))
                verify(store.get_object_bytes("worm", "worm/held"))
                assert store.lock_state(store.head_object("worm", "worm/held")).startswith("COMPLIANCE")

        moved = kill_movers(root, mode="move", rounds=6, seed=7, reader_seed=100, mover_seed=0, run_for=(0.5, 2.0), check=check)
        assert moved > 0
        with Store.open(root) as store:
            report = store.scrub()
            assert report.index_trusted and not report.lost
            store.collect_garbage(min_age=0)
            tiers = {k: store.tier_of(store.head_object("pacs", k).record) for k in ["k0", "mp"]}
        copied = copy_without_index(root, tmp_path / "copy")
        with Store.open(copied) as store:
            rebuild_index(store)
            assert live_state(store) == before
            assert {k: store.tier_of(store.head_object("pacs", k).record) for k in ["k0", "mp"]} == tiers
            verify(store.get_object_bytes("pacs", "mp"))
    finally:
        unlock_tree(tmp_path)
