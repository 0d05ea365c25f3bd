"""The DICOM secondary index: patient -> study -> series -> instance, per bucket.

:class:`DicomIndexer` is an :class:`~objfs.store.engine.Indexer` for DICOM
bodies; every process that changes objects registers it with its store
(:func:`register`, which :mod:`objfs.stores` calls for every objfs process).
Whatever front writes an object (gateway, mount, S3, migration),
``put_object`` calls :meth:`DicomIndexer.extract` on the body's
first bytes and :meth:`DicomIndexer.on_change` inside the commit
transaction, so the index changes atomically with the object: a crash
leaves both old or both new. Deletes and renames go through ``on_change``
too.

Layout of the ``dicom`` database (``B`` = bucket, all parts ``\\0``-joined,
keys passed through :func:`~objfs.store.index.fit_key`)::

    i B study series sop oid -> instance {k, v, id, size, d: its tags the s and t entries do not say}
                                (the header JSON is read from the object record; older entries
                                kept all tags, the header as h and the bucket as b)
    s B study series         -> series   {a: series attrs, n: instances}
    t B study                -> study    {a: patient+study attrs, n, ns: series, mods: {Modality: n}}
    p B pid                  -> patient  {a: patient attrs, n: instances}
    q B pid study            -> n        (the studies of a patient)
    e B series study         -> n        (the study of a series)
    o B sop study series oid -> None     (where a SOP instance is)

``dicomkeys`` maps ``bucket\\0key`` to what :meth:`on_change` needs to remove
an object's entries, so removal never depends on the old record's tags.

Counters ``n`` count objects; ``dup`` counts the copies among them of a SOP
instance already held in the same series (one stored under two names: a
migrated legacy path and a gateway path). The ``NumberOf...Related
Instances`` answered are ``n - dup``, so a SOP instance counts once, as in
retrieval and IMAGE-level C-FIND. (Both move together, so entries written
before ``dup`` existed stay consistent; their old duplicates count until
``rebuild-index``.) Level attributes are "last write wins" (a corrected
re-send updates the study) and are not recomputed when instances go.

Queries (:func:`find`, :func:`find_instances`) read one consistent snapshot.
Given the unique key of a level (or a list of them) they are prefix scans;
given only a PatientID, a scan of that patient's studies; otherwise they scan
study (or patient) entries, never every instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from objfs.store.index import Txn, fit_key, object_key
from objfs.store.objects import HEAD_BYTES  # what extract() is given; fewer bytes are the whole body

from .header import header_json
from .matching import ATTRS_BY_LEVEL, LEVEL_KEYS, LEVELS, match_record
from .tags import extract_tags, s3_tags

if TYPE_CHECKING:
    from objfs.store import Store

__all__ = ["DicomIndexer", "register", "find", "find_instances", "canonical_key", "sop_locations"]

_S = b"\0"
_PATIENT_ATTRS = ATTRS_BY_LEVEL["PATIENT"]
_STUDY_ATTRS = _PATIENT_ATTRS + ATTRS_BY_LEVEL["STUDY"] + ["SpecificCharacterSet"]
_SERIES_ATTRS = ATTRS_BY_LEVEL["SERIES"]
_WILD = ("*", "?")


def canonical_key(tags: dict[str, Any]) -> str:
    """The gateway's object key for an instance: ``study/series/sop.dcm``."""
    return f"{tags['StudyInstanceUID']}/{tags['SeriesInstanceUID']}/{tags['SOPInstanceUID']}.dcm"


def _k(kind: bytes, bucket: str, *parts: str) -> bytes:
    return fit_key(kind + bucket.encode() + _S + _S.join(_text_key(p) for p in parts))


def _prefix(kind: bytes, bucket: str, *parts: str) -> bytes:
    """Prefix of every key below ``parts`` (ends with the separator)."""
    return kind + bucket.encode() + _S + b"".join(_text_key(p) + _S for p in parts)


def _text_key(text: str) -> bytes:
    # UIDs are digits and dots (checked by extract_tags); PatientID is free
    # text: cut to a bounded length and without NULs so keys stay parseable.
    return str(text).encode()[:128].replace(_S, b" ")


def _pick(tags: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {n: tags[n] for n in names if tags.get(n) not in (None, "", [])}


class DicomIndexer:
    """Keeps the ``dicom``/``dicomkeys`` databases in step with DICOM objects."""

    databases = ("dicom", "dicomkeys")

    def extract(self, head: bytes, key: str) -> dict[str, Any] | None:
        """``{"dicom": tags, "tags": s3 tags}`` for a DICOM body, else None. Never raises."""
        tags = extract_tags(head)
        if tags is None:
            return None
        extra = {"dicom": tags, "tags": s3_tags(tags)}
        header = header_json(head, whole=len(head) < HEAD_BYTES)
        if header is not None:
            extra["dicom_header"] = header
        return extra

    def on_change(self, txn: Txn, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Remove ``old``'s entries and add ``new``'s, inside the commit transaction."""
        if old is not None:
            _remove(txn, old["bucket"], old["key"])
        if new is not None:
            # Whatever the name held before (e.g. a rename over a DICOM file) goes.
            _remove(txn, new["bucket"], new["key"])
            tags = new.get("dicom")
            if tags and not new.get("delete_marker"):
                _add(txn, new, tags)


def register(store: Store) -> Store:
    """Register the DICOM indexer with ``store`` (opens its databases); returns the store. Idempotent."""
    store.register_indexer(DicomIndexer())
    return store


def _bump(
    txn: Txn, key: bytes, delta: int, attrs: dict[str, Any] | None = None, **init: Any
) -> tuple[dict[str, Any] | None, bool]:
    """Add ``delta`` to a level entry's count, creating it (from ``init``) or
    dropping it at zero. Returns ``(entry or None if dropped, created)``."""
    entry = txn.get("dicom", key)
    created = entry is None
    if entry is None:
        if delta < 0:
            return None, False
        entry = {"a": {}, "n": 0, **init}
    entry["n"] += delta
    if entry["n"] <= 0:
        txn.delete("dicom", key)
        return None, False
    if attrs:
        entry["a"].update(attrs)
    txn.put("dicom", key, entry)
    return entry, created


def _add(txn: Txn, record: dict[str, Any], tags: dict[str, Any]) -> None:
    bucket, oid = record["bucket"], record["id"]
    study, series, sop = tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"]
    pid = str(tags.get("PatientID") or "")
    modality = str(tags.get("Modality") or "")
    duplicate = _has_copy(txn, bucket, sop, study, series, oid)
    txn.put("dicom", _k(b"o", bucket, sop, study, series, oid), None)
    series_entry, new_series = _bump(txn, _k(b"s", bucket, study, series), 1, _pick(tags, _SERIES_ATTRS))
    study_key = _k(b"t", bucket, study)
    study_entry, _ = _bump(txn, study_key, 1, _pick(tags, _STUDY_ATTRS), ns=0, mods={})
    assert study_entry is not None and series_entry is not None
    # The instance keeps the tags its study and series entries do not already say (read back
    # through _expand), the bucket is in the key and the header JSON in the object record:
    # an instance costs what is its own and where it is, no more.
    levels = {**study_entry["a"], **series_entry["a"]}
    own = {name: value for name, value in tags.items() if name not in levels or levels[name] != value}
    txn.put(
        "dicom",
        _k(b"i", bucket, study, series, sop, oid),
        {"k": record["key"], "v": record["version"], "id": oid, "size": record["size"], "d": own},
    )
    if new_series or modality:
        study_entry["ns"] += int(new_series)
        if modality:
            study_entry["mods"][modality] = study_entry["mods"].get(modality, 0) + 1
        txn.put("dicom", study_key, study_entry)
    _bump(txn, _k(b"p", bucket, pid), 1, _pick(tags, _PATIENT_ATTRS))
    _count(txn, _k(b"q", bucket, pid, study), 1)
    _count(txn, _k(b"e", bucket, series, study), 1)
    if duplicate:
        _dup(txn, bucket, study, series, pid, 1)
    okey = object_key(bucket, record["key"])
    txn.put(
        "dicomkeys",
        okey,
        {"b": bucket, "study": study, "series": series, "sop": sop, "oid": oid, "pid": pid, "mod": modality},
    )


def _remove(txn: Txn, bucket: str, key: str) -> None:
    okey = object_key(bucket, key)
    ref = txn.get("dicomkeys", okey)
    if ref is None:
        return
    txn.delete("dicomkeys", okey)
    study, series, sop, oid, pid, modality = (ref[n] for n in ("study", "series", "sop", "oid", "pid", "mod"))
    txn.delete("dicom", _k(b"i", bucket, study, series, sop, oid))
    txn.delete("dicom", _k(b"o", bucket, sop, study, series, oid))
    if _has_copy(txn, bucket, sop, study, series, oid):
        _dup(txn, bucket, study, series, pid, -1)
    series_left, _ = _bump(txn, _k(b"s", bucket, study, series), -1)
    study_key = _k(b"t", bucket, study)
    study_entry, _ = _bump(txn, study_key, -1)
    if study_entry is not None:
        if series_left is None:
            study_entry["ns"] = max(study_entry["ns"] - 1, 0)
        if modality in study_entry["mods"]:
            study_entry["mods"][modality] -= 1
            if study_entry["mods"][modality] <= 0:
                del study_entry["mods"][modality]
        txn.put("dicom", study_key, study_entry)
    _bump(txn, _k(b"p", bucket, pid), -1)
    _count(txn, _k(b"q", bucket, pid, study), -1)
    _count(txn, _k(b"e", bucket, series, study), -1)


def _has_copy(txn: Txn, bucket: str, sop: str, study: str, series: str, oid: str) -> bool:
    """Whether another object than ``oid`` holds SOP instance ``sop`` in this series."""
    own = _k(b"o", bucket, sop, study, series, oid)
    return any(key != own for key in txn.scan_keys("dicom", _prefix(b"o", bucket, sop, study, series)))


def _dup(txn: Txn, bucket: str, study: str, series: str, pid: str, delta: int) -> None:
    """Count one more (or one fewer) duplicate copy on the series, study and patient entries."""
    for key in (_k(b"s", bucket, study, series), _k(b"t", bucket, study), _k(b"p", bucket, pid)):
        entry = txn.get("dicom", key)
        if entry is not None:
            entry["dup"] = max(entry.get("dup", 0) + delta, 0)
            txn.put("dicom", key, entry)


def _distinct(entry: dict[str, Any]) -> int:
    return entry["n"] - entry.get("dup", 0)


def _count(txn: Txn, key: bytes, delta: int) -> None:
    n = (txn.get("dicom", key) or 0) + delta
    if n > 0:
        txn.put("dicom", key, n)
    else:
        txn.delete("dicom", key)


# --------------------------------------------------------------------------- queries


def _exact_list(value: Any) -> list[str] | None:
    """The values of a key usable for a direct lookup (no wildcard, not universal)."""
    if value is None:
        return None
    text = str(value).strip(" \0")
    if text in ("", "*") or any(w in text for w in _WILD):
        return None
    values = [v.strip(" \0") for v in text.split("\\") if v.strip(" \0")]
    return values or None


def _last_part(key: bytes) -> str:
    return key.rsplit(_S, 1)[-1].decode()


def _study_flat(entry: dict[str, Any]) -> dict[str, Any]:
    flat = dict(entry["a"])
    if entry.get("mods"):
        flat["ModalitiesInStudy"] = sorted(entry["mods"])
    return flat


def _level_query(query: dict[str, Any], levels: tuple[str, ...]) -> dict[str, Any]:
    names = {n for lv in levels for n in ATTRS_BY_LEVEL[lv]}
    return {k: v for k, v in query.items() if k in names}


def _studies(txn: Txn, bucket: str, query: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Study entries matching the patient- and study-level keys of ``query``."""
    wanted: list[str] | None = _exact_list(query.get("StudyInstanceUID"))
    if wanted is None:
        lookups = (
            ("SeriesInstanceUID", b"e"),
            ("SOPInstanceUID", b"o"),
            ("PatientID", b"q"),
        )
        for name, kind in lookups:
            values = _exact_list(query.get(name))
            if values is None:
                continue
            found: dict[str, None] = {}
            for value in values:
                for key in txn.scan_keys("dicom", _prefix(kind, bucket, value)):
                    rest = key[len(_prefix(kind, bucket, value)) :].split(_S)
                    found[rest[0].decode()] = None
            wanted = list(found)
            break
    q = _level_query(query, ("PATIENT", "STUDY"))
    if wanted is not None:
        pairs: Iterator[tuple[str, Any]] = ((u, txn.get("dicom", _k(b"t", bucket, u))) for u in wanted)
    else:
        base = _prefix(b"t", bucket)
        pairs = ((key[len(base) :].decode(), v) for key, v in txn.scan("dicom", base))
    for uid, entry in pairs:
        if entry is not None and match_record(q, _study_flat(entry)):
            yield uid, entry


def _series(txn: Txn, bucket: str, study: str, query: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    q = _level_query(query, ("SERIES",))
    wanted = _exact_list(query.get("SeriesInstanceUID"))
    if wanted is not None:
        pairs: Iterator[tuple[str, Any]] = ((u, txn.get("dicom", _k(b"s", bucket, study, u))) for u in wanted)
    else:
        pairs = ((_last_part(key), v) for key, v in txn.scan("dicom", _prefix(b"s", bucket, study)))
    for uid, entry in pairs:
        if entry is not None and match_record(q, entry["a"]):
            yield uid, entry


def _expand(inst: dict[str, Any], study: dict[str, Any] | None, series: dict[str, Any] | None) -> dict[str, Any]:
    """An instance entry with its full tags (its own over those of its study and series)."""
    levels = {**((study or {}).get("a") or {}), **((series or {}).get("a") or {})}
    return dict(inst, d={**levels, **inst["d"]})


def _instances(
    txn: Txn, bucket: str, study: str, series: str, query: dict[str, Any], st: dict[str, Any], se: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    q = _level_query(query, ("IMAGE",))
    for _key, value in txn.scan("dicom", _prefix(b"i", bucket, study, series)):
        if match_record(q, value["d"]):
            yield _expand(value, st, se)


def _buckets(store: Store, bucket: str | None) -> list[str]:
    return [bucket] if bucket is not None else [b["name"] for b in store.list_buckets()]


def find(store: Store, query: dict[str, Any], level: str, *, bucket: str | None = None) -> list[dict[str, Any]]:
    """C-FIND: one flat entry per matching patient, study, series or instance.

    ``query`` maps keywords to DICOM string values (as from
    :func:`~objfs.dicom.matching.query_from_dataset`); matching follows
    PS3.4 C.2.2.2 (see :mod:`objfs.dicom.matching`). Entries carry the
    attributes of their level and the levels above, and the
    ``NumberOf...Related...`` counters of their level. Raises ValueError for
    an unknown level.
    """
    level = level.upper()
    if level not in LEVEL_KEYS:
        raise ValueError(f"unknown query level {level!r}")
    out: list[dict[str, Any]] = []
    with store.index.read() as txn:
        for name in _buckets(store, bucket):
            if level == "PATIENT":
                out += _find_patients(txn, name, query)
                continue
            for study, st in _studies(txn, name, query):
                if level == "STUDY":
                    entry = _study_flat(st)
                    entry["NumberOfStudyRelatedSeries"] = st["ns"]
                    entry["NumberOfStudyRelatedInstances"] = _distinct(st)
                    out.append(entry)
                    continue
                for series, se in _series(txn, name, study, query):
                    if level == "SERIES":
                        out.append({**st["a"], **se["a"], "NumberOfSeriesRelatedInstances": _distinct(se)})
                        continue
                    seen: set[str] = set()
                    for inst in _instances(txn, name, study, series, query, st, se):
                        if inst["d"]["SOPInstanceUID"] not in seen:
                            seen.add(inst["d"]["SOPInstanceUID"])
                            out.append({**st["a"], **se["a"], **inst["d"]})
    return out


def _find_patients(txn: Txn, bucket: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    q = _level_query(query, ("PATIENT",))
    wanted = _exact_list(query.get("PatientID"))
    if wanted is not None:
        pairs: Iterator[tuple[str, Any]] = ((p, txn.get("dicom", _k(b"p", bucket, p))) for p in wanted)
    else:
        base = _prefix(b"p", bucket)
        pairs = ((key[len(base) :].decode(errors="replace"), v) for key, v in txn.scan("dicom", base))
    out = []
    for pid, entry in pairs:
        if entry is None or not match_record(q, entry["a"]):
            continue
        studies = [_last_part(k) for k in txn.scan_keys("dicom", _prefix(b"q", bucket, pid))]
        series = sum((txn.get("dicom", _k(b"t", bucket, s)) or {}).get("ns", 0) for s in studies)
        out.append(
            {
                **entry["a"],
                "NumberOfPatientRelatedStudies": len(studies),
                "NumberOfPatientRelatedSeries": series,
                "NumberOfPatientRelatedInstances": _distinct(entry),
            }
        )
    return out


def find_instances(store: Store, query: dict[str, Any], level: str, *, bucket: str | None = None) -> list[dict[str, Any]]:
    """C-MOVE/C-GET: every instance under the patients, studies, series or
    instances that ``query`` matches at ``level``, one per SOP Instance UID.

    Each item is ``{"bucket", "key", "version", "id", "size", "tags", "header"}``
    (``header``: the DICOM JSON of :mod:`.header`, None if not kept).
    Where a SOP instance is stored under several names, the gateway's
    canonical ``study/series/sop.dcm`` copy is preferred.
    """
    level = level.upper()
    if level not in LEVEL_KEYS:
        raise ValueError(f"unknown query level {level!r}")
    depth = LEVELS.index(level)
    scoped = _level_query(query, LEVELS[: depth + 1])
    # Hierarchical retrieval: keys below the level (e.g. Modality in a STUDY
    # move) are ignored; the unique keys above it narrow the search.
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"):
        if name in query and query[name]:
            scoped.setdefault(name, query[name])
    by_sop: dict[tuple[str, str], dict[str, Any]] = {}
    with store.index.read() as txn:
        for name in _buckets(store, bucket):
            for study, st in _studies(txn, name, scoped):
                for series, se in _series(txn, name, study, scoped if depth >= 2 else {}):
                    for inst in _instances(txn, name, study, series, scoped if depth >= 3 else {}, st, se):
                        sop = inst["d"]["SOPInstanceUID"]
                        item = {
                            "bucket": name,
                            "key": inst["k"],
                            "version": inst["v"],
                            "id": inst["id"],
                            "size": inst["size"],
                            "tags": inst["d"],
                            "header": _header(txn, name, inst),
                        }
                        prev = by_sop.get((name, sop))
                        if prev is None or (prev["key"] != canonical_key(prev["tags"]) and inst["k"] == canonical_key(inst["d"])):
                            by_sop[(name, sop)] = item
    return list(by_sop.values())


def _header(txn: Txn, bucket: str, inst: dict[str, Any]) -> Any:
    """The DICOM JSON header of an indexed instance: from its object record (entries written before kept it inline)."""
    if "h" in inst:
        return inst["h"]
    record = txn.get("objects", object_key(bucket, inst["k"]))
    if record is None or record.get("id") != inst["id"]:
        return None
    return record.get("dicom_header")


def sop_locations(store: Store, bucket: str, sop: str) -> list[dict[str, Any]]:
    """Every stored object of ``bucket`` holding SOP instance ``sop`` (duplicate checks)."""
    out = []
    base = _prefix(b"o", bucket, sop)
    with store.index.read() as txn:
        for key in txn.scan_keys("dicom", base):
            study, series, oid = key[len(base) :].decode().split("\0")
            inst = txn.get("dicom", _k(b"i", bucket, study, series, sop, oid))
            if inst is not None:
                inst = _expand(inst, txn.get("dicom", _k(b"t", bucket, study)), txn.get("dicom", _k(b"s", bucket, study, series)))
                out.append({"bucket": bucket, "key": inst["k"], "version": inst["v"], "id": oid, "tags": inst["d"]})
    return out
