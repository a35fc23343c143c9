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

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, List, Optional, Tuple, Union
    Pairs = Union[dict, Iterable[Tuple[bytes, bytes]]]
    Record = Tuple[int, int, bytes]

__all__ = [
    "VERSION_1", "HEADER_LEN", "MAX_CONTENT", "NULL_REQUEST_ID",
    "BEGIN_REQUEST", "ABORT_REQUEST", "END_REQUEST", "PARAMS", "STDIN",
    "STDOUT", "STDERR", "DATA", "GET_VALUES", "GET_VALUES_RESULT",
    "UNKNOWN_TYPE", "RESPONDER", "AUTHORIZER", "FILTER", "KEEP_CONN",
    "REQUEST_COMPLETE", "CANT_MPX_CONN", "OVERLOADED", "UNKNOWN_ROLE",
    "MAX_CONNS", "MAX_REQS", "MPXS_CONNS",
    "ProtocolError", "encode_record", "encode_pairs", "decode_pairs",
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
    view = memoryview(content)
    return b"".join([_one_record(rtype, request_id, bytes(view[i:i + MAX_CONTENT]))
                     for i in range(0, n, MAX_CONTENT)])


class RecordReader:
    """Incremental record parser: :meth:`feed` bytes, get complete records.

    Bytes may arrive split anywhere (inside a header, the content or the
    padding); whatever is incomplete waits for the next :meth:`feed`.  Each
    record is a tuple ``(type, request_id, content)``; padding is dropped.
    A header with a version other than 1 raises :class:`ProtocolError`,
    which is the only check that can tell garbage from a record.  The buffer
    never holds more than one incomplete record (at most 8 + 65535 + 255 bytes).
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list:
        """Add ``data``; return the list of records it completed (maybe empty)."""
        buf = self._buf + data if self._buf else bytes(data)
        records = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_LEN:
            version, rtype, request_id, clen, plen = _unpack_header(buf, pos)
            if version != VERSION_1:
                self._buf = b""
                raise ProtocolError(
                    f"not a FastCGI 1 record: version byte {version} (header {buf[pos:pos + 8].hex()})")
            stop = pos + HEADER_LEN + clen
            if stop + plen > end:
                break
            records.append((rtype, request_id, buf[pos + HEADER_LEN:stop]))
            pos = stop + plen
        self._buf = buf[pos:] if pos else buf
        return records

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete record waiting for more input."""
        return len(self._buf)

    def check_complete(self) -> None:
        """At end of input: raise :class:`ProtocolError` if a record was cut off."""
        if self._buf:
            n = len(self._buf)
            self._buf = b""
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
