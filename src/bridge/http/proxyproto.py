"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans I/O.

A TCP load balancer (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB,
nginx's ``proxy_protocol on`` in a stream block) cannot add
X-Forwarded-For to bytes it does not parse, so it writes one header at the
very start of the connection saying whom it accepted it from.  This module
reads that header and nothing else: :func:`parse` takes the bytes received
so far and returns a :class:`ProxyHeader` (which says how many bytes it
took), :data:`NEED_DATA`, or raises :class:`ProxyProtocolError`.  The
caller owns the socket, keeps appending what arrives and calls again; it
never has to hold more than :data:`MAX_V1_LENGTH` or ``16 + MAX_V2_LENGTH``
bytes, because :func:`parse` refuses anything longer before it completes.

The spec's rules for receivers that shape this code (section numbers of
proxy-protocol.txt):

* §2: the header is sent once, first, before any byte of the protocol it
  carries (so before a TLS ClientHello: it is read from the raw socket);
  the receiver "MUST not try to guess whether the protocol header is
  present or not": on a port configured for it, a connection without it
  is an error, never served as plain HTTP (or a client could write its own
  and choose its address).
* §2.1: version 1 is one line of at most 107 bytes including CRLF, fields
  separated by exactly one space; ``UNKNOWN`` means "use the connection's
  own addresses" and anything after it up to CRLF is ignored.
* §2.2: version 2 starts with a 12-byte signature no HTTP or TLS client
  sends; ``LOCAL`` (health checks of the proxy itself) means "use the real
  connection endpoints and ignore the address block"; only version 2 and
  commands LOCAL/PROXY exist, and unexpected family/transport bytes must
  be rejected.  The length counts the address block and the TLVs; TLVs
  that are not understood are skipped, but their framing must fit exactly.
* PP2_TYPE_CRC32C (a TLV of §2.2): when the sender included a checksum, a
  receiver that supports it must drop a header whose checksum is wrong; it
  is verified here.
"""
from __future__ import annotations

import ipaddress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Union

__all__ = ["parse", "ProxyHeader", "ProxyProtocolError", "NEED_DATA", "MAX_V1_LENGTH",
           "MAX_V2_LENGTH", "V1_PREFIX", "V2_SIGNATURE", "crc32c"]


class _NeedData:
    """More bytes are needed before the header can be parsed (h11's sentinel)."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header: the connection must be closed.

    ``received`` holds the first bytes when they are no header at all (what
    the client sent instead), for the log line; the message never quotes
    them raw.
    """

    def __init__(self, message: str, received: bytes = b"") -> None:
        super().__init__(message)
        self.received = received


class ProxyHeader:
    """What the proxy said about the connection.

    ``source``/``destination`` are ``(address, port)`` with the address in
    its canonical text form (an IPv4-mapped IPv6 address as plain IPv4, as
    the server writes REMOTE_ADDR for a direct connection), or None when the
    connection's own addresses must be used (LOCAL, ``UNKNOWN``,
    ``UNSPEC``, ``AF_UNIX``).  ``length`` is how many bytes the header took:
    what follows belongs to the client.
    """

    __slots__ = ("version", "command", "family", "source", "destination", "tlvs", "length", "tls")

    def __init__(self, version: int, command: str, family: str, source: Optional[tuple],
                 destination: Optional[tuple], tlvs: tuple, length: int, tls: Optional[dict] = None) -> None:
        self.version = version
        self.command = command
        self.family = family
        self.source = source
        self.destination = destination
        self.tlvs = tlvs
        self.length = length
        #: From a PP2_TYPE_SSL TLV whose client field says the client spoke TLS
        #: to the proxy: ``{"version": "TLSv1.3" or None, "cipher": ... or None}``.
        self.tls = tls

    def __repr__(self) -> str:
        return (f"ProxyHeader(v{self.version} {self.command} {self.family} "
                f"source={self.source} destination={self.destination} length={self.length})")


# --------------------------------------------------------------------------
# Version 1 (§2.1)

#: "PROXY" and a single space start every version 1 header.
V1_PREFIX = b"PROXY "
#: "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n" => 107 chars:
#: "a receiver can safely use a 107-byte buffer".
MAX_V1_LENGTH = 107
#: The line's characters: printable US-ASCII (the separators are spaces).
_V1_CHARS = frozenset(range(0x20, 0x7F))
_V1_FAMILIES = {b"TCP4": 4, b"TCP6": 6}


def _v1(data: bytes) -> Union[ProxyHeader, _NeedData]:
    window = data[:MAX_V1_LENGTH]
    end = window.find(b"\r\n")
    line = window if end < 0 else window[:end]
    bad = next((i for i, c in enumerate(line) if c not in _V1_CHARS), None)
    if bad is not None and not (end < 0 and bad == len(line) - 1 and line[bad] == 0x0D):
        raise ProxyProtocolError(f"version 1 header: byte {line[bad]:#04x} at offset {bad}")
    if end < 0:
        if len(data) >= MAX_V1_LENGTH:
            raise ProxyProtocolError(f"version 1 header: no CRLF in the first {MAX_V1_LENGTH} bytes")
        return NEED_DATA
    fields = line.split(b" ")
    if fields[1:2] == [b"UNKNOWN"]:
        # "the receiver must ignore anything presented before the CRLF is found"
        return ProxyHeader(1, "PROXY", "UNKNOWN", None, None, (), end + 2)
    if len(fields) != 6:
        raise ProxyProtocolError("version 1 header: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT', "
                                 f"got {len(fields)} space-separated fields")
    version = _V1_FAMILIES.get(fields[1])
    if version is None:
        raise ProxyProtocolError(f"version 1 header: unknown protocol {fields[1]!r} (TCP4, TCP6, UNKNOWN)")
    source = (_v1_address(fields[2], version), _v1_port(fields[4]))
    destination = (_v1_address(fields[3], version), _v1_port(fields[5]))
    return ProxyHeader(1, "PROXY", fields[1].decode("ascii"), source, destination, (), end + 2)


def _v1_address(raw: bytes, version: int) -> str:
    text = raw.decode("ascii")
    try:
        ip = ipaddress.IPv4Address(text) if version == 4 else ipaddress.IPv6Address(text)
    except ValueError:
        raise ProxyProtocolError(f"version 1 header: {text!r} is not an IPv{version} address") from None
    if version == 6 and ip.scope_id is not None:
        raise ProxyProtocolError(f"version 1 header: {text!r} is not an IPv6 address (scope id)")
    return _canonical(ip)


def _v1_port(raw: bytes) -> int:
    # §2.1: a port is a decimal number from 0 to 65535; no sign, no spaces, at most 5 digits.
    if not raw.isdigit() or len(raw) > 5 or int(raw) > 65535:
        raise ProxyProtocolError(f"version 1 header: {raw.decode('ascii')!r} is not a port (0-65535)")
    return int(raw)


# --------------------------------------------------------------------------
# Version 2 (§2.2)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16          # signature, version/command, family/transport, length
#: Largest length field accepted (the address block and the TLVs).  The spec
#: allows 65535; real senders stay far below (216 bytes for AF_UNIX addresses,
#: plus a few TLVs: ALPN, authority, AWS's VPC endpoint id, SSL details), and
#: a limit keeps a peer from making every connection buffer 64 KiB.
MAX_V2_LENGTH = 4096
_COMMANDS = {0x0: "LOCAL", 0x1: "PROXY"}
#: family/transport byte -> (name, bytes of the address block)
_V2_FAMILIES = {
    0x00: ("UNSPEC", 0),
    0x11: ("TCP4", 12), 0x12: ("UDP4", 12),
    0x21: ("TCP6", 36), 0x22: ("UDP6", 36),
    0x31: ("UNIX", 216), 0x32: ("UNIX_DGRAM", 216),
}
#: §2.2, PP2_TYPE_CRC32C: the TLV holding a CRC-32c of the whole header.
PP2_TYPE_CRC32C = 0x03
#: §2.2, PP2_TYPE_SSL: the client's TLS connection to the proxy (HAProxy send-proxy-v2-ssl):
#:   struct pp2_tlv_ssl { uint8_t client; uint32_t verify; struct pp2_tlv sub_tlv[0]; };
#: client bit PP2_CLIENT_SSL: "the client connected over SSL/TLS"; sub-TLVs
#: PP2_SUBTYPE_SSL_VERSION ("TLSv1.3") and PP2_SUBTYPE_SSL_CIPHER (US-ASCII).
PP2_TYPE_SSL = 0x20
PP2_CLIENT_SSL = 0x01
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CIPHER = 0x23


def _v2(data: bytes) -> Union[ProxyHeader, _NeedData]:
    if len(data) < _V2_FIXED:
        return NEED_DATA
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise ProxyProtocolError(f"version 2 header: version nibble {version}, expected 2")
    name = _COMMANDS.get(command)
    if name is None:
        raise ProxyProtocolError(f"version 2 header: unknown command {command:#x} (LOCAL or PROXY)")
    family = _V2_FAMILIES.get(data[13])
    if family is None and name == "PROXY":    # LOCAL: "the family ... is ignored"
        raise ProxyProtocolError(f"version 2 header: unknown address family/transport {data[13]:#04x}")
    length = int.from_bytes(data[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ProxyProtocolError(f"version 2 header: length {length} exceeds the limit of {MAX_V2_LENGTH}")
    if name == "PROXY":
        # Refused before waiting for the rest: nothing that follows can fix these.
        if family[0] in ("UDP4", "UDP6", "UNIX_DGRAM"):
            raise ProxyProtocolError(f"version 2 header: {family[0]} on a stream connection")
        if length < family[1]:
            raise ProxyProtocolError(f"version 2 header: {family[0]} needs {family[1]} bytes of "
                                     f"addresses, the length is {length}")
    total = _V2_FIXED + length
    if len(data) < total:
        return NEED_DATA
    header = bytes(data[:total])
    if name == "LOCAL":
        # §2.2: "the receiver must accept this connection as valid and must use
        # the real connection endpoints and discard the protocol block".
        return ProxyHeader(2, "LOCAL", "UNSPEC", None, None, (), total)
    family_name, address_size = family
    tlvs = _tlvs(header, _V2_FIXED + address_size)
    source = destination = None
    block = header[_V2_FIXED:_V2_FIXED + address_size]
    if family_name == "TCP4":
        source = (_canonical(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big"))
        destination = (_canonical(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big"))
    elif family_name == "TCP6":
        source = (_canonical(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big"))
        destination = (_canonical(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big"))
    # UNSPEC and UNIX: no IP address to give the app; the connection's own stand.
    tls = None
    for kind, value in tlvs:
        if kind == PP2_TYPE_SSL:
            tls = _ssl_tlv(value)
    return ProxyHeader(2, "PROXY", family_name, source, destination, tlvs, total, tls)


def _tlvs(header: bytes, start: int) -> tuple:
    """The ``(type, value)`` pairs after the address block; each must fit exactly (§2.2, TLVs)."""
    found = []
    pos, end = start, len(header)
    crc_at = None
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError(f"version 2 header: truncated TLV at offset {pos}")
        kind = header[pos]
        size = int.from_bytes(header[pos + 1:pos + 3], "big")
        if pos + 3 + size > end:
            raise ProxyProtocolError(f"version 2 header: TLV {kind:#04x} of {size} bytes at offset {pos} "
                                     "runs past the header")
        if kind == PP2_TYPE_CRC32C:
            if size != 4:
                raise ProxyProtocolError(f"version 2 header: CRC32C TLV of {size} bytes, expected 4")
            crc_at = pos + 3
        found.append((kind, header[pos + 3:pos + 3 + size]))
        pos += 3 + size
    if crc_at is not None:
        expected = int.from_bytes(header[crc_at:crc_at + 4], "big")
        zeroed = header[:crc_at] + b"\0\0\0\0" + header[crc_at + 4:]
        if crc32c(zeroed) != expected:
            raise ProxyProtocolError("version 2 header: CRC32C checksum does not match")
    return tuple(found)


def _ssl_tlv(value: bytes) -> Optional[dict]:
    """PP2_TYPE_SSL: None unless the client bit says TLS; its sub-TLVs must fit exactly."""
    if len(value) < 5:
        raise ProxyProtocolError(f"version 2 header: SSL TLV of {len(value)} bytes, at least 5 expected")
    found = {}
    pos = 5
    while pos < len(value):
        if len(value) - pos < 3:
            raise ProxyProtocolError("version 2 header: truncated TLV inside the SSL TLV")
        kind = value[pos]
        size = int.from_bytes(value[pos + 1:pos + 3], "big")
        if pos + 3 + size > len(value):
            raise ProxyProtocolError(f"version 2 header: TLV {kind:#04x} runs past the SSL TLV")
        found[kind] = value[pos + 3:pos + 3 + size]
        pos += 3 + size
    if not value[0] & PP2_CLIENT_SSL:
        return None
    return {"version": _ascii(found.get(PP2_SUBTYPE_SSL_VERSION)),
            "cipher": _ascii(found.get(PP2_SUBTYPE_SSL_CIPHER))}


def _ascii(raw: Optional[bytes]) -> Optional[str]:
    """A sub-TLV's text if it is printable US-ASCII (it goes into the environ), else None."""
    if not raw or any(c < 0x21 or c > 0x7E for c in raw):
        return None
    return raw.decode("ascii")


def _crc32c_table() -> list:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE: list = []


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 3720 §B.4), the checksum of PP2_TYPE_CRC32C."""
    if not _CRC_TABLE:
        _CRC_TABLE.extend(_crc32c_table())
    table = _CRC_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------


def _canonical(ip) -> str:
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped if mapped is not None else ip)


def parse(data: bytes) -> Union[ProxyHeader, _NeedData]:
    """The header at the start of ``data`` (version 1 or 2), or NEED_DATA.

    Raises :class:`ProxyProtocolError` as soon as the bytes cannot begin a
    valid header, so a client speaking plain HTTP or TLS to the port is
    refused on its first bytes, not after a timeout.
    """
    data = bytes(data)
    n = len(data)
    if n >= 12 and data.startswith(V2_SIGNATURE):
        return _v2(data)
    if n >= 6 and data.startswith(V1_PREFIX):
        return _v1(data)
    if (n < 12 and V2_SIGNATURE.startswith(data)) or (n < 6 and V1_PREFIX.startswith(data)):
        return NEED_DATA
    raise ProxyProtocolError("no PROXY protocol header", data[:16])
