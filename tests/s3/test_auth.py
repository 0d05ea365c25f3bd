"""Authentication and authorisation end to end, with requests signed by botocore's own signer."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from s3helpers import Key, create_key, env, http, make_client


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def error_code(content: bytes) -> str:
    return content.split(b"<Code>", 1)[1].split(b"</Code>", 1)[0].decode()


def sign(method: str, url: str, key: Key, body: bytes = b"", headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers of a request signed by botocore's S3 SigV4 signer (payload hash signed)."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(key.access_key, key.secret_key), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def test_anonymous_is_denied(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    for method in ("GET", "PUT", "DELETE"):
        reply = http(method, f"{server.url}/{bucket}/k", b"y" if method == "PUT" else None)
        assert reply.status == 403 and error_code(reply.content) == "AccessDenied"
    assert http("GET", server.url + "/").status == 403
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"x"


def test_wrong_secret_and_unknown_key(server, admin_key, bucket):
    bad = make_client(server.url, Key(admin_key.access_key, admin_key.secret_key[:-1] + "X"))
    with pytest.raises(ClientError) as exc:
        bad.list_objects_v2(Bucket=bucket)
    assert code(exc) == "SignatureDoesNotMatch"
    unknown = make_client(server.url, Key("OBJFSUNKNOWNKEY00000", "secret"))
    with pytest.raises(ClientError) as exc:
        unknown.list_buckets()
    assert code(exc) == "InvalidAccessKeyId"


def test_signed_request_passes_and_tampered_header_fails(server, admin_key, s3, bucket):
    url = f"{server.url}/{bucket}/signed"
    headers = sign("PUT", url, admin_key, b"body", {"x-amz-meta-who": "alice"})
    assert http("PUT", url, b"body", headers).status == 200
    headers = sign("PUT", url, admin_key, b"evil", {"x-amz-meta-who": "alice"})
    headers["x-amz-meta-who"] = "mallory"
    reply = http("PUT", url, b"evil", headers)
    assert reply.status == 403 and error_code(reply.content) == "SignatureDoesNotMatch"
    assert s3.get_object(Bucket=bucket, Key="signed")["Metadata"] == {"who": "alice"}


def test_tampered_body_fails_and_stores_nothing(server, admin_key, s3, bucket):
    url = f"{server.url}/{bucket}/tampered"
    headers = sign("PUT", url, admin_key, b"original")
    reply = http("PUT", url, b"modified", headers)  # same length, different bytes
    assert reply.status == 400 and error_code(reply.content) == "XAmzContentSHA256Mismatch"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="tampered")


def test_skewed_clock(server, admin_key, bucket, monkeypatch):
    client = make_client(server.url, admin_key)
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: skewed)
    with pytest.raises(ClientError) as exc:
        client.list_objects_v2(Bucket=bucket)
    assert code(exc) == "RequestTimeTooSkewed"
    # Within 15 minutes is fine.
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: skewed + dt.timedelta(minutes=10))
    client.list_objects_v2(Bucket=bucket)


def test_expired_presigned_url(server, s3, bucket, monkeypatch):
    s3.put_object(Bucket=bucket, Key="p", Body=b"x")
    past = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=10)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60)
    monkeypatch.undo()
    reply = http("GET", url)
    assert reply.status == 403 and b"Request has expired" in reply.content
    fresh = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "p"}, ExpiresIn=60)
    assert http("GET", fresh).content == b"x"
    tampered = fresh.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    assert error_code(http("GET", tampered).content) == "SignatureDoesNotMatch"


def denied_lines(store: Path, who: str) -> list[dict]:
    """The audit's ``denied`` lines of one S3 key (by its unique name), read with the CLI."""
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "audit", "show", str(store), "--who", who],
        capture_output=True,
        check=True,
        env=env(),
        timeout=60,
    ).stdout
    return [e for e in map(json.loads, out.splitlines()) if e["who"] == f"s3:{who}" and e["outcome"] == "denied"]


VIEWER = "viewer-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def read_only_key(s3_store, server) -> Key:
    return create_key(s3_store, "--name", VIEWER, "--read-only")


def test_read_only_key_reads_but_cannot_write(server, s3, s3_store, bucket, read_only_key):
    s3.put_object(Bucket=bucket, Key="r", Body=b"x")
    viewer = make_client(server.url, read_only_key)
    assert viewer.get_object(Bucket=bucket, Key="r")["Body"].read() == b"x"
    assert viewer.head_object(Bucket=bucket, Key="r")["ContentLength"] == 1
    assert [o["Key"] for o in viewer.list_objects_v2(Bucket=bucket)["Contents"]] == ["r"]
    attempts = [
        lambda: viewer.put_object(Bucket=bucket, Key="r", Body=b"overwritten"),
        lambda: viewer.delete_object(Bucket=bucket, Key="r"),
        lambda: viewer.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "r"}]}),
        lambda: viewer.copy_object(Bucket=bucket, Key="r2", CopySource=f"{bucket}/r"),
        lambda: viewer.create_multipart_upload(Bucket=bucket, Key="m"),
        lambda: viewer.put_object_tagging(Bucket=bucket, Key="r", Tagging={"TagSet": []}),
        lambda: viewer.create_bucket(Bucket="ro-" + uuid.uuid4().hex[:10]),
        lambda: viewer.delete_bucket(Bucket=bucket),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as exc:
            attempt()
        assert code(exc) == "AccessDenied"
    assert s3.get_object(Bucket=bucket, Key="r")["Body"].read() == b"x"
    # Each refusal is the engine's, and a durable audit line naming the key.
    lines = denied_lines(s3_store, VIEWER)
    assert [e["action"] for e in lines] == [
        "write",
        "delete",
        "delete",
        "copy",
        "upload",
        "setattr",
        "create-bucket",
        "delete-bucket",
    ]
    assert lines[0]["key"] == "r" and lines[0]["bucket"] == bucket and "write right" in lines[0]["detail"]


def test_bucket_limited_key(server, s3, s3_store):
    mine, other = "mine-" + uuid.uuid4().hex[:10], "other-" + uuid.uuid4().hex[:10]
    s3.create_bucket(Bucket=mine)
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="secret", Body=b"s")
    name = "limited-" + uuid.uuid4().hex[:8]
    limited = make_client(server.url, create_key(s3_store, "--name", name, "--bucket", mine))
    assert [b["Name"] for b in limited.list_buckets()["Buckets"]] == [mine]
    limited.put_object(Bucket=mine, Key="k", Body=b"ok")
    for attempt in (
        lambda: limited.get_object(Bucket=other, Key="secret"),
        lambda: limited.list_objects_v2(Bucket=other),
        lambda: limited.put_object(Bucket=other, Key="x", Body=b"x"),
        lambda: limited.copy_object(Bucket=mine, Key="stolen", CopySource=f"{other}/secret"),
    ):
        with pytest.raises(ClientError) as exc:
            attempt()
        assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=mine, Key="stolen")
    lines = denied_lines(s3_store, name)
    assert [(e["action"], e["bucket"]) for e in lines] == [("read", other), ("list", other), ("write", other), ("read", other)]
