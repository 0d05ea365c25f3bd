"""aws-chunked uploads: signed chunks (each chunk signature verified), signed and unsigned trailers.

Signed-chunk bodies are framed here from the SigV4 specification (botocore
signs the headers, this module the chunks); unsigned trailers are what
botocore itself sends over TLS, so that case runs against a TLS server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import zlib
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from s3helpers import Key, http, make_client, start_server

EMPTY = hashlib.sha256(b"").hexdigest()


def _h(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def chunked_put(url: str, key: Key, body: bytes, *, chunk: int = 65536, trailer: bool = False, tamper: int | None = None):
    """PUT ``body`` as STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]; ``tamper`` flips a byte of that chunk."""
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    headers = {
        "x-amz-content-sha256": mode,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(body)),
    }
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    request = AWSRequest(method="PUT", url=url, headers=headers)
    SigV4Auth(Credentials(key.access_key, key.secret_key), "s3", "us-east-1").add_auth(request)
    signed = dict(request.headers.items())
    amz_date = signed["X-Amz-Date"]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    signing_key = _h(_h(_h(_h(("AWS4" + key.secret_key).encode(), amz_date[:8]), "us-east-1"), "s3"), "aws4_request")
    prev = signed["Authorization"].rsplit("Signature=", 1)[1]
    out = bytearray()
    for i, data in enumerate([*chunks, b""]):
        string = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY, hashlib.sha256(data).hexdigest()])
        prev = hmac.new(signing_key, string.encode(), hashlib.sha256).hexdigest()
        if tamper == i:
            data = bytes([data[0] ^ 1]) + data[1:]
        out += f"{len(data):x};chunk-signature={prev}\r\n".encode() + data
        if data or not trailer:
            out += b"\r\n"
    if trailer:
        line = f"x-amz-checksum-crc32:{crc}\n"
        string = "\n".join(["AWS4-HMAC-SHA256-TRAILER", amz_date, scope, prev, hashlib.sha256(line.encode()).hexdigest()])
        sig = hmac.new(signing_key, string.encode(), hashlib.sha256).hexdigest()
        out += f"x-amz-checksum-crc32:{crc}\r\nx-amz-trailer-signature:{sig}\r\n\r\n".encode()
    return http("PUT", url, bytes(out), signed)


@pytest.mark.parametrize("trailer", [False, True])
def test_signed_chunks(server, admin_key, s3, bucket, trailer):
    body = bytes(i % 241 for i in range(200_000))
    reply = chunked_put(f"{server.url}/{bucket}/chunked", admin_key, body, trailer=trailer)
    assert reply.status == 200, reply.content
    got = s3.get_object(Bucket=bucket, Key="chunked")
    assert got["Body"].read() == body
    assert "ContentEncoding" not in got  # aws-chunked is transport, not content
    if trailer:
        assert reply.headers["x-amz-checksum-crc32"] == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()


@pytest.mark.parametrize("trailer", [False, True])
def test_tampered_chunk_is_refused_and_nothing_stored(server, admin_key, s3, bucket, trailer):
    body = b"z" * 150_000
    reply = chunked_put(f"{server.url}/{bucket}/evil", admin_key, body, tamper=1, trailer=trailer)
    assert reply.status == 403 and b"SignatureDoesNotMatch" in reply.content
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="evil")


@pytest.fixture(scope="module")
def tls_server(s3_store: Path, tmp_path_factory):
    certs = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-keyout", str(certs / "key.pem"), "-out", str(certs / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    srv = start_server(s3_store, "--certfile", str(certs / "cert.pem"), "--keyfile", str(certs / "key.pem"), tls=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_botocore_unsigned_trailer_over_tls(tls_server, admin_key, bucket):
    client = make_client(f"https://127.0.0.1:{tls_server.port}", admin_key, verify=False)
    seen = []
    client.meta.events.register("before-send.s3.PutObject", lambda request, **kw: seen.append(dict(request.headers)))
    body = b"trailer checksum " * 10_000
    put = client.put_object(Bucket=bucket, Key="trailer", Body=body)
    assert seen[0]["X-Amz-Content-SHA256"] == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert put["ChecksumCRC32"] == base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    got = client.get_object(Bucket=bucket, Key="trailer", ChecksumMode="ENABLED")
    assert got["Body"].read() == body and got["ChecksumCRC32"] == put["ChecksumCRC32"]
