"""WADO-RS: retrieve studies, series and instances, their metadata, frames and bulk data.

Guarantees:

* Instances are sent exactly as stored (``multipart/related;
  type="application/dicom"``, transfer syntax as stored), streamed segment by
  segment from the engine; a dataset stored without a File Meta header gets
  the gateway's. A transfer syntax other than the stored one is answered 406.
* Which instances make up a study or series comes from the DICOM index, one
  per SOP Instance UID (the gateway's copy preferred), never from a listing.
* Metadata comes from the DICOM JSON header the index keeps with each
  instance (:mod:`objfs.dicom.header`), so a study's metadata reads no
  object; an instance indexed without one has its header read (stopping
  before Pixel Data, which is given by URI). Either way the answer is kept
  per stored version, which never changes.
* Every read is audited with the requesting key (the engine's ``read`` lines,
  plus one line per metadata answer naming the study).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import trio
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders import base as _decoders  # noqa: F401  (its logger exists before we filter it)
from pydicom.tag import Tag

from objfs.dicom.header import dataset_json
from objfs.dicom.index import find_instances
from objfs.dicom.storage import file_meta_bytes
from objfs.store import ObjectReader, Principal, Store

from .engine import Engine, HTTPError
from .parts import closing, part_header

METADATA_CACHE = 50000  # instances whose metadata is kept in memory
PARALLEL_READS = 8

#: Compressed transfer syntax -> the media type of its frames (PS3.18 8.7.3.5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
EXPLICIT_LE = "1.2.840.10008.1.2.1"


class ObjectFile(io.RawIOBase):
    """A seekable read-only file over an :class:`ObjectReader` (pydicom reads headers through it)."""

    def __init__(self, reader: ObjectReader) -> None:
        self.reader = reader
        self.size = reader.info.size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = offset if whence == 0 else self.pos + offset if whence == 1 else self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: Any) -> int:
        data = self.reader.read(self.pos, len(buf))
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def instance_url(base: str, tags: dict[str, Any]) -> str:
    return f"{base}/studies/{tags['StudyInstanceUID']}/series/{tags['SeriesInstanceUID']}/instances/{tags['SOPInstanceUID']}"


class Wado:
    """WADO-RS over one store and bucket."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store: Store = engine.store
        self._metadata: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    # -- which instances ------------------------------------------------------------

    async def instances(self, study: str, series: str | None = None, sop: str | None = None) -> list[dict[str, Any]]:
        """The instances a URL names, in series then instance number order; 404 if none."""
        query = {"StudyInstanceUID": study}
        level = "STUDY"
        if series:
            query["SeriesInstanceUID"], level = series, "SERIES"
        if sop:
            query["SOPInstanceUID"], level = sop, "IMAGE"
        if any(c in "".join(query.values()) for c in "*?\\,"):
            raise HTTPError(400, "a UID in a WADO-RS path is one exact UID")
        items = await self.engine.run(functools.partial(find_instances, self.store, query, level, bucket=self.engine.bucket))
        if not items:
            raise HTTPError(404, f"no such {level.lower() if level != 'IMAGE' else 'instance'}")
        items.sort(
            key=lambda i: (
                i["tags"].get("SeriesNumber") or 0,
                i["tags"]["SeriesInstanceUID"],
                i["tags"].get("InstanceNumber") or 0,
            )
        )
        return items

    # -- instances as stored ---------------------------------------------------------

    async def stream_instances(self, items: list[dict[str, Any]], principal: Principal, boundary: str) -> AsyncIterator[bytes]:
        """The multipart body of a retrieve: each instance as stored, one segment at a time."""
        for item in items:
            ts = item["tags"].get("TransferSyntaxUID") or EXPLICIT_LE
            yield part_header(boundary, f"application/dicom; transfer-syntax={ts}")
            async for chunk in self._object_chunks(item, principal):
                yield chunk
            yield b"\r\n"
        yield closing(boundary)

    async def _object_chunks(self, item: dict[str, Any], principal: Principal) -> AsyncIterator[bytes]:
        open_ = functools.partial(self.store.open_object, item["bucket"], item["key"], item["version"], principal=principal)
        reader = await self.engine.run(open_)
        try:
            chunks = reader.iter_range()
            first = True
            while True:
                chunk = await self.engine.run(next, chunks, None)
                if chunk is None:
                    break
                if first and chunk[128:132] != b"DICM":
                    tags = item["tags"]
                    yield file_meta_bytes(
                        tags["SOPClassUID"], tags["SOPInstanceUID"], tags.get("TransferSyntaxUID") or EXPLICIT_LE
                    )
                first = False
                yield chunk
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(reader.close)

    # -- metadata ---------------------------------------------------------------------

    async def metadata(self, items: list[dict[str, Any]], principal: Principal, base: str, what: str) -> str:
        """The DICOM JSON metadata of ``items`` as one JSON array (text).

        From the header the index keeps with each instance; an instance
        indexed without one (written before, or with a header too large to
        keep) has its header read from the object, in parallel. Either way
        the text is kept per stored version and base URL.
        """
        out: list[str | None] = [None] * len(items)
        missing = []
        for i, item in enumerate(items):
            out[i] = self._cached(item, base)
            if out[i] is None:
                if item.get("header") is not None:
                    out[i] = self._remember(item, base, item["header"])
                else:
                    missing.append(i)
        if missing:
            limit = trio.Semaphore(PARALLEL_READS)

            async def one(i: int) -> None:
                async with limit:
                    out[i] = await self.engine.run(self._read_metadata, items[i], principal, base)

            async with trio.open_nursery() as nursery:
                for i in missing:
                    nursery.start_soon(one, i)
        await self.engine.run(
            functools.partial(
                self.store.record_audit,
                "read",
                principal,
                "ok",
                False,
                bucket=self.engine.bucket,
                key=what,
                detail=f"WADO-RS metadata of {len(items)} instances",
            )
        )
        return "[" + ",".join(o for o in out if o is not None) + "]"

    def _cached(self, item: dict[str, Any], base: str) -> str | None:
        with self._lock:
            found = self._metadata.get((item["id"], base))
            if found is not None:
                self._metadata.move_to_end((item["id"], base))
            return found

    def _remember(self, item: dict[str, Any], base: str, header: dict[str, Any]) -> str:
        # Relative bulk data URIs become absolute: a string replace on the JSON text (fast, C-level).
        url = instance_url(base, item["tags"])
        text = json.dumps(header).replace('"BulkDataURI": "bulkdata/', f'"BulkDataURI": "{url}/bulkdata/')
        with self._lock:
            self._metadata[(item["id"], base)] = text
            while len(self._metadata) > METADATA_CACHE:
                self._metadata.popitem(last=False)
        return text

    def _read_metadata(self, item: dict[str, Any], principal: Principal, base: str) -> str:
        with self.store.open_object(item["bucket"], item["key"], item["version"], principal=principal) as reader:
            fp = ObjectFile(reader)
            ds = dcmread(fp, stop_before_pixels=True, force=True)
            follows = fp.read(4) in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
        meta = getattr(ds, "file_meta", None)
        ts = (
            str(meta.TransferSyntaxUID)
            if meta is not None and "TransferSyntaxUID" in meta
            else item["tags"].get("TransferSyntaxUID")
        )
        return self._remember(item, base, dataset_json(ds, ts, follows))

    # -- whole datasets (frames, bulk data, rendering) ------------------------------

    def read_dataset(self, item: dict[str, Any], principal: Principal) -> Dataset:
        with self.store.open_object(item["bucket"], item["key"], item["version"], principal=principal) as reader:
            return dcmread(ObjectFile(reader), force=True)


class _QuietWhileDecoding(logging.Filter):
    """Drops pydicom's log records (tracebacks of failed decoders) in threads that are decoding
    for us: a frame that cannot be decoded is the client's 406, not a server error."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_QUIET = _QuietWhileDecoding()
# Filters do not apply to child loggers: attach to each of pydicom's (its decoders log under their module names).
for _name in ["pydicom", *(n for n in logging.root.manager.loggerDict if n.startswith("pydicom."))]:
    logging.getLogger(_name).addFilter(_QUIET)


def decoded_pixels(ds: Dataset) -> Any:
    """``ds.pixel_array`` (a numpy array); raises HTTPError 406 when no decoder can decode it."""
    _QUIET.active.on = True
    try:
        return ds.pixel_array
    except Exception as exc:
        raise HTTPError(406, f"the stored pixel data ({transfer_syntax_of(ds)}) cannot be decoded here: {exc}") from exc
    finally:
        _QUIET.active.on = False


def _compressed(ts: str) -> bool:
    return ts not in ("1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")


def transfer_syntax_of(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else EXPLICIT_LE


def frame_count(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def frames_of(ds: Dataset, numbers: list[int], as_stored: bool) -> tuple[list[bytes], str, str]:
    """``(frames, part media type, transfer syntax)``: the 1-based ``numbers`` frames of ``ds``.

    ``as_stored``: compressed frames as stored; otherwise uncompressed
    (decoded with pydicom's handlers; 406 when none can decode them).
    """
    if "PixelData" not in ds:
        raise HTTPError(404, "the instance has no pixel data")
    count = frame_count(ds)
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise HTTPError(404, f"frame(s) {bad} out of range 1..{count}")
    ts = transfer_syntax_of(ds)
    if not _compressed(ts):
        rows, cols = int(ds.Rows), int(ds.Columns)
        size = rows * cols * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8
        data = ds.PixelData
        return [data[(n - 1) * size : n * size] for n in numbers], "application/octet-stream", EXPLICIT_LE
    if as_stored:
        stored = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [stored[n - 1] for n in numbers], FRAME_MEDIA_TYPES.get(ts, "application/octet-stream"), ts
    pixels = decoded_pixels(ds)
    if count == 1:
        pixels = pixels[None, ...]
    return [pixels[n - 1].tobytes() for n in numbers], "application/octet-stream", EXPLICIT_LE


def bulk_value(ds: Dataset, tag_text: str) -> bytes:
    """The raw value of a binary element, found at the top level first, then in sequences."""
    try:
        tag = Tag(int(tag_text, 16))
    except ValueError:
        raise HTTPError(400, f"bad tag {tag_text!r}") from None
    found = ds.get(tag)
    if found is None:
        for elem in ds.iterall():
            if elem.tag == tag:
                found = elem
                break
    if found is None or not isinstance(found.value, (bytes, bytearray)):
        raise HTTPError(404, f"no bulk data {tag_text}")
    return bytes(found.value)
