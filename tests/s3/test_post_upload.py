"""Browser POST uploads (HTML form with a SigV4-signed policy), built by boto3's generate_presigned_post, against a real server."""

from __future__ import annotations

import base64
import json

import pytest
import urllib3
from s3helpers import create_key, error_code, make_client


def post(url: str, fields: dict[str, str], body: bytes, filename: str = "scan.dcm") -> urllib3.BaseHTTPResponse:
    form = list(fields.items()) + [("file", (filename, body, "application/octet-stream"))]
    return urllib3.PoolManager(retries=False, timeout=30).request("POST", url, fields=form, redirect=False)


def test_post_upload_with_a_signed_policy(s3, bucket):
    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="uploads/${filename}",
        Fields={"success_action_status": "201", "Content-Type": "application/dicom", "x-amz-meta-study": "s1"},
        Conditions=[
            ["starts-with", "$key", "uploads/"],
            {"success_action_status": "201"},
            {"Content-Type": "application/dicom"},
            {"x-amz-meta-study": "s1"},
            ["content-length-range", 1, 1000],
        ],
        ExpiresIn=300,
    )
    reply = post(form["url"], form["fields"], b"DICM-body")
    assert reply.status == 201, reply.data
    assert b"<Key>uploads/scan.dcm</Key>" in reply.data and b"<Bucket>" + bucket.encode() in reply.data
    head = s3.head_object(Bucket=bucket, Key="uploads/scan.dcm")
    assert (head["ContentType"], head["Metadata"], head["ContentLength"]) == ("application/dicom", {"study": "s1"}, 9)
    assert s3.get_object(Bucket=bucket, Key="uploads/scan.dcm")["Body"].read() == b"DICM-body"


def test_post_upload_status_and_redirect(s3, bucket):
    form = s3.generate_presigned_post(Bucket=bucket, Key="k1", ExpiresIn=300)
    assert post(form["url"], form["fields"], b"x").status == 204
    target = "https://viewer.example.org/done?from=archive"
    form = s3.generate_presigned_post(
        Bucket=bucket,
        Key="k2",
        Fields={"success_action_redirect": target},
        Conditions=[{"success_action_redirect": target}],
        ExpiresIn=300,
    )
    reply = post(form["url"], form["fields"], b"y")
    assert reply.status == 303
    location = reply.headers["location"]
    assert location.startswith(target + "&") and f"bucket={bucket}" in location and "key=k2" in location
    assert s3.get_object(Bucket=bucket, Key="k2")["Body"].read() == b"y"


def test_post_policy_is_enforced(s3, bucket):
    form = s3.generate_presigned_post(Bucket=bucket, Key="only/this", Conditions=[["content-length-range", 1, 4]], ExpiresIn=300)
    url, fields = form["url"], form["fields"]
    too_big = post(url, fields, b"12345")
    assert (too_big.status, error_code(too_big.data)) == (400, "EntityTooLarge")
    other_key = post(url, dict(fields, key="elsewhere"), b"1")
    assert (other_key.status, error_code(other_key.data)) == (403, "AccessDenied")
    extra = post(url, dict(fields, **{"x-amz-meta-sneaky": "1"}), b"1")
    assert (extra.status, error_code(extra.data)) == (403, "AccessDenied")
    forged = post(url, dict(fields, **{"x-amz-signature": "0" * 64}), b"1")
    assert (forged.status, error_code(forged.data)) == (403, "SignatureDoesNotMatch")
    # A policy changed after signing no longer matches its signature.
    policy = json.loads(base64.b64decode(fields["policy"]))
    policy["conditions"] = [c for c in policy["conditions"] if not isinstance(c, list)]
    tampered = dict(fields, policy=base64.b64encode(json.dumps(policy).encode()).decode())
    assert post(url, tampered, b"123456").status == 403
    anonymous = post(url, {"key": "only/this"}, b"1")
    assert (anonymous.status, error_code(anonymous.data)) == (403, "AccessDenied")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert post(url, fields, b"1234").status == 204


def test_expired_policy_is_refused(s3, bucket):
    form = s3.generate_presigned_post(Bucket=bucket, Key="late", ExpiresIn=-10)
    reply = post(form["url"], form["fields"], b"x")
    assert (reply.status, error_code(reply.data)) == (403, "AccessDenied")


def test_post_upload_needs_the_keys_right_to_write(server, s3_store, bucket):
    viewer = make_client(server.url, create_key(s3_store, "--name", "post-viewer", "--read-only"))
    form = viewer.generate_presigned_post(Bucket=bucket, Key="k", ExpiresIn=300)
    reply = post(form["url"], form["fields"], b"x")
    assert (reply.status, error_code(reply.data)) == (403, "AccessDenied")


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data"])
def test_malformed_post_is_refused(server, bucket, content_type):
    reply = urllib3.PoolManager(retries=False).request(
        "POST", f"{server.url}/{bucket}", body=b"not a form", headers={"Content-Type": content_type}
    )
    assert (reply.status, error_code(reply.data)) == (400, "MalformedPOSTRequest")
