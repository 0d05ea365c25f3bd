"""The FUSE mount against a plain directory and a passthrough FUSE filesystem, in one run.

Three targets on the same disk: a plain directory, ``bench/passthrough.py``
(pyfuse3 on trio over a directory: what FUSE itself costs), and an objfs
mount (EC 4+2 on six directory drives). For each:

* sequential write of one large file (1 GiB), then fsync and close;
* sequential read of it, page cache dropped first;
* 4 KiB random reads of it (IOPS), the file's own cached pages dropped
  first (what lies below each mount stays cached: this measures the
  mount, not the disk);
* a CT study of 300 files of 512 KiB, each opened, written and closed
  (a PACS acknowledges an image only once it is durable: objfs and the
  passthrough make a file durable on close, the plain directory gets an
  explicit fsync), then ``ls -l``, then read back with the cache dropped.

Both FUSE filesystems write durably (the passthrough fsyncs each written
file on close), so the ratios compare like with like. Targets: study write
>= 0.5x the passthrough, 4 KiB random read >= 0.5x, sequential (large)
write >= 0.6x, large-file read >= 0.7x. ``--quick`` uses 128 MiB and 100 files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from objfs.store import init_store

from .common import drop_caches, mbps, table

MIB = 1 << 20
REPO = Path(__file__).resolve().parent.parent


def _wait_mounted(path: Path, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.ismount(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not mount at {path}")
        time.sleep(0.05)


def _unmount(path: Path, proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-uz", str(path)], check=False)


def write_large(path: Path, size: int, chunk: bytes) -> float:
    start = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        os.fsync(f.fileno())
    return time.perf_counter() - start


def read_all(paths: list[Path]) -> float:
    drop_caches()
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(MIB):
                pass
    return time.perf_counter() - start


def random_reads(path: Path, count: int, size: int = 4096) -> float:
    """``count`` reads of ``size`` bytes at random aligned offsets; reads per second."""
    rng = random.Random(1)
    blocks = os.path.getsize(path) // size
    offsets = [rng.randrange(blocks) * size for _ in range(count)]
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # this file's cached pages, not the layers below
        start = time.perf_counter()
        for offset in offsets:
            if len(os.pread(fd, size, offset)) != size:
                raise RuntimeError(f"short read of {path} at {offset}")
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)


def write_study(study: Path, count: int, size: int, *, fsync: bool) -> float:
    """Open, write, close each file; ``fsync`` where close alone is not durable (the plain directory)."""
    study.mkdir(parents=True)
    images = [os.urandom(size) for _ in range(8)]
    start = time.perf_counter()
    for i in range(count):
        with open(study / f"IM{i:05d}.dcm", "wb", buffering=0) as f:
            f.write(images[i % len(images)])
            if fsync:
                os.fsync(f.fileno())
    return time.perf_counter() - start


def ls_l(study: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["ls", "-l", str(study)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(root: Path, large: int, count: int, size: int, *, durable_close: bool) -> dict[str, float]:
    chunk = os.urandom(MIB)
    big = root / "large.bin"
    out = {"large write": mbps(large, write_large(big, large, chunk))}
    out["large read"] = mbps(large, read_all([big]))
    out["4k rand read IOPS"] = random_reads(big, 2000)
    study = root / "study" / "ST1"
    out["study write"] = mbps(count * size, write_study(study, count, size, fsync=not durable_close))
    out["ls -l (s)"] = ls_l(study)
    out["study read"] = mbps(count * size, read_all(sorted(study.iterdir())))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fuse_bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one under /var/tmp)")
    args = parser.parse_args(argv)
    large, count, size = (128 * MIB, 100, 512 * 1024) if args.quick else (1024 * MIB, 300, 512 * 1024)
    work = Path(tempfile.mkdtemp(prefix="objfs-fuse-bench-", dir=args.dir or "/var/tmp"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs: list[tuple[Path, subprocess.Popen]] = []
    try:
        plain = work / "plain"
        plain.mkdir()
        (work / "pt-src").mkdir()
        (work / "pt").mkdir()
        pt = subprocess.Popen([sys.executable, "-m", "bench.passthrough", str(work / "pt-src"), str(work / "pt")], env=env)
        procs.append((work / "pt", pt))
        _wait_mounted(work / "pt", pt, "the passthrough")
        init_store(work / "store").close()
        (work / "objfs").mkdir()
        objfs = subprocess.Popen(
            [sys.executable, "-m", "objfs.cli", "mount", str(work / "store"), str(work / "objfs"), "--foreground"], env=env
        )
        procs.append((work / "objfs", objfs))
        _wait_mounted(work / "objfs", objfs, "objfs")
        (work / "objfs" / "bench").mkdir()
        results = {
            "plain dir": measure(plain, large, count, size, durable_close=False),
            "passthrough": measure(work / "pt", large, count, size, durable_close=True),
            "objfs": measure(work / "objfs" / "bench", large, count, size, durable_close=True),
        }
    finally:
        for path, proc in procs:
            _unmount(path, proc)
        shutil.rmtree(work, ignore_errors=True)
    metrics = list(results["plain dir"])
    rows = []
    for metric in metrics:
        plain_v, pt_v, obj_v = (results[t][metric] for t in ("plain dir", "passthrough", "objfs"))
        if metric.endswith("(s)"):
            rows.append([metric, plain_v, pt_v, obj_v, pt_v / obj_v, plain_v / obj_v])
        else:
            rows.append([metric, plain_v, pt_v, obj_v, obj_v / pt_v, obj_v / plain_v])
    title = (
        f"FUSE: {large // MIB} MiB file, study of {count} x {size // 1024} KiB "
        "(MB/s; IOPS; ls -l in seconds; ratios: objfs vs target, higher is better)"
    )
    print(table(title, ["metric", "plain dir", "passthrough", "objfs", "x passthrough", "x plain"], rows))
    for metric, target in (("study write", 0.5), ("4k rand read IOPS", 0.5), ("large write", 0.6), ("large read", 0.7)):
        ratio = results["objfs"][metric] / results["passthrough"][metric]
        print(f"target {metric} >= {target}x passthrough: {ratio:.2f}x {'MET' if ratio >= target else 'MISSED'}")


if __name__ == "__main__":
    main(sys.argv[1:])
