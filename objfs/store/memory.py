"""Keep the engine's memory bounded under glibc malloc.

Segments and fragments are buffers of 128 KiB to a few MiB, allocated and
freed by different threads (reads in one pool, prefetch in another). glibc
raises its mmap threshold every time such a buffer is freed, after which
they come from per-thread arenas (up to 8 per core) and freed memory stays
resident there (a 256 MiB copy through the CLI peaked once at 369 MiB RSS
in a full test run, 46 MiB otherwise). Pinning the threshold keeps large
buffers in mmap, returned to the system on free, and capping the arenas
bounds what small objects retain.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
_done = False


def bound_malloc(mmap_threshold: int = 128 * 1024, arenas: int = 4) -> bool:
    """Apply the settings once per process; False where libc has no mallopt (not glibc)."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold))
    ok &= bool(mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold))
    ok &= bool(mallopt(M_ARENA_MAX, arenas))
    _done = ok
    return ok
