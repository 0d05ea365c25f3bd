"""A completed upload id is remembered for a while: a retried completion answers the same, then it is forgotten."""

from __future__ import annotations

import pytest

from objfs.store import Store
from objfs.store.errors import NoSuchUpload
from objfs.store.multipart import COMPLETED_MEMORY


def test_completion_is_remembered_then_forgotten(store: Store) -> None:
    store.create_bucket("pacs")
    store.min_part_size = 1
    upload_id = store.create_multipart("pacs", "k")
    part = store.upload_part(upload_id, 1, b"body")
    first = store.complete_multipart(upload_id, [(1, part["etag"])])
    again = store.complete_multipart(upload_id, [(1, part["etag"])])
    assert (again.etag, again.version_id, again.object_id) == (first.etag, first.version_id, first.object_id)
    assert store.upload_destination(upload_id) == ("pacs", "k")
    store.clock.advance(COMPLETED_MEMORY + 1)
    with pytest.raises(NoSuchUpload):
        store.complete_multipart(upload_id, [(1, part["etag"])])
    # The next completion drops the expired memory from the index.
    later = store.create_multipart("pacs", "k2")
    store.complete_multipart(later, [(1, store.upload_part(later, 1, b"x")["etag"])])
    with store.index.read() as txn:
        assert txn.get("completed", b"u" + upload_id.encode()) is None
        assert txn.get("completed", b"u" + later.encode()) is not None
