"""The strict-client check the integration tests run on every response (tests/support/strict_client.py)."""
import socket
import threading

import pytest

from support import strict_client
from support.strict_client import Capture, CapturingSocket, check

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def capture(sent: bytes, received: bytes, eof: bool = True) -> list:
    c = Capture("test")
    c.sent += sent
    c.received += received
    c.eof = eof
    return check(c)


@pytest.mark.parametrize("sent, received, eof", [(*case, True)[:3] for case in [
    (GET, OK),
    (GET + GET, OK + OK),
    (HEAD, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
    (GET, b"HTTP/1.1 100 Continue\r\n\r\n" + OK),
    (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"),
    (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi"),          # cut off by the server
    (GET + GET, OK + b"HTTP/1.1 200", False),                          # the test stopped reading
    (GET + GET, OK),                           # closed as the second request arrived
    (GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + GET + GET, OK + OK),
    (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12) + GET + GET, OK + OK),
]])
def test_valid_exchanges_pass(sent, received, eof):
    assert capture(sent, received, eof) == []


@pytest.mark.parametrize("sent, received, problem", [
    (GET, OK + OK, "after the response to the last"),
    (HEAD, OK, "after the response to the last"),
    (GET, b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nhi", "after the response to the last"),
    (GET, b"HTTP/1.1 304 Not Modified\r\n\r\nhi", "after the response to the last"),
    (GET, b"HTTP/1.1 200 OK\r\nX y: 1\r\nContent-Length: 0\r\n\r\n", "not valid"),
    (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", "not valid"),
    (GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "not valid"),
    (GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhiXX", "closes the connection"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n" + GET, OK + OK, "after the response to the last"),
    (GET + GET, OK + b"HTTP/1.1 200 OK\r\nContent-Le", "not valid"),  # closed inside a head
])
def test_invalid_responses_are_reported(sent, received, problem):
    (found,) = capture(sent, received)
    assert problem in found


def test_a_connecting_socket_records_both_directions_and_a_server_socket_nothing():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve():
        conn, _ = listener.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhihi")   # two bytes too many
        conn.close()
    thread = threading.Thread(target=serve)
    thread.start()
    strict_client.take_captures()
    client = CapturingSocket()
    client.connect(listener.getsockname())
    client.sendall(GET)
    with client.makefile("rb") as f:
        f.read()
    client.close()
    thread.join(5)
    listener.close()
    (recorded,) = strict_client.take_captures()
    assert bytes(recorded.sent) == GET and recorded.eof
    (found,) = strict_client.problems([recorded])
    assert "after the response to the last" in found
