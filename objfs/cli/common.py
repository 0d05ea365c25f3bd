"""What every command group shares: who the CLI acts as, and how targets and dates are read.

Guarantee: every command acts as the ``cli`` system principal named after the
user running it, so the audit trail says who did it from the command line.
"""

from __future__ import annotations

import calendar
import getpass
import time

from objfs.store import Principal


def cli_principal() -> Principal:
    """The local administrator: the ``cli`` system principal, named after the user running it."""
    return Principal.system("cli", who=getpass.getuser())


def split_target(text: str) -> tuple[str, str]:
    """``BUCKET/KEY`` (or ``BUCKET/PREFIX``) as ``(bucket, key)``; the key may be empty."""
    bucket, _, key = text.partition("/")
    return bucket, key


def parse_time(text: str) -> float:
    """A UTC date ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS[Z]`` as a Unix time; exits 1 if unreadable."""
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise SystemExit(f"objfs: cannot read the date {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)")
