"""A small pynetdicom SCU for the tests: store files as they are, find, move, get.

Run as a script (``python dicom_scu.py store|get-sha256 ...``) it is the
separate SCU process of the large-instance tests: it sends a file without
loading it and receives a C-GET into a spool file, printing one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)


def _meta(path: Path) -> tuple[str, str]:
    meta = read_file_meta_info(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def store_files(port: int, paths: list[Path], calling: str = "TESTSCU") -> list[int]:
    """C-STORE each file's dataset bytes unchanged (chunked send); returns the statuses."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title=calling)
    ae.dimse_timeout = ae.network_timeout = 120
    for pair in dict.fromkeys(_meta(p) for p in paths):
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS")
    assert assoc.is_established, "association refused"
    try:
        return [int(assoc.send_c_store(Path(p)).Status) for p in paths]
    finally:
        assoc.release()


def find(port: int, query: dict[str, Any], *, patient_root: bool = False) -> tuple[list[Dataset], int]:
    """C-FIND; returns (identifiers of the pending responses, final status)."""
    model = PatientRootQueryRetrieveInformationModelFind if patient_root else StudyRootQueryRetrieveInformationModelFind
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(model)
    ds = Dataset()
    for keyword, value in query.items():
        setattr(ds, keyword, value)
    assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS")
    assert assoc.is_established
    out, final = [], -1
    try:
        for status, identifier in assoc.send_c_find(ds, model):
            if status and status.Status in (0xFF00, 0xFF01):
                out.append(identifier)
            elif status:
                final = int(status.Status)
    finally:
        assoc.release()
    return out, final


class Receiver:
    """A Storage SCP (the C-MOVE destination) keeping each dataset's bytes as received."""

    def __init__(self, port: int, aet: str = "DEST") -> None:
        self.received: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.ae = AE(ae_title=aet)
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event: Any) -> int:
        with self.lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] = _encoded(event)
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def _encoded(event: Any) -> bytes:
    try:
        path = event.dataset_path
    except AttributeError:
        path = None
    if path is None:
        return event.encoded_dataset(include_meta=False)
    from dicomtest import dataset_bytes

    return dataset_bytes(Path(path).read_bytes())


def move(port: int, query: dict[str, Any], destination: str = "DEST") -> list[int]:
    """C-MOVE (Study Root); returns every response status."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ds = Dataset()
    for keyword, value in query.items():
        setattr(ds, keyword, value)
    assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS")
    assert assoc.is_established
    try:
        return [int(s.Status) for s, _ in assoc.send_c_move(ds, destination, StudyRootQueryRetrieveInformationModelMove) if s]
    finally:
        assoc.release()


def get(port: int, query: dict[str, Any], contexts: list[tuple[str, str]]) -> tuple[dict[str, bytes], list[int]]:
    """C-GET (Study Root) accepting ``contexts`` (SOP class, transfer syntax) as Storage SCP.

    Returns (SOP Instance UID -> dataset bytes as received, response statuses).
    """
    received: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = _encoded(event)
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class, ts in dict.fromkeys(contexts):
        ae.add_requested_context(sop_class, [ts])
        roles.append(build_role(sop_class, scp_role=True))
    ds = Dataset()
    for keyword, value in query.items():
        setattr(ds, keyword, value)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="OBJFS",
        ext_neg=list({r.sop_class_uid: r for r in roles}.values()),
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    return received, statuses


def dataset_sha256(path: Path) -> str:
    """sha256 of a Part-10 file's dataset bytes (after its File Meta group), streamed."""
    from dicomtest import dataset_offset

    sha = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(dataset_offset(f))
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def get_sha256(port: int, query: dict[str, Any], contexts: list[tuple[str, str]]) -> tuple[dict[str, str], list[int]]:
    """C-GET like :func:`get`, but each instance is received into a spool file
    (``STORE_RECV_CHUNKED_DATASET``) and only its dataset sha256 is kept."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    digests: dict[str, str] = {}

    def on_store(event: Any) -> int:
        digests[str(event.request.AffectedSOPInstanceUID)] = dataset_sha256(Path(event.dataset_path))
        return 0x0000

    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = 1 << 20
    ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, ts in dict.fromkeys(contexts):
        ae.add_requested_context(sop_class, [ts])
    roles = {sc: build_role(sc, scp_role=True) for sc, _ in contexts}
    ds = Dataset()
    for keyword, value in query.items():
        setattr(ds, keyword, value)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="OBJFS", ext_neg=list(roles.values()), evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    try:
        statuses = [int(s.Status) for s, _ in assoc.send_c_get(ds, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    return digests, statuses


def _peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def main(argv: list[str] | None = None) -> int:
    """``store PORT FILE...`` or ``get-sha256 PORT STUDY SERIES SOP SOP_CLASS TS``; one JSON line out."""
    parser = argparse.ArgumentParser(prog="dicom_scu.py")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("store")
    p.add_argument("port", type=int)
    p.add_argument("files", nargs="+", type=Path)
    p = sub.add_parser("get-sha256")
    p.add_argument("port", type=int)
    for name in ("study", "series", "sop", "sop_class", "ts"):
        p.add_argument(name)
    args = parser.parse_args(argv)
    if args.cmd == "store":
        out: dict[str, Any] = {"statuses": store_files(args.port, args.files)}
    else:
        query = {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": args.study,
            "SeriesInstanceUID": args.series,
            "SOPInstanceUID": args.sop,
        }
        digests, statuses = get_sha256(args.port, query, [(args.sop_class, args.ts)])
        out = {"statuses": statuses, "sha256": digests}
    out["peak_rss_kib"] = _peak_rss_kib()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
