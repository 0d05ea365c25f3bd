"""A worker of the tier-move fault test: ``python moveworker.py MODE STORE SEED``.

MODE ``move`` moves random keys between the hot and warm tiers (and runs
the collector with no minimum age) forever, printing ``MOVED`` after each
durable move; MODE ``cycle`` moves them to any other tier, remote ones too. MODE ``read`` streams random keys slowly and checks every
byte; it prints ``BAD <why>`` for a wrong, short or failed read, ``OK`` otherwise.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trusthelpers import verify  # noqa: E402

from objfs.store import Store  # noqa: E402
from objfs.store.errors import PreconditionFailed  # noqa: E402

KEYS = [f"k{i}" for i in range(5)] + ["worm/held", "mp"]


def move(store: Store, rng: random.Random) -> None:
    while True:
        key = rng.choice(KEYS)
        bucket = "worm" if key.startswith("worm/") else "pacs"
        tier = "warm" if store.tier_of(store.head_object(bucket, key).record) == "hot" else "hot"
        try:
            store.move_version(bucket, key, tier=tier)
            print("MOVED", key, tier, flush=True)
        except PreconditionFailed:
            pass
        if rng.random() < 0.3:
            store.collect_garbage(min_age=0)


def cycle(store: Store, rng: random.Random) -> None:
    """Like ``move``, to any other tier of the store (local or remote S3); a locked version refused by a tier stays."""
    from objfs.store.remotetier import RemoteLockUnsupported

    while True:
        key = rng.choice(KEYS)
        bucket = "worm" if key.startswith("worm/") else "pacs"
        here = store.tier_of(store.head_object(bucket, key).record)
        tier = rng.choice([t.name for t in store.config.tiers if t.name != here])
        try:
            store.move_version(bucket, key, tier=tier)
            print("MOVED", key, tier, flush=True)
        except (PreconditionFailed, RemoteLockUnsupported):
            pass
        if rng.random() < 0.3:
            store.collect_garbage(min_age=0)


def read(store: Store, rng: random.Random) -> None:
    while True:
        key = rng.choice(KEYS)
        bucket = "worm" if key.startswith("worm/") else "pacs"
        try:
            with store.open_object(bucket, key) as reader:
                chunks = []
                for chunk in reader.iter_range():
                    chunks.append(chunk)
                    time.sleep(0.01)
            verify(b"".join(chunks))
            print("OK", key, flush=True)
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
            print("BAD", key, repr(exc), flush=True)


if __name__ == "__main__":
    mode, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with Store.open(path) as opened:
        opened.config.segment_size  # noqa: B018
        {"move": move, "cycle": cycle, "read": read}[mode](opened, random.Random(seed))
