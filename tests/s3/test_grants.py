"""Explicit ACL grants (x-amz-grant-* headers, AccessControlPolicy bodies) through boto3 against a real server.

Keys are made in the store's key file with their account (what ``objfs key
create --account`` does); the running server finds a new key on its first request.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from s3helpers import create_key, env, error_code, http, make_client, signed_headers, start_server

from objfs.store import canonical_id

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def denied(call) -> None:
    with pytest.raises(ClientError) as exc:
        call()
    assert code(exc) == "AccessDenied", exc.value


def unsigned_client(url: str):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def tenants(client_of):
    tag = uuid.uuid4().hex[:6]
    owner, other = f"owner-{tag}", f"other-{tag}"
    a, b = client_of(owner), client_of(other)
    bucket = f"grants-{tag}"
    a.create_bucket(Bucket=bucket)
    a.put_object(Bucket=bucket, Key="study/ct.dcm", Body=b"ct")
    return a, b, bucket, owner, other


def test_object_read_grant_to_another_account(tenants):
    a, b, bucket, owner, other = tenants
    denied(lambda: b.get_object(Bucket=bucket, Key="study/ct.dcm"))
    a.put_object_acl(Bucket=bucket, Key="study/ct.dcm", GrantRead=f'id="{canonical_id(other)}"')
    assert b.get_object(Bucket=bucket, Key="study/ct.dcm")["Body"].read() == b"ct"
    assert b.head_object(Bucket=bucket, Key="study/ct.dcm")["ContentLength"] == 2
    # READ is not WRITE, nor READ_ACP, nor listing the bucket.
    denied(lambda: b.put_object(Bucket=bucket, Key="study/ct.dcm", Body=b"overwritten"))
    denied(lambda: b.delete_object(Bucket=bucket, Key="study/ct.dcm"))
    denied(lambda: b.get_object_acl(Bucket=bucket, Key="study/ct.dcm"))
    denied(lambda: b.put_object_acl(Bucket=bucket, Key="study/ct.dcm", ACL="public-read"))
    denied(lambda: b.list_objects_v2(Bucket=bucket))
    assert a.get_object(Bucket=bucket, Key="study/ct.dcm")["Body"].read() == b"ct"
    acl = a.get_object_acl(Bucket=bucket, Key="study/ct.dcm")
    assert acl["Owner"] == {"ID": canonical_id(owner), "DisplayName": owner}
    assert acl["Grants"] == [
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(other), "DisplayName": other}, "Permission": "READ"}
    ]
    # READ_ACP and WRITE_ACP by header: the grantee reads and then changes the ACL.
    a.put_object_acl(
        Bucket=bucket,
        Key="study/ct.dcm",
        GrantReadACP=f'id="{canonical_id(other)}"',
        GrantWriteACP=f'id="{canonical_id(other)}"',
    )
    denied(lambda: b.get_object(Bucket=bucket, Key="study/ct.dcm"))  # the new ACL replaced READ
    assert len(b.get_object_acl(Bucket=bucket, Key="study/ct.dcm")["Grants"]) == 2
    b.put_object_acl(Bucket=bucket, Key="study/ct.dcm", GrantFullControl=f'id="{canonical_id(other)}"')
    assert b.get_object(Bucket=bucket, Key="study/ct.dcm")["Body"].read() == b"ct"
    # The owner keeps full control whatever the ACL lists.
    a.put_object_acl(Bucket=bucket, Key="study/ct.dcm", ACL="private")
    denied(lambda: b.get_object(Bucket=bucket, Key="study/ct.dcm"))


def test_bucket_write_grant_lets_another_account_put(tenants):
    a, b, bucket, owner, other = tenants
    denied(lambda: b.put_object(Bucket=bucket, Key="from-b/report.pdf", Body=b"report"))
    a.put_bucket_acl(Bucket=bucket, GrantWrite=f'id="{canonical_id(other)}"')
    b.put_object(Bucket=bucket, Key="from-b/report.pdf", Body=b"report")
    # b owns what it wrote; the bucket's owner reads it too.
    assert b.get_object(Bucket=bucket, Key="from-b/report.pdf")["Body"].read() == b"report"
    assert a.get_object(Bucket=bucket, Key="from-b/report.pdf")["Body"].read() == b"report"
    upload = b.create_multipart_upload(Bucket=bucket, Key="from-b/mp", GrantRead=f'id="{canonical_id(owner)}"')
    part = b.upload_part(Bucket=bucket, Key="from-b/mp", UploadId=upload["UploadId"], PartNumber=1, Body=b"multi")
    b.complete_multipart_upload(
        Bucket=bucket,
        Key="from-b/mp",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert b.get_object_acl(Bucket=bucket, Key="from-b/mp")["Grants"][0]["Permission"] == "READ"
    # WRITE is not READ: b may not list, nor read a's objects, nor change the bucket's ACL.
    denied(lambda: b.list_objects_v2(Bucket=bucket))
    denied(lambda: b.get_object(Bucket=bucket, Key="study/ct.dcm"))
    denied(lambda: b.get_bucket_acl(Bucket=bucket))
    denied(lambda: b.put_bucket_acl(Bucket=bucket, ACL="public-read"))
    grants = a.get_bucket_acl(Bucket=bucket)["Grants"]
    assert grants == [
        {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(other), "DisplayName": other}, "Permission": "WRITE"}
    ]
    # A bucket policy Deny still wins over the grant.
    deny = {
        "Statement": [
            {"Effect": "Deny", "Principal": {"AWS": other}, "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
        ]
    }
    a.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    denied(lambda: b.put_object(Bucket=bucket, Key="from-b/second", Body=b"x"))
    a.delete_bucket_policy(Bucket=bucket)
    a.put_bucket_acl(Bucket=bucket, GrantRead=f'id="{canonical_id(other)}"')
    assert "study/ct.dcm" in [o["Key"] for o in b.list_objects_v2(Bucket=bucket)["Contents"]]
    denied(lambda: b.put_object(Bucket=bucket, Key="from-b/third", Body=b"x"))


def test_all_users_read_and_the_public_access_block(tenants, server, client_of):
    a, _b, bucket, _owner, _other = tenants
    anonymous = unsigned_client(server.url)
    denied(lambda: anonymous.get_object(Bucket=bucket, Key="study/ct.dcm"))
    a.put_object(Bucket=bucket, Key="public/leaflet.pdf", Body=b"leaflet", GrantRead=f'uri="{ALL_USERS}"')
    assert anonymous.get_object(Bucket=bucket, Key="public/leaflet.pdf")["Body"].read() == b"leaflet"
    denied(lambda: anonymous.put_object(Bucket=bucket, Key="public/leaflet.pdf", Body=b"defaced"))
    denied(lambda: anonymous.list_objects_v2(Bucket=bucket))
    a.copy_object(
        Bucket=bucket, Key="signed/copy", CopySource={"Bucket": bucket, "Key": "study/ct.dcm"}, GrantRead=f'uri="{AUTHENTICATED}"'
    )
    stranger = client_of(f"stranger-{uuid.uuid4().hex[:6]}")
    assert stranger.get_object(Bucket=bucket, Key="signed/copy")["Body"].read() == b"ct"
    denied(lambda: anonymous.get_object(Bucket=bucket, Key="signed/copy"))
    flags = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False, "RestrictPublicBuckets": False}
    a.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=flags)
    denied(lambda: anonymous.get_object(Bucket=bucket, Key="public/leaflet.pdf"))  # IgnorePublicAcls
    denied(lambda: stranger.get_object(Bucket=bucket, Key="signed/copy"))
    denied(lambda: a.put_object(Bucket=bucket, Key="public/new", Body=b"x", GrantRead=f'uri="{ALL_USERS}"'))  # BlockPublicAcls
    denied(lambda: a.put_bucket_acl(Bucket=bucket, GrantRead=f'uri="{ALL_USERS}"'))
    a.delete_public_access_block(Bucket=bucket)
    assert anonymous.get_object(Bucket=bucket, Key="public/leaflet.pdf")["Body"].read() == b"leaflet"


def test_access_control_policy_round_trip(tenants):
    a, b, bucket, owner, other = tenants
    policy = {
        "Owner": {"ID": canonical_id(owner)},
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(owner)}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(other)}, "Permission": "READ"},
            {"Grantee": {"Type": "CanonicalUser", "ID": canonical_id(other)}, "Permission": "READ_ACP"},
            {"Grantee": {"Type": "Group", "URI": AUTHENTICATED}, "Permission": "READ"},
        ],
    }
    a.put_object_acl(Bucket=bucket, Key="study/ct.dcm", AccessControlPolicy=policy)
    got = a.get_object_acl(Bucket=bucket, Key="study/ct.dcm")
    assert got["Owner"] == {"ID": canonical_id(owner), "DisplayName": owner}
    names = {canonical_id(owner): owner, canonical_id(other): other}
    expected = [
        {
            "Grantee": dict(g["Grantee"], DisplayName=names[g["Grantee"]["ID"]]) if "ID" in g["Grantee"] else g["Grantee"],
            "Permission": g["Permission"],
        }
        for g in policy["Grants"]
    ]
    assert got["Grants"] == expected
    assert b.get_object_acl(Bucket=bucket, Key="study/ct.dcm")["Grants"] == expected  # READ_ACP
    assert b.get_object(Bucket=bucket, Key="study/ct.dcm")["Body"].read() == b"ct"
    a.put_bucket_acl(Bucket=bucket, AccessControlPolicy={"Owner": {"ID": canonical_id(owner)}, "Grants": policy["Grants"][1:3]})
    assert a.get_bucket_acl(Bucket=bucket)["Grants"] == expected[1:3]
    assert [o["Key"] for o in b.list_objects_v2(Bucket=bucket)["Contents"]] == ["study/ct.dcm"]


def test_malformed_and_unusable_acls_are_refused(s3, bucket, server, admin_key):
    s3.put_object(Bucket=bucket, Key="study/ct.dcm", Body=b"ct")
    url = f"{server.url}/{bucket}/study/ct.dcm?acl"
    for body in (
        b"<AccessControlPolicy><AccessControlList><Grant>",
        b"<NotAnAcl/>",
        b"<AccessControlPolicy><AccessControlList><Grant><Grantee><ID>x</ID></Grantee><Permission>EVERYTHING</Permission>"
        b"</Grant></AccessControlList></AccessControlPolicy>",
        b"<AccessControlPolicy><AccessControlList><Grant><Permission>READ</Permission></Grant></AccessControlList>"
        b"</AccessControlPolicy>",
    ):
        reply = http("PUT", url, body, signed_headers("PUT", url, admin_key, body))
        assert (reply.status, error_code(reply.content)) == (400, "MalformedACLError"), body
    for grant, expected in (
        ('id="not-a-canonical-id"', "InvalidArgument"),
        ('uri="http://acs.amazonaws.com/groups/s3/LogDelivery"', "InvalidArgument"),
        ('emailAddress="doctor@example.org"', "UnresolvableGrantByEmailAddress"),
    ):
        with pytest.raises(ClientError) as exc:
            s3.put_object_acl(Bucket=bucket, Key="study/ct.dcm", GrantRead=grant)
        assert code(exc) == expected, grant
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", ACL="public-read", GrantRead=f'id="{canonical_id("objfs")}"')
    assert code(exc) == "InvalidRequest"
    # Nothing refused changed the ACL.
    assert [g["Permission"] for g in s3.get_object_acl(Bucket=bucket, Key="study/ct.dcm")["Grants"]] == ["FULL_CONTROL"]


def objfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "objfs.cli", *args], capture_output=True, check=True, env=env(), timeout=120)


def test_rebuild_index_keeps_the_grants(store_path: Path) -> None:
    owner, other = (
        create_key(store_path, "--name", "owner", "--account", "owner"),
        create_key(store_path, "--name", "other", "--account", "other"),
    )
    server = start_server(store_path)
    try:
        a, b = make_client(server.url, owner), make_client(server.url, other)
        a.create_bucket(Bucket="pacs", GrantRead=f'id="{canonical_id("other")}"')
        a.put_object(Bucket="pacs", Key="put.dcm", Body=b"put", GrantRead=f'id="{canonical_id("other")}"')
        a.put_object(Bucket="pacs", Key="changed.dcm", Body=b"changed")
        a.put_object_acl(Bucket="pacs", Key="changed.dcm", GrantFullControl=f'id="{canonical_id("other")}"')
        before = {k: a.get_object_acl(Bucket="pacs", Key=k)["Grants"] for k in ("put.dcm", "changed.dcm")}
        bucket_before = a.get_bucket_acl(Bucket="pacs")["Grants"]
    finally:
        server.stop()
    objfs("rebuild-index", str(store_path), "--force")
    server = start_server(store_path)
    try:
        a, b = make_client(server.url, owner), make_client(server.url, other)
        assert {k: a.get_object_acl(Bucket="pacs", Key=k)["Grants"] for k in before} == before
        assert a.get_bucket_acl(Bucket="pacs")["Grants"] == bucket_before
        assert b.get_object(Bucket="pacs", Key="put.dcm")["Body"].read() == b"put"
        assert b.get_object(Bucket="pacs", Key="changed.dcm")["Body"].read() == b"changed"
        assert sorted(o["Key"] for o in b.list_objects_v2(Bucket="pacs")["Contents"]) == ["changed.dcm", "put.dcm"]
    finally:
        server.stop()
