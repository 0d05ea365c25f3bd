"""Administrative commands as an operator runs them: real subprocesses on real store directories."""

from __future__ import annotations

import json
import time
from pathlib import Path

from objfs.store import Store


def test_mb_sets_a_default_retention(store_path: Path, tmp_path: Path, cli) -> None:
    store = str(store_path)
    cli("mb", store, "scans", "--object-lock", "--retention-days", "30", "--retention-mode", "COMPLIANCE")
    cli("mb", store, "reports", "--object-lock", "--retention-years", "10", "--retention-mode", "GOVERNANCE")
    with Store.open(store_path) as s:
        assert s.head_bucket("scans")["lock_default"]["mode"] == "COMPLIANCE"
        assert s.head_bucket("scans")["lock_default"]["days"] == 30
        reports = s.head_bucket("reports")["lock_default"]
        assert (reports["mode"], reports["years"], reports["days"]) == ("GOVERNANCE", 10, None)
    cli("put", store, "scans/1.dcm", "-", input=b"image")
    shown = json.loads(cli("retention", "show", store, "scans/1.dcm").stdout)
    assert shown["retention"]["mode"] == "COMPLIANCE"
    until = time.mktime(time.strptime(shown["retention"]["until"][:10], "%Y-%m-%d"))
    assert 28 * 86400 < until - time.time() < 31 * 86400
    refused = cli("rm", store, "scans/1.dcm", "--version", shown["version_id"], check=False)
    assert refused.returncode == 1 and b"Traceback" not in refused.stderr

    # Refused before the bucket exists: no bucket is left behind without its default.
    for bad in (
        ["mb", store, "plain", "--retention-days", "5", "--retention-mode", "GOVERNANCE"],
        ["mb", store, "nomode", "--object-lock", "--retention-days", "5"],
        ["mb", store, "zero", "--object-lock", "--retention-days", "0", "--retention-mode", "GOVERNANCE"],
    ):
        out = cli(*bad, check=False)
        assert out.returncode != 0 and b"Traceback" not in out.stderr, out.stderr
    assert cli("ls", store).stdout.decode().split() == ["reports/", "scans/"]
