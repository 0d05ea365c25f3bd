"""WORM retention, legal holds, versioning and the audit trail through the S3 front (boto3, real server).

The WORM rules are the engine's (tests/store/test_worm.py moves its clock);
these tests show that S3 clients meet the same rules with AWS's requests,
headers and errors, and that their reads and changes land in the audit log
under their key's name.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3helpers import Key, create_key, env, http, make_client, signed_headers

DAY = dt.timedelta(days=1)


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]


def status(exc: pytest.ExceptionInfo[ClientError]) -> int:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"]


def headers_of(exc: pytest.ExceptionInfo[ClientError]) -> dict[str, str]:
    return exc.value.response["ResponseMetadata"]["HTTPHeaders"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def objfs_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "objfs.cli", *args], capture_output=True, env=env(), timeout=60, check=check)


@pytest.fixture(scope="session")
def lock_admin_key(s3_store: Path, server) -> Key:
    """A writer key that may also set retention and legal holds (not bypass GOVERNANCE)."""
    return create_key(s3_store, "--name", "lock-admin", "--retention", "--legal-hold")


@pytest.fixture(scope="session")
def s3(server, lock_admin_key: Key):
    """This module's default client: lock changes need the key's lock rights."""
    return make_client(server.url, lock_admin_key)


@pytest.fixture(scope="session")
def officer_key(s3_store: Path, server) -> Key:
    """An administrator's key holding the bypass-governance permission (and the other lock rights)."""
    return create_key(s3_store, "--name", "records-officer", "--bypass-governance", "--retention", "--legal-hold")


@pytest.fixture(scope="session")
def officer(server, officer_key: Key):
    return make_client(server.url, officer_key)


@pytest.fixture(scope="session")
def reader(server, s3_store: Path):
    return make_client(server.url, create_key(s3_store, "--name", "viewer", "--read-only"))


@pytest.fixture
def locked(s3) -> str:
    """A bucket created with object lock (so versioned)."""
    name = new_name("worm")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def versioned(s3, bucket: str) -> str:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def put_locked(s3, bucket: str, key: str, body: bytes, mode: str, until: dt.datetime) -> str:
    return s3.put_object(Bucket=bucket, Key=key, Body=body, ObjectLockMode=mode, ObjectLockRetainUntilDate=until)["VersionId"]


# -- versioning -------------------------------------------------------------------


def test_bucket_versioning_states(s3, bucket: str, locked: str) -> None:
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    for state in ("Enabled", "Suspended", "Enabled"):
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": state})
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == state
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "On"})
    assert code(exc) == "MalformedXML"
    assert s3.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"
    with pytest.raises(ClientError) as exc:
        s3.put_bucket_versioning(Bucket=locked, VersioningConfiguration={"Status": "Suspended"})
    assert code(exc) == "InvalidBucketState" and status(exc) == 409
    assert s3.get_bucket_versioning(Bucket=locked)["Status"] == "Enabled"


def test_versions_get_head_delete_and_delete_markers(s3, versioned: str) -> None:
    b = versioned
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"two")["VersionId"]
    assert v1 != v2 and "null" not in (v1, v2)
    got = s3.get_object(Bucket=b, Key="k")
    assert got["Body"].read() == b"two" and got["VersionId"] == v2
    old = s3.get_object(Bucket=b, Key="k", VersionId=v1)
    assert old["Body"].read() == b"one" and old["VersionId"] == v1
    assert s3.head_object(Bucket=b, Key="k", VersionId=v1)["ContentLength"] == 3

    deleted = s3.delete_object(Bucket=b, Key="k")
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True and marker not in (v1, v2)
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="k")
    assert code(exc) == "NoSuchKey" and headers_of(exc)["x-amz-delete-marker"] == "true"
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=b, Key="k")
    assert status(exc) == 404 and headers_of(exc)["x-amz-delete-marker"] == "true"
    for call in (s3.get_object, s3.head_object):
        with pytest.raises(ClientError) as exc:
            call(Bucket=b, Key="k", VersionId=marker)
        assert status(exc) == 405
        assert headers_of(exc)["x-amz-delete-marker"] == "true" and headers_of(exc)["x-amz-version-id"] == marker
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="k", VersionId=marker)
    assert code(exc) == "MethodNotAllowed"
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket=b, Key="k", VersionId="0" * 32)
    assert code(exc) == "NoSuchVersion"

    listing = s3.list_object_versions(Bucket=b)
    assert [(v["VersionId"], v["IsLatest"]) for v in listing["Versions"]] == [(v2, False), (v1, False)]
    assert [(m["VersionId"], m["IsLatest"]) for m in listing["DeleteMarkers"]] == [(marker, True)]
    assert s3.list_objects_v2(Bucket=b)["KeyCount"] == 0

    # Removing the marker brings v2 back; removing v2 makes v1 current.
    removed = s3.delete_object(Bucket=b, Key="k", VersionId=marker)
    assert removed["DeleteMarker"] is True and removed["VersionId"] == marker
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"two"
    assert s3.delete_object(Bucket=b, Key="k", VersionId=v2)["VersionId"] == v2
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"one"
    s3.delete_object(Bucket=b, Key="k", VersionId=v2)  # gone already: still a success, as in S3
    result = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "k", "VersionId": v1}, {"Key": "k"}]})
    deleted_entries = {(d["Key"], d.get("VersionId"), d.get("DeleteMarker", False)) for d in result["Deleted"]}
    assert ("k", v1, False) in deleted_entries and not result.get("Errors")


def test_list_object_versions_paging_prefix_delimiter_and_null(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a b+c", Body=b"before versioning")  # version "null"
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="a b+c", Body=b"second")
    for key in ("dir/1", "dir/2", "z"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    s3.delete_object(Bucket=bucket, Key="z")

    full = s3.list_object_versions(Bucket=bucket)  # botocore asks encoding-type=url and decodes
    entries = sorted(
        [(v["Key"], v["VersionId"], "V") for v in full["Versions"]]
        + [(m["Key"], m["VersionId"], "M") for m in full["DeleteMarkers"]]
    )
    assert [e[0] for e in entries] == ["a b+c", "a b+c", "dir/1", "dir/2", "z", "z"]
    nulls = [v for v in full["Versions"] if v["VersionId"] == "null"]
    assert len(nulls) == 1 and nulls[0]["Key"] == "a b+c" and nulls[0]["IsLatest"] is False

    # One entry per page, walking the markers, yields exactly the same entries.
    seen, kwargs = [], {}
    for _ in range(20):
        page = s3.list_object_versions(Bucket=bucket, MaxKeys=1, **kwargs)
        seen += [(v["Key"], v["VersionId"]) for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if not page["IsTruncated"]:
            break
        kwargs = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page.get("NextVersionIdMarker", "")}
    assert sorted(seen) == sorted((e[0], e[1]) for e in entries) and len(seen) == len(entries)

    # A delimiter rolls dir/ up; paging across the common prefix neither repeats nor loses it.
    pages, kwargs = [], {}
    for _ in range(10):
        page = s3.list_object_versions(Bucket=bucket, Delimiter="/", MaxKeys=2, **kwargs)
        pages.append(page)
        if not page["IsTruncated"]:
            break
        kwargs = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page.get("NextVersionIdMarker", "")}
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    keys = [v["Key"] for page in pages for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
    assert prefixes == ["dir/"] and sorted(keys) == ["a b+c", "a b+c", "z", "z"]
    only_dir = s3.list_object_versions(Bucket=bucket, Prefix="dir/")
    assert [v["Key"] for v in only_dir["Versions"]] == ["dir/1", "dir/2"] and "DeleteMarkers" not in only_dir

    with pytest.raises(ClientError) as exc:
        s3.list_object_versions(Bucket=bucket, VersionIdMarker="abc")
    assert code(exc) == "InvalidArgument"


def test_list_object_versions_interleaves_markers_in_order(server, admin_key: Key, s3, versioned: str) -> None:
    s3.put_object(Bucket=versioned, Key="k", Body=b"1")
    s3.delete_object(Bucket=versioned, Key="k")
    s3.put_object(Bucket=versioned, Key="k", Body=b"2")
    url = f"{server.url}/{versioned}?versions&encoding-type=url"
    reply = http("GET", url, headers=signed_headers("GET", url, admin_key))
    assert reply.status == 200
    order = re.findall(rb"<(Version|DeleteMarker)><Key>k</Key><VersionId>[^<]+</VersionId><IsLatest>(true|false)", reply.content)
    assert order == [(b"Version", b"true"), (b"DeleteMarker", b"false"), (b"Version", b"false")]
    assert b"<EncodingType>url</EncodingType>" in reply.content


def test_copy_object_from_a_version(s3, versioned: str) -> None:
    b = versioned
    v1 = s3.put_object(Bucket=b, Key="src", Body=b"first")["VersionId"]
    s3.put_object(Bucket=b, Key="src", Body=b"second")
    copied = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1 and copied["VersionId"] not in (v1, "null")
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"first"
    marker = s3.delete_object(Bucket=b, Key="src")["VersionId"]
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src", "VersionId": marker})
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src"})
    assert code(exc) == "NoSuchKey"


# -- object lock -----------------------------------------------------------------


def test_compliance_version_survives_every_key_and_every_request(s3, officer, locked: str) -> None:
    until = now() + DAY
    version = put_locked(s3, locked, "study/1.dcm", b"image", "COMPLIANCE", until)
    head = s3.head_object(Bucket=locked, Key="study/1.dcm", VersionId=version)
    assert head["ObjectLockMode"] == "COMPLIANCE" and abs(head["ObjectLockRetainUntilDate"] - until) < dt.timedelta(seconds=1)
    for client in (s3, officer):  # officer: bypass permission, and it asks for the bypass every time
        with pytest.raises(ClientError) as exc:
            client.delete_object(Bucket=locked, Key="study/1.dcm", VersionId=version, BypassGovernanceRetention=True)
        assert code(exc) == "AccessDenied" and status(exc) == 403
        result = client.delete_objects(
            Bucket=locked,
            Delete={"Objects": [{"Key": "study/1.dcm", "VersionId": version}]},
            BypassGovernanceRetention=True,
        )
        assert [e["Code"] for e in result["Errors"]] == ["AccessDenied"] and not result.get("Deleted")
        for mode, date in (("COMPLIANCE", until - DAY / 2), ("GOVERNANCE", until + DAY)):
            with pytest.raises(ClientError) as exc:
                client.put_object_retention(
                    Bucket=locked,
                    Key="study/1.dcm",
                    VersionId=version,
                    Retention={"Mode": mode, "RetainUntilDate": date},
                    BypassGovernanceRetention=True,
                )
            assert code(exc) == "AccessDenied"
        with pytest.raises(ClientError) as exc:
            client.put_object_retention(
                Bucket=locked, Key="study/1.dcm", VersionId=version, Retention={}, BypassGovernanceRetention=True
            )
        assert code(exc) == "AccessDenied"

    # Overwriting makes a new version and leaves the locked one as it was.
    newer = s3.put_object(Bucket=locked, Key="study/1.dcm", Body=b"corrected")["VersionId"]
    assert newer != version
    assert s3.get_object(Bucket=locked, Key="study/1.dcm")["Body"].read() == b"corrected"
    assert s3.get_object(Bucket=locked, Key="study/1.dcm", VersionId=version)["Body"].read() == b"image"
    # A delete marker hides it, but the locked version stays.
    s3.delete_object(Bucket=locked, Key="study/1.dcm")
    assert s3.get_object(Bucket=locked, Key="study/1.dcm", VersionId=version)["Body"].read() == b"image"

    # Extension is allowed, for any key holding the retention right.
    later = until + 30 * DAY
    s3.put_object_retention(
        Bucket=locked, Key="study/1.dcm", VersionId=version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later}
    )
    got = s3.get_object_retention(Bucket=locked, Key="study/1.dcm", VersionId=version)["Retention"]
    assert got["Mode"] == "COMPLIANCE" and abs(got["RetainUntilDate"] - later) < dt.timedelta(seconds=1)


def test_governance_bypass_needs_the_permission_and_the_header(s3, officer, locked: str) -> None:
    until = now() + DAY
    v1 = put_locked(s3, locked, "g", b"x", "GOVERNANCE", until)
    with pytest.raises(ClientError) as exc:  # header, but no permission
        s3.delete_object(Bucket=locked, Key="g", VersionId=v1, BypassGovernanceRetention=True)
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:  # permission, but no header
        officer.delete_object(Bucket=locked, Key="g", VersionId=v1)
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(
            Bucket=locked,
            Key="g",
            VersionId=v1,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now() + DAY / 4},
            BypassGovernanceRetention=True,
        )
    assert code(exc) == "AccessDenied"
    result = officer.delete_objects(Bucket=locked, Delete={"Objects": [{"Key": "g", "VersionId": v1}]})
    assert [e["Code"] for e in result["Errors"]] == ["AccessDenied"]

    # Both: shortening works, and so does deleting.
    officer.put_object_retention(
        Bucket=locked,
        Key="g",
        VersionId=v1,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now() + DAY / 4},
        BypassGovernanceRetention=True,
    )
    officer.delete_object(Bucket=locked, Key="g", VersionId=v1, BypassGovernanceRetention=True)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=locked, Key="g", VersionId=v1)
    assert status(exc) == 404
    v2 = put_locked(s3, locked, "g", b"y", "GOVERNANCE", until)
    result = officer.delete_objects(
        Bucket=locked, Delete={"Objects": [{"Key": "g", "VersionId": v2}]}, BypassGovernanceRetention=True
    )
    assert [d["VersionId"] for d in result["Deleted"]] == [v2] and not result.get("Errors")


def test_legal_hold_blocks_deletion_until_lifted(s3, officer, locked: str) -> None:
    version = s3.put_object(Bucket=locked, Key="h", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    assert s3.head_object(Bucket=locked, Key="h")["ObjectLockLegalHoldStatus"] == "ON"
    assert s3.get_object_legal_hold(Bucket=locked, Key="h")["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as exc:
        officer.delete_object(Bucket=locked, Key="h", VersionId=version, BypassGovernanceRetention=True)
    assert code(exc) == "AccessDenied"
    s3.put_object_legal_hold(Bucket=locked, Key="h", VersionId=version, LegalHold={"Status": "OFF"})
    assert s3.get_object_legal_hold(Bucket=locked, Key="h", VersionId=version)["LegalHold"]["Status"] == "OFF"
    assert "ObjectLockLegalHoldStatus" not in s3.head_object(Bucket=locked, Key="h")
    s3.delete_object(Bucket=locked, Key="h", VersionId=version)
    # Placed afterwards on a version that had none.
    v2 = s3.put_object(Bucket=locked, Key="h", Body=b"y")["VersionId"]
    s3.put_object_legal_hold(Bucket=locked, Key="h", LegalHold={"Status": "ON"})
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=locked, Key="h", VersionId=v2)
    assert code(exc) == "AccessDenied"
    s3.put_object_legal_hold(Bucket=locked, Key="h", LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=locked, Key="h", VersionId=v2)


def test_bucket_default_retention_applies_to_new_writes(s3, locked: str) -> None:
    assert s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}
    s3.put_object(Bucket=locked, Key="before", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.get_object_retention(Bucket=locked, Key="before")
    assert code(exc) == "NoSuchObjectLockConfiguration"
    config = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 2}}}
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=config)
    assert s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"] == config

    s3.put_object(Bucket=locked, Key="after", Body=b"x")
    head = s3.head_object(Bucket=locked, Key="after")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert abs(head["ObjectLockRetainUntilDate"] - (now() + 2 * DAY)) < dt.timedelta(seconds=30)
    get = s3.get_object(Bucket=locked, Key="after")
    assert get["ObjectLockMode"] == "GOVERNANCE" and get["ObjectLockRetainUntilDate"] == head["ObjectLockRetainUntilDate"]
    # Explicit headers win over the default; the older object is not touched.
    explicit = now() + 10 * DAY
    put_locked(s3, locked, "explicit", b"x", "COMPLIANCE", explicit)
    assert s3.head_object(Bucket=locked, Key="explicit")["ObjectLockMode"] == "COMPLIANCE"
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked, Key="before")

    years = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 7}}}
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration=years)
    assert s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"] == years
    s3.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
    assert "Rule" not in s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]


def test_multipart_and_copy_carry_lock_headers(s3, locked: str) -> None:
    until = now() + DAY
    upload = s3.create_multipart_upload(
        Bucket=locked, Key="mp", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until, ObjectLockLegalHoldStatus="ON"
    )
    part = s3.upload_part(Bucket=locked, Key="mp", UploadId=upload["UploadId"], PartNumber=1, Body=b"slide")
    done = s3.complete_multipart_upload(
        Bucket=locked, Key="mp", UploadId=upload["UploadId"], MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    )
    head = s3.head_object(Bucket=locked, Key="mp")
    assert head["VersionId"] == done["VersionId"]
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockLegalHoldStatus"] == "ON"

    copied = s3.copy_object(
        Bucket=locked,
        Key="copy",
        CopySource={"Bucket": locked, "Key": "mp"},
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
    )
    head = s3.head_object(Bucket=locked, Key="copy")
    assert head["VersionId"] == copied["VersionId"] and copied["CopySourceVersionId"] == done["VersionId"]
    # The copy has the lock it asked for; the source's legal hold is not copied.
    assert head["ObjectLockMode"] == "GOVERNANCE" and "ObjectLockLegalHoldStatus" not in head


def test_lock_requests_on_a_bucket_without_object_lock(s3, bucket: str) -> None:
    until = now() + DAY
    with pytest.raises(ClientError) as exc:
        s3.get_object_lock_configuration(Bucket=bucket)
    assert code(exc) == "ObjectLockConfigurationNotFoundError" and status(exc) == 404
    with pytest.raises(ClientError) as exc:
        s3.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
            },
        )
    assert code(exc) == "InvalidBucketState"
    for extra in ({"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": until}, {"ObjectLockLegalHoldStatus": "ON"}):
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="k", Body=b"x", **extra)
        assert code(exc) == "InvalidRequest" and "missing Object Lock Configuration" in exc.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as exc:
            s3.create_multipart_upload(Bucket=bucket, Key="k", **extra)
        assert code(exc) == "InvalidRequest"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=bucket, Key="k", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    assert code(exc) == "InvalidRequest"
    with pytest.raises(ClientError) as exc:
        s3.get_object_legal_hold(Bucket=bucket, Key="k")
    assert code(exc) == "InvalidRequest"


def test_bad_lock_headers(s3, locked: str) -> None:
    cases = [
        ({"ObjectLockMode": "FOREVER", "ObjectLockRetainUntilDate": now() + DAY}, "Unknown wormMode"),
        ({"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": now() - DAY}, "in the future"),
        ({"ObjectLockMode": "COMPLIANCE"}, "must both be supplied"),
        ({"ObjectLockLegalHoldStatus": "MAYBE"}, "Legal Hold"),
    ]
    for extra, message in cases:
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=locked, Key="k", Body=b"x", **extra)
        assert code(exc) == "InvalidArgument" and message in exc.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=locked, Key="k", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now() + DAY})
    assert code(exc) == "NoSuchKey"
    # A past date is refused by the engine, by its own clock (the sidecar reads no clock for it).
    s3.put_object(Bucket=locked, Key="past", Body=b"x")
    with pytest.raises(ClientError) as exc:
        s3.put_object_retention(Bucket=locked, Key="past", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now() - DAY})
    assert code(exc) == "InvalidArgument" and "in the future" in exc.value.response["Error"]["Message"]


def test_read_only_key_cannot_change_locks_or_versioning(s3, reader, locked: str) -> None:
    until = now() + DAY
    version = put_locked(s3, locked, "r", b"x", "GOVERNANCE", until)
    assert reader.get_object_retention(Bucket=locked, Key="r")["Retention"]["Mode"] == "GOVERNANCE"
    attempts = [
        lambda: reader.put_object_retention(
            Bucket=locked, Key="r", VersionId=version, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until + DAY}
        ),
        lambda: reader.put_object_legal_hold(Bucket=locked, Key="r", LegalHold={"Status": "ON"}),
        lambda: reader.put_bucket_versioning(Bucket=locked, VersioningConfiguration={"Status": "Enabled"}),
        lambda: reader.put_object_lock_configuration(Bucket=locked, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}),
        lambda: reader.delete_object(Bucket=locked, Key="r", VersionId=version),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as exc:
            attempt()
        assert code(exc) == "AccessDenied"
    assert s3.get_object_retention(Bucket=locked, Key="r")["Retention"]["Mode"] == "GOVERNANCE"
    assert s3.get_object_legal_hold(Bucket=locked, Key="r")["LegalHold"]["Status"] == "OFF"


def denied(store: Path, who: str) -> list[tuple[str, str]]:
    """(action, key) of the audit's ``denied`` lines naming the S3 key ``who``."""
    out = objfs_cli("audit", "show", str(store), "--who", who).stdout.splitlines()
    return [(e["action"], e.get("key")) for e in map(json.loads, out) if e["who"] == f"s3:{who}" and e["outcome"] == "denied"]


@pytest.fixture(scope="session")
def writer_name(s3_store: Path, server) -> str:
    return new_name("writer")


@pytest.fixture(scope="session")
def writer(server, s3_store: Path, writer_name: str):
    """A key that may write and delete, but holds no lock right."""
    return make_client(server.url, create_key(s3_store, "--name", writer_name))


def test_a_writer_cannot_lift_a_legal_hold_to_delete(s3, writer, writer_name: str, s3_store: Path, locked: str) -> None:
    version = s3.put_object(Bucket=locked, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    with pytest.raises(ClientError) as exc:
        writer.put_object_legal_hold(Bucket=locked, Key="held", VersionId=version, LegalHold={"Status": "OFF"})
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        writer.delete_object(Bucket=locked, Key="held", VersionId=version)
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:  # nor place one
        writer.put_object(Bucket=locked, Key="other", Body=b"y", ObjectLockLegalHoldStatus="ON")
    assert code(exc) == "AccessDenied"
    assert s3.get_object_legal_hold(Bucket=locked, Key="held", VersionId=version)["LegalHold"]["Status"] == "ON"
    assert [a for a, _ in denied(s3_store, writer_name)][-3:] == ["legal-hold", "delete", "write"]
    # With the legal-hold right (s3's key) it is lifted, and then the writer may delete.
    s3.put_object_legal_hold(Bucket=locked, Key="held", VersionId=version, LegalHold={"Status": "OFF"})
    writer.delete_object(Bucket=locked, Key="held", VersionId=version)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=locked, Key="other")
    assert status(exc) == 404


def test_retention_needs_the_retention_right(s3, writer, writer_name: str, s3_store: Path, locked: str) -> None:
    until = now() + DAY
    with pytest.raises(ClientError) as exc:
        writer.put_object(Bucket=locked, Key="r", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    assert code(exc) == "AccessDenied"
    with pytest.raises(ClientError) as exc:
        writer.create_multipart_upload(Bucket=locked, Key="m", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
    assert code(exc) == "AccessDenied"
    writer.put_object(Bucket=locked, Key="r", Body=b"x")
    with pytest.raises(ClientError) as exc:
        writer.put_object_retention(Bucket=locked, Key="r", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
    assert code(exc) == "AccessDenied"
    assert "ObjectLockMode" not in s3.head_object(Bucket=locked, Key="r")
    assert s3.list_multipart_uploads(Bucket=locked).get("Uploads", []) == []
    assert [a for a, _ in denied(s3_store, writer_name)][-3:] == ["write", "upload", "retention"]


def test_hardening_governance_to_compliance_needs_the_bypass(s3, officer, s3_store: Path, locked: str) -> None:
    until = now() + DAY
    version = put_locked(s3, locked, "harden", b"x", "GOVERNANCE", until)
    compliance = {"Mode": "COMPLIANCE", "RetainUntilDate": until + DAY}
    for client, bypass in ((s3, True), (officer, False)):  # the right without asking, or asking without the right
        with pytest.raises(ClientError) as exc:
            client.put_object_retention(
                Bucket=locked, Key="harden", VersionId=version, Retention=compliance, BypassGovernanceRetention=bypass
            )
        assert code(exc) == "AccessDenied"
    assert s3.get_object_retention(Bucket=locked, Key="harden", VersionId=version)["Retention"]["Mode"] == "GOVERNANCE"
    assert ("retention", "harden") in denied(s3_store, "lock-admin")
    # Extending GOVERNANCE needs only the retention right.
    s3.put_object_retention(
        Bucket=locked, Key="harden", VersionId=version, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until + DAY}
    )
    officer.put_object_retention(
        Bucket=locked, Key="harden", VersionId=version, Retention=compliance, BypassGovernanceRetention=True
    )
    assert s3.get_object_retention(Bucket=locked, Key="harden", VersionId=version)["Retention"]["Mode"] == "COMPLIANCE"


def test_deletion_is_allowed_once_retention_ends(s3, locked: str) -> None:
    # The server's clock cannot be moved from here: a short real retention instead.
    until = now() + dt.timedelta(seconds=3)
    version = put_locked(s3, locked, "short", b"x", "COMPLIANCE", until)
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=locked, Key="short", VersionId=version)
    assert code(exc) == "AccessDenied"
    time.sleep(max(0.0, (until - now()).total_seconds()) + 0.3)
    s3.delete_object(Bucket=locked, Key="short", VersionId=version)
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket=locked, Key="short", VersionId=version)
    assert status(exc) == 404


def test_subresources_on_the_wrong_level_are_refused(server, admin_key: Key, locked: str) -> None:
    for method, target in (("PUT", f"/{locked}?retention"), ("GET", f"/{locked}/k?versioning")):
        url = server.url + target
        reply = http(method, url, headers=signed_headers(method, url, admin_key))
        assert reply.status == 405, (method, target, reply.content)


# -- audit ----------------------------------------------------------------------------


def test_reads_and_changes_are_audited_under_the_s3_key(server, s3_store: Path, s3, locked: str) -> None:
    name = new_name("radiologist")
    client = make_client(server.url, create_key(s3_store, "--name", name, "--retention"))
    version = client.put_object(Bucket=locked, Key="study/2.dcm", Body=b"ct")["VersionId"]
    client.put_object_retention(
        Bucket=locked, Key="study/2.dcm", Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now() + DAY}
    )
    assert client.get_object(Bucket=locked, Key="study/2.dcm")["Body"].read() == b"ct"
    client.head_object(Bucket=locked, Key="study/2.dcm", VersionId=version)
    with pytest.raises(ClientError):
        client.delete_object(Bucket=locked, Key="study/2.dcm", VersionId=version)

    reads = [
        json.loads(line)
        for line in objfs_cli("audit", "show", str(s3_store), "--reads-only", "--bucket", locked).stdout.splitlines()
    ]
    mine = [e for e in reads if e["who"] == f"s3:{name}"]
    assert [(e["action"], e["key"], e["outcome"]) for e in mine] == [("read", "study/2.dcm", "ok")]  # the GET
    assert all(e["version"] == version for e in mine)

    entries = [json.loads(line) for line in objfs_cli("audit", "show", str(s3_store), "--who", name).stdout.splitlines()]
    actions = [(e["action"], e["outcome"]) for e in entries]
    heads = [e for e in entries if e["action"] == "head"]  # the HEAD: metadata disclosed, not a read
    assert [(e["key"], e["version"], e["outcome"]) for e in heads] == [("study/2.dcm", version, "ok")]
    assert ("write", "ok") in actions and ("retention", "ok") in actions and ("delete", "denied") in actions

    created = new_name("audited")
    client.create_bucket(Bucket=created)
    client.delete_bucket(Bucket=created)
    entries = [json.loads(line) for line in objfs_cli("audit", "show", str(s3_store), "--bucket", created).stdout.splitlines()]
    assert [(e["action"], e["who"]) for e in entries] == [("create-bucket", f"s3:{name}"), ("delete-bucket", f"s3:{name}")]

    verify = objfs_cli("audit", "verify", str(s3_store), check=False)
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()
    assert json.loads(verify.stdout.splitlines()[-1])["ok"] is True
