"""Every HTTP response the tests receive, checked by h11 as a strict client.

:func:`install` replaces ``socket.socket`` in this process with a subclass
that records, for each socket that *connects* (a client: ``requests``,
``http.client``, the raw sockets of the tests and of tests/support), the
bytes it sent and the bytes it received.  Sockets a server accepts are left
alone.  At the end of each test (the autouse fixture in
tests/integration/conftest.py) :func:`problems` replays every connection
whose answer starts with ``HTTP/``:

- the requests the client sent (after a PROXY protocol header, if any) are
  split with bridge's own request parser
  (only to know how many there were, their methods and whether they asked to
  close: which side is wrong is h11's business, not this code's);
- the responses are fed to an h11 client that sent those requests: framing,
  status line and header grammar, no body after HEAD or on 204/304, exactly
  one final response per request and nothing after the last.

A response cut off by the server closing (an app that failed mid-body) is
allowed, and so is a close with no answer at all to the last request (a
kept-alive connection closed as the request arrived: the client retries, RFC
9112 §9.3.1); a response the test stopped reading is not judged past what it
read.

TLS client connections are recorded in plaintext on the ``ssl.SSLSocket``
(:class:`CapturingSSLSocket`); the ciphertext under them is skipped (it does
not start with ``HTTP/``).  Not covered: clients in other processes (curl,
wrk, nginx's and Apache's own connections to bridge).
"""
from __future__ import annotations

import re
import socket
import ssl
import threading

import h11

from bridge.http import protocol as bridge_http

#: Past this many bytes either way a connection is not checked (memory).
MAX_CAPTURE = 64 << 20

_real_socket = socket.socket
_lock = threading.Lock()
_captures: list = []
#: What was checked in this process: HTTP connections, responses.
stats = {"connections": 0, "responses": 0}


#: What an HTTP client's first byte can be: a method's tchar, an empty line,
#: a PROXY protocol header.  FastCGI records (1) and TLS (22) are not kept.
_HTTP_FIRST_BYTES = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r\n")


class Capture:
    __slots__ = ("peer", "sent", "received", "eof", "overflow")

    def __init__(self, peer) -> None:
        self.peer = peer
        self.sent = bytearray()
        self.received = bytearray()
        self.eof = False
        self.overflow = False     # too much, or not HTTP: nothing kept, nothing checked

    def add(self, buf: bytearray, data) -> None:
        if self.overflow:
            return
        if buf is self.sent and not buf and len(data) and data[0] not in _HTTP_FIRST_BYTES:
            self.overflow = True
            self.received.clear()
        elif len(buf) + len(data) > MAX_CAPTURE:
            self.overflow = True
            self.sent.clear()
            self.received.clear()
        else:
            buf += data


class CapturingSocket(_real_socket):
    """A socket that keeps what it sends and receives once it has connected."""

    _capture = None

    def _start(self, address) -> None:
        capture = Capture(address)
        self._capture = capture
        with _lock:
            _captures.append(capture)

    def connect(self, address):
        self._start(address)
        return super().connect(address)

    def connect_ex(self, address):
        self._start(address)
        return super().connect_ex(address)

    def send(self, data, *args):
        n = super().send(data, *args)
        if self._capture is not None:
            self._capture.add(self._capture.sent, memoryview(data)[:n])
        return n

    def sendall(self, data, *args):
        result = super().sendall(data, *args)
        if self._capture is not None:
            self._capture.add(self._capture.sent, data)
        return result

    def sendmsg(self, buffers, *args):
        n = super().sendmsg(buffers, *args)
        if self._capture is not None:
            self._capture.add(self._capture.sent, b"".join(bytes(b) for b in buffers)[:n])
        return n

    def recv(self, *args):
        data = super().recv(*args)
        if self._capture is not None and not (args[1:] and args[1] & socket.MSG_PEEK):
            if data:
                self._capture.add(self._capture.received, data)
            else:
                self._capture.eof = True
        return data

    def recv_into(self, buffer, nbytes=0, *args):
        n = super().recv_into(buffer, nbytes, *args)
        if self._capture is not None and not (args and args[0] & socket.MSG_PEEK):
            if n:
                self._capture.add(self._capture.received, memoryview(buffer)[:n])
            elif nbytes != 0 or len(buffer):
                self._capture.eof = True
        return n


class CapturingSSLSocket(ssl.SSLSocket):
    """The same for TLS client connections: the plaintext, on the TLS socket.

    ``ssl.SSLSocket.sendall`` loops over ``send`` and ``recv`` is not
    ``recv_into``, so each byte is recorded once.
    """

    _capture = None

    @classmethod
    def _create(cls, sock, server_side=False, *args, **kwargs):
        self = super()._create(sock, server_side, *args, **kwargs)
        if not server_side:
            capture = Capture(getattr(sock, "_capture", None) and sock._capture.peer)
            self._capture = capture
            with _lock:
                _captures.append(capture)
        return self

    def send(self, data, *args):
        n = super().send(data, *args)
        if self._capture is not None:
            self._capture.add(self._capture.sent, memoryview(data)[:n])
        return n

    def recv(self, buflen=1024, flags=0):
        data = super().recv(buflen, flags)
        if self._capture is not None:
            if data:
                self._capture.add(self._capture.received, data)
            else:
                self._capture.eof = True
        return data

    def recv_into(self, buffer, nbytes=None, flags=0):
        n = super().recv_into(buffer, nbytes, flags)
        if self._capture is not None:
            if n:
                self._capture.add(self._capture.received, memoryview(buffer)[:n])
            else:
                self._capture.eof = True
        return n


_real_sslsocket_class = ssl.SSLContext.sslsocket_class


def install() -> None:
    socket.socket = CapturingSocket
    ssl.SSLContext.sslsocket_class = CapturingSSLSocket


def uninstall() -> None:
    socket.socket = _real_socket
    ssl.SSLContext.sslsocket_class = _real_sslsocket_class


def take_captures() -> list:
    """The connections recorded since the last call (each checked once, at the
    end of the test that opened it; later traffic on it is not)."""
    with _lock:
        out = list(_captures)
        _captures.clear()
    return out


# --------------------------------------------------------------------------
# Checking one connection


_REQUEST_START = re.compile(rb"(?:\r?\n)*[!#$%&'*+.^_`|~0-9A-Za-z-]+ ")


class _Sent:
    __slots__ = ("method", "close")

    def __init__(self, method: bytes, close: bool) -> None:
        self.method = method
        self.close = close


def requests_sent(data: bytes) -> tuple:
    """([_Sent], refused): the requests in the client's bytes, by bridge's parser;
    ``refused`` is true when the stream went on with something it refused (the
    server answers that once, with an error, at most)."""
    out = []
    conn = bridge_http.Connection(bridge_http.Limits(request_line=1 << 20, fields=10_000,
                                                    field_size=1 << 20, body=0))
    conn.receive_data(bytes(data))
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, bridge_http.Request):
                options = [v.strip().lower() for n, v in event.headers if n == "connection" for v in v.split(",")]
                http10 = event.http_version == "1.0"
                close = "close" in options or (http10 and "keep-alive" not in options)
                out.append(_Sent(event.method.encode("latin-1"), close))
            elif isinstance(event, bridge_http.EndOfMessage):
                if not conn.keep_alive:
                    return out, False
                conn.response_head("200 OK", b"", 0, True)
                conn.end_response()
                conn.start_next_cycle()
            elif event is bridge_http.NEED_DATA or event is bridge_http.PAUSED:
                return out, False
    except bridge_http.RemoteProtocolError:
        return out, True


def _h11_request(sent: _Sent) -> h11.Request:
    headers = [("Host", "test")]
    if sent.close:
        headers.append(("Connection", "close"))
    return h11.Request(method=sent.method, target="/", headers=headers)


PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def without_proxy_header(sent: bytes) -> bytes:
    """The client's bytes after a PROXY protocol header (v1 line or v2 block), if any."""
    if sent.startswith(b"PROXY ") and b"\r\n" in sent:
        return sent[sent.index(b"\r\n") + 2:]
    if sent.startswith(PROXY_V2_SIGNATURE) and len(sent) >= 16:
        return sent[16 + int.from_bytes(sent[14:16], "big"):]
    return sent


def check(capture: Capture) -> list:
    """What is wrong with the responses on this connection (empty: nothing)."""
    received = bytes(capture.received)
    sent_bytes = without_proxy_header(bytes(capture.sent))
    if capture.overflow or not received.startswith(b"HTTP/") or not _REQUEST_START.match(sent_bytes):
        return []
    stats["connections"] += 1
    sent, refused = requests_sent(sent_bytes)
    if refused:
        # One error response for what the server refused; its method is
        # unknown (HEAD only if the refused bytes begin so).
        tail_head = sent_bytes.lstrip(b"\r\n").startswith(b"HEAD ") and not sent
        sent.append(_Sent(b"HEAD" if tail_head else b"GET", True))
    if not sent:
        return [f"a response with no request before it: {received[:200]!r}"]
    client = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    pending = list(sent)

    def next_request() -> None:
        request = pending.pop(0)
        client.send(_h11_request(request))
        client.send(h11.EndOfMessage())

    next_request()
    client.receive_data(received)
    if capture.eof:
        client.receive_data(b"")
    responses = 0
    try:
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return []      # the test stopped reading, or the server closed
            if isinstance(event, h11.Response):
                responses += 1
                stats["responses"] += 1
            if not (isinstance(event, h11.EndOfMessage) or event is h11.PAUSED):
                continue
            leftover = bytes(client.trailing_data[0])
            if client.their_state is h11.MUST_CLOSE:
                if leftover:
                    return [f"bytes after a response that closes the connection: {leftover[:200]!r}"]
                return []
            if client.their_state is h11.DONE and client.our_state is h11.DONE:
                if not pending:
                    if leftover:
                        return [f"bytes after the response to the last of {len(sent)} request(s): {leftover[:200]!r}"]
                    return []
                client.start_next_cycle()
                next_request()
    except h11.RemoteProtocolError as exc:
        if capture.eof and "without sending complete message body" in str(exc):
            return []   # cut off by the server on purpose (an app failed mid-body)
        if capture.eof and "ConnectionClosed" in str(exc) and "SEND_RESPONSE" in str(exc) \
                and not client.trailing_data[0]:
            return []   # closed before answering a request that raced the close (RFC 9112 §9.3.1)
        return [f"response {responses + 1} of {len(sent)} is not valid HTTP/1.1 for h11 ({exc}): "
                f"{_around(received)!r}"]


def _around(received: bytes) -> bytes:
    return received[:300] + (b"..." if len(received) > 300 else b"")


def problems(captures: list) -> list:
    out = []
    for capture in captures:
        for problem in check(capture):
            out.append(f"{capture.peer}: {problem}")
    return out
