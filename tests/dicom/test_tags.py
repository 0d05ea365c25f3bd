"""Tests for objfs.dicom.tags: sniffing, extraction, truncation detection."""

from __future__ import annotations

import io
import os
import random
import struct
import time

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from objfs.dicom.synth import make_instance
from objfs.dicom.tags import (
    INDEXED_TAGS,
    complete_file_check,
    extract_tags,
    looks_like_dicom,
    s3_tags,
)

HEAD = 2 * 1024 * 1024
# hostile and truncated inputs make pydicom warn by design
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def make_ct(
    patient_id: str = "PAT001",
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    series_uid: str = "1.2.826.0.1.3680043.8.498.1.1",
    sop_uid: str = "1.2.826.0.1.3680043.8.498.1.1.1",
    ts: str = ExplicitVRLittleEndian,
    size: int = 64,
    frames: int = 1,
    pixels: bytes | None = None,
    **extra: object,
) -> bytes:
    """Build a Part-10 CT instance (size x size uint16) and return its bytes.

    The study generator's instance, with values chosen to be distinctive
    (non-ASCII name, fractional time, a multi-valued attribute).
    """
    ds = make_instance(
        patient_id=patient_id,
        patient_name="Müller^Hans",
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        number=7,
        study_time="093015.25",
        accession="ACC42",
        series_number=3,
        size=size,
        transfer_syntax=ts,
    )
    ds.ModalitiesInStudy = ["CT", "PR"]
    ds.ReferringPhysicianName = "Ref^Doc"
    ds.StudyDescription = "CHEST"
    ds.SeriesDescription = "AXIAL 1mm"
    ds.PatientSex = "M"
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in extra.items():
        setattr(ds, key, value)
    frame_len = size * size * 2
    total = frame_len * frames
    raw = pixels if pixels is not None else (bytes(range(256)) * (total // 256 + 1))[:total]
    if ts == RLELossless:
        # structure is what matters here, not a valid RLE bitstream
        ds.PixelData = encapsulate([raw[i * frame_len : (i + 1) * frame_len] for i in range(frames)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = raw
        ds["PixelData"].VR = "OW"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _cut_points(data: bytes, step: int) -> list[int]:
    return list(range(0, len(data) - 1, step)) + [len(data) - 1, len(data) - 2]


# ----------------------------------------------------------------- sample files

SAMPLES = [
    "CT_small.dcm",  # explicit VR LE
    "MR_small.dcm",
    "MR_small_implicit.dcm",  # implicit VR LE
    "MR_small_bigendian.dcm",  # explicit VR BE
    "MR_small_RLE.dcm",  # RLE
    "MR_small_jp2klossless.dcm",  # JPEG 2000
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmd.dcm",
    "image_dfl.dcm",  # deflated
    "rtplan.dcm",  # no pixel data
    "liver_expb_1frame.dcm",
    "SC_rgb_rle_2frame.dcm",  # multi-frame encapsulated
    "SC_ybr_full_422_uncompressed.dcm",
    "ExplVR_LitEndNoMeta.dcm",  # raw dataset, no preamble
]


def _sample(name: str) -> str:
    path = get_testdata_file(name)
    if path is None or not os.path.exists(path):
        pytest.fail(f"{name} is not bundled with this pydicom; the sample list needs updating")
    return path


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_files_extract_and_check(name: str) -> None:
    path = _sample(name)
    data = open(path, "rb").read()
    ref = pydicom.dcmread(path, force=True)
    tags = extract_tags(data[:HEAD])
    assert tags is not None
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "PatientID", "Modality", "StudyDate"):
        if ref.get(kw) not in (None, ""):
            assert tags[kw] == str(ref.get(kw)), kw
    if ref.get("InstanceNumber") not in (None, ""):
        assert tags["InstanceNumber"] == int(ref.InstanceNumber)
    expected_ts = ref.file_meta.get("TransferSyntaxUID") if ref.file_meta else None
    if expected_ts:
        assert tags["TransferSyntaxUID"] == expected_ts
    else:
        assert tags["TransferSyntaxUID"] == ExplicitVRLittleEndian
    assert complete_file_check(path) is None
    with open(path, "rb") as fp:
        assert complete_file_check(fp) is None
    assert set(tags) <= set(INDEXED_TAGS)


def test_ct_small_values() -> None:
    tags = extract_tags(open(_sample("CT_small.dcm"), "rb").read())
    assert tags is not None
    assert tags["PatientName"] == "CompressedSamples^CT1"
    assert tags["Modality"] == "CT"
    assert tags["PatientID"] == "1CT1"
    assert tags["SpecificCharacterSet"] == ["ISO_IR 100"]


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_bundled_truncated_files(name: str) -> None:
    path = _sample(name)
    assert complete_file_check(path) is not None
    # the header is intact so the tags are still available
    assert extract_tags(open(path, "rb").read()) is not None


# ----------------------------------------------------------------- generated


@pytest.mark.parametrize(
    "ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless]
)
def test_generated_roundtrip(ts: str) -> None:
    data = make_ct(ts=ts)
    tags = extract_tags(data)
    assert tags == {
        "SpecificCharacterSet": ["ISO_IR 100"],
        "PatientID": "PAT001",
        "PatientName": "Müller^Hans",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1",
        "StudyDate": "20240131",
        "StudyTime": "093015.25",
        "AccessionNumber": "ACC42",
        "StudyDescription": "CHEST",
        "ReferringPhysicianName": "Ref^Doc",
        "ModalitiesInStudy": ["CT", "PR"],
        "StudyID": "1",
        "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.1.1",
        "Modality": "CT",
        "SeriesNumber": 3,
        "SeriesDescription": "AXIAL 1mm",
        "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.1.1.1",
        "SOPClassUID": CTImageStorage,
        "InstanceNumber": 7,
        "TransferSyntaxUID": ts,
    }
    assert complete_file_check(io.BytesIO(data)) is None
    import msgpack

    assert msgpack.unpackb(msgpack.packb(tags)) == tags


def test_head_larger_file_only_prefix_given() -> None:
    data = make_ct(size=1100)  # ~2.3 MiB of pixel data
    assert len(data) > HEAD
    tags = extract_tags(data[:HEAD])
    assert tags is not None and tags["SOPInstanceUID"].endswith(".1.1.1")
    assert complete_file_check(io.BytesIO(data[:HEAD])) is not None
    assert complete_file_check(io.BytesIO(data)) is None


def test_deflated_head_larger_than_prefix() -> None:
    rnd = random.Random(1)
    noise = bytes(rnd.getrandbits(8) for _ in range(1100 * 1100 * 2))  # incompressible
    data = make_ct(ts=DeflatedExplicitVRLittleEndian, size=1100, pixels=noise)
    assert len(data) > HEAD
    tags = extract_tags(data[:HEAD])
    assert tags is not None and tags["TransferSyntaxUID"] == DeflatedExplicitVRLittleEndian
    assert complete_file_check(io.BytesIO(data[:HEAD])) == "deflated dataset is truncated"
    assert complete_file_check(io.BytesIO(data)) is None


def test_head_cut_inside_uid_is_not_indexed() -> None:
    data = make_ct()
    pos = data.index(b"1.2.826.0.1.3680043.8.498.1.1.1\x00", 300)  # SOPInstanceUID in dataset
    assert extract_tags(data[: pos + 10]) is None
    # cut after all indexed attributes but before pixel data: tags complete
    pix = data.index(b"\xe0\x7f\x10\x00")
    assert extract_tags(data[: pix + 20]) == extract_tags(data)


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless])
def test_every_cut_is_detected(ts: str) -> None:
    data = make_ct(ts=ts, size=16, frames=2)
    ds = pydicom.dcmread(io.BytesIO(data))
    # a cut exactly between elements before SOPClassUID leaves a valid,
    # tiny non-image dataset - indistinguishable from a real one
    sop_class_at = data.index(CTImageStorage.encode(), 200) - 8
    missed = [cut for cut in _cut_points(data, 3) if complete_file_check(io.BytesIO(data[:cut])) is None]
    assert all(cut <= sop_class_at for cut in missed), (missed, sop_class_at)
    assert ds.SOPInstanceUID


def test_cut_in_pixel_data_and_in_header() -> None:
    data = make_ct()
    in_pixels = complete_file_check(io.BytesIO(data[:-100]))
    assert in_pixels is not None and "7FE0,0010" in in_pixels
    assert extract_tags(data[:-100]) is not None  # header still complete
    in_header = data[: data.index(b"MONOCHROME2") + 3]
    assert complete_file_check(io.BytesIO(in_header)) is not None
    assert extract_tags(in_header) is not None


def test_short_native_pixel_data_is_truncation() -> None:
    # a writer that stopped early but wrote a consistent (short) length
    data = make_ct(pixels=bytes(64 * 64 * 2 - 512))
    assert "expected" in complete_file_check(io.BytesIO(data))


def test_encapsulated_missing_delimiter(tmp_path) -> None:
    data = make_ct(ts=RLELossless)
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    path = tmp_path / "x.dcm"
    path.write_bytes(data[:-8])
    assert "delimiter" in complete_file_check(str(path))


def test_multiframe_fragment_count() -> None:
    data = make_ct(ts=RLELossless, size=16, frames=3)
    assert complete_file_check(io.BytesIO(data)) is None
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.NumberOfFrames = 4
    buf = io.BytesIO()
    ds.save_as(buf)
    assert "fragments" in complete_file_check(io.BytesIO(buf.getvalue()))


def test_missing_required_uid() -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    del ds.SeriesInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    assert extract_tags(buf.getvalue()) is None


def test_hostile_uid_rejected() -> None:
    data = make_ct(sop_uid="1.2.3/../../etc")
    assert extract_tags(data) is None


# ----------------------------------------------------------------- non-DICOM / hostile


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"DICM",
        b"hello world" * 100,
        b"\x00" * 4096,
        b"%PDF-1.4\n" + b"x" * 300,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,
        b"\x08\x00" + b"\xff" * 200,
    ],
)
def test_non_dicom(blob: bytes) -> None:
    assert extract_tags(blob) is None
    assert complete_file_check(io.BytesIO(blob)) is not None


def test_raw_dataset_sniffing() -> None:
    raw = open(_sample("ExplVR_LitEndNoMeta.dcm"), "rb").read()
    assert looks_like_dicom(raw)
    assert looks_like_dicom(make_ct())
    assert not looks_like_dicom(b"\x08\x00\x05\x00" + b"zz" * 20)
    assert not looks_like_dicom(b"\x08\x00\x05\x00CS\x40\x00ISO")  # value past end


def test_hostile_huge_lengths_never_raise() -> None:
    base = make_ct(size=8)
    dataset_at = base.index(b"\x08\x00\x05\x00")
    # (0008,0010) SQ of undefined length containing nothing, huge UN, huge OB
    evil = [
        struct.pack("<HH2sHL", 0x0008, 0x0100, b"OB", 0, 0xFFFFFFF0),
        struct.pack("<HH2sHL", 0x0008, 0x0100, b"SQ", 0, 0xFFFFFFFF) + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" * 5000,
        struct.pack("<HH2sHL", 0x0009, 0x0010, b"UN", 0, 0xFFFFFFFF) + b"\x08\x00\x05\x00" * 100,
        struct.pack("<HH2sH", 0x0008, 0x0020, b"DA", 0xFFFF),
    ]
    for chunk in evil:
        blob = base[: dataset_at + 18] + chunk
        assert extract_tags(blob) is None or isinstance(extract_tags(blob), dict)
        assert complete_file_check(io.BytesIO(blob)) is not None


def test_random_mutations_never_raise() -> None:
    rnd = random.Random(1234)
    base = make_ct(size=8)
    for _ in range(300):
        blob = bytearray(base)
        for _ in range(rnd.randint(1, 12)):
            blob[rnd.randrange(128, len(blob))] = rnd.getrandbits(8)
        cut = rnd.randint(0, len(blob))
        for sample in (bytes(blob), bytes(blob[:cut])):
            result = extract_tags(sample)
            assert result is None or isinstance(result, dict)
            check = complete_file_check(io.BytesIO(sample))
            assert check is None or isinstance(check, str)
    for _ in range(100):
        noise = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 600)))
        assert extract_tags(b"\x00" * 128 + b"DICM" + noise) is None or True
        assert extract_tags(noise) is None


def test_sequences_before_indexed_tags() -> None:
    item = Dataset()
    item.ReferencedSOPClassUID = CTImageStorage
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian):
        data = make_ct(ts=ts, ReferencedStudySequence=Sequence([item, item]))
        tags = extract_tags(data)
        assert tags is not None and tags["InstanceNumber"] == 7, ts
        assert complete_file_check(io.BytesIO(data)) is None


def test_many_sequence_items_are_cheap() -> None:
    pre = b"\0" * 128 + b"DICM"
    meta = struct.pack("<HH2sH", 2, 0x10, b"UI", 20) + b"1.2.840.10008.1.2.1\0"
    seq = struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    blob = pre + meta + seq + b"\xfe\xff\x00\xe0\x00\x00\x00\x00" * 250_000
    start = time.monotonic()
    assert extract_tags(blob) is None
    assert complete_file_check(io.BytesIO(blob)) is not None
    assert time.monotonic() - start < 3  # ~0.25 s; pydicom alone takes ~3 s


def test_s3_tags() -> None:
    tags = extract_tags(make_ct(patient_id="PAT 1/ä*?#" + "x" * 400))
    s3 = s3_tags(tags)
    assert set(s3) == {"PatientID", "StudyDate", "Modality"}
    assert s3["PatientID"].startswith("PAT 1/_")
    assert len(s3["PatientID"]) <= 256
    assert s3["StudyDate"] == "20240131" and s3["Modality"] == "CT"
    assert s3_tags(None) == {}
    assert s3_tags({"Modality": ""}) == {}
