"""Checksums of multipart objects (composite ``...-N`` and full-object) through boto3 against a real server.

The Complete request's ``x-amz-checksum-*`` header is the checksum of the
object being made, never of the XML document; it is verified, stored and
returned by GetObject/HeadObject with ChecksumMode=ENABLED.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

import pytest
from botocore.exceptions import ClientError

from s3sidecar import checksums

MiB = 1 << 20


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def crc32(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def _parts(s3, bucket: str, key: str, bodies: list[bytes], algorithm: str, **create) -> tuple[str, list[dict]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algorithm, **create)["UploadId"]
    done = []
    for number, body in enumerate(bodies, 1):
        reply = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, ChecksumAlgorithm=algorithm
        )
        field = "Checksum" + algorithm
        done.append({"PartNumber": number, "ETag": reply["ETag"], field: reply[field]})
    return upload_id, done


@pytest.fixture(scope="module")
def bodies() -> list[bytes]:
    return [os.urandom(5 * MiB), os.urandom(1234)]


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [("CRC32", lambda d: zlib.crc32(d).to_bytes(4, "big")), ("SHA256", lambda d: hashlib.sha256(d).digest())],
)
def test_composite_checksum(s3, bucket, bodies, algorithm, digest):
    upload_id, parts = _parts(s3, bucket, "k", bodies, algorithm)
    expected = b64(digest(b"".join(digest(b) for b in bodies))) + "-2"
    field = "Checksum" + algorithm
    done = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert (done[field], done["ChecksumType"]) == (expected, "COMPOSITE")
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert (head[field], head["ChecksumType"]) == (expected, "COMPOSITE")
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got[field] == expected
    assert got["Body"].read() == b"".join(bodies)
    assert field not in s3.head_object(Bucket=bucket, Key="k")


def test_full_object_crc_is_verified_stored_and_returned(s3, bucket, bodies):
    whole = crc32(b"".join(bodies))
    upload_id, parts = _parts(s3, bucket, "k", bodies, "CRC32", ChecksumType="FULL_OBJECT")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}, ChecksumCRC32=crc32(b"other")
        )
    assert code(exc) == "BadDigest"
    # The header is the object's checksum, not one of the XML document: the right one completes.
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": parts},
        ChecksumCRC32=whole,
        ChecksumType="FULL_OBJECT",
        MpuObjectSize=sum(map(len, bodies)),
    )
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (whole, "FULL_OBJECT")
    # botocore checks a full-object checksum against the body it receives.
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert (got["ChecksumCRC32"], got["ChecksumType"]) == (whole, "FULL_OBJECT")
    assert got["Body"].read() == b"".join(bodies)
    assert got["ResponseMetadata"]["HTTPHeaders"]["x-amz-checksum-crc32"] == whole


def test_checksum_given_only_at_completion(s3, bucket):
    """Parts sent with CRC32 (boto3's default) and an upload that declared nothing: the Complete header decides."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    reply = s3.upload_part(Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"abc", ChecksumAlgorithm="CRC32")
    part_crc = reply["ChecksumCRC32"]
    assert part_crc == crc32(b"abc")
    composite = b64(zlib.crc32(base64.b64decode(part_crc)).to_bytes(4, "big")) + "-1"
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="k",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": reply["ETag"], "ChecksumCRC32": part_crc}]},
        ChecksumCRC32=composite,
    )
    assert done["ChecksumCRC32"] == composite
    listed = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert listed["ChecksumCRC32"] == composite


def test_part_checksum_in_the_document_must_match_the_part(s3, bucket, bodies):
    upload_id, parts = _parts(s3, bucket, "k", bodies, "CRC32")
    parts[1]["ChecksumCRC32"] = crc32(b"not this part")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert code(exc) == "InvalidPart"
    listed = s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)["Parts"]
    assert [p["ChecksumCRC32"] for p in listed] == [crc32(b) for b in bodies]


def test_type_and_algorithm_are_checked(s3, bucket):
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT")
    assert code(exc) == "InvalidRequest"
    created = s3.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    assert (created["ChecksumAlgorithm"], created["ChecksumType"]) == ("CRC32", "FULL_OBJECT")


@pytest.mark.parametrize("algorithm", checksums.FULL_OBJECT_ALGORITHMS)
def test_crc_combine_equals_the_crc_of_the_whole(algorithm):
    pieces = [os.urandom(n) for n in (1, 1000, 0, 77777)]

    def of(data: bytes) -> str:
        checksum = checksums.make_checksum(algorithm)
        checksum.update(data)
        return checksum.b64digest()

    combined = checksums.full_object(algorithm, [(of(p), len(p)) for p in pieces])
    assert combined == of(b"".join(pieces))
