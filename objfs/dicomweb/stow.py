"""STOW-RS: store instances sent as ``multipart/related; type="application/dicom"``.

Each part is spooled to the store's disk as it arrives (bounded memory) and
then stored through the gateway's C-STORE path
(:meth:`objfs.dicom.storage.StoreHandler.store_file`): the same completeness
checks, indexing, duplicates policy (``[dicom] duplicates``) and durability
(the answer is sent after the durable commit). The answer (PS3.18 10.5.3)
lists every stored instance in ReferencedSOPSequence and every refused one
in FailedSOPSequence with its FailureReason and why (an ErrorComment per
item); 200 if all were stored, 202 if some, 409 if none.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import _read_file_meta_info
from pydicom.filewriter import write_file_meta_info

from objfs.dicom.storage import StoreHandler

from .engine import Engine, HTTPError
from .parts import PartReader, parse_media_type

# FailureReason values (PS3.18 Table 10.5.3-1 and PS3.4 C-STORE statuses)
PROCESSING_FAILURE = 0x0110
STUDY_MISMATCH = 0xA900
NOT_DICOM = 0xC002


class Stow:
    """STOW-RS over one store and bucket."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = engine.store
        self.spool = self.store.spool_area("dicomweb-stow")
        self.handler = StoreHandler(self.store, engine.bucket, self.store.config.dicom.duplicates)

    def reader_for(self, content_type: str | None) -> PartReader:
        media = parse_media_type(content_type or "")
        if media.media_type != "multipart/related":
            raise HTTPError(415, 'STOW-RS takes multipart/related; type="application/dicom"')
        if media.part_type and media.part_type.lower() != "application/dicom":
            raise HTTPError(415, "only application/dicom parts are stored (not DICOM JSON with bulk data)")
        return PartReader(media.params.get("boundary", ""), self._new_part)

    def _new_part(self) -> tuple[Path, Any]:
        fd, name = tempfile.mkstemp(suffix=".dcm", prefix=self.store.spool_prefix(), dir=self.spool)
        return Path(name), os.fdopen(fd, "wb")

    def store_parts(
        self, parts: list[tuple[str, Path]], study: str | None, principal: Any, base: str
    ) -> tuple[int, dict[str, Any]]:
        """Store every part (blocking); ``(HTTP status, DICOM JSON answer)``."""
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for ctype, path in parts:
            try:
                self._one(ctype, path, study, principal, base, stored, failed)
            finally:
                path.unlink(missing_ok=True)
        answer: dict[str, Any] = {}
        if stored:
            answer["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        if study:
            answer["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
        status = 200 if stored and not failed else 202 if stored else 409
        return status, answer

    def _one(self, ctype: str, path: Path, study: str | None, principal: Any, base: str, stored: list, failed: list) -> None:
        sop_class = sop_instance = ""
        if parse_media_type(ctype).media_type != "application/dicom":
            failed.append(_failure("", "", NOT_DICOM, f"part of type {ctype} is not application/dicom"))
            return
        try:
            _normalise_part10(path)
            ds = dcmread(path, stop_before_pixels=True)
            sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            part_study = str(ds.StudyInstanceUID)
        except (InvalidDicomError, AttributeError, ValueError, OSError, EOFError) as exc:
            failed.append(_failure(sop_class, sop_instance, NOT_DICOM, f"not a DICOM Part-10 file: {exc}"))
            return
        if study and part_study != study:
            failed.append(
                _failure(sop_class, sop_instance, STUDY_MISMATCH, f"instance belongs to study {part_study}, not {study}")
            )
            return
        try:
            result = self.handler.store_file(path, sop_class, sop_instance, "", principal=principal)
        except ValueError as exc:  # no File Meta group length
            failed.append(_failure(sop_class, sop_instance, NOT_DICOM, str(exc)))
            return
        code = int(result.Status)
        if code == 0:
            url = f"{base}/studies/{part_study}/series/{ds.SeriesInstanceUID}/instances/{sop_instance}"
            stored.append(
                {
                    "00081150": {"vr": "UI", "Value": [sop_class]},
                    "00081155": {"vr": "UI", "Value": [sop_instance]},
                    "00081190": {"vr": "UR", "Value": [url]},
                }
            )
        else:
            failed.append(_failure(sop_class, sop_instance, code, str(result.get("ErrorComment", "") or "refused")))


def _normalise_part10(path: Path) -> None:
    """Give a part whose File Meta group lacks the preamble or its group length (``pydicom.dcmwrite``
    writes a Dataset so by default, and so dicomweb-client sends it) a standard Part-10 header.
    The dataset's bytes are kept exactly; only the header is rewritten."""
    with open(path, "rb") as fp:
        head = fp.read(144)
        if head[128:132] == b"DICM" and head[132:138] == b"\x02\x00\x00\x00UL":
            return  # already what the gateway's store path reads
        start = 132 if head[128:132] == b"DICM" else 0
        if head[start : start + 2] != b"\x02\x00":
            return  # no File Meta at all: refused by the store path
        fp.seek(start)
        meta = _read_file_meta_info(fp)
        fixed = path.with_suffix(".part10")
        with open(fixed, "wb") as out:
            out.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(out, meta, enforce_standard=True)
            shutil.copyfileobj(fp, out, 1 << 20)
    os.replace(fixed, path)


def _failure(sop_class: str, sop_instance: str, reason: int, comment: str) -> dict[str, Any]:
    item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [reason]}, "00000902": {"vr": "LO", "Value": [comment[:64]]}}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [sop_instance]}
    return item


async def receive(stow: Stow, request: Any, study: str | None, principal: Any, base: str) -> tuple[int, dict[str, Any]]:
    """Spool the request body's parts, then store them; returns the answer."""
    reader = stow.reader_for(request.headers.get("content-type"))
    try:
        async for chunk in request.stream():
            reader.feed(chunk)
        reader.finish()
    except BaseException:
        for _ctype, path in reader.parts:
            path.unlink(missing_ok=True)
        raise
    if not reader.parts:
        raise HTTPError(400, "the body holds no part")
    return await stow.engine.run(functools.partial(stow.store_parts, reader.parts, study, principal, base))
