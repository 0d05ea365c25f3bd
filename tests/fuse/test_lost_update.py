"""Finding 11 of issue 9: the mount's commit must not undo a metadata change another front made meanwhile."""

from __future__ import annotations

import threading
import time

from objfs.store import Store


def test_commits_on_the_mount_never_revert_a_concurrent_metadata_change(mount) -> None:
    f = mount.path / "pacs" / "report.txt"
    f.write_bytes(b"v0")
    acknowledged = [0]
    stop = threading.Event()

    def s3_side() -> None:  # another front changing the object's metadata many times a second
        with Store.open(mount.store) as store:
            n = 0
            while not stop.is_set():
                time.sleep(0.01)
                n += 1
                try:
                    store.update_object("pacs", "report.txt", metadata={"counter": str(n)})
                except Exception:  # noqa: BLE001 - raced with a commit: that change was not acknowledged
                    continue
                acknowledged[0] = n

    thread = threading.Thread(target=s3_side)
    thread.start()
    rewrites = 0
    deadline = time.monotonic() + 60
    try:
        # At least 60 rewrites, and on until some metadata changes were acknowledged between them
        # (on a loaded machine the other side may not get one in during the first 60).
        while rewrites < 60 or (acknowledged[0] < 3 and time.monotonic() < deadline):
            with open(f, "wb") as out:  # rewrite and close: one commit each
                out.write(f"v{rewrites}".encode() * 100)
            rewrites += 1
    finally:
        stop.set()
        thread.join()
    with Store.open(mount.store) as store:
        info = store.head_object("pacs", "report.txt")
    assert acknowledged[0] > 0
    # The last acknowledged metadata change survives every later commit of the mount.
    assert int(info.metadata.get("counter", "0")) == acknowledged[0]
    assert f.read_bytes() == f"v{rewrites - 1}".encode() * 100
