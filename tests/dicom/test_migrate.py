"""``objfs migrate``: resumable, incremental, verified, source untouched."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dicomtest import REPO

from objfs.dicom import migrate as migrate_module
from objfs.dicom.index import find, find_instances
from objfs.dicom.synth import write_study
from objfs.store.errors import NoSuchKey
from objfs.stores import Store

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    write_study(root / "2024" / "01" / "PAT1", instances=6, series=2, patient_id="MIG1", patient_name="Mig^One")
    write_study(root / "2023" / "12" / "PAT2", instances=4, patient_id="MIG2", modality="MR", study_date="20231224")
    (root / "reports").mkdir()
    (root / "reports" / "report.txt").write_text("not an image\n")
    full = (root / "2024" / "01" / "PAT1" / "IMG00000.dcm").read_bytes()
    (root / "2024" / "01" / "PAT1" / "broken.dcm").write_bytes(full[: len(full) // 2])
    os.mkfifo(root / "reports" / "pipe")
    return root


def migrate(store: Path, source: Path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-m", "objfs.cli", "migrate", str(store), str(source), "--bucket", "legacy", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode in (0, 3), res.stderr
    assert "files" in res.stderr and "ETA" in res.stderr  # progress
    if "--verify" in extra:
        assert "migrate --verify: " in res.stderr and "files/s" in res.stderr, res.stderr
    return json.loads(res.stdout)


def test_migrate_copies_indexes_reports_and_leaves_source_alone(store_path: Path, share: Path) -> None:
    before = snapshot(share)
    report = migrate(store_path, share, "--verify", "--workers", "3")
    assert snapshot(share) == before
    assert report["copied"] == 11 and report["dicom"] == 10 and report["non_dicom"] == 1
    assert report["verified"] == 11 and report["verify_failed"] == []
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"2024/01/PAT1/broken.dcm", "reports/pipe"}
    assert "damaged" in reasons["2024/01/PAT1/broken.dcm"]
    with Store.open(store_path) as store:
        # relative paths kept, bytes identical
        src = share / "2024/01/PAT1/IMG00003.dcm"
        assert store.get_object_bytes("legacy", "2024/01/PAT1/IMG00003.dcm") == src.read_bytes()
        assert store.head_object("legacy", "reports/report.txt").size == 13
        studies = find(store, {"PatientID": "MIG*"}, "STUDY", bucket="legacy")
        assert sorted(s["NumberOfStudyRelatedInstances"] for s in studies) == [4, 6]
        assert len(find_instances(store, {"PatientID": "MIG2"}, "PATIENT", bucket="legacy")) == 4
    # incremental: only new or changed files are copied again
    (share / "2023/12/PAT2/extra.txt").write_text("new")
    changed = share / "reports/report.txt"
    changed.write_text("changed report\n")
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = migrate(store_path, share)
    assert again["copied"] == 2 and again["unchanged"] == 10
    with Store.open(store_path) as store:
        assert store.get_object_bytes("legacy", "reports/report.txt") == b"changed report\n"


def test_migrate_killed_then_resumed_ends_complete_and_verified(store_path: Path, tmp_path: Path) -> None:
    share = tmp_path / "big"
    for i in range(6):
        write_study(share / f"S{i}", instances=30, size=64, patient_id=f"K{i}")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "objfs.cli", "migrate", str(store_path), str(share), "--bucket", "legacy", "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal_dir = store_path / "migrate"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = sum(len(p.read_bytes().splitlines()) for p in journal_dir.glob("*.jsonl")) if journal_dir.exists() else 0
        if lines >= 40 or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = migrate(store_path, share, "--verify")
    assert report["complete"], report
    assert report["unchanged"] > 0 and report["copied"] > 0  # killed mid-run, resumed
    assert report["copied"] + report["unchanged"] == 180
    assert report["verified"] == 180
    with Store.open(store_path) as store:
        assert sum(s["NumberOfStudyRelatedInstances"] for s in find(store, {}, "STUDY", bucket="legacy")) == 180


def _states(report: dict) -> dict[str, str]:
    return {m["path"]: m["archive"] for m in report["missing_from_source"]}


def test_files_gone_from_share_are_reported_kept_then_mirrored_on_request(store_path: Path, share: Path) -> None:
    first = run_migration_quiet(store_path, share)
    assert first["copied"] == 11 and first["missing_from_source_count"] == 0
    gone_dicom, gone_text, rewritten = "2024/01/PAT1/IMG00001.dcm", "reports/report.txt", "2023/12/PAT2/IMG00000.dcm"
    for rel in (gone_dicom, gone_text, rewritten):
        (share / rel).unlink()
    with Store.open(store_path) as store:
        # Someone (the PACS through the mount, an S3 client) rewrote this key since the migration.
        store.put_object("legacy", rewritten, b"written later by someone else")
        assert len(find_instances(store, {"PatientID": "MIG1"}, "PATIENT", bucket="legacy")) == 6

    # Default: nothing is deleted, every run says so.
    for _ in range(2):
        report = run_migration_quiet(store_path, share)
        assert report["copied"] == 0 and report["deleted"] == 0 and report["mirror_refused"] is None
        assert report["missing_from_source_count"] == 3
        assert _states(report) == {gone_dicom: "kept", gone_text: "kept", rewritten: "replaced"}
        entry = next(m for m in report["missing_from_source"] if m["path"] == gone_text)
        assert entry["size"] == 13 and len(entry["sha256"]) == 64
    with Store.open(store_path) as store:
        assert store.head_object("legacy", gone_text).size == 13
        assert len(find_instances(store, {"PatientID": "MIG1"}, "PATIENT", bucket="legacy")) == 6

    # More than --max-deletes would go: nothing is deleted at all.
    capped = migrate(store_path, share, "--mirror-deletes", "--max-deletes", "1")
    assert capped["deleted"] == 0 and "2 objects would be deleted" in capped["mirror_refused"]
    assert _states(capped) == {gone_dicom: "kept", gone_text: "kept", rewritten: "replaced"}

    # Opt-in mirror (through the CLI flag): only the migration's own objects go.
    mirrored = migrate(store_path, share, "--mirror-deletes")
    assert mirrored["mirror_deletes"] and mirrored["mirror_refused"] is None and mirrored["deleted"] == 2
    assert _states(mirrored) == {gone_dicom: "deleted", gone_text: "deleted", rewritten: "replaced"}
    with Store.open(store_path) as store:
        for rel in (gone_dicom, gone_text):
            with pytest.raises(NoSuchKey):
                store.head_object("legacy", rel)
        assert store.get_object_bytes("legacy", rewritten) == b"written later by someone else"
        # the DICOM index follows: C-FIND no longer offers the deleted instance
        assert len(find_instances(store, {"PatientID": "MIG1"}, "PATIENT", bucket="legacy")) == 5
        assert store.get_object_bytes("legacy", "2024/01/PAT1/IMG00002.dcm") == (share / "2024/01/PAT1/IMG00002.dcm").read_bytes()

    # Settled: not reported again; a file that comes back is copied again.
    assert run_migration_quiet(store_path, share)["missing_from_source_count"] == 0
    (share / gone_text).write_text("restored\n")
    back = run_migration_quiet(store_path, share)
    assert back["copied"] == 1 and back["missing_from_source_count"] == 0
    with Store.open(store_path) as store:
        assert store.get_object_bytes("legacy", gone_text) == b"restored\n"


def test_mirror_deletes_refuses_locked_objects_and_an_empty_share(store_path: Path, share: Path) -> None:
    with Store.open(store_path) as store:
        store.create_bucket("legacy", object_lock=True)
        store.put_lock_configuration("legacy", "GOVERNANCE", days=1)
    run_migration_quiet(store_path, share)
    (share / "reports/report.txt").unlink()
    (share / "2024/01/PAT1/IMG00002.dcm").unlink()

    # WORM: refused and reported, the object stays current (no delete marker hides it)
    report = migrate(store_path, share, "--mirror-deletes")
    assert report["deleted"] == 0 and set(_states(report).values()) == {"locked"}
    assert all("(GOVERNANCE until" in m["reason"] for m in report["missing_from_source"])
    with Store.open(store_path) as store:
        assert store.head_object("legacy", "reports/report.txt").size == 13
        # the engine refused, and audited the refusal as the migration's
        denied = [e for e in store.audit.show(bucket="legacy", who="system:migrate") if e["outcome"] == "denied"]
        assert sorted((e["action"], e["key"]) for e in denied) == [
            ("delete", "2024/01/PAT1/IMG00002.dcm"),
            ("delete", "reports/report.txt"),
        ]
        # once retention ends, the next mirrored run deletes it (a delete marker: versioned bucket)
        store.clock.advance(2 * 86400)
        later = run_migration_quiet(store_path, share, store=store, mirror_deletes=True)
        assert later["deleted"] == 2 and set(_states(later).values()) == {"deleted"}
        with pytest.raises(NoSuchKey):
            store.head_object("legacy", "reports/report.txt")

    # A share that lost every file (an unmounted NFS export) deletes nothing.
    run_migration_quiet(store_path, share)
    for path in [p for p in share.rglob("*") if not p.is_dir()]:
        path.unlink()
    empty = run_migration_quiet(store_path, share, mirror_deletes=True)
    assert empty["files_seen"] == 0 and empty["deleted"] == 0 and "not mounted" in empty["mirror_refused"]
    assert empty["missing_from_source_count"] == 9  # locked ones were released after their delete


def test_files_below_an_unreadable_directory_are_not_missing(
    store_path: Path, share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_migration_quiet(store_path, share)
    hidden = share / "2023" / "12"
    real_scandir = os.scandir

    def scandir(path):  # EACCES on one directory (a root test process cannot chmod it away)
        if Path(path) == hidden:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(migrate_module.os, "scandir", scandir)
    report = run_migration_quiet(store_path, share, mirror_deletes=True)
    assert report["missing_from_source_count"] == 0 and report["deleted"] == 0
    assert any(s["path"] == "2023/12" and "unreadable directory" in s["reason"] for s in report["skipped"])
    with Store.open(store_path) as store:
        assert len(find_instances(store, {"PatientID": "MIG2"}, "PATIENT", bucket="legacy")) == 4


def run_migration_quiet(store_path: Path, source: Path, *, store: Store | None = None, **kwargs) -> dict:
    """``migrate()`` in this process (no CLI start-up cost), without progress output."""
    if store is not None:
        return migrate_module.migrate(store, source, "legacy", progress_out=None, **kwargs)
    with Store.open(store_path) as opened:
        return migrate_module.migrate(opened, source, "legacy", progress_out=None, **kwargs)
