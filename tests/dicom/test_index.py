"""The DICOM index follows every object change, in the object's transaction."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from objfs.dicom.index import find, find_instances, sop_locations
from objfs.dicom.synth import write_study
from objfs.store.index import pack
from objfs.stores import Store

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


# -- size and format ------------------------------------------------------------------------------

_PREVIOUS = "6396232"  # the last main commit whose index wrote UID-keyed instance entries


def _previous_indexer(tmp_path: Path):
    """The DicomIndexer of the previous format, loaded from git (the real code that wrote older stores)."""
    repo = Path(__file__).resolve().parents[2]
    source = subprocess.run(
        ["git", "-C", str(repo), "show", f"{_PREVIOUS}:objfs/dicom/index.py"], capture_output=True, check=True
    ).stdout
    path = tmp_path / "index_previous.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("objfs.dicom.index_previous", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DicomIndexer()


def _answers(store, bucket: str = "pacs") -> dict[str, Any]:
    """What every query of the index answers, order aside."""

    def rows(entries):
        return sorted(json.dumps(e, sort_keys=True) for e in entries)

    out: dict[str, Any] = {lv: rows(find(store, {}, lv, bucket=bucket)) for lv in ("PATIENT", "STUDY", "SERIES", "IMAGE")}
    instances = find_instances(store, {}, "PATIENT", bucket=bucket)
    out["retrieve"] = rows(instances)
    sops = sorted({i["tags"]["SOPInstanceUID"] for i in instances})
    out["locations"] = [rows(sop_locations(store, bucket, sop)) for sop in sops]
    out["by_sop"] = [rows(find(store, {"SOPInstanceUID": sop}, "STUDY", bucket=bucket)) for sop in sops[:3]]
    return out


def _leftovers(store) -> list[bytes]:
    with store.index.read() as txn:
        keys = list(txn.scan_keys("dicom")) + list(txn.scan_keys("dicomkeys"))
    return [k for k in keys if k != b"#next"]


def test_an_instance_costs_under_1_kb_of_index(store, tmp_path: Path) -> None:
    """Entries of 120 scanner-shaped CT instances (64-character UIDs, gateway keys): well under 1 KB each."""
    store.create_bucket("pacs")
    for n in range(2):
        _, paths = write_study(tmp_path / str(n), instances=60, series=2, patient_id=f"P{n}", size=8)
        for p in paths:
            body = p.read_bytes()
            store.put_object("pacs", _gateway_key(body), body)
    with store.index.read() as txn:
        used = sum(len(k) + len(pack(v)) + 10 for db in ("dicom", "dicomkeys") for k, v in txn.scan(db))
    assert len(find(store, {}, "IMAGE", bucket="pacs")) == 120
    assert used / 120 < 400, used / 120  # key, value and LMDB's 10-byte node overhead; pages add the slack


def _gateway_key(body: bytes) -> str:
    from objfs.dicom.index import DicomIndexer, canonical_key

    return canonical_key(DicomIndexer().extract(body, "x")["dicom"])


def test_entries_of_the_previous_format_are_read_updated_and_removed(store_path: Path, tmp_path: Path) -> None:
    """A store indexed by the previous code answers the same, takes new instances into its old
    series, counts duplicates across both formats and, emptied, leaves no entry behind."""
    from objfs.store import Store as EngineStore

    _, pa = write_study(tmp_path / "a", instances=6, series=2, patient_id="P1")
    _, pb = write_study(tmp_path / "b", instances=3, patient_id="P2", modality="MR")
    old = EngineStore.open(store_path)
    try:
        old.register_indexer(_previous_indexer(tmp_path))
        old.create_bucket("pacs")
        for p in pa[:4] + pb:
            old.put_object("pacs", _gateway_key(p.read_bytes()), p.read_bytes())
        old.put_object("pacs", "legacy/copy.dcm", pb[0].read_bytes())  # a duplicate, old format
        before = _answers(old)
    finally:
        old.close()
    with Store.open(store_path) as store:
        assert _answers(store) == before
        # new instances join the old series (same study, series and counters)
        for p in pa[4:]:
            store.put_object("pacs", _gateway_key(p.read_bytes()), p.read_bytes())
        store.put_object("pacs", "new/copy.dcm", pb[1].read_bytes())  # a duplicate of an old-format instance
        store.put_object("pacs", "new/copy2.dcm", pa[5].read_bytes())  # a duplicate of a new-format one
        counts = {e["PatientID"]: e["NumberOfPatientRelatedInstances"] for e in find(store, {}, "PATIENT", bucket="pacs")}
        assert counts == {"P1": 6, "P2": 3}
        assert len(find(store, {}, "IMAGE", bucket="pacs")) == 9
        assert len(find_instances(store, {"PatientID": "P2"}, "PATIENT", bucket="pacs")) == 3
        assert {loc["key"] for loc in sop_locations(store, "pacs", _sop(pb[1]))} == {
            _gateway_key(pb[1].read_bytes()),
            "new/copy.dcm",
        }
        series = find(store, {"PatientID": "P1"}, "SERIES", bucket="pacs")
        assert sorted(s["NumberOfSeriesRelatedInstances"] for s in series) == [3, 3]
        # removal of both formats, renames included
        store.rename_object("pacs", "legacy/copy.dcm", "renamed/copy.dcm")
        assert "renamed/copy.dcm" in {loc["key"] for loc in sop_locations(store, "pacs", _sop(pb[0]))}
        for key in _all_keys(store):
            store.delete_object("pacs", key)
        assert find(store, {}, "PATIENT", bucket="pacs") == []
        assert _leftovers(store) == []


def _sop(path: Path) -> str:
    from objfs.dicom.index import DicomIndexer

    return DicomIndexer().extract(path.read_bytes(), "x")["dicom"]["SOPInstanceUID"]


def _all_keys(store) -> list[str]:
    with store.index.read() as txn:
        return [record["key"] for _, record in txn.scan_objects("pacs")]


def test_rebuild_index_from_the_drives_restores_the_dicom_index(store_path: Path, tmp_path: Path) -> None:
    """``objfs rebuild-index`` on a copy of the drives answers every query as the original index did."""
    _, pa = write_study(tmp_path / "a", instances=6, series=2, patient_id="P1")
    _, pb = write_study(tmp_path / "b", instances=2, patient_id="P2", modality="MR")
    with Store.open(store_path) as store:
        store.create_bucket("pacs")
        for p in pa + pb:
            store.put_object("pacs", _gateway_key(p.read_bytes()), p.read_bytes())
        store.put_object("pacs", "legacy/copy.dcm", pa[0].read_bytes())
        store.delete_object("pacs", _gateway_key(pa[1].read_bytes()))
        expected = _answers(store)
    copy = tmp_path / "copy"
    shutil.copytree(store_path, copy, ignore=shutil.ignore_patterns("index", "run", "spool"))
    repo = Path(__file__).resolve().parents[2]
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", str(copy)],
        env=dict(os.environ, PYTHONPATH=str(repo)),
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Store.open(copy) as rebuilt:
        assert _answers(rebuilt) == expected
