"""``objfs serve`` starts the DICOMweb front when ``[dicomweb] port`` is set, and stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from dicomtest import REPO, free_port

from objfs.appliance import prepare


def test_serve_starts_dicomweb_from_the_config(tmp_path: Path) -> None:
    store = tmp_path / "store"
    key = prepare(store)
    web_port = free_port()
    text = (store / "objfs.toml").read_text().replace("# port = 8042", f"port = {web_port}")
    (store / "objfs.toml").write_text(text)
    command = [sys.executable, "-m", "objfs.cli", "serve", str(store), "--port", str(free_port()), "--no-dicom"]
    command += ["--admin-port", str(free_port())]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO)), text=True
    )
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if line.startswith("objfs: ready"):
                break
        banner = f"objfs: DICOMweb at http://127.0.0.1:{web_port}/dicom-web\n"
        assert banner in output, "".join(output)
        url = f"http://127.0.0.1:{web_port}/dicom-web/studies"
        assert requests.get(url, auth=(key["access_key"], key["secret_key"]), timeout=10).status_code == 204
        assert requests.get(url, timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(output) + rest
    assert "Traceback" not in rest, rest


def test_dicomweb_config_is_checked(tmp_path: Path) -> None:
    import pytest

    from objfs.store.config import load_config
    from objfs.store.errors import ConfigError

    store = tmp_path / "store"
    prepare(store)
    config = load_config(store)
    assert config.dicomweb.port is None and config.dicomweb.cors_origins == ()
    text = (store / "objfs.toml").read_text()
    (store / "objfs.toml").write_text(text.replace("cors_origins = []", 'cors_origins = ["https://viewer.example"]\nport = 8042'))
    config = load_config(store)
    assert config.dicomweb.port == 8042 and config.dicomweb.cors_origins == ("https://viewer.example",)
    (store / "objfs.toml").write_text(text.replace("cors_origins = []", "cors_origins = [1]"))
    with pytest.raises(ConfigError, match="cors_origins"):
        load_config(store)
    (store / "objfs.toml").write_text(text.replace("cors_origins = []", "cors = []"))
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(store)
