"""An SCU process that starts a C-STORE of a file and interrupts it mid-transfer.

``python interrupt_scu.py PORT FILE MODE [--after N]`` associates as
TESTSCU, sends the file's dataset (chunked, never loaded), and after N
P-DATA PDUs of it have gone out holds the rest back, prints ``MID``, waits
for a line on stdin (so the test can look at the gateway first) and then:

``abort``    sends an A-ABORT
``release``  asks for an A-RELEASE (the gateway grants it mid-message)
``reset``    closes the socket with SO_LINGER 0 (a TCP reset)
``hang``     waits forever (the test kills this process, or the gateway)

It prints ``DONE`` and exits 0 once the action is taken. The sender is
held back inside pynetdicom's send path of this process only: the gateway
under test is another process, untouched.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("file", type=Path)
    parser.add_argument("mode", choices=["abort", "release", "reset", "hang"])
    parser.add_argument("--after", type=int, default=3, help="dataset P-DATA PDUs sent before the interruption")
    args = parser.parse_args(argv)

    mid, never = threading.Event(), threading.Event()
    sent = 0
    original = DULServiceProvider.send_pdu

    def send_pdu(self: DULServiceProvider, primitive: object) -> None:
        nonlocal sent
        if isinstance(primitive, P_DATA) and threading.current_thread() is not self:
            if any(pdv[1][0] & 1 == 0 for pdv in primitive.presentation_data_value_list):  # a dataset fragment
                if sent >= args.after:
                    mid.set()
                    never.wait()
                sent += 1
        original(self, primitive)

    DULServiceProvider.send_pdu = send_pdu  # type: ignore[method-assign]
    _config.STORE_SEND_CHUNKED_DATASET = True
    meta = read_file_meta_info(args.file)
    ae = AE(ae_title="TESTSCU")
    ae.network_timeout = ae.dimse_timeout = 60
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), [str(meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", args.port, ae_title="OBJFS", max_pdu=1 << 20)
    if not assoc.is_established:
        print("REFUSED", flush=True)
        return 2
    sender = threading.Thread(target=assoc.send_c_store, args=(args.file,), daemon=True)
    sender.start()
    if not mid.wait(60):
        print("NEVER-MID", flush=True)
        return 3
    print("MID", flush=True)
    sys.stdin.readline()
    if args.mode == "abort":
        assoc.abort()
    elif args.mode == "release":
        assoc.release()
    elif args.mode == "reset":
        raw = assoc.dul.socket.socket
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
    else:
        never.wait()
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
