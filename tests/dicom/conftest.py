"""Fixtures for the DICOM gateway tests: a real ``objfs dicom`` subprocess per store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dicomtest import Gateway, configure, free_port, start_gateway, stop_gateway

from objfs.store import init_store
from objfs.stores import Store


@pytest.fixture
def store(store_path):
    """The store opened as every objfs process opens it: with the DICOM indexer registered."""
    s = Store.open(store_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def dest_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, dest_port: int) -> Iterator[Gateway]:
    """A gateway on a fresh store, C-MOVE destination ``DEST`` = 127.0.0.1:dest_port.

    Allowed calling AEs: TESTSCU, STORESCU, FINDSCU, MOVESCU, GETSCU (dcmtk defaults).
    """
    store = tmp_path_factory.mktemp("dicom") / "store"
    init_store(store).close()
    configure(store, allowed=["TESTSCU", "STORESCU", "FINDSCU", "MOVESCU", "GETSCU", "ECHOSCU"], destinations={"DEST": dest_port})
    gw = start_gateway(store)
    yield gw
    err = stop_gateway(gw)
    assert "Traceback" not in err, err
