"""A study a legacy PACS copies into the FUSE mount is found by C-FIND and retrievable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import REPO, dataset_bytes, sop_uid, start_gateway, stop_gateway

from objfs.dicom.synth import write_study
from objfs.store import init_store

# Never skipped: CI runs as root with /dev/fuse; a mount that cannot be made fails the test.
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def test_study_copied_into_mount_is_found_and_retrieved(tmp_path: Path) -> None:
    store = tmp_path / "store"
    init_store(store).close()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "mount.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "objfs.cli", "mount", str(store), str(mnt), "--foreground"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    gw = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("mount did not come up: " + (tmp_path / "mount.log").read_text())
            time.sleep(0.05)
        gw = start_gateway(store)  # creates bucket "pacs"
        uid, paths = write_study(tmp_path / "src", instances=5, patient_id="FUSE1", patient_name="Mount^Ed")
        target = mnt / "pacs" / "archive" / "2024" / "FUSE1"
        target.mkdir(parents=True)
        for p in paths:  # what a legacy PACS does: plain file copies
            shutil.copyfile(p, target / p.name)
        found, status = scu.find(
            gw.port,
            {"QueryRetrieveLevel": "STUDY", "PatientID": "FUSE1", "StudyInstanceUID": "", "NumberOfStudyRelatedInstances": ""},
        )
        assert status == 0 and [f.StudyInstanceUID for f in found] == [uid]
        assert int(found[0].NumberOfStudyRelatedInstances) == 5
        from pydicom import dcmread

        meta = dcmread(paths[0], stop_before_pixels=True).file_meta
        got, statuses = scu.get(
            gw.port,
            {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid},
            [(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))],
        )
        assert statuses[-1] == 0
        assert got == {sop_uid(p): dataset_bytes(p.read_bytes()) for p in paths}
        # the copies keep their paths: the PACS still finds them there
        assert (target / paths[0].name).read_bytes() == paths[0].read_bytes()
        # deleting through the mount removes them from the index
        (target / paths[0].name).unlink()
        found, _ = scu.find(gw.port, {"QueryRetrieveLevel": "STUDY", "PatientID": "FUSE1", "NumberOfStudyRelatedInstances": ""})
        assert int(found[0].NumberOfStudyRelatedInstances) == 4
    finally:
        if gw is not None:
            stop_gateway(gw)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
        log.close()
