"""A bucket whose default is encryption at rest, written by the DICOM gateway and by ``objfs migrate``.

The engine applies the bucket's default, so neither front knows about it:
what they store is found by C-FIND (the DICOM indexer read the plaintext
head), reads back identical, and no drive file holds the patient's id or the
images' bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import REPO, configure, start_gateway, stop_gateway
from pydicom import dcmread

from objfs.dicom.synth import write_study
from objfs.stores import init_store, open_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _drive_bytes(store: Path) -> bytes:
    out = bytearray()
    for dirpath, _dirs, names in os.walk(store / "drives"):
        for name in names:
            out += (Path(dirpath) / name).read_bytes()
    return bytes(out)


def test_gateway_and_migration_write_encrypted_and_stay_findable(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    with init_store(store_path, ec="2+1") as store:
        store.create_bucket("pacs")
        store.update_bucket("pacs", encryption={"mode": "S3"})
    configure(store_path, allowed=["TESTSCU"])
    _, received = write_study(tmp_path / "received", instances=2, patient_id="ENCPAT-GATEWAY")
    _, migrated = write_study(tmp_path / "legacy", instances=2, patient_id="ENCPAT-MIGRATE", study_uid="1.2.826.0.1.99")
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "migrate", str(store_path), str(tmp_path / "legacy"), "--bucket", "pacs"],
        check=True,
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    gw = start_gateway(store_path)
    try:
        assert scu.store_files(gw.port, received) == [0, 0]
        for path in received + migrated:
            ds = dcmread(path, stop_before_pixels=True)
            query = {"QueryRetrieveLevel": "IMAGE", "SOPInstanceUID": str(ds.SOPInstanceUID), "PatientID": ""}
            found, final = scu.find(gw.port, dict(query, StudyInstanceUID="", SeriesInstanceUID=""))
            assert final == 0 and [str(f.PatientID) for f in found] == [str(ds.PatientID)]
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err
    with open_store(store_path) as store:
        records = [o.record for o in store.list_objects("pacs").objects]
        assert len(records) == 4 and all(r["sse"]["mode"] == "S3" for r in records)
        for path in received + migrated:
            sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            rec = next(r for r in records if r["dicom"]["SOPInstanceUID"] == sop)
            stored = store.get_object_bytes("pacs", rec["key"])
            assert stored[-4096:] == path.read_bytes()[-4096:]  # the pixel data, as sent
    on_drives = _drive_bytes(store_path)
    assert b"ENCPAT-GATEWAY" not in on_drives and b"ENCPAT-MIGRATE" not in on_drives
    for path in received + migrated:
        assert path.read_bytes()[-4096:] not in on_drives
