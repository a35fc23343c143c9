"""The PROXY protocol header parser (bridge.http.proxyproto), sans I/O: byte strings only."""
from __future__ import annotations

import ipaddress
import struct

import pytest

from bridge.http.proxyproto import (
    MAX_V1_LENGTH, MAX_V2_LENGTH, NEED_DATA, V2_SIGNATURE, ProxyHeader, ProxyProtocolError, crc32c, parse,
)

FOLLOWING = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def v2(command: int = 0x1, family: int = 0x11, addresses: bytes = b"", tlvs: bytes = b"",
       length: int | None = None, version: int = 2) -> bytes:
    body = addresses + tlvs
    n = len(body) if length is None else length
    return V2_SIGNATURE + bytes([(version << 4) | command, family]) + struct.pack(">H", n) + body


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack(">HH", sport, dport))


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack(">HH", sport, dport))


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">H", len(value)) + value


V1_TCP4 = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::ff 65535 8443\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
V1_UNKNOWN_LONG = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
V2_TCP4 = v2(addresses=inet4("192.0.2.10", "198.51.100.1", 56324, 443))
V2_TCP6 = v2(family=0x21, addresses=inet6("2001:db8::1", "2001:db8::ff", 1, 8443))
V2_LOCAL = v2(command=0x0, family=0x00)
V2_TLVS = v2(addresses=inet4("192.0.2.10", "198.51.100.1", 1, 2),
             tlvs=tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0x04, b"") + tlv(0xEA, b"\x01vpce-1"))

VALID = [V1_TCP4, V1_TCP6, V1_UNKNOWN, V1_UNKNOWN_LONG, V2_TCP4, V2_TCP6, V2_LOCAL, V2_TLVS]


# --------------------------------------------------------------------------
# What each kind of header says


def test_v1_tcp4_gives_source_and_destination_and_its_length():
    h = parse(V1_TCP4 + FOLLOWING)
    assert (h.version, h.command, h.family) == (1, "PROXY", "TCP4")
    assert h.source == ("192.0.2.10", 56324) and h.destination == ("198.51.100.1", 443)
    assert h.length == len(V1_TCP4)


def test_v1_tcp6_and_an_ipv4_mapped_source_is_written_as_ipv4():
    h = parse(V1_TCP6)
    assert h.source == ("2001:db8::1", 65535) and h.destination == ("2001:db8::ff", 8443)
    assert parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n").source == ("192.0.2.1", 1)


def test_v1_unknown_keeps_the_connection_addresses_and_ignores_the_rest_of_the_line():
    for raw in (V1_UNKNOWN, V1_UNKNOWN_LONG, b"PROXY UNKNOWN anything at all\r\n"):
        h = parse(raw + FOLLOWING)
        assert (h.family, h.source, h.destination, h.length) == ("UNKNOWN", None, None, len(raw))


def test_v1_longest_line_of_the_spec_is_exactly_the_limit():
    assert len(V1_UNKNOWN_LONG) == MAX_V1_LENGTH
    assert parse(V1_UNKNOWN_LONG).length == MAX_V1_LENGTH


def test_v2_tcp4_and_tcp6_addresses_and_ports():
    h = parse(V2_TCP4 + FOLLOWING)
    assert (h.version, h.command, h.family) == (2, "PROXY", "TCP4")
    assert h.source == ("192.0.2.10", 56324) and h.destination == ("198.51.100.1", 443)
    assert h.length == len(V2_TCP4) == 28
    h6 = parse(V2_TCP6)
    assert h6.source == ("2001:db8::1", 1) and h6.destination == ("2001:db8::ff", 8443)
    mapped = parse(v2(family=0x21, addresses=inet6("::ffff:10.0.0.1", "::1", 5, 6)))
    assert mapped.source == ("10.0.0.1", 5)


def test_v2_local_command_names_no_client_whatever_its_address_block_says():
    for raw in (V2_LOCAL, v2(command=0x0, family=0x11, addresses=inet4("1.2.3.4", "5.6.7.8", 1, 2)),
                v2(command=0x0, family=0x99, addresses=b"junk")):
        h = parse(raw + FOLLOWING)
        assert (h.command, h.source, h.destination, h.length) == ("LOCAL", None, None, len(raw))


def test_v2_tlvs_are_returned_and_unknown_ones_skipped():
    h = parse(V2_TLVS)
    assert h.tlvs == ((0x01, b"h2"), (0x02, b"example.com"), (0x04, b""), (0xEA, b"\x01vpce-1"))
    assert h.source == ("192.0.2.10", 1)


def test_v2_unspec_and_unix_families_keep_the_connection_addresses():
    assert parse(v2(family=0x00)).source is None
    unix = v2(family=0x31, addresses=b"/run/src".ljust(108, b"\0") + b"/run/dst".ljust(108, b"\0"))
    h = parse(unix)
    assert (h.family, h.source, h.length) == ("UNIX", None, len(unix))


def test_v2_correct_crc32c_is_accepted():
    assert crc32c(b"123456789") == 0xE3069283     # RFC 3720 B.4 check value
    blank = v2(addresses=inet4("192.0.2.10", "198.51.100.1", 1, 2), tlvs=tlv(0x03, b"\0\0\0\0"))
    signed = blank[:-4] + struct.pack(">I", crc32c(blank))
    assert parse(signed).source == ("192.0.2.10", 1)


# --------------------------------------------------------------------------
# Every split point: NEED_DATA until the last byte, then the same answer


@pytest.mark.parametrize("raw", VALID, ids=lambda r: repr(r[:20]))
def test_every_prefix_of_a_valid_header_needs_data_and_the_whole_parses(raw):
    for cut in range(len(raw)):
        assert parse(raw[:cut]) is NEED_DATA, cut
    whole = parse(raw)
    assert isinstance(whole, ProxyHeader) and whole.length == len(raw)


@pytest.mark.parametrize("raw", VALID, ids=lambda r: repr(r[:20]))
def test_header_fed_in_two_pieces_at_every_split_is_the_same_as_in_one(raw):
    expected = parse(raw + FOLLOWING)
    for cut in range(len(raw) + len(FOLLOWING) + 1):
        buffer = bytearray()
        result = NEED_DATA
        for piece in (raw + FOLLOWING)[:cut], (raw + FOLLOWING)[cut:]:
            buffer += piece
            result = parse(buffer)
            if result is not NEED_DATA:
                break
        assert result is not NEED_DATA
        assert (result.source, result.destination, result.length, result.tlvs) == \
            (expected.source, expected.destination, expected.length, expected.tlvs)
        assert bytes(buffer[result.length:]) == FOLLOWING[:max(0, len(buffer) - len(raw))]


# --------------------------------------------------------------------------
# Anything else is refused, as early as the bytes allow


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\n", b"G", b"\x16\x03\x01\x02\x00", b"proxy TCP4 ", b"PROXY\t", b"\r\n\r\n\x00\r\nQUIX\n",
    b"\r\n\r\n\x01", b" PROXY ",
])
def test_a_connection_that_does_not_start_with_a_header_is_refused_on_its_first_bytes(raw):
    with pytest.raises(ProxyProtocolError):
        parse(raw)


def test_v1_without_crlf_within_107_bytes_is_refused_and_never_buffers_more():
    line = b"PROXY UNKNOWN " + b"x" * 200
    for cut in range(len(b"PROXY UNKNOWN "), MAX_V1_LENGTH):
        assert parse(line[:cut]) is NEED_DATA
    with pytest.raises(ProxyProtocolError, match="no CRLF in the first 107"):
        parse(line[:MAX_V1_LENGTH])
    with pytest.raises(ProxyProtocolError):
        parse(V1_UNKNOWN_LONG[:-2] + b"x\r\n")      # 108 bytes with its CRLF


@pytest.mark.parametrize("raw", [
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",          # bare LF
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX",          # bare CR
    b"PROXY TCP4 192.0.2.1\x00 192.0.2.2 1 2\r\n",     # NUL
    b"PROXY TCP4 192.0.2.\xc3\xa9 192.0.2.2 1 2\r\n",  # not ASCII
    b"PROXY TCP4 192.0.2.1\t192.0.2.2 1 2\r\n",        # tab
])
def test_v1_control_and_non_ascii_bytes_are_refused_before_the_line_ends(raw):
    with pytest.raises(ProxyProtocolError):
        parse(raw)
    # ... and already without the rest of the line, as soon as the byte is seen.
    bad = next(i for i, c in enumerate(raw) if c < 0x20 or c > 0x7E)
    if raw[bad:bad + 2] != b"\r\n" and raw[bad] != 0x0D:
        with pytest.raises(ProxyProtocolError):
            parse(raw[:bad + 1])


@pytest.mark.parametrize("raw", [
    b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",                 # bad family
    b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",
    b"PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",               # family/address mismatch
    b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
    b"PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n",                # leading zero (octal in some parsers)
    b"PROXY TCP4 localhost 192.0.2.2 1 2\r\n",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",                    # scope id
    b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n",             # port out of range
    b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 2\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 0x10 2\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 000001 2\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1  2\r\n",                # two spaces
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",                # trailing space
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",                   # a field short
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",
    b"PROXY \r\n", b"PROXY UNKNOWNX\r\n",
])
def test_v1_malformed_lines_are_refused(raw):
    with pytest.raises(ProxyProtocolError):
        parse(raw + FOLLOWING)


def test_v2_version_and_command_other_than_2_local_proxy_are_refused():
    addresses = inet4("1.2.3.4", "5.6.7.8", 1, 2)
    for raw in (v2(version=1, addresses=addresses), v2(version=3, addresses=addresses),
                v2(command=0x2, addresses=addresses), v2(command=0xF, addresses=addresses)):
        with pytest.raises(ProxyProtocolError):
            parse(raw[:16])        # refused on the fixed part, without waiting for the rest


@pytest.mark.parametrize("family", [0x01, 0x10, 0x13, 0x41, 0xFF, 0x12, 0x22, 0x32])
def test_v2_bad_or_datagram_family_is_refused_on_the_fixed_part(family):
    raw = v2(family=family, addresses=bytes(216))
    with pytest.raises(ProxyProtocolError):
        parse(raw[:16])


@pytest.mark.parametrize("family,size", [(0x11, 12), (0x21, 36), (0x31, 216)])
def test_v2_length_shorter_than_the_address_block_is_refused(family, size):
    for length in (0, 1, size - 1):
        with pytest.raises(ProxyProtocolError, match="needs"):
            parse(v2(family=family, addresses=bytes(length)))


def test_v2_length_over_the_limit_is_refused_before_buffering_it():
    for length in (MAX_V2_LENGTH + 1, 0xFFFF):
        raw = v2(addresses=inet4("1.2.3.4", "5.6.7.8", 1, 2), length=length)
        with pytest.raises(ProxyProtocolError, match="exceeds the limit"):
            parse(raw[:16])
    at_limit = v2(addresses=inet4("1.2.3.4", "5.6.7.8", 1, 2), tlvs=tlv(0xE0, bytes(MAX_V2_LENGTH - 15)))
    assert parse(at_limit).length == 16 + MAX_V2_LENGTH


@pytest.mark.parametrize("tail", [
    b"\x01",                    # type only
    b"\x01\x00",                # type and half a length
    b"\x01\x00\x05abcd",        # value one byte short
    b"\x04\x00\x00\x01\xff\xff",  # a good NOOP, then a TLV claiming 65535 bytes
    tlv(0x02, b"ok") + b"\x02",
])
def test_v2_truncated_tlvs_are_refused(tail):
    with pytest.raises(ProxyProtocolError, match="TLV"):
        parse(v2(addresses=inet4("1.2.3.4", "5.6.7.8", 1, 2), tlvs=tail) + FOLLOWING)


def test_v2_wrong_crc32c_or_crc_of_the_wrong_size_is_refused():
    blank = v2(addresses=inet4("192.0.2.10", "198.51.100.1", 1, 2), tlvs=tlv(0x03, b"\0\0\0\0"))
    good = crc32c(blank)
    for value in (good ^ 1, 0, good ^ 0x80000000):
        with pytest.raises(ProxyProtocolError, match="CRC32C"):
            parse(blank[:-4] + struct.pack(">I", value))
    with pytest.raises(ProxyProtocolError, match="CRC32C"):
        parse(v2(addresses=inet4("1.2.3.4", "5.6.7.8", 1, 2), tlvs=tlv(0x03, b"\0\0\0")))


def test_error_messages_are_one_printable_line_whatever_was_sent():
    hostile = [b"\x1b[2J\r\nPROXY", b"PROXY TCP4 \x1b[31m 1 2 3 4\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\xfe\r\n",
               bytes(range(256))]
    for raw in hostile:
        with pytest.raises(ProxyProtocolError) as info:
            parse(raw)
        text = str(info.value)
        assert text.isprintable() and "\n" not in text and "\x1b" not in text


def test_parse_accepts_bytearray_and_memoryview():
    assert parse(bytearray(V2_TCP4)).source == ("192.0.2.10", 56324)
    assert parse(memoryview(V1_TCP4)).source == ("192.0.2.10", 56324)


# --------------------------------------------------------------------------
# PP2_TYPE_SSL: the client's TLS to the proxy


def ssl_tlv(client: int, *subs: bytes, verify: int = 0) -> bytes:
    return tlv(0x20, bytes([client]) + struct.pack(">I", verify) + b"".join(subs))


def test_ssl_tlv_with_the_client_ssl_bit_gives_version_and_cipher():
    raw = v2(addresses=inet4("192.0.2.10", "198.51.100.1", 1, 443),
             tlvs=ssl_tlv(0x01, tlv(0x21, b"TLSv1.3"), tlv(0x23, b"TLS_AES_256_GCM_SHA384"), tlv(0x22, b"cn")))
    assert parse(raw).tls == {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}


def test_ssl_tlv_without_the_client_ssl_bit_or_without_tlv_is_not_tls():
    addresses = inet4("192.0.2.10", "198.51.100.1", 1, 443)
    assert parse(v2(addresses=addresses, tlvs=ssl_tlv(0x00, tlv(0x21, b"TLSv1.3")))).tls is None
    assert parse(v2(addresses=addresses)).tls is None
    assert parse(V1_TCP4).tls is None


def test_ssl_tlv_text_that_is_not_printable_ascii_is_left_out():
    raw = v2(addresses=inet4("192.0.2.10", "198.51.100.1", 1, 443),
             tlvs=ssl_tlv(0x01, tlv(0x21, b"TLS\r\nX: y"), tlv(0x23, b"\xff")))
    assert parse(raw).tls == {"version": None, "cipher": None}


@pytest.mark.parametrize("value", [b"", b"\x01\x00\x00\x00", b"\x01\x00\x00\x00\x00\x21",
                                   b"\x01\x00\x00\x00\x00\x21\x00\x09TLSv1.3"])
def test_truncated_ssl_tlvs_are_refused(value):
    with pytest.raises(ProxyProtocolError, match="SSL TLV"):
        parse(v2(addresses=inet4("1.2.3.4", "5.6.7.8", 1, 2), tlvs=tlv(0x20, value)))
