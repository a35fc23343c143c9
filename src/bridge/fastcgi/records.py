"""FastCGI 1.0 records, sans-I/O: the codec both directions share.

The record layer is role-neutral: the application side
(:mod:`bridge.fastcgi.protocol`, the connection state machine) and the
client side (:mod:`bridge.fastcgi.client`, talking to an upstream FastCGI
application) both frame and parse with it.  Here: the constants of §8, the
record header (§3.3, :func:`record_header`, :func:`encode_record`,
:func:`frame_buffers`, :class:`RecordReader`), name-value pairs (§3.4,
:func:`encode_pairs`, :func:`decode_pairs`, :func:`decode_params`) and the
small bodies of BEGIN_REQUEST / END_REQUEST / UNKNOWN_TYPE.

This module never touches a socket (no ``socket``, ``select`` or
``threading`` import): the caller reads and writes, this code only parses
and frames.  Everything here can be tested with byte strings.

Section numbers refer to the FastCGI Specification 1.0 (Open Market, 1996).
"""
from __future__ import annotations

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
    "record_name", "frame_buffers", "single_record", "record_padding", "decode_params",
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


def single_record(rtype: int, request_id: int, content: bytes) -> bytes:
    """One record carrying ``content`` (at most ``MAX_CONTENT`` bytes, not checked).

    For the framing this package does itself, on the hot path, with a type
    and id it knows to be valid; :func:`encode_record` checks and splits.
    """
    # §3.3: "We recommend that records be placed on boundaries that are
    # multiples of eight bytes": pad content to a multiple of 8.
    pad = -len(content) & 7
    return _pack_header(VERSION_1, rtype, request_id, len(content), pad) + content + _PADDING[:pad]


def record_padding(length: int) -> bytes:
    """The zero bytes that follow ``length`` content bytes (§3.3, see :func:`record_header`)."""
    return _PADDING[:-length & 7]


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
        return single_record(rtype, request_id, bytes(content))
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
        out: list = [_pack_header(VERSION_1, rtype, request_id, total, pad)]
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
        records: list = []
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


def decode_params(data: bytes) -> dict:
    """The complete PARAMS stream (§3.4 pairs) as a dict of latin-1 str (last duplicate wins).

    What the application side wants of PARAMS: PEP 3333's "bytes as str".

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
