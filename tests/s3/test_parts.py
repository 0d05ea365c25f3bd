"""Reading objects part by part (``?partNumber=N`` on GET and HEAD) through boto3 against a real server."""

from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def two_parts(s3, bucket) -> tuple[str, list[bytes]]:
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    done = []
    for number, data in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
        done.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": done})
    return bucket, parts


def test_get_each_part_of_a_multipart_object(s3, two_parts):
    bucket, parts = two_parts
    total = sum(map(len, parts))
    first = s3.get_object(Bucket=bucket, Key="mp", PartNumber=1)
    assert first["Body"].read() == parts[0]
    assert first["ContentRange"] == f"bytes 0-{len(parts[0]) - 1}/{total}"
    assert first["PartsCount"] == 2
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 206
    second = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert second["Body"].read() == parts[1]
    assert second["ContentRange"] == f"bytes {len(parts[0])}-{total - 1}/{total}"
    head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert (head["ContentLength"], head["PartsCount"]) == (len(parts[1]), 2)
    assert head["ContentRange"] == second["ContentRange"]
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="mp", PartNumber=3)
    assert (status(exc), code(exc)) == (416, "InvalidPartNumber")


def test_part_one_of_a_single_part_object_is_the_whole_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="one", Body=b"whole body")
    got = s3.get_object(Bucket=bucket, Key="one", PartNumber=1)
    assert got["Body"].read() == b"whole body"
    assert got["ContentRange"] == "bytes 0-9/10"
    assert "PartsCount" not in got
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="one", PartNumber=2)
    assert status(exc) == 416


def test_part_number_is_validated(s3, bucket):
    s3.put_object(Bucket=bucket, Key="one", Body=b"whole body")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="one", PartNumber=1, Range="bytes=0-1")
    assert (status(exc), code(exc)) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="one", PartNumber=0)
    assert (status(exc), code(exc)) == (400, "InvalidArgument")


def test_part_of_an_encrypted_multipart_object(s3, bucket):
    parts = [os.urandom(5 * MiB), os.urandom(777)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="enc", ServerSideEncryption="AES256")["UploadId"]
    done = []
    for number, data in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key="enc", UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
        done.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket=bucket, Key="enc", UploadId=upload_id, MultipartUpload={"Parts": done})
    second = s3.get_object(Bucket=bucket, Key="enc", PartNumber=2)
    assert second["Body"].read() == parts[1]
    assert second["ContentRange"] == f"bytes {len(parts[0])}-{len(parts[0]) + len(parts[1]) - 1}/{sum(map(len, parts))}"
