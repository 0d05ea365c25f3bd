"""Standard tools on the mount, and a crash of the mount process in the middle of a copy."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
from fragmenthelpers import blob_fragments  # noqa: E402


def make_study(root: Path, files: int, lo: int, hi: int, seed: int = 7) -> Path:
    """A small DICOM-like study tree: patient/study/series/instance files of random bytes."""
    rng = random.Random(seed)
    study = root / "PAT001" / "ST1"
    for i in range(files):
        series = study / f"SE{i % 3}"
        series.mkdir(parents=True, exist_ok=True)
        (series / f"IM{i:04d}.dcm").write_bytes(rng.randbytes(rng.randint(lo, hi)))
    return root / "PAT001"


def sh(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True)


def test_standard_tools(mount, tmp_path: Path) -> None:
    src = make_study(tmp_path / "src", 24, 1_000, 300_000)
    b = mount.path / "pacs"
    sh("cp", "-r", str(src), str(b / "cp"))
    sh("diff", "-r", str(src), str(b / "cp"))
    sh("rsync", "-a", str(src) + "/", str(b / "rsync"))
    sh("diff", "-r", str(src), str(b / "rsync"))
    # rsync -a kept the times: a second run has nothing to send.
    again = sh("rsync", "-ai", str(src) + "/", str(b / "rsync"))
    assert [line for line in again.stdout.splitlines() if not line.startswith(".d")] == []
    found = sh("find", str(b / "cp"), "-type", "f").stdout.split()
    assert len(found) == 24
    du = int(sh("du", "-s", "-B1", "--apparent-size", str(b / "cp")).stdout.split()[0])
    assert du == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    blocks = int(sh("du", "-s", "-B512", str(b / "cp")).stdout.split()[0])
    assert blocks >= du // 512
    # tar both ways.
    sh("tar", "-cf", str(tmp_path / "out.tar"), "-C", str(b), "cp")
    (tmp_path / "untar").mkdir()
    sh("tar", "-xf", str(tmp_path / "out.tar"), "-C", str(tmp_path / "untar"))
    sh("diff", "-r", str(src), str(tmp_path / "untar" / "cp"))
    sh("tar", "-cf", str(tmp_path / "in.tar"), "-C", str(src.parent), "PAT001")
    sh("tar", "-xf", str(tmp_path / "in.tar"), "-C", str(b))
    sh("diff", "-r", str(src), str(b / "PAT001"))
    # mv of files and directories.
    sh("mv", str(b / "cp" / "ST1" / "SE0" / "IM0000.dcm"), str(b / "cp" / "moved.dcm"))
    sh("mv", str(b / "cp" / "ST1"), str(b / "cp" / "ST-renamed"))
    assert (b / "cp" / "moved.dcm").read_bytes() == (src / "ST1" / "SE0" / "IM0000.dcm").read_bytes()
    assert sorted(os.listdir(b / "cp" / "ST-renamed")) == ["SE0", "SE1", "SE2"]
    sh("ln", "-s", "ST-renamed/SE1", str(b / "cp" / "latest"))
    assert sorted(os.listdir(b / "cp" / "latest")) == sorted(os.listdir(src / "ST1" / "SE1"))
    # Python file operations and an in-place edit (sed -i writes a temp file and renames it).
    report = b / "report.txt"
    report.write_text("patient: ANON\nstatus: draft\n")
    sh("sed", "-i", "s/draft/final/", str(report))
    assert report.read_text() == "patient: ANON\nstatus: final\n"
    with open(report, "r+") as f:
        f.seek(9)
        f.write("anon")
    assert report.read_text() == "patient: anon\nstatus: final\n"


def test_sigkill_mid_copy_leaves_only_complete_files(mount, tmp_path: Path) -> None:
    src = make_study(tmp_path / "src", 60, 64 * 1024, 300 * 1024)
    dst = mount.path / "pacs" / "copy"
    cp = subprocess.Popen(["cp", "-r", str(src), str(dst)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until some files are committed, then crash the mount
        if len(blob_fragments(mount.store / "drives" / "d0")) >= 15:
            break
        time.sleep(0.01)
    mount.kill()
    cp.wait(timeout=30)
    assert cp.returncode != 0  # the copy was cut short
    mount.start()
    sources = {p.relative_to(src): p for p in src.rglob("*.dcm")}
    present = [p for p in dst.rglob("*") if p.is_file()] if dst.exists() else []
    assert present, "no file was committed before the crash"
    assert len(present) < len(sources)
    for p in present:
        assert p.read_bytes() == sources[p.relative_to(dst)].read_bytes(), f"{p} is partial"
