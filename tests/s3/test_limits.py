"""Hostile and oversized input: clear S3 errors, nothing changed, the server keeps serving."""

from __future__ import annotations

import socket
import time

import pytest
from botocore.exceptions import ClientError
from s3helpers import create_key, error_code, http, make_client, signed_headers, start_server

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&xxe;</Key></Object></Delete>"""
HOSTILE = [
    BILLION_LAUGHS,
    XXE,
    b"<Delete><Object><Key>k</Key></Object>",  # truncated
    b"<Delete>" + b"<a>" * 100 + b"</a>" * 100 + b"</Delete>",  # too deep
    b"<NotDelete/>",
    b"",
    b"\xff\xfe<\x00",
]


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_delete_xml_is_malformed_and_deletes_nothing(server, admin_key, s3, bucket, body):
    s3.put_object(Bucket=bucket, Key="k", Body=b"keep")
    url = f"{server.url}/{bucket}?delete"
    reply = http("POST", url, body, signed_headers("POST", url, admin_key, body))
    assert reply.status == 400 and error_code(reply.content) == "MalformedXML"
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"keep"


def test_hostile_complete_xml(server, admin_key, s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    url = f"{server.url}/{bucket}/m?uploadId={uid}"
    body = BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload")
    reply = http("POST", url, body, signed_headers("POST", url, admin_key, body))
    assert error_code(reply.content) == "MalformedXML"
    huge = (
        b"<CompleteMultipartUpload>"
        + b"<Part><PartNumber>1</PartNumber><ETag>x</ETag></Part>" * 60000
        + b"</CompleteMultipartUpload>"
    )
    reply = http("POST", url, huge, signed_headers("POST", url, admin_key, huge))
    assert reply.status == 400 and error_code(reply.content) == "MalformedXML"
    assert s3.list_parts(Bucket=bucket, Key="m", UploadId=uid)["UploadId"] == uid


def test_oversized_header_sections(server, s3, bucket):
    reply = http("GET", f"{server.url}/{bucket}", headers={"x-junk": "j" * 20_000})
    assert reply.status == 400 and error_code(reply.content) == "RequestHeaderSectionTooLarge"
    # Far beyond: h11's own limit answers 400 before the app sees anything.
    reply = http("GET", f"{server.url}/{bucket}", headers={"x-junk": "j" * 200_000})
    assert reply.status == 431  # Request Header Fields Too Large
    s3.list_objects_v2(Bucket=bucket)  # still serving


def test_metadata_too_large(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="meta", Body=b"x", Metadata={"big": "v" * 3000})
    assert exc.value.response["Error"]["Code"] == "MetadataTooLarge"


@pytest.fixture
def limited_server(store_path):
    srv = start_server(store_path, "--max-object-size", "1M", "--max-requests", "3", "--body-timeout", "1")
    try:
        yield srv
    finally:
        srv.stop()


def test_body_limits_slowdown_and_timeouts(limited_server, store_path):
    key = create_key(store_path, "--name", "limits")
    s3 = make_client(limited_server.url, key)
    s3.create_bucket(Bucket="limits")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="limits", Key="big", Body=b"x" * (2 << 20))
    assert exc.value.response["Error"]["Code"] == "EntityTooLarge"
    uid = s3.create_multipart_upload(Bucket="limits", Key="mp")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket="limits", Key="mp", UploadId=uid, PartNumber=1, Body=b"x" * (2 << 20))
    assert exc.value.response["Error"]["Code"] == "EntityTooLarge"
    assert "Contents" not in s3.list_objects_v2(Bucket="limits")
    s3.put_object(Bucket="limits", Key="ok", Body=b"x" * (1 << 20))

    # Three requests stuck sending their bodies fill the server; the fourth is told to slow down.
    stuck = []
    url = f"{limited_server.url}/limits/slow"
    for _ in range(3):
        headers = signed_headers("PUT", url, key, b"x" * 100)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock = socket.create_connection(("127.0.0.1", limited_server.port))
        sock.sendall(
            f"PUT /limits/slow HTTP/1.1\r\nHost: 127.0.0.1:{limited_server.port}\r\nContent-Length: 100\r\n{head}\r\nxxx".encode()
        )
        stuck.append(sock)
    time.sleep(0.3)
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket="limits")
    assert exc.value.response["Error"]["Code"] == "SlowDown"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # A client that stalls mid-body is cut off after --body-timeout.
    stuck[0].settimeout(10)
    reply = b""
    while chunk := stuck[0].recv(4096):  # the server closes after the error
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in reply
    for sock in stuck:
        sock.close()
    time.sleep(0.5)
    assert s3.get_object(Bucket="limits", Key="ok")["ContentLength"] == 1 << 20
