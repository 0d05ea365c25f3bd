"""DICOM gateway benchmark: storescu ingest and getscu retrieval of a CT study.

Baseline: dcmtk's storescp writing the same study to a plain directory, in
the same run. All dcmtk tools run with TCP_NODELAY=1 (Debian's dcmtk leaves
Nagle on otherwise). Also measured: 4 storescu processes in parallel
(separate associations), for both the baseline and objfs.

Note the baseline does not fsync; objfs answers each C-STORE only after the
durable commit (fragments fsynced on k+m drives, LMDB committed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import table

ENV = dict(os.environ, TCP_NODELAY="1")
REPO = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["echoscu", "-aec", "ANY", "127.0.0.1", str(port)], env=ENV, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers C-ECHO on port {port}")


def _storescu(port: int, files: list[Path], aec: str, parallel: int = 1) -> float:
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, c)], env=ENV) for c in chunks]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("storescu failed")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dicom_bench")
    parser.add_argument("--quick", action="store_true", help="60 slices instead of 300")
    parser.add_argument("--slices", type=int)
    args = parser.parse_args(argv)
    if shutil.which("storescu") is None:
        print("dicom_bench: dcmtk is not installed; skipped")
        return
    from objfs.dicom.synth import write_study
    from objfs.store import init_store

    slices = args.slices or (60 if args.quick else 300)
    work = Path(tempfile.mkdtemp(prefix="objfs-dicom-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        uid, files = write_study(work / "study", instances=slices, size=512)
        nbytes = sum(f.stat().st_size for f in files)
        rows = []

        def row(name: str, seconds: float, base: float | None = None) -> None:
            rows.append([name, seconds, slices / seconds, nbytes / seconds / 1e6, f"{base / seconds:.2f}x" if base else ""])

        # -- baseline: storescp to a directory
        base_times = {}
        for parallel in (1, 4):
            out = work / f"storescp{parallel}"
            out.mkdir()
            port = _port()
            scp = subprocess.Popen(["storescp", "-od", str(out), str(port)], env=ENV)
            try:
                _wait_port(port)
                base_times[parallel] = _storescu(port, files, "ANY", parallel)
            finally:
                scp.terminate()
                scp.wait()
            row(f"storescp to a directory, {parallel} assoc", base_times[parallel])

        # -- objfs: a fresh store per run so nothing is a duplicate
        for parallel in (1, 4):
            store = work / f"store{parallel}"
            init_store(store).close()
            port = _port()
            gw = subprocess.Popen(
                [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--port", str(port), "--host", "127.0.0.1"],
                env=dict(ENV, PYTHONPATH=str(REPO)),
                stdout=subprocess.DEVNULL,
            )
            try:
                _wait_port(port)
                row(
                    f"objfs dicom C-STORE ingest, {parallel} assoc",
                    _storescu(port, files, "OBJFS", parallel),
                    base_times[parallel],
                )
                if parallel == 1:
                    out = work / "get"
                    out.mkdir()
                    start = time.perf_counter()
                    subprocess.run(
                        [
                            "getscu",
                            "-S",
                            "-aec",
                            "OBJFS",
                            "-od",
                            str(out),
                            "-k",
                            "QueryRetrieveLevel=STUDY",
                            "-k",
                            f"StudyInstanceUID={uid}",
                            "127.0.0.1",
                            str(port),
                        ],
                        env=ENV,
                        check=True,
                    )
                    seconds = time.perf_counter() - start
                    got = len(list(out.iterdir()))
                    if got != slices:
                        raise RuntimeError(f"getscu received {got} of {slices} instances")
                    row("objfs dicom C-GET whole study (getscu)", seconds)
            finally:
                gw.terminate()
                gw.wait()
        print(
            table(
                f"DICOM: {slices}-slice CT study, 512x512x16 bit, {nbytes / 1e6:.1f} MB (TCP_NODELAY=1)",
                ["what", "seconds", "instances/s", "MB/s", "vs storescp"],
                rows,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
