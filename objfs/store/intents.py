"""Write intents: positive evidence that a blob on the drives was never committed.

Before a writer creates the first fragment file of a blob it appends
``+<blob id>`` to its process's intent journal ``STORE/run/intents/<pid>-<start>``,
and after the blob is committed to the index, or its write abandoned and
its files removed, ``-<blob id>``. The journal's first line records the
index it was written against (index id and LMDB transaction id).

A journal whose process is dead therefore names every blob that process was
writing when it died. Scrub collects such a blob only when the index is the
same index the journal was written against and is not older than it, and
the blob is referenced by nothing in it: then it is a write that never
committed. Anything else (index lost, replaced or restored from a backup;
a journal lost in a machine crash) collects nothing: the fragments stay,
scrub reports them, and ``rebuild-index`` decides.

Appends are not fsynced: a journal must survive its process being killed,
which the page cache ensures; a machine crash loses it, which only means
leftovers stay (reported, never deleted).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import own_identity, process_start

_NAME = re.compile(r"^(\d+)-(\d+)$")
COMPACT_BYTES = 1 << 20


@dataclass
class DeadJournal:
    """The journal of a process that is gone."""

    path: Path
    header: dict[str, Any]
    uncommitted: list[str]
    #: Metadata changes written to the drives whose index commit was never settled:
    #: ``{"id", "bucket", "key"}`` as the index knew the version (or upload) before.
    unsettled_meta: list[dict[str, Any]]


class IntentJournal:
    """This process's intent journal (lazily created; thread-safe)."""

    def __init__(self, run_dir: Path, index_state: Any) -> None:
        self.dir = run_dir / "intents"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index_state = index_state  # () -> {"index_id": ..., "txnid": ...}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = -1
        self._open: set[str] = set()
        self._size = 0

    def _path(self) -> Path:
        me = own_identity()
        return self.dir / f"{me['pid']}-{me['start']}"

    def _ensure(self) -> int:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        self._pid = os.getpid()
        self._open = set()
        self._fd = self._rewrite()
        return self._fd

    def _rewrite(self) -> int:
        """(Re)start the journal with a fresh header and the blobs still being written."""
        path = self._path()
        tmp = path.with_name(path.name + ".tmp")
        lines = [json.dumps(self._index_state())] + [f"+{b}" for b in sorted(self._open)]
        body = ("\n".join(lines) + "\n").encode()
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
        self._size = len(body)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def _append(self, line: str) -> None:
        fd = self._ensure()
        data = (line + "\n").encode()
        os.write(fd, data)
        self._size += len(data)
        if self._size > COMPACT_BYTES:
            os.close(fd)
            self._fd = self._rewrite()

    def begin(self, blob_id: str) -> None:
        """Record that this process starts writing ``blob_id`` (before any of its files exist)."""
        with self._lock:
            self._open.add(blob_id)
            self._append(f"+{blob_id}")

    def end(self, blob_id: str) -> None:
        """The blob is committed to the index, or its files are removed: nothing left to collect."""
        with self._lock:
            if blob_id in self._open:
                self._open.discard(blob_id)
                self._append(f"-{blob_id}")

    def begin_meta(self, where: dict[str, Any]) -> str:
        """Record that the drives' metadata of ``where["id"]`` is about to change ahead of an index commit.

        ``where`` names the version (or upload) as the index knows it now
        (``id``, ``bucket``, ``key``), where the change moves it (``to``, a
        rename) and the ``gen`` written, so a scrub can make the drives agree
        with the index again if this process dies before :meth:`end_meta`.
        """
        token = f"{where['id']}"
        with self._lock:
            self._append("+m " + json.dumps({k: where.get(k) for k in ("id", "bucket", "key", "to", "gen", "rename")}))
        return token

    def end_meta(self, token: str) -> None:
        with self._lock:
            self._append(f"-m {token}")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
                self._fd = None
                if not self._open:
                    try:
                        os.unlink(self._path())
                    except OSError:
                        pass

    def dead_journals(self) -> Iterator[DeadJournal]:
        """Journals of processes that are gone, with the blobs they never finished."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        for name in names:
            match = _NAME.match(name)
            if match is None or process_start(int(match.group(1))) == int(match.group(2)):
                continue
            path = self.dir / name
            try:
                raw = path.read_text().splitlines()
            except OSError:
                continue
            try:
                header = json.loads(raw[0]) if raw else {}
            except ValueError:
                header = {}
            pending: dict[str, None] = {}
            metas: dict[str, dict[str, Any]] = {}
            for line in raw[1:]:
                if line.startswith("+m "):
                    try:
                        where = json.loads(line[3:])
                    except ValueError:
                        continue
                    metas[where["id"]] = where
                elif line.startswith("-m "):
                    metas.pop(line[3:], None)
                elif line.startswith("+"):
                    pending[line[1:]] = None
                elif line.startswith("-"):
                    pending.pop(line[1:], None)
            yield DeadJournal(path, header, list(pending), list(metas.values()))
