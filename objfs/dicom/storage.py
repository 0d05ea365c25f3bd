"""Storage SCP: one received C-STORE dataset -> one durable object.

pynetdicom (with ``STORE_RECV_CHUNKED_DATASET``) streams the incoming
P-DATA into a spool file, so an instance of several GiB is never held in
memory. :class:`StoreHandler` checks that file, then streams it into the
engine as ``<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``:
a File Meta Information header of ours (recording the calling AE) followed
by the dataset bytes exactly as received. The response is sent only after
``put_object`` returned, i.e. after the durable commit.

Statuses (PS3.4 B.2.3, PS3.7 C):

=========  ===============================================================
0x0000     stored (or, with ``duplicates = "keep"``, already held: the old
           instance is kept and the sender is told it is archived)
0x0111     duplicate SOP instance refused (``duplicates = "reject"``), or a
           ``replace`` refused because the held instance is WORM-locked
0xA700     out of resources: a drive is full
0xA701     out of resources: too few healthy drives to write
0xA900     the dataset's SOP Class UID differs from the request's
0xC001     truncated or malformed dataset (nothing stored)
0xC002     not DICOM, or Study/Series/SOP Instance UID missing or invalid
0xC003     the dataset's SOP Instance UID differs from the request's
0xC0FF     any other failure to store (logged)
=========  ===============================================================
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset

from objfs.store import Principal, Store
from objfs.store.errors import InsufficientDrives, NoSpace, ObjectLocked, PreconditionFailed, StoreError
from objfs.store.objects import HEAD_BYTES, IterStream

from .index import canonical_key, prepared_extract, sop_locations
from .meta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, file_meta_bytes  # noqa: F401 - re-exported
from .spool import ReceiveBuffer
from .tags import complete_file_check, extract_tags, meta_transfer_syntax

SEGMENT_READ = 1 << 20  # bytes read from the spool per engine read
log = logging.getLogger(__name__)

#: Who the gateway's own work (not asked for by a peer) is done as.
GATEWAY = Principal("system:gateway")

SPOOL_HEAD_BYTES = 64 << 10  # enough for any File Meta Information group


def status(code: int, comment: str | None = None) -> Dataset:
    """A C-STORE response status dataset with an optional (<= 64 chars) ErrorComment."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


def dataset_offset(fp: BinaryIO) -> int:
    """Offset of the dataset in a Part-10 file whose meta starts with its group length.

    pynetdicom's spool files always do (``write_file_meta_info`` writes
    (0002,0000) first); raises ValueError otherwise.
    """
    fp.seek(128)
    head = fp.read(16)
    if head[:4] != b"DICM" or head[4:10] != b"\x02\x00\x00\x00UL":
        raise ValueError("no File Meta Information group length")
    (group_length,) = struct.unpack("<I", head[12:16])
    return 144 + group_length


def peer_principal(assoc: Any) -> Principal:
    """Who asks on an association: ``dicom:<calling AE>@<peer address>`` (audited as such)."""
    requestor = assoc.requestor
    return Principal(f"dicom:{str(requestor.ae_title).strip()}@{requestor.address}", source_ip=str(requestor.address))


class StoreHandler:
    """The ``EVT_C_STORE`` handler of the gateway (thread-safe; one per AE)."""

    def __init__(self, store: Store, bucket: str, duplicates: str = "keep") -> None:
        if duplicates not in ("keep", "replace", "reject"):
            raise ValueError(f"duplicates must be keep, replace or reject, not {duplicates!r}")
        self.store = store
        self.bucket = bucket
        self.duplicates = duplicates

    def __call__(self, event: Any) -> Dataset:
        req = event.request
        calling = event.assoc.requestor.ae_title
        spool = getattr(req, "_dataset_file", None)
        try:
            return self.store_file(
                spool.reader() if isinstance(spool, ReceiveBuffer) else Path(event.dataset_path),
                str(req.AffectedSOPClassUID),
                str(req.AffectedSOPInstanceUID),
                calling,
                principal=peer_principal(event.assoc),
            )
        except Exception as exc:  # the SCU gets a failure status, never a dropped association
            log.error("C-STORE of %s from %s failed: %s", req.AffectedSOPInstanceUID, calling, exc, exc_info=True)
            return status(0xC0FF, f"{type(exc).__name__}: {exc}")

    def store_file(
        self,
        source: Path | BinaryIO,
        sop_class: str,
        sop_instance: str,
        calling_aet: str = "",
        *,
        principal: Principal | None = None,
    ) -> Dataset:
        """Check the spooled Part-10 file (a path, or an open binary file it owns and closes) and store it as ``principal``.

        Returns the status. ``principal`` defaults to ``dicom:<calling_aet>``. Replacing (with
        ``duplicates = "replace"``) and removing replaced copies are done as
        ``principal`` too, so the audit trail names the sender of the change.
        """
        principal = principal or Principal(f"dicom:{calling_aet.strip()}")
        with open(source, "rb") if isinstance(source, (str, Path)) else source as fp:
            problem = complete_file_check(fp)
            if problem is not None:
                log.info("refused %s from %s: %s", sop_instance, calling_aet, problem)
                return status(0xC001, problem)
            fp.seek(0)
            spooled = fp.read(SPOOL_HEAD_BYTES)
            transfer_syntax = meta_transfer_syntax(spooled)
            if not transfer_syntax:  # no syntax in the meta: the one the dataset is found in, as the indexer does
                fp.seek(0)
                transfer_syntax = (extract_tags(fp.read(HEAD_BYTES)) or {}).get("TransferSyntaxUID")
            if not transfer_syntax:
                return status(0xC002, "not DICOM or Study/Series/SOP Instance UID missing")
            offset = dataset_offset(fp)
            size = fp.seek(0, os.SEEK_END)
            meta = file_meta_bytes(sop_class, sop_instance, str(transfer_syntax), calling_aet)
            # The first bytes of the object exactly as the engine will see them: parsed here once,
            # and the DICOM indexer reuses that parse (prepared_extract) instead of parsing them again.
            fp.seek(offset)
            head = meta + fp.read(HEAD_BYTES - len(meta))
            with prepared_extract(head) as extracted:
                tags = extracted["dicom"] if extracted else None
                if tags is None:
                    return status(0xC002, "not DICOM or Study/Series/SOP Instance UID missing")
                if tags.get("SOPClassUID") != sop_class:
                    return status(0xA900, f"SOP Class UID in dataset is {tags.get('SOPClassUID')}")
                if tags["SOPInstanceUID"] != sop_instance:
                    return status(0xC003, "SOP Instance UID in dataset differs from request")
                key = canonical_key(tags)
                held = sop_locations(self.store, self.bucket, sop_instance)
                if held and self.duplicates == "keep":
                    log.info("kept the held copy of duplicate %s from %s", sop_instance, calling_aet)
                    return status(0x0000)
                if held and self.duplicates == "reject":
                    return status(0x0111, "SOP instance already stored")
                try:
                    self.store.put_object(
                        self.bucket,
                        key,
                        # our file meta header, then the dataset exactly as received, one segment at a time
                        IterStream(itertools.chain([head], iter(lambda: fp.read(SEGMENT_READ), b""))),
                        length=len(meta) + size - offset,
                        content_type="application/dicom",
                        if_none_match=self.duplicates != "replace",
                        principal=principal,
                    )
                except PreconditionFailed:  # a concurrent association stored it first
                    return status(0x0000) if self.duplicates == "keep" else status(0x0111, "SOP instance already stored")
                except ObjectLocked as exc:
                    return status(0x0111, f"held instance is locked: {exc}")
                except NoSpace:
                    return status(0xA700, "out of space")
                except InsufficientDrives:
                    return status(0xA701, "too few healthy drives")
                except StoreError as exc:
                    log.error("storing %s failed: %s", key, exc)
                    return status(0xC0FF, str(exc))
        if held and self.duplicates == "replace":
            self._drop_replaced(held, key, principal)
        return status(0x0000)

    def _drop_replaced(self, held: list[dict[str, Any]], key: str, principal: Principal) -> None:
        """After a replace, remove gateway copies of the SOP instance under other names
        (its study or series changed). Legacy-path copies (migration, mount) stay:
        another system may still address them by path."""
        for loc in held:
            if loc["key"] != key and loc["key"] == canonical_key(loc["tags"]):
                try:
                    self.store.delete_object(loc["bucket"], loc["key"], principal=principal)
                except StoreError as exc:
                    log.warning("could not remove replaced copy %s/%s: %s", loc["bucket"], loc["key"], exc)
