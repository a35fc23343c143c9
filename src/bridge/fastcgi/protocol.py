"""FastCGI 1.0, sans-I/O: bytes in, records and events out, bytes to send back.

This module never touches a socket (no ``socket``, ``select`` or
``threading`` import): the caller reads and writes, this code only parses
and frames.  Everything here can be tested with byte strings.

Part 1, the record layer, is role-neutral (a client such as
``bridge.compose`` uses it too): constants, :func:`encode_record`,
:func:`encode_pairs`, :func:`decode_pairs`, :class:`RecordReader`, and the
small bodies of BEGIN_REQUEST / END_REQUEST / UNKNOWN_TYPE.

Section numbers refer to the FastCGI Specification 1.0 (Open Market, 1996).
"""
from __future__ import annotations

import io
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Tuple, Union
    Pairs = Union[dict, Iterable[Tuple[bytes, bytes]]]
    Record = Tuple[int, int, bytes]

__all__ = [
    "VERSION_1", "HEADER_LEN", "MAX_CONTENT", "NULL_REQUEST_ID",
    "BEGIN_REQUEST", "ABORT_REQUEST", "END_REQUEST", "PARAMS", "STDIN",
    "STDOUT", "STDERR", "DATA", "GET_VALUES", "GET_VALUES_RESULT",
    "UNKNOWN_TYPE", "RESPONDER", "AUTHORIZER", "FILTER", "KEEP_CONN",
    "REQUEST_COMPLETE", "CANT_MPX_CONN", "OVERLOADED", "UNKNOWN_ROLE",
    "MAX_CONNS", "MAX_REQS", "MPXS_CONNS",
    "ProtocolError", "encode_record", "record_header", "encode_pairs", "decode_pairs",
    "RecordReader", "encode_begin_request", "decode_begin_request",
    "encode_end_request", "decode_end_request", "encode_unknown_type",
    "record_name",
]

# --------------------------------------------------------------------------
# §8 constants

#: §3.3: "FCGI_VERSION_1 1" -- the only version there is.
VERSION_1 = 1

#: §3.3 / §8: "FCGI_HEADER_LEN 8".
HEADER_LEN = 8

#: contentLength is an unsigned 16-bit field (§3.3): at most 65535 bytes per record.
MAX_CONTENT = 0xFFFF

#: §3.3: requestId 0 is reserved for management records.
NULL_REQUEST_ID = 0

# §8: values for the type component of FCGI_Header
BEGIN_REQUEST = 1
ABORT_REQUEST = 2
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
DATA = 8
GET_VALUES = 9
GET_VALUES_RESULT = 10
UNKNOWN_TYPE = 11
MAXTYPE = UNKNOWN_TYPE

# §8: mask for flags component of FCGI_BeginRequestBody
KEEP_CONN = 1

# §8: values for role component of FCGI_BeginRequestBody
RESPONDER = 1
AUTHORIZER = 2
FILTER = 3

# §8: values for protocolStatus component of FCGI_EndRequestBody
REQUEST_COMPLETE = 0
CANT_MPX_CONN = 1
OVERLOADED = 2
UNKNOWN_ROLE = 3

# §4.1: variable names for FCGI_GET_VALUES / FCGI_GET_VALUES_RESULT records
MAX_CONNS = b"FCGI_MAX_CONNS"
MAX_REQS = b"FCGI_MAX_REQS"
MPXS_CONNS = b"FCGI_MPXS_CONNS"

_NAMES = {
    BEGIN_REQUEST: "BEGIN_REQUEST", ABORT_REQUEST: "ABORT_REQUEST",
    END_REQUEST: "END_REQUEST", PARAMS: "PARAMS", STDIN: "STDIN",
    STDOUT: "STDOUT", STDERR: "STDERR", DATA: "DATA", GET_VALUES: "GET_VALUES",
    GET_VALUES_RESULT: "GET_VALUES_RESULT", UNKNOWN_TYPE: "UNKNOWN_TYPE",
}


def record_name(rtype: int) -> str:
    """``"PARAMS"`` for 4, ``"type 42"`` for an unknown type (for log messages)."""
    return _NAMES.get(rtype) or f"type {rtype}"


class ProtocolError(Exception):
    """The peer sent bytes that are not FastCGI 1.0.

    The connection cannot be trusted any further: the caller logs
    ``str(exc)`` and closes it.  Other connections are unaffected.
    """


# --------------------------------------------------------------------------
# §3.3 records
#
#   typedef struct {
#       unsigned char version;
#       unsigned char type;
#       unsigned char requestIdB1;
#       unsigned char requestIdB0;
#       unsigned char contentLengthB1;
#       unsigned char contentLengthB0;
#       unsigned char paddingLength;
#       unsigned char reserved;
#       unsigned char contentData[contentLength];
#       unsigned char paddingData[paddingLength];
#   } FCGI_Record;

_header = struct.Struct(">BBHHBx")
_pack_header = _header.pack
_unpack_header = _header.unpack_from

#: Zero bytes for padding, sliced rather than allocated per record.
_PADDING = bytes(8)


def _one_record(rtype: int, request_id: int, content: bytes) -> bytes:
    # §3.3: "We recommend that records be placed on boundaries that are
    # multiples of eight bytes": pad content to a multiple of 8.
    pad = -len(content) & 7
    return _pack_header(VERSION_1, rtype, request_id, len(content), pad) + content + _PADDING[:pad]


def record_header(rtype: int, request_id: int, length: int) -> bytes:
    """The header of a record whose ``length`` content bytes the caller sends
    itself (``os.sendfile``), padded like every record here (§3.3): the
    caller sends ``-length & 7`` zero bytes after the content."""
    return _pack_header(VERSION_1, rtype, request_id, length, -length & 7)


def encode_record(rtype: int, request_id: int, content: bytes = b"") -> bytes:
    """Frame ``content`` as one or more records of ``rtype`` for ``request_id``.

    Content longer than 65535 bytes is split into several records; each is
    padded to a multiple of 8 bytes (§3.3).  Empty content gives one empty
    record, which for a stream type (PARAMS, STDIN, STDOUT, STDERR, DATA)
    marks the end of the stream (§3.3 "Stream records").
    """
    if not 0 <= rtype <= 255:
        raise ValueError(f"record type must fit a byte, got {rtype}")
    if not 0 <= request_id <= 0xFFFF:
        raise ValueError(f"request id must fit 16 bits, got {request_id}")
    n = len(content)
    if n <= MAX_CONTENT:
        return _one_record(rtype, request_id, bytes(content))
    return b"".join(frame_buffers(rtype, request_id, (content,)))


def frame_buffers(rtype: int, request_id: int, pieces) -> list:
    """Records of ``rtype`` carrying ``pieces`` back to back, as a list of buffers.

    For ``os.writev``: the content is never copied, only sliced (memoryview),
    however large.  Joining 1 MiB responses into one bytes object cost more
    than the rest of the request (a fresh allocation per response, its pages
    faulted in each time).  Records hold at most 65535 bytes, each padded to
    a multiple of 8 (§3.3); no pieces, or only empty ones, give ``[]``.
    """
    total = 0
    for piece in pieces:
        total += len(piece)
    if not total:
        return []
    if total <= MAX_CONTENT:
        pad = -total & 7
        out = [_pack_header(VERSION_1, rtype, request_id, total, pad)]
        out += [piece for piece in pieces if piece]
        if pad:
            out.append(_PADDING[:pad])
        return out
    out = []
    room = pad = 0
    for piece in pieces:
        n = len(piece)
        view = None
        i = 0
        while i < n:
            if not room:
                if pad:
                    out.append(_PADDING[:pad])
                room = MAX_CONTENT if total > MAX_CONTENT else total
                total -= room
                pad = -room & 7
                out.append(_pack_header(VERSION_1, rtype, request_id, room, pad))
            take = room if room < n - i else n - i
            if take == n:
                out.append(piece)
            else:
                if view is None:
                    view = memoryview(piece)
                out.append(view[i:i + take])
            i += take
            room -= take
    if pad:
        out.append(_PADDING[:pad])
    return out


class RecordReader:
    """Incremental record parser: :meth:`feed` bytes, get complete records.

    Bytes may arrive split anywhere (inside a header, the content or the
    padding); whatever is incomplete waits for the next :meth:`feed`.  Each
    record is a tuple ``(type, request_id, content)``; padding is dropped.
    A header with a version other than 1 raises :class:`ProtocolError`,
    which is the only check that can tell garbage from a record.  The buffer
    never holds more than one incomplete record (at most 8 + 65535 + 255 bytes).
    """

    __slots__ = ("_buf", "_need")

    def __init__(self) -> None:
        self._buf = bytearray()   # an incomplete record, grown in place
        self._need = 0            # bytes that record needs before parsing is worth it

    def feed(self, data) -> list:
        """Add ``data`` (bytes, or a memoryview of a reused receive buffer:
        nothing of it is kept); return the list of records it completed."""
        records = []
        pos = 0
        end = len(data)
        pending = self._buf
        if pending:
            # Complete the record begun earlier with only the bytes it lacks;
            # the rest of ``data`` is parsed where it is.  Bytes trickling in
            # are appended in place: linear cost, however small the pieces.
            while True:
                take = self._need - len(pending)
                if take > end - pos:
                    pending += data[pos:]
                    return records
                pending += data[pos:pos + take]
                pos += take
                version, rtype, request_id, clen, plen = _unpack_header(pending, 0)
                if version != VERSION_1:
                    raise ProtocolError(
                        f"not a FastCGI 1 record: version byte {version} (header {pending[:8].hex()})")
                full = HEADER_LEN + clen + plen
                if len(pending) < full:
                    self._need = full
                    continue
                records.append((rtype, request_id, bytes(pending[HEADER_LEN:HEADER_LEN + clen])))
                pending.clear()
                break
        copy = type(data) is not bytes     # slices of a view must become bytes
        need = HEADER_LEN
        while end - pos >= HEADER_LEN:
            version, rtype, request_id, clen, plen = _unpack_header(data, pos)
            if version != VERSION_1:
                raise ProtocolError(
                    f"not a FastCGI 1 record: version byte {version} (header {data[pos:pos + 8].hex()})")
            stop = pos + HEADER_LEN + clen
            if stop + plen > end:
                need = HEADER_LEN + clen + plen
                break
            content = data[pos + HEADER_LEN:stop]
            records.append((rtype, request_id, bytes(content) if copy else content))
            pos = stop + plen
        if pos < end:
            pending += data[pos:]
            self._need = need
        return records

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record waiting for more input."""
        return len(self._buf)

    def check_complete(self) -> None:
        """At end of input: raise :class:`ProtocolError` if a record was cut off."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise ProtocolError(f"connection closed inside a record ({n} bytes of it received)")


# --------------------------------------------------------------------------
# §3.4 name-value pairs
#
#   nameLength and valueLength: one byte when < 128 (high bit clear),
#   otherwise four bytes, high bit set: ((B3 & 0x7f) << 24) + (B2 << 16) + (B1 << 8) + B0.

_len4 = struct.Struct(">I")


def _encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n > 0x7FFFFFFF:
        raise ValueError(f"name or value too long for FastCGI ({n} bytes)")
    return _len4.pack(n | 0x80000000)


def _as_bytes(value: Union[bytes, str]) -> bytes:
    # PEP 3333 "bytes as str": a str stands for its latin-1 bytes.
    return value.encode("latin-1") if isinstance(value, str) else bytes(value)


def encode_pairs(pairs: Pairs) -> bytes:
    """Encode name-value pairs (§3.4) into the content of PARAMS or GET_VALUES records.

    ``pairs`` is a dict or an iterable of ``(name, value)``; names and values
    are bytes (a ``str`` is taken as latin-1).  The result may be longer than
    one record: pass it to :func:`encode_record`, which splits it.
    """
    items = pairs.items() if isinstance(pairs, dict) else pairs
    out = []
    for name, value in items:
        name = _as_bytes(name)
        value = _as_bytes(value)
        out.append(_encode_length(len(name)))
        out.append(_encode_length(len(value)))
        out.append(name)
        out.append(value)
    return b"".join(out)


def decode_pairs(data: bytes) -> list:
    """Decode a complete name-value pair stream (§3.4) into ``[(name, value), ...]``.

    ``data`` must be the whole stream (all PARAMS contents joined): a pair or
    a length cut off at the end raises :class:`ProtocolError`.
    """
    pairs = []
    pos = 0
    end = len(data)
    try:
        while pos < end:
            n = data[pos]
            if n & 0x80:
                n = _len4.unpack_from(data, pos)[0] & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
            v = data[pos]
            if v & 0x80:
                v = _len4.unpack_from(data, pos)[0] & 0x7FFFFFFF
                pos += 4
            else:
                pos += 1
            stop = pos + n + v
            if stop > end:
                raise ProtocolError(
                    f"name-value pair runs past the end of the stream ({n}+{v} bytes announced, {end - pos} left)")
            pairs.append((data[pos:pos + n], data[pos + n:stop]))
            pos = stop
    except (IndexError, struct.error):
        raise ProtocolError("name-value stream ends inside a length") from None
    return pairs


# --------------------------------------------------------------------------
# §5.1 FCGI_BeginRequestBody, §5.5 FCGI_EndRequestBody, §4.2 FCGI_UnknownTypeBody

_begin = struct.Struct(">HB5x")
_end = struct.Struct(">IB3x")
_unknown = struct.Struct(">B7x")


def encode_begin_request(role: int, flags: int = 0) -> bytes:
    """The 8-byte body of BEGIN_REQUEST: ``role`` (RESPONDER...) and ``flags`` (KEEP_CONN)."""
    return _begin.pack(role, flags)


def decode_begin_request(content: bytes) -> tuple:
    """``(role, flags)`` from a BEGIN_REQUEST body; :class:`ProtocolError` if it is not 8 bytes."""
    if len(content) != 8:
        raise ProtocolError(f"BEGIN_REQUEST body is {len(content)} bytes, not 8")
    return _begin.unpack(content)


def encode_end_request(app_status: int = 0, protocol_status: int = REQUEST_COMPLETE) -> bytes:
    """The 8-byte body of END_REQUEST (appStatus is 32 bits unsigned, like an exit status)."""
    return _end.pack(app_status & 0xFFFFFFFF, protocol_status)


def decode_end_request(content: bytes) -> tuple:
    """``(app_status, protocol_status)`` from an END_REQUEST body."""
    if len(content) != 8:
        raise ProtocolError(f"END_REQUEST body is {len(content)} bytes, not 8")
    return _end.unpack(content)


def encode_unknown_type(rtype: int) -> bytes:
    """The body of UNKNOWN_TYPE naming the management record type not understood (§4.2)."""
    return _unknown.pack(rtype)


# ==========================================================================
# Part 2: the application (server) side of a transport connection.
#
# One Request object per in-flight request, kept in a dict keyed by request
# id (§3.3: "the application keeps track of the state of each request ID on
# a given transport connection"), so multiplexing needs no special case.
# Records are dispatched through a table by type.  PARAMS are buffered until
# the empty PARAMS record and parsed once: a pair, or even a length prefix,
# may straddle two records.

#: Request states.  A request is *ready* when everything the app needs has
#: arrived: PARAMS and STDIN for a Responder (§6.2), PARAMS only for an
#: Authorizer (§6.3: it gets no request body), PARAMS, STDIN and DATA for a
#: Filter (§6.4).
PARAMS_STATE = "PARAMS"
INPUT_STATE = "INPUT"
RUNNING_STATE = "RUNNING"

ROLE_NAMES = {RESPONDER: "RESPONDER", AUTHORIZER: "AUTHORIZER", FILTER: "FILTER"}

_REASONS = {
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


class LocalProtocolError(Exception):
    """This side misused the connection (output for a request that has ended)."""


class Request:
    """One request in flight on a connection.

    ``params`` is a dict of str (latin-1 "bytes as str", PEP 3333) once
    PARAMS ended; ``stdin`` and ``data`` are binary file objects positioned
    at 0 once the request is ready (``io.BytesIO``, or a temporary file
    when the body passed the spool threshold).
    """

    __slots__ = ("id", "role", "keep_conn", "state", "params", "stdin", "data",
                 "stdin_length", "data_length", "aborted", "stderr_used", "input_terminated",
                 "_params_parts", "_params_size", "_stdin_parts", "_data_parts",
                 "_stdin_done", "_data_done")

    def __init__(self, request_id: int, role: int, keep_conn: bool) -> None:
        self.id = request_id
        self.role = role
        self.keep_conn = keep_conn
        self.state = PARAMS_STATE
        self.params: dict = {}
        self.stdin = None
        self.data = None
        self.stdin_length = 0
        self.data_length = 0
        self.aborted = False
        self.stderr_used = False
        #: True when the web server sent no CONTENT_LENGTH: the body was
        #: ended by the empty STDIN record (PEP 3333 ``wsgi.input_terminated``).
        self.input_terminated = False
        self._params_parts: list = []
        self._params_size = 0
        self._stdin_parts: list = []
        self._data_parts: list = []
        self._stdin_done = role == AUTHORIZER
        self._data_done = role != FILTER

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, str(self.role))

    def __repr__(self) -> str:
        return f"<fastcgi.Request {self.id} {self.role_name} {self.state}>"


# Events returned by ServerConnection.receive_data().

class RequestReady:
    """Everything the app needs has arrived: run it, then call ``end_request``."""
    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def __repr__(self) -> str:
        return f"RequestReady({self.request!r})"


class RequestAborted:
    """ABORT_REQUEST (§5.4).

    ``running`` false: the request was still arriving; it is dropped and its
    END_REQUEST is already queued.  ``running`` true: the app has it; the
    caller stops the response and calls ``end_request``.
    """
    __slots__ = ("request_id", "running")

    def __init__(self, request_id: int, running: bool) -> None:
        self.request_id = request_id
        self.running = running

    def __repr__(self) -> str:
        return f"RequestAborted({self.request_id}, running={self.running})"


class RequestRejected:
    """The request broke a limit or the stream rules; an error response and
    END_REQUEST are already queued.  ``reason`` is for the log."""
    __slots__ = ("request_id", "status", "reason")

    def __init__(self, request_id: int, status: int, reason: str) -> None:
        self.request_id = request_id
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"RequestRejected({self.request_id}, {self.status}, {self.reason!r})"


class RecordIgnored:
    """A record the spec says to ignore (unknown request id), or a refused
    BEGIN_REQUEST (unknown role, overloaded): worth a log line, nothing more."""
    __slots__ = ("rtype", "request_id", "reason")

    def __init__(self, rtype: int, request_id: int, reason: str) -> None:
        self.rtype = rtype
        self.request_id = request_id
        self.reason = reason

    def __repr__(self) -> str:
        return f"RecordIgnored({record_name(self.rtype)}, {self.request_id}, {self.reason!r})"


def _error_response(status: int, message: str) -> bytes:
    """A CGI response (§6.2: the Responder writes a CGI/1.1 response to STDOUT)."""
    body = f"{status} {_REASONS.get(status, 'Error')}: {message}\n".encode("latin-1", "replace")
    return (f"Status: {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1") + body


def _is_decimal(text: str) -> bool:
    """ASCII digits only: ``str.isdigit()`` is also true for "\xb2" (superscript
    two) and other characters ``int()`` refuses (RFC 3875 §4.1.2: 1*digit)."""
    return text.isdigit() and text.isascii()


def _default_spool():
    import tempfile
    return tempfile.TemporaryFile()


def _parse_params(data: bytes) -> dict:
    """The complete PARAMS stream as a dict of latin-1 str (last duplicate wins).

    Lengths are read from the bytes, names and values sliced from one
    latin-1 decoding of the whole stream (latin-1 maps byte i to character
    i, so the offsets agree): one decode per request instead of two per pair.
    """
    text = data.decode("latin-1")
    params = {}
    pos = 0
    end = len(data)
    unpack = _len4.unpack_from
    try:
        while pos < end:
            n = data[pos]
            v = data[pos + 1]
            if n < 0x80 and v < 0x80:
                pos += 2        # the common case: two one-byte lengths
            else:
                if n & 0x80:
                    n = unpack(data, pos)[0] & 0x7FFFFFFF
                    pos += 4
                else:
                    pos += 1
                v = data[pos]
                if v & 0x80:
                    v = unpack(data, pos)[0] & 0x7FFFFFFF
                    pos += 4
                else:
                    pos += 1
            mid = pos + n
            stop = mid + v
            if stop > end:
                raise ProtocolError("a name-value pair runs past the end of PARAMS")
            params[text[pos:mid]] = text[mid:stop]
            pos = stop
    except (IndexError, struct.error):
        raise ProtocolError("PARAMS end inside a length prefix") from None
    return params


class ServerConnection:
    """The application's side of one FastCGI transport connection, without I/O.

    Feed received bytes to :meth:`receive_data`; it returns events
    (:class:`RequestReady`, :class:`RequestAborted`, :class:`RequestRejected`,
    :class:`RecordIgnored`) and queues replies it can give by itself
    (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST for a refused role, error
    responses) for :meth:`data_to_send`.  Frame the app's output with
    :meth:`stdout` / :meth:`stderr` and finish with :meth:`end_request`
    (or :meth:`respond` for a complete response in one buffer).

    Garbage raises :class:`ProtocolError` and nothing else; the caller then
    closes the connection.  Faults of one request (oversized PARAMS, a
    short body) end that request only.
    """

    def __init__(self, *, max_conns: int = 1, max_reqs: int = 1, multiplex: bool = True,
                 max_params: int = 128 << 10, max_body: int = 0,
                 spool_threshold: int = 1 << 20, max_in_flight: int = 64,
                 spool=_default_spool) -> None:
        self.requests: dict = {}
        self.must_close = False       # KEEP_CONN was 0 and its request ended
        self.requests_seen = 0
        self._reader = RecordReader()
        self._out: list = []
        self._ended: set = set()      # ids whose late records are dropped silently
        self._max_params = max_params
        self._max_body = max_body
        self._threshold = spool_threshold
        self._max_in_flight = max(1, max_in_flight)
        self._multiplex = multiplex
        self._spool = spool
        self._limits = (max_conns, max_reqs, multiplex)   # GET_VALUES answers

    # ---- input -------------------------------------------------------------

    def receive_data(self, data: bytes) -> list:
        """Feed bytes from the peer; return the events they complete."""
        events: list = []
        dispatch = _DISPATCH
        for rtype, request_id, content in self._reader.feed(data):
            handler = dispatch.get(rtype)
            if handler is None or (request_id == NULL_REQUEST_ID) != (rtype == GET_VALUES):
                self._on_unknown(rtype, request_id, content, events)
            else:
                handler(self, request_id, content, events)
        return events

    def receive_eof(self) -> None:
        """The peer closed its side: :class:`ProtocolError` if it stopped inside a record."""
        self._reader.check_complete()

    def data_to_send(self) -> bytes:
        """Replies queued by :meth:`receive_data` (management answers, refusals)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # ---- record handlers (one per record type) ----------------------------

    def _on_unknown(self, rtype: int, request_id: int, content: bytes, events: list) -> None:
        # §4.2: a management record of a type we do not understand gets
        # FCGI_UNKNOWN_TYPE; so does any record type this side never
        # receives (STDOUT, END_REQUEST...) or an application record on the
        # management id, as Go's net/http/fcgi does.
        self._out.append(_one_record(UNKNOWN_TYPE, NULL_REQUEST_ID, encode_unknown_type(rtype)))
        events.append(RecordIgnored(rtype, request_id, "unknown record type: answered UNKNOWN_TYPE"))

    def _on_get_values(self, request_id: int, content: bytes, events: list) -> None:
        # §4.1: answer the variables we know, omit the others.
        wanted = decode_pairs(content)
        max_conns, max_reqs, multiplex = self._limits
        values = {
            MAX_CONNS: str(max_conns).encode(),
            MAX_REQS: str(max_reqs).encode(),
            MPXS_CONNS: b"1" if multiplex else b"0",
        }
        answer = [(name, values[name]) for name, _ in wanted if name in values]
        self._out.append(encode_record(GET_VALUES_RESULT, NULL_REQUEST_ID, encode_pairs(answer)))

    def _on_begin(self, request_id: int, content: bytes, events: list) -> None:
        role, flags = decode_begin_request(content)
        if request_id in self.requests:
            raise ProtocolError(f"BEGIN_REQUEST for request {request_id}, which is already in flight")
        self._ended.discard(request_id)
        refusal = None
        if role not in ROLE_NAMES:
            refusal = UNKNOWN_ROLE, f"unknown role {role}"                      # §5.5
        elif self.requests and not self._multiplex:
            refusal = CANT_MPX_CONN, "a request is already in flight on this connection"
        elif len(self.requests) >= self._max_in_flight:
            refusal = OVERLOADED, f"{len(self.requests)} requests already in flight on this connection"
        if refusal is not None:
            self._ended.add(request_id)
            self._out.append(_one_record(END_REQUEST, request_id, encode_end_request(0, refusal[0])))
            if not flags & KEEP_CONN and not self.requests:
                self.must_close = True
            events.append(RecordIgnored(BEGIN_REQUEST, request_id, f"refused: {refusal[1]}"))
            return
        self.requests[request_id] = Request(request_id, role, bool(flags & KEEP_CONN))
        self.requests_seen += 1

    def _live(self, rtype: int, request_id: int, events: list):
        request = self.requests.get(request_id)
        if request is None and request_id not in self._ended:
            # §3.3: records for inactive request ids are ignored.
            events.append(RecordIgnored(rtype, request_id, "no such request in flight: ignored"))
        return request

    def _on_abort(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(ABORT_REQUEST, request_id, events)
        if request is None:
            return
        request.aborted = True
        if request.state == RUNNING_STATE:
            events.append(RequestAborted(request_id, True))
            return
        # Still arriving: drop it and answer at once (§5.4).
        self._close_input(request)
        self._out.append(self._end_bytes(request, 0, REQUEST_COMPLETE))
        events.append(RequestAborted(request_id, False))

    def _on_params(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(PARAMS, request_id, events)
        if request is None or request.state != PARAMS_STATE:
            return   # late or repeated PARAMS of a running request: nothing to do
        if content:
            request._params_size += len(content)
            if request._params_size > self._max_params:
                self._reject(request, 431, f"PARAMS larger than {self._max_params} bytes", events)
                return
            request._params_parts.append(content)
            return
        parts = request._params_parts
        try:
            request.params = _parse_params(parts[0] if len(parts) == 1 else b"".join(parts))
        except ProtocolError as exc:
            self._reject(request, 400, f"malformed PARAMS: {exc}", events)
            return
        request._params_parts = []
        if self._max_body:
            length = request.params.get("CONTENT_LENGTH", "")
            if _is_decimal(length) and int(length) > self._max_body:
                self._reject(request, 413, f"CONTENT_LENGTH {length} is over the limit of {self._max_body} bytes", events)
                return
        request.state = INPUT_STATE
        self._maybe_ready(request, events)

    def _on_stdin(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(STDIN, request_id, events)
        if request is None or request._stdin_done:
            return   # an Authorizer's STDIN, or records after the end: ignored
        if request.state == PARAMS_STATE:
            self._reject(request, 400, "STDIN before the end of PARAMS", events)
            return
        if content:
            request.stdin_length += len(content)
            if self._max_body and request.stdin_length > self._max_body:
                self._reject(request, 413, f"request body over the limit of {self._max_body} bytes", events)
                return
            request.stdin = self._store(request.stdin, request._stdin_parts, request.stdin_length, content)
            return
        request._stdin_done = True
        request.stdin = self._rewind(request.stdin, request._stdin_parts)
        request._stdin_parts = []
        length = request.params.get("CONTENT_LENGTH", "")
        if length:
            if not _is_decimal(length):
                self._reject(request, 400, f"invalid CONTENT_LENGTH {length!r}", events)
                return
            if int(length) != request.stdin_length:
                self._reject(request, 400, f"request body of {request.stdin_length} bytes for a "
                                           f"CONTENT_LENGTH of {length}", events)
                return
        else:
            # No length (a chunked body forwarded unbuffered): the empty STDIN
            # record ended it.  It is complete now, so the app is also told
            # its size, as CGI would (RFC 3875 §4.1.2), for apps that only
            # look at CONTENT_LENGTH.
            request.input_terminated = True
            if request.stdin_length:
                request.params["CONTENT_LENGTH"] = str(request.stdin_length)
        self._maybe_ready(request, events)

    def _on_data(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(DATA, request_id, events)
        if request is None or request._data_done:
            return
        if request.state == PARAMS_STATE:
            self._reject(request, 400, "DATA before the end of PARAMS", events)
            return
        if content:
            request.data_length += len(content)
            request.data = self._store(request.data, request._data_parts, request.data_length, content)
            return
        request._data_done = True
        request.data = self._rewind(request.data, request._data_parts)
        request._data_parts = []
        self._maybe_ready(request, events)

    # ---- helpers -----------------------------------------------------------

    def _maybe_ready(self, request: Request, events: list) -> None:
        if request.state == INPUT_STATE and request._stdin_done and request._data_done:
            if request.stdin is None:
                request.stdin = self._rewind(None, request._stdin_parts)
            if request.role == FILTER and request.data is None:
                request.data = self._rewind(None, request._data_parts)
            request.state = RUNNING_STATE
            events.append(RequestReady(request))

    def _store(self, spool, parts: list, total: int, content: bytes):
        """Keep body bytes in memory up to the threshold, then in a temporary file."""
        if spool is not None:
            spool.write(content)
            return spool
        parts.append(content)
        if total <= self._threshold:
            return None
        spool = self._spool()
        spool.writelines(parts)
        parts.clear()
        return spool

    @staticmethod
    def _rewind(spool, parts: list):
        if spool is not None:
            spool.flush()
            spool.seek(0)
            return spool
        return io.BytesIO(parts[0] if len(parts) == 1 else b"".join(parts))

    @staticmethod
    def _close_input(request: Request) -> None:
        request._params_parts = request._stdin_parts = request._data_parts = []
        for f in (request.stdin, request.data):
            if f is not None:
                try:
                    f.close()
                except Exception:
                    pass

    def _reject(self, request: Request, status: int, reason: str, events: list) -> None:
        self._close_input(request)
        self._out.append(self.respond(request.id, _error_response(status, reason), 0))
        events.append(RequestRejected(request.id, status, reason))

    def _end_bytes(self, request: Request, app_status: int, protocol_status: int) -> bytes:
        del self.requests[request.id]
        self._ended.add(request.id)
        if not request.keep_conn:
            self.must_close = True
        return _one_record(END_REQUEST, request.id, encode_end_request(app_status, protocol_status))

    # ---- output ------------------------------------------------------------

    def _get(self, request_id: int) -> Request:
        request = self.requests.get(request_id)
        if request is None:
            raise LocalProtocolError(f"request {request_id} is not in flight")
        return request

    def stdout(self, request_id: int, data: bytes) -> bytes:
        """FCGI_STDOUT records for ``data`` (never the empty end-of-stream record)."""
        self._get(request_id)
        return encode_record(STDOUT, request_id, data) if data else b""

    def stdout_buffers(self, request_id: int, pieces) -> list:
        """:meth:`stdout` for ``pieces`` back to back, as buffers for ``os.writev`` (no copy)."""
        self._get(request_id)
        return frame_buffers(STDOUT, request_id, pieces)

    def stderr(self, request_id: int, data: bytes) -> bytes:
        """FCGI_STDERR records for ``data`` (the web server writes them to its error log)."""
        self._get(request_id).stderr_used = True
        return encode_record(STDERR, request_id, data) if data else b""

    def end_request(self, request_id: int, app_status: int = 0,
                    protocol_status: int = REQUEST_COMPLETE) -> bytes:
        """Close the output streams and send END_REQUEST (§5.5); forget the request."""
        request = self._get(request_id)
        tail = _one_record(STDOUT, request_id, b"")
        if request.stderr_used:
            tail += _one_record(STDERR, request_id, b"")
        self._close_input(request)
        return tail + self._end_bytes(request, app_status, protocol_status)

    def respond(self, request_id: int, data: bytes, app_status: int = 0) -> bytes:
        """A whole response: STDOUT records, end of STDOUT and END_REQUEST in one buffer.

        A response up to 65535 bytes is a single STDOUT record, so the web
        server gets it, and the end of the request, in one read.
        """
        if len(data) > MAX_CONTENT:
            return b"".join(self.respond_buffers(request_id, (data,), app_status))
        request = self._get(request_id)
        pad = -len(data) & 7
        out = [_pack_header(VERSION_1, STDOUT, request_id, len(data), pad), data, _PADDING[:pad]] if data else []
        return b"".join(self._end_streams(request, out, app_status))

    def respond_buffers(self, request_id: int, pieces, app_status: int = 0) -> list:
        """:meth:`respond` for ``pieces`` back to back, as buffers for ``os.writev`` (no copy)."""
        request = self._get(request_id)
        return self._end_streams(request, frame_buffers(STDOUT, request_id, pieces), app_status)

    def _end_streams(self, request: Request, out: list, app_status: int) -> list:
        """Append the end of STDOUT (and STDERR if used) and END_REQUEST to ``out``."""
        out.append(_pack_header(VERSION_1, STDOUT, request.id, 0, 0))
        if request.stderr_used:
            out.append(_pack_header(VERSION_1, STDERR, request.id, 0, 0))
        self._close_input(request)
        out.append(self._end_bytes(request, app_status, REQUEST_COMPLETE))
        return out


#: Record type -> ServerConnection method handling it: built once, not per
#: connection (a dict of bound methods per connection cost ~6 % of a
#: one-request connection's time in the profile).
_DISPATCH = {
    BEGIN_REQUEST: ServerConnection._on_begin,
    ABORT_REQUEST: ServerConnection._on_abort,
    PARAMS: ServerConnection._on_params,
    STDIN: ServerConnection._on_stdin,
    DATA: ServerConnection._on_data,
    GET_VALUES: ServerConnection._on_get_values,
}
