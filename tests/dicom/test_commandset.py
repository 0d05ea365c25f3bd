"""DIMSE command sets encoded directly are the bytes pydicom encodes (every message type, many values)."""

from __future__ import annotations

import itertools

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages
from pynetdicom.dimse_messages import _COMMAND_SET_KEYWORDS
from pynetdicom.dimse_primitives import C_GET, C_STORE
from pynetdicom.dsutils import encode

from objfs.dicom.commandset import encode_command_set, install_direct_command_sets

SAMPLES = {
    "US": [0, 1, 0xFF00, 0xFFFF],
    "UL": [0, 7, 0xFFFFFFFF],
    "UI": ["1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", ""],
    "AE": ["STORESCU", "ABC", "A" * 16],
    "LO": ["ok", "odd", "x" * 64],
    "AT": [0x00100010, [0x00100010, 0x7FE00010]],
}


def _variants(message_type: str) -> list[Dataset]:
    keywords = _COMMAND_SET_KEYWORDS[message_type]
    out = []
    for round_ in range(4):
        ds = Dataset()
        for i, keyword in enumerate(keywords):
            vr = dictionary_VR(tag_for_keyword(keyword))
            samples = SAMPLES.get(vr, [None])
            if (i + round_) % 5 == 4:
                setattr(ds, keyword, None)  # an empty element
            else:
                setattr(ds, keyword, samples[(i + round_) % len(samples)])
        out.append(ds)
    return out


@pytest.mark.parametrize("message_type", sorted(_COMMAND_SET_KEYWORDS))
def test_every_command_set_encodes_as_pydicom_does(message_type: str) -> None:
    for ds in _variants(message_type):
        assert encode_command_set(ds) == encode(ds, True, True), ds


def test_what_it_does_not_know_is_left_to_pydicom() -> None:
    ds = Dataset()
    ds.Status = 0
    ds.ErrorComment = "d\u00e9j\u00e0 vu"  # not ASCII
    assert encode_command_set(ds) is None
    other = Dataset()
    other.PatientName = "X"  # not a command element
    assert encode_command_set(other) is None


def test_messages_pynetdicom_builds_encode_the_same_with_the_patch() -> None:
    install_direct_command_sets()
    store = C_STORE()
    store.MessageID, store.MessageIDBeingRespondedTo = 7, 7
    store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"
    store.Status = 0
    get = C_GET()
    get.MessageID, get.MessageIDBeingRespondedTo = 3, 3
    get.AffectedSOPClassUID, get.Status = "1.2.840.10008.5.1.4.1.2.2.3", 0xFF00
    get.NumberOfRemainingSuboperations, get.NumberOfCompletedSuboperations = 299, 1
    get.NumberOfFailedSuboperations, get.NumberOfWarningSuboperations = 0, 0
    request = C_STORE()
    request.MessageID, request.Priority = 9, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", "1.2.3"
    request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID = "MOVESCU", 5
    for primitive, message in itertools.chain(
        [(store, dimse_messages.C_STORE_RSP()), (get, dimse_messages.C_GET_RSP()), (request, dimse_messages.C_STORE_RQ())]
    ):
        message.primitive_to_message(primitive)
        fast = dimse_messages.encode(message.command_set, True, True)
        assert dimse_messages.encode._objfs  # type: ignore[attr-defined]
        assert fast == encode(message.command_set, True, True)
