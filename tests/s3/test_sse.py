"""Server-side encryption through boto3 against a real sidecar: SSE-S3, SSE-KMS, SSE-C, bucket defaults.

Each round trip goes through put, copy, multipart and range GET; refusals
(missing or wrong SSE-C key, unimplemented modes) are checked against S3's
error codes; the stolen-drive test greps every file under the store's drives
for a plaintext marker written through S3 and through the mount.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3helpers import create_key, env, error_code, http, make_client, signed_headers, start_server
from test_fuse_interop import mounted  # noqa: F401 (the session store mounted beside the sidecar)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from fragmenthelpers import lose_fragment  # noqa: E402

from objfs.store import Store, init_store  # noqa: E402

PART = 5 << 20  # the minimum part size


def kms(store: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "kms", *args[:1], str(store), *args[1:]],
        capture_output=True,
        env=env(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def body(size: int, tag: str = "") -> bytes:
    seed = hashlib.sha256(tag.encode() or os.urandom(8)).digest()
    return (seed * (size // 32 + 1))[:size]


def ssec(key: bytes, prefix: str = "SSECustomer") -> dict[str, str]:
    """boto3's SSE-C arguments (it adds the key's MD5 itself)."""
    return {f"{prefix}Algorithm": "AES256", f"{prefix}Key": key}


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


@pytest.fixture(scope="module")
def kms_key(s3_store: Path) -> str:
    name = "pacs-" + uuid.uuid4().hex[:8]
    kms(s3_store, "create", name)
    return name


MODES = ["S3", "KMS", "C"]


def put_args(mode: str, kms_key: str, customer: bytes) -> dict[str, str]:
    if mode == "S3":
        return {"ServerSideEncryption": "AES256"}
    if mode == "KMS":
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    return ssec(customer)


def read_args(mode: str, customer: bytes) -> dict[str, str]:
    return ssec(customer) if mode == "C" else {}


def check_sse_headers(reply: dict, mode: str, kms_key: str, customer: bytes) -> None:
    if mode == "S3":
        assert reply["ServerSideEncryption"] == "AES256"
    elif mode == "KMS":
        assert reply["ServerSideEncryption"] == "aws:kms"
        assert reply["SSEKMSKeyId"] == kms_key
    else:
        assert reply["SSECustomerAlgorithm"] == "AES256"
        assert reply["SSECustomerKeyMD5"] == base64.b64encode(hashlib.md5(customer).digest()).decode()


@pytest.mark.parametrize("mode", MODES)
def test_put_get_head_range_round_trip(s3, bucket, kms_key, mode):
    customer = os.urandom(32)
    data = body(3 * (1 << 20) + 12345, mode)
    reply = s3.put_object(Bucket=bucket, Key="obj", Body=data, **put_args(mode, kms_key, customer))
    check_sse_headers(reply, mode, kms_key, customer)
    got = s3.get_object(Bucket=bucket, Key="obj", **read_args(mode, customer))
    check_sse_headers(got, mode, kms_key, customer)
    assert got["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key="obj", **read_args(mode, customer))
    check_sse_headers(head, mode, kms_key, customer)
    assert head["ContentLength"] == len(data)
    # A range across a segment boundary decrypts only the segments it needs.
    for start, end in ((0, 0), (1_048_570, 2_097_160), (len(data) - 10, len(data) - 1)):
        part = s3.get_object(Bucket=bucket, Key="obj", Range=f"bytes={start}-{end}", **read_args(mode, customer))
        assert part["Body"].read() == data[start : end + 1]


@pytest.mark.parametrize("mode", MODES)
def test_multipart_round_trip(s3, bucket, kms_key, mode):
    customer = os.urandom(32)
    data = body(PART + 300_000, "mp" + mode)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", **put_args(mode, kms_key, customer))
    check_sse_headers(up, mode, kms_key, customer)
    parts = []
    for number, chunk in ((1, data[:PART]), (2, data[PART:])):
        r = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=number, Body=chunk, **read_args(mode, customer)
        )
        check_sse_headers(r, mode, kms_key, customer)
        parts.append({"PartNumber": number, "ETag": r["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": parts}, **read_args(mode, customer)
    )
    if mode == "C":  # botocore's CompleteMultipartUpload output has no SSE-C members: read the headers
        assert done["ResponseMetadata"]["HTTPHeaders"]["x-amz-server-side-encryption-customer-algorithm"] == "AES256"
    else:
        check_sse_headers(done, mode, kms_key, customer)
    assert s3.get_object(Bucket=bucket, Key="mp", **read_args(mode, customer))["Body"].read() == data
    span = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={PART - 5}-{PART + 5}", **read_args(mode, customer))
    assert span["Body"].read() == data[PART - 5 : PART + 6]


def test_ssec_upload_part_needs_the_uploads_key(s3, bucket):
    customer = os.urandom(32)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", **ssec(customer))
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"x")
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=b"x", **ssec(os.urandom(32)))
    assert code(exc) == "AccessDenied"


@pytest.mark.parametrize(
    ("src_mode", "dst_mode"), [("C", "S3"), ("S3", "C"), ("KMS", "C"), ("C", "C"), ("S3", "KMS"), ("C", None)]
)
def test_copy_between_modes_and_keys(s3, bucket, kms_key, src_mode, dst_mode):
    src_key, dst_key = os.urandom(32), os.urandom(32)
    data = body(1_500_000, src_mode + str(dst_mode))
    s3.put_object(Bucket=bucket, Key="src", Body=data, **put_args(src_mode, kms_key, src_key))
    dst_args = put_args(dst_mode, kms_key, dst_key) if dst_mode else {}
    source_args = ssec(src_key, "CopySourceSSECustomer") if src_mode == "C" else {}
    reply = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}, **source_args, **dst_args)
    if dst_mode:
        check_sse_headers(reply, dst_mode, kms_key, dst_key)
    else:
        assert "ServerSideEncryption" not in reply and "SSECustomerAlgorithm" not in reply
    got = s3.get_object(Bucket=bucket, Key="dst", **(read_args(dst_mode, dst_key) if dst_mode else {}))
    assert got["Body"].read() == data
    if src_mode == "C":
        # Without the source's key the copy is refused.
        with pytest.raises(ClientError) as exc:
            s3.copy_object(Bucket=bucket, Key="dst2", CopySource={"Bucket": bucket, "Key": "src"}, **dst_args)
        assert code(exc) == "InvalidRequest"


def test_upload_part_copy_from_ssec_source_into_kms_upload(s3, bucket, kms_key):
    src_key = os.urandom(32)
    data = body(PART + 10, "upc")
    s3.put_object(Bucket=bucket, Key="src", Body=data, **ssec(src_key))
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key)
    r = s3.upload_part_copy(
        Bucket=bucket,
        Key="mp",
        UploadId=up["UploadId"],
        PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "src"},
        **ssec(src_key, "CopySourceSSECustomer"),
    )
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]},
    )
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["ServerSideEncryption"] == "aws:kms"
    assert got["Body"].read() == data


def test_ssec_wrong_or_missing_key_refused(s3, bucket):
    customer = os.urandom(32)
    s3.put_object(Bucket=bucket, Key="secret", Body=b"patient data", **ssec(customer))
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="secret")
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="secret", **ssec(os.urandom(32)))
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="secret")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="secret", **ssec(os.urandom(32)))
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # SSE-C headers on an object that is not SSE-C are refused too.
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=bucket, Key="plain", **ssec(customer))
    assert code(exc) == "InvalidRequest"


def test_unimplemented_or_malformed_sse_requests_store_nothing(s3, bucket, server, admin_key):
    customer = os.urandom(32)
    cases = [
        ({"ServerSideEncryption": "aws:kms:dsse"}, "NotImplemented"),
        (
            {"ServerSideEncryption": "aws:kms", "SSEKMSEncryptionContext": base64.b64encode(b'{"a":"b"}').decode()},
            "NotImplemented",
        ),
        ({"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": True}, "NotImplemented"),
        ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "no-such-key"}, "KMS.NotFoundException"),
        ({"SSECustomerAlgorithm": "AES128", "SSECustomerKey": customer}, "InvalidEncryptionAlgorithmError"),
        ({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": customer[:16]}, "InvalidArgument"),
        ({"ServerSideEncryption": "AES256", **ssec(customer)}, "InvalidArgument"),
    ]
    for args, expected in cases:
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="k", Body=b"data", **args)
        assert code(exc) == expected, args
    # A wrong key MD5 (boto3 computes a right one: send the headers by hand).
    url = f"{server.url}/{bucket}/k"
    sse_c = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(customer).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode(),
    }
    reply = http("PUT", url, b"data", signed_headers("PUT", url, admin_key, b"data", sse_c))
    assert (reply.status, error_code(reply.content)) == (400, "InvalidArgument")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_kms_rotation_keeps_old_objects_readable(s3, s3_store, bucket):
    name = "rot-" + uuid.uuid4().hex[:8]
    kms(s3_store, "create", name)
    s3.put_object(Bucket=bucket, Key="v1", Body=b"before rotation", ServerSideEncryption="aws:kms", SSEKMSKeyId=name)
    kms(s3_store, "rotate", name)
    s3.put_object(Bucket=bucket, Key="v2", Body=b"after rotation", ServerSideEncryption="aws:kms", SSEKMSKeyId=name)
    assert s3.get_object(Bucket=bucket, Key="v1")["Body"].read() == b"before rotation"
    assert s3.get_object(Bucket=bucket, Key="v2")["Body"].read() == b"after rotation"
    listed = kms(s3_store, "list")
    assert f'"name": "{name}"' in listed and '"versions": 2' in listed


def test_bucket_default_encryption(s3, bucket, kms_key):
    with pytest.raises(ClientError) as exc:
        s3.get_bucket_encryption(Bucket=bucket)
    assert code(exc) == "ServerSideEncryptionConfigurationNotFoundError"
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key}}
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})
    got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert got["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key}
    reply = s3.put_object(Bucket=bucket, Key="k", Body=b"default")
    assert reply["ServerSideEncryption"] == "aws:kms" and reply["SSEKMSKeyId"] == kms_key
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"default"
    # An explicit mode wins over the default.
    assert s3.put_object(Bucket=bucket, Key="s", Body=b"x", ServerSideEncryption="AES256")["ServerSideEncryption"] == "AES256"
    s3.delete_bucket_encryption(Bucket=bucket)
    assert "ServerSideEncryption" not in s3.put_object(Bucket=bucket, Key="p", Body=b"plain")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"default"
    bad = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "missing-key"}}
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [bad]})
    assert code(exc) == "KMS.NotFoundException"


def drive_files_containing(store: Path, marker: bytes) -> list[Path]:
    hits = []
    for dirpath, _dirs, names in os.walk(store / "drives"):
        for name in names:
            path = Path(dirpath) / name
            try:
                if marker in path.read_bytes():
                    hits.append(path)
            except OSError:
                pass
    return hits


def test_degraded_read_and_rebuild_index(s3, bucket, tmp_path, server):
    """m fragments of every blob deleted: ranges still decrypt; the index rebuilt from the drives keeps the keys."""
    store_path = tmp_path / "store"
    init_store(store_path, ec="2+2", segment_size=64 * 1024).close()
    srv = start_server(store_path)
    try:
        client = make_client(srv.url, create_key(store_path, "--name", "admin"))
        client.create_bucket(Bucket="pacs")
        customer = os.urandom(32)
        data = body(300_000, "degraded")
        client.put_object(Bucket="pacs", Key="s3", Body=data, ServerSideEncryption="AES256")
        client.put_object(Bucket="pacs", Key="c", Body=data, **ssec(customer))
    finally:
        srv.stop()
    with Store.open(store_path) as store:
        for key in ("s3", "c"):
            desc = store.head_object("pacs", key).record["parts"][0]
            assert desc["enc"] == 16
            for index in (0, 1):  # two data fragments: only parity and the rest remain
                lose_fragment(store, desc, index)
    subprocess.run(
        [sys.executable, "-m", "objfs.cli", "rebuild-index", str(store_path), "--force"],
        check=True,
        env=env(),
        capture_output=True,
    )
    srv = start_server(store_path)
    try:
        client = make_client(srv.url, create_key(store_path, "--name", "again"))
        assert client.get_object(Bucket="pacs", Key="s3")["Body"].read() == data
        span = client.get_object(Bucket="pacs", Key="c", Range="bytes=65530-131080", **ssec(customer))
        assert span["Body"].read() == data[65530:131081]
        with pytest.raises(ClientError):
            client.get_object(Bucket="pacs", Key="c")
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def mount_point(mounted: Path) -> Path:  # noqa: F811 (the fixture imported above)
    return mounted


def test_stolen_drives_reveal_no_plaintext(s3, s3_store, bucket, mount_point):
    marker = b"PLAINTEXT-MARKER-" + uuid.uuid4().hex.encode()
    s3.put_object(Bucket=bucket, Key="explicit", Body=marker * 1000, ServerSideEncryption="AES256")
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    s3.put_object(Bucket=bucket, Key="default", Body=marker * 1000)
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")
    r = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up["UploadId"], PartNumber=1, Body=marker * 1000)
    s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up["UploadId"], MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["ETag"]}]}
    )
    # Through the mount: the bucket's default applies to what the mount writes.
    path = mount_point / bucket / "from-mount.bin"
    path.write_bytes(marker * 1000)
    assert s3.get_object(Bucket=bucket, Key="from-mount.bin")["ServerSideEncryption"] == "AES256"
    assert path.read_bytes() == marker * 1000
    for key in ("explicit", "default", "mp", "from-mount.bin"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == marker * 1000
    assert drive_files_containing(s3_store, marker) == []
    # The test can fail: a plaintext object does put the marker on the drives.
    s3.delete_bucket_encryption(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="plain", Body=marker * 1000)
    assert drive_files_containing(s3_store, marker)
