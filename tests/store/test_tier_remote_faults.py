"""SIGKILL of the mover while it moves versions between local tiers and a remote S3 tier, with readers streaming.

The remote is a second real objfs serving S3 on loopback. After every round
each acknowledged version reads back intact from wherever its record says,
no reader saw wrong or short bytes, a locked version keeps its lock (and
never reaches the bucket without object lock), and ``rebuild-index`` on a
copy of the local drives restores the same live state and tiers.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tierhelpers import MOVED_KEYS, REPO, copy_without_index, fill_for_moves, kill_movers, tiered_store, unlock_tree
from trusthelpers import live_state, verify

from objfs.store import Store, init_store
from objfs.store.rebuild import rebuild_index
from objfs.store.remotes import add_remote
from objfs.store.tiers import add_remote_tier

sys.path.insert(0, str(REPO / "tests" / "s3"))
from s3helpers import REGION, create_key, make_client, start_server  # noqa: E402


def test_sigkill_during_remote_tier_moves_with_readers_loses_nothing(tmp_path: Path) -> None:
    remote_root = tmp_path / "remote" / "store"
    init_store(remote_root).close()
    server = start_server(remote_root)
    root = tiered_store(tmp_path / "store")
    try:
        key = create_key(remote_root, "--name", "tiering", "--retention", "--legal-hold")
        client = make_client(server.url, key)
        client.create_bucket(Bucket="lock", ObjectLockEnabledForBucket=True)
        client.create_bucket(Bucket="plain")
        add_remote(root, "peer", endpoint=server.url, access_key=key.access_key, secret_key=key.secret_key, region=REGION)
        add_remote_tier(root, "archive", "peer", "lock")
        add_remote_tier(root, "cold", "peer", "plain")
        with Store.open(root) as store:
            before = fill_for_moves(store)

        def check() -> None:
            with Store.open(root) as store:
                assert live_state(store) == before
                for k in MOVED_KEYS:
                    verify(store.get_object_bytes("pacs", k))
                held = store.head_object("worm", "worm/held")
                verify(store.get_object_bytes("worm", "worm/held"))
                assert store.lock_state(held).startswith("COMPLIANCE") and store.tier_of(held.record) != "cold"

        moved = kill_movers(
            root, mode="cycle", rounds=5, seed=11, reader_seed=200, mover_seed=50, run_for=(1.0, 3.0), check=check
        )
        assert moved > 0
        with Store.open(root) as store:
            report = store.scrub()
            assert report.index_trusted and not report.lost
            store.collect_garbage(min_age=0)
            tiers = {k: store.tier_of(store.head_object("pacs", k).record) for k in MOVED_KEYS}
        copied = copy_without_index(root, tmp_path / "copy", ignore=shutil.ignore_patterns("remote"))
        with Store.open(copied) as store:
            rebuild_index(store)
            assert live_state(store) == before
            assert {k: store.tier_of(store.head_object("pacs", k).record) for k in MOVED_KEYS} == tiers
            for k in MOVED_KEYS:
                verify(store.get_object_bytes("pacs", k))
    finally:
        server.stop()
        unlock_tree(tmp_path)
