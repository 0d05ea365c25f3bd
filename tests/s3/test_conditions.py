"""Conditional writes and deletes as S3 evaluates them, through boto3 against a real server.

If-Match / If-None-Match on PutObject, DeleteObject, DeleteObjects (a per-object
``<ETag>``) and CompleteMultipartUpload: a condition on a missing key is a 404,
a condition that does not hold a 412, and nothing changes either way.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

MiB = 1 << 20


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def body_of(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_put_if_match_star_matches_any_existing_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2", IfMatch="*")
    assert body_of(s3, bucket, "k") == b"v2"


def test_put_if_match_on_missing_key_is_no_such_key(s3, bucket):
    for condition in ("*", '"0123456789abcdef0123456789abcdef"'):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch=condition)
        assert (status(exc), code(exc)) == (404, "NoSuchKey")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_delete_object_if_match(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert (status(exc), code(exc)) == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "k") == b"v1"
    s3.delete_object(Bucket=bucket, Key="k", IfMatch=put["ETag"])
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=bucket, Key="k")
    assert status(exc) == 404
    # Gone now: a conditional delete of nothing is a 404, an unconditional one still a 204.
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
    assert (status(exc), code(exc)) == (404, "NoSuchKey")
    assert s3.delete_object(Bucket=bucket, Key="k")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_delete_object_if_match_star_in_a_versioned_bucket(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"v1")
    s3.put_object(Bucket=bucket, Key="k", Body=b"v2")
    # Against a named version, the condition is that version's ETag.
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", VersionId=v1["VersionId"], IfMatch='"' + "0" * 32 + '"')
    assert status(exc) == 412
    s3.delete_object(Bucket=bucket, Key="k", VersionId=v1["VersionId"], IfMatch=v1["ETag"])
    marker = s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
    assert marker["DeleteMarker"] is True
    # Behind a delete marker there is no live object to match.
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key="k", IfMatch="*")
    assert status(exc) == 404


def test_delete_objects_with_etags(s3, bucket):
    a = s3.put_object(Bucket=bucket, Key="a", Body=b"a")
    s3.put_object(Bucket=bucket, Key="b", Body=b"b")
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={
            "Objects": [
                {"Key": "a", "ETag": a["ETag"]},
                {"Key": "b", "ETag": '"' + "0" * 32 + '"'},
                {"Key": "c", "ETag": a["ETag"]},
                {"Key": "d"},
            ]
        },
    )
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "d"]
    errors = {e["Key"]: e["Code"] for e in result["Errors"]}
    assert errors == {"b": "PreconditionFailed", "c": "NoSuchKey"}
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["b"]


def _upload(s3, bucket: str, key: str, data: bytes) -> tuple[str, list[dict]]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=data)
    return upload_id, [{"PartNumber": 1, "ETag": part["ETag"]}]


def test_complete_multipart_if_none_match(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    upload_id, parts = _upload(s3, bucket, "k", b"second")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
        )
    assert (status(exc), code(exc)) == (412, "PreconditionFailed")
    assert body_of(s3, bucket, "k") == b"first"
    # The refused completion left the upload whole: it can still complete.
    s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert body_of(s3, bucket, "k") == b"second"
    upload_id, parts = _upload(s3, bucket, "new", b"x")
    s3.complete_multipart_upload(Bucket=bucket, Key="new", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert body_of(s3, bucket, "new") == b"x"


def test_complete_multipart_if_match(s3, bucket):
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")
    upload_id, parts = _upload(s3, bucket, "k", b"second")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfMatch='"' + "0" * 32 + '"'
        )
    assert status(exc) == 412
    s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfMatch=first["ETag"]
    )
    assert body_of(s3, bucket, "k") == b"second"
    upload_id, parts = _upload(s3, bucket, "absent", b"x")
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="absent", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfMatch="*"
        )
    assert (status(exc), code(exc)) == (404, "NoSuchKey")


def test_repeated_complete_returns_the_same_success(s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_id, parts = _upload(s3, bucket, "k", b"body")
    first = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    # A client that lost the answer retries, even with If-None-Match: * (the object it made exists now).
    again = s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
    )
    assert (again["ETag"], again["VersionId"]) == (first["ETag"], first["VersionId"])
    # Still the same answer once the key moved on; and only one version was made.
    s3.put_object(Bucket=bucket, Key="k", Body=b"later")
    third = s3.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert (third["ETag"], third["VersionId"]) == (first["ETag"], first["VersionId"])
    assert len(s3.list_object_versions(Bucket=bucket)["Versions"]) == 2
    assert body_of(s3, bucket, "k") == b"later"
    # The id stays bound to its key: another key does not reach it.
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(Bucket=bucket, Key="other", UploadId=upload_id, MultipartUpload={"Parts": parts})
    assert code(exc) == "NoSuchUpload"
    # Other operations on the id see it gone, as S3 does.
    with pytest.raises(ClientError) as exc:
        s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id)
    assert code(exc) == "NoSuchUpload"
