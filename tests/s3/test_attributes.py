"""GetObjectAttributes through boto3 against a real server: single-part, multipart with checksums, versions, errors."""

from __future__ import annotations

import base64
import os
import zlib

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20
ALL = ["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"]


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_attributes_of_a_single_part_object(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"hello", ChecksumAlgorithm="CRC32")
    got = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=ALL)
    assert got["ETag"] == put["ETag"].strip('"')
    assert got["ObjectSize"] == 5
    assert got["StorageClass"] == "STANDARD"
    assert got["Checksum"] == {"ChecksumCRC32": crc32(b"hello"), "ChecksumType": "FULL_OBJECT"}
    assert "ObjectParts" not in got
    only = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ObjectSize"])
    assert only["ObjectSize"] == 5 and "ETag" not in only


def test_attributes_of_a_multipart_object(s3, bucket):
    bodies = [os.urandom(5 * MiB), os.urandom(10)]
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, body in enumerate(bodies, 1):
        reply = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm="CRC32"
        )
        parts.append({"PartNumber": number, "ETag": reply["ETag"], "ChecksumCRC32": reply["ChecksumCRC32"]})
    done = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id, MultipartUpload={"Parts": parts})
    got = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=ALL)
    assert got["ETag"] == done["ETag"].strip('"')
    assert got["ObjectSize"] == sum(map(len, bodies))
    assert got["Checksum"]["ChecksumType"] == "COMPOSITE"
    assert got["Checksum"]["ChecksumCRC32"] == done["ChecksumCRC32"]
    object_parts = got["ObjectParts"]
    assert object_parts["TotalPartsCount"] == 2
    assert [(p["PartNumber"], p["Size"], p["ChecksumCRC32"]) for p in object_parts["Parts"]] == [
        (1, len(bodies[0]), crc32(bodies[0])),
        (2, len(bodies[1]), crc32(bodies[1])),
    ]
    page = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1)
    assert page["ObjectParts"]["IsTruncated"] is True
    assert [p["PartNumber"] for p in page["ObjectParts"]["Parts"]] == [1]
    rest = s3.get_object_attributes(Bucket=bucket, Key="mp", ObjectAttributes=["ObjectParts"], MaxParts=1, PartNumberMarker=1)
    assert [p["PartNumber"] for p in rest["ObjectParts"]["Parts"]] == [2]
    assert rest["ObjectParts"]["IsTruncated"] is False


def test_attributes_of_versions_and_missing_keys(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"three")
    old = s3.get_object_attributes(Bucket=bucket, Key="k", VersionId=v1["VersionId"], ObjectAttributes=["ObjectSize"])
    assert (old["ObjectSize"], old["VersionId"]) == (3, v1["VersionId"])
    s3.delete_object(Bucket=bucket, Key="k")
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["ObjectSize"])
    assert code(exc) == "NoSuchKey"
    assert exc.value.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker") == "true"
    with pytest.raises(ClientError) as exc:
        s3.get_object_attributes(Bucket=bucket, Key="absent", ObjectAttributes=["ObjectSize"])
    assert code(exc) == "NoSuchKey"
