"""The README's examples, run as written: every ```sh block after a `<!-- test -->` line.

Every other block must say why it is not run (a `<!-- listing: why -->` line before it).

The blocks are written for a machine where `make run` is going (S3 on 9000,
DICOM on 11112, admin on 9100, the store under ./var). The test gives them one:
a fresh `make run` appliance (``python -m objfs.appliance var/store --mount var/mnt``)
in a network namespace of its own (so the README's fixed ports are free
whatever else runs here), a working directory holding ``.venv`` (this
interpreter's) and a ``study/`` of DICOM files, and runs each block with
``bash -euo pipefail``: a command that fails fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from objfs.dicom.synth import write_study

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^<!-- test -->\n```sh\n(.*?)^```", re.M | re.S)

DRIVER = """\
set -u
ip link set lo up
python -m objfs.appliance var/store --mount var/mnt > serve.log 2>&1 &
appliance=$!
for _ in $(seq 600); do grep -q '^objfs: ready' serve.log && break; sleep 0.1; done
if ! grep -q '^objfs: ready' serve.log; then kill -TERM $appliance; wait $appliance; echo "not ready" > rc.txt; exit 0; fi
for block in block-*.sh; do
    bash -euo pipefail "$block" > "$block.out" 2>&1
    echo "$block $?" >> rc.txt
done
kill -TERM $appliance
wait $appliance
echo "appliance $?" >> rc.txt
"""


def blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text())


def test_the_readme_marks_its_runnable_examples() -> None:
    found = blocks()
    assert found and all("objfs" in block for block in found)


def test_every_block_is_a_tested_example_or_a_declared_listing() -> None:
    """No example the README shows goes unrun: a block is run by the test, or says why it is a listing."""
    lines = (REPO / "README.md").read_text().splitlines()
    opening, unmarked = True, []
    for number, line in enumerate(lines):
        if not line.startswith("```"):
            continue
        if opening:
            before = lines[number - 1] if number else ""
            if before != "<!-- test -->" and not re.fullmatch(r"<!-- listing: .+ -->", before):
                unmarked.append(f"README.md:{number + 1}: {line}")
        opening = not opening
    assert unmarked == [], "blocks neither run by the test nor declared listings:\n" + "\n".join(unmarked)


def test_readme_examples_run_verbatim(tmp_path: Path) -> None:
    for tool in ("unshare", "ip", "aws", "storescu", "findscu"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: the README's examples use it (scripts/install-system-deps.sh)")
    work = tmp_path / "repo"
    work.mkdir()
    (work / ".venv").symlink_to(sys.prefix)
    _, paths = write_study(work / "study", instances=2, patient_id="12345")
    for i, path in enumerate(paths, start=1):
        path.rename(work / "study" / f"{i}.dcm")
    for i, block in enumerate(blocks()):
        (work / f"block-{i}.sh").write_text(block)
    (work / "driver.sh").write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("AWS_ACCESS_KEY_ID", None)
    env.pop("AWS_SECRET_ACCESS_KEY", None)
    done = subprocess.run(
        ["unshare", "--net", "bash", "driver.sh"], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    if os.path.ismount(work / "var" / "mnt"):
        subprocess.run(["fusermount3", "-uz", str(work / "var" / "mnt")], capture_output=True)
    outputs = {p.name: p.read_text() for p in work.glob("block-*.sh.out")}
    serve_log = (work / "serve.log").read_text() if (work / "serve.log").exists() else ""
    results = (work / "rc.txt").read_text().split("\n") if (work / "rc.txt").exists() else []
    report = f"{done.stderr}\nserve.log:\n{serve_log}\noutputs:\n{outputs}"
    assert done.returncode == 0, report
    assert [line for line in results if line] == [f"block-{i}.sh 0" for i in range(len(blocks()))] + ["appliance 0"], report
    assert "Traceback" not in serve_log, serve_log
    out = outputs["block-0.sh.out"]
    assert "upload: study/1.dcm to s3://pacs/study/1.dcm" in out  # S3
    assert "1.dcm" in out and "COMPLIANCE" in out  # the mount listing, the retention
    watching = outputs["block-1.sh.out"]
    assert "state: ok" in watching and '"ready":true' in watching.replace(" ", "")  # status, /readyz
    assert "objfs_objects " in watching and '"ok"\n"unknown"' in watching  # scrub found nothing; directory drives
