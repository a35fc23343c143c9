"""HTTP/1.1 server side, sans-I/O: bytes in, events out, bytes to send back.

Shaped like h11: the caller owns the socket.  :meth:`Connection.receive_data`
takes what arrived (``b""`` = the client closed), :meth:`Connection.next_event`
returns a :class:`Request`, :class:`Data`, :class:`EndOfMessage`,
:class:`ConnectionClosed`, or the sentinels :data:`NEED_DATA` (read more) and
:data:`PAUSED` (answer the current request first: pipelined requests wait in
the buffer).  The response side returns bytes: :meth:`Connection.response_head`,
:meth:`Connection.frame`, :meth:`Connection.end_response`.

A request the parser will not accept raises :class:`RemoteProtocolError`
carrying the status to answer (400, 413, 414, 431, 501, 505); the connection
is then in the ERROR state and must be closed after that answer
(:meth:`Connection.error_response`).  Strictness lives where request
smuggling does (RFC 9112 §6.3, §11.2); leniency where clients are merely old
(HTTP/1.0, bare LF ending a head line, empty lines before a request).

The parts, as in h11: everything that moves the state lives here, in
:class:`ConnectionState`, as tables; the events and errors in
:mod:`bridge.http.events`; the head parser and the per-framing body readers in
:mod:`bridge.http.readers`; the grammar in :mod:`bridge.abnf`.  The
response writers (Content-Length, chunked, until-close, none) are the
``_writer`` kinds of :class:`Connection`.
"""
from __future__ import annotations

from bridge.http.events import (  # noqa: F401 - re-exported: the protocol's public names
    INFORMATIONAL, NEED_DATA, PAUSED, REASONS, RESPONSE, ConnectionClosed, Data, EndOfMessage,
    LocalProtocolError, RemoteProtocolError, Request, Sentinel,
)
from bridge.http.readers import (  # noqa: F401
    DEFAULT_LIMITS, ChunkedReader, ContentLengthReader, Limits, NO_BODY_READER, parse_fields,
    parse_head, split_lines,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Union

__all__ = [
    "Connection", "Limits", "Request", "Data", "EndOfMessage", "ConnectionClosed",
    "NEED_DATA", "PAUSED", "RemoteProtocolError", "LocalProtocolError",
    "IDLE", "SEND_RESPONSE", "SEND_BODY", "DONE", "MUST_CLOSE", "CLOSED", "ERROR",
    "REASONS",
]


# --------------------------------------------------------------------------
# State: every transition is in these tables (h11's rule: one place, no role
# tricks).  The client's side follows what it sent; the server's side what
# we sent.

IDLE = Sentinel("IDLE")
SEND_RESPONSE = Sentinel("SEND_RESPONSE")
SEND_BODY = Sentinel("SEND_BODY")
DONE = Sentinel("DONE")
MUST_CLOSE = Sentinel("MUST_CLOSE")
CLOSED = Sentinel("CLOSED")
ERROR = Sentinel("ERROR")

CLIENT_TRANSITIONS: dict = {
    IDLE: {Request: SEND_BODY, ConnectionClosed: CLOSED},
    SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
    DONE: {ConnectionClosed: CLOSED},
    MUST_CLOSE: {ConnectionClosed: CLOSED},
    CLOSED: {ConnectionClosed: CLOSED},
    ERROR: {},
}
SERVER_TRANSITIONS: dict = {
    IDLE: {ConnectionClosed: CLOSED},
    SEND_RESPONSE: {INFORMATIONAL: SEND_RESPONSE, RESPONSE: SEND_BODY},
    SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
    DONE: {ConnectionClosed: CLOSED},
    MUST_CLOSE: {ConnectionClosed: CLOSED},
    CLOSED: {ConnectionClosed: CLOSED},
    ERROR: {},
}
# A request from the client is what lets the server answer.
SERVER_TRIGGERED_BY_CLIENT: dict = {(IDLE, Request): SEND_RESPONSE}


class ConnectionState:
    """Both sides' states and the keep-alive flag; nothing else moves them."""

    __slots__ = ("client", "server", "keep_alive")

    def __init__(self) -> None:
        self.client = IDLE
        self.server = IDLE
        self.keep_alive = True

    def client_event(self, kind: type) -> None:
        new = CLIENT_TRANSITIONS[self.client].get(kind)
        if new is None:
            raise LocalProtocolError(f"client cannot send {kind.__name__} in state {self.client}")
        triggered = SERVER_TRIGGERED_BY_CLIENT.get((self.server, kind))
        self.client = new
        if triggered is not None:
            self.server = triggered
        self._settle()

    def server_event(self, kind: object) -> None:
        new = SERVER_TRANSITIONS[self.server].get(kind)
        if new is None:
            raise LocalProtocolError(f"server cannot send {kind!r} in state {self.server}")
        self.server = new
        self._settle()

    def error(self) -> None:
        self.client = self.server = ERROR
        self.keep_alive = False

    def no_keep_alive(self) -> None:
        self.keep_alive = False
        self._settle()

    def _settle(self) -> None:
        # State-triggered transitions: a finished side of a connection that
        # will not be reused can only be closed.
        if not self.keep_alive:
            if self.client is DONE:
                self.client = MUST_CLOSE
            if self.server is DONE:
                self.server = MUST_CLOSE

    def start_next_cycle(self) -> None:
        if self.client is not DONE or self.server is not DONE:
            raise LocalProtocolError(
                f"not ready for another request: client {self.client}, server {self.server}")
        self.client = self.server = IDLE


# --------------------------------------------------------------------------
# Response writers, one per framing (RFC 9112 §6.1-§6.3).

_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: A request body the app left unread is read and dropped after the response
#: if at most this much of it is still to come (and, chunked, if its end has
#: arrived); otherwise the response says ``Connection: close`` and the
#: server closes with a lingering close.
DRAIN_LIMIT = 256 * 1024

_status_lines: dict = {}


def status_line(status: str) -> bytes:
    line = _status_lines.get(status)
    if line is None:
        line = b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n"
        if len(_status_lines) < 256:
            _status_lines[status] = line
    return line


def _chunked_body_ends_in(reader: ChunkedReader, buf: bytearray) -> bool:
    """True if the bytes in ``buf`` complete the chunked body ``reader`` is in
    (neither is changed; a malformed rest counts as not complete)."""
    probe = ChunkedReader(reader.limits)
    probe.state, probe.remaining, probe.total = reader.state, reader.remaining, reader.total
    probe.trailer_lines, probe.trailer_bytes = list(reader.trailer_lines), reader.trailer_bytes
    rest = bytearray(buf)
    try:
        while True:
            event = probe(rest)
            if event is NEED_DATA:
                return False
            if type(event) is EndOfMessage:
                return True
    except RemoteProtocolError:
        return False


class Connection:
    """One server-side HTTP/1.1 connection (sans-I/O)."""

    __slots__ = ("limits", "state", "_buf", "_scan", "_eof", "_reader", "request",
                 "client_waiting_for_100", "_writer", "_left", "response_status", "_head_sent")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.state = ConnectionState()
        self._buf = bytearray()
        self._scan = 0
        self._eof = False
        self._reader: Any = None
        self.request: Optional[Request] = None
        self.client_waiting_for_100 = False
        self._writer = _NO_BODY
        self._left = 0
        self.response_status: Optional[int] = None
        self._head_sent = False

    # ---- states, for the caller

    @property
    def their_state(self) -> Sentinel:
        return self.state.client

    @property
    def our_state(self) -> Sentinel:
        return self.state.server

    @property
    def keep_alive(self) -> bool:
        return self.state.keep_alive

    @property
    def head_in_progress(self) -> bool:
        """Part of a request head has arrived (the header timeout applies)."""
        return self.state.client is IDLE and bool(self._buf)

    @property
    def response_started(self) -> bool:
        """A response head (or error response) went out for the current request."""
        return self._head_sent

    @property
    def trailing_data(self) -> tuple:
        return bytes(self._buf), self._eof

    # ---- input

    def receive_data(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Feed received bytes; ``b""`` means the client closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after end of file")
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Any:
        """The next event, NEED_DATA or PAUSED; raises RemoteProtocolError on bad input."""
        state = self.state
        client = state.client
        event: Any
        try:
            if client is IDLE:
                event = self._read_head()
            elif client is SEND_BODY:
                event = self._reader(self._buf)
            elif client is DONE or client is MUST_CLOSE:
                return PAUSED
            elif client is CLOSED:
                return ConnectionClosed()
            else:
                raise RemoteProtocolError("the connection is in the ERROR state")
            if event is NEED_DATA:
                if not self._eof:
                    return NEED_DATA
                if client is IDLE:
                    if self._buf:
                        raise RemoteProtocolError("client closed the connection in the middle of a request head")
                    event = ConnectionClosed()
                else:
                    self._reader.eof()
            kind = type(event)
            state.client_event(kind)
            if kind is Request:
                self.request = event
                self.response_status = None
                if not event.keep_alive:
                    state.no_keep_alive()
                self.client_waiting_for_100 = event.expect_continue
                if event.chunked:
                    self._reader = ChunkedReader(self.limits)
                elif event.content_length:
                    self._reader = ContentLengthReader(event.content_length)
                else:
                    self._reader = NO_BODY_READER
            elif kind is Data:
                self.client_waiting_for_100 = False
            return event
        except RemoteProtocolError:
            state.error()
            raise

    def _read_head(self) -> object:
        buf = self._buf
        if not buf:
            return NEED_DATA
        # RFC 9112 §2.2: ignore empty lines (CRLF, or a bare LF) received
        # before the request line.  A lone CR is not an empty line: it stays,
        # and the head is refused for its bare CR.
        if buf[0] in (13, 10):
            n = 0
            while n < 64:
                if buf.startswith(b"\n", n):
                    n += 1
                elif buf.startswith(b"\r\n", n):
                    n += 2
                else:
                    break
            del buf[:n]
            self._scan = 0
            if not buf:
                return NEED_DATA
        scan = self._scan
        end = buf.find(b"\n\r\n", scan)
        lf = buf.find(b"\n\n", scan, end + 2 if end >= 0 else len(buf))
        if lf >= 0:
            head_len, end = lf + 1, lf + 2
        elif end >= 0:
            head_len, end = end + 1, end + 3
        else:
            n = len(buf)
            limits = self.limits
            if n > limits.request_line + 2 and buf.find(b"\n", 0, limits.request_line + 2) < 0:
                raise RemoteProtocolError(f"request line longer than {limits.request_line} bytes", 414)
            if n > limits.head:
                raise RemoteProtocolError(f"request head larger than {limits.head} bytes", 431)
            self._scan = n - 2 if n > 2 else 0
            return NEED_DATA
        if end > self.limits.head:   # the whole head, its final empty line included
            raise RemoteProtocolError(f"request head larger than {self.limits.head} bytes", 431)
        head = bytes(buf[:head_len])
        del buf[:end]
        self._scan = 0
        return parse_head(split_lines(head), self.limits)

    # ---- output

    def send_continue(self) -> bytes:
        """``100 Continue`` (send it when the app first reads the body)."""
        self.state.server_event(INFORMATIONAL)
        self.client_waiting_for_100 = False
        return CONTINUE

    def close_after_response(self) -> None:
        """The server will not take another request on this connection."""
        self.state.no_keep_alive()

    def response_head(self, status: str, header_block: bytes, content_length: Optional[int],
                      body_allowed: bool) -> bytes:
        """The status line and header section, framing fields added.

        ``header_block`` is the encoded ``Name: value\\r\\n`` lines (the app's,
        plus Date/Server).  ``content_length`` is the app's Content-Length
        (already among the lines) or None; ``body_allowed`` is false for
        HEAD, 1xx, 204 and 304 (RFC 9110 §6.4.1).
        """
        state = self.state
        request = self.request
        framing = b""
        if not body_allowed:
            self._writer = _NO_BODY
        elif content_length is not None:
            self._writer = _LENGTH
            self._left = content_length
        elif request is not None and request.http_version != "1.0":
            self._writer = _CHUNKED
            framing = _TE_CHUNKED
        else:
            # RFC 9112 §6.3 rule 8: an HTTP/1.0 client reads to the close.
            self._writer = _UNTIL_CLOSE
            state.no_keep_alive()
        if state.client is SEND_BODY:
            # The app answered before reading the whole body.  A client still
            # waiting for 100 Continue may never send it; a remainder that
            # cannot be drained is not worth reading: either way this
            # connection ends here (with Connection: close, then a lingering
            # close, so the client reads the answer instead of a reset).
            if self.client_waiting_for_100 or not self._rest_can_be_drained():
                state.no_keep_alive()
        state.server_event(RESPONSE)
        self._head_sent = True
        self.response_status = int(status[:3])
        if not state.keep_alive:
            framing += _CLOSE
        elif request is not None and request.http_version == "1.0":
            framing += _KEEP_ALIVE
        return status_line(status) + header_block + framing + b"\r\n"

    def _rest_can_be_drained(self) -> bool:
        """Whether the unread rest of the request body may be read and dropped
        after the response, keeping the connection.

        A Content-Length body: when at most DRAIN_LIMIT bytes of it have not
        arrived yet.  A chunked body's size is unknown until its last chunk,
        so only when that has already arrived (found by running a copy of its
        reader over a copy of the buffer: the app may still read the body).
        """
        reader = self._reader
        if type(reader) is ContentLengthReader:
            return reader.remaining - len(self._buf) <= DRAIN_LIMIT
        if type(reader) is ChunkedReader:
            return _chunked_body_ends_in(reader, self._buf)
        return True

    def frame(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire (chunked framing on HTTP/1.1)."""
        writer = self._writer
        if writer == _CHUNKED:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if writer == _LENGTH:
            self._left -= len(data)
            if self._left < 0:
                raise LocalProtocolError("response body longer than its Content-Length")
        elif writer == _NO_BODY:
            return b""
        return data

    def chunk_parts(self, data: bytes) -> tuple:
        """Like :meth:`frame`, as buffers for ``sendmsg`` (no copy of a big body)."""
        if self._writer == _CHUNKED:
            return (b"%x\r\n" % len(data), data, b"\r\n")
        return (self.frame(data),)

    def raw_body(self, n: int) -> bool:
        """``n`` body bytes will be sent as they are (``os.sendfile``).

        False when the framing needs them framed (chunked): send them through
        :meth:`frame` instead.
        """
        writer = self._writer
        if writer == _CHUNKED:
            return False
        if writer == _LENGTH:
            self._left -= n
            if self._left < 0:
                raise LocalProtocolError("response body longer than its Content-Length")
        return True

    def end_response(self) -> bytes:
        """Bytes that end the response (the last chunk), and the state change."""
        writer = self._writer
        if writer == _LENGTH and self._left:
            raise LocalProtocolError(f"response ended {self._left} bytes short of its Content-Length")
        self.state.server_event(EndOfMessage)
        return _LAST_CHUNK if writer == _CHUNKED else b""

    def start_next_cycle(self) -> None:
        """Both sides are DONE on a kept-alive connection: read the next request."""
        self.state.start_next_cycle()
        self._head_sent = False
        self.response_status = None
        self.request = None
        self._reader = None
        self.client_waiting_for_100 = False

    def error_response(self, status: int, extra: bytes = b"") -> Optional[bytes]:
        """A complete ``Connection: close`` response for a protocol error.

        None when a response head was already sent (the connection can only be
        cut off).  The connection goes to ERROR: close it after sending.
        """
        self.state.error()
        if self._head_sent:
            return None
        self._head_sent = True
        reason = REASONS.get(status, "Error")
        body = f"{reason}\n".encode("ascii")
        self.response_status = status
        return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n").encode("ascii") + extra + _CLOSE + b"\r\n" + body

