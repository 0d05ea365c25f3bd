"""The gateway as a real subprocess, driven by a pynetdicom SCU."""

from __future__ import annotations

from pathlib import Path

import dicom_scu as scu
import pytest
from dicomtest import configure, dataset_bytes, sop_uid, start_gateway, stop_gateway
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from objfs.dicom.index import canonical_key
from objfs.dicom.synth import write_study
from objfs.store.errors import NoSuchKey
from objfs.stores import Store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SAMPLES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "image_dfl.dcm",  # deflated explicit VR little endian
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Path]]:
    return write_study(
        tmp_path_factory.mktemp("study"),
        instances=8,
        series=2,
        patient_id="PID-GW",
        patient_name="Gate^Way",
        study_date="20240215",
        accession="ACC-GW",
    )


@pytest.fixture(scope="module")
def stored(gateway, study):
    statuses = scu.store_files(gateway.port, study[1])
    assert statuses == [0] * len(study[1])
    return study


def _meta_pairs(paths: list[Path]) -> list[tuple[str, str]]:
    pairs = []
    for p in paths:
        meta = dcmread(p, stop_before_pixels=True).file_meta
        pairs.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return pairs


def test_echo_and_unknown_calling_aet_rejected(gateway) -> None:
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="OBJFS")
    assert assoc.is_rejected
    assert scu.find(gateway.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""})[1] == 0


def test_stored_as_canonical_objects_with_tags(gateway, stored) -> None:
    study_uid, paths = stored
    with Store.open(gateway.store) as store:
        for path in paths:
            ds = dcmread(path, stop_before_pixels=True)
            key = canonical_key(
                {
                    "StudyInstanceUID": ds.StudyInstanceUID,
                    "SeriesInstanceUID": ds.SeriesInstanceUID,
                    "SOPInstanceUID": ds.SOPInstanceUID,
                }
            )
            info = store.head_object("pacs", key)
            body = store.get_object_bytes("pacs", key)
            assert dataset_bytes(body) == dataset_bytes(path.read_bytes())  # stored exactly as received
            assert dcmread(path.parent / path.name).PatientID == "PID-GW"
            assert info.tags == {"PatientID": "PID-GW", "StudyDate": "20240215", "Modality": "CT"}
            assert info.dicom["SOPInstanceUID"] == ds.SOPInstanceUID


def test_find_levels_and_matching(gateway, stored) -> None:
    study_uid, paths = stored
    port = gateway.port
    # Patient Root, PATIENT level: wildcard on PN (case-insensitive), return keys
    found, status = scu.find(
        port,
        {"QueryRetrieveLevel": "PATIENT", "PatientName": "gate*", "PatientID": "", "NumberOfPatientRelatedInstances": ""},
        patient_root=True,
    )
    assert status == 0 and len(found) == 1
    assert found[0].PatientID == "PID-GW" and int(found[0].NumberOfPatientRelatedInstances) == 8
    # STUDY level: date range, return keys filled, unknown return key empty
    q = {
        "QueryRetrieveLevel": "STUDY",
        "StudyDate": "20240201-20240229",
        "StudyInstanceUID": "",
        "AccessionNumber": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedSeries": "",
        "NumberOfStudyRelatedInstances": "",
        "StudyID": "",
        "AdmittingDiagnosesDescription": "",
    }
    found, _ = scu.find(port, q)
    assert [f.StudyInstanceUID for f in found] == [study_uid]
    assert (
        found[0].AccessionNumber == "ACC-GW"
        and list(found[0].ModalitiesInStudy) in (["CT"], "CT")
        or found[0].ModalitiesInStudy == "CT"
    )
    assert int(found[0].NumberOfStudyRelatedSeries) == 2 and int(found[0].NumberOfStudyRelatedInstances) == 8
    assert found[0].StudyID == "1"  # indexed since the gateway conformance work
    assert found[0].AdmittingDiagnosesDescription in ("", None)  # not held: returned empty
    assert scu.find(port, dict(q, StudyDate="-20231231"))[0] == []
    assert len(scu.find(port, dict(q, StudyDate="20240215"))[0]) == 1
    # ? wildcard, list of UIDs, universal matching
    assert len(scu.find(port, dict(q, StudyDate="", AccessionNumber="ACC-G?"))[0]) == 1
    assert len(scu.find(port, dict(q, StudyDate="", StudyInstanceUID=f"1.2.3\\{study_uid}"))[0]) == 1
    # SERIES and IMAGE levels
    series, _ = scu.find(
        port,
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": "",
            "Modality": "CT",
            "NumberOfSeriesRelatedInstances": "",
        },
    )
    assert len(series) == 2 and all(int(s.NumberOfSeriesRelatedInstances) == 4 for s in series)
    images, _ = scu.find(
        port,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series[0].SeriesInstanceUID,
            "SOPInstanceUID": "",
            "InstanceNumber": "",
        },
    )
    assert len(images) == 4
    one, _ = scu.find(
        port,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series[0].SeriesInstanceUID,
            "SOPInstanceUID": images[0].SOPInstanceUID,
        },
    )
    assert len(one) == 1
    # Study Root has no PATIENT level
    assert scu.find(port, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""})[1] == 0xA900


def test_move_and_get_whole_study_bit_exact(gateway, stored, dest_port) -> None:
    study_uid, paths = stored
    originals = {sop_uid(p): dataset_bytes(p.read_bytes()) for p in paths}
    receiver = scu.Receiver(dest_port)
    try:
        statuses = scu.move(gateway.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid})
    finally:
        receiver.close()
    assert statuses[-1] == 0
    assert receiver.received == originals
    got, statuses = scu.get(gateway.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}, _meta_pairs(paths))
    assert statuses[-1] == 0
    assert got == originals


def test_move_to_unknown_destination(gateway, stored) -> None:
    statuses = scu.move(gateway.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": stored[0]}, destination="NOWHERE")
    assert statuses == [0xA801]


def test_sample_files_in_many_transfer_syntaxes(gateway, tmp_path: Path) -> None:
    paths = []
    for name in SAMPLES:
        # the samples share SOP Instance UIDs: give each its own (pydicom
        # writes it back in the sample's transfer syntax)
        ds = dcmread(get_testdata_file(name))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dst = tmp_path / name
        ds.save_as(dst)
        assert dcmread(dst).file_meta.TransferSyntaxUID == dcmread(get_testdata_file(name)).file_meta.TransferSyntaxUID
        paths.append(dst)
    paths.append(_jpeg_lossless(tmp_path / "jpeg_lossless.dcm"))
    assert scu.store_files(gateway.port, paths) == [0] * len(paths)
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True)
        got, statuses = scu.get(
            gateway.port,
            {
                "QueryRetrieveLevel": "IMAGE",
                "StudyInstanceUID": ds.StudyInstanceUID,
                "SeriesInstanceUID": ds.SeriesInstanceUID,
                "SOPInstanceUID": ds.SOPInstanceUID,
            },
            _meta_pairs([path]),
        )
        assert statuses[-1] == 0, path.name
        assert got == {ds.SOPInstanceUID: dataset_bytes(path.read_bytes())}, path.name


def _jpeg_lossless(path: Path) -> Path:
    """A JPEG Lossless SV1 instance (the gateway stores it as received; the
    fragment need not decode)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_truncated_and_non_dicom_refused_nothing_stored(gateway, study, tmp_path: Path) -> None:
    ok = dcmread(study[1][0])
    # truncated: a valid header whose pixel data stops short
    truncated = tmp_path / "trunc.dcm"
    data = bytearray(Path(study[1][0]).read_bytes())
    fresh = generate_uid()
    ok.SOPInstanceUID = fresh
    ok.file_meta.MediaStorageSOPInstanceUID = fresh
    ok.save_as(truncated, enforce_file_format=True)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) - 3000])
    # not DICOM: a proper file meta followed by garbage
    garbage = tmp_path / "garbage.dcm"
    meta_only = tmp_path / "meta.dcm"
    ds = Dataset()
    ds.file_meta = ok.file_meta
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(meta_only, enforce_file_format=True)
    garbage.write_bytes(meta_only.read_bytes() + b"this is a text report, not a dataset\n" * 100)
    statuses = scu.store_files(gateway.port, [truncated, garbage])
    assert all(0xC000 <= s <= 0xCFFF for s in statuses), [hex(s) for s in statuses]
    with Store.open(gateway.store) as store:
        key = canonical_key(
            {"StudyInstanceUID": ok.StudyInstanceUID, "SeriesInstanceUID": ok.SeriesInstanceUID, "SOPInstanceUID": fresh}
        )
        with pytest.raises(NoSuchKey):
            store.head_object("pacs", key)
    found, _ = scu.find(
        gateway.port,
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": ok.StudyInstanceUID,
            "SeriesInstanceUID": ok.SeriesInstanceUID,
            "SOPInstanceUID": fresh,
        },
    )
    assert found == []


def _variant(path: Path, out: Path, marker: str) -> Path:
    ds = dcmread(path)
    ds.SeriesDescription = marker
    ds.save_as(out, enforce_file_format=True)
    return out


@pytest.mark.parametrize("policy", ["keep", "reject", "replace"])
def test_duplicate_policies(policy: str, tmp_path: Path) -> None:
    from objfs.store import init_store

    store_path = tmp_path / "store"
    init_store(store_path).close()
    configure(store_path, duplicates=policy)
    gw = start_gateway(store_path)
    try:
        _, (first,) = write_study(tmp_path / "s", instances=1)
        second = _variant(first, tmp_path / "second.dcm", "resent")
        assert scu.store_files(gw.port, [first]) == [0]
        status = scu.store_files(gw.port, [second])[0]
        ds = dcmread(first, stop_before_pixels=True)
        key = canonical_key(
            {
                "StudyInstanceUID": ds.StudyInstanceUID,
                "SeriesInstanceUID": ds.SeriesInstanceUID,
                "SOPInstanceUID": ds.SOPInstanceUID,
            }
        )
        with Store.open(store_path) as store:
            body = dataset_bytes(store.get_object_bytes("pacs", key))
        expected = {"keep": (0, first), "reject": (0x0111, first), "replace": (0, second)}[policy]
        assert status == expected[0]
        assert body == dataset_bytes(expected[1].read_bytes())
    finally:
        assert "Traceback" not in stop_gateway(gw)
