"""QIDO-RS: search studies, series and instances, answered as ``application/dicom+json``.

Searches go to the DICOM index (:func:`objfs.dicom.index.find`) with the
C-FIND matching rules (:mod:`objfs.dicom.matching`: wildcards, date/time
ranges, UID lists). A matching key the index does not hold is refused with
400 naming it, never ignored (ignoring it would answer every record).
``includefield`` adds held attributes (``all``: every held one), ``limit`` and
``offset`` page the answer; fuzzy matching is not done (``fuzzymatching=true``
is answered with a ``Warning`` header, as PS3.18 asks).
"""

from __future__ import annotations

import functools
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from objfs.dicom.index import find
from objfs.dicom.matching import ATTRS_BY_LEVEL, COUNT_KEYS, LEVELS, VR_OF

from .engine import Engine, HTTPError

__all__ = ["search", "parse_query", "to_json"]

_CONTROL = frozenset(("limit", "offset", "includefield", "fuzzymatching"))
MAX_LIMIT = 10000
_UID_OF = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def keyword_of(name: str) -> str:
    """A QIDO attribute id (keyword or 8 hex digit tag) as a keyword; 400 if it is neither."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    raise HTTPError(400, f"unknown attribute {name!r}")


def parse_query(items: list[tuple[str, str]], level: str) -> tuple[dict[str, str], set[str], bool, int, int, bool]:
    """``(match keys, include fields, include all, limit, offset, fuzzy asked)`` from the query string."""
    query: dict[str, str] = {}
    include: set[str] = set()
    include_all = False
    limit, offset, fuzzy = MAX_LIMIT, 0, False
    for name, value in items:
        if name == "includefield":
            for field in value.split(","):
                field = field.strip()
                if field == "all":
                    include_all = True
                elif field:
                    include.add(keyword_of(field))
        elif name in ("limit", "offset"):
            if not value.isdigit():
                raise HTTPError(400, f"{name} must be a non-negative integer")
            if name == "limit":
                limit = min(int(value), MAX_LIMIT)
            else:
                offset = int(value)
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise HTTPError(400, "fuzzymatching must be true or false")
            fuzzy = value == "true"
        elif "." in name:
            raise HTTPError(400, f"matching on sequence attributes ({name}) is not supported")
        else:
            keyword = keyword_of(name)
            if value in ("", "*"):
                include.add(keyword)  # universal match: a return key
                continue
            if keyword not in VR_OF:
                raise HTTPError(400, f"matching on {keyword} is not supported; matchable: {', '.join(VR_OF)}")
            if VR_OF[keyword] == "UI":
                value = value.replace(",", "\\")  # QIDO lists UIDs with commas, DIMSE with backslashes
            query[keyword] = value
    return query, include, include_all, limit, offset, fuzzy


def _returned(level: str) -> list[str]:
    """The attributes of a level and the unique keys above it (PS3.18 6.7.1.2.2 defaults we hold)."""
    depth = LEVELS.index(level)
    names = list(ATTRS_BY_LEVEL[level]) + COUNT_KEYS[level]
    if level == "STUDY":
        names = ATTRS_BY_LEVEL["PATIENT"] + names
    for above in ("STUDY", "SERIES"):
        if LEVELS.index(above) < depth:
            names.append(_UID_OF[above])
    return names


def to_json(entry: dict[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    """DICOM JSON (PS3.18 F.2) of a flat keyword -> value entry (only ``names`` if given)."""
    ds = Dataset()
    for keyword in names if names is not None else list(entry):
        value = entry.get(keyword)
        tag = tag_for_keyword(keyword)
        if tag is None or value is None or value == "" or value == []:
            continue
        vr = dictionary_VR(tag)
        if " or " in vr:
            vr = vr.split(" or ")[0]
        if isinstance(value, int) and vr in ("IS", "DS"):
            value = str(value)
        ds.add_new(tag, vr, value)
    return ds.to_json_dict()


def retrieve_url(base: str, entry: dict[str, Any], level: str) -> str:
    url = f"{base}/studies/{entry['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{entry['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{entry['SOPInstanceUID']}"
    return url


async def search(
    engine: Engine,
    principal: Any,
    level: str,
    items: list[tuple[str, str]],
    base: str,
    scope: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The DICOM JSON answer to a search at ``level`` (STUDY, SERIES or IMAGE) and extra response headers.

    ``scope`` holds the UIDs of the URL (``/studies/{uid}/series``).
    """
    query, include, include_all, limit, offset, fuzzy = parse_query(items, level)
    query.update(scope or {})
    store = engine.store
    entries = await engine.run(functools.partial(find, store, query, level, bucket=engine.bucket))
    detail = f"QIDO {level} " + " ".join(f"{k}={v}" for k, v in sorted(query.items()))
    await engine.run(functools.partial(store.record_audit, "list", principal, "ok", False, bucket=engine.bucket, detail=detail))
    names = _returned(level) + sorted(include - set(_returned(level)))
    out = []
    for entry in entries[offset : offset + limit]:
        entry.setdefault("InstanceAvailability", "ONLINE")
        wanted = (list(entry) if include_all else names) + ["InstanceAvailability"]
        item = to_json(entry, wanted)
        item["00081190"] = {"vr": "UR", "Value": [retrieve_url(base, entry, level)]}
        out.append(item)
    warnings = []
    if fuzzy:
        warnings.append('299 objfs "fuzzymatching is not supported; exact matching was used"')
    if len(entries) > offset + limit:
        warnings.append('299 objfs "there are more results than the limit"')
    return out, {"Warning": ", ".join(warnings)} if warnings else {}
