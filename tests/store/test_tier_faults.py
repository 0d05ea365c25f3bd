"""SIGKILL during tier moves while other processes stream the same objects: nothing is lost, nothing read wrong."""

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

from objfs.store import Store
from objfs.store.rebuild import rebuild_index

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DAY = 86400


def _worker(mode: str, root: Path, seed: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, str(HERE / "moveworker.py"), mode, str(root), str(seed)], stdout=subprocess.PIPE, text=True, env=env
    )


def test_sigkill_during_moves_with_readers_loses_nothing(tmp_path: Path) -> None:
    root = tiered_store(tmp_path / "store")
    try:
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
        rng = random.Random(7)
        moved = 0
        for round_ in range(6):
            readers = [_worker("read", root, 100 + round_ * 2 + i) for i in range(2)]
            mover = _worker("move", root, round_)
            time.sleep(rng.uniform(0.5, 2.0))
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
                for key in [f"k{i}" for i in range(5)] + ["mp"]:
                    verify(store.get_object_bytes("pacs", key))
                verify(store.get_object_bytes("worm", "worm/held"))
                assert store.lock_state(store.head_object("worm", "worm/held")).startswith("COMPLIANCE")
        assert moved > 0
        with Store.open(root) as store:
            report = store.scrub()
            assert report.index_trusted and not report.lost
            store.collect_garbage(min_age=0)
            tiers = {k: store.tier_of(store.head_object("pacs", k).record) for k in ["k0", "mp"]}
        copy = tmp_path / "copy"
        shutil.copytree(root.parent, copy, symlinks=True)
        copied = copy / "store"
        text = (copied / "objfs.toml").read_text().replace(str(root.parent), str(copy))
        (copied / "objfs.toml").write_text(text)
        shutil.rmtree(copied / "index")
        with Store.open(copied) as store:
            rebuild_index(store)
            assert live_state(store) == before
            assert {k: store.tier_of(store.head_object("pacs", k).record) for k in ["k0", "mp"]} == tiers
            verify(store.get_object_bytes("pacs", "mp"))
    finally:
        unlock_tree(tmp_path)
