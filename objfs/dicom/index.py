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
keys passed through :func:`~objfs.store.index.fit_key`; ``#`` = a short id,
8 bytes big-endian, from the counter ``#next``, assigned in the write txn)::

    s B study series         -> series   {a: series attrs, n: instances, id: #,
                                          ia: the first instance's own tags, the default of the others}
    U #series                -> [B, study, series]    (what a series id stands for)
    J #series #instance      -> instance [sop, key or None if canonical, version, oid, size,
                                          own tags: those its study, series and ia do not say
                                          (None: a tag of ia it lacks)]
    O h(B, sop) #series #instance -> None (where a SOP instance is; h: 8 bytes of blake2b)
    t B study                -> study    {a: patient+study attrs, n, ns: series, mods: {Modality: n}}
    p B pid                  -> patient  {a: patient attrs, n: instances}
    q B pid study            -> n        (the studies of a patient)
    e B series study         -> n        (the study of a series)

so an instance costs its SOP Instance UID, a few tags and three short keys
(``bench/dicom_index_bench.py`` prints the bytes per instance). Entries
written by earlier versions are read and removed as they are, and count
in the same level entries::

    i B study series sop oid -> instance {k, v, id, size, d: tags (older: all, with h: header, b: bucket)}
    o B sop study series oid -> None

``dicomkeys`` maps ``0xFF h(bucket\\0key)`` (16 bytes of blake2b) to
``[#series, #instance, pid, Modality]``, what :meth:`on_change` needs to
remove an object's entries, so removal never depends on the old record's
tags (earlier versions: ``bucket\\0key`` -> a dict with the UIDs).

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

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from objfs.store.index import Txn, fit_key, object_key
from objfs.store.objects import HEAD_BYTES  # what extract() is given; fewer bytes are the whole body

from .header import header_json
from .matching import ATTRS_BY_LEVEL, LEVEL_KEYS, LEVELS, match_record
from .tags import extract_tags, s3_tags

if TYPE_CHECKING:
    from objfs.store import Store

__all__ = [
    "DicomIndexer",
    "register",
    "find",
    "find_instances",
    "canonical_key",
    "sop_locations",
    "prepared_extract",
    "study_objects",
]

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
        prepared = getattr(_prepared, "extracted", None)
        if prepared is not None and prepared[0] == head:
            return prepared[1]
        return _extract(head)

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


_prepared = threading.local()


@contextmanager
def prepared_extract(head: bytes) -> Iterator[dict[str, Any] | None]:
    """Extract ``head`` (the first bytes of a body about to be put) once, for the caller and the indexer.

    Inside the block, :meth:`DicomIndexer.extract` on this thread returns the
    same result for a head equal to ``head`` instead of parsing it again (the
    gateway checks an instance's tags before it puts it); any other head is
    parsed as usual.
    """
    extracted = _extract(head)
    _prepared.extracted = (head, extracted)
    try:
        yield extracted
    finally:
        _prepared.extracted = None


def _extract(head: bytes) -> dict[str, Any] | None:
    tags = extract_tags(head)
    if tags is None:
        return None
    extra = {"dicom": tags, "tags": s3_tags(tags)}
    header = header_json(head, whole=len(head) < HEAD_BYTES)
    if header is not None:
        extra["dicom_header"] = header
    return extra


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


# --------------------------------------------------------------------------- compact entries

_NEXT = b"#next"
_OID = re.compile(r"[0-9a-f]{32}")


def _new_id(txn: Txn) -> int:
    """The next short id (series and instances share the counter; ids are never reused)."""
    n = txn.get("dicom", _NEXT) or 1
    txn.put("dicom", _NEXT, n + 1)
    return n


def _series_ref_key(series_id: int) -> bytes:
    return b"U" + series_id.to_bytes(8, "big")


def _inst_key(series_id: int, inst_id: int = -1) -> bytes:
    """The key of an instance, or with no ``inst_id`` the prefix of its series' instances."""
    key = b"J" + series_id.to_bytes(8, "big")
    return key if inst_id < 0 else key + inst_id.to_bytes(8, "big")


def _loc_key(bucket: str, sop: str, series_id: int = -1, inst_id: int = -1) -> bytes:
    """Where SOP instance ``sop`` is: the key, or a prefix (of the SOP, or of the SOP in a series)."""
    key = b"O" + hashlib.blake2b(bucket.encode() + _S + sop.encode(), digest_size=8).digest()
    if series_id >= 0:
        key += series_id.to_bytes(8, "big")
    return key if inst_id < 0 else key + inst_id.to_bytes(8, "big")


def _ids_of_loc(key: bytes) -> tuple[int, int]:
    return int.from_bytes(key[9:17], "big"), int.from_bytes(key[17:25], "big")


def _ref_key(bucket: str, key: str) -> bytes:
    # 0xFF never starts an earlier entry's key (a UTF-8 bucket name).
    return b"\xff" + hashlib.blake2b(object_key(bucket, key), digest_size=16).digest()


def _pack_oid(oid: str) -> str | bytes:
    return bytes.fromhex(oid) if _OID.fullmatch(oid) else oid


def _unpack_oid(oid: str | bytes) -> str:
    return oid.hex() if isinstance(oid, bytes) else oid


def _decode(value: list[Any], series: dict[str, Any], levels: dict[str, Any]) -> dict[str, Any]:
    """A compact instance entry as ``{k, v, id, size, d: all its tags}`` (``levels``: its study's and series' attributes)."""
    sop, key, version, oid, size, own = value
    tags = {**levels, **series.get("ia", {})}
    for name, v in own.items():
        if v is not None:
            tags[name] = v
        elif name in levels:  # the instance lacks a tag of the series' first instance
            tags[name] = levels[name]
        else:
            tags.pop(name, None)
    tags["SOPInstanceUID"] = sop
    return {"k": canonical_key(tags) if key is None else key, "v": version, "id": _unpack_oid(oid), "size": size, "d": tags}


# --------------------------------------------------------------------------- writes


def _add(txn: Txn, record: dict[str, Any], tags: dict[str, Any]) -> None:
    bucket, oid = record["bucket"], record["id"]
    study, series, sop = tags["StudyInstanceUID"], tags["SeriesInstanceUID"], tags["SOPInstanceUID"]
    pid = str(tags.get("PatientID") or "")
    modality = str(tags.get("Modality") or "")
    series_key = _k(b"s", bucket, study, series)
    series_entry, new_series = _bump(txn, series_key, 1, _pick(tags, _SERIES_ATTRS))
    study_key = _k(b"t", bucket, study)
    study_entry, _ = _bump(txn, study_key, 1, _pick(tags, _STUDY_ATTRS), ns=0, mods={})
    assert study_entry is not None and series_entry is not None
    levels = {**study_entry["a"], **series_entry["a"]}
    own = {name: value for name, value in tags.items() if name not in levels or levels[name] != value}
    own.pop("SOPInstanceUID")
    if "id" not in series_entry:  # a new series (or one indexed by an earlier version)
        series_id = series_entry["id"] = _new_id(txn)
        series_entry["ia"] = own
        txn.put("dicom", series_key, series_entry)
        txn.put("dicom", _series_ref_key(series_id), [bucket, study, series])
    series_id, defaults = series_entry["id"], series_entry["ia"]
    # The instance keeps what its study, its series and the series' first instance
    # do not already say (read back through _decode/_expand); the bucket, study and
    # series are in the series id, the header JSON in the object record.
    view = {**levels, **defaults}
    own = {name: value for name, value in tags.items() if name not in view or view[name] != value}
    own.pop("SOPInstanceUID")
    own.update({name: None for name in defaults if name not in tags})
    inst_id = _new_id(txn)
    duplicate = _has_copy(txn, bucket, sop, study, series, oid, series_id, inst_id)
    key = None if record["key"] == canonical_key(tags) else record["key"]
    txn.put("dicom", _loc_key(bucket, sop, series_id, inst_id), None)
    txn.put("dicom", _inst_key(series_id, inst_id), [sop, key, record["version"], _pack_oid(oid), record["size"], own])
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
    txn.put("dicomkeys", _ref_key(bucket, record["key"]), [series_id, inst_id, pid, modality])


def _remove(txn: Txn, bucket: str, key: str) -> None:
    ref_key = _ref_key(bucket, key)
    ref = txn.get("dicomkeys", ref_key)
    if ref is not None:
        txn.delete("dicomkeys", ref_key)
        series_id, inst_id, pid, modality = ref
        inst = txn.get("dicom", _inst_key(series_id, inst_id))
        where = txn.get("dicom", _series_ref_key(series_id))
        if inst is None or where is None:
            return  # cannot happen: both are written and removed with the ref
        _, study, series = where
        sop, oid = inst[0], _unpack_oid(inst[3])
        txn.delete("dicom", _inst_key(series_id, inst_id))
        txn.delete("dicom", _loc_key(bucket, sop, series_id, inst_id))
    else:  # an entry written by an earlier version
        okey = object_key(bucket, key)
        ref = txn.get("dicomkeys", okey)
        if ref is None:
            return
        txn.delete("dicomkeys", okey)
        study, series, sop, oid, pid, modality = (ref[n] for n in ("study", "series", "sop", "oid", "pid", "mod"))
        txn.delete("dicom", _k(b"i", bucket, study, series, sop, oid))
        txn.delete("dicom", _k(b"o", bucket, sop, study, series, oid))
        inst_id = -1
    series_key = _k(b"s", bucket, study, series)
    series_id = (txn.get("dicom", series_key) or {}).get("id", -1)
    if _has_copy(txn, bucket, sop, study, series, oid, series_id, inst_id):
        _dup(txn, bucket, study, series, pid, -1)
    series_left, _ = _bump(txn, series_key, -1)
    if series_left is None and series_id >= 0:
        txn.delete("dicom", _series_ref_key(series_id))
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


def _has_copy(txn: Txn, bucket: str, sop: str, study: str, series: str, oid: str, series_id: int, inst_id: int) -> bool:
    """Whether another object than ``oid`` (instance ``inst_id``) holds SOP instance ``sop`` in this series."""
    own = _k(b"o", bucket, sop, study, series, oid)
    if any(key != own for key in txn.scan_keys("dicom", _prefix(b"o", bucket, sop, study, series))):
        return True
    if series_id < 0:
        return False
    for key in txn.scan_keys("dicom", _loc_key(bucket, sop, series_id)):
        other = _ids_of_loc(key)[1]
        if other != inst_id and (txn.get("dicom", _inst_key(series_id, other)) or [None])[0] == sop:
            return True
    return False


def _sop_places(txn: Txn, bucket: str, sop: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(study, series, instance as {k, v, id, size, d: all its tags})`` of every object holding SOP instance ``sop``."""
    base = _prefix(b"o", bucket, sop)
    for key in txn.scan_keys("dicom", base):
        study, series, oid = key[len(base) :].decode().split("\0")
        inst = txn.get("dicom", _k(b"i", bucket, study, series, sop, oid))
        if inst is not None:
            st, se = txn.get("dicom", _k(b"t", bucket, study)), txn.get("dicom", _k(b"s", bucket, study, series))
            yield study, series, _expand(inst, st, se)
    for key in txn.scan_keys("dicom", _loc_key(bucket, sop)):
        series_id, inst_id = _ids_of_loc(key)
        value = txn.get("dicom", _inst_key(series_id, inst_id))
        where = txn.get("dicom", _series_ref_key(series_id))
        if value is None or where is None or value[0] != sop:
            continue  # another SOP instance with the same hash
        _, study, series = where
        st = txn.get("dicom", _k(b"t", bucket, study))
        se = txn.get("dicom", _k(b"s", bucket, study, series))
        if st is not None and se is not None:
            yield study, series, _decode(value, se, {**st["a"], **se["a"]})


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
        for name, kind in (("SeriesInstanceUID", b"e"), ("SOPInstanceUID", b""), ("PatientID", b"q")):
            values = _exact_list(query.get(name))
            if values is None:
                continue
            found: dict[str, None] = {}
            for value in values:
                if not kind:
                    found.update((study, None) for study, _, _ in _sop_places(txn, bucket, value))
                    continue
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
    if "id" in se:
        levels = {**st["a"], **se["a"]}
        for _key, value in txn.scan("dicom", _inst_key(se["id"])):
            inst = _decode(value, se, levels)
            if match_record(q, inst["d"]):
                yield inst


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
    with store.index.read() as txn:
        return [
            {"bucket": bucket, "key": inst["k"], "version": inst["v"], "id": inst["id"], "tags": inst["d"]}
            for _, _, inst in _sop_places(txn, bucket, sop)
        ]


def study_objects(txn: Txn, bucket: str, study: str) -> Iterator[tuple[str, str]]:
    """``(key, object id)`` of every object indexed under ``study`` in ``bucket``, inside ``txn``."""
    st = txn.get("dicom", _k(b"t", bucket, study))
    if st is None:
        return
    for series, se in _series(txn, bucket, study, {}):
        for inst in _instances(txn, bucket, study, series, {}, st, se):
            yield inst["k"], inst["id"]
