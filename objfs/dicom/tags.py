"""Sniffing, tag extraction and completeness checks for DICOM bodies.

Guarantees
----------
* :func:`looks_like_dicom`, :func:`extract_tags`, :func:`s3_tags` and
  :func:`complete_file_check` never raise on hostile, truncated or non-DICOM
  input; failure is reported as ``False`` / ``None`` / an error string.
* :func:`extract_tags` never reads pixel data: a header-only walk stops at
  the first element after InstanceNumber (0020,0013), skips values by their
  declared length (a huge length field costs nothing) and sequences without
  building them; only the complete indexed elements are decoded by pydicom.
  Deflated datasets are inflated with a hard output cap.
* :func:`extract_tags` returns only msgpack-serialisable plain values
  (``str``, ``int``, ``list[str]``).
* :func:`complete_file_check` walks every element header of the file (without
  loading values) so truncation anywhere - header, sequence, pixel data - is
  detected, then checks native pixel data length against the image geometry.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
import zlib
from typing import IO, Any, BinaryIO

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from .matching import ATTRS_BY_LEVEL, LEVELS

__all__ = [
    "INDEXED_TAGS",
    "REQUIRED_UIDS",
    "MULTI_VALUED",
    "looks_like_dicom",
    "extract_tags",
    "s3_tags",
    "complete_file_check",
]

#: Keywords read from the dataset (TransferSyntaxUID comes from file meta).
INDEXED_TAGS: tuple[str, ...] = (
    "SpecificCharacterSet",
    *(keyword for level in LEVELS for keyword in ATTRS_BY_LEVEL[level]),
    "TransferSyntaxUID",
)
REQUIRED_UIDS: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
#: Keywords whose extracted value is always a ``list[str]``.
MULTI_VALUED: frozenset[str] = frozenset({"ModalitiesInStudy", "SpecificCharacterSet"})
_INT_KEYWORDS = frozenset({"SeriesNumber", "InstanceNumber"})

_DATASET_KEYWORDS = [k for k in INDEXED_TAGS if k != "TransferSyntaxUID"]
_SPECIFIC_TAGS = [tag_for_keyword(k) for k in _DATASET_KEYWORDS]
_SPECIFIC_SET = frozenset(_SPECIFIC_TAGS)
_LAST_INDEXED_TAG = max(_SPECIFIC_TAGS)  # (0020,0013) InstanceNumber

_DEFLATED_TS = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
# Inflating more than this from a <=2 MiB head can only be a zip bomb or a
# dataset whose indexed header is absurdly large; either way we give up.
_MAX_INFLATE = 16 * 1024 * 1024
_MAX_DEPTH = 32

_VRS = frozenset(
    v.encode()
    for v in ("AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OW OV PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV").split()
)
# Explicit-VR elements whose header carries a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(v.encode() for v in "OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_DELIM, _SEQ_DELIM = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_TAGS = {0x7FE00010: None, 0x7FE00008: 32, 0x7FE00009: 64}  # tag -> forced bits
_UID_RE = re.compile(r"[0-9.]{1,128}")
_S3_BAD = re.compile(r"[^A-Za-z0-9 +\-=._:/@]")


# --------------------------------------------------------------------------- sniffing


def _raw_dataset_start(head: bytes) -> bool:
    """Conservatively recognise a preamble-less LE dataset.

    Two consecutive element headers must decode consistently (same VR mode,
    ascending tags, first group 0002 or 0008, values inside ``head``); random
    or text data essentially never satisfies all of that.
    """
    if len(head) < 16:
        return False
    group, elem = struct.unpack_from("<HH", head, 0)
    if group not in (0x0002, 0x0008) or elem > 0x00FF:
        return False
    explicit = head[4:6] in _VRS
    if group == 0x0002 and not explicit:
        return False  # file meta is always explicit VR LE
    pos, prev = 0, -1
    for _ in range(2):
        hdr = _parse_header(head[pos : pos + 12], not explicit, True)
        if hdr is None:
            return False
        tag, vr, length, hlen = hdr
        if tag <= prev or (explicit and vr is None) or length == _UNDEFINED:
            return False
        if pos + hlen + length > len(head):
            return False
        prev, pos = tag, pos + hlen + length
    return True


def looks_like_dicom(head: bytes) -> bool:
    """True for Part-10 files (``DICM`` at 128) or a reliably recognised raw
    little-endian dataset starting with group 0002/0008.  Never raises."""
    try:
        if len(head) >= 132 and head[128:132] == b"DICM":
            return True
        return _raw_dataset_start(bytes(head[:4096]))
    except Exception:
        return False


# --------------------------------------------------------------------------- extraction


def _meta_end_and_ts(head: bytes) -> tuple[int, str | None]:
    """Return (offset after file meta, TransferSyntaxUID) by walking group 0002."""
    pos = 132 if head[128:132] == b"DICM" else 0
    ts = None
    while True:
        hdr = _parse_header(head[pos : pos + 12], False, True)
        if hdr is None or hdr[0] >> 16 != 0x0002:
            return pos, ts
        tag, _vr, length, hlen = hdr
        if length == _UNDEFINED:
            return pos, ts
        if tag == 0x00020010:
            ts = head[pos + hlen : pos + hlen + length].decode("ascii", "replace").strip(" \0")
        pos += hlen + length


def meta_transfer_syntax(head: bytes) -> str | None:
    """The TransferSyntaxUID of the File Meta Information group at the start of ``head``, if any. Never raises."""
    try:
        return _meta_end_and_ts(bytes(head))[1] or None
    except Exception:
        return None


def _encoding(ts: str | None, first: bytes) -> tuple[bool, bool]:
    """(implicit, little) for a dataset whose first bytes are ``first``.

    Like pydicom, trust the first element's VR bytes over the declared syntax:
    some writers declare explicit VR but write implicit.  Every syntax other
    than explicit big endian is little endian (PS3.5 A.4).
    """
    return first[4:6] not in _VRS, ts != _EXPLICIT_BE


def _plain(keyword: str, value: Any) -> str | int | list[str] | None:
    """Convert a pydicom value to a msgpack-friendly plain value (None = absent)."""
    if value is None:
        return None
    if keyword in MULTI_VALUED:
        items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
        out = [str(v).strip() for v in items if v is not None and str(v).strip()]
        return out or None
    if keyword in _INT_KEYWORDS:
        if isinstance(value, (MultiValue, list, tuple)):
            value = value[0] if value else None
        if value is None or str(value).strip() == "":
            return None
        return int(float(str(value)))
    if isinstance(value, (MultiValue, list, tuple)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = text.strip(" \0")
    return text or None


def _parse_head(head: bytes) -> tuple[pydicom.Dataset, str]:
    """Parse the indexed part of ``head`` -> (dataset, transfer syntax UID).

    Our header walker picks out the complete top-level elements we index
    (stopping after InstanceNumber, skipping sequences without building
    them, dropping a value cut off by the end of ``head``); only those bytes
    reach pydicom.  That bounds the cost of hostile input: pydicom would
    build a Dataset per sequence item.
    """
    meta_end, ts = _meta_end_and_ts(head)
    body, start = head, meta_end
    if ts in _DEFLATED_TS:
        # stream-inflate with a cap: the head is usually a truncated stream
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        body, start = inflater.decompress(head[meta_end:], _MAX_INFLATE), 0
    implicit, little = _encoding(ts, body[start : start + 6])
    walker = _Walker(io.BytesIO(body), len(body), little, stop_after=_LAST_INDEXED_TAG)
    try:
        walker.dataset(start, implicit, 0, in_item=False)
    except _Incomplete:
        pass  # elements before the damage are complete and usable
    wanted = [walker.top[t] for t in sorted(walker.top) if t in _SPECIFIC_SET]
    picked = b"".join(body[hpos : vpos + length] for hpos, vpos, length, _vr, _n in wanted if length != _UNDEFINED)
    ds = read_dataset(io.BytesIO(picked), implicit, little)
    if not ts:
        # no meta: record the encoding found, so a C-GET knows what is stored
        ts = _IMPLICIT_LE if implicit else (_EXPLICIT_LE if little else _EXPLICIT_BE)
    return ds, ts


def extract_tags(head: bytes) -> dict[str, str | int | list[str]] | None:
    """Return the indexed attributes of a DICOM body from its first bytes.

    ``head`` may be any prefix of the object (typically <= 2 MiB) and may end
    mid-element.  Returns ``None`` if the bytes are not DICOM, if any of
    :data:`REQUIRED_UIDS` is missing or not a plausible UID (digits and dots,
    <= 128 chars - longer than the standard's 64 to tolerate broken writers,
    but never anything path-like), or on any parse failure.  Absent or empty
    attributes are omitted; an attribute that fails to convert is omitted
    rather than failing the whole object.  Never raises.
    """
    try:
        head = bytes(head)
        if not looks_like_dicom(head):
            return None
        ds, ts = _parse_head(head)
        out: dict[str, str | int | list[str]] = {}
        for keyword in _DATASET_KEYWORDS:
            try:
                elem = ds.get(keyword)
                value = _plain(keyword, elem)
            except Exception:
                continue  # one bad attribute must not hide the object
            if value is not None:
                out[keyword] = value
        if ts:
            out["TransferSyntaxUID"] = ts
        for uid_kw in REQUIRED_UIDS:
            uid = out.get(uid_kw)
            if not isinstance(uid, str) or not _UID_RE.fullmatch(uid):
                return None
        return out
    except Exception:  # includes RecursionError, zlib.error, InvalidDicomError
        return None


def s3_tags(tags: dict[str, Any] | None) -> dict[str, str]:
    """S3 object tags (PatientID, StudyDate, Modality) for an extracted dict.

    Values are restricted to the portable S3 tag charset (ASCII letters,
    digits, space and ``+ - = . _ : / @``; anything else becomes ``_``) and
    cut to 256 characters.  Missing or empty attributes are left out.
    """
    out: dict[str, str] = {}
    if not tags:
        return out
    for key in ("PatientID", "StudyDate", "Modality"):
        value = tags.get(key)
        if isinstance(value, list):
            value = "\\".join(str(v) for v in value)
        if value is None or value == "":
            continue
        clean = _S3_BAD.sub("_", str(value))[:256]
        if clean:
            out[key] = clean
    return out


# --------------------------------------------------------------------------- walking


class _Incomplete(Exception):
    """The structure runs past EOF or is not parseable as DICOM."""


def _parse_header(buf: bytes, implicit: bool, little: bool) -> tuple[int, str | None, int, int] | None:
    """Decode an element header from ``buf`` -> (tag, vr, length, header_len).

    Returns None if ``buf`` is too short.  Item/delimiter tags always use the
    8-byte implicit layout; an explicit header with an invalid VR is read as
    implicit, like pydicom does, because some writers switch inside sequences.
    """
    if len(buf) < 8:
        return None
    e = "<" if little else ">"
    group, elem = struct.unpack_from(e + "HH", buf, 0)
    tag = group << 16 | elem
    if implicit or group == 0xFFFE or buf[4:6] not in _VRS:
        return tag, None, struct.unpack_from(e + "L", buf, 4)[0], 8
    vr = buf[4:6]
    if vr in _LONG_VRS:
        if len(buf) < 12:
            return None
        return tag, vr.decode(), struct.unpack_from(e + "L", buf, 8)[0], 12
    return tag, vr.decode(), struct.unpack_from(e + "H", buf, 6)[0], 8


class _Walker:
    """Walks element headers of a seekable file without reading values."""

    def __init__(self, fp: IO[bytes], size: int, little: bool, stop_after: int | None = None) -> None:
        self.fp, self.size, self.little, self.stop_after = fp, size, little, stop_after
        # top-level tag -> (header pos, value pos, length, vr, item count)
        self.top: dict[int, tuple[int, int, int, str | None, int]] = {}

    def _header(self, pos: int, implicit: bool) -> tuple[int, str | None, int, int] | None:
        self.fp.seek(pos)
        buf = self.fp.read(12)
        hdr = _parse_header(buf, implicit, self.little)
        if hdr is None:
            if pos + len(buf) == self.size and buf.strip(b"\0"):
                raise _Incomplete(f"truncated inside an element header at offset {pos}")
            if len(buf) >= 8:  # explicit long header cut after 8 bytes
                raise _Incomplete(f"truncated inside an element header at offset {pos}")
            return None  # clean EOF, or tolerated all-zero trailing padding
        return hdr

    def dataset(self, pos: int, implicit: bool, depth: int, in_item: bool) -> int:
        if depth > _MAX_DEPTH:
            raise _Incomplete("sequences nested too deeply")
        while True:
            hdr = self._header(pos, implicit)
            if hdr is None:
                if in_item:
                    raise _Incomplete("end of file inside an undefined-length item")
                return pos
            tag, vr, length, hlen = hdr
            vpos = pos + hlen
            if depth == 0 and self.stop_after is not None and tag > self.stop_after:
                return pos
            if tag == _ITEM_DELIM and in_item:
                return vpos
            if tag in (_ITEM, _ITEM_DELIM, _SEQ_DELIM):
                raise _Incomplete(f"unexpected delimiter {tag:08X} at offset {pos}")
            items = 0
            if length == _UNDEFINED:
                if vr not in (None, "SQ", "UN", "OB", "OW"):
                    raise _Incomplete(f"undefined length on VR {vr} at offset {pos}")
                # UN of undefined length is encoded as implicit VR LE (PS3.5 6.2.2)
                child_implicit = implicit or vr == "UN"
                end, items = self.items(vpos, child_implicit, depth + 1)
            else:
                end = vpos + length
                if end > self.size:
                    raise _Incomplete(
                        f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) needs {length} bytes "
                        f"at offset {vpos} but file has {self.size - vpos}"
                    )
            if depth == 0:
                self.top[tag] = (pos, vpos, length, vr, items)
            pos = end

    def items(self, pos: int, implicit: bool, depth: int) -> tuple[int, int]:
        """Walk sequence/fragment items up to the sequence delimiter."""
        count = 0
        while True:
            hdr = self._header(pos, True)
            if hdr is None:
                raise _Incomplete("end of file before sequence delimiter")
            tag, _vr, length, hlen = hdr
            vpos = pos + hlen
            if tag == _SEQ_DELIM:
                return vpos, count
            if tag != _ITEM:
                raise _Incomplete(f"expected item tag at offset {pos}, got {tag:08X}")
            if length == _UNDEFINED:
                pos = self.dataset(vpos, implicit, depth, in_item=True)
            else:
                if vpos + length > self.size:
                    raise _Incomplete(f"item at offset {pos} runs past end of file")
                pos = vpos + length
            count += 1


def _int_attr(ds: pydicom.Dataset, keyword: str, default: int | None) -> int | None:
    try:
        value = ds.get(keyword)
        if value is None or str(value).strip() == "":
            return default
        return int(float(str(value)))
    except Exception:
        return default


def _check_pixels(ds: pydicom.Dataset, top: dict[int, tuple[int, int, int, str | None, int]]) -> str | None:
    pixel_tag = next((t for t in _PIXEL_TAGS if t in top), None)
    rows = _int_attr(ds, "Rows", None)
    if pixel_tag is None:
        if "PixelDataProviderURL" in ds:
            return None
        if rows:
            return "image attributes present but no pixel data (truncated?)"
        sop_class = UID(str(ds.get("SOPClassUID", "")).strip(" \0"))
        if sop_class.name.endswith("Image Storage"):
            return f"{sop_class.name} without pixel data (truncated?)"
        return None
    _hpos, _vpos, length, _vr, items = top[pixel_tag]
    frames = max(_int_attr(ds, "NumberOfFrames", 1) or 1, 1)
    if length == _UNDEFINED:
        fragments = items - 1  # first item is the basic offset table
        if fragments < 1:
            return "encapsulated pixel data has no fragments"
        if fragments < frames:
            # each fragment holds data of exactly one frame (PS3.5 A.4)
            return f"encapsulated pixel data has {fragments} fragments for {frames} frames"
        return None
    cols = _int_attr(ds, "Columns", None)
    if not rows or not cols:
        return None  # nothing to compare against
    spp = _int_attr(ds, "SamplesPerPixel", 1) or 1
    bits = _PIXEL_TAGS[pixel_tag] or _int_attr(ds, "BitsAllocated", None)
    if not bits:
        return None
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        spp = 2  # native 4:2:2 stores two samples per pixel (PS3.3 C.7.6.3.1.2)
    expected = (rows * cols * spp * bits * frames + 7) // 8
    if length < expected:
        return f"pixel data is {length} bytes, expected {expected} (truncated)"
    return None


def _check(fp: BinaryIO) -> str | None:
    size = fp.seek(0, os.SEEK_END)
    fp.seek(0)
    head = fp.read(65536)
    if not looks_like_dicom(head):
        return "not a DICOM file"
    meta_end, ts = _meta_end_and_ts(head)
    if meta_end >= len(head) and size > len(head):
        return "file meta information unreasonably large"
    walk_fp: IO[bytes] = fp
    walk_size = size
    if ts in _DEFLATED_TS:
        walk_fp = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        fp.seek(meta_end)
        while chunk := fp.read(1 << 20):
            walk_fp.write(inflater.decompress(chunk))
        walk_fp.write(inflater.flush())
        if not inflater.eof:
            return "deflated dataset is truncated"
        walk_size, meta_end = walk_fp.tell(), 0
    try:
        if meta_end >= walk_size and ts not in _DEFLATED_TS:
            return "no dataset after file meta information"
        walk_fp.seek(meta_end)
        implicit, little = _encoding(ts, walk_fp.read(6))
        walker = _Walker(walk_fp, walk_size, little)
        try:
            walker.dataset(meta_end, implicit, 0, in_item=False)
        except _Incomplete as exc:
            return str(exc)
    finally:
        if walk_fp is not fp:
            walk_fp.close()
    fp.seek(0)
    try:
        # Full header parse (lazy values), pixels deferred: catches malformed
        # headers the structural walk accepts.
        # defer_size keeps big non-pixel blobs (encapsulated PDFs...) on disk.
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True, defer_size=1 << 20)
    except Exception as exc:
        return f"malformed: {type(exc).__name__}: {exc}"
    return _check_pixels(ds, walker.top)


def complete_file_check(path_or_fileobj: str | os.PathLike[str] | BinaryIO) -> str | None:
    """Return why a complete DICOM file is truncated or malformed, else None.

    Accepts a path or a seekable binary file object (read from offset 0; it is
    not closed).  Detects: a cut anywhere in the element structure (a value
    or item running past EOF, a missing item/sequence delimiter, a partial
    element header), a truncated deflate stream, native pixel data shorter
    than Rows*Columns*SamplesPerPixel*BitsAllocated/8*NumberOfFrames,
    encapsulated pixel data without delimiter or with fewer fragments than
    frames, and image attributes without pixel data.  A cut that falls exactly
    between two non-pixel elements after the pixel data cannot be detected.
    Trailing all-zero padding shorter than an element header is tolerated.
    Never raises.
    """
    try:
        if isinstance(path_or_fileobj, (str, bytes, os.PathLike)):
            with open(path_or_fileobj, "rb") as fp:
                return _check(fp)
        return _check(path_or_fileobj)
    except Exception as exc:
        return f"unreadable: {type(exc).__name__}: {exc}"
