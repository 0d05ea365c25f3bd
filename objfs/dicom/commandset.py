"""DIMSE command sets encoded directly instead of through pydicom (process-wide patch).

Every DIMSE message pynetdicom sends (a C-STORE response, each C-STORE
request and pending C-GET/C-MOVE response of a retrieval, each C-FIND
match) has its command set encoded twice by pydicom's general dataset
writer: once to measure (0000,0000) CommandGroupLength, once to send. For a
retrieval that was the largest single cost per instance on the gateway
(~30% of its CPU). A command set is a handful of group 0000 elements, always
implicit VR little endian (PS3.7 6.3.1); :func:`encode_command_set` writes
them directly.

Guarantees:

* The same bytes as pydicom's ``write_dataset`` for implicit VR little
  endian (tested against it for every message the gateway sends): elements
  in tag order, tag, 4-byte length, value; US/UL/AT binary, UI padded with
  NUL, other strings with a space, an empty value with length 0.
* Anything it does not know for certain (an element outside group 0000, a
  VR or value type not listed, a non-ASCII string, a deflated or explicit
  VR encoding) is left to pydicom: :func:`encode_command_set` returns None
  and pynetdicom's own ``encode`` runs, unchanged.
* Idempotent; affects the command sets of every pynetdicom association of the
  process (data sets are never encoded here).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

__all__ = ["encode_command_set", "install_direct_command_sets"]

_INT_FORMATS = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i"}
_STRING_VRS = frozenset({"AE", "CS", "LO", "SH", "ST", "LT", "DA", "TM", "DT", "IS", "DS"})
_HEADER = struct.Struct("<HHI")


def _values(value: Any) -> list[Any] | None:
    if value is None or value == "":
        return []
    if isinstance(value, (str, int, bytes)):
        return [value]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return None


def _encode_value(vr: str, value: Any) -> bytes | None:
    values = _values(value)
    if values is None:
        return None
    if not values:
        return b""
    fmt = _INT_FORMATS.get(vr)
    if fmt is not None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return None
        try:
            return b"".join(struct.pack(fmt, v) for v in values)
        except struct.error:
            return None
    if vr == "AT":
        if not all(isinstance(v, int) and 0 <= v <= 0xFFFFFFFF for v in values):
            return None
        return b"".join(struct.pack("<HH", v >> 16, v & 0xFFFF) for v in values)
    if vr == "UI" or vr in _STRING_VRS:
        if not all(isinstance(v, str) and v.isascii() for v in values):
            return None
        data = "\\".join(values).encode("ascii")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        return data
    return None


def encode_command_set(ds: Any) -> bytes | None:
    """The implicit VR little endian encoding of command set ``ds``, or None to let pydicom do it."""
    out = []
    try:
        for elem in ds:
            tag = int(elem.tag)
            if tag >> 16 != 0:
                return None
            value = _encode_value(elem.VR, elem.value)
            if value is None:
                return None
            out.append(_HEADER.pack(0, tag & 0xFFFF, len(value)))
            out.append(value)
    except Exception:  # an element pydicom itself could not convert: let pydicom report it as it would
        return None
    return b"".join(out)


def _fast_encode(original: Callable[..., Any]) -> Callable[..., Any]:
    def encode(ds: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Any:
        if is_implicit_vr and is_little_endian and not deflated:
            encoded = encode_command_set(ds)
            if encoded is not None:
                return encoded
        return original(ds, is_implicit_vr, is_little_endian, deflated)

    encode._objfs = True  # type: ignore[attr-defined]
    encode.original = original  # type: ignore[attr-defined]
    return encode


def install_direct_command_sets() -> None:
    """Encode DIMSE command sets directly in every association of the process. Idempotent."""
    from pynetdicom import dimse_messages

    if getattr(dimse_messages.encode, "_objfs", False):
        return
    # dimse_messages calls ``encode`` only for command sets (PS3.7: always implicit VR little endian).
    dimse_messages.encode = _fast_encode(dimse_messages.encode)
