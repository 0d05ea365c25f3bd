"""`objfs serve` with TLS on S3 and DICOM ([s3]/[dicom] tls_certfile, tls_keyfile), and what the audit
says about an S3 download over it: the client's address, the request id, one read line."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ports import free_port
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from test_appliance import serve_command, stop_serve, wait_ready

from objfs.appliance import prepare

REPO = Path(__file__).resolve().parent.parent


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "objfs test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def echo(port: int, cert: Path | None) -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    tls = None
    if cert is not None:
        tls = (ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert)), "localhost")
    assoc = ae.associate("127.0.0.1", port, ae_title="OBJFS", tls_args=tls)
    if not assoc.is_established:
        return False
    try:
        return assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


@pytest.mark.allow_warnings  # the plain-text DICOM attempt makes the gateway log a failed TLS handshake
def test_serve_with_tls_on_s3_and_dicom(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    key = prepare(store)
    cert, private = self_signed(tmp_path)
    config = store / "objfs.toml"
    text = config.read_text()
    text = text.replace(
        '# tls_certfile = "tls/s3.crt"\n# tls_keyfile = "tls/s3.key"', f'tls_certfile = "{cert}"\ntls_keyfile = "{private}"'
    )
    text = text.replace(
        '# tls_certfile = "tls/dicom.crt"\n# tls_keyfile = "tls/dicom.key"', f'tls_certfile = "{cert}"\ntls_keyfile = "{private}"'
    )
    assert text.count(f'tls_certfile = "{cert}"') == 2
    config.write_text(text)
    s3_port, dicom_port = free_port(), free_port()
    proc = subprocess.Popen(
        serve_command(store, mnt, s3_port, dicom_port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        text=True,
    )
    try:
        banner = "".join(wait_ready(proc))
        assert f"S3 at https://127.0.0.1:{s3_port}" in banner
        s3 = boto3.client(
            "s3",
            endpoint_url=f"https://127.0.0.1:{s3_port}",
            aws_access_key_id=key["access_key"],
            aws_secret_access_key=key["secret_key"],
            region_name="us-east-1",
            verify=str(cert),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        s3.create_bucket(Bucket="secure")
        s3.put_object(Bucket="secure", Key="study/1.dcm", Body=b"over tls" * 100)
        before = len((store / "audit" / "audit.log").read_text().splitlines())
        s3.download_file("secure", "study/1.dcm", str(tmp_path / "copy"))  # HEAD, then GET
        assert (tmp_path / "copy").read_bytes() == b"over tls" * 100
        got = s3.get_object(Bucket="secure", Key="study/1.dcm")
        got["Body"].read()
        request_id = got["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
        with pytest.raises(OSError):  # plain HTTP is not served (the connection is dropped)
            urllib.request.urlopen(f"http://127.0.0.1:{s3_port}/", timeout=5).read()

        assert echo(dicom_port, cert)
        assert not echo(dicom_port, None)  # plain DICOM is refused
    finally:
        rest = stop_serve(proc, mnt)
    assert proc.returncode == 0, rest
    lines = [json.loads(line) for line in (store / "audit" / "audit.log").read_text().splitlines()[before:]]
    download, get = lines[:-1], lines[-1]
    assert [e["action"] for e in download] == ["head", "read"], download  # one read line per download
    assert get["action"] == "read" and get["request"] == request_id
    assert all(e["ip"] == "127.0.0.1" and e["who"] == "s3:admin" and e.get("request") for e in lines)
    assert len({e["request"] for e in lines}) == len(lines)
