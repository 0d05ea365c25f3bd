"""Scale: does the cost of ingest, reads, scrub and rebuild-index grow with the archive?

Fills a store through the engine (several threads) with small objects of
1–4 KiB under PACS-shaped keys, and at each size step (10^5 and 10^6;
``--quick``: 10^3 and 10^4) prints:

- the ingest rate of the step,
- HEAD and GET p50/p99 on random keys,
- the space the objects take on the drives, measured from the drive
  directories (``os.walk``, ``st_blocks`` * 512 of every file and
  directory): divided by their erasure-coded size (the bytes times
  (k+m)/k; target <= 2x for 4 KiB objects, ``--object-size 4096``), and the
  inodes (files and directories) per drive per 1000 objects (target <= 1),
- ``objfs scrub`` and ``objfs rebuild-index --force``, each run as its own
  process (as an operator runs them): objects per second and peak RSS
  (``ru_maxrss`` of that child, from ``wait4``), and the peak anonymous
  memory (``RssAnon``, sampled), which excludes the index pages LMDB maps
  from its file.

The target of issue "2 of 8": scrub and rebuild-index within 512 MiB at any
size, and rates that do not fall as the store grows.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import table

REPO = Path(__file__).resolve().parent.parent


def pacs_key(n: int) -> str:
    """``<patient>/<study uid>/<series uid>/<sop uid>.dcm``: 300-slice studies, 4 series each."""
    study, rest = divmod(n, 300)
    series, instance = divmod(rest, 75)
    root = "1.2.826.0.1.3680043.8.498"
    return f"PAT{study // 3:07d}/{root}.{study}/{root}.{study}.{series + 1}/{root}.{study}.{series + 1}.{instance + 1}.dcm"


SIZES = (1024, 2048, 3072, 4096)


def object_size(n: int, fixed: int | None) -> int:
    return fixed if fixed else SIZES[n % len(SIZES)]


def fill(store, start: int, stop: int, threads: int, fixed: int | None = None) -> float:
    """Put objects ``start``..``stop`` (1–4 KiB, or ``fixed`` bytes each); returns objects per second."""
    bodies = {size: os.urandom(size) for size in ({fixed} if fixed else SIZES)}

    def put(chunk: range) -> None:
        for n in chunk:
            body = bodies[object_size(n, fixed)]
            store.put_object("pacs", pacs_key(n), body, length=len(body), content_type="application/dicom")

    step = 500
    chunks = [range(i, min(i + step, stop)) for i in range(start, stop, step)]
    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, chunks))
    return (stop - start) / (time.perf_counter() - began)


def drive_footprint(drive_paths: list[Path]) -> tuple[int, float]:
    """(bytes allocated on the drives, mean inodes per drive), from the drive directories themselves.

    Every file and directory under each drive counts, with the blocks the
    filesystem allocated to it (``st_blocks`` * 512: holes punched in
    volumes are not counted, a 1-byte file costs its whole block).
    """
    allocated = 0
    inodes = 0
    for drive in drive_paths:
        for dirpath, dirs, files in os.walk(drive):
            for name in dirs + files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                allocated += st.st_blocks * 512
                inodes += 1
    return allocated, inodes / max(len(drive_paths), 1)


def footprint_row(store, count: int, fixed: int | None, empty: tuple[int, float]) -> list[object]:
    """Drive bytes / EC-expanded bytes and inodes per drive per 1000 objects (call with writes quiesced).

    ``empty`` is the footprint of the store before its first object (the
    drive layout: markers, the 256 fan-out directories); the inodes are
    shown in all and over that fixed part, which does not grow (bytes too).
    """
    tier = store.config.hot
    drives = [d.path for d in store.all_drives()]
    allocated, inodes = drive_footprint(drives)
    logical = sum(object_size(n, fixed) for n in range(count))
    expanded = logical * (tier.k + tier.m) / tier.k
    index = sum(p.stat().st_blocks * 512 for p in (store.root / "index").glob("*.mdb"))
    return [
        count,
        f"{fixed} B" if fixed else "1-4 KiB",
        f"{tier.k}+{tier.m}",
        f"{allocated / 2**20:.1f}",
        f"{allocated / expanded:.2f} ({(allocated - empty[0]) / expanded:.2f})",
        f"{inodes:.0f}",
        f"{inodes * 1000 / count:.2f} ({(inodes - empty[1]) * 1000 / count:.2f})",
        f"{index / count:.0f}",
    ]


def latencies(fn, keys: list[str]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    times = []
    for key in keys:
        began = time.perf_counter()
        fn(key)
        times.append((time.perf_counter() - began) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, float, float, int]:
    """Run a command; (seconds, peak RSS MiB, peak anonymous RSS MiB, exit code)."""
    began = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anon = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_anon
        while not done.wait(0.2):
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak_anon = max(peak_anon, int(line.split()[1]))
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr_lines: list[str] = []
    reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    reader.join(5)
    seconds = time.perf_counter() - began
    if proc.returncode not in (0,):
        sys.stderr.write("".join(stderr_lines[-20:]))
    return seconds, usage.ru_maxrss / 1024, peak_anon / 1024, proc.returncode


def maintenance(root: Path, repo: str) -> tuple[tuple[float, float, float, int], tuple[float, float, float, int]]:
    """``objfs scrub`` then ``objfs rebuild-index --force`` of ``root``, each measured as its own process."""
    env = dict(os.environ, PYTHONPATH=repo)
    cli = [sys.executable, "-m", "objfs.cli"]
    scrub = run_measured(cli + ["scrub", "--json", str(root)], env)
    rebuild = run_measured(cli + ["rebuild-index", "--force", str(root)], env)
    for old in root.glob("index.old-*"):
        shutil.rmtree(old)
    return scrub, rebuild


def measure_existing(root: Path, repo: str) -> None:
    from objfs.store import Store

    with Store.open(root) as store, store.index.read() as txn:
        count = txn.count("objects")
    (scrub_s, scrub_rss, scrub_anon, scrub_rc), (rebuild_s, rebuild_rss, rebuild_anon, rebuild_rc) = maintenance(root, repo)
    print(
        table(
            f"scale: maintenance of {root} with objfs from {repo}",
            ["objects", "scrub obj/s", "scrub s", "scrub RSS/anon MiB", "rebuild obj/s", "rebuild s", "rebuild RSS/anon MiB"],
            [
                [
                    count,
                    f"{count / scrub_s:.0f}{'' if scrub_rc == 0 else f' (rc {scrub_rc})'}",
                    scrub_s,
                    f"{scrub_rss:.0f}/{scrub_anon:.0f}",
                    f"{count / rebuild_s:.0f}{'' if rebuild_rc == 0 else f' (rc {rebuild_rc})'}",
                    rebuild_s,
                    f"{rebuild_rss:.0f}/{rebuild_anon:.0f}",
                ]
            ],
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.scale_bench")
    parser.add_argument("--quick", action="store_true", help="10^3 and 10^4 objects")
    parser.add_argument("--sizes", help="comma-separated object counts (default 100000,1000000)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--object-size", type=int, help="every object this many bytes (default: 1-4 KiB mixed)")
    parser.add_argument("--dir", help="where to make the store (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument("--repo", default=str(REPO), help="source tree whose objfs runs scrub and rebuild-index")
    parser.add_argument("--existing", help="only measure scrub and rebuild-index of this store (filled by --keep)")
    args = parser.parse_args(argv)
    if args.existing:
        measure_existing(Path(args.existing), args.repo)
        return
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([1000, 10000] if args.quick else [100000, 1000000])
    from objfs.stores import init_store

    workdir = Path(tempfile.mkdtemp(prefix="objfs-scale-", dir=args.dir))
    rows = []
    space = []
    try:
        root = workdir / "store"
        store = init_store(root)
        store.create_bucket("pacs")
        empty = drive_footprint([d.path for d in store.all_drives()])
        filled = 0
        for size in sizes:
            rate = fill(store, filled, size, args.threads, args.object_size)
            filled = size
            sample = [pacs_key(random.randrange(size)) for _ in range(1000)]
            head = latencies(lambda k, s=store: s.head_object("pacs", k), sample)
            get = latencies(lambda k, s=store: s.get_object_bytes("pacs", k), sample[:500])
            space.append(footprint_row(store, size, args.object_size, empty))
            store.close()
            print(
                table(
                    "scale: space on the drives (os.walk, st_blocks); targets: <= 2x the EC-expanded size for 4 KiB"
                    " objects, <= 1 inode per drive per 1000 objects",
                    [
                        "objects",
                        "sizes",
                        "EC",
                        "drive MiB",
                        "drive / EC-expanded (over empty store)",
                        "inodes/drive",
                        "inodes/drive/1000 obj (over empty store)",
                        "index B/obj",
                    ],
                    space,
                ),
                flush=True,
            )
            (scrub_s, scrub_rss, scrub_anon, scrub_rc), (rebuild_s, rebuild_rss, rebuild_anon, rebuild_rc) = maintenance(
                root, args.repo
            )
            rows.append(
                [
                    size,
                    rate,
                    f"{head[0]:.2f}/{head[1]:.2f}",
                    f"{get[0]:.2f}/{get[1]:.2f}",
                    f"{size / scrub_s:.0f}{'' if scrub_rc == 0 else f' (rc {scrub_rc})'}",
                    f"{scrub_rss:.0f}/{scrub_anon:.0f}",
                    f"{size / rebuild_s:.0f}{'' if rebuild_rc == 0 else f' (rc {rebuild_rc})'}",
                    f"{rebuild_rss:.0f}/{rebuild_anon:.0f}",
                ]
            )
            print(
                table(
                    f"scale: small objects (1-4 KiB), {args.threads} ingest threads; target: scrub and rebuild <= 512 MiB",
                    [
                        "objects",
                        "ingest obj/s",
                        "HEAD p50/p99 ms",
                        "GET p50/p99 ms",
                        "scrub obj/s",
                        "scrub RSS/anon MiB",
                        "rebuild obj/s",
                        "rebuild RSS/anon MiB",
                    ],
                    rows,
                ),
                flush=True,
            )
            from objfs.stores import open_store

            store = open_store(root)
        store.close()
    finally:
        if args.keep:
            print(f"store kept at {workdir / 'store'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
