"""The logged-in dashboard of a real ``objfs serve``, screenshotted by headless Chromium and checked with pillow.

Not a byte-exact reference image (fonts and anti-aliasing differ between
machines): the checks are on what a person would see. The page is not blank;
the capacity bar of each tier shows in that tier's colour in the capacity
table, above the ingest chart; the ingest chart's bars show in the chart's
colour, in a region of the chart's size, below the capacity bars.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import boto3
import numpy
import pytest
from botocore.config import Config
from browser import headless
from PIL import Image
from ports import free_port
from test_appliance import serve_command, stop_serve, wait_ready

from objfs.admin.dashboard import BAR_HEIGHT, BAR_WIDTH, TIER_COLOURS
from objfs.appliance import prepare

REPO = Path(__file__).resolve().parent.parent
WINDOW = (1280, 2400)
CHART_COLOUR = (0x33, 0xAA, 0x77)  # "#3a7", objfs/admin/history.py ingest_chart
CHART_WIDTH, CHART_HEIGHT = 600, 120


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _pixels_of(image: Image.Image, colour: tuple[int, int, int], tolerance: int = 6) -> list[tuple[int, int]]:
    """Where ``image`` has ``colour`` (within ``tolerance`` per channel: colour management may shift it a little)."""
    pixels = numpy.asarray(image, dtype=numpy.int16)
    ys, xs = numpy.nonzero((numpy.abs(pixels - numpy.array(colour, dtype=numpy.int16)) <= tolerance).all(axis=2))
    return list(zip(xs.tolist(), ys.tolist()))


def _box(points: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    xs, ys = [x for x, _ in points], [y for _, y in points]
    return min(xs), min(ys), max(xs), max(ys)


@pytest.fixture
def serving(tmp_path: Path):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    key = prepare(store)
    s3_port, admin_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OBJFS_INGEST_STEP="1")  # one ingest sample a second
    env.pop("JOURNAL_STREAM", None)
    proc = subprocess.Popen(
        serve_command(store, mnt, s3_port, free_port(), admin_port),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        wait_ready(proc)
        yield key, s3_port, admin_port
    finally:
        stop_serve(proc, mnt)


def test_the_dashboard_screenshot_shows_capacity_bars_and_the_ingest_chart(serving, tmp_path: Path) -> None:
    key, s3_port, admin_port = serving
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{s3_port}",
        aws_access_key_id=key["access_key"],
        aws_secret_access_key=key["secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    url = f"http://{quote(key['access_key'], safe='')}:{quote(key['secret_key'], safe='')}@127.0.0.1:{admin_port}/"
    shot = tmp_path / "dashboard.png"  # kept in the test's tmp directory for a look when it fails

    def screenshot() -> subprocess.CompletedProcess:
        shot.unlink(missing_ok=True)
        return subprocess.run(
            headless(
                tmp_path / "profile", "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", url
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )

    screenshot()  # the first page view takes the first ingest sample
    s3.create_bucket(Bucket="shots")
    s3.put_object(Bucket="shots", Key="study/1.dcm", Body=b"i" * 200_000)
    time.sleep(1.2)  # the next sample, a step later, sees the bytes stored: the chart gets a bar
    done = screenshot()
    assert shot.exists(), done.stderr[-2000:]

    image = Image.open(shot).convert("RGB")
    assert image.size == WINDOW
    # Not blank: many colours (text, tables, bars), and a fair share of the page is not white.
    assert len(image.getcolors(maxcolors=1 << 16) or []) > 20
    ink = int((numpy.asarray(image, dtype=numpy.int16).sum(axis=2) < 3 * 200).sum())
    assert ink > 0.005 * WINDOW[0] * WINDOW[1], ink

    # The hot tier's capacity bar: its colour in a region no larger than the bar (the used share of it).
    hot = _pixels_of(image, _rgb(TIER_COLOURS[0]))
    assert hot, "no capacity bar in the hot tier's colour"
    left, top, right, bottom = _box(hot)
    assert right - left < BAR_WIDTH + 2 and bottom - top < BAR_HEIGHT + 2, (left, top, right, bottom)
    assert all(_pixels_of(image, _rgb(colour)) == [] for colour in TIER_COLOURS[1:])  # one tier, one colour

    # The ingest chart: bars in the chart colour, inside a chart-sized region below the capacity table.
    chart = _pixels_of(image, CHART_COLOUR)
    assert len(chart) > 500, len(chart)  # at least one tall bar
    c_left, c_top, c_right, c_bottom = _box(chart)
    assert c_right - c_left <= CHART_WIDTH and c_bottom - c_top <= CHART_HEIGHT, (c_left, c_top, c_right, c_bottom)
    assert c_top > bottom  # the chart comes after the capacity per tier
    assert c_left < WINDOW[0] // 2  # in the page's left column, like every section
