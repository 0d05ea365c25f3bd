"""Admission before work: refused requests cost the server nothing that signed clients need.

Unsigned, unauthorised and oversized requests are answered from their
headers, at once, without ``100 Continue`` and without their body being read;
a crowd of them does not hold the request slots of signed clients; a signed
body that trickles is cut with RequestTimeout. Real server, raw sockets and boto3.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from s3helpers import Key, create_key, error_code, make_client, signed_headers, start_server

ATTACKERS = 260
TEN_MB = 10 * 1000 * 1000


def _request_head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}\r\n".encode()


def _read_response(sock: socket.socket, timeout: float) -> tuple[bytes, bytes]:
    """(status line and headers, body by Content-Length) of the next response on ``sock``."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def _signed_head(url_path: str, port: int, key: Key, headers: dict[str, str]) -> dict[str, str]:
    # Signed over the headers; the payload hash (of no body) is never reached: the request is refused first.
    return signed_headers("PUT", f"http://127.0.0.1:{port}{url_path}", key, b"", headers)


class SlowUnsignedPuts(threading.Thread):
    """``count`` sockets sending unsigned PUT headers (10 MB Content-Length), then one byte every half second.

    A socket the server closes is opened again, so the pressure lasts until
    :meth:`stop`. Every answer received is kept in :attr:`replies`.
    """

    def __init__(self, port: int, count: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.head = _request_head("PUT", path, port, {"Content-Length": str(TEN_MB)})
        self.replies: list[bytes] = []
        self.opened = 0
        self._halt = threading.Event()

    def _open(self) -> list:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(self.head)
        sock.setblocking(False)
        self.opened += 1
        return [sock, b""]

    def _closed(self, conn: list) -> None:
        conn[0].close()
        self.replies.append(conn[1])
        if not self._halt.is_set():
            conn[:] = self._open()

    def run(self) -> None:
        conns = [self._open() for _ in range(self.count)]
        while not self._halt.is_set():
            for conn in conns:
                try:
                    data = conn[0].recv(65536)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data:
                    conn[1] += data
                elif data == b"":
                    self._closed(conn)
                    continue
                try:
                    conn[0].send(b"x")
                except BlockingIOError:
                    pass
                except OSError:
                    self._closed(conn)
            self._halt.wait(0.5)
        for conn in conns:
            conn[0].close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def test_slow_unsigned_puts_do_not_starve_signed_clients(server, s3, bucket) -> None:
    crowd = SlowUnsignedPuts(server.port, ATTACKERS, f"/{bucket}/victim")
    crowd.start()
    try:
        deadline = time.monotonic() + 3
        while crowd.opened < ATTACKERS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert crowd.opened >= ATTACKERS
        for i in range(15):
            began = time.monotonic()
            s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"v" * 1000)
            assert s3.get_object(Bucket=bucket, Key=f"k{i}")["Body"].read() == b"v" * 1000
            assert time.monotonic() - began < 2, "a signed request waited behind the unsigned crowd"
            time.sleep(0.2)
    finally:
        crowd.stop()
    # Every unsigned request was answered from its headers: AccessDenied, never invited to send.
    assert len(crowd.replies) >= ATTACKERS
    for reply in crowd.replies:
        assert reply.startswith(b"HTTP/1.1 403"), reply[:200]
        assert b"<Code>AccessDenied</Code>" in reply and b"connection: close" in reply.lower()
        assert b"100 Continue" not in reply
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert sorted(o["Key"] for o in listed) == sorted(f"k{i}" for i in range(15))


@pytest.mark.parametrize("expect", [True, False])
def test_oversized_content_length_is_refused_before_100_continue(server, admin_key, s3, bucket, expect) -> None:
    headers = {"Content-Length": str(6 << 30)}
    if expect:
        headers["Expect"] = "100-continue"
    path = f"/{bucket}/huge"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request_head("PUT", path, server.port, _signed_head(path, server.port, admin_key, headers)))
        began = time.monotonic()
        head, body = _read_response(sock, timeout=5)
        assert time.monotonic() - began < 2
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"100 Continue" not in head
    assert error_code(body) == "EntityTooLarge"
    assert b"connection: close" in head.lower()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_access_denied_does_not_read_the_body(server, s3_store, s3, bucket) -> None:
    viewer = create_key(s3_store, "--name", "admission-viewer", "--read-only")
    path = f"/{bucket}/denied"
    headers = _signed_head(path, server.port, viewer, {"Content-Length": str(TEN_MB)})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    try:
        sock.sendall(_request_head("PUT", path, server.port, headers))
        head, body = _read_response(sock, timeout=5)
        assert head.startswith(b"HTTP/1.1 403") and error_code(body) == "AccessDenied"
        assert b"connection: close" in head.lower()
        # Push the body: the server drops at most a little of it, then resets the connection.
        accepted = 0
        chunk = b"x" * 65536
        sock.settimeout(3)
        try:
            while accepted < TEN_MB:
                accepted += sock.send(chunk)
        except (OSError, TimeoutError):
            pass
    finally:
        sock.close()
    assert accepted < 2 << 20, f"the server took {accepted} bytes of a refused body"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_bad_signature_with_expect_gets_no_100_continue(server, admin_key, s3, bucket) -> None:
    path = f"/{bucket}/forged"
    headers = _signed_head(path, server.port, admin_key, {"Content-Length": "1000", "Expect": "100-continue"})
    headers["x-amz-date"] = headers["X-Amz-Date"] = headers.get("X-Amz-Date", "")[:-1] + "0"
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request_head("PUT", path, server.port, headers))
        head, body = _read_response(sock, timeout=5)
    assert head.startswith(b"HTTP/1.1 403") and b"100 Continue" not in head
    assert error_code(body) in ("SignatureDoesNotMatch", "AccessDenied")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


@pytest.fixture
def strict_server(store_path):
    srv = start_server(
        store_path, "--body-min-rate", "1000", "--body-rate-grace", "1", "--body-timeout", "30", "--header-timeout", "2"
    )
    try:
        yield srv
    finally:
        srv.stop()


def test_trickling_signed_body_is_cut_with_request_timeout(strict_server, store_path) -> None:
    key = create_key(store_path, "--name", "trickle")
    s3 = make_client(strict_server.url, key)
    s3.create_bucket(Bucket="trickle")
    path = "/trickle/slow"
    headers = signed_headers("PUT", f"{strict_server.url}{path}", key, b"x" * 1000, {"Content-Length": "1000"})
    sock = socket.create_connection(("127.0.0.1", strict_server.port))
    try:
        sock.sendall(_request_head("PUT", path, strict_server.port, headers))
        sock.settimeout(0.3)
        began = time.monotonic()
        reply = b""
        for _ in range(40):  # one byte every 0.3 s: far below 1000 bytes/s, never silent for long
            try:
                sock.send(b"x")
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            reply += data
            if not data or b"</Error>" in reply:
                break
        elapsed = time.monotonic() - began
        sock.settimeout(1)
        try:
            while b"</Error>" not in reply and (data := sock.recv(65536)):
                reply += data
        except OSError:
            pass
    finally:
        sock.close()
    assert reply.startswith(b"HTTP/1.1 400") and b"<Code>RequestTimeout</Code>" in reply, reply[:300]
    assert elapsed < 6
    assert "Contents" not in s3.list_objects_v2(Bucket="trickle")
    # The server still serves.
    s3.put_object(Bucket="trickle", Key="ok", Body=b"fine")


def test_trickling_header_section_is_cut(strict_server) -> None:
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"PUT /trickle/h HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.settimeout(0.25)
        began = time.monotonic()
        closed = False
        while time.monotonic() - began < 8:
            try:
                sock.send(b"x")
                if sock.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    assert closed and time.monotonic() - began < 4
