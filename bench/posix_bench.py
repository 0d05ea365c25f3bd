"""Directory renames: a study directory of N files renamed, in the engine and through the mount.

The engine moves a directory in one index transaction after writing one
rename record per drive (objfs/store/renames.py). Measured here:

* ``engine``: ``Store.rename_prefix`` of an N-file directory (N = 10,000;
  ``--quick`` 2,000), entries per second (best of three renames);
* ``mount``: ``os.rename`` of the same directory (back) through an objfs
  mount, and, as the peer, of an N-file directory on a plain directory.

Target: >= 20,000 entries/s for the engine and the mount. The engine's CPU
time is printed too: on a machine shared with other work the wall time
mostly measures the wait for a core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from objfs.store import Store, init_store

from .common import table

REPO = Path(__file__).resolve().parent.parent
TARGET = 20_000


def _fill(store: Store, count: int) -> None:
    store.create_bucket("pacs")
    store.put_object("pacs", "study/", b"", posix={"mode": 0o40755})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put_object("pacs", f"study/series{i % 10}/img{i:05d}.dcm", b"x" * 64), range(count)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench posix_bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--files", type=int)
    args = parser.parse_args(argv)
    count = args.files or (2_000 if args.quick else 10_000)
    with tempfile.TemporaryDirectory(prefix="objfs-posix-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        work = Path(tmp)
        init_store(work / "store").close()
        with Store.open(work / "store") as store:
            _fill(store, count)
            engine_s = engine_cpu = float("inf")
            for src, dst in (("study/", "renamed/"), ("renamed/", "study/"), ("study/", "renamed/")):
                start, cpu = time.perf_counter(), time.thread_time()
                moved = store.rename_prefix("pacs", src, dst)
                engine_s = min(engine_s, time.perf_counter() - start)
                engine_cpu = min(engine_cpu, time.thread_time() - cpu)
        mnt = work / "mnt"
        mnt.mkdir()
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "objfs.cli", "mount", str(work / "store"), str(mnt), "--foreground"], env=env
        )
        try:
            deadline = time.monotonic() + 30
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the objfs mount did not come up")
                time.sleep(0.05)
            mount_s = float("inf")
            for src, dst in (("renamed", "study"), ("study", "renamed"), ("renamed", "study")):
                start = time.perf_counter()
                os.rename(mnt / "pacs" / src, mnt / "pacs" / dst)
                mount_s = min(mount_s, time.perf_counter() - start)
            assert len(os.listdir(mnt / "pacs" / "study" / "series3")) == count // 10
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        plain = work / "plain" / "study"
        for i in range(10):
            (plain / f"series{i}").mkdir(parents=True)
        for i in range(count):
            (plain / f"series{i % 10}" / f"img{i:05d}.dcm").write_bytes(b"x" * 64)
        start = time.perf_counter()
        os.rename(plain, work / "plain" / "renamed")
        plain_s = time.perf_counter() - start
    rows = [
        ["engine rename_prefix", f"{engine_s * 1000:.0f} ms", f"{moved / engine_s:,.0f}"],
        ["engine, CPU time of the caller", f"{engine_cpu * 1000:.0f} ms", f"{moved / engine_cpu:,.0f}"],
        ["objfs mount rename", f"{mount_s * 1000:.0f} ms", f"{moved / mount_s:,.0f}"],
        ["plain dir rename", f"{plain_s * 1000:.2f} ms", f"{moved / plain_s:,.0f}"],
    ]
    print(table(f"directory rename of {moved} entries", ["what", "time", "entries/s"], rows))
    for what, seconds in (("engine", engine_s), ("mount", mount_s)):
        rate = moved / seconds
        print(f"target {what} >= {TARGET:,} entries/s: {rate:,.0f} {'MET' if rate >= TARGET else 'MISSED'}")


if __name__ == "__main__":
    main()
