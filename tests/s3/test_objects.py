"""Object operations through boto3 against a real server: put/get/head/delete, copy, ranges, conditions."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import zlib

import pytest
from botocore.exceptions import ClientError
from s3helpers import http

from s3sidecar import checksums


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_put_get_head_keep_metadata_and_standard_headers(s3, bucket):
    body = b"DICM" * 1000
    put = s3.put_object(
        Bucket=bucket,
        Key="study/1.dcm",
        Body=body,
        ContentType="application/dicom",
        Metadata={"patient": "anon-1", "Modality": "CT"},
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="1.dcm"',
        ContentLanguage="en",
        ContentEncoding="identity",
    )
    assert put["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="study/1.dcm")
    assert got["Body"].read() == body
    assert got["ContentType"] == "application/dicom"
    assert got["Metadata"] == {"patient": "anon-1", "modality": "CT"}
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == 'attachment; filename="1.dcm"'
    assert got["ContentLanguage"] == "en"
    assert got["ContentEncoding"] == "identity"
    assert got["ETag"] == put["ETag"]
    head = s3.head_object(Bucket=bucket, Key="study/1.dcm")
    assert head["ContentLength"] == len(body)
    assert head["Metadata"]["patient"] == "anon-1"
    assert head["AcceptRanges"] == "bytes"


def test_empty_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0


def test_large_object_streams_both_ways(s3, bucket):
    data = bytes(range(256)) * (12 * 4096 + 17)  # ~12 MiB: several segments, not inline
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["ContentLength"] == len(data)
    assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(data).digest()


def test_missing_key_and_bucket(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="nope")
    assert code(exc) == "NoSuchKey" and status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="nope")
    assert status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="no-such-bucket-here", Key="x")
    assert code(exc) == "NoSuchBucket"


def test_content_md5_checked(s3, bucket):
    body = b"payload"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="md5", Body=body, ContentMD5=good)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="md5-bad", Body=body, ContentMD5=wrong)
    assert code(exc) == "BadDigest"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="md5-bad", Body=body, ContentMD5="not-base64!")
    assert code(exc) == "InvalidDigest"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="md5-bad")


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA256", "SHA1", "CRC64NVME"])
def test_flexible_checksums_stored_and_returned(s3, bucket, algorithm):
    body = b"checksummed " * 1000
    if algorithm in ("CRC32C", "CRC64NVME"):
        # botocore computes these only with awscrt; give it the value to send instead.
        value = checksums.make_checksum(algorithm)
        value.update(body)
        put = s3.put_object(Bucket=bucket, Key=f"ck-{algorithm}", Body=body, **{f"Checksum{algorithm}": value.b64digest()})
    else:
        put = s3.put_object(Bucket=bucket, Key=f"ck-{algorithm}", Body=body, ChecksumAlgorithm=algorithm)
    value = put[f"Checksum{algorithm}"]
    head = s3.head_object(Bucket=bucket, Key=f"ck-{algorithm}", ChecksumMode="ENABLED")
    assert head[f"Checksum{algorithm}"] == value
    # botocore validates the body against the returned checksum itself.
    got = s3.get_object(Bucket=bucket, Key=f"ck-{algorithm}", ChecksumMode="ENABLED")
    assert got["Body"].read() == body and got[f"Checksum{algorithm}"] == value


def test_checksum_mismatch_stores_nothing(s3, bucket):
    wrong = base64.b64encode(zlib.crc32(b"something else").to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="ck-bad", Body=b"data", ChecksumCRC32=wrong)
    assert code(exc) == "BadDigest"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="ck-bad", Body=b"data", ChecksumSHA256="AAAA")
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="ck-bad")


RANGE_CASES = [
    ("bytes=0-0", 0, 1),
    ("bytes=0-9", 0, 10),
    ("bytes=999-999", 999, 1000),
    ("bytes=990-", 990, 1000),
    ("bytes=-10", 990, 1000),
    ("bytes=-5000", 0, 1000),
    ("bytes=500-99999", 500, 1000),
]


@pytest.mark.parametrize("header,start,end", RANGE_CASES)
def test_range_reads_at_edges(s3, bucket, header, start, end):
    data = bytes(i % 251 for i in range(1000))
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    got = s3.get_object(Bucket=bucket, Key="r", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {start}-{end - 1}/1000"
    assert got["Body"].read() == data[start:end]


def test_range_across_segments_of_a_big_object(s3, bucket):
    data = bytes(i % 253 for i in range(3 << 20))
    s3.put_object(Bucket=bucket, Key="rb", Body=data)
    lo, hi = (1 << 20) - 7, (2 << 20) + 9
    got = s3.get_object(Bucket=bucket, Key="rb", Range=f"bytes={lo}-{hi}")
    assert got["Body"].read() == data[lo : hi + 1]


def test_unsatisfiable_range_is_416(s3, bucket):
    s3.put_object(Bucket=bucket, Key="r416", Body=b"x" * 10)
    for header in ("bytes=10-", "bytes=100-200", "bytes=-0"):
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=bucket, Key="r416", Range=header)
        assert code(exc) == "InvalidRange" and status(exc) == 416
    # A malformed Range is ignored, as S3 does.
    assert s3.get_object(Bucket=bucket, Key="r416", Range="bytes=a-b")["Body"].read() == b"x" * 10


def test_conditional_get(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"v1")
    etag = put["ETag"]
    modified = s3.head_object(Bucket=bucket, Key="c")["LastModified"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"v1"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert status(exc) == 412
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert status(exc) == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfNoneMatch='"0000"')["Body"].read() == b"v1"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=modified)
    assert status(exc) == 304
    earlier = modified - dt.timedelta(hours=1)
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=earlier)["Body"].read() == b"v1"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=earlier)
    assert status(exc) == 412
    assert s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=modified)["Body"].read() == b"v1"
    # S3 precedence: a matching If-Match wins over a failing If-Unmodified-Since.
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=earlier)["Body"].read() == b"v1"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="c", IfNoneMatch="*")
    assert status(exc) == 304


def test_conditional_put(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="cp", Body=b"v1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="cp", Body=b"v2", IfNoneMatch="*")
    assert status(exc) == 412
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="cp", Body=b"v2", IfMatch='"0000"')
    assert status(exc) == 412
    s3.put_object(Bucket=bucket, Key="cp", Body=b"v2", IfMatch=put["ETag"])
    assert s3.get_object(Bucket=bucket, Key="cp")["Body"].read() == b"v2"


def test_response_overrides(s3, bucket):
    s3.put_object(Bucket=bucket, Key="o", Body=b"x", ContentType="text/plain")
    got = s3.get_object(
        Bucket=bucket,
        Key="o",
        ResponseContentType="application/x-test",
        ResponseContentDisposition="inline",
        ResponseCacheControl="no-cache",
        ResponseContentLanguage="de",
        ResponseContentEncoding="identity",
    )
    assert got["ContentType"] == "application/x-test"
    assert got["ContentDisposition"] == "inline"
    assert got["CacheControl"] == "no-cache"
    assert got["ContentLanguage"] == "de"


def test_delete_is_idempotent(s3, bucket):
    s3.put_object(Bucket=bucket, Key="d", Body=b"x")
    assert s3.delete_object(Bucket=bucket, Key="d")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.delete_object(Bucket=bucket, Key="d")["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="d")


def test_delete_objects_without_content_md5(s3, bucket):
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"many/{i}", Body=b"x")
    # botocore >= 1.36 sends a CRC32 checksum header instead of Content-MD5.
    out = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": f"many/{i}"} for i in range(5)] + [{"Key": "many/absent"}]}
    )
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted([f"many/{i}" for i in range(5)] + ["many/absent"])
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="many/")
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "many/0"}], "Quiet": True})
    assert not quiet.get("Deleted") and not quiet.get("Errors")


def test_delete_objects_reports_bad_keys(s3, bucket):
    out = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a/../b"}]})
    assert out["Errors"][0]["Code"] == "InvalidArgument"


def test_copy_object_metadata_directive(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", ContentType="text/plain", Metadata={"a": "1"})
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"copy me" and got["Metadata"] == {"a": "1"} and got["ContentType"] == "text/plain"
    s3.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource=f"{bucket}/src",
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="application/x-new",
    )
    head = s3.head_object(Bucket=bucket, Key="dst2")
    assert head["Metadata"] == {"b": "2"} and head["ContentType"] == "application/x-new"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert code(exc) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"}, MetadataDirective="REPLACE")


def test_conditional_copy(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="csrc", Body=b"x")["ETag"]
    s3.copy_object(Bucket=bucket, Key="c1", CopySource=f"{bucket}/csrc", CopySourceIfMatch=etag)
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="c2", CopySource=f"{bucket}/csrc", CopySourceIfMatch='"0000"')
    assert status(exc) == 412
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="c2", CopySource=f"{bucket}/csrc", CopySourceIfNoneMatch=etag)
    assert status(exc) == 412
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="c2")
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=bucket, Key="c3", CopySource=f"{bucket}/absent")
    assert code(exc) == "NoSuchKey"


def test_tagging(s3, bucket):
    s3.put_object(Bucket=bucket, Key="t", Body=b"x", Tagging="project=pacs&site=north")
    assert s3.head_object(Bucket=bucket, Key="t")  # exists
    tags = s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"project": "pacs", "site": "north"}
    assert s3.get_object(Bucket=bucket, Key="t")["TagCount"] == 2
    s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == [{"Key": "k", "Value": "v"}]
    s3.delete_object_tagging(Bucket=bucket, Key="t")
    assert s3.get_object_tagging(Bucket=bucket, Key="t")["TagSet"] == []
    with pytest.raises(ClientError) as exc:
        s3.put_object_tagging(Bucket=bucket, Key="t", Tagging={"TagSet": [{"Key": "aws:x", "Value": "v"}]})
    assert code(exc) == "InvalidTag"
    with pytest.raises(ClientError) as exc:
        s3.get_object_tagging(Bucket=bucket, Key="absent")
    assert code(exc) == "NoSuchKey"


@pytest.mark.parametrize("key", ["a/../b", "../etc/passwd", "a/./b", "a//b", "x" * 1100])
def test_bad_keys_are_refused_and_change_nothing(s3, bucket, key):
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert code(exc) in ("InvalidArgument", "KeyTooLongError") and status(exc) == 400
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_presigned_get_and_put(s3, bucket):
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300)
    assert http("PUT", url, b"presigned body").status == 200
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"}, ExpiresIn=300)
    got = http("GET", url)
    assert got.status == 200 and got.content == b"presigned body"
    # The signature covers the key: another key with the same query fails.
    other = url.replace("/pre?", "/pre2?")
    assert http("GET", other).status == 403
