"""Finding 12 (DICOM part): what the gateway changes is audited as the AE that asked.

With ``duplicates = "replace"`` a re-sent SOP instance replaces the held one:
under the same name (an overwrite) or, when its study or series changed,
under a new name, the old copy deleted. Every one of those changes is an
audit line naming ``dicom:<calling AE>@<peer address>``; retrievals are
audited as reads of the retrieving AE.
"""

from __future__ import annotations

from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import configure, start_gateway, stop_gateway
from pydicom import dcmread
from pydicom.uid import generate_uid

from objfs.dicom.index import canonical_key
from objfs.dicom.synth import write_study
from objfs.stores import Store, init_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SENDER = "dicom:TESTSCU@127.0.0.1"


def _key(path: Path) -> str:
    ds = dcmread(path, stop_before_pixels=True)
    return canonical_key({n: ds.get(n) for n in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")})


def _moved(path: Path, out: Path) -> Path:
    """The same SOP instance, filed under a corrected (new) study."""
    ds = dcmread(path)
    ds.StudyInstanceUID = generate_uid()
    ds.save_as(out, enforce_file_format=True)
    return out


def test_replacing_c_store_is_audited_as_the_calling_ae(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    init_store(store_path).close()
    configure(store_path, allowed=["TESTSCU"], duplicates="replace")
    gw = start_gateway(store_path)
    try:
        _, (first,) = write_study(tmp_path / "s", instances=1)
        moved = _moved(first, tmp_path / "moved.dcm")
        old_key, new_key = _key(first), _key(moved)
        assert scu.store_files(gw.port, [first]) == [0]
        assert scu.store_files(gw.port, [first]) == [0]  # replaced under the same name
        assert scu.store_files(gw.port, [moved]) == [0]  # replaced under a new name: the old copy goes
        found, _ = scu.find(
            gw.port,
            {
                "QueryRetrieveLevel": "IMAGE",
                "SOPInstanceUID": dcmread(first).SOPInstanceUID,
                "StudyInstanceUID": "",
                "SeriesInstanceUID": "",
            },
        )
        assert [str(f.StudyInstanceUID) for f in found] == [str(dcmread(moved).StudyInstanceUID)]
        got, statuses = scu.get(
            gw.port,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(dcmread(moved).StudyInstanceUID)},
            [(str(dcmread(moved).SOPClassUID), str(dcmread(moved).file_meta.TransferSyntaxUID))],
        )
        assert len(got) == 1 and statuses[-1] == 0
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err

    with Store.open(store_path) as store:
        lines = [(e["action"], e["key"], e["outcome"]) for e in store.audit.show(bucket="pacs", who=SENDER)]
        assert all(e["who"] == SENDER for e in store.audit.show(bucket="pacs", who="TESTSCU"))
        assert lines == [
            ("write", old_key, "ok"),
            ("write", old_key, "ok"),  # the overwrite
            ("write", new_key, "ok"),
            ("delete", old_key, "ok"),  # the replaced copy under its old name
            ("read", new_key, "ok"),  # the C-GET
        ]
        # the gateway's own work (creating its bucket) is a system principal's
        assert [e["action"] for e in store.audit.show(who="system:gateway")] == ["create-bucket"]
        assert store.audit.verify()[0] == []
