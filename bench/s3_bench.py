"""S3 sidecar throughput beside the engine's in-process rate, measured in the same run.

    python -m bench.s3_bench [--quick] [--store DIR] [--workers 1 2]

For 512 KiB objects (8 concurrent clients) and 64 MiB objects (1 client),
PUT and GET are timed first against the engine in this process (8 or 1
threads calling ``Store`` directly), then over HTTP against ``s3sidecar
--workers N`` for each N. The table gives MB/s and the ratio to the engine
(the HTTP overhead); every figure is the best of two runs. Clients are lean
(one process each, http.client, keep-alive, SigV4 with UNSIGNED-PAYLOAD) so
they cost as little CPU as possible: on a small machine clients and server
share the cores, which the ratio includes.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
KiB, MiB = 1 << 10, 1 << 20
REGION = "us-east-1"


# -- a minimal SigV4 client ---------------------------------------------------------


class Signer:
    """SigV4 header signing with UNSIGNED-PAYLOAD (what a lean client sends)."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key, self.secret_key = access_key, secret_key
        self._keys: dict[str, bytes] = {}

    def _key(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            k = ("AWS4" + self.secret_key).encode()
            for part in (date, REGION, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            key = self._keys[date] = k
        return key

    def headers(self, method: str, path: str, host: str) -> dict[str, str]:
        amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        payload = "UNSIGNED-PAYLOAD"
        canonical = "\n".join(
            [method, quote(path, safe="/~"), "", f"host:{host}", f"x-amz-content-sha256:{payload}", f"x-amz-date:{amz}", "",
             "host;x-amz-content-sha256;x-amz-date", payload]
        )  # fmt: skip
        scope = f"{amz[:8]}/{REGION}/s3/aws4_request"
        string = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._key(amz[:8]), string.encode(), hashlib.sha256).hexdigest()
        return {
            "Host": host,
            "x-amz-date": amz,
            "x-amz-content-sha256": payload,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
        }


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int, signer: Signer) -> None:
        self.host = f"127.0.0.1:{port}"
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.signer = signer

    def put(self, path: str, body: bytes) -> None:
        headers = self.signer.headers("PUT", path, self.host)
        headers["Content-Length"] = str(len(body))
        self.conn.request("PUT", quote(path), body=body, headers=headers)
        reply = self.conn.getresponse()
        data = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"PUT {path}: {reply.status} {data[:300]!r}")

    def get(self, path: str) -> int:
        self.conn.request("GET", quote(path), headers=self.signer.headers("GET", path, self.host))
        reply = self.conn.getresponse()
        total = 0
        while chunk := reply.read(1 << 20):
            total += len(chunk)
        if reply.status != 200:
            raise RuntimeError(f"GET {path}: {reply.status}")
        return total


# -- timing -------------------------------------------------------------------------


def run_parallel(threads: int, seconds: float, count: int | None, work: Callable[[int, int], int]) -> float:
    """Bytes per second of ``work(thread, i)`` (returns bytes) over ``threads`` threads.

    Runs for ``seconds`` or, with ``count``, exactly ``count`` calls per thread.
    """
    done = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = time.monotonic() + 1e9
    errors: list[BaseException] = []

    def loop(t: int) -> None:
        barrier.wait()
        i = 0
        try:
            while (count is None and time.monotonic() < stop) or (count is not None and i < count):
                done[t] += work(t, i)
                i += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=loop, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start = time.monotonic()
    stop = start + seconds
    barrier.wait()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return sum(done) / (time.monotonic() - start)


REPEATS = 2


def best_of(case: dict, work: Callable[[int, int], int]) -> float:
    """The best of REPEATS runs: the machine may be shared, and noise only ever slows a run down."""
    return max(run_parallel(case["clients"], case["seconds"], case["count"], work) for _ in range(REPEATS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(store: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "s3sidecar.server", str(store), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish starting
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("s3sidecar did not start")


# -- the benchmark ------------------------------------------------------------------


def cases(quick: bool) -> list[dict]:
    small_secs = 1.5 if quick else 5.0
    return [
        {"op": "PUT", "size": 512 * KiB, "clients": 8, "seconds": small_secs, "count": None},
        {"op": "GET", "size": 512 * KiB, "clients": 8, "seconds": small_secs, "count": None},
        {"op": "PUT", "size": 64 * MiB, "clients": 1, "seconds": 0, "count": 1 if quick else 3},
        {"op": "GET", "size": 64 * MiB, "clients": 1, "seconds": 0, "count": 2 if quick else 5},
    ]


def body_of(size: int) -> bytes:
    return (os.urandom(64 * KiB) * (size // (64 * KiB) + 1))[:size]


def engine_rates(store_path: Path, plan: list[dict]) -> list[float]:
    from objfs.store import Store

    rates = []
    with Store.open(store_path) as store:
        store.create_bucket("bench")
        for case in plan:
            size, body = case["size"], body_of(case["size"])
            prefix = f"{case['size']}"
            if case["op"] == "PUT":

                def work(t: int, i: int, body=body, prefix=prefix) -> int:
                    return store.put_object("bench", f"{prefix}/{t}/{i % 16}", body).size

            else:

                def work(t: int, i: int, prefix=prefix) -> int:
                    with store.open_object("bench", f"{prefix}/{t}/0") as reader:
                        return sum(len(c) for c in reader.iter_range())

            rates.append(best_of(case, work))
            del body
            _ = size
    return rates


def _client_process(port: int, key: dict, case: dict, prefix: str, t: int, barrier, results) -> None:
    """One client of the HTTP runs: its own process, so clients never share a GIL with each other."""
    client = Client(port, Signer(key["access_key"], key["secret_key"]))
    body = body_of(case["size"]) if case["op"] == "PUT" else b""

    def once(i: int) -> int:
        if case["op"] == "PUT":
            client.put(f"{prefix}/{t}/{i % 16}", body)
            return len(body)
        return client.get(f"{prefix}/{t}/0")

    once(0)  # warm the connection and the worker
    for _ in range(REPEATS):
        barrier.wait()
        done, i, start = 0, 0, time.monotonic()
        while (case["count"] is None and time.monotonic() - start < case["seconds"]) or (
            case["count"] is not None and i < case["count"]
        ):
            done += once(i)
            i += 1
        results.put((done, start, time.monotonic()))


def http_rates(store_path: Path, workers: int, key: dict, plan: list[dict]) -> list[float]:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    proc, port = start_server(store_path, workers)
    try:
        rates = []
        for case in plan:
            n = case["clients"]
            barrier, results = ctx.Barrier(n), ctx.Queue()
            prefix = f"/bench/{case['size']}"
            clients = [ctx.Process(target=_client_process, args=(port, key, case, prefix, t, barrier, results)) for t in range(n)]
            for c in clients:
                c.start()
            best = 0.0
            for _ in range(REPEATS):
                runs = [results.get(timeout=600) for _ in range(n)]
                elapsed = max(r[2] for r in runs) - min(r[1] for r in runs)
                best = max(best, sum(r[0] for r in runs) / elapsed)
            for c in clients:
                c.join()
                if c.exitcode:
                    raise RuntimeError(f"a benchmark client failed ({c.exitcode})")
            rates.append(best)
        return rates
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about half a minute)")
    p.add_argument("--store", help="store directory to create (default: a temporary one)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from objfs.store import init_store

    with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp:
        store_path = Path(args.store) if args.store else Path(tmp) / "store"
        init_store(store_path).close()
        out = subprocess.run(
            [sys.executable, "-m", "objfs.cli", "key", "create", str(store_path), "--name", "bench"],
            capture_output=True,
            check=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        key = json.loads(out.stdout)
        plan = cases(args.quick)
        engine = engine_rates(store_path, plan)
        results = {w: http_rates(store_path, w, key, plan) for w in args.workers}

    head = f"{'op':<4} {'size':>7} {'clients':>7} {'engine MB/s':>12}" + "".join(
        f" {f'{w} worker' + ('s' if w > 1 else '') + ' MB/s':>16} {'ratio':>6}" for w in args.workers
    )
    print(head)
    print("-" * len(head))
    rows = []
    for i, case in enumerate(plan):
        size = f"{case['size'] // MiB}MiB" if case["size"] >= MiB else f"{case['size'] // KiB}KiB"
        line = f"{case['op']:<4} {size:>7} {case['clients']:>7} {engine[i] / 1e6:>12.1f}"
        row = {"op": case["op"], "size": case["size"], "clients": case["clients"], "engine": engine[i] / 1e6}
        for w in args.workers:
            rate = results[w][i]
            line += f" {rate / 1e6:>16.1f} {rate / engine[i]:>6.2f}"
            row[f"workers_{w}"] = rate / 1e6
        rows.append(row)
        print(line)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
