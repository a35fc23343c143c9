"""Reading requests: the head (request line and fields) and the body, per framing.

As in h11's ``_readers.py``: :func:`parse_head` turns the lines of a complete
head into a :class:`~bridge.http.events.Request` (or a
:class:`~bridge.http.events.RemoteProtocolError` with the status to answer),
and one small reader class per framing of RFC 9112 §6.3 turns the receive
buffer into ``Data`` / ``EndOfMessage`` / ``NEED_DATA``.  The grammar itself
is in :mod:`bridge.abnf`.
"""
from __future__ import annotations

from bridge.abnf import (
    ABSOLUTE_FORM, CHUNK_LINE, FIELD_NAME, HEAD_ALLOWED_BYTES, HOST, HTTP_VERSION, METHOD,
)
from bridge.http.events import NEED_DATA, Data, EndOfMessage, RemoteProtocolError, Request

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


# --------------------------------------------------------------------------
# Limits


class Limits:
    """What a request may be; exceeding one is answered 413/414/431."""

    __slots__ = ("request_line", "fields", "field_size", "body", "chunk_line", "head")

    def __init__(self, request_line: int = 8190, fields: int = 100, field_size: int = 8190,
                 body: int = 1 << 30, chunk_line: int = 4096, header_size: int = 64 * 1024) -> None:
        self.request_line = request_line   # 414 beyond (bytes, without CRLF)
        self.fields = fields               # 431 beyond (header or trailer lines)
        self.field_size = field_size       # 431 beyond (bytes of one field line)
        self.body = body                   # 413 beyond; 0 = no limit
        self.chunk_line = chunk_line       # 400 beyond (chunk size + extensions)
        # 431 beyond: the whole head (request line, fields, line ends), and
        # the whole trailer section.  Without it the per-field limits alone
        # let 100 fields of 8 KiB make an 800 KiB head, held per connection.
        self.head = min(header_size, request_line + 2 + fields * (field_size + 2) + 2)


DEFAULT_LIMITS = Limits()

# Field names that passed the token check, mapped to their lower-case form:
# real traffic repeats a few dozen names, so the check runs once per name.
# The key is the name alone, so a hit says nothing about the rest of the
# line: only a line that has its colon may use it (``X-Foo`` with no colon
# must be refused whether or not ``X-Foo: 1`` came before).
_names: dict = {}
_methods = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
# Fields that decide framing and connection handling (RFC 9112 §6, §9).
_SPECIAL = frozenset(("host", "content-length", "transfer-encoding", "connection", "expect"))

# RFC 9110 §6.5.1: "Many fields cannot be processed outside the header
# section because their evaluation is necessary prior to receiving the
# content, such as those that describe message framing, routing,
# authentication, request modifiers, response controls, or content format.
# A sender MUST NOT generate a trailer field unless the sender knows the
# corresponding header field name's definition permits the field to be sent
# in trailers."  A chunked request whose trailer section carries one of these
# is refused (400): a front end that merges trailers into the header section
# and bridge would not agree on the message.
TRAILER_FORBIDDEN = frozenset((
    # framing (RFC 9112 §6, RFC 9110 §6.6.2)
    "content-length", "transfer-encoding", "trailer",
    # routing and connection control (RFC 9110 §7.2, §7.6, §7.8, §10.1.1)
    "host", "connection", "keep-alive", "proxy-connection", "te", "upgrade", "expect",
    # authentication (RFC 9110 §11.6, §11.7) and state (RFC 6265)
    "authorization", "proxy-authorization", "cookie",
    # content format and request modifiers (RFC 9110 §8.3, §8.4, §14.2)
    "content-type", "content-encoding", "content-range", "range",
))


def parse_fields(lines: list, limits: Limits) -> list:
    """RFC 9112 §5: ``field-name ":" OWS field-value OWS`` lines → [(lower name, value)]."""
    if len(lines) > limits.fields:
        raise RemoteProtocolError(f"more than {limits.fields} header fields", 431)
    fields: list = []
    append = fields.append
    size = limits.field_size
    for line in lines:
        if len(line) > size:
            raise RemoteProtocolError(f"a header field line is longer than {size} bytes", 431)
        name, colon, value = line.partition(":")
        lname = _names.get(name) if colon else None
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


def split_lines(head: bytes) -> list:
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
    # RFC 9112 §3: single SPs separate the parts; a recipient MAY split on
    # any whitespace, so a tab anywhere would let two parsers disagree.
    if "\t" in line:
        raise RemoteProtocolError(f"a tab in the request line {line[:80]!r}")
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
    if method == "CONNECT":
        # Whatever the target's form: a CONNECT must never reach the app as
        # an ordinary request (a front end may already treat it as a tunnel).
        raise RemoteProtocolError("CONNECT (tunnelling) is not supported by a WSGI server", 501)
    if first == "/":
        path, _, query = target.partition("?")
    elif target == "*":
        if method != "OPTIONS":
            raise RemoteProtocolError("asterisk-form target is only for OPTIONS")
        path, query = "*", ""
    else:
        m = ABSOLUTE_FORM.fullmatch(target)
        if m is None or m[1].lower() not in ("http", "https") or (m[3] and m[3][0] not in "/?"):
            raise RemoteProtocolError(f"invalid request target {target[:80]!r}")
        host = m[2]
        # RFC 9110 §4.2.4: "a recipient SHOULD parse for userinfo and treat
        # its presence as an error"; and this authority becomes HTTP_HOST
        # (§3.2.2 below), so it obeys the Host grammar like a Host field.
        if "@" in host:
            raise RemoteProtocolError("userinfo in an absolute-form target (RFC 9110 §4.2.4)")
        if not host:
            raise RemoteProtocolError("absolute-form target without a host")
        if not HOST.fullmatch(host):
            raise RemoteProtocolError(f"invalid host in the request target {host[:80]!r}")
        path, _, query = (m[3] or "/").partition("?")
        if not path:
            path = "/"
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


def _check_trailers(fields: list) -> list:
    """Refuse a trailer section that carries a field only the header section may carry."""
    for name, _ in fields:
        if name in TRAILER_FORBIDDEN:
            raise RemoteProtocolError(f"{name} is not allowed in a trailer section")
    return fields


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
                self.trailer_bytes += len(line) + 2
                if self.trailer_bytes > self.limits.head:
                    raise RemoteProtocolError(f"trailer section larger than {self.limits.head} bytes", 431)
            else:
                return EndOfMessage(_check_trailers(parse_fields(self.trailer_lines, self.limits)))

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


#: The reader of every message without a body: it holds no state, so one serves all.
NO_BODY_READER = NoBody()
