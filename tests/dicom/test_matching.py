"""Tests for objfs.dicom.matching: PS3.4 C.2.2.2 matching, aggregation, responses."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from objfs.dicom.matching import (
    ATTRS_BY_LEVEL,
    LEVEL_KEYS,
    VR_OF,
    aggregate,
    build_response,
    match_record,
    matches,
    query_from_dataset,
)


def rec(pid: str, study: str, series: str, sop: str, modality: str = "CT", **kw: object) -> dict:
    r = {
        "PatientID": pid,
        "PatientName": f"Doe^{pid}",
        "PatientSex": "F",
        "StudyInstanceUID": study,
        "StudyDate": "20240131",
        "StudyTime": "093015",
        "SeriesInstanceUID": series,
        "Modality": modality,
        "SeriesNumber": 1,
        "SOPInstanceUID": sop,
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "InstanceNumber": 1,
    }
    r.update(kw)
    return r


# ----------------------------------------------------------------- single value / universal


@pytest.mark.parametrize(
    "query,stored,vr,expected",
    [
        ("CT", "CT", "CS", True),
        ("ct", "CT", "CS", False),  # case-sensitive outside PN
        ("CT", "MR", "CS", False),
        ("ACC1", "ACC1", "SH", True),
        ("ACC1 ", "ACC1", "SH", True),  # trailing padding is insignificant
        ("ACC", "ACC1", "SH", False),
        ("1.2.3", "1.2.3", "UI", True),
        ("1.2.3", "1.2.30", "UI", False),
        ("7", 7, "IS", True),
        ("007", 7, "IS", True),
        ("8", 7, "IS", False),
        ("x", 7, "IS", False),
    ],
)
def test_single_value(query, stored, vr, expected) -> None:
    assert matches(query, stored, vr) is expected


@pytest.mark.parametrize(
    "vr,stored", [("CS", "CT"), ("UI", "1.2"), ("DA", "20200101"), ("PN", "A^B"), ("IS", 3), ("LO", None), ("DA", None)]
)
def test_universal(vr, stored) -> None:
    assert matches("", stored, vr)
    assert matches(None, stored, vr)
    assert matches("*", stored, vr)


def test_non_universal_requires_value() -> None:
    assert not matches("CT", None, "CS")
    assert not matches("CT", "", "CS")
    assert not matches("CT", [], "CS")
    assert not matches("20200101", None, "DA")


# ----------------------------------------------------------------- PN


@pytest.mark.parametrize(
    "query,stored,expected",
    [
        ("doe^john", "DOE^John", True),  # case-insensitive by design
        ("Doe^John", "Doe^John^^^", True),  # trailing empty components
        ("Doe", "Doe^John", False),  # single value is not a prefix match
        ("doe*", "DOE^John", True),
        ("D?E^J*", "Doe^Jane", True),
        ("D?E^J*", "Dodge^Jane", False),
        ("山田^太郎", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
        ("yamada^tarou", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
        ("Müller*", "MÜLLER^Hans", True),
        ("Smith", "Doe^John", False),
    ],
)
def test_person_name(query, stored, expected) -> None:
    assert matches(query, stored, "PN") is expected


# ----------------------------------------------------------------- wildcards


@pytest.mark.parametrize(
    "query,stored,vr,expected",
    [
        ("C*", "CT", "CS", True),
        ("*T", "CT", "CS", True),
        ("?T", "CT", "CS", True),
        ("?", "CT", "CS", False),
        ("M*", "CT", "CS", False),
        ("c*", "CT", "CS", False),  # still case-sensitive
        ("CHEST*", "CHEST PA", "LO", True),
        ("*[a]*", "x[a]y", "LO", True),  # regex metacharacters are literal
        ("*.*", "abc", "LO", False),
        ("AC?1", "ACC1", "SH", True),
        ("1.2.*", "1.2.3", "UI", False),  # no wildcards on UIDs
        ("2020*", "20200101", "DA", False),  # nor on dates
    ],
)
def test_wildcards(query, stored, vr, expected) -> None:
    assert matches(query, stored, vr) is expected


# ----------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "query,stored,expected",
    [
        ("20200101-20201231", "20200615", True),
        ("20200101-20201231", "20200101", True),
        ("20200101-20201231", "20201231", True),
        ("20200101-20201231", "20210101", False),
        ("20200101-20201231", "20191231", False),
        ("-20201231", "19000101", True),
        ("-20201231", "20210101", False),
        ("20200101-", "20990101", True),
        ("20200101-", "20191231", False),
        ("20200615", "20200615", True),
        ("20200615", "20200616", False),
        ("-", "20200616", True),
        ("garbage-20201231", "20200101", False),
        ("20200101-20201231", "2020.06.15", True),  # ACR-NEMA stored form
    ],
)
def test_date_range(query, stored, expected) -> None:
    assert matches(query, stored, "DA") is expected


@pytest.mark.parametrize(
    "query,stored,expected",
    [
        ("0930-1200", "093015.123", True),
        ("0930-1200", "1200", True),
        ("0930-1200", "120059.999", True),  # upper bound covers the whole minute
        ("0930-1200", "120100", False),
        ("0930-1200", "092959.99", False),
        ("-0900", "085959", True),
        ("-0900", "090100", False),
        ("1000-", "235959", True),
        ("1000-", "095959", False),
        ("093015.5-093016", "093015.6", True),
        ("093015.5-093016", "093015.4", False),
        ("0930", "093015", True),  # partial single value = its span
        ("0930", "093100", False),
        ("09:30-12:00", "10:00:00", True),
    ],
)
def test_time_range(query, stored, expected) -> None:
    assert matches(query, stored, "TM") is expected


@pytest.mark.parametrize(
    "query,stored,expected",
    [
        ("20200101-20200102", "20200101235959", True),
        ("20200101120000-20200101130000", "20200101123000.5", True),
        ("20200101120000-20200101130000", "20200101130100", False),
        ("20200101120000+0100-20200101130000+0100", "20200101125959", True),
        ("2020-2021", "20211231", True),
        ("2020-2021", "20220101", False),
        ("-20200101", "20191231120000+0000", True),
    ],
)
def test_datetime_range(query, stored, expected) -> None:
    assert matches(query, stored, "DT") is expected


# ----------------------------------------------------------------- lists / multi-valued


def test_uid_list() -> None:
    assert matches("1.2.3\\1.2.4", "1.2.4", "UI")
    assert matches("1.2.3\\1.2.4", "1.2.3", "UI")
    assert not matches("1.2.3\\1.2.4", "1.2.5", "UI")
    assert not matches("1.2.3\\1.2.4", "1.2.3\\1.2.4", "UI")


def test_multi_valued_stored() -> None:
    assert matches("MR", ["CT", "MR"], "CS")
    assert matches("M?", ["CT", "MR"], "CS")
    assert not matches("PT", ["CT", "MR"], "CS")
    assert matches("PT\\MR", ["CT", "MR"], "CS")  # list in query: any value


def test_match_record() -> None:
    r = rec("P1", "1.1", "1.1.1", "1.1.1.1", AccessionNumber="A7")
    assert match_record({}, r)
    assert match_record({"PatientID": "P1", "StudyDate": "2024-", "Modality": "C*"}, r)
    assert match_record({"PatientName": "doe^p1", "AccessionNumber": ""}, r)
    assert not match_record({"PatientID": "P1", "Modality": "MR"}, r)
    assert not match_record({"StudyDescription": "X*"}, r)  # attribute absent
    # steering and unindexed keys never exclude a record
    assert match_record({"QueryRetrieveLevel": "STUDY", "InstitutionName": "Nowhere", "SpecificCharacterSet": "ISO_IR 100"}, r)
    assert set(VR_OF) == {k for keys in ATTRS_BY_LEVEL.values() for k in keys}
    assert all(LEVEL_KEYS[lv][0] == ATTRS_BY_LEVEL[lv][0] for lv in LEVEL_KEYS)


def test_query_from_dataset() -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = "Doe*"
    q.ModalitiesInStudy = ["CT", "MR"]
    q.StudyInstanceUID = ""
    q.SeriesNumber = "3"
    q.ReferencedStudySequence = Sequence()
    q.InstitutionName = "X"
    assert query_from_dataset(q) == {
        "PatientName": "Doe*",
        "ModalitiesInStudy": "CT\\MR",
        "StudyInstanceUID": "",
        "SeriesNumber": "3",
    }


# ----------------------------------------------------------------- aggregation

RECORDS = [
    rec("P1", "1.1", "1.1.1", "1.1.1.1", "CT"),
    rec("P1", "1.1", "1.1.1", "1.1.1.2", "CT"),
    rec("P1", "1.1", "1.1.2", "1.1.2.1", "PR"),
    rec("P1", "1.2", "1.2.1", "1.2.1.1", "MR"),
    rec("P2", "2.1", "2.1.1", "2.1.1.1", "US", SpecificCharacterSet=["ISO_IR 100"]),
    rec("P1", "1.1", "1.1.1", "1.1.1.1", "CT"),  # duplicate record of the same instance
]


def test_aggregate_study() -> None:
    studies = {e["StudyInstanceUID"]: e for e in aggregate(RECORDS, "STUDY")}
    assert list(studies) == ["1.1", "1.2", "2.1"]
    s = studies["1.1"]
    assert s["ModalitiesInStudy"] == ["CT", "PR"]
    assert s["NumberOfStudyRelatedSeries"] == 2
    assert s["NumberOfStudyRelatedInstances"] == 3
    assert s["PatientID"] == "P1" and "Modality" not in s and "SOPInstanceUID" not in s
    assert studies["2.1"]["SpecificCharacterSet"] == ["ISO_IR 100"]
    # study-level matching against aggregated entries: any modality of the study
    assert [e["StudyInstanceUID"] for e in aggregate(RECORDS, "STUDY") if match_record({"ModalitiesInStudy": "PR"}, e)] == ["1.1"]


def test_aggregate_series_patient_image() -> None:
    series = {e["SeriesInstanceUID"]: e for e in aggregate(RECORDS, "SERIES")}
    assert series["1.1.1"]["NumberOfSeriesRelatedInstances"] == 2
    assert series["1.1.2"]["Modality"] == "PR"
    assert series["1.1.1"]["StudyInstanceUID"] == "1.1"
    patients = {e["PatientID"]: e for e in aggregate(RECORDS, "patient")}
    assert patients["P1"]["NumberOfPatientRelatedStudies"] == 2
    assert patients["P1"]["NumberOfPatientRelatedSeries"] == 3
    assert patients["P1"]["NumberOfPatientRelatedInstances"] == 4
    assert patients["P2"]["NumberOfPatientRelatedStudies"] == 1
    assert set(patients["P1"]) >= {"PatientName", "PatientSex"}
    assert "StudyInstanceUID" not in patients["P1"]
    images = aggregate(RECORDS, "IMAGE")
    assert len(images) == 5 and images[0]["InstanceNumber"] == 1
    with pytest.raises(ValueError):
        aggregate(RECORDS, "FRAME")


def test_aggregate_fills_gaps_and_falls_back_to_stored_modalities() -> None:
    a = {"StudyInstanceUID": "9", "SeriesInstanceUID": "9.1", "SOPInstanceUID": "9.1.1", "ModalitiesInStudy": ["SR"]}
    b = dict(a, SOPInstanceUID="9.1.2", StudyDescription="LATE")
    (entry,) = aggregate([a, b], "STUDY")
    assert entry["ModalitiesInStudy"] == ["SR"]
    assert entry["StudyDescription"] == "LATE"
    assert entry["NumberOfStudyRelatedInstances"] == 2


# ----------------------------------------------------------------- responses


def test_build_response() -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = "Doe*"
    q.StudyInstanceUID = ""
    q.ModalitiesInStudy = ""
    q.NumberOfStudyRelatedInstances = None
    q.StudyDescription = ""
    q.InstitutionName = ""
    q.ReferencedStudySequence = Sequence()
    entry = aggregate(RECORDS[:3], "STUDY")[0]
    r = build_response(q, entry, "STUDY")
    keys = {e.keyword for e in r}
    assert keys == {
        "QueryRetrieveLevel",
        "PatientName",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "StudyDescription",
        "InstitutionName",
        "ReferencedStudySequence",
    }
    assert r.QueryRetrieveLevel == "STUDY"
    assert str(r.PatientName) == "Doe^P1"
    assert list(r.ModalitiesInStudy) == ["CT", "PR"]
    assert r.NumberOfStudyRelatedInstances == 3
    assert r.StudyDescription in ("", None) and r.InstitutionName in ("", None)  # zero-length
    assert len(r.ReferencedStudySequence) == 0
    assert "SpecificCharacterSet" not in r
    assert "PatientID" not in r  # not asked for


def test_build_response_charset_and_encoding() -> None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientName = ""
    q.PatientID = ""
    r = build_response(q, {"PatientID": "P9", "PatientName": "Müller^Hans"}, "PATIENT")
    assert r.SpecificCharacterSet == "ISO_IR 192"
    r2 = build_response(q, {"PatientID": "P9", "PatientName": "Müller^Hans", "SpecificCharacterSet": ["ISO_IR 100"]}, "PATIENT")
    assert r2.SpecificCharacterSet == "ISO_IR 100"  # pydicom unwraps single values
    for ds in (r, r2):
        buf = DicomBytesIO()
        buf.is_little_endian, buf.is_implicit_VR = True, True
        write_dataset(buf, ds)  # encodable as a C-FIND identifier would be
        assert buf.getvalue()
