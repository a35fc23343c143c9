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

Everything that moves the state lives in :class:`ConnectionState` as tables;
the grammar lives in :mod:`bridge.http.abnf`; the body readers and response
writers are small classes picked per framing.
"""
from __future__ import annotations

from bridge.http.abnf import (
    ABSOLUTE_FORM, CHUNK_LINE, FIELD_NAME, HEAD_ALLOWED_BYTES, HOST, HTTP_VERSION, METHOD,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Union

__all__ = [
    "Connection", "Limits", "Request", "Data", "EndOfMessage", "ConnectionClosed",
    "NEED_DATA", "PAUSED", "RemoteProtocolError", "LocalProtocolError",
    "IDLE", "SEND_RESPONSE", "SEND_BODY", "DONE", "MUST_CLOSE", "CLOSED", "ERROR",
    "REASONS",
]

REASONS = {
    100: "Continue", 400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


class RemoteProtocolError(Exception):
    """The client sent something HTTP/1.1 does not allow; answer ``status`` and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(Exception):
    """The server side used the connection out of order (a bug in the caller)."""


# --------------------------------------------------------------------------
# Events


class Request:
    """A complete request head.  All strings are latin-1 "bytes as str"."""

    __slots__ = ("method", "target", "path", "query", "http_version", "headers", "host",
                 "keep_alive", "expect_continue", "content_length", "chunked")

    def __init__(self, method: str, target: str, path: str, query: str, http_version: str,
                 headers: list, host: Optional[str], keep_alive: bool, expect_continue: bool,
                 content_length: Optional[int], chunked: bool) -> None:
        self.method = method
        self.target = target             # as sent, for the access log
        self.path = path                 # still percent-encoded
        self.query = query               # raw, without "?"
        self.http_version = http_version  # "1.1", "1.0"
        self.headers = headers           # [(lower-case name, value)], in order received
        self.host = host                 # Host, or the authority of an absolute-form target
        self.keep_alive = keep_alive     # what the client asked for
        self.expect_continue = expect_continue
        self.content_length = content_length
        self.chunked = chunked

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} HTTP/{self.http_version}>"


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)} bytes>"


class EndOfMessage:
    __slots__ = ("trailers",)

    def __init__(self, trailers: Optional[list] = None) -> None:
        self.trailers = trailers or []

    def __repr__(self) -> str:
        return "<EndOfMessage>"


class ConnectionClosed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<ConnectionClosed>"


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")

# Response-side event kinds (the server "sends" these through the methods below).
RESPONSE = _Sentinel("Response")
INFORMATIONAL = _Sentinel("InformationalResponse")

# --------------------------------------------------------------------------
# State: every transition is in these tables (h11's rule: one place, no role
# tricks).  The client's side follows what it sent; the server's side what
# we sent.

IDLE = _Sentinel("IDLE")
SEND_RESPONSE = _Sentinel("SEND_RESPONSE")
SEND_BODY = _Sentinel("SEND_BODY")
DONE = _Sentinel("DONE")
MUST_CLOSE = _Sentinel("MUST_CLOSE")
CLOSED = _Sentinel("CLOSED")
ERROR = _Sentinel("ERROR")

CLIENT_TRANSITIONS = {
    IDLE: {Request: SEND_BODY, ConnectionClosed: CLOSED},
    SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
    DONE: {ConnectionClosed: CLOSED},
    MUST_CLOSE: {ConnectionClosed: CLOSED},
    CLOSED: {ConnectionClosed: CLOSED},
    ERROR: {},
}
SERVER_TRANSITIONS = {
    IDLE: {ConnectionClosed: CLOSED},
    SEND_RESPONSE: {INFORMATIONAL: SEND_RESPONSE, RESPONSE: SEND_BODY},
    SEND_BODY: {Data: SEND_BODY, EndOfMessage: DONE},
    DONE: {ConnectionClosed: CLOSED},
    MUST_CLOSE: {ConnectionClosed: CLOSED},
    CLOSED: {ConnectionClosed: CLOSED},
    ERROR: {},
}
# A request from the client is what lets the server answer.
SERVER_TRIGGERED_BY_CLIENT = {(IDLE, Request): SEND_RESPONSE}


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
# Limits


class Limits:
    """What a request may be; exceeding one is answered 413/414/431."""

    __slots__ = ("request_line", "fields", "field_size", "body", "chunk_line", "head")

    def __init__(self, request_line: int = 8190, fields: int = 100, field_size: int = 8190,
                 body: int = 1 << 30, chunk_line: int = 4096) -> None:
        self.request_line = request_line   # 414 beyond (bytes, without CRLF)
        self.fields = fields               # 431 beyond (header or trailer lines)
        self.field_size = field_size       # 431 beyond (bytes of one field line)
        self.body = body                   # 413 beyond; 0 = no limit
        self.chunk_line = chunk_line       # 400 beyond (chunk size + extensions)
        self.head = request_line + 2 + fields * (field_size + 2) + 2


DEFAULT_LIMITS = Limits()

# Header names seen before, mapped to their lower-case form: real traffic
# repeats a few dozen names, so the token check runs once per name.
_names: dict = {}
_methods = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
# Fields that decide framing and connection handling (RFC 9112 §6, §9).
_SPECIAL = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))


def parse_fields(lines: list, limits: Limits) -> list:
    """RFC 9112 §5: ``field-name ":" OWS field-value OWS`` lines → [(lower name, value)]."""
    if len(lines) > limits.fields:
        raise RemoteProtocolError(f"more than {limits.fields} header fields", 431)
    fields = []
    append = fields.append
    size = limits.field_size
    for line in lines:
        if len(line) > size:
            raise RemoteProtocolError(f"a header field line is longer than {size} bytes", 431)
        name, colon, value = line.partition(":")
        lname = _names.get(name)
        if lname is None:
            lname = _check_name(line, name, colon)
        append((lname, value.strip(" \t")))
    return fields


def _check_name(line: str, name: str, colon: str) -> str:
    if line[:1] in (" ", "\t"):
        raise RemoteProtocolError("obsolete line folding (a field line starting with whitespace)")
    if not colon:
        raise RemoteProtocolError(f"field line without a colon: {line[:40]!r}")
    if not FIELD_NAME.fullmatch(name):
        if name and name[-1] in " \t":
            raise RemoteProtocolError(f"whitespace between field name and colon: {name!r}")
        raise RemoteProtocolError(f"invalid field name {name[:40]!r}")
    lname = name.lower()
    if len(_names) < 1024:
        _names[name] = lname
    return lname


def _split_lines(head: bytes) -> list:
    """Head bytes (each line ended by CRLF or LF) → lines as latin-1 str.

    RFC 9112 §2.2: a bare LF may end a line (we accept it, old clients send
    it); a bare CR must not appear (rejected); NUL and other controls are
    invalid in a field (rejected, §5.5 of RFC 9110).
    """
    if head.translate(None, HEAD_ALLOWED_BYTES):
        raise RemoteProtocolError("control character in the request head")
    text = head.decode("latin-1")
    crlf = text.count("\r\n")
    if crlf == text.count("\n") == text.count("\r"):
        lines = text.split("\r\n")
    else:
        lines = text.split("\n")
        lines = [line[:-1] if line[-1:] == "\r" else line for line in lines]
        for line in lines:
            if "\r" in line:
                raise RemoteProtocolError("bare CR in the request head")
    lines.pop()   # the empty string after the last line end
    return lines


def _comma_list(values: list) -> list:
    """RFC 9110 §5.6.1 ``#element`` lists, lower-cased, empty elements dropped."""
    out = []
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if item:
                out.append(item.lower())
    return out


def parse_head(lines: list, limits: Limits) -> Request:
    """Request line and fields → :class:`Request`, or RemoteProtocolError."""
    line = lines[0]
    if len(line) > limits.request_line:
        raise RemoteProtocolError(f"request line longer than {limits.request_line} bytes", 414)
    parts = line.split(" ")
    if len(parts) != 3:
        raise RemoteProtocolError(f"malformed request line {line[:80]!r}")
    method, target, version = parts
    if method not in _methods:
        if not METHOD.fullmatch(method):
            raise RemoteProtocolError(f"invalid method {method[:40]!r}")
        if len(_methods) < 64:
            _methods.add(method)
    if version == "HTTP/1.1":
        http11 = True
        http_version = "1.1"
    elif version == "HTTP/1.0":
        http11 = False
        http_version = "1.0"
    else:
        m = HTTP_VERSION.fullmatch(version)
        if m is None:
            raise RemoteProtocolError(f"invalid HTTP version {version[:20]!r}")
        if m[1] != "1":
            raise RemoteProtocolError(f"HTTP version {version} is not supported", 505)
        http11 = m[2] != "0"   # RFC 9110 §2.5: a higher 1.x minor is answered as 1.1
        http_version = version[5:]

    # RFC 9112 §3.2: the four forms of request-target.
    host = None
    first = target[:1]
    if first == "/":
        path, _, query = target.partition("?")
    elif method == "CONNECT":
        raise RemoteProtocolError("CONNECT (tunnelling) is not supported by a WSGI server", 501)
    elif target == "*":
        if method != "OPTIONS":
            raise RemoteProtocolError("asterisk-form target is only for OPTIONS")
        path, query = "*", ""
    else:
        m = ABSOLUTE_FORM.fullmatch(target)
        if m is None or m[1].lower() not in ("http", "https") or (m[3] and m[3][0] not in "/?"):
            raise RemoteProtocolError(f"invalid request target {target[:80]!r}")
        host = m[2].rpartition("@")[2]   # userinfo is deprecated for http(s), RFC 9110 §4.2.4
        path, _, query = (m[3] or "/").partition("?")
        if not path:
            path = "/"
        if not host:
            raise RemoteProtocolError("absolute-form target without a host")
    if "#" in target:
        raise RemoteProtocolError("a fragment is not allowed in a request target")

    headers = parse_fields(lines[1:], limits)

    hosts = lengths = codings = connection = expect = None
    for name, value in headers:
        if name in _SPECIAL:
            if name == "host":
                hosts = (hosts or []) + [value]
            elif name == "content-length":
                lengths = (lengths or []) + [value]
            elif name == "transfer-encoding":
                codings = (codings or []) + [value]
            elif name == "connection":
                connection = (connection or []) + [value]
            else:
                expect = (expect or []) + [value]

    # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    # code to any HTTP/1.1 request message that lacks a Host header field and
    # to any request message that contains more than one Host header field
    # line or a Host header field with an invalid field value."
    if hosts is None:
        if http11:
            raise RemoteProtocolError("HTTP/1.1 request without a Host header")
    elif len(hosts) > 1:
        raise RemoteProtocolError("more than one Host header")
    elif not HOST.fullmatch(hosts[0]):
        raise RemoteProtocolError(f"invalid Host header {hosts[0][:80]!r}")
    elif host is None:
        host = hosts[0]
    # else: §3.2.2, absolute-form wins over the Host header.

    content_length = None
    chunked = False
    if codings is not None:
        # RFC 9112 §6.1: HTTP/1.0 has no transfer codings, so the framing is
        # faulty; §6.3 rule 3: CL and TE together are a smuggling attempt
        # (we do not "let TE win" as the RFC permits: the front end may not).
        if not http11:
            raise RemoteProtocolError("Transfer-Encoding in an HTTP/1.0 request")
        if lengths is not None:
            raise RemoteProtocolError("both Content-Length and Transfer-Encoding")
        names = [c.partition(";")[0].rstrip(" \t") for c in _comma_list(codings)]
        # §6.3 rule 4: chunked must be the final coding, else 400 and close;
        # §7: never applied twice.
        if not names or names[-1] != "chunked" or "chunked" in names[:-1]:
            raise RemoteProtocolError(f"Transfer-Encoding {', '.join(codings)[:80]!r} does not end in chunked")
        if len(names) > 1:
            raise RemoteProtocolError(f"transfer coding {names[0]!r} is not supported", 501)
        chunked = True
    elif lengths is not None:
        # RFC 9110 §8.6: 1*DIGIT; a list of identical values may be taken as one.
        values = set()
        for value in lengths:
            for item in value.split(","):
                item = item.strip(" \t")
                if not (item.isdigit() and item.isascii()):
                    raise RemoteProtocolError(f"invalid Content-Length {value[:40]!r}")
                values.add(int(item))
        if len(values) != 1:
            raise RemoteProtocolError(f"differing Content-Length values {', '.join(lengths)[:80]!r}")
        content_length = values.pop()
        if limits.body and content_length > limits.body:
            raise RemoteProtocolError(f"Content-Length {content_length} exceeds the limit of {limits.body}", 413)

    if connection is None:
        keep_alive = http11
    else:
        options = _comma_list(connection)
        keep_alive = ("close" not in options) if http11 else ("keep-alive" in options and "close" not in options)
    expect_continue = (expect is not None and http11 and "100-continue" in _comma_list(expect)
                       and (chunked or bool(content_length)))
    return Request(method, target, path, query, http_version, headers, host, keep_alive,
                   expect_continue, content_length, chunked)


# --------------------------------------------------------------------------
# Body readers, one per framing (RFC 9112 §6.3).  Each is called with the
# receive buffer and returns Data, EndOfMessage or NEED_DATA.


def _take(buf: bytearray, n: int) -> bytes:
    if n >= len(buf):
        data = bytes(buf)
        buf.clear()
    else:
        data = bytes(buf[:n])
        del buf[:n]
    return data


class NoBody:
    __slots__ = ()

    def __call__(self, buf: bytearray) -> object:
        return EndOfMessage()

    def eof(self) -> None:
        pass


class ContentLengthReader:
    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def __call__(self, buf: bytearray) -> object:
        if not self.remaining:
            return EndOfMessage()
        if not buf:
            return NEED_DATA
        data = _take(buf, self.remaining)
        self.remaining -= len(data)
        return Data(data)

    def eof(self) -> None:
        raise RemoteProtocolError(
            f"client closed the connection with {self.remaining} bytes of the body unsent")


_SIZE, _CHUNK, _CHUNK_END, _TRAILER = range(4)


class ChunkedReader:
    """RFC 9112 §7.1: chunk-size [chunk-ext] CRLF chunk-data CRLF ... last-chunk trailers CRLF."""

    __slots__ = ("state", "remaining", "total", "limits", "trailer_lines", "trailer_bytes")

    def __init__(self, limits: Limits) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.total = 0
        self.limits = limits
        self.trailer_lines: list = []
        self.trailer_bytes = 0

    def __call__(self, buf: bytearray) -> object:
        while True:
            state = self.state
            if state == _CHUNK:
                if not buf:
                    return NEED_DATA
                data = _take(buf, self.remaining)
                self.remaining -= len(data)
                if not self.remaining:
                    self.state = _CHUNK_END
                return Data(data)
            if state == _CHUNK_END:
                if len(buf) < 2:
                    if buf and buf[0] != 13:
                        raise RemoteProtocolError("chunk data not followed by CRLF")
                    return NEED_DATA
                if buf[0] != 13 or buf[1] != 10:
                    raise RemoteProtocolError("chunk data not followed by CRLF")
                del buf[:2]
                self.state = _SIZE
                continue
            line = self._line(buf)
            if line is None:
                return NEED_DATA
            if state == _SIZE:
                m = CHUNK_LINE.fullmatch(line)
                if m is None:
                    raise RemoteProtocolError(f"invalid chunk size line {line[:40]!r}")
                size = int(m[1], 16)
                self.total += size
                if self.limits.body and self.total > self.limits.body:
                    raise RemoteProtocolError(f"chunked body exceeds the limit of {self.limits.body}", 413)
                if size:
                    self.remaining = size
                    self.state = _CHUNK
                else:
                    self.state = _TRAILER
            elif line:
                self.trailer_lines.append(line)
                if len(self.trailer_lines) > self.limits.fields:
                    raise RemoteProtocolError(f"more than {self.limits.fields} trailer fields", 431)
            else:
                return EndOfMessage(parse_fields(self.trailer_lines, self.limits))

    def _line(self, buf: bytearray) -> Optional[str]:
        # Chunk lines and trailers must end in CRLF: a bare LF here is where
        # front ends and back ends disagree, so it is rejected.
        limit = self.limits.chunk_line if self.state == _SIZE else self.limits.field_size
        i = buf.find(b"\n", 0, limit + 2)
        if i < 0:
            if len(buf) >= limit + 2:
                if self.state == _SIZE:
                    raise RemoteProtocolError(f"chunk size line longer than {limit} bytes")
                raise RemoteProtocolError(f"trailer field longer than {limit} bytes", 431)
            return None
        if i == 0 or buf[i - 1] != 13:
            raise RemoteProtocolError("chunk line not ended by CRLF")
        raw = bytes(buf[:i - 1])
        del buf[:i + 1]
        if raw.translate(None, HEAD_ALLOWED_BYTES) or b"\r" in raw:
            raise RemoteProtocolError("control character in a chunk line")
        return raw.decode("latin-1")

    def eof(self) -> None:
        raise RemoteProtocolError("client closed the connection in the middle of a chunked body")


# --------------------------------------------------------------------------
# Response writers, one per framing (RFC 9112 §6.1-§6.3).

_NO_BODY, _LENGTH, _CHUNKED, _UNTIL_CLOSE = range(4)
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_TE_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: A request body the app left unread is read and dropped after the response
#: if it is at most this big; a bigger one means closing the connection.
DRAIN_LIMIT = 256 * 1024

_status_lines: dict = {}


def status_line(status: str) -> bytes:
    line = _status_lines.get(status)
    if line is None:
        line = b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n"
        if len(_status_lines) < 256:
            _status_lines[status] = line
    return line


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
        self._reader: object = None
        self.request: Optional[Request] = None
        self.client_waiting_for_100 = False
        self._writer = _NO_BODY
        self._left = 0
        self.response_status: Optional[int] = None
        self._head_sent = False

    # ---- states, for the caller

    @property
    def their_state(self) -> _Sentinel:
        return self.state.client

    @property
    def our_state(self) -> _Sentinel:
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

    def next_event(self) -> object:
        """The next event, NEED_DATA or PAUSED; raises RemoteProtocolError on bad input."""
        state = self.state
        client = state.client
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
                    self._reader = _NO_BODY_READER
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
        # RFC 9112 §2.2: ignore empty lines received before the request line.
        if buf[0] in (13, 10):
            n = 0
            while n < len(buf) and buf[n] in (13, 10) and n < 64:
                n += 1
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
                raise RemoteProtocolError("request head too large", 431)
            self._scan = n - 2 if n > 2 else 0
            return NEED_DATA
        head = bytes(buf[:head_len])
        del buf[:end]
        self._scan = 0
        if head_len > self.limits.head:
            raise RemoteProtocolError("request head too large", 431)
        return parse_head(_split_lines(head), self.limits)

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
            # waiting for 100 Continue may never send it; a big remainder is
            # not worth reading: either way this connection ends here.
            reader = self._reader
            if self.client_waiting_for_100 or (
                    type(reader) is ContentLengthReader and reader.remaining - len(self._buf) > DRAIN_LIMIT):
                state.no_keep_alive()
        state.server_event(RESPONSE)
        self._head_sent = True
        self.response_status = int(status[:3])
        if not state.keep_alive:
            framing += _CLOSE
        elif request is not None and request.http_version == "1.0":
            framing += _KEEP_ALIVE
        return status_line(status) + header_block + framing + b"\r\n"

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


_NO_BODY_READER = NoBody()
