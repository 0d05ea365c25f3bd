"""The DICOM JSON (PS3.18 F.2) of an instance's header, made once when the instance is written.

:func:`header_json` turns the first bytes of a body into the metadata a
DICOMweb viewer asks for: every element before Pixel Data, binary values
longer than :data:`BULK_THRESHOLD` given by a relative ``BulkDataURI``
(``bulkdata/GGGGEEEE``, made absolute by the front), Pixel Data by URI, and
AvailableTransferSyntaxUID. The DICOM indexer keeps it with the instance, so
a study's metadata is served from the index without reading any object.

Guarantees: never raises; returns None (the front then reads the header from
the object) when the header is not complete within the bytes given, when
the dataset is deflated, or when the JSON would exceed
:data:`MAX_HEADER_JSON` (large sequences, e.g. RT structure contours, are
not kept in the index).
"""

from __future__ import annotations

import io
import json
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

__all__ = ["BULK_THRESHOLD", "MAX_HEADER_JSON", "header_json", "dataset_json"]

BULK_THRESHOLD = 1024
MAX_HEADER_JSON = 64 * 1024
PIXEL_DATA_TAG = "7FE00010"
_PIXEL_LE, _PIXEL_BE = b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"
_UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95")


def _relative_uri(elem: Any) -> str:
    return f"bulkdata/{int(elem.tag):08X}"


def dataset_json(ds: Dataset, transfer_syntax: str | None, pixel_data_follows: bool) -> dict[str, Any]:
    """The DICOM JSON of a header read without its Pixel Data (bulk data by relative URI)."""
    body = ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=_relative_uri)
    if pixel_data_follows:
        wide = transfer_syntax in _UNCOMPRESSED and int(ds.get("BitsAllocated", 16) or 16) > 8
        body[PIXEL_DATA_TAG] = {"vr": "OW" if wide else "OB", "BulkDataURI": f"bulkdata/{PIXEL_DATA_TAG}"}
    if transfer_syntax:
        body["00083002"] = {"vr": "UI", "Value": [transfer_syntax]}
    return body


def header_json(head: bytes, whole: bool) -> dict[str, Any] | None:
    """The header of a body whose first bytes are ``head`` (``whole``: they are the whole body)."""
    try:
        fp = io.BytesIO(head)
        ds = dcmread(fp, stop_before_pixels=True, force=True)
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
        if ts in _DEFLATED:
            return None
        follows = fp.read(4) in (_PIXEL_LE, _PIXEL_BE)
        if not follows and not whole:
            return None  # the header may go on past the bytes we have
        body = dataset_json(ds, ts, follows)
        if len(json.dumps(body)) > MAX_HEADER_JSON:
            return None
        return body
    except Exception:
        return None
