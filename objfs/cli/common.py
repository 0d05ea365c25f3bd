"""What every command group shares: who the CLI acts as, and how targets and dates are read.

Guarantee: every command acts as the ``cli`` system principal named after the
user running it, so the audit trail says who did it from the command line.
"""

from __future__ import annotations

import argparse
import calendar
import getpass
import time
from collections.abc import Callable
from typing import Any

from objfs.store import Principal


def store_command(
    subparsers: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int], *, json: bool = False
) -> argparse.ArgumentParser:
    """A subcommand taking the store path first (and ``--json`` when asked); more arguments go on the returned parser."""
    p = subparsers.add_parser(name, help=help_text)
    p.add_argument("store")
    if json:
        p.add_argument("--json", action="store_true")
    p.set_defaults(func=func)
    return p


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
