"""The dashboard's ingest history and chart (objfs/admin/history.py) and the audit tail it shows."""

from __future__ import annotations

import json
from pathlib import Path

from objfs.admin.dashboard import replication_section
from objfs.admin.history import IngestHistory, ingest_chart, recent_events
from objfs.store import Principal
from objfs.stores import init_store, open_store


def test_one_sample_per_step_and_rates_between_them() -> None:
    history = IngestHistory(step=60, window=180)
    assert ingest_chart(history.rates()).startswith("<p>Ingest rate: collecting")
    history.sample(0, 0, now=1000)
    history.sample(5, 999, now=1030)  # within the step: ignored
    history.sample(60, 6_000_000, now=1060)
    history.sample(120, 6_000_000, now=1120)  # nothing stored in that minute
    history.sample(180, 12_000_000, now=1180)
    history.sample(240, 18_000_000, now=1240)  # the window keeps 4 samples: the first goes
    rates = history.rates()
    assert [round(r[2]) for r in rates] == [0, 100_000, 100_000]
    assert [round(r[1]) for r in rates] == [1, 1, 1]
    svg = ingest_chart(rates)
    assert svg.startswith("<svg") and svg.count("<rect") == 3 and "<script" not in svg
    assert "now 100.0 KB/s" in svg and 'height="0.0"' in svg  # the idle minute is an empty bar


def test_recent_events_reads_the_tail_across_a_seal(tmp_path: Path) -> None:
    root = tmp_path / "store"
    init_store(root).close()
    config = root / "objfs.toml"
    config.write_text(config.read_text().replace("segment_bytes = 67108864", "segment_bytes = 4096"))
    store = open_store(root)
    try:
        who = Principal("s3:viewer", source_ip="10.0.0.9")
        store.create_bucket("tail", principal=who)
        for i in range(40):
            store.put_object("tail", f"k{i:02d}", b"x", principal=who)
        store.audit.rotate(store.clock.now())  # the live log holds only its seal line now
        events = recent_events(store.audit, limit=5)
    finally:
        store.close()
    writes = [e.get("key") for e in events if e["action"] == "write"]
    assert events[0]["action"] == "seal" and len(events) == 5
    assert writes == [f"k{i}" for i in range(39, 39 - len(writes), -1)] and len(writes) >= 3  # newest first, across segments
    live = (root / "audit" / "audit.log").read_text().splitlines()
    assert json.loads(live[0])["action"] == "seal" and len(live) == 1


def test_replication_section_names_remotes_and_backlog() -> None:
    assert replication_section({}, None) == "<p>No remotes configured.</p>"
    backlog = {
        "backlog_objects": 3,
        "backlog_bytes": 3 << 20,
        "lag_seconds": 42.0,
        "rate_bytes_per_second": 2048.0,
        "failures": [{"error": "remote down"}],
    }
    html = replication_section({"site-b": ["pacs", "<x>"]}, backlog)
    assert "<td>site-b</td><td>&lt;x&gt;, pacs</td>" in html
    assert "<td>3</td><td>3.0 MiB</td><td>42 s</td><td>2.0 KiB/s</td>" in html and 'class="bad">1<' in html
