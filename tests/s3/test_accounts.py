"""Accounts, canned ACLs, bucket policies and public access blocks through boto3 (and unsigned HTTP) against a real server.

Keys are made in the store's key file with their account (what ``objfs key
create`` does); the running server finds a new key on its first request.
"""

from __future__ import annotations

import json
import uuid

import pytest
from botocore.exceptions import ClientError
from s3helpers import error_code, http

from objfs.store import canonical_id


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return code_of(exc.value)


@pytest.fixture
def tenants(client_of):
    tag = uuid.uuid4().hex[:6]
    a, b = client_of(f"hospital-a-{tag}"), client_of(f"hospital-b-{tag}")
    bucket = f"acct-{tag}"
    a.create_bucket(Bucket=bucket)
    a.put_object(Bucket=bucket, Key="study1/ct.dcm", Body=b"ct")
    a.put_object(Bucket=bucket, Key="study2/mr.dcm", Body=b"mr")
    return a, b, bucket, tag


def denied(call) -> None:
    with pytest.raises(ClientError) as exc:
        call()
    assert code(exc) == "AccessDenied", exc.value


def test_two_accounts_are_separated(tenants, s3):
    a, b, bucket, tag = tenants
    listed = a.list_buckets()
    assert listed["Owner"] == {"ID": canonical_id(f"hospital-a-{tag}"), "DisplayName": f"hospital-a-{tag}"}
    assert [x["Name"] for x in listed["Buckets"]] == [bucket]
    other = b.list_buckets()
    assert other["Owner"]["DisplayName"] == f"hospital-b-{tag}" and other["Owner"]["ID"] != listed["Owner"]["ID"]
    assert bucket not in [x["Name"] for x in other["Buckets"]]
    # Keys of the store's first (default) account do not see the tenant's bucket either.
    assert bucket not in [x["Name"] for x in s3.list_buckets()["Buckets"]]
    denied(lambda: b.get_object(Bucket=bucket, Key="study1/ct.dcm"))
    denied(lambda: b.put_object(Bucket=bucket, Key="study1/evil", Body=b"x"))
    denied(lambda: b.delete_object(Bucket=bucket, Key="study1/ct.dcm"))
    denied(lambda: b.list_objects_v2(Bucket=bucket))
    denied(lambda: b.put_bucket_policy(Bucket=bucket, Policy="{}"))
    owners = {o["Key"]: o["Owner"]["DisplayName"] for o in a.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"]}
    assert owners == {"study1/ct.dcm": f"hospital-a-{tag}", "study2/mr.dcm": f"hospital-a-{tag}"}


def test_policy_grants_one_prefix_read_only_to_a_viewer(tenants, client_of):
    a, _b, bucket, tag = tenants
    viewer_account = f"viewer-{tag}"
    viewer = client_of(viewer_account)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadStudy1",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{viewer_account}:root"]},
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/study1/*"],
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": viewer_account},
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
                "Condition": {"StringLike": {"s3:prefix": ["study1/*"]}},
            },
        ],
    }
    denied(lambda: viewer.get_object(Bucket=bucket, Key="study1/ct.dcm"))
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    assert json.loads(a.get_bucket_policy(Bucket=bucket)["Policy"]) == policy
    assert a.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
    assert viewer.get_object(Bucket=bucket, Key="study1/ct.dcm")["Body"].read() == b"ct"
    assert viewer.head_object(Bucket=bucket, Key="study1/ct.dcm")["ContentLength"] == 2
    denied(lambda: viewer.get_object(Bucket=bucket, Key="study2/mr.dcm"))
    denied(lambda: viewer.put_object(Bucket=bucket, Key="study1/new", Body=b"x"))
    denied(lambda: viewer.delete_object(Bucket=bucket, Key="study1/ct.dcm"))
    assert [o["Key"] for o in viewer.list_objects_v2(Bucket=bucket, Prefix="study1/")["Contents"]] == ["study1/ct.dcm"]
    denied(lambda: viewer.list_objects_v2(Bucket=bucket))
    denied(lambda: viewer.list_objects_v2(Bucket=bucket, Prefix="study2/"))
    a.delete_bucket_policy(Bucket=bucket)
    with pytest.raises(ClientError) as exc:
        a.get_bucket_policy(Bucket=bucket)
    assert code(exc) == "NoSuchBucketPolicy"
    denied(lambda: viewer.get_object(Bucket=bucket, Key="study1/ct.dcm"))


def test_policy_conditions_on_transport_and_source_address(tenants, server):
    a, _b, bucket, _tag = tenants
    deny_plain_http = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    }
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny_plain_http))
    # An explicit Deny binds the owner too (this server speaks plain HTTP).
    denied(lambda: a.get_object(Bucket=bucket, Key="study1/ct.dcm"))
    url = f"{server.url}/{bucket}/study1/ct.dcm"
    for network, expected in (("127.0.0.0/8", 200), ("10.0.0.0/8", 403)):
        public_from = {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/study1/*",
                    "Condition": {"IpAddress": {"aws:SourceIp": [network]}},
                }
            ]
        }
        a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public_from))
        assert a.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is False
        assert http("GET", url).status == expected
    assert http("GET", f"{server.url}/{bucket}/study2/mr.dcm").status == 403


def test_malformed_policies_are_refused(tenants):
    a, _b, bucket, _tag = tenants
    for document in (
        "not json",
        json.dumps(
            {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::other/*"}]}
        ),
        json.dumps(
            {
                "Statement": [
                    {"Effect": "Maybe", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
                ]
            }
        ),
        json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{bucket}/*",
                        "Condition": {"DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"}},
                    }
                ]
            }
        ),
    ):
        with pytest.raises(ClientError) as exc:
            a.put_bucket_policy(Bucket=bucket, Policy=document)
        assert code(exc) == "MalformedPolicy", document


def test_canned_acls_and_anonymous_reads(tenants, client_of, server):
    a, b, bucket, tag = tenants
    url = f"{server.url}/{bucket}"
    assert http("GET", f"{url}/study1/ct.dcm").status == 403
    a.put_object(Bucket=bucket, Key="public/leaflet.pdf", Body=b"leaflet", ACL="public-read")
    reply = http("GET", f"{url}/public/leaflet.pdf")
    assert (reply.status, reply.content) == (200, b"leaflet")
    assert http("PUT", f"{url}/public/leaflet.pdf", b"defaced").status == 403
    assert http("DELETE", f"{url}/public/leaflet.pdf").status == 403
    assert http("GET", url).status == 403  # the bucket itself is not listable
    a.put_bucket_acl(Bucket=bucket, ACL="public-read")
    assert b"<Key>public/leaflet.pdf</Key>" in http("GET", url).content
    grants = a.get_bucket_acl(Bucket=bucket)["Grants"]
    assert {
        "Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
        "Permission": "READ",
    } in grants
    a.put_bucket_acl(Bucket=bucket, ACL="private")
    assert http("GET", url).status == 403
    # authenticated-read: any key of any account, never anonymous.
    a.put_object_acl(Bucket=bucket, Key="study2/mr.dcm", ACL="authenticated-read")
    assert b.get_object(Bucket=bucket, Key="study2/mr.dcm")["Body"].read() == b"mr"
    assert http("GET", f"{url}/study2/mr.dcm").status == 403
    acl = a.get_object_acl(Bucket=bucket, Key="study2/mr.dcm")
    assert acl["Owner"]["DisplayName"] == f"hospital-a-{tag}"
    a.put_object_acl(Bucket=bucket, Key="study2/mr.dcm", ACL="private")
    denied(lambda: b.get_object(Bucket=bucket, Key="study2/mr.dcm"))
    with pytest.raises(ClientError) as exc:
        a.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read-write")
    assert code(exc) == "InvalidArgument"


def test_public_access_block(tenants, server):
    a, _b, bucket, _tag = tenants
    a.put_object(Bucket=bucket, Key="public/leaflet.pdf", Body=b"leaflet", ACL="public-read")
    with pytest.raises(ClientError) as exc:
        a.get_public_access_block(Bucket=bucket)
    assert code(exc) == "NoSuchPublicAccessBlockConfiguration"
    flags = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}
    a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=flags)
    assert a.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"] == flags
    assert http("GET", f"{server.url}/{bucket}/public/leaflet.pdf").status == 403  # IgnorePublicAcls
    denied(lambda: a.put_object(Bucket=bucket, Key="public/new", Body=b"x", ACL="public-read"))
    public = {
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]
    }
    denied(lambda: a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public)))
    a.delete_public_access_block(Bucket=bucket)
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(public))
    assert a.get_bucket_policy_status(Bucket=bucket)["PolicyStatus"]["IsPublic"] is True
    reply = http("GET", f"{server.url}/{bucket}/study2/mr.dcm")
    assert (reply.status, reply.content) == (200, b"mr")
    assert error_code(http("GET", f"{server.url}/{bucket}").content) == "AccessDenied"


def test_acl_of_multipart_uploads_and_copies(tenants, server):
    a, b, bucket, tag = tenants
    upload_id = a.create_multipart_upload(Bucket=bucket, Key="public/mp", ACL="public-read")["UploadId"]
    part = a.upload_part(Bucket=bucket, Key="public/mp", UploadId=upload_id, PartNumber=1, Body=b"multi")
    a.complete_multipart_upload(
        Bucket=bucket, Key="public/mp", UploadId=upload_id, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    )
    assert http("GET", f"{server.url}/{bucket}/public/mp").content == b"multi"
    a.copy_object(Bucket=bucket, Key="public/copy", CopySource={"Bucket": bucket, "Key": "study1/ct.dcm"}, ACL="public-read")
    assert http("GET", f"{server.url}/{bucket}/public/copy").content == b"ct"
    owners = {o["Key"]: o["Owner"]["DisplayName"] for o in a.list_objects(Bucket=bucket)["Contents"]}
    assert owners["public/mp"] == owners["public/copy"] == f"hospital-a-{tag}"
    # Another account cannot take the name.
    with pytest.raises(ClientError) as exc:
        b.create_bucket(Bucket=bucket)
    assert code(exc) == "BucketAlreadyExists"
    with pytest.raises(ClientError) as exc:
        a.create_bucket(Bucket=bucket)
    assert code(exc) == "BucketAlreadyOwnedByYou"
