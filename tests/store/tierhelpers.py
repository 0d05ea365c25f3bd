"""Helpers of the tiering tests: a store with a hot and a warm tier of directory drives, lifecycle days of a second."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trusthelpers import body, live_state

from objfs.store import Store, init_store
from objfs.store.tiers import add_tier

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DAY = 86400
#: The keys of bucket ``pacs`` that :func:`fill_for_moves` writes.
MOVED_KEYS = [f"k{i}" for i in range(5)] + ["mp"]


def tiered_store(root: Path, *, day_seconds: int = 1, default_rules: bool = False) -> Path:
    """A closed store at ``root``: hot 4+2 and warm 3+2 (other directories), ``[lifecycle] day_seconds``.

    Without ``default_rules`` the store-wide seed policy is off, so only bucket rules act.
    """
    init_store(root).close()
    add_tier(root, "warm", [str(root.parent / f"warm{i}") for i in range(5)], "3+2")
    transitions = "" if default_rules else "default_transitions = []\n"
    with open(root / "objfs.toml", "a") as f:
        f.write(f"\n[lifecycle]\nday_seconds = {day_seconds}\ninterval_seconds = 1\n{transitions}")
    return root


def unlock_tree(*paths: Path) -> None:
    for path in paths:
        subprocess.run(["chattr", "-R", "-f", "-i", str(path)], check=False, capture_output=True)


def fill_for_moves(store: Store) -> dict[str, Any]:
    """Plain objects of three sizes, a multipart one and a COMPLIANCE-locked one; returns the live state."""
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
    return live_state(store)


def _worker(mode: str, root: Path, seed: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, str(HERE / "moveworker.py"), mode, str(root), str(seed)], stdout=subprocess.PIPE, text=True, env=env
    )


def kill_movers(
    root: Path,
    *,
    mode: str,
    rounds: int,
    seed: int,
    reader_seed: int,
    mover_seed: int,
    run_for: tuple[float, float],
    check: Callable[[], None],
) -> int:
    """Rounds of a mover (``moveworker.py mode``) SIGKILLed at a random point while two readers stream.

    After each round no reader saw bad bytes and ``check()`` holds; returns how many moves were done.
    """
    rng = random.Random(seed)
    moved = 0
    for round_ in range(rounds):
        readers = [_worker("read", root, reader_seed + round_ * 2 + i) for i in range(2)]
        mover = _worker(mode, root, mover_seed + round_)
        time.sleep(rng.uniform(*run_for))
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
        check()
    return moved


def copy_without_index(root: Path, copy: Path, *, ignore: Callable[..., Any] | None = None) -> Path:
    """A copy of the store and its drives (everything beside ``root``) with no index; returns its root."""
    shutil.copytree(root.parent, copy, symlinks=True, ignore=ignore)
    copied = copy / root.name
    text = (copied / "objfs.toml").read_text().replace(str(root.parent), str(copy))
    (copied / "objfs.toml").write_text(text)
    shutil.rmtree(copied / "index")
    return copied
