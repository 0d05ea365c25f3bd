"""DICOM index size: bytes per instance of the ``dicom`` and ``dicomkeys`` databases.

The store is filled through the real indexer (``DicomIndexer.on_change``
inside the engine's write transactions, as every ingest path does) with CT
instances shaped like a scanner's: 64-character UIDs from pydicom's root,
the gateway's ``study/series/sop.dcm`` keys, 4 series of 50 instances per
study, 2 studies per patient. Their bodies are not written: only the index
is measured. The cost is the LMDB pages the two databases hold (branch, leaf
and overflow pages times the page size) divided by the instance count, the
same as the drive space the index takes; the target of issue 10 is 1 KB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import index_synthetic, table

TARGET = 1000


def fill(store_path: Path, instances: int) -> float:
    """Index ``instances`` synthetic CT instances in a new store at ``store_path``; returns seconds."""
    from pydicom.uid import generate_uid

    from objfs.dicom.index import DicomIndexer, canonical_key
    from objfs.dicom.synth import write_study
    from objfs.store import init_store
    from objfs.stores import open_store

    init_store(store_path).close()
    _, paths = write_study(store_path.parent / "template", instances=1, series=1, size=16)
    head = paths[0].read_bytes()
    extra = DicomIndexer().extract(head, "t")
    assert extra is not None
    base = extra["dicom"]
    root = "1.2.826.0.1.3680043.8.498."
    store = open_store(store_path)
    store.create_bucket("pacs")
    per_series, series_per_study, studies_per_patient = 50, 4, 2
    start, n = time.perf_counter(), 0
    study = series = ""
    while n < instances:
        with store.index.write() as txn:
            for _ in range(1000):
                if n >= instances:
                    break
                if n % per_series == 0:
                    if n % (per_series * series_per_study) == 0:
                        study = generate_uid(root)
                    series = generate_uid(root)
                study_no = n // (per_series * series_per_study)
                tags = dict(
                    base,
                    PatientID=f"PAT{study_no // studies_per_patient:07d}",
                    AccessionNumber=f"ACC{study_no:07d}",
                    StudyInstanceUID=study,
                    SeriesInstanceUID=series,
                    SeriesNumber=(n // per_series) % series_per_study + 1,
                    SOPInstanceUID=generate_uid(root),
                    InstanceNumber=n % per_series + 1,
                    ImagePositionPatient=["0", "0", str(n % per_series)],
                )
                key = canonical_key(tags)
                record = {
                    "id": f"{n:032x}",
                    "bucket": "pacs",
                    "key": key,
                    "version": "null",
                    "size": 525_000,
                    "dicom": tags,
                }
                index_synthetic(store, txn, record, n)
                n += 1
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def bytes_per_instance(store_path: Path, instances: int) -> dict[str, float]:
    """Bytes per instance of each DICOM database and in all, from LMDB's page counts."""
    from objfs.stores import open_store

    store = open_store(store_path)
    try:
        out: dict[str, float] = {}
        with store.index.read() as txn:
            for name in ("dicom", "dicomkeys"):
                stat = txn.txn.stat(store.index.dbs[name])
                pages = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
                out[name] = pages * stat["psize"] / instances
        out["total"] = sum(out.values())
        return out
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dicom_index_bench")
    parser.add_argument("--quick", action="store_true", help="1,000 instances instead of 20,000")
    parser.add_argument("--instances", type=int, help="instances to index")
    args = parser.parse_args(argv)
    instances = args.instances or (1_000 if args.quick else 20_000)
    with tempfile.TemporaryDirectory(prefix="objfs-dicom-index-bench-") as tmp:
        store_path = Path(tmp) / "store"
        seconds = fill(store_path, instances)
        size = bytes_per_instance(store_path, instances)
    print(
        table(
            f"DICOM index size, {instances} CT instances (64-char UIDs, gateway keys), {seconds:.1f} s to index",
            ["dicom B/inst", "dicomkeys B/inst", "total B/inst", "target", "instances/s"],
            [
                [
                    f"{size['dicom']:.0f}",
                    f"{size['dicomkeys']:.0f}",
                    f"{size['total']:.0f}",
                    f"<= {TARGET}",
                    f"{instances / seconds:.0f}",
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
