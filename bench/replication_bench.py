"""Replication between two `objfs serve` appliances on loopback: lag under load, catch-up after an outage.

Measured in one run, against peers from the same run:

* the plain S3 PUT rate of 512 KiB objects to the destination appliance
  (one client, sequential) — the "single-appliance ingest rate";
* replication lag p50/p99 (source PUT acknowledged -> version readable on
  the destination) while a steady stream of 512 KiB objects is written to
  the source at half that rate (target: p99 under 5 s);
* the catch-up rate after the destination was down while objects were
  written (first replica to last), as a ratio of the plain PUT rate to the
  same destination, and how long the sender took to notice it was back
  (its backoff towards an unreachable remote is at most 5 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import table

SIZE = 512 << 10
REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Site:
    def __init__(self, root: Path, name: str) -> None:
        from objfs.stores import init_store

        self.root = root / name
        self.store = self.root / "store"
        store = init_store(self.store)
        self.admin = store.keys.create("admin")
        self.peer = store.keys.create("peer", replication=True)
        store.close()
        with open(self.store / "objfs.toml", "a") as f:
            f.write("\n[replication]\ninterval_seconds = 0.1\n")
        self.port, self.dicom, self.admin_port = _port(), _port(), _port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mnt = self.root / "mnt"
        mnt.mkdir(parents=True, exist_ok=True)
        log = self.root / "serve.log"
        log.write_text("")
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "objfs.cli", "serve", str(self.store), "--mount", str(mnt), "--port", str(self.port),
                 "--dicom-port", str(self.dicom), "--admin-port", str(self.admin_port)],
                stdout=out, stderr=subprocess.STDOUT, env=ENV,
            )  # fmt: skip
        deadline = time.time() + 120
        while "objfs: ready" not in log.read_text():
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"objfs serve did not start:\n{log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None
        subprocess.run(["fusermount3", "-uz", str(self.root / "mnt")], capture_output=True)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id=self.admin.access_key,
            aws_secret_access_key=self.admin.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def _backlog(site: Site) -> int:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "replication", "status", str(site.store), "--json"],
        env=ENV, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)["backlog_objects"]


def plain_put_rate(site: Site, count: int) -> float:
    s3 = site.client()
    s3.create_bucket(Bucket="plain")
    body = os.urandom(SIZE)
    started = time.perf_counter()
    for i in range(count):
        s3.put_object(Bucket="plain", Key=f"o{i}", Body=body)
    return count / (time.perf_counter() - started)


def lag_under_stream(a: Site, b: Site, rate: float, count: int) -> list[float]:
    sa, sb = a.client(), b.client()
    body = os.urandom(SIZE)
    acked: dict[str, float] = {}
    lags: list[float] = []
    done = threading.Event()

    def watch() -> None:
        waiting: list[str] = []
        while not (done.is_set() and not waiting and len(lags) == count):
            waiting += [k for k in list(acked) if k not in waiting and k not in seen]
            for key in list(waiting):
                try:
                    sb.head_object(Bucket="bench", Key=key)
                except sb.exceptions.ClientError:
                    continue
                lags.append(time.time() - acked[key])
                seen.add(key)
                waiting.remove(key)
            time.sleep(0.02)

    seen: set[str] = set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    for i in range(count):
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        sa.put_object(Bucket="bench", Key=f"s{i}", Body=body)
        acked[f"s{i}"] = time.time()
    done.set()
    watcher.join(timeout=120)
    return lags


def catch_up_rate(a: Site, b: Site, count: int) -> tuple[float, float]:
    """(objects per second from the first replica to the last, seconds until the first arrived) after an outage."""
    sa = a.client()
    b.stop()
    body = os.urandom(SIZE)
    for i in range(count):
        sa.put_object(Bucket="bench", Key=f"c{i}", Body=body)
    b.start()
    sb = b.client()
    back = time.perf_counter()
    first = None
    while True:
        arrived = sb.list_objects_v2(Bucket="bench", Prefix="c").get("KeyCount", 0)
        if arrived and first is None:
            first = time.perf_counter()
        if arrived >= count:
            break
        time.sleep(0.05)
    assert first is not None
    return (count - 1) / max(1e-3, time.perf_counter() - first), first - back


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="replication_bench")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    count = 20 if args.quick else 200
    from objfs.store.remotes import add_remote

    with tempfile.TemporaryDirectory(prefix="objfs-repl-bench-") as tmp:
        a, b = Site(Path(tmp), "a"), Site(Path(tmp), "b")
        add_remote(
            a.store, "b", endpoint=f"http://127.0.0.1:{b.port}", access_key=b.peer.access_key, secret_key=b.peer.secret_key
        )
        a.start()
        b.start()
        try:
            for site in (a, b):
                s3 = site.client()
                s3.create_bucket(Bucket="bench")
                s3.put_bucket_versioning(Bucket="bench", VersioningConfiguration={"Status": "Enabled"})
            subprocess.run(
                [sys.executable, "-m", "objfs.cli", "replication", "set", str(a.store), "bench", "--to", "b/bench"],
                env=ENV, check=True, capture_output=True,
            )  # fmt: skip
            plain = plain_put_rate(b, count)
            lags = sorted(lag_under_stream(a, b, plain / 2, count))
            while _backlog(a):
                time.sleep(0.2)
            catch_up, noticed = catch_up_rate(a, b, count)
        finally:
            a.stop()
            b.stop()
    p50 = statistics.median(lags) if lags else float("nan")
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] if lags else float("nan")
    mib = SIZE / (1 << 20)
    print(
        table(
            "replication, 512 KiB objects, two appliances on loopback",
            ["measure", "value", "peer", "ratio"],
            [
                ["plain S3 PUT to the destination", f"{plain:.1f} obj/s ({plain * mib:.1f} MiB/s)", "-", "-"],
                ["lag p50 at half that rate", f"{p50:.2f} s", "-", "-"],
                ["lag p99 at half that rate (target < 5 s)", f"{p99:.2f} s", "-", "-"],
                ["catch-up after an outage", f"{catch_up:.1f} obj/s", f"{plain:.1f} obj/s", f"{catch_up / plain:.2f}"],
                ["destination back -> first replica", f"{noticed:.2f} s", "-", "-"],
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
