"""Asynchronous replication between two real appliances (`objfs serve` twice on loopback).

Site A replicates to site B (and, for the two-way test, B to A). Everything
goes through the real parts: boto3 against the S3 fronts, the DICOM
gateway, the `objfs replication` CLI, SIGTERM and SIGKILL of the serving
processes. One pair of appliances serves the whole module (each test uses
its own bucket).
"""

from __future__ import annotations

import datetime
import signal
import sys
import threading
import time
from pathlib import Path

import botocore.exceptions
import pytest
from replhelpers import Appliance, drained, versioned_bucket, versions, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))
from dicom_scu import find, store_files  # noqa: E402

from objfs.dicom.synth import write_study  # noqa: E402


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sites")
    a, b = Appliance(root, "a"), Appliance(root, "b")
    a.replicate_to(b, "site-b")
    b.replicate_to(a, "site-a")
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _rule(a: Appliance, b: Appliance, bucket: str, *, lock: bool = False, markers: bool = True) -> None:
    versioned_bucket(a.client(), bucket, lock=lock)
    versioned_bucket(b.client(), bucket, lock=lock)
    a.cli("replication", "set", bucket, "--to", f"site-b/{bucket}", *(["--delete-markers"] if markers else []))


def test_versions_markers_tags_and_locks_arrive_with_their_version_ids(sites) -> None:
    a, b = sites
    sa, sb = a.client(), b.client()
    sa.create_bucket(Bucket="plain")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        sa.put_bucket_replication(
            Bucket="plain",
            ReplicationConfiguration={
                "Role": "arn:aws:iam::objfs:role/site-b",
                "Rules": [{"Status": "Enabled", "Destination": {"Bucket": "arn:aws:s3:::plain"}}],
            },
        )
    assert refused.value.response["Error"]["Code"] == "InvalidRequest"  # versioning first, as on S3

    versioned_bucket(sa, "images", lock=True)
    versioned_bucket(sb, "images", lock=True)
    sa.put_bucket_replication(  # the S3 API, with the remote named by Destination/Account
        Bucket="images",
        ReplicationConfiguration={
            "Role": "",
            "Rules": [
                {
                    "ID": "offsite",
                    "Status": "Enabled",
                    "Priority": 1,
                    "Filter": {"Prefix": ""},
                    "DeleteMarkerReplication": {"Status": "Enabled"},
                    "Destination": {"Bucket": "arn:aws:s3:::images", "Account": "site-b"},
                }
            ],
        },
    )
    rule = sa.get_bucket_replication(Bucket="images")["ReplicationConfiguration"]["Rules"][0]
    assert rule["Destination"] == {"Bucket": "arn:aws:s3:::images", "Account": "site-b"}

    first = sa.put_object(Bucket="images", Key="ct/1.dcm", Body=b"first", ContentType="application/dicom")["VersionId"]
    second = sa.put_object(
        Bucket="images", Key="ct/1.dcm", Body=b"second", Metadata={"modality": "CT"}, ChecksumAlgorithm="SHA256"
    )["VersionId"]
    gone = sa.put_object(Bucket="images", Key="ct/2.dcm", Body=b"to be deleted")["VersionId"]
    marker = sa.delete_object(Bucket="images", Key="ct/2.dcm")["VersionId"]
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    locked = sa.put_object(
        Bucket="images",
        Key="ct/locked.dcm",
        Body=b"evidence",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
        ObjectLockLegalHoldStatus="ON",
    )["VersionId"]
    sa.put_object_tagging(Bucket="images", Key="ct/1.dcm", Tagging={"TagSet": [{"Key": "study", "Value": "42"}]})
    assert sa.head_object(Bucket="images", Key="ct/1.dcm")["ReplicationStatus"] in ("PENDING", "COMPLETED")

    wait_for("site A's queue to drain", lambda: drained(a))
    there = versions(sb, "images")
    assert set(there) == {
        ("ct/1.dcm", first),
        ("ct/1.dcm", second),
        ("ct/2.dcm", gone),
        ("ct/2.dcm", marker),
        ("ct/locked.dcm", locked),
    }
    assert there[("ct/2.dcm", marker)]["marker"] and there[("ct/2.dcm", marker)]["latest"]
    head = sb.head_object(Bucket="images", Key="ct/1.dcm", ChecksumMode="ENABLED")
    assert head["VersionId"] == second and head["ReplicationStatus"] == "REPLICA"
    assert head["Metadata"] == {"modality": "CT"} and head["ChecksumSHA256"]
    assert sb.get_object(Bucket="images", Key="ct/1.dcm")["Body"].read() == b"second"
    assert sb.get_object(Bucket="images", Key="ct/1.dcm", VersionId=first)["ContentType"] == "application/dicom"
    assert sb.get_object_tagging(Bucket="images", Key="ct/1.dcm")["TagSet"] == [{"Key": "study", "Value": "42"}]
    assert sa.head_object(Bucket="images", Key="ct/1.dcm")["ReplicationStatus"] == "COMPLETED"

    # A locked object stays locked on the destination: nobody deletes it there either.
    assert sb.get_object_legal_hold(Bucket="images", Key="ct/locked.dcm")["LegalHold"]["Status"] == "ON"
    retention = sb.get_object_retention(Bucket="images", Key="ct/locked.dcm")["Retention"]
    assert retention["Mode"] == "COMPLIANCE" and abs(retention["RetainUntilDate"].timestamp() - until.timestamp()) < 1
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        sb.delete_object(Bucket="images", Key="ct/locked.dcm", VersionId=locked)
    assert denied.value.response["Error"]["Code"] == "AccessDenied"

    # A version deleted by id on the source stays on the destination (S3's rule).
    sa.delete_object(Bucket="images", Key="ct/1.dcm", VersionId=first)
    assert ("ct/1.dcm", first) in versions(sb, "images")
    assert a.cli("replication", "verify", "images", check=False).returncode == 1
    a.cli("replication", "status", "images")

    # The remote is in use: it cannot be removed.
    assert a.cli("remote", "remove", "site-b", check=False).returncode != 0


def test_destination_down_then_back_converges(sites) -> None:
    a, b = sites
    _rule(a, b, "outage")
    sa = a.client()
    b.stop()
    written = {sa.put_object(Bucket="outage", Key=f"s/{i}", Body=bytes([i]) * 5000)["VersionId"] for i in range(6)}
    status = wait_for("the failures to show", lambda: (s := a.status("outage"))["failures"] and s)
    assert status["backlog_objects"] == 6 and status["backlog_bytes"] == 30000 and not status["converged"]
    assert status["lag_seconds"] > 0
    b.start()
    wait_for("site A's queue to drain", lambda: drained(a))
    assert {vid for (_, vid) in versions(b.client(), "outage")} == written
    assert a.cli("replication", "verify", "outage").returncode == 0


def test_source_killed_mid_replication_loses_and_doubles_nothing(sites) -> None:
    a, b = sites
    _rule(a, b, "killed")
    a.stop()
    toml = a.store / "objfs.toml"
    plain = toml.read_text()
    toml.write_text(plain.replace("interval_seconds = 0.2", "interval_seconds = 0.2\nmax_bytes_per_second = 100000"))
    a.start()
    try:
        sa, sb = a.client(), b.client()
        written = {sa.put_object(Bucket="killed", Key=f"k{i}", Body=bytes([i]) * 40000)["VersionId"] for i in range(8)}
        wait_for("the first replica", lambda: versions(sb, "killed"), timeout=30)
        a.stop(signal.SIGKILL)
        arrived = set(versions(sb, "killed"))
        assert 0 < len(arrived) < len(written), "the kill came too late to be mid-replication"
    finally:
        toml.write_text(plain)
        if a.proc is None:
            a.start()
    wait_for("site A's queue to drain", lambda: drained(a))
    there = versions(sb, "killed")
    assert sorted(vid for (_, vid) in there) == sorted(written)  # each version exactly once
    assert a.cli("replication", "verify", "killed").returncode == 0


def test_two_way_concurrent_writes_converge(sites) -> None:
    a, b = sites
    _rule(a, b, "shared")
    b.cli("replication", "set", "shared", "--to", "site-a/shared", "--delete-markers")
    sa, sb = a.client(), b.client()

    def write(client, side: str) -> None:
        for round_ in range(3):
            for i in range(4):
                client.put_object(Bucket="shared", Key=f"k{i}", Body=f"{side}{round_}".encode() * 100)

    threads = [threading.Thread(target=write, args=(c, s)) for c, s in ((sa, "a"), (sb, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for("both queues to drain", lambda: drained(a) and drained(b))
    va, vb = versions(sa, "shared"), versions(sb, "shared")
    assert set(va) == set(vb) and len(va) == 24  # every version on both sides, none sent back twice
    for i in range(4):
        ha, hb = sa.head_object(Bucket="shared", Key=f"k{i}"), sb.head_object(Bucket="shared", Key=f"k{i}")
        assert ha["VersionId"] == hb["VersionId"] and ha["ETag"] == hb["ETag"]
        assert {ha["ReplicationStatus"], hb["ReplicationStatus"]} == {"REPLICA", "COMPLETED"}
    time.sleep(1)
    assert a.status()["converged"] and b.status()["converged"]  # a REPLICA is never queued back
    assert a.cli("replication", "verify", "shared").returncode == 0
    assert b.cli("replication", "verify", "shared").returncode == 0


def test_a_study_stored_on_the_source_is_found_on_the_destination(sites, tmp_path: Path) -> None:
    a, b = sites
    _rule(a, b, "pacs")
    study_uid, paths = write_study(tmp_path / "study", instances=3, patient_id="REPL001", size=16)
    assert store_files(a.dicom_port, paths) == [0, 0, 0]
    wait_for("site A's queue to drain", lambda: drained(a))
    found, status = find(b.dicom_port, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid, "PatientID": ""})
    assert status == 0 and [str(ds.PatientID) for ds in found] == ["REPL001"]
