"""A real browser (Debian's headless Chromium) fetches a study's metadata through CORS.

The page is served from another origin than the DICOMweb server; its fetch
sends an Authorization header, so Chromium makes a preflight first. From an
origin the configuration allows the metadata arrives; from any other the
browser blocks it.
"""

from __future__ import annotations

import http.server
import queue
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dicom"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from browser import headless  # noqa: E402
from dicom_scu import store_files  # noqa: E402
from dicomtest import free_port  # noqa: E402

from objfs.dicom.synth import write_study  # noqa: E402

PAGE = """<!doctype html><html><body><script>
function report(text) {{ fetch("/result", {{method: "POST", body: text}}); }}
fetch("{url}/studies/{uid}/metadata", {{
  headers: {{"Authorization": "Basic " + btoa("{access}:{secret}"), "Accept": "application/dicom+json"}}
}}).then(r => r.json())
  .then(j => report("ok " + j.length + " " + j[0]["0020000D"].Value[0]))
  .catch(e => report("blocked " + e));
</script></body></html>"""


def _page_server(port: int, page: str, results: queue.Queue) -> http.server.HTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            results.put(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _browse(port: int, page: str, profile: Path) -> str:
    results: queue.Queue = queue.Queue()
    server = _page_server(port, page, results)
    browser = subprocess.Popen(
        headless(profile, f"http://127.0.0.1:{port}/"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        return results.get(timeout=90)
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
        server.shutdown()
        server.server_close()


def test_browser_fetches_metadata_through_cors(web, gateway, page_port, tmp_path):
    uid, paths = write_study(tmp_path / "study", instances=3, patient_id="BROWSER1")
    assert store_files(gateway.port, paths) == [0, 0, 0]
    page = PAGE.format(url=web.url, uid=uid, access=web.reader[0], secret=web.reader[1])
    assert _browse(page_port, page, tmp_path / "profile1") == f"ok 3 {uid}"
    # the same page from an origin the configuration does not name: the browser blocks the answer
    assert _browse(free_port(), page, tmp_path / "profile2").startswith("blocked ")
