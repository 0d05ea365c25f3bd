"""Synthetic DICOM studies for tests, benchmarks and demos (pydicom-generated).

Deterministic given a seed, valid Part-10 files that storescu, pynetdicom and
pydicom accept. Not used by the gateway itself.

:func:`write_large_instance` writes a multi-frame whole-slide image of any
size without holding more than one frame in memory, for the bounded-memory
tests and benchmarks of the gateway.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, MRImageStorage, generate_uid

__all__ = ["make_instance", "write_large_instance", "write_study"]

VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
# Encapsulated Pixel Data (PS3.5 A.4), explicit VR little endian: the element
# header with undefined length, an empty Basic Offset Table item, one item
# per frame, the sequence delimiter.
_PIXEL_DATA_UNDEFINED = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
_ITEM = b"\xfe\xff\x00\xe0"
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root


def make_instance(
    *,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    number: int,
    modality: str = "CT",
    study_date: str = "20240131",
    study_time: str = "093015",
    accession: str = "",
    series_number: int = 1,
    size: int = 64,
    transfer_syntax: str = ExplicitVRLittleEndian,
    seed: int = 0,
) -> Dataset:
    """One image instance (``size`` x ``size``, 16-bit) with file meta, ready to save."""
    meta = FileMetaDataset()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.StudyDescription = f"{modality} study"
    ds.SeriesDescription = f"{modality} series {series_number}"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [0, 0, number]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = random.Random(seed * 100003 + number)
    ds.PixelData = rng.randbytes(size * size * 2)
    return ds


def write_study(
    directory: str | Path,
    *,
    instances: int = 10,
    series: int = 1,
    patient_id: str = "PAT001",
    patient_name: str = "Doe^Jane",
    modality: str = "CT",
    study_date: str = "20240131",
    accession: str = "ACC001",
    size: int = 64,
    seed: int = 0,
    study_uid: str | None = None,
) -> tuple[str, list[Path]]:
    """Write a study of ``instances`` files spread over ``series`` series.

    Returns ``(StudyInstanceUID, paths)``; files are ``directory/IMG#####.dcm``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid(_ROOT)
    series_uids = [generate_uid(_ROOT) for _ in range(series)]
    paths = []
    for i in range(instances):
        s = i % series
        ds = make_instance(
            patient_id=patient_id,
            patient_name=patient_name,
            study_uid=study_uid,
            series_uid=series_uids[s],
            sop_uid=generate_uid(_ROOT),
            number=i + 1,
            modality=modality,
            study_date=study_date,
            accession=accession,
            series_number=s + 1,
            size=size,
            seed=seed,
        )
        path = directory / f"IMG{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths


def write_large_instance(
    path: str | Path,
    *,
    frames: int,
    frame_bytes: int,
    patient_id: str = "WSI001",
    patient_name: str = "Slide^Whole",
    study_uid: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Write a VL Whole Slide Microscopy instance of ``frames`` JPEG-baseline frames.

    The header (File Meta and every element before Pixel Data) is written by
    pydicom; the encapsulated Pixel Data is then appended frame by frame, so
    memory use is one frame whatever ``frames * frame_bytes`` is. Each frame
    is one fragment of exactly ``frame_bytes`` (even, >= 16) bytes, distinct
    from every other frame; the fragments are not decodable JPEG (nothing in
    the archive decodes pixels). Returns the header dataset (without Pixel
    Data): its UIDs address the instance.
    """
    if frame_bytes < 16 or frame_bytes % 2:
        raise ValueError("frame_bytes must be even and at least 16")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = VL_WHOLE_SLIDE_MICROSCOPY_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(_ROOT)
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate = "20240131"
    ds.StudyTime = "093015"
    ds.AccessionNumber = "WSI-ACC"
    ds.Modality = "SM"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or generate_uid(_ROOT)
    ds.SeriesInstanceUID = generate_uid(_ROOT)
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = frames
    ds.Rows = 512
    ds.Columns = 512
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    block = random.Random(seed).randbytes(frame_bytes - 12)
    with open(path, "wb") as out:
        ds.save_as(out, enforce_file_format=True)
        out.write(_PIXEL_DATA_UNDEFINED + _ITEM + b"\0\0\0\0")
        header = _ITEM + struct.pack("<I", frame_bytes)
        for i in range(frames):
            # SOI, the frame number (so no two frames are equal), data, EOI
            out.write(header + b"\xff\xd8" + struct.pack("<Q", i) + block + b"\xff\xd9")
        out.write(_SEQUENCE_DELIMITER)
    return ds
