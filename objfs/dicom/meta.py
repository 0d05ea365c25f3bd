"""The File Meta Information group (PS3.10 7.1) of the files the gateway writes, encoded directly.

:func:`file_meta_bytes` returns the bytes pydicom's ``write_file_meta_info``
writes for the same values (tested against it), ~40x faster: it is made once
per stored, sent and received instance.
"""

from __future__ import annotations

import struct

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION", "file_meta_bytes"]

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.77.1"  # under pydicom's root; objfs 0.1
IMPLEMENTATION_VERSION = "OBJFS_01"


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length (UI, SH, AE, UL)."""
    return struct.pack("<HH2sH", 0x0002, tag, vr, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    data = value.encode("ascii", "replace")
    return data + pad if len(data) % 2 else data


def file_meta_bytes(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    source_aet: str | None = None,
    *,
    implementation: tuple[str, str] = (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION),
) -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group naming objfs (or ``implementation``: UID, version).

    Encoded directly (the bytes pydicom's ``write_file_meta_info`` writes for
    the same values, ~40x faster): made once per stored and per sent instance,
    and for each received one's spool file (:mod:`.spool`).
    """
    elements = [
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01",
        _element(0x0002, b"UI", _text(sop_class, b"\0")),
        _element(0x0003, b"UI", _text(sop_instance, b"\0")),
        _element(0x0010, b"UI", _text(transfer_syntax, b"\0")),
        _element(0x0012, b"UI", _text(implementation[0], b"\0")),
        _element(0x0013, b"SH", _text(implementation[1], b" ")),
    ]
    if source_aet:
        elements.append(_element(0x0016, b"AE", _text(source_aet.strip()[:16], b" ")))
    group = b"".join(elements)
    return b"\0" * 128 + b"DICM" + _element(0x0000, b"UL", struct.pack("<I", len(group))) + group
