"""Interoperability with dcmtk (storescu, findscu, movescu, getscu, echoscu)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from dicomtest import DCMTK_ENV, dataset_bytes, sop_uid

from objfs.dicom.synth import write_study

# Never skipped: .ci/run installs dcmtk; without it these tests fail (storescu not found).
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dcmtk_study(tmp_path_factory: pytest.TempPathFactory, gateway):
    uid, paths = write_study(
        tmp_path_factory.mktemp("dcmtk"),
        instances=20,
        series=2,
        patient_id="PID-DCMTK",
        patient_name="Dcm^Tk",
        study_date="20220310",
    )
    start = time.monotonic()
    res = run("storescu", "-aec", "OBJFS", "127.0.0.1", str(gateway.port), *map(str, paths))
    elapsed = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    # With Nagle on either side 20 instances would take ~1 s of stalls alone.
    assert elapsed < 5, f"storescu took {elapsed:.1f}s"
    return uid, paths


def test_echoscu(gateway) -> None:
    assert run("echoscu", "-aec", "OBJFS", "127.0.0.1", str(gateway.port)).returncode == 0
    refused = run("echoscu", "-aet", "STRANGER", "-aec", "OBJFS", "127.0.0.1", str(gateway.port))
    assert refused.returncode != 0


def test_findscu(gateway, dcmtk_study, tmp_path: Path) -> None:
    uid, _ = dcmtk_study
    res = run(
        "findscu",
        "-S",
        "-aec",
        "OBJFS",
        "-X",
        "-od",
        str(tmp_path),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "PatientName=dcm*",
        "-k",
        "StudyDate=20220101-20221231",
        "-k",
        "StudyInstanceUID",
        "-k",
        "NumberOfStudyRelatedInstances",
        "127.0.0.1",
        str(gateway.port),
    )
    assert res.returncode == 0, res.stderr
    from pydicom import dcmread

    answers = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    assert [a.StudyInstanceUID for a in answers] == [uid]
    assert int(answers[0].NumberOfStudyRelatedInstances) == 20
    (tmp_path / "p").mkdir()
    res = run(
        "findscu",
        "-P",
        "-aec",
        "OBJFS",
        "-X",
        "-od",
        str(tmp_path / "p"),
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        "PatientID=PID-DCMTK",
        "-k",
        "PatientName",
        "127.0.0.1",
        str(gateway.port),
    )
    assert res.returncode == 0, res.stderr
    (patient,) = [dcmread(p) for p in (tmp_path / "p").glob("rsp*.dcm")]
    assert patient.PatientName == "Dcm^Tk"


def test_movescu_to_storescp_bit_exact(gateway, dcmtk_study, dest_port: int, tmp_path: Path) -> None:
    uid, paths = dcmtk_study
    out = tmp_path / "moved"
    out.mkdir()
    scp = subprocess.Popen(
        ["storescp", "+B", "-od", str(out), str(dest_port)], env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(0.5)
        res = run(
            "movescu",
            "-S",
            "-aec",
            "OBJFS",
            "-aem",
            "DEST",
            *study_at(uid, gateway.port),
        )
        assert res.returncode == 0, res.stderr
    finally:
        scp.terminate()
        scp.wait(10)
    _assert_same(paths, list(out.iterdir()))


def test_getscu_bit_exact(gateway, dcmtk_study, tmp_path: Path) -> None:
    uid, paths = dcmtk_study
    start = time.monotonic()
    res = run(
        "getscu",
        "-S",
        "-aec",
        "OBJFS",
        "-od",
        str(tmp_path),
        *study_at(uid, gateway.port),
    )
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - start < 10
    _assert_same(paths, list(tmp_path.iterdir()))


def study_at(uid: str, port: int) -> list[str]:
    """The retrieve arguments naming one whole study on the gateway."""
    return ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(port)]


def _assert_same(originals: list[Path], received: list[Path]) -> None:
    want = {sop_uid(p): dataset_bytes(p.read_bytes()) for p in originals}
    got = {sop_uid(p): dataset_bytes(p.read_bytes()) for p in received}
    assert got.keys() == want.keys()
    assert all(got[k] == want[k] for k in want)
