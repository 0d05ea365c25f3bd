"""A whole-slide image of hundreds of MiB through the gateway in bounded memory.

The instance is written to disk frame by frame (never built in memory), sent
by a separate pynetdicom SCU process straight from the file, and retrieved by
C-GET into the SCU's spool file; only sha256 digests cross process
boundaries. The gateway's memory is read from ``/proc/<pid>/status``
(``VmHWM``: the peak resident set of *that* process; ``ru_maxrss`` of
children would be the maximum over every process ever reaped, the test
runner's exec chain included). The peak is reset between the two transfers
(``clear_refs`` 5), so each is measured on its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dicom_scu import dataset_sha256
from dicomtest import REPO, dataset_offset, start_gateway, stop_gateway

from objfs.dicom.index import canonical_key
from objfs.dicom.storage import IMPLEMENTATION_CLASS_UID
from objfs.dicom.synth import write_large_instance
from objfs.stores import Store, init_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FRAMES = 360
FRAME_BYTES = 1 << 20  # ~360 MiB in all: far above any plausible fixed overhead
PEAK_LIMIT_KIB = 250 * 1024  # absolute ceiling for the gateway process
GROWTH_LIMIT_KIB = 96 * 1024  # above the idle gateway; a quarter of the instance
SCU = Path(__file__).with_name("dicom_scu.py")


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set (VmHWM) of process ``pid``, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


def reset_hwm(pid: int) -> None:
    """Reset ``pid``'s VmHWM to its current RSS (Linux >= 4.0), where allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def run_scu(*args: str) -> dict:
    res = subprocess.run(
        [sys.executable, str(SCU), *args],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def test_whole_slide_image_stored_and_retrieved_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "wsi.dcm"
    header = write_large_instance(source, frames=FRAMES, frame_bytes=FRAME_BYTES)
    size = source.stat().st_size
    assert size > FRAMES * FRAME_BYTES
    with open(source, "rb") as f:
        dataset_size = size - dataset_offset(f)
    source_sha = dataset_sha256(source)
    store_path = tmp_path / "store"
    init_store(store_path).close()
    gw = start_gateway(store_path)
    pid = gw.proc.pid
    figures: dict[str, int] = {}
    try:
        figures["idle_kib"] = idle = vm_hwm_kib(pid)

        # C-STORE from the file: the gateway spools it, checks it and streams it into the engine.
        sent = run_scu("store", str(gw.port), str(source))
        assert sent["statuses"] == [0]
        figures["store_peak_kib"] = vm_hwm_kib(pid)
        figures["scu_store_peak_kib"] = sent["peak_rss_kib"]

        key = canonical_key(
            {
                "StudyInstanceUID": header.StudyInstanceUID,
                "SeriesInstanceUID": header.SeriesInstanceUID,
                "SOPInstanceUID": header.SOPInstanceUID,
            }
        )
        with Store.open(store_path) as store:
            info = store.head_object("pacs", key)
            assert info.dicom["SOPInstanceUID"] == header.SOPInstanceUID
            # Stored as a File Meta group of ours, then the dataset exactly as received.
            with store.open_object("pacs", key) as reader:
                chunks = reader.iter_range()
                first = next(chunks)
                assert first[128:132] == b"DICM" and IMPLEMENTATION_CLASS_UID.encode() in first[:1024]
                offset = dataset_offset(io.BytesIO(first))
                stored_sha = hashlib.sha256(first[offset:])
                for chunk in chunks:
                    stored_sha.update(chunk)
            assert stored_sha.hexdigest() == source_sha
            assert info.size == offset + dataset_size

        # C-GET: streamed from the engine to a spool file, sent from it unchanged.
        # (Where the reset is not allowed the peak still bounds both transfers.)
        reset_hwm(pid)
        got = run_scu(
            "get-sha256",
            str(gw.port),
            header.StudyInstanceUID,
            header.SeriesInstanceUID,
            header.SOPInstanceUID,
            header.SOPClassUID,
            header.file_meta.TransferSyntaxUID,
        )
        assert got["statuses"][-1] == 0
        assert got["sha256"] == {header.SOPInstanceUID: source_sha}
        figures["get_peak_kib"] = vm_hwm_kib(pid)
        figures["scu_get_peak_kib"] = got["peak_rss_kib"]
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err
    print(f"\ninstance {size >> 20} MiB; peak memory (KiB): {figures}")
    for phase in ("store_peak_kib", "get_peak_kib"):
        assert figures[phase] < PEAK_LIMIT_KIB, figures
        assert figures[phase] - idle < GROWTH_LIMIT_KIB, figures
    # Nothing left in the gateway's spools (received and sent files are removed).
    assert [p for p in (store_path / "spool").rglob("*") if p.is_file()] == []
