"""The gateway as a PACS administrator tries it: called AE titles, unindexed keys, duplicate
counts, unreachable C-MOVE destinations, bad bucket names, several AE titles, DICOM TLS."""

from __future__ import annotations

import datetime
import io
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import dicom_scu as scu
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dicomtest import REPO, Gateway, configure, free_port, start_gateway, stop_gateway
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove, Verification

from objfs.dicom.index import find
from objfs.dicom.synth import write_study
from objfs.store import init_store


def _add_aets(store: Path, aets: dict[str, str]) -> None:
    text = (store / "objfs.toml").read_text()
    lines = "".join(f'"{t}" = "{b}"\n' for t, b in aets.items())
    (store / "objfs.toml").write_text(text.replace("[dicom.aets]\n", "[dicom.aets]\n" + lines))


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()  # configured as a C-MOVE destination; nothing ever listens there


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, dead_port: int):
    store = tmp_path_factory.mktemp("conformance") / "store"
    init_store(store).close()
    configure(store, destinations={"DEAD": dead_port})
    _add_aets(store, {"SECOND": "second"})
    gateway = start_gateway(store)
    yield gateway
    err = stop_gateway(gateway)
    assert "Traceback" not in err, err


def test_wrong_called_ae_title_is_rejected(gw: Gateway) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="NOT_OBJFS")
    assert assoc.is_rejected
    assert assoc.acceptor.primitive.result_source == 1 and assoc.acceptor.primitive.diagnostic == 7
    for title in ("OBJFS", "SECOND"):
        ok = ae.associate("127.0.0.1", gw.port, ae_title=title)
        assert ok.is_established and ok.acceptor.ae_title == title
        ok.release()


def _series_with_date(tmp_path: Path, series_date: str, patient: str) -> tuple[str, list[Path]]:
    import pydicom

    uid, paths = write_study(tmp_path, instances=2, patient_id=patient)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.SeriesDate, ds.SeriesTime, ds.BodyPartExamined = series_date, "101500", "CHEST"
        ds.save_as(p, enforce_file_format=True)
    return uid, paths


def test_find_on_series_keys_matches_or_refuses(gw: Gateway, tmp_path: Path) -> None:
    uid, paths = _series_with_date(tmp_path / "a", "20230105", "SDATE1")
    assert scu.store_files(gw.port, paths) == [0, 0]
    base = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": uid, "SeriesInstanceUID": ""}
    found, status = scu.find(gw.port, dict(base, SeriesDate="20230101-20230110", BodyPartExamined=""))
    assert status == 0 and len(found) == 1 and found[0].BodyPartExamined == "CHEST"
    found, status = scu.find(gw.port, dict(base, SeriesDate="20240101"))
    assert status == 0 and found == []  # matched on the stored value, not ignored
    # a key the index does not hold, given a value: refused, naming it; empty it is a plain return key
    found, status = scu.find(gw.port, dict(base, OperatorsName="Smith"))
    assert status == 0xA900 and found == []
    found, status = scu.find(gw.port, dict(base, OperatorsName=""))
    assert status == 0 and len(found) == 1


def test_counts_ignore_duplicate_copies(store, tmp_path: Path) -> None:
    _uid, paths = write_study(tmp_path, instances=3, patient_id="DUP01")
    store.create_bucket("pacs")
    for i, p in enumerate(paths):
        store.put_object("pacs", f"gw/{i}.dcm", io.BytesIO(p.read_bytes()))
    store.put_object("pacs", "legacy/copy-of-0.dcm", io.BytesIO(paths[0].read_bytes()))
    (study,) = find(store, {"PatientID": "DUP01"}, "STUDY")
    assert study["NumberOfStudyRelatedInstances"] == 3
    (patient,) = find(store, {"PatientID": "DUP01"}, "PATIENT")
    assert patient["NumberOfPatientRelatedInstances"] == 3
    (series,) = find(store, {"PatientID": "DUP01"}, "SERIES")
    assert series["NumberOfSeriesRelatedInstances"] == 3
    store.delete_object("pacs", "gw/0.dcm")  # the other copy remains: still 3
    assert find(store, {"PatientID": "DUP01"}, "STUDY")[0]["NumberOfStudyRelatedInstances"] == 3
    store.delete_object("pacs", "legacy/copy-of-0.dcm")
    assert find(store, {"PatientID": "DUP01"}, "STUDY")[0]["NumberOfStudyRelatedInstances"] == 2
    for i in (1, 2):
        store.delete_object("pacs", f"gw/{i}.dcm")
    assert find(store, {"PatientID": "DUP01"}, "STUDY") == []


@pytest.mark.allow_warnings
def test_unreachable_move_destination_is_a_sub_operation_failure(gw: Gateway, tmp_path: Path) -> None:
    uid, paths = write_study(tmp_path, instances=2, patient_id="MOVE01")
    assert scu.store_files(gw.port, paths) == [0, 0]
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    query = Dataset()
    query.QueryRetrieveLevel, query.StudyInstanceUID = "STUDY", uid
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="OBJFS")
    try:
        responses = [s for s, _ in assoc.send_c_move(query, "DEAD", StudyRootQueryRetrieveInformationModelMove) if s]
    finally:
        assoc.release()
    final = responses[-1]
    assert final.Status == 0xA702
    assert final.NumberOfFailedSuboperations == 2 and final.NumberOfCompletedSuboperations == 0
    assert "DEAD" in final.ErrorComment and "refused" in final.ErrorComment.lower()
    # an unconfigured destination is still "unknown"
    assert scu.move(gw.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid}, destination="NOWHERE") == [0xA801]


def test_several_ae_titles_each_with_its_bucket(gw: Gateway, tmp_path: Path) -> None:
    from pynetdicom import _config

    uid, paths = write_study(tmp_path, instances=1, patient_id="SECOND1")
    _config.STORE_SEND_CHUNKED_DATASET = True
    ae = AE(ae_title="TESTSCU")
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(paths[0])
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="SECOND")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(paths[0]).Status == 0
    finally:
        assoc.release()
    from objfs.stores import Store

    with Store.open(gw.store) as store:
        assert find(store, {"PatientID": "SECOND1"}, "STUDY", bucket="second")
        assert not find(store, {"PatientID": "SECOND1"}, "STUDY", bucket="pacs")
    # the main AE title answers for its own bucket only
    assert scu.find(gw.port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid})[0] == []


def test_bad_bucket_name_is_one_line(tmp_path: Path) -> None:
    store = tmp_path / "store"
    init_store(store).close()
    done = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--bucket", "bad_name", "--port", str(free_port())],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "bad_name" in done.stderr and "Traceback" not in done.stderr, done.stderr


# ----------------------------------------------------------------- TLS


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _tls_echo(port: int, server_cert: Path, client: tuple[Path, Path] | None = None) -> bool:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(server_cert))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS", tls_args=(context, "localhost"))
    if not assoc.is_established:
        return False
    try:
        return assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def _start_tls_gateway(store: Path, server_cert: Path, client: tuple[Path, Path] | None) -> Gateway:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "objfs.cli", "dicom", str(store), "--port", str(port), "--host", "127.0.0.1"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert b"(TLS)" in proc.stdout.readline()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _tls_echo(port, server_cert, client):
            return Gateway(store, port, proc)
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("TLS gateway did not answer")


@pytest.mark.allow_warnings
def test_dicom_tls_with_and_without_client_certificates(tmp_path: Path) -> None:
    store = tmp_path / "store"
    init_store(store).close()
    server_cert, server_key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")
    text = (store / "objfs.toml").read_text()
    tls = f'tls_certfile = "{server_cert}"\ntls_keyfile = "{server_key}"\n'
    (store / "objfs.toml").write_text(text.replace("[dicom.aets]\n", tls + "[dicom.aets]\n"))
    gw = _start_tls_gateway(store, server_cert, None)
    try:
        assert _tls_echo(gw.port, server_cert)
        plain = AE(ae_title="TESTSCU")
        plain.add_requested_context(Verification)
        plain.acse_timeout = plain.network_timeout = 5
        assert not plain.associate("127.0.0.1", gw.port, ae_title="OBJFS").is_established
    finally:
        stop_gateway(gw)
    # client certificates required: the client's self-signed certificate is the trusted CA
    (store / "objfs.toml").write_text(text.replace("[dicom.aets]\n", tls + f'tls_ca_file = "{client_cert}"\n[dicom.aets]\n'))
    gw = _start_tls_gateway(store, server_cert, (client_cert, client_key))
    try:
        assert _tls_echo(gw.port, server_cert, (client_cert, client_key))
        assert not _tls_echo(gw.port, server_cert)  # no client certificate: refused
        other_cert, other_key = _self_signed(tmp_path, "stranger")
        assert not _tls_echo(gw.port, server_cert, (other_cert, other_key))
    finally:
        err = stop_gateway(gw)
    assert "Traceback" not in err, err
