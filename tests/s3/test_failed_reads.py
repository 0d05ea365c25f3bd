"""A read that fails, fails visibly (issue 9, finding 4).

An object of several segments (1 MiB each) loses more than m fragments of
one segment (their CRC-framed frames are corrupted on m+1 drives). A GET
that fails before its first byte is an S3 500 with an error document; one
that fails mid-body ends short of its Content-Length on a closed connection,
so boto3 raises instead of returning short bytes.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import urllib3
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError
from s3helpers import create_key, make_client, signed_headers, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from fragmenthelpers import fragment_bytes, overwrite_fragment  # noqa: E402

from objfs.store import Store  # noqa: E402
from objfs.store.fragments import frame_offset  # noqa: E402

MiB = 1 << 20
SIZE = 3 * MiB + 512 * 1024  # segments 0..3
BODY = bytes(range(256)) * (SIZE // 256)
STREAM_ERRORS = (IncompleteReadError, ResponseStreamingError, urllib3.exceptions.HTTPError)


@pytest.fixture
def sidecar(store_path: Path):
    srv = start_server(store_path)
    try:
        key = create_key(store_path, "--name", "reader")
        s3 = make_client(srv.url, key)
        s3.create_bucket(Bucket="scans")
        s3.put_object(Bucket="scans", Key="wsi", Body=BODY)
        yield srv, s3, key
    finally:
        srv.stop()


def corrupt_segment(store_path: Path, bucket: str, key: str, segment: int, fragments: int | None = None) -> None:
    """Flip bytes in ``segment``'s frame of m+1 (or ``fragments``) of the object's fragments."""
    with Store.open(store_path) as store:
        desc = store.head_object(bucket, key).record["parts"][0]
        count = desc["m"] + 1 if fragments is None else fragments
        offset = frame_offset(segment, desc["fsz"], desc.get("cb", 0)) + 16
        for index in range(count):
            old = fragment_bytes(store, desc, index)[offset : offset + 8]
            overwrite_fragment(store, desc, index, offset, bytes(b ^ 0xFF for b in old))


def raw_get(port: int, url: str, key, extra: dict[str, str] | None = None) -> tuple[bytes, int, int]:
    """(status line, Content-Length, body bytes received before the server closed) of one GET."""
    headers = signed_headers("GET", url, key, b"", extra)
    path = url.split(str(port), 1)[1]
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{lines}\r\n"
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head.split(b"\r\n")[0], length, len(body)


def test_healthy_object_reads_back(sidecar) -> None:
    _, s3, _ = sidecar
    assert s3.get_object(Bucket="scans", Key="wsi")["Body"].read() == BODY


def test_loss_mid_object_aborts_the_stream(sidecar, store_path: Path) -> None:
    srv, s3, key = sidecar
    corrupt_segment(store_path, "scans", "wsi", 2)
    with pytest.raises(STREAM_ERRORS):
        s3.get_object(Bucket="scans", Key="wsi")["Body"].read()
    # On the wire: 200 with the full Content-Length, fewer bytes, then the connection closes.
    status, length, received = raw_get(srv.port, f"{srv.url}/scans/wsi", key)
    assert status.startswith(b"HTTP/1.1 200") and length == SIZE
    assert received < SIZE
    # A range across the bad segment fails the same way; one inside it is a 500 at once.
    with pytest.raises(STREAM_ERRORS):
        s3.get_object(Bucket="scans", Key="wsi", Range=f"bytes={MiB + 100}-{3 * MiB + 100}")["Body"].read()
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="scans", Key="wsi", Range=f"bytes={2 * MiB + 10}-{2 * MiB + 5000}")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert exc.value.response["Error"]["Code"] == "InternalError"
    # Ranges clear of the bad segment still read.
    head = s3.get_object(Bucket="scans", Key="wsi", Range=f"bytes=0-{2 * MiB - 1}")["Body"].read()
    assert head == BODY[: 2 * MiB]


def test_loss_at_the_start_is_a_500_with_an_error_document(sidecar, store_path: Path) -> None:
    srv, s3, key = sidecar
    for segment in range(4):
        corrupt_segment(store_path, "scans", "wsi", segment)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="scans", Key="wsi")
    error = exc.value.response["Error"]
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert error["Code"] == "InternalError" and "could not be read" in error["Message"]
    status, length, received = raw_get(srv.port, f"{srv.url}/scans/wsi", key)
    assert status.startswith(b"HTTP/1.1 500") and received == length


def test_m_lost_fragments_still_read_exactly(sidecar, store_path: Path) -> None:
    _, s3, _ = sidecar
    corrupt_segment(store_path, "scans", "wsi", 1, fragments=2)  # m = 2 of EC 4+2: repairable on the fly
    assert s3.get_object(Bucket="scans", Key="wsi")["Body"].read() == BODY
