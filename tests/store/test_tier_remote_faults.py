"""SIGKILL of the mover while it moves versions between local tiers and a remote S3 tier, with readers streaming.

The remote is a second real objfs serving S3 on loopback. After every round
each acknowledged version reads back intact from wherever its record says,
no reader saw wrong or short bytes, a locked version keeps its lock (and
never reaches the bucket without object lock), and ``rebuild-index`` on a
copy of the local drives restores the same live state and tiers.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tierhelpers import tiered_store, unlock_tree
from trusthelpers import body, live_state, verify

from objfs.store import Store, init_store
from objfs.store.rebuild import rebuild_index
from objfs.store.remotes import add_remote
from objfs.store.tiers import add_remote_tier

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "s3"))
from s3helpers import REGION, create_key, make_client, start_server  # noqa: E402

DAY = 86400
KEYS = [f"k{i}" for i in range(5)] + ["mp"]


def _worker(mode: str, root: Path, seed: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, str(HERE / "moveworker.py"), mode, str(root), str(seed)], stdout=subprocess.PIPE, text=True, env=env
    )


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
            store.create_bucket("pacs")
            store.create_bucket("worm", object_lock=True)
            for i in range(5):
                store.put_object("pacs", f"k{i}", body(f"k{i}", random.Random(i).choice([100, 70_000, (1 << 20) + 5])))
            store.min_part_size = 1
            data = body("mp", 3 * 70_000 + 11)
            upload = store.create_multipart("pacs", "mp")
            etags = [store.upload_part(upload, n + 1, data[n * 70_000 : (n + 1) * 70_000])["etag"] for n in range(4)]
            store.complete_multipart(upload, list(zip(range(1, 5), etags)))
            store.put_object(
                "worm", "worm/held", body("held", 90_000), retention={"mode": "COMPLIANCE", "until": store.clock.now() + DAY}
            )
            before = live_state(store)
        rng = random.Random(11)
        moved = 0
        for round_ in range(5):
            readers = [_worker("read", root, 200 + round_ * 2 + i) for i in range(2)]
            mover = _worker("cycle", root, 50 + round_)
            time.sleep(rng.uniform(1.0, 3.0))
            mover.send_signal(signal.SIGKILL)
            mover.wait()
            time.sleep(0.3)
            for reader in readers:
                reader.send_signal(signal.SIGKILL)
                reader.wait()
            moved += mover.stdout.read().count("MOVED")
            for reader in readers:
                out = reader.stdout.read()
                assert "BAD" not in out, out
            with Store.open(root) as store:
                assert live_state(store) == before
                for k in KEYS:
                    verify(store.get_object_bytes("pacs", k))
                held = store.head_object("worm", "worm/held")
                verify(store.get_object_bytes("worm", "worm/held"))
                assert store.lock_state(held).startswith("COMPLIANCE") and store.tier_of(held.record) != "cold"
        assert moved > 0
        with Store.open(root) as store:
            report = store.scrub()
            assert report.index_trusted and not report.lost
            store.collect_garbage(min_age=0)
            tiers = {k: store.tier_of(store.head_object("pacs", k).record) for k in KEYS}
        copy = tmp_path / "copy"
        shutil.copytree(root.parent, copy, symlinks=True, ignore=shutil.ignore_patterns("remote"))
        copied = copy / "store"
        text = (copied / "objfs.toml").read_text().replace(str(root.parent), str(copy))
        (copied / "objfs.toml").write_text(text)
        shutil.rmtree(copied / "index")
        with Store.open(copied) as store:
            rebuild_index(store)
            assert live_state(store) == before
            assert {k: store.tier_of(store.head_object("pacs", k).record) for k in KEYS} == tiers
            for k in KEYS:
                verify(store.get_object_bytes("pacs", k))
    finally:
        server.stop()
        unlock_tree(tmp_path)
