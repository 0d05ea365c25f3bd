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

from objfs.dicom.index import find, find_instances
from objfs.dicom.synth import write_study
from objfs.store import Store

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
