"""The gateway's fast paths keep what the slower code they replace guaranteed.

* The File Meta header is encoded by hand: the bytes are pydicom's.
* An instance's head is parsed once: the index holds what a fresh parse of
  the stored object gives, and a C-STORE success means the instance is
  already stored and indexed (checked after each response, before the next).
* Associations share the server's supported contexts: negotiation still
  accepts, rejects and assigns roles per association, however many ran before.
* DIMSE messages written by the sending thread are the PDUs pynetdicom
  writes, and a retrieval cut into many small PDUs arrives bit-exact.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dicomtest import dataset_bytes
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet, Verification

from objfs.dicom.direct import BATCH_BYTES, pdata_tf
from objfs.dicom.header import header_json
from objfs.dicom.index import DicomIndexer, canonical_key, find_instances, prepared_extract
from objfs.dicom.storage import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, file_meta_bytes
from objfs.dicom.synth import write_study
from objfs.dicom.tags import extract_tags
from objfs.store.objects import HEAD_BYTES
from objfs.stores import Store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CT = "1.2.840.10008.5.1.4.1.1.2"


def _pydicom_meta(sop_class: str, sop_instance: str, ts: str, aet: str | None) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if aet:
        meta.SourceApplicationEntityTitle = aet.strip()[:16]
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("sop_instance", "ts", "aet"),
    [
        ("1.2.3.4", ExplicitVRLittleEndian, None),  # even UID, no source AE
        ("1.2.3.45", ImplicitVRLittleEndian, "STORESCU"),  # odd UID (NUL-padded)
        ("1.2", JPEGBaseline8Bit, " A LONG CALLING AE TITLE "),  # cut to 16 characters
        ("1.2.3", ExplicitVRLittleEndian, "ODD"),  # odd AE title (space-padded)
        ("1.2.3", ExplicitVRLittleEndian, "   "),  # blank AE title: an empty element
    ],
)
def test_file_meta_bytes_are_what_pydicom_writes(sop_instance: str, ts: str, aet: str | None) -> None:
    assert file_meta_bytes(CT, sop_instance, ts, aet) == _pydicom_meta(CT, sop_instance, ts, aet)


def test_prepared_extraction_is_reused_only_for_the_same_head(tmp_path: Path) -> None:
    _, paths = write_study(tmp_path, instances=2, size=64)
    head, other = (p.read_bytes()[:HEAD_BYTES] for p in paths)
    indexer = DicomIndexer()
    with prepared_extract(head) as extracted:
        assert extracted is not None and extracted["dicom"] == extract_tags(head)
        assert indexer.extract(bytearray(head), "k") is extracted  # the engine passes a bytearray
        assert indexer.extract(other, "k")["dicom"]["SOPInstanceUID"] == extract_tags(other)["SOPInstanceUID"]
    after = indexer.extract(head, "k")
    assert after is not extracted and after == extracted


def test_each_success_is_stored_and_indexed_as_a_fresh_parse_would(gateway, tmp_path: Path) -> None:
    study_uid, paths = write_study(tmp_path, instances=6, series=2, patient_id="PID-FAST", size=32)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="OBJFS")
    assert assoc.is_established
    try:
        with Store.open(gateway.store) as store:
            for path in paths:
                status = assoc.send_c_store(path)
                assert status.Status == 0
                # Before the next C-STORE: the object is committed, with its index fields.
                ds = dcmread(path, stop_before_pixels=True)
                key = canonical_key({k: str(ds[k].value) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")})
                body = store.get_object_bytes("pacs", key)
                head = body[:HEAD_BYTES]
                assert store.head_object("pacs", key).dicom == extract_tags(head)
                query = {k: str(ds[k].value) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
                [item] = find_instances(store, query, "IMAGE", bucket="pacs")
                assert item["header"] == header_json(head, whole=len(head) < HEAD_BYTES)
                assert item["header"]["00100020"]["Value"] == ["PID-FAST"]
    finally:
        assoc.release()


def test_negotiation_per_association_with_shared_contexts(gateway) -> None:
    unknown = "1.2.826.0.1.3680043.8.498.999.1"  # an abstract syntax nobody supports
    for _ in range(12):
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        ae.add_requested_context(CTImageStorage, [JPEGBaseline8Bit])
        ae.add_requested_context(CTImageStorage, ["1.2.826.0.1.3680043.8.498.999.2"])  # no such syntax
        ae.add_requested_context(unknown)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        assoc = ae.associate("127.0.0.1", gateway.port, ae_title="OBJFS", ext_neg=[build_role(CTImageStorage, scp_role=True)])
        assert assoc.is_established
        try:
            results = {(str(cx.abstract_syntax), tuple(cx.transfer_syntax)): cx for cx in assoc.accepted_contexts}
            rejected = {(str(cx.abstract_syntax), cx.result) for cx in assoc.rejected_contexts}
            ct_jpeg = results[(CT, (JPEGBaseline8Bit,))]
            assert ct_jpeg.as_scp  # the C-GET requestor's Storage SCP role was accepted
            assert rejected == {(CT, 0x04), (unknown, 0x03)}
            assert assoc.send_c_echo().Status == 0
        finally:
            assoc.release()


@pytest.mark.parametrize(("context_id", "pdv"), [(1, b"\x00" + b"x" * 16377), (7, b"\x03abc"), (255, b"\x02")])
def test_pdata_tf_is_the_pdu_pynetdicom_encodes(context_id: int, pdv: bytes) -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, pdv))
    assert pdata_tf(context_id, pdv) == P_DATA_TF(primitive).encode()


def test_get_in_small_pdus_is_bit_exact(gateway, tmp_path: Path) -> None:
    study_uid, paths = write_study(tmp_path, instances=2, size=512)  # 512 KiB each: several write batches
    assert paths[0].stat().st_size > 2 * BATCH_BYTES
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    store = ae.associate("127.0.0.1", gateway.port, ae_title="OBJFS")
    assert [store.send_c_store(p).Status for p in paths] == [0, 0]
    store.release()

    received: dict[str, bytes] = {}

    def on_store(event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset(include_meta=False)
        return 0

    ae = AE(ae_title="TESTSCU")
    ae.maximum_pdu_size = 4096  # ~130 PDUs per instance
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(
        "127.0.0.1",
        gateway.port,
        ae_title="OBJFS",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        statuses = [s.Status for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    assert statuses == [0xFF00, 0xFF00, 0x0000]
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p.read_bytes()) for p in paths}
    assert received == sent
