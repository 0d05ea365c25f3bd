"""A worker process of the fault-injection tests: ``python faultworker.py MODE STORE SEED``.

MODE ``mutate`` overwrites, deletes and multipart-completes keys and prints
``BEGIN``/``ACK`` lines around every operation (an ACK means the engine
returned: the change is durable). ``maintain`` runs scrub and the garbage
collector (no minimum age) in a loop. ``read`` streams random keys slowly
and checks every byte; it prints ``BAD <why>`` for a wrong, short or failed
read of a version it opened, ``OK`` otherwise.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trusthelpers import body, verify  # noqa: E402

from objfs.store import Principal, Store  # noqa: E402
from objfs.store.errors import NoSuchKey, NoSuchVersion, ObjectLocked  # noqa: E402

KEYS = [f"k{i}" for i in range(6)]
LOCKED = [f"held{i}" for i in range(3)]
WHO = Principal("fault-test")


def say(*words: object) -> None:
    print(*words, flush=True)


def mutate(store: Store, rng: random.Random, seed: int) -> None:
    store.min_part_size = 1
    n = 0
    while True:
        n += 1
        key = rng.choice(KEYS)
        tag = f"{seed}-{n}"
        op = rng.choices(["put", "delete", "multipart", "version", "marker", "drop", "locked"], [5, 2, 2, 3, 1, 1, 1])[0]
        if op == "put":
            say("BEGIN put pacs", key, tag)
            store.put_object("pacs", key, body(tag, rng.choice([100, 70_000, (1 << 20) + 5])), principal=WHO)
            say("ACK put pacs", key, tag)
        elif op == "delete":
            say("BEGIN delete pacs", key, "-")
            try:
                store.delete_object("pacs", key, principal=WHO)
            except NoSuchKey:
                pass
            say("ACK delete pacs", key, "-")
        elif op == "multipart":
            data = body(tag, 3 * 70_000 + 11)
            upload = store.create_multipart("pacs", key)
            etags = [store.upload_part(upload, i + 1, data[i * 70_000 : (i + 1) * 70_000])["etag"] for i in range(4)]
            say("BEGIN put pacs", key, tag)
            store.complete_multipart(upload, list(zip(range(1, 5), etags)), principal=WHO)
            say("ACK put pacs", key, tag)
        elif op == "version":
            say("BEGIN version ver", key, tag)
            info = store.put_object("ver", key, body(tag, rng.choice([100, 90_000])), principal=WHO)
            say("ACK version ver", key, tag, info.version_id)
        elif op == "marker":
            say("BEGIN marker ver", key, "-")
            store.delete_object("ver", key, principal=WHO)
            say("ACK marker ver", key, "-")
        elif op == "drop":
            versions = [v for v in store.list_object_versions("ver", prefix=key).versions if v.key == key and not v.delete_marker]
            if versions:
                victim = rng.choice(versions).version_id
                say("BEGIN drop ver", key, victim)
                try:
                    store.delete_object("ver", key, victim, principal=WHO)
                except NoSuchVersion:
                    pass
                say("ACK drop ver", key, victim)
        else:
            held = rng.choice(LOCKED)
            version = store.head_object("locked", held).version_id
            try:  # a locked study refuses deletion of its version, every time
                store.delete_object("locked", held, version, principal=WHO)
                say("BAD a locked version was deleted")
            except ObjectLocked:
                pass


def maintain(store: Store, rng: random.Random) -> None:
    while True:
        if rng.random() < 0.3:
            report = store.scrub()
            if report.lost:
                say("BAD scrub lost", report.lost)
        store.collect_garbage(min_age=0)
        store.process_heal_queue()


def read(store: Store, rng: random.Random) -> None:
    while True:
        bucket = rng.choice(["pacs", "ver", "locked"])
        key = rng.choice(LOCKED if bucket == "locked" else KEYS)
        try:
            reader = store.open_object(bucket, key)
        except (NoSuchKey, NoSuchVersion):
            continue
        try:
            chunks = []
            for chunk in reader.iter_range():
                chunks.append(chunk)
                time.sleep(rng.random() * 0.02)  # slow: writers and the collector run meanwhile
            try:
                verify(b"".join(chunks))
            except AssertionError as exc:
                say("BAD", bucket, key, exc)
                continue
            say("OK", bucket, key)
        except Exception as exc:  # noqa: BLE001 - any failure of an opened version is a finding
            say("BAD", bucket, key, type(exc).__name__, exc)
        finally:
            reader.close()


def main() -> None:
    mode, root, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = Store.open(root)
    rng = random.Random(seed)
    if mode == "mutate":
        mutate(store, rng, seed)
    elif mode == "maintain":
        maintain(store, rng)
    else:
        read(store, rng)


if __name__ == "__main__":
    main()
