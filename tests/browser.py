"""Debian's headless Chromium for the browser tests.

CI installs it (scripts/install-system-deps.sh), so its absence is a broken
install, never a reason to skip: the test fails and says so.
"""

from __future__ import annotations

import shutil

import pytest


def headless(profile: object, *args: str) -> list[str]:
    """The command line of a headless Chromium as root with its own profile directory, then ``args``."""
    return [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}", *args]


def chromium() -> str:
    """The chromium binary; fails the calling test when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed: run scripts/install-system-deps.sh")
    return found
