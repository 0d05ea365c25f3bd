"""One summary line per DICOM association, with the peer's address, on the gateway's log (stderr)."""

from __future__ import annotations

import re
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import configure, echo, start_gateway, stop_gateway
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from objfs.dicom.synth import write_study
from objfs.stores import init_store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LINE = re.compile(
    r"association (?P<calling>\S+)@127\.0\.0\.1:(?P<port>\d+) -> (?P<called>\S+): (?P<outcome>[a-z ]+) after "
    r"(?P<seconds>[\d.]+) s; stored (?P<stored>\d+) \((?P<stored_bytes>[^)]*)\), found (?P<found>\d+), "
    r"retrieved (?P<retrieved>\d+) \((?P<retrieved_bytes>[^)]*)\)"
)


def test_each_association_ends_with_one_summary_line(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    init_store(store_path).close()
    configure(store_path, allowed=["TESTSCU"])
    gw = start_gateway(store_path)  # its readiness probe is one C-ECHO association
    try:
        study, paths = write_study(tmp_path / "s", instances=2)
        assert scu.store_files(gw.port, paths) == [0, 0]
        found, final = scu.find(gw.port, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": study, "SOPInstanceUID": ""})
        assert final == 0 and len(found) == 2
        meta = dcmread(paths[0], stop_before_pixels=True).file_meta
        got, statuses = scu.get(
            gw.port,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study},
            [(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))],
        )
        assert statuses[-1] == 0 and len(got) == 2
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", gw.port, ae_title="OBJFS")
        assert assoc.is_established
        assoc.abort()
        assert not echo(gw.port, calling="INTRUDER")  # not on the allowlist: rejected, and logged as such
    finally:
        err = stop_gateway(gw)
    lines = [m.groupdict() for m in LINE.finditer(err)]
    assert len(lines) == 6, err  # the probe, store, find, get, the aborted and the rejected one: one line each
    probe, stored, find, get, aborted, rejected = lines
    assert probe["calling"] == "TESTSCU" and probe["called"] == "OBJFS" and probe["outcome"] == "released"
    assert stored["stored"] == "2" and stored["stored_bytes"].endswith("KB") and stored["found"] == "0"
    assert find["found"] == "2" and find["stored"] == "0" and find["outcome"] == "released"
    assert get["retrieved"] == "2" and get["retrieved_bytes"] != "0 B"
    assert aborted["outcome"] == "aborted" and aborted["stored"] == aborted["found"] == aborted["retrieved"] == "0"
    assert rejected["calling"] == "INTRUDER" and rejected["outcome"] == "rejected"
    assert len({line["port"] for line in lines}) == 6  # each names its own peer port
    assert all("INFO objfs.dicom: association" in row for row in err.splitlines() if LINE.search(row))
