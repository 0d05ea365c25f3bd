"""``make bench``: run every benchmark; ``--quick`` for small sizes, ``--only NAME`` for one."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = [
    "engine_bench",
    "fuse_bench",
    "posix_bench",
    "s3_bench",
    "dicom_bench",
    "qido_scale_bench",
    "dicom_index_bench",
    "dicomweb_bench",
    "replication_bench",
    "scale_bench",
    "tier_bench",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=BENCHMARKS)
    args = parser.parse_args()
    for name in BENCHMARKS:
        if args.only and name != args.only:
            continue
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            continue
        print(f"\n== {name} ==", flush=True)
        module.main(["--quick"] if args.quick else [])


if __name__ == "__main__":
    main()
