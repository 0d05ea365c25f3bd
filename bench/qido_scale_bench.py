"""QIDO-RS at scale: a patient's studies with 10^5 instances indexed (``--quick``: 10^4).

QIDO is answered from the DICOM index alone, so the store is filled through
the real indexer (``DicomIndexer.on_change`` inside the engine's write
transactions, as every ingest path does) with records of 10^5 instances in
1,000 studies of 100 patients; their bodies are not written (QIDO never
reads them). Then ``objfs dicomweb`` runs as its own process and answers
``GET /studies?PatientID=...`` for random patients: p50/p99 latency is
printed against the 50 ms target of issue "7 of 8".
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.common import index_synthetic, table

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(store_path: Path, instances: int) -> tuple[list[str], float]:
    """Index ``instances`` synthetic instances; returns (patient ids, seconds)."""
    from objfs.dicom.index import DicomIndexer
    from objfs.dicom.synth import write_study
    from objfs.stores import open_store

    template_dir = store_path.parent / "template"
    _, paths = write_study(template_dir, instances=1, series=1, patient_id="T", size=16)
    store = open_store(store_path)
    store.create_bucket("pacs")
    extra = DicomIndexer().extract(paths[0].read_bytes(), "t")
    base = extra["dicom"]
    patients = [f"PAT{p:05d}" for p in range(max(1, instances // 1000))]
    per_study, start, n = 100, time.perf_counter(), 0
    while n < instances:
        with store.index.write() as txn:
            for _ in range(5000):
                if n >= instances:
                    break
                study_no, series_no = n // per_study, (n // 25) % 4
                tags = dict(
                    base,
                    PatientID=patients[study_no % len(patients)],
                    StudyInstanceUID=f"1.2.3.{study_no}",
                    SeriesInstanceUID=f"1.2.3.{study_no}.{series_no}",
                    SOPInstanceUID=f"1.2.3.{study_no}.{series_no}.{n}",
                    InstanceNumber=n % per_study,
                )
                key = f"{tags['PatientID']}/{tags['StudyInstanceUID']}/{tags['SOPInstanceUID']}.dcm"
                record = {"id": f"{n:032x}", "bucket": "pacs", "key": key, "version": "null", "size": 1000, "dicom": tags}
                index_synthetic(store, txn, record, n)
                n += 1
    seconds = time.perf_counter() - start
    store.close()
    return patients, seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="qido_scale_bench")
    parser.add_argument("--quick", action="store_true", help="10^4 instances instead of 10^5")
    args = parser.parse_args(argv)
    instances = 10_000 if args.quick else 100_000
    from objfs.store import init_store

    with tempfile.TemporaryDirectory(prefix="objfs-qido-bench-") as tmp:
        store_path = Path(tmp) / "store"
        init_store(store_path).close()
        key = subprocess.run(
            [sys.executable, "-m", "objfs.cli", "key", "create", str(store_path), "--name", "bench"],
            env=ENV, capture_output=True, check=True, text=True,
        ).stdout  # fmt: skip
        import json

        secret = json.loads(key)
        patients, fill_s = fill(store_path, instances)
        port = _port()
        web = subprocess.Popen(
            [sys.executable, "-m", "objfs.dicomweb", str(store_path), "--port", str(port), "--bucket", "pacs"],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/dicom-web/studies"
        auth = (secret["access_key"], secret["secret_key"])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    requests.get(url, auth=auth, params={"limit": 1}, timeout=2)
                    break
                except requests.ConnectionError:
                    if time.monotonic() > deadline or web.poll() is not None:
                        raise RuntimeError("objfs dicomweb did not start") from None
                    time.sleep(0.1)
            rng = random.Random(7)
            timings = []
            session = requests.Session()
            for _ in range(200):
                patient = rng.choice(patients)
                start = time.perf_counter()
                got = session.get(url, auth=auth, params={"PatientID": patient}, timeout=10)
                timings.append((time.perf_counter() - start) * 1000)
                assert got.status_code == 200 and len(got.json()) == 10, (got.status_code, len(got.content))
        finally:
            web.terminate()
            web.wait(timeout=30)
        timings.sort()
        p50, p99 = statistics.median(timings), timings[int(len(timings) * 0.99) - 1]
        print(
            table(
                f"QIDO-RS studies of one patient, {instances} instances indexed ({fill_s:.0f} s to index)",
                ["queries", "p50 ms", "p99 ms", "target"],
                [[len(timings), f"{p50:.1f}", f"{p99:.1f}", "< 50 ms"]],
            )
        )


if __name__ == "__main__":
    main()
