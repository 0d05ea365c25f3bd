"""Tier moves and reads per tier, against plain files, measured in one run.

1. Mover throughput: versions moved hot -> warm (copy, read back and MD5
   verify, metadata, switch) against a plain copy of the same bytes between
   the same drive directories (read, write, fsync) ; and hot -> a remote S3
   tier (a second objfs serving S3 on loopback, started here).
2. First-byte latency of a 512 KiB object on each tier (hot, warm, remote S3):
   open + first chunk, page cache dropped before each read where allowed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from objfs.store import Store, init_store
from objfs.store.remotes import add_remote
from objfs.store.tiers import add_remote_tier, add_tier

from .common import drop_caches, mbps, table, timed

KIB = 1024
MIB = 1024 * KIB
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _objfs_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_remote(workdir: Path) -> tuple[subprocess.Popen, str, dict[str, str]]:
    """A second objfs serving S3 on loopback, with a key and a bucket ``archive``: the remote tier."""
    root = workdir / "remote" / "store"
    init_store(root).close()
    port = _free_port()
    log = open(workdir / "remote-s3.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3sidecar.server", str(root), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_objfs_env(),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the remote S3 server did not start; see {log.name}") from None
            time.sleep(0.2)
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "key", "create", str(root), "--name", "bench"],
        capture_output=True, check=True, env=_objfs_env(), timeout=120,
    )  # fmt: skip
    key = json.loads(out.stdout)
    return proc, url, key


def bench_moves(workdir: Path, store: Store, size: int, count: int) -> list[list[object]]:
    """Mover throughput hot -> warm and hot -> remote, and the plain copy hot drive -> warm drive."""
    data = [os.urandom(size) for _ in range(min(count, 4))]
    total = size * count
    hot_dir = store.drives["hot"][0].path / "bench-raw"
    warm_dir = store.drives["warm"][0].path / "bench-raw"
    hot_dir.mkdir()
    warm_dir.mkdir()
    for i in range(count):
        with open(hot_dir / f"{i}.bin", "wb") as f:
            f.write(data[i % len(data)])
            os.fsync(f.fileno())
        store.put_object("bench", f"w/{i}", data[i % len(data)], length=size)
        store.put_object("bench", f"r/{i}", data[i % len(data)], length=size)

    def plain_copy() -> None:
        for i in range(count):
            with open(hot_dir / f"{i}.bin", "rb") as src, open(warm_dir / f"{i}.bin", "wb") as dst:
                while chunk := src.read(MIB):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
        fd = os.open(warm_dir, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def move(prefix: str, tier: str) -> None:
        for i in range(count):
            store.move_version("bench", f"{prefix}/{i}", tier=tier)

    drop_caches()
    raw = timed(plain_copy)
    drop_caches()
    warm = timed(lambda: move("w", "warm"))
    drop_caches()
    remote = timed(lambda: move("r", "archive"))
    shutil.rmtree(hot_dir)
    shutil.rmtree(warm_dir)
    label = f"{size // MIB} MiB x {count}"
    return [
        [label, "plain copy hot->warm dir (fsync)", mbps(total, raw), 1.0],
        [label, "mover hot->warm (EC, verified)", mbps(total, warm), raw / warm],
        [label, "mover hot->remote S3", mbps(total, remote), raw / remote],
    ]


def bench_first_byte(store: Store, repeats: int) -> list[list[object]]:
    """Milliseconds to the first byte of a 512 KiB object on each tier (open + first chunk)."""
    size = 512 * KIB
    rows = []
    for tier in ("hot", "warm", "archive"):
        times = []
        for i in range(repeats):
            key = f"fb/{tier}/{i}"
            store.put_object("bench", key, os.urandom(size), length=size)
            if tier != "hot":
                store.move_version("bench", key, tier=tier)
        store.collect_garbage(min_age=0)
        for i in range(repeats):
            drop_caches()
            start = time.perf_counter()
            with store.open_object("bench", f"fb/{tier}/{i}") as reader:
                next(reader.iter_range(0, size))
                times.append((time.perf_counter() - start) * 1000)
        label = "remote S3" if tier == "archive" else tier
        rows.append([label, statistics.median(times), min(times), max(times)])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tier_bench")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    size, count, repeats = (4 * MIB, 4, 5) if args.quick else (32 * MIB, 8, 15)
    workdir = Path(tempfile.mkdtemp(prefix="objfs-tier-bench-"))
    proc = None
    try:
        proc, url, key = start_remote(workdir)
        import boto3
        from botocore.config import Config

        boto3.client(
            "s3", endpoint_url=url, aws_access_key_id=key["access_key"], aws_secret_access_key=key["secret_key"],
            region_name="us-east-1", config=Config(s3={"addressing_style": "path"}),
        ).create_bucket(Bucket="archive")  # fmt: skip
        root = workdir / "store"
        init_store(root).close()
        add_tier(root, "warm", [str(workdir / f"warm{i}") for i in range(5)], "3+2")
        add_remote(root, "peer", endpoint=url, access_key=key["access_key"], secret_key=key["secret_key"])
        add_remote_tier(root, "archive", "peer", "archive")
        with Store.open(root) as store:
            store.create_bucket("bench")
            moves = bench_moves(workdir, store, size, count)
            first = bench_first_byte(store, repeats)
        print(table("Tier moves (plain copy measured in the same run)", ["size", "path", "MB/s", "vs plain"], moves))
        print()
        print(table("First byte of a 512 KiB object (page cache dropped)", ["tier", "median ms", "min ms", "max ms"], first))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
