"""Opening a store as every objfs process does: the engine plus the standard indexers.

The engine (:mod:`objfs.store`) knows no front and no secondary index; the
processes that open a store (the CLI, ``objfs serve``, the mount, the S3
sidecar, the DICOM gateway and migration) are where the indexers are chosen.
They all open it through this module, so an object written by any of them
is in every standard index (the DICOM index, which C-FIND and retrieval
read, and the replication queue, which must see every change of every
process). Guarantee: a store returned from here has every standard
indexer registered.
"""

from __future__ import annotations

import os
from typing import Any

from objfs.store import engine
from objfs.store.config import StoreConfig

__all__ = ["Store", "init_store", "open_store", "register_standard_indexers"]


def register_standard_indexers(store: engine.Store) -> engine.Store:
    """Register the standard indexers with ``store``; returns it. Idempotent."""
    from objfs.store.replication import ReplicationQueue

    store.register_indexer(ReplicationQueue())
    try:
        from objfs.dicom.index import register as register_dicom
    except ImportError:  # pydicom missing (a store-only install): objects are stored, not tag-indexed
        return store
    register_dicom(store)
    return store


class Store(engine.Store):
    """:class:`objfs.store.Store` with the standard indexers registered when it opens."""

    def __init__(self, config: StoreConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        register_standard_indexers(self)


def open_store(root: str | os.PathLike[str], **kwargs: Any) -> engine.Store:
    """Open the store at ``root`` with the standard indexers (``Store.open``)."""
    return Store.open(root, **kwargs)


def init_store(root: str | os.PathLike[str], **kwargs: Any) -> engine.Store:
    """Create a store (see :func:`objfs.store.init_store`) and return it open, with the standard indexers."""
    return register_standard_indexers(engine.init_store(root, **kwargs))
