"""Who is asking: the audit identity of the process behind a FUSE request."""

from __future__ import annotations

import pyfuse3

from objfs.store import Principal


def principal_of(ctx: pyfuse3.RequestContext) -> Principal:
    """``fuse:uid=U,pid=P`` for the process that made the request.

    The kernel reports the calling thread's id as ``pid`` (the process id
    for single-threaded tools such as ``cat`` or ``rm``). The uid is all the
    mount can vouch for, so a mount principal never holds bypass-governance.
    """
    return Principal(f"fuse:uid={ctx.uid},pid={ctx.pid}")
