"""Multipart uploads through boto3: the full life cycle, copies, and the errors S3 defines."""

from __future__ import annotations

import hashlib
import io

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

MiB = 1 << 20


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def md5_of_md5s(parts: list[bytes]) -> str:
    return hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + f"-{len(parts)}"


class PatternReader(io.RawIOBase):
    """100 MiB of deterministic bytes without holding them in memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pos = 0
        self.block = bytes(range(256)) * 4096  # 1 MiB

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        off = self.pos % len(self.block)
        n = min(len(buf), self.size - self.pos, len(self.block) - off)
        if n <= 0:
            return 0
        memoryview(buf).cast("B")[:n] = self.block[off : off + n]
        self.pos += n
        return n


def test_100_mib_upload_with_8_mib_parts(s3, bucket):
    size = 100 * MiB
    config = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)
    s3.upload_fileobj(io.BufferedReader(PatternReader(size), 1 << 20), bucket, "big/100m", Config=config)
    head = s3.head_object(Bucket=bucket, Key="big/100m")
    assert head["ContentLength"] == size
    parts, reader = [], io.BufferedReader(PatternReader(size), 1 << 20)
    while chunk := reader.read(8 * MiB):
        parts.append(chunk)
    assert head["ETag"] == f'"{md5_of_md5s(parts)}"' and head["ETag"].endswith('-13"')
    got = s3.get_object(Bucket=bucket, Key="big/100m")
    digest = hashlib.sha256()
    for chunk in got["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    assert digest.digest() == hashlib.sha256(b"".join(parts)).digest()
    tail = s3.get_object(Bucket=bucket, Key="big/100m", Range=f"bytes={size - 10}-")["Body"].read()
    assert tail == parts[-1][-10:]


def test_multipart_life_cycle(s3, bucket):
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="text/x-mp", Metadata={"m": "1"})
    uid = up["UploadId"]
    p1, p2 = b"a" * (5 * MiB), b"tail"
    e2 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
    e1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [(1, len(p1), e1), (2, len(p2), e2)]
    page = s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid, MaxParts=1)
    assert page["IsTruncated"] and page["NextPartNumberMarker"] == 1
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("mp", uid)]
    # Nothing is visible before Complete.
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="mp")
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=uid,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
    )
    assert done["ETag"] == f'"{md5_of_md5s([p1, p2])}"'
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == p1 + p2
    assert got["ContentType"] == "text/x-mp" and got["Metadata"] == {"m": "1"}
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="mp", UploadId=uid)
    assert code(exc) == "NoSuchUpload"


def test_complete_errors_change_nothing(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="bad")["UploadId"]
    e1 = s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=1, Body=b"small")["ETag"]
    e2 = s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=2, Body=b"small")["ETag"]
    cases = [
        ([{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}], "InvalidPart"),
        ([{"PartNumber": 3, "ETag": e1}], "InvalidPart"),
        ([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}], "InvalidPartOrder"),
        ([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}], "EntityTooSmall"),
    ]
    for parts, expected in cases:
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(Bucket=bucket, Key="bad", UploadId=uid, MultipartUpload={"Parts": parts})
        assert code(exc) == expected
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")
    assert len(s3.list_parts(Bucket=bucket, Key="bad", UploadId=uid)["Parts"]) == 2
    s3.abort_multipart_upload(Bucket=bucket, Key="bad", UploadId=uid)
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="bad", UploadId=uid, PartNumber=1, Body=b"x")
    assert code(exc) == "NoSuchUpload"
    with pytest.raises(ClientError) as exc:
        s3.abort_multipart_upload(Bucket=bucket, Key="bad", UploadId=uid)
    assert code(exc) == "NoSuchUpload"


def test_upload_id_is_bound_to_its_key(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="one")["UploadId"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="other", UploadId=uid, PartNumber=1, Body=b"x")
    assert code(exc) == "NoSuchUpload"
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="one", UploadId=uid, PartNumber=10001, Body=b"x")
    assert code(exc) == "InvalidArgument"
    s3.abort_multipart_upload(Bucket=bucket, Key="one", UploadId=uid)


def test_upload_part_copy_with_ranges(s3, bucket):
    source = bytes(i % 249 for i in range(6 * MiB + 100))
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    r1 = s3.upload_part_copy(
        Bucket=bucket,
        Key="assembled",
        UploadId=uid,
        PartNumber=1,
        CopySource=f"{bucket}/src",
        CopySourceRange=f"bytes=0-{5 * MiB - 1}",
    )
    r2 = s3.upload_part_copy(
        Bucket=bucket,
        Key="assembled",
        UploadId=uid,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"},
        CopySourceRange="bytes=10-19",
    )
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=uid,
            PartNumber=3,
            CopySource=f"{bucket}/src",
            CopySourceRange=f"bytes=0-{len(source)}",
        )
    assert code(exc) == "InvalidRange"
    with pytest.raises(ClientError) as exc:
        s3.upload_part_copy(
            Bucket=bucket, Key="assembled", UploadId=uid, PartNumber=3, CopySource=f"{bucket}/src", CopySourceIfMatch='"nope"'
        )
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    parts = [
        {"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]},
        {"PartNumber": 2, "ETag": r2["CopyPartResult"]["ETag"]},
    ]
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=uid, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == source[: 5 * MiB] + source[10:20]


def test_upload_part_with_checksum(s3, bucket):
    uid = s3.create_multipart_upload(Bucket=bucket, Key="ck", ChecksumAlgorithm="SHA256")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="ck", UploadId=uid, PartNumber=1, Body=b"x" * 100, ChecksumAlgorithm="SHA256")
    assert part["ChecksumSHA256"]
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="ck", UploadId=uid, PartNumber=2, Body=b"y", ChecksumSHA256=part["ChecksumSHA256"])
    assert code(exc) == "BadDigest"
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=bucket, Key="ck", UploadId=uid)["Parts"]] == [1]
    s3.abort_multipart_upload(Bucket=bucket, Key="ck", UploadId=uid)
