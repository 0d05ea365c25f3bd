"""Storage classes and lifecycle rules through the real S3 server and boto3, on a store with hot and warm tiers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3helpers import create_key, make_client, start_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from tierhelpers import tiered_store, unlock_tree  # noqa: E402

from objfs.store import Store  # noqa: E402

RULES = {
    "Rules": [
        {
            "ID": "to-warm",
            "Status": "Enabled",
            "Filter": {"And": {"Prefix": "img/", "Tags": [{"Key": "k", "Value": "v"}], "ObjectSizeGreaterThan": 1}},
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}],
            "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "STANDARD_IA"}],
            "NoncurrentVersionExpiration": {"NoncurrentDays": 400},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
        {"ID": "exp", "Status": "Disabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 3}},
        {
            "ID": "date",
            "Status": "Enabled",
            "Filter": {"Tag": {"Key": "a", "Value": "b"}},
            "Expiration": {"Date": "2030-01-01T00:00:00Z"},
        },
        {
            "ID": "markers",
            "Status": "Enabled",
            "Filter": {"ObjectSizeLessThan": 10},
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
    ]
}


@pytest.fixture(scope="module")
def tiered_s3(tmp_path_factory):
    root = tiered_store(tmp_path_factory.mktemp("tiered") / "store")
    server = start_server(root)
    try:
        yield root, make_client(server.url, create_key(root, "--name", "admin"))
    finally:
        server.stop()
        unlock_tree(root.parent)


def test_lifecycle_configuration_round_trips_through_boto3(tiered_s3) -> None:
    _, s3 = tiered_s3
    s3.create_bucket(Bucket="lc-rules")
    with pytest.raises(ClientError) as missing:
        s3.get_bucket_lifecycle_configuration(Bucket="lc-rules")
    assert missing.value.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
    s3.put_bucket_lifecycle_configuration(Bucket="lc-rules", LifecycleConfiguration=RULES)
    got = s3.get_bucket_lifecycle_configuration(Bucket="lc-rules")["Rules"]
    assert got[0]["Filter"] == RULES["Rules"][0]["Filter"]
    assert got[0]["Transitions"] == [{"Days": 30, "StorageClass": "STANDARD_IA"}]
    assert got[0]["NoncurrentVersionTransitions"] == [{"NoncurrentDays": 1, "StorageClass": "STANDARD_IA"}]
    assert got[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 400}
    assert got[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert got[1]["Status"] == "Disabled" and got[1]["Expiration"] == {"Days": 3}
    assert got[2]["Filter"] == {"Tag": {"Key": "a", "Value": "b"}} and got[2]["Expiration"]["Date"].year == 2030
    assert got[3]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    bad = {"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {}, "Transitions": [{"Days": 1, "StorageClass": "GLACIER_IR"}]}]}
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_lifecycle_configuration(Bucket="lc-rules", LifecycleConfiguration=bad)
    assert refused.value.response["Error"]["Code"] == "InvalidStorageClass"
    s3.delete_bucket_lifecycle(Bucket="lc-rules")
    with pytest.raises(ClientError):
        s3.get_bucket_lifecycle_configuration(Bucket="lc-rules")


def test_storage_class_on_put_head_get_and_listings_and_after_a_lifecycle_move(tiered_s3) -> None:
    root, s3 = tiered_s3
    s3.create_bucket(Bucket="lc-class")
    s3.put_bucket_versioning(Bucket="lc-class", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="lc-class", Key="ia", Body=b"x" * 5000, StorageClass="STANDARD_IA")
    s3.put_object(Bucket="lc-class", Key="img/a", Body=b"a" * 7000)
    assert s3.head_object(Bucket="lc-class", Key="ia")["StorageClass"] == "STANDARD_IA"
    assert "StorageClass" not in s3.head_object(Bucket="lc-class", Key="img/a")
    with pytest.raises(ClientError) as bad:
        s3.put_object(Bucket="lc-class", Key="no", Body=b"x", StorageClass="GLACIER_IR")
    assert bad.value.response["Error"]["Code"] == "InvalidStorageClass"
    s3.put_bucket_lifecycle_configuration(
        Bucket="lc-class",
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "w",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "img/"},
                    "Transitions": [{"Days": 1, "StorageClass": "STANDARD_IA"}],
                }
            ]
        },
    )
    with Store.open(root) as store:  # the CLI's pass, in another process than the server
        store.clock.advance(1.5)
        assert store.run_lifecycle().moved == ["lc-class/img/a@" + store.head_object("lc-class", "img/a").version_id + " -> warm"]
    got = s3.get_object(Bucket="lc-class", Key="img/a")
    assert got["StorageClass"] == "STANDARD_IA" and got["Body"].read() == b"a" * 7000
    listed = {o["Key"]: o["StorageClass"] for o in s3.list_objects_v2(Bucket="lc-class")["Contents"]}
    assert listed == {"ia": "STANDARD_IA", "img/a": "STANDARD_IA"}
    assert {o["Key"]: o["StorageClass"] for o in s3.list_objects(Bucket="lc-class")["Contents"]} == listed
    versions = {v["Key"]: v["StorageClass"] for v in s3.list_object_versions(Bucket="lc-class")["Versions"]}
    assert versions == listed
    upload = s3.create_multipart_upload(Bucket="lc-class", Key="mp", StorageClass="STANDARD_IA")["UploadId"]
    part = s3.upload_part(Bucket="lc-class", Key="mp", UploadId=upload, PartNumber=1, Body=b"m" * 100)
    s3.complete_multipart_upload(
        Bucket="lc-class", Key="mp", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    )
    assert s3.head_object(Bucket="lc-class", Key="mp")["StorageClass"] == "STANDARD_IA"
    s3.copy_object(Bucket="lc-class", Key="copy", CopySource={"Bucket": "lc-class", "Key": "ia"})
    assert "StorageClass" not in s3.head_object(Bucket="lc-class", Key="copy")
