"""C-FIND attribute matching (DICOM PS3.4 C.2.2.2) over indexed records.

Records are plain dicts as produced by :func:`objfs.dicom.tags.extract_tags`
(keyword -> ``str`` | ``int`` | ``list[str]``).  Query values are the DICOM
string encodings of the identifier's key attributes (multiple values joined
by ``\\``).

Guarantees / choices
--------------------
* Universal matching: an empty query value (or a lone ``*``) matches every
  record, including records lacking the attribute.  Any other query value
  never matches a record lacking the attribute.
* Single value matching is exact and case-sensitive, except PN which is
  case-insensitive: PS3.4 makes PN case sensitivity implementation-defined in
  practice (C.2.2.2.1.1 leaves it to the SCP, and most PACS fold case) and
  users typing ``smith^john`` expect to find ``SMITH^John``.  Trailing empty
  PN components are ignored, and a query without ``=`` may match any of the
  alphabetic/ideographic/phonetic component groups.
* Wildcards ``*`` and ``?`` apply only to the VRs PS3.4 allows them for
  (AE CS LO LT PN SH ST UC UR UT); elsewhere they are literal.
* Range matching for DA, TM and DT (``a-b``, ``-b``, ``a-``).  Partial times
  are widened: a lower bound is padded with zeros, an upper bound with the
  largest value (``1200`` -> ``12:00:59.999999``), and a single partial value
  matches its whole span (``0930`` matches ``093015``), like dcm4che does.
* List of UID matching for UI (``1.2.3\\1.2.4``); other VRs also accept a
  ``\\`` separated list, matching if any value matches.
* Multi-valued stored attributes (ModalitiesInStudy) match if any value does.
* A query key we do not index is a return key only: given empty (universal)
  it is returned empty by :func:`build_response`; given a value, the gateway
  refuses the query (:func:`unmatchable_keys`) rather than ignore the key
  and match everything.  Combined date-time range matching is not done.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

__all__ = [
    "VR_OF",
    "LEVEL_KEYS",
    "ATTRS_BY_LEVEL",
    "LEVELS",
    "COUNT_KEYS",
    "matches",
    "match_record",
    "unmatchable_keys",
    "query_from_dataset",
    "aggregate",
    "build_response",
]

VR_OF: dict[str, str] = {
    "PatientID": "LO",
    "PatientName": "PN",
    "PatientBirthDate": "DA",
    "PatientSex": "CS",
    "StudyInstanceUID": "UI",
    "StudyDate": "DA",
    "StudyTime": "TM",
    "AccessionNumber": "SH",
    "StudyDescription": "LO",
    "ReferringPhysicianName": "PN",
    "ModalitiesInStudy": "CS",
    "StudyID": "SH",
    "SeriesInstanceUID": "UI",
    "Modality": "CS",
    "SeriesNumber": "IS",
    "SeriesDescription": "LO",
    "SeriesDate": "DA",
    "SeriesTime": "TM",
    "BodyPartExamined": "CS",
    "SOPInstanceUID": "UI",
    "SOPClassUID": "UI",
    "InstanceNumber": "IS",
}

LEVELS: tuple[str, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
LEVEL_KEYS: dict[str, list[str]] = {
    "PATIENT": ["PatientID"],
    "STUDY": ["StudyInstanceUID"],
    "SERIES": ["SeriesInstanceUID"],
    "IMAGE": ["SOPInstanceUID"],
}
ATTRS_BY_LEVEL: dict[str, list[str]] = {
    "PATIENT": ["PatientID", "PatientName", "PatientBirthDate", "PatientSex"],
    "STUDY": [
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyDescription",
        "ReferringPhysicianName",
        "ModalitiesInStudy",
        "StudyID",
    ],
    "SERIES": [
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
    ],
    "IMAGE": ["SOPInstanceUID", "SOPClassUID", "InstanceNumber"],
}
#: Computed return keys added by :func:`aggregate`, per level.
COUNT_KEYS: dict[str, list[str]] = {
    "PATIENT": ["NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"],
    "STUDY": ["NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances"],
    "SERIES": ["NumberOfSeriesRelatedInstances"],
    "IMAGE": [],
}

_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
# Keys that steer the query rather than select records.
_NOT_MATCHED = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


# --------------------------------------------------------------------------- values


def _as_text(value: Any) -> str:
    """DICOM string form of a query/stored value (multi-values joined by ``\\``)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(_as_text(v) for v in value)
    return str(value)


def _stored_values(stored: Any) -> list[str]:
    if stored is None:
        return []
    items = stored if isinstance(stored, (list, tuple, MultiValue)) else [stored]
    return [s for s in (str(v).strip() for v in items if v is not None) if s != ""]


_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")


def _pad_tm(tm: str, upper: bool) -> str | None:
    """Normalise a (partial) TM to ``HHMMSS.FFFFFF``; None if unparseable."""
    tm = tm.replace(":", "")  # ACR-NEMA style 09:30:15
    m = _TM_RE.fullmatch(tm)
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    fill = "59" if upper else "00"
    return f"{hh}{mm or fill}{ss or fill}.{(frac or '').ljust(6, '9' if upper else '0')}"


def _pad_da(da: str, upper: bool) -> str | None:
    da = da.replace(".", "")  # ACR-NEMA style 2020.01.31
    if not da.isdigit() or len(da) not in (4, 6, 8):
        return None
    # year or year+month queries are not standard but cost nothing to honour
    if len(da) == 4:
        da += "1231" if upper else "0101"
    elif len(da) == 6:
        da += "31" if upper else "01"
    return da


def _pad_dt(dt: str, upper: bool) -> str | None:
    if len(dt) > 9 and dt[-5] in "+-" and dt[-4:].isdigit():
        dt = dt[:-5]  # UTC offsets ignored: stored values are compared as local
    date, rest = dt[:8], dt[8:]
    d = _pad_da(date, upper)
    if d is None:
        return None
    if rest:
        t = _pad_tm(rest, upper)
    else:
        t = "235959.999999" if upper else "000000.000000"
    return None if t is None else d + t


_DT_OFFSET = re.compile(r"(\d{10}[\d.]*)[+-]\d{4}(?=-|$)")
_PADDERS = {"DA": _pad_da, "TM": _pad_tm, "DT": _pad_dt}


def _range_match(query: str, values: list[str], vr: str) -> bool:
    pad = _PADDERS[vr]
    if vr == "DT":
        # drop UTC offsets so their '-' is not taken for the range separator
        query = _DT_OFFSET.sub(r"\1", query)
    if "-" in query:
        lo_s, _, hi_s = query.partition("-")
        lo_s, hi_s = lo_s.strip(), hi_s.strip()
    else:
        lo_s = hi_s = query.strip()  # single value: the span it denotes
    lo = pad(lo_s, False) if lo_s else None
    hi = pad(hi_s, True) if hi_s else None
    if (lo_s and lo is None) or (hi_s and hi is None):
        return False  # malformed query bound matches nothing
    for value in values:
        v_lo, v_hi = pad(value, False), pad(value, True)
        if v_lo is None or v_hi is None:
            continue
        # a stored partial value denotes a span too; require overlap
        if (lo is None or v_hi >= lo) and (hi is None or v_lo <= hi):
            return True
    return False


def _wildcard_re(pattern: str, fold: bool) -> re.Pattern[str]:
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if fold else 0))


def _pn_groups(name: str) -> list[str]:
    groups = [g.rstrip("^").strip() for g in name.split("=")]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    return groups


def _match_one(query: str, values: list[str], vr: str) -> bool:
    if vr in _RANGE_VRS:
        return _range_match(query, values, vr)
    if vr == "IS":
        try:
            wanted = int(query)
        except ValueError:
            return False
        return any(_safe_int(v) == wanted for v in values)
    wild = vr in _WILDCARD_VRS and ("*" in query or "?" in query)
    if vr == "PN":
        q_groups = _pn_groups(query)
        candidates = []
        for v in values:
            groups = _pn_groups(v)
            # a plain query may hit any component group; a query with '='
            # is compared group-for-group as one string
            candidates += groups if len(q_groups) == 1 else ["=".join(groups)]
        q = "=".join(q_groups)
        if wild:
            rx = _wildcard_re(q, fold=True)
            return any(rx.fullmatch(c) for c in candidates)
        return any(c.casefold() == q.casefold() for c in candidates)
    if wild:
        rx = _wildcard_re(query, fold=False)
        return any(rx.fullmatch(v) for v in values)
    return query in values


def _safe_int(value: str) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def matches(identifier_value: Any, stored: Any, vr: str) -> bool:
    """Whether one query key value matches one stored attribute value.

    ``identifier_value`` is the DICOM string form (``None``/``""`` = universal);
    ``stored`` is a plain value or list of values; ``vr`` the attribute's VR.
    Never raises on malformed query values (they simply do not match).
    """
    query = _as_text(identifier_value).strip(" \0")
    if query in ("", "*"):
        return True
    if vr in _RANGE_VRS and query == "-":
        return True
    values = _stored_values(stored)
    if not values:
        return False
    alternatives = query.split("\\")
    return any(_match_one(q.strip(" \0"), values, vr) for q in alternatives if q.strip(" \0"))


def match_record(query: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """True if ``record`` satisfies every matchable key of ``query``.

    Keys outside :data:`VR_OF` (including QueryRetrieveLevel, character set
    and computed counters) are ignored, see the module docstring.
    """
    for keyword, value in query.items():
        vr = VR_OF.get(keyword)
        if vr is None or keyword in _NOT_MATCHED:
            continue
        if not matches(value, record.get(keyword), vr):
            return False
    return True


def query_from_dataset(identifier: Dataset) -> dict[str, str]:
    """Extract the matchable keys of a C-FIND identifier as DICOM strings.

    Sequences and elements that fail to decode are skipped (a broken key is
    treated as absent rather than failing the whole query).
    """
    out: dict[str, str] = {}
    for keyword in VR_OF:
        try:
            if keyword not in identifier:
                continue
            value = identifier[keyword].value
            if isinstance(value, Sequence):
                continue
            out[keyword] = _as_text(value)
        except Exception:
            continue
    return out


#: Return keys the gateway computes or fills itself: never matched, never refused.
RETURN_ONLY = frozenset(
    {
        "QueryRetrieveLevel",
        "SpecificCharacterSet",
        "RetrieveAETitle",
        "InstanceAvailability",
        "TimezoneOffsetFromUTC",
        *(k for keys in COUNT_KEYS.values() for k in keys),
    }
)


def unmatchable_keys(identifier: Dataset) -> list[str]:
    """Keys of a C-FIND identifier given a value we cannot match on (not held by the index).

    Empty (universal) keys are plain return keys and fine; so are sequences
    and the keys of :data:`RETURN_ONLY`.
    """
    out = []
    for elem in identifier:
        keyword = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        if keyword in VR_OF or keyword in RETURN_ONLY or elem.tag.element == 0 or elem.VR == "SQ":
            continue
        try:
            value = elem.value
        except Exception:
            continue
        if _as_text(value).strip(" \0*") != "":
            out.append(keyword)
    return out


# --------------------------------------------------------------------------- aggregation


def _level_attrs(level: str) -> list[str]:
    idx = LEVELS.index(level)
    return [kw for lv in LEVELS[: idx + 1] for kw in ATTRS_BY_LEVEL[lv]]


def aggregate(records: Iterable[Mapping[str, Any]], level: str) -> list[dict[str, Any]]:
    """Collapse instance records to one entry per patient/study/series/image.

    Each entry holds the attributes of ``level`` and the levels above it
    (taken from the first record seen for that entry), SpecificCharacterSet,
    and the :data:`COUNT_KEYS` of the level.  At STUDY level
    ModalitiesInStudy is the sorted set of the instances' Modality (falling
    back to stored ModalitiesInStudy values when instances carry none).
    Entries come out in first-seen order; instances are counted by distinct
    SOPInstanceUID so duplicate records do not inflate counts.
    """
    level = level.upper()
    if level not in LEVEL_KEYS:
        raise ValueError(f"unknown query level {level!r}")
    key_kw = LEVEL_KEYS[level][0]
    attrs = _level_attrs(level)
    entries: dict[Any, dict[str, Any]] = {}
    studies: dict[Any, set[str]] = {}
    series: dict[Any, set[str]] = {}
    instances: dict[Any, set[str]] = {}
    modalities: dict[Any, set[str]] = {}
    for rec in records:
        key = rec.get(key_kw)
        key = "" if key is None else str(key)
        entry = entries.get(key)
        if entry is None:
            entry = {kw: rec[kw] for kw in attrs if rec.get(kw) not in (None, "", [])}
            if rec.get("SpecificCharacterSet"):
                entry["SpecificCharacterSet"] = rec["SpecificCharacterSet"]
            entries[key] = entry
            studies[key], series[key], instances[key], modalities[key] = set(), set(), set(), set()
        for kw in attrs:  # fill gaps left by an earlier, sparser record
            if kw not in entry and rec.get(kw) not in (None, "", []):
                entry[kw] = rec[kw]
        for uid_kw, bucket in (("StudyInstanceUID", studies), ("SeriesInstanceUID", series), ("SOPInstanceUID", instances)):
            if rec.get(uid_kw):
                bucket[key].add(str(rec[uid_kw]))
        if rec.get("Modality"):
            modalities[key].add(str(rec["Modality"]))
    out: list[dict[str, Any]] = []
    for key, entry in entries.items():
        if level == "PATIENT":
            entry["NumberOfPatientRelatedStudies"] = len(studies[key])
            entry["NumberOfPatientRelatedSeries"] = len(series[key])
            entry["NumberOfPatientRelatedInstances"] = len(instances[key])
        elif level == "STUDY":
            if modalities[key]:
                entry["ModalitiesInStudy"] = sorted(modalities[key])
            entry["NumberOfStudyRelatedSeries"] = len(series[key])
            entry["NumberOfStudyRelatedInstances"] = len(instances[key])
        elif level == "SERIES":
            entry["NumberOfSeriesRelatedInstances"] = len(instances[key])
        out.append(entry)
    return out


# --------------------------------------------------------------------------- responses


def _is_ascii(value: Any) -> bool:
    return all(str(v).isascii() for v in (value if isinstance(value, list) else [value]))


def build_response(query_ds: Dataset, entry: Mapping[str, Any], level: str) -> Dataset:
    """Response identifier for one matched ``entry``.

    Contains exactly the query's keys (filled from ``entry``; keys we have no
    value for are returned zero-length, sequences as empty sequences), plus
    QueryRetrieveLevel and SpecificCharacterSet.  Stored strings are already
    decoded unicode, so the character set only governs re-encoding: the
    entry's own set is used when present, and ISO_IR 192 (UTF-8) when values
    are non-ASCII and the entry names none, so that nothing is unencodable.
    """
    resp = Dataset()
    non_ascii = False
    for elem in query_ds:
        keyword = elem.keyword
        if keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or elem.tag.element == 0:
            continue
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            vr = elem.VR
        if " or " in vr:
            vr = elem.VR if " or " not in elem.VR else vr.split(" or ")[0]
        if vr == "SQ":
            resp.add_new(elem.tag, "SQ", Sequence())
            continue
        value = entry.get(keyword) if keyword else None
        if value is None or value == "" or value == []:
            resp.add_new(elem.tag, vr, None)
            continue
        if not _is_ascii(value):
            non_ascii = True
        if isinstance(value, (list, tuple)):
            value = [str(v) for v in value]
        elif isinstance(value, int) and vr in ("IS", "DS"):
            value = str(value)
        resp.add_new(elem.tag, vr, value)
    resp.QueryRetrieveLevel = level.upper()
    charset = entry.get("SpecificCharacterSet")
    if charset:
        resp.SpecificCharacterSet = list(charset) if isinstance(charset, (list, tuple)) else charset
    elif non_ascii:
        resp.SpecificCharacterSet = "ISO_IR 192"
    return resp
