"""Synthetic DICOM studies for tests, benchmarks and demos (pydicom-generated).

Deterministic given a seed, valid Part-10 files that storescu, pynetdicom and
pydicom accept. Not used by the gateway itself.
"""

from __future__ import annotations

import random
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["make_instance", "write_study"]

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
