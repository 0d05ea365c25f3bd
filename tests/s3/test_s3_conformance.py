"""Behaviour S3 clients rely on, through boto3 (raw HTTP where boto3 cannot say it) against a real server.

Bucket deletion with unfinished uploads, listings at their edges (max-keys=0,
v1 url encoding, ListBuckets paging), bucket tagging, retention periods, and
keys the router cannot take.
"""

from __future__ import annotations

import socket
import uuid

import pytest
from botocore.exceptions import ClientError
from s3helpers import create_key, error_code, http, make_client, signed_headers


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_delete_bucket_with_only_unfinished_uploads_is_refused(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="pending")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.delete_bucket(Bucket=bucket)
    assert (status(exc), code(exc)) == (409, "BucketNotEmpty")
    s3.abort_multipart_upload(Bucket=bucket, Key="pending", UploadId=upload_id)
    s3.delete_bucket(Bucket=bucket)


def test_list_objects_with_max_keys_zero_is_not_truncated(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a", Body=b"")
    v2 = s3.list_objects_v2(Bucket=bucket, MaxKeys=0)
    assert (v2["IsTruncated"], v2["KeyCount"], "Contents" in v2) == (False, 0, False)
    assert "NextContinuationToken" not in v2
    v1 = s3.list_objects(Bucket=bucket, MaxKeys=0)
    assert (v1["IsTruncated"], "Contents" in v1) == (False, False)


def test_list_objects_v1_url_encoding_leaves_the_prefix_alone(s3, bucket):
    s3.put_object(Bucket=bucket, Key="a b/c d", Body=b"")
    s3.put_object(Bucket=bucket, Key="a b/e f/g", Body=b"")
    # botocore asks for encoding-type=url itself and then decodes Key, Marker, NextMarker, Delimiter
    # and CommonPrefixes of a v1 listing - not its Prefix, which S3 echoes as sent.
    v1 = s3.list_objects(Bucket=bucket, Prefix="a b/", Delimiter="/", Marker="a b/")
    assert v1["Prefix"] == "a b/"
    assert [o["Key"] for o in v1["Contents"]] == ["a b/c d"]
    assert [p["Prefix"] for p in v1["CommonPrefixes"]] == ["a b/e f/"]
    assert v1["Marker"] == "a b/"
    explicit = s3.list_objects(Bucket=bucket, Prefix="a b/", EncodingType="url")
    assert explicit["Prefix"] == "a b/"
    assert [o["Key"] for o in explicit["Contents"]] == ["a%20b/c%20d", "a%20b/e%20f/g"]
    # In a v2 listing S3 does encode the Prefix, and botocore decodes it.
    assert s3.list_objects_v2(Bucket=bucket, Prefix="a b/")["Prefix"] == "a b/"


def test_list_buckets_pages_with_max_buckets(s3):
    tag = uuid.uuid4().hex[:8]
    names = [f"lb-{tag}-{i}" for i in range(3)]
    for name in names:
        s3.create_bucket(Bucket=name)
    seen = []
    token = None
    while True:
        args = {"MaxBuckets": 2, "Prefix": f"lb-{tag}-"}
        if token:
            args["ContinuationToken"] = token
        page = s3.list_buckets(**args)
        assert len(page["Buckets"]) <= 2
        seen += [b["Name"] for b in page["Buckets"]]
        token = page.get("ContinuationToken")
        if not token:
            break
    assert seen == names
    assert len(s3.list_buckets()["Buckets"]) >= 3


def test_max_buckets_is_checked(server, admin_key):
    url = f"{server.url}/?max-buckets=0"
    reply = http("GET", url, None, signed_headers("GET", url, admin_key))
    assert (reply.status, error_code(reply.content)) == (400, "InvalidArgument")


def test_bucket_tagging(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert (status(exc), code(exc)) == (404, "NoSuchTagSet")
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "dept", "Value": "radiology"}]})
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "dept", "Value": "radiology"}]
    s3.delete_bucket_tagging(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_tagging(Bucket=bucket)
    assert code(exc) == "NoSuchTagSet"


@pytest.fixture(scope="module")
def lock_admin(server, s3_store):
    return make_client(server.url, create_key(s3_store, "--name", "conformance-lock", "--retention"))


@pytest.mark.parametrize("period", [{"Days": 0}, {"Years": 0}, {"Days": -1}])
def test_zero_retention_period_is_invalid_retention_period(lock_admin, period):
    s3 = lock_admin
    name = "lock-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    with pytest.raises(ClientError) as exc:
        s3.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", **period}},
            },
        )
    assert (status(exc), code(exc)) == (400, "InvalidRetentionPeriod")


@pytest.mark.parametrize("raw_key", ["a%0Ab", "a%0Db", "%0A"])
def test_key_with_a_newline_is_an_ordinary_key(s3, server, admin_key, bucket, raw_key):
    url = f"{server.url}/{bucket}/{raw_key}"
    reply = http("PUT", url, b"body", signed_headers("PUT", url, admin_key, b"body"))
    assert reply.status == 200, reply
    key = raw_key.replace("%0A", "\n").replace("%0D", "\r")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"body"
    listed = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == [key]


@pytest.mark.parametrize("target", [b"/k/a\nb", b"/k/a b", b"/k/a\x7fb", "/k/\u00e9".encode(), b"/k/a\x00b"])
def test_unparseable_request_target_gets_an_s3_error(server, target):
    """Characters the HTTP parser refuses in a raw target: an S3 XML error, not an empty framework answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request"), answer
    assert b"content-type: application/xml" in head.lower()
    assert error_code(body) == "InvalidURI"
