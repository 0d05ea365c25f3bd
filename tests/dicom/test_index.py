"""The DICOM index follows every object change, in the object's transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from objfs.dicom.index import find, find_instances, sop_locations
from objfs.dicom.synth import write_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def two_studies(store, tmp_path: Path):
    store.create_bucket("pacs")
    a, pa = write_study(tmp_path / "a", instances=6, series=2, patient_id="P1", patient_name="Doe^Jane")
    b, pb = write_study(
        tmp_path / "b", instances=3, patient_id="P2", patient_name="Roe^Rick", modality="MR", study_date="20230105"
    )
    for p in pa:
        store.put_object("pacs", f"legacy/a/{p.name}", p.read_bytes())
    for p in pb:
        store.put_object("pacs", f"legacy/b/{p.name}", p.read_bytes())
    return a, pa, b, pb


def _counts(store):
    return {
        e["StudyInstanceUID"]: (e["NumberOfStudyRelatedSeries"], e["NumberOfStudyRelatedInstances"])
        for e in find(store, {}, "STUDY", bucket="pacs")
    }


def test_any_put_is_indexed_with_s3_tags(store, two_studies) -> None:
    a, pa, b, pb = two_studies
    info = store.head_object("pacs", "legacy/b/IMG00000.dcm")
    assert info.tags == {"PatientID": "P2", "StudyDate": "20230105", "Modality": "MR"}
    assert _counts(store) == {a: (2, 6), b: (1, 3)}
    patients = {e["PatientID"]: e for e in find(store, {}, "PATIENT", bucket="pacs")}
    assert patients["P1"]["NumberOfPatientRelatedInstances"] == 6
    assert patients["P1"]["NumberOfPatientRelatedSeries"] == 2
    assert [e["StudyInstanceUID"] for e in find(store, {"ModalitiesInStudy": "MR"}, "STUDY", bucket="pacs")] == [b]
    assert len(find(store, {"PatientID": "P1"}, "SERIES", bucket="pacs")) == 2
    assert len(find(store, {"StudyInstanceUID": a}, "IMAGE", bucket="pacs")) == 6


def test_delete_rename_replace_keep_index_right(store, two_studies, tmp_path: Path) -> None:
    a, pa, b, pb = two_studies
    store.delete_object("pacs", "legacy/a/IMG00000.dcm")
    assert _counts(store)[a] == (2, 5)
    store.rename_object("pacs", "legacy/a/IMG00001.dcm", "moved/x.dcm")
    keys = sorted(i["key"] for i in find_instances(store, {"StudyInstanceUID": a}, "STUDY", bucket="pacs"))
    assert "moved/x.dcm" in keys and "legacy/a/IMG00001.dcm" not in keys and len(keys) == 5
    # replacing a DICOM body with a non-DICOM one drops it from the index
    store.put_object("pacs", "legacy/a/IMG00002.dcm", b"not dicom any more")
    assert _counts(store)[a] == (2, 4)
    # a rename over a DICOM object drops the overwritten one
    store.rename_object("pacs", "legacy/a/IMG00003.dcm", "legacy/a/IMG00004.dcm")
    assert _counts(store)[a] == (1, 3)  # series 1 of the study is gone entirely
    for p in pb:
        store.delete_object("pacs", f"legacy/b/{p.name}")
    assert b not in _counts(store)
    assert [e["PatientID"] for e in find(store, {}, "PATIENT", bucket="pacs")] == ["P1"]


def test_same_sop_under_two_names_is_retrieved_once(store, two_studies) -> None:
    a, pa, b, pb = two_studies
    store.put_object("pacs", "copy/IMG.dcm", pb[0].read_bytes())
    found = find_instances(store, {"StudyInstanceUID": b}, "STUDY", bucket="pacs")
    assert len(found) == 3
    sop = found[0]["tags"]["SOPInstanceUID"]
    held = {loc["key"] for loc in sop_locations(store, "pacs", pb[0].parent and found[0]["tags"]["SOPInstanceUID"])}
    assert sop == found[0]["tags"]["SOPInstanceUID"] and len(held) >= 1


def test_versioned_bucket_indexes_current_version(store, tmp_path: Path) -> None:
    store.create_bucket("ver")
    store.update_bucket("ver", versioning="Enabled")
    _, (p,) = write_study(tmp_path / "v", instances=1)
    store.put_object("ver", "x.dcm", p.read_bytes())
    store.put_object("ver", "x.dcm", p.read_bytes())
    assert len(find(store, {}, "IMAGE", bucket="ver")) == 1
    assert find(store, {}, "STUDY", bucket="ver")[0]["NumberOfStudyRelatedInstances"] == 1
    store.delete_object("ver", "x.dcm")  # delete marker: no current DICOM object
    assert find(store, {}, "IMAGE", bucket="ver") == []


def test_user_tags_are_merged_not_clobbered(store, tmp_path: Path) -> None:
    store.create_bucket("tags")
    _, (p,) = write_study(tmp_path / "t", instances=1, patient_id="PT")
    info = store.put_object("tags", "t.dcm", p.read_bytes(), tags={"project": "trial-7"})
    assert info.tags == {"project": "trial-7", "PatientID": "PT", "StudyDate": "20240131", "Modality": "CT"}
