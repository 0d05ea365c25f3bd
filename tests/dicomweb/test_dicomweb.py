"""DICOMweb against a real server: QIDO, WADO (bit-exact against C-STORE), metadata, frames, rendering, STOW, auth, CORS."""

from __future__ import annotations

import io
import json
import sys
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))

from dicom_scu import find, store_files  # noqa: E402
from dicomtest import dataset_bytes  # noqa: E402

from objfs.dicom.synth import make_instance, write_large_instance, write_study  # noqa: E402


@pytest.fixture(scope="module")
def study(tmp_path_factory, gateway, web):
    """A 6-instance, 2-series study C-STOREd through the gateway: (uid, {sop: file bytes})."""
    uid, paths = write_study(tmp_path_factory.mktemp("study"), instances=6, series=2, patient_id="WEB001", accession="ACCW")
    assert store_files(gateway.port, paths) == [0] * 6
    return uid, {str(pydicom.dcmread(p).SOPInstanceUID): p.read_bytes() for p in paths}


def client(web, key=None) -> DICOMwebClient:
    session = requests.Session()
    session.auth = key or web.admin
    return DICOMwebClient(web.url, session=session)


def multipart(response: requests.Response) -> list[tuple[str, bytes]]:
    raw = b"Content-Type: " + response.headers["content-type"].encode() + b"\r\n\r\n" + response.content
    msg = BytesParser(policy=HTTP).parsebytes(raw)
    assert msg.is_multipart()
    return [(part.get_content_type(), part.get_payload(decode=True)) for part in msg.iter_parts()]


def test_qido_every_level(web, study):
    uid, files = study
    dw = client(web)
    studies = dw.search_for_studies(search_filters={"PatientID": "WEB001"})
    assert len(studies) == 1
    found = pydicom.Dataset.from_json(studies[0])
    assert found.StudyInstanceUID == uid and found.AccessionNumber == "ACCW"
    assert int(found.NumberOfStudyRelatedInstances) == 6 and int(found.NumberOfStudyRelatedSeries) == 2
    assert found.ModalitiesInStudy == "CT"
    assert dw.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    assert len(dw.search_for_studies(search_filters={"PatientName": "doe*", "StudyDate": "20240101-20240201"})) == 1
    series = dw.search_for_series(study_instance_uid=uid)
    assert len(series) == 2
    assert sorted(int(pydicom.Dataset.from_json(s).NumberOfSeriesRelatedInstances) for s in series) == [3, 3]
    assert len(dw.search_for_series(search_filters={"Modality": "CT", "StudyInstanceUID": uid})) == 2
    instances = dw.search_for_instances(study_instance_uid=uid)
    assert {pydicom.Dataset.from_json(i).SOPInstanceUID for i in instances} == set(files)
    one_series = pydicom.Dataset.from_json(series[0]).SeriesInstanceUID
    assert len(dw.search_for_instances(study_instance_uid=uid, series_instance_uid=one_series)) == 3
    # paging, includefield, fuzzymatching=false
    page = dw.search_for_instances(study_instance_uid=uid, limit=4, offset=4)
    assert len(page) == 2
    got = requests.get(
        f"{web.url}/studies", params={"00100020": "WEB001", "includefield": "all", "fuzzymatching": "false"}, auth=web.admin
    )
    assert got.status_code == 200 and got.headers["content-type"] == "application/dicom+json"
    assert "00081190" in got.json()[0]  # RetrieveURL
    fuzzy = requests.get(
        f"{web.url}/instances", params={"StudyInstanceUID": uid, "limit": "2", "fuzzymatching": "true"}, auth=web.admin
    )
    assert len(fuzzy.json()) == 2
    assert "fuzzymatching is not supported" in fuzzy.headers["warning"] and "more results" in fuzzy.headers["warning"]
    # a key we cannot match on is refused, not ignored
    bad = requests.get(f"{web.url}/series", params={"OperatorsName": "Smith"}, auth=web.admin)
    assert bad.status_code == 400 and "OperatorsName" in bad.text


def test_wado_study_bit_exact(web, study):
    uid, files = study
    got = client(web).retrieve_study(uid)
    assert len(got) == len(files)
    raw = requests.get(
        f"{web.url}/studies/{uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        auth=web.admin,
    )
    assert raw.status_code == 200
    parts = multipart(raw)
    assert len(parts) == len(files)
    by_sop = {str(pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID): body for _, body in parts}
    for sop, original in files.items():
        assert dataset_bytes(by_sop[sop]) == dataset_bytes(original)
    sop = next(iter(files))
    ds = pydicom.dcmread(io.BytesIO(files[sop]))
    one = client(web).retrieve_instance(uid, ds.SeriesInstanceUID, sop)
    assert one.SOPInstanceUID == sop and one.PixelData == ds.PixelData
    missing = requests.get(f"{web.url}/studies/1.2.3.4.5", auth=web.admin)
    assert missing.status_code == 404
    other_ts = requests.get(
        f"{web.url}/studies/{uid}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'},
        auth=web.admin,
    )
    assert other_ts.status_code == 406


def test_metadata(web, study):
    uid, files = study
    dw = client(web)
    meta = dw.retrieve_study_metadata(uid)
    assert len(meta) == len(files)
    first = pydicom.Dataset.from_json(meta[0], lambda uri: b"")
    sop = str(first.SOPInstanceUID)
    original = pydicom.dcmread(io.BytesIO(files[sop]))
    assert first.PatientName == original.PatientName and first.Rows == original.Rows
    assert meta[0]["7FE00010"]["BulkDataURI"].endswith(f"/instances/{sop}/bulkdata/7FE00010")
    assert meta[0]["00083002"]["Value"] == [original.file_meta.TransferSyntaxUID]
    assert dw.retrieve_study_metadata(uid) == meta  # served again from the cache, identically
    assert len(dw.retrieve_series_metadata(uid, original.SeriesInstanceUID)) == 3
    inst = dw.retrieve_instance_metadata(uid, original.SeriesInstanceUID, sop)
    assert inst["00080018"]["Value"] == [sop]
    bulk = requests.get(meta[0]["7FE00010"]["BulkDataURI"], auth=web.admin)
    assert multipart(bulk)[0][1] == original.PixelData


def test_frames_and_rendered(web, study):
    uid, files = study
    sop, data = next(iter(files.items()))
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = client(web).retrieve_instance_frames(uid, ds.SeriesInstanceUID, sop, frame_numbers=[1])
    assert frames == [ds.PixelData]
    base = f"{web.url}/studies/{uid}/series/{ds.SeriesInstanceUID}/instances/{sop}"
    for media, fmt in (("image/png", "PNG"), ("image/jpeg", "JPEG")):
        got = requests.get(base + "/rendered", headers={"Accept": media}, auth=web.admin)
        assert got.status_code == 200 and got.headers["content-type"] == media
        image = Image.open(io.BytesIO(got.content))
        assert image.format == fmt and image.size == (ds.Columns, ds.Rows)
    framed = requests.get(
        base + "/frames/1/rendered",
        params={"window": "2048,4096", "viewport": "32,32"},
        headers={"Accept": "image/png"},
        auth=web.admin,
    )
    assert Image.open(io.BytesIO(framed.content)).size == (32, 32)
    assert requests.get(base + "/frames/2", auth=web.admin).status_code == 404


def test_stow_then_cfind(web, gateway, tmp_path):
    uid, paths = write_study(tmp_path / "stow", instances=2, patient_id="STOW01")
    boundary = "b0undary"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() + b"\r\n" for p in paths)
    body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nnot dicom at all\r\n--{boundary}--\r\n".encode()
    got = requests.post(
        f"{web.url}/studies",
        data=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        auth=web.admin,
    )
    assert got.status_code == 202, got.text
    answer = got.json()
    assert len(answer["00081199"]["Value"]) == 2
    (failure,) = answer["00081198"]["Value"]
    assert failure["00081197"]["Value"] == [0xC002] and "DICOM" in failure["00000902"]["Value"][0]
    found, status = find(
        gateway.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid, "NumberOfStudyRelatedInstances": ""}
    )
    assert status == 0 and len(found) == 1 and int(found[0].NumberOfStudyRelatedInstances) == 2
    # dicomweb-client's store, into a named study, with one instance of another study refused
    extra = make_instance(
        patient_id="STOW01", patient_name="X^Y", study_uid=uid, series_uid=generate_uid(), sop_uid=generate_uid(), number=3
    )
    stranger = make_instance(
        patient_id="STOW01",
        patient_name="X^Y",
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        sop_uid=generate_uid(),
        number=1,
    )
    result = client(web).store_instances([extra, stranger], study_instance_uid=uid)
    assert len(result.ReferencedSOPSequence) == 1 and len(result.FailedSOPSequence) == 1
    assert result.FailedSOPSequence[0].FailureReason == 0xA900


def test_auth_refusals(web, study, tmp_path):
    uid, _files = study
    assert requests.get(f"{web.url}/studies").status_code == 401
    assert requests.get(f"{web.url}/studies").headers["www-authenticate"].startswith("Basic")
    assert requests.get(f"{web.url}/studies", auth=(web.admin[0], "wrong")).status_code == 401
    bearer = requests.get(f"{web.url}/studies/{uid}/metadata", headers={"Authorization": f"Bearer {web.reader[1]}"})
    assert bearer.status_code == 200
    assert requests.get(f"{web.url}/studies", headers={"Authorization": "Bearer nope"}).status_code == 401
    # a read-only key reads but cannot store
    assert requests.get(f"{web.url}/studies", auth=web.reader).status_code == 200
    _, paths = write_study(tmp_path / "ro", instances=1)
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + paths[0].read_bytes() + b"\r\n--b--\r\n"
    refused = requests.post(
        f"{web.url}/studies",
        data=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        auth=web.reader,
    )
    assert refused.status_code == 403
    # a key scoped to another bucket sees nothing of this one
    assert requests.get(f"{web.url}/studies/{uid}/metadata", auth=web.other_bucket).status_code == 403


def test_reads_are_audited_and_metadata_reads_no_object(web, web_store, study):
    uid, _ = study
    before = (web_store / "audit" / "audit.log").read_text().splitlines()
    assert requests.get(f"{web.url}/studies/{uid}/metadata", auth=web.reader).status_code == 200
    new = [json.loads(line) for line in (web_store / "audit" / "audit.log").read_text().splitlines()[len(before) :]]
    reads = [e for e in new if e["action"] == "read"]
    # one line naming the key and the study; no object was opened (the headers are in the index)
    assert [(e["who"], e["key"]) for e in reads] == [("dicomweb:viewer", uid)]
    # a retrieve opens each instance, audited with the key
    assert requests.get(f"{web.url}/studies/{uid}", auth=web.reader).status_code == 200
    new = [json.loads(line) for line in (web_store / "audit" / "audit.log").read_text().splitlines()[len(before) :]]
    opened = [e for e in new if e["action"] == "read" and e["key"].startswith(uid + "/")]
    assert len(opened) == 6 and {e["who"] for e in opened} == {"dicomweb:viewer"}


def test_metadata_of_a_header_too_large_for_the_index(web, tmp_path):
    uid = generate_uid()
    ds = make_instance(
        patient_id="BIGHDR", patient_name="Big^Header", study_uid=uid, series_uid=generate_uid(), sop_uid=generate_uid(), number=1
    )
    items = []
    for _ in range(1500):
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, generate_uid()
        items.append(item)
    ds.ReferencedImageSequence = items
    result = client(web).store_instances([ds])
    assert len(result.ReferencedSOPSequence) == 1
    (meta,) = client(web).retrieve_study_metadata(uid)  # read from the object, not the index
    assert len(meta["00081140"]["Value"]) == 1500
    assert meta["7FE00010"]["BulkDataURI"].startswith(web.url + "/studies/" + uid)


def test_cors_preflight(web, study):
    pre = requests.options(
        f"{web.url}/studies",
        headers={
            "Origin": "http://viewer.test",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "http://viewer.test"
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    other = requests.options(f"{web.url}/studies", headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "GET"})
    assert other.status_code == 400
    got = requests.get(f"{web.url}/studies", headers={"Origin": "http://viewer.test"}, auth=web.admin)
    assert got.headers["access-control-allow-origin"] == "http://viewer.test"


def test_compressed_frames_as_stored(web, tmp_path):
    path = tmp_path / "wsi.dcm"
    header = write_large_instance(path, frames=3, frame_bytes=64, patient_id="WSI-WEB")
    boundary = "wsi"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    stored = requests.post(
        f"{web.url}/studies",
        data=body,
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        auth=web.admin,
    )
    assert stored.status_code == 200, stored.text
    base = f"{web.url}/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}/instances/{header.SOPInstanceUID}"
    original = list(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=3))
    got = requests.get(base + "/frames/3,1", headers={"Accept": 'multipart/related; type="image/jpeg"'}, auth=web.admin)
    assert got.status_code == 200
    parts = multipart(got)
    assert [ctype for ctype, _ in parts] == ["image/jpeg", "image/jpeg"]
    assert [data for _, data in parts] == [original[2], original[0]]
    # these frames are not decodable JPEG (see synth.write_large_instance): no uncompressed version
    assert (
        requests.get(
            base + "/frames/1", headers={"Accept": 'multipart/related; type="application/octet-stream"'}, auth=web.admin
        ).status_code
        == 406
    )
    assert (
        requests.get(base + "/frames/4", headers={"Accept": 'multipart/related; type="image/jpeg"'}, auth=web.admin).status_code
        == 404
    )
    # the whole instance comes back as stored, in its own transfer syntax
    whole = requests.get(
        base, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}, auth=web.admin
    )
    assert dataset_bytes(multipart(whole)[0][1]) == dataset_bytes(path.read_bytes())
