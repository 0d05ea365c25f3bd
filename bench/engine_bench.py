"""Engine PUT/GET against plain files on the same disk, measured in one run.

Baselines: the same bytes written as one plain file (write + fsync) and read
back; and, for PUT, the object's k+m fragments (its erasure-coded size) written
as plain files with fsync, in parallel, into the same drive directories: the
least any erasure-coded store must do (``frag PUT ratio``, target >= 0.5).
Both read phases start with the page cache dropped, so they read the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from objfs.store import Store, init_store
from objfs.store.codec import get_codec

from .common import drop_caches, fsync_file, mbps, run_parallel, table, timed

KIB = 1024
MIB = 1024 * KIB


def bench_case(workdir: Path, store: Store, size: int, count: int, threads: int, frag_pool: ThreadPoolExecutor) -> list[object]:
    data = os.urandom(size)
    raw_dir = workdir / f"raw-{size}-{threads}"
    raw_dir.mkdir()
    total = size * count
    tier = store.config.hot
    codec = get_codec(tier.k, tier.m, tier.backend)
    seg = store.config.segment_size
    # The fragment files of one object, as the engine's codec makes them (headers included).
    fragments: list[bytearray] = [bytearray() for _ in range(tier.k + tier.m)]
    for start in range(0, size, seg):
        for i, frag in enumerate(codec.encode(data[start : start + seg])):
            fragments[i] += frag
    frag_dirs = []
    for drive in store.drives[tier.name]:
        frag_dir = drive.path / f"bench-raw-{size}-{threads}"
        frag_dir.mkdir()
        frag_dirs.append(frag_dir)

    def raw_put(i: int) -> None:
        fsync_file(str(raw_dir / f"{i}.bin"), data)

    def frag_put(i: int) -> None:
        # In parallel, as the engine writes them: one file per drive directory.
        jobs = [(str(frag_dirs[j % len(frag_dirs)] / f"{i}.f{j}"), frag) for j, frag in enumerate(fragments)]
        list(frag_pool.map(lambda job: fsync_file(*job), jobs))

    def raw_get(i: int) -> None:
        with open(raw_dir / f"{i}.bin", "rb") as f:
            while f.read(MIB):
                pass

    prefix = f"{size}-{threads}"

    def put(i: int) -> None:
        store.put_object("bench", f"{prefix}/{i}", data, length=size)

    def get(i: int) -> None:
        with store.open_object("bench", f"{prefix}/{i}") as reader:
            for _ in reader.iter_range():
                pass

    raw_w = timed(lambda: run_parallel(raw_put, range(count), threads))
    frag_w = timed(lambda: run_parallel(frag_put, range(count), threads))
    eng_w = timed(lambda: run_parallel(put, range(count), threads))
    drop_caches()
    raw_r = timed(lambda: run_parallel(raw_get, range(count), threads))
    drop_caches()
    eng_r = timed(lambda: run_parallel(get, range(count), threads))
    label = f"{size // KIB} KiB x {count}" if size < MIB else f"{size // MIB} MiB x {count}"
    return [
        label,
        threads,
        mbps(total, raw_w),
        mbps(total, frag_w),
        mbps(total, eng_w),
        raw_w / eng_w,
        frag_w / eng_w,
        mbps(total, raw_r),
        mbps(total, eng_r),
        raw_r / eng_r,
    ]


MEMORY_SCRIPT = """
import sys
from objfs.cli import main

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024

main(["put", sys.argv[1], "bench/huge", sys.argv[2]])
put_peak = peak_mib()
main(["get", sys.argv[1], "bench/huge", sys.argv[3]])
print(put_peak, peak_mib())
"""


def bench_memory(workdir: Path, store_path: Path, size_mib: int) -> str:
    """Put and get one ``size_mib`` object through the CLI; the process's peak RSS (VmHWM)."""
    import subprocess
    import sys

    source = workdir / "huge.bin"
    block = os.urandom(MIB)
    with open(source, "wb") as f:
        for _ in range(size_mib):
            f.write(block)
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(store_path), str(source), str(workdir / "huge.back")],
        capture_output=True,
        check=True,
        text=True,
    )
    put_peak, total_peak = (int(x) for x in out.stdout.split()[-2:])
    same = os.path.getsize(source) == os.path.getsize(workdir / "huge.back")
    return f"{size_mib} MiB object through the CLI: peak RSS {put_peak} MiB after put, {total_peak} MiB after get (target < 200 MiB); sizes match: {same}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.engine_bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir under ./var)")
    args = parser.parse_args(argv)
    base = Path(args.dir or "var")
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-engine-", dir=base))
    try:
        store = init_store(workdir / "store")
        store.create_bucket("bench")
        cold = drop_caches()
        small_count = 40 if args.quick else 400
        big_count = 2 if args.quick else 6
        rows = []
        with ThreadPoolExecutor(64) as frag_pool:
            for threads in (1, 8):
                rows.append(bench_case(workdir, store, 512 * KIB, small_count, threads, frag_pool))
            for threads in (1, 8):
                rows.append(bench_case(workdir, store, 64 * MIB, big_count, threads, frag_pool))
        store.close()
        print(
            table(
                f"engine vs plain files (EC 4+2 on 6 directory drives, one disk; reads {'cold' if cold else 'WARM: cannot drop caches'})",
                [
                    "objects",
                    "thr",
                    "raw PUT MB/s",
                    "frag PUT MB/s",
                    "engine PUT MB/s",
                    "PUT ratio",
                    "frag PUT ratio",
                    "raw GET MB/s",
                    "engine GET MB/s",
                    "GET ratio",
                ],
                rows,
            )
        )
        print("targets: 512 KiB frag PUT ratio >= 0.5x, 512 KiB GET >= 0.7x, 64 MiB GET >= 0.7x")
        for row in rows[:2]:
            ratio = row[6]
            print(
                f"target 512 KiB PUT ({row[1]} threads) >= 0.5x k+m fragment files: {ratio:.2f}x {'MET' if ratio >= 0.5 else 'MISSED'}"
            )
        print(bench_memory(workdir, workdir / "store", 64 if args.quick else 2048))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
