"""Helpers shared by the benchmarks: timing, page-cache dropping, tables."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor


def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache so reads come from the disk (root only)."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_parallel(fn: Callable[[int], object], items: Iterable[int], threads: int) -> None:
    if threads == 1:
        for i in items:
            fn(i)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, items))


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def table(title: str, header: list[str], rows: list[list[object]]) -> str:
    cells = [header] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells[1:]]
    return "\n".join(lines)


def fsync_file(path: str, data: bytes) -> None:
    """The baseline write: a plain file, written and fsynced, then its directory fsynced."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_debian_package(package: str, binary: str) -> bool:
    """Install ``package`` with apt-get if ``binary`` is missing (root only); True if it is there.

    A peer the benchmark compares against is installed on demand rather than by
    ``make install``; when that fails the caller skips the peer, loudly.
    """
    if shutil.which(binary):
        return True
    if os.geteuid() != 0:
        print(f"!! {package} is not installed and we are not root: run `apt-get install {package}`", flush=True)
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or not shutil.which(binary):
        print(f"!! apt-get install {package} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}", flush=True)
        return False
    return True


def ratio(ours: float | None, theirs: float | None) -> str:
    """``ours/theirs`` as ``1.23x`` (blank when either is missing)."""
    if not ours or not theirs:
        return ""
    return f"{ours / theirs:.2f}x"


def index_synthetic(store: object, txn: object, record: dict, seq: int) -> None:
    """Put a bodiless version ``record`` in the index as current and let the store's indexers see it (index benches)."""
    from objfs.store.index import object_key

    txn.put("objects", object_key(record["bucket"], record["key"]), dict(record, parts=[], seq=seq, etag="", created=0.0))
    for indexer in store.indexers:
        indexer.on_change(txn, None, record)
