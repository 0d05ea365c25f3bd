"""The admin endpoint of a real ``objfs serve``: health, readiness, Prometheus metrics, logs, over plain HTTP."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from browser import headless
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_appliance import serve_command, stop_serve, wait_ready

from objfs.appliance import prepare
from objfs.store.config import load_config
from objfs.store.keys import KeyRing

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Appliance:
    store: Path
    mnt: Path
    key: tuple[str, str]
    admin: str
    s3: object
    stderr: Path

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.admin + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def log(self) -> str:
        return self.stderr.read_text()


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("admin")
    store, mnt = tmp / "store", tmp / "mnt"
    key = prepare(store)
    s3_port, admin_port = free_port(), free_port()
    stderr = tmp / "stderr.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("JOURNAL_STREAM", None)
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            serve_command(store, mnt, s3_port, free_port(), admin_port),
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
        )
    try:
        output = wait_ready(proc, stderr.read_text)
        assert f"objfs: admin (health, metrics, dashboard) at http://127.0.0.1:{admin_port}\n" in output
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            aws_access_key_id=key["access_key"],
            aws_secret_access_key=key["secret_key"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        yield Appliance(store, mnt, (key["access_key"], key["secret_key"]), f"http://127.0.0.1:{admin_port}", s3, stderr)
    finally:
        stop_serve(proc, mnt)
    assert proc.returncode == 0, stderr.read_text()


def families(text: str) -> dict[str, list]:
    """Metric name -> samples, as Prometheus would parse them."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_healthz_answers(appliance: Appliance) -> None:
    assert appliance.get("/healthz") == (200, "ok\n")


def test_metrics_parse_and_show_drives_queues_audit_and_s3_requests(appliance: Appliance) -> None:
    appliance.s3.create_bucket(Bucket="metrics")
    appliance.s3.put_object(Bucket="metrics", Key="a/1.dcm", Body=b"x" * 1000)
    assert appliance.s3.get_object(Bucket="metrics", Key="a/1.dcm")["Body"].read() == b"x" * 1000
    status, text = appliance.get("/metrics")
    assert status == 200
    found = families(text)
    states = [s for s in found["objfs_drive_state"] if s.value == 1]
    assert len(states) == 6
    assert {s.labels["state"] for s in states} == {"ok"}
    assert len(found["objfs_drive_free_bytes"]) == 6 and all(s.value > 0 for s in found["objfs_drive_free_bytes"])
    assert found["objfs_heal_queue"][0].value == 0
    assert "objfs_gc_queue" in found
    assert found["objfs_objects"][0].value >= 1 and found["objfs_stored_bytes"][0].value >= 1000
    assert found["objfs_audit_chain_length"][0].value >= 3  # bucket, put, get
    assert {s.labels["front"]: s.value for s in found["objfs_front_up"]} == {"s3": 1, "fuse": 1, "dicom": 1}
    puts = [
        s
        for s in found["objfs_request_duration_seconds"]
        if s.name.endswith("_count") and s.labels == {"front": "s3", "operation": "PutObject"}
    ]
    assert puts and puts[0].value >= 1
    by_status = {
        (s.labels["operation"], s.labels["status"]): s.value for s in found["objfs_requests"] if s.name.endswith("_total")
    }
    assert by_status[("GetObject", "200")] >= 1
    bytes_out = {s.labels["operation"]: s.value for s in found["objfs_request_bytes_out"] if s.name.endswith("_total")}
    assert bytes_out["GetObject"] >= 1000


def test_readyz_flips_to_503_when_two_drives_go_missing(appliance: Appliance) -> None:
    status, body = appliance.get("/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "reasons": []}
    drives = load_config(appliance.store).hot.drives
    assert len(drives) == 6
    moved = [(d, d.with_name(d.name + ".gone")) for d in drives[:2]]
    for src, dst in moved:
        src.rename(dst)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            status, body = appliance.get("/readyz")
            if status == 503:
                break
            time.sleep(0.3)
        assert status == 503, body
        answer = json.loads(body)
        assert answer["ready"] is False
        assert any("tier hot: 4 writable drives, at least 5 needed" in r and "missing" in r for r in answer["reasons"])
        status, text = appliance.get("/metrics")
        missing = [s for s in families(text)["objfs_drive_state"] if s.labels["state"] == "missing" and s.value == 1]
        assert len(missing) == 2
    finally:
        for src, dst in moved:
            dst.rename(src)
    deadline = time.time() + 10
    while time.time() < deadline and appliance.get("/readyz")[0] != 200:
        time.sleep(0.3)
    assert appliance.get("/readyz")[0] == 200


def wait_for(predicate, seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_access_log_lines_carry_journald_priorities(appliance: Appliance) -> None:
    appliance.s3.create_bucket(Bucket="logs")
    appliance.s3.put_object(Bucket="logs", Key="study 1/a.dcm", Body=b"y" * 321)
    assert wait_for(lambda: 'resource="logs/study 1/a.dcm"' in appliance.log())
    line = next(ln for ln in appliance.log().splitlines() if "op=PutObject" in ln and "logs/study 1/a.dcm" in ln)
    assert line.startswith("<6>") and " objfs.access INFO s3 client=127.0.0.1 principal=s3:admin " in line
    assert 'resource="logs/study 1/a.dcm" status=200 in=321 out=0 ms=' in line and " id=" in line


def test_a_failed_login_leaves_an_access_line_naming_the_key(appliance: Appliance) -> None:
    intruder = boto3.client(
        "s3",
        endpoint_url=appliance.s3.meta.endpoint_url,
        aws_access_key_id="AKIDNOTAKEY0000",
        aws_secret_access_key="wrong",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError):
        intruder.get_object(Bucket="logs", Key="study 1/a.dcm")
    assert wait_for(lambda: "principal=AKIDNOTAKEY0000" in appliance.log())
    line = next(ln for ln in appliance.log().splitlines() if "principal=AKIDNOTAKEY0000" in ln)
    assert line.startswith("<6>") and " status=403 " in line and "client=127.0.0.1" in line


def test_errors_and_warnings_carry_their_priorities(appliance: Appliance) -> None:
    """Three drives of a 4+2 tier gone: an S3 read fails (a warning) and a read through the mount fails (an error)."""
    appliance.s3.create_bucket(Bucket="lost")
    appliance.s3.put_object(Bucket="lost", Key="x.dcm", Body=b"z" * 5000)
    drives = load_config(appliance.store).hot.drives
    moved = [(d, d.with_name(d.name + ".away")) for d in drives[:3]]
    for src, dst in moved:
        src.rename(dst)
    try:
        time.sleep(1.2)  # the engine caches a drive's state for a second
        with pytest.raises(ClientError) as refused:
            appliance.s3.get_object(Bucket="lost", Key="x.dcm")["Body"].read()
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 500
        with pytest.raises(OSError):
            (appliance.mnt / "lost" / "x.dcm").read_bytes()
    finally:
        for src, dst in moved:
            dst.rename(src)
    assert wait_for(lambda: any(ln.startswith("<3>") for ln in appliance.log().splitlines()))
    lines = appliance.log().splitlines()
    assert any(ln.startswith("<4>") and "GET /lost/x.dcm" in ln for ln in lines), "\n".join(lines)
    assert any(ln.startswith("<3>") and "objfs.fuse" in ln for ln in lines), "\n".join(lines)


def test_plain_lines_on_a_terminal_prefixed_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    from objfs.admin.journal import JournalFormatter, wants_priorities

    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert not wants_priorities(terminal)
        monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
        assert wants_priorities(terminal)
    os.close(leader)
    record = logging.LogRecord("objfs.x", logging.ERROR, __file__, 1, "two\nlines", None, None)
    assert JournalFormatter("%(message)s").format(record) == "<3>two\n<3>lines"


def test_dashboard_refuses_without_a_key_and_a_scoped_key(appliance: Appliance) -> None:
    status, _ = appliance.get("/")
    assert status == 401
    bad = base64.b64encode(f"{appliance.key[0]}:wrong".encode()).decode()
    assert appliance.get("/", {"Authorization": f"Basic {bad}"})[0] == 401
    ring = KeyRing.of_store(appliance.store)
    scoped = ring.create("viewer", buckets=("metrics",), now=time.time())
    basic = base64.b64encode(f"{scoped.access_key}:{scoped.secret_key}".encode()).decode()
    assert appliance.get("/", {"Authorization": f"Basic {basic}"})[0] == 403


def test_dashboard_in_headless_chromium_shows_tiers_drives_and_queues(appliance: Appliance, tmp_path: Path) -> None:
    assert wait_for(lambda: appliance.get("/readyz")[0] == 200)  # drives moved by earlier tests are back
    access, secret = appliance.key
    url = appliance.admin.replace("http://", f"http://{quote(access, safe='')}:{quote(secret, safe='')}@") + "/"
    done = subprocess.run(
        headless(tmp_path, "--dump-dom", url),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    page = done.stdout
    assert "<h2>Capacity per tier</h2>" in page, page + done.stderr[-2000:]
    assert ">hot<" in page and ">4+2<" in page and ">6 / 6<" in page
    drives = page.split("<h2>Drives</h2>", 1)[1].split("<h2>", 1)[0]
    assert drives.count('<span class="ok">ok</span>') == 6
    assert "<h2>Recent events</h2>" in page and "<h2>Ingest rate (last hour)</h2>" in page
    assert "<th>heal queue</th>" in page and "<th>GC queue</th>" in page
    assert "ready" in page and "NOT READY" not in page


def test_dashboard_shows_recent_events_ingest_and_replication(appliance: Appliance) -> None:
    appliance.s3.create_bucket(Bucket="events")
    appliance.s3.put_object(Bucket="events", Key="study/ev1.dcm", Body=b"e" * 1000)
    basic = base64.b64encode(f"{appliance.key[0]}:{appliance.key[1]}".encode()).decode()
    status, page = appliance.get("/", {"Authorization": f"Basic {basic}"})
    assert status == 200
    events = page.split("<h2>Recent events</h2>", 1)[1]
    newest = events.split("</tr>")[1]  # the row after the header: the newest line
    assert "s3:admin" in newest and ">write<" in newest and "events/study/ev1.dcm" in newest and "127.0.0.1" in newest
    assert "<h2>Ingest rate (last hour)</h2>" in page and "<script" not in page
    assert "<h2>Replication</h2><p>No remotes configured.</p>" in page
