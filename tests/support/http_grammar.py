"""Hypothesis strategies for HTTP/1.1 request byte streams, from the RFC 9112 grammar.

:func:`requests` builds valid-looking streams (one or more pipelined
requests: methods, the four request-target forms, header fields with every
tchar and odd whitespace, Content-Length and chunked bodies with extensions
and trailers); :func:`mutated` damages them the way broken or hostile
clients do (a CR, LF, NUL, space or tab inserted or removed, a header line
duplicated, a number made huge, bytes swapped).  The differential tests run
both through bridge and two reference parsers.
"""
from __future__ import annotations

from hypothesis import strategies as st

# RFC 9110 §5.6.2: tchar
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# RFC 3986 pchar (unreserved / sub-delims / ":" / "@"), plus "%" escapes
PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@"
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"]
COMMON_FIELDS = ["Host", "Content-Length", "Transfer-Encoding", "Connection", "Expect",
                 "Content-Type", "Accept", "User-Agent", "Trailer", "TE", "Upgrade", "Cookie"]

tokens = st.text(TCHAR, min_size=1, max_size=12)
ows = st.sampled_from(["", "", "", " ", "\t", "  ", " \t "])


@st.composite
def field_values(draw) -> bytes:
    """field-value: field-vchar with SP/HTAB inside (VCHAR and obs-text)."""
    chars = draw(st.lists(st.one_of(
        st.sampled_from([b"a", b"1", b"/", b",", b";", b"=", b"\"", b"(", b"~"]),
        st.integers(0x21, 0x7E).map(lambda c: bytes([c])),
        st.integers(0x80, 0xFF).map(lambda c: bytes([c])),
        st.sampled_from([b" ", b"\t"])), max_size=16))
    value = b"".join(chars).strip(b" \t")
    return value


@st.composite
def paths(draw) -> str:
    segments = draw(st.lists(st.text(PCHAR, max_size=6), max_size=4))
    path = "/" + "/".join(segments)
    if draw(st.booleans()):
        path += "%" + draw(st.sampled_from(["20", "2F", "41", "e9"]))
    if draw(st.integers(0, 3)) == 0:
        path += "?" + draw(st.text(PCHAR + "/?", max_size=10))
    return path


hosts = st.one_of(
    st.sampled_from(["example.com", "localhost", "127.0.0.1", "[::1]", "a.b-c.d"]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=10),
).flatmap(lambda h: st.sampled_from([h, h + ":80", h + ":8080", h + ":"]))


@st.composite
def targets(draw, method: str) -> str:
    form = draw(st.sampled_from(["origin"] * 6 + ["absolute", "authority", "asterisk"]))
    if form == "origin":
        return draw(paths())
    if form == "absolute":
        scheme = draw(st.sampled_from(["http", "https", "HTTP", "ftp"]))
        return f"{scheme}://{draw(hosts)}{draw(st.sampled_from(['', '/']))}{draw(paths())[1:]}"
    if form == "authority":
        return draw(hosts)
    return "*"


@st.composite
def chunked_body(draw) -> tuple:
    """(wire bytes, body): chunks with extensions, last-chunk, trailers."""
    out = []
    body = b""
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)):
        size = f"{len(data):x}"
        if draw(st.booleans()):
            size = size.upper()
        if draw(st.integers(0, 4)) == 0:
            size = "0" * draw(st.integers(1, 3)) + size
        out.append(size.encode() + draw(chunk_ext()) + b"\r\n" + data + b"\r\n")
        body += data
    out.append(b"0" * draw(st.integers(1, 2)) + draw(chunk_ext()) + b"\r\n")
    for name, value in draw(st.lists(st.tuples(tokens, field_values()), max_size=2)):
        out.append(name.encode() + b":" + draw(ows).encode() + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out), body


@st.composite
def chunk_ext(draw) -> bytes:
    exts = []
    for _ in range(draw(st.integers(0, 2))):
        ext = draw(ows) + ";" + draw(ows) + draw(tokens)
        if draw(st.booleans()):
            value = draw(st.one_of(tokens, st.text(PCHAR + " \t", max_size=6).map(lambda s: f'"{s}"')))
            ext += draw(ows) + "=" + draw(ows) + value
        exts.append(ext)
    return "".join(exts).encode()


@st.composite
def one_request(draw, last: bool = False) -> bytes:
    method = draw(st.one_of(st.sampled_from(METHODS), tokens))
    target = draw(targets(method))
    version = draw(st.sampled_from(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1"]))
    eol = b"\r\n" if draw(st.integers(0, 9)) else b"\n"
    fields = []
    if draw(st.integers(0, 9)):
        fields.append((b"Host", draw(hosts).encode()))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(st.sampled_from(COMMON_FIELDS), tokens))
        value = draw(field_values())
        if name.lower() == "content-length":
            value = str(draw(st.integers(0, 20))).encode()
        elif name.lower() == "transfer-encoding":
            value = draw(st.sampled_from([b"chunked", b"gzip, chunked", b"Chunked", b"identity", b"chunked, chunked"]))
        elif name.lower() == "connection" and not last:
            value = draw(st.sampled_from([b"keep-alive", b"upgrade", b"te"]))
        fields.append((name.encode(), value))
    framing = draw(st.sampled_from(["none", "none", "length", "chunked"]))
    body = b""
    if framing == "length":
        body = draw(st.binary(max_size=20))
        fields.append((b"Content-Length", str(len(body)).encode()))
    elif framing == "chunked":
        body, _ = draw(chunked_body())
        fields.append((b"Transfer-Encoding", b"chunked"))
    fields = draw(st.permutations(fields))
    head = [f"{method} {target} {version}".encode()]
    for name, value in fields:
        head.append(name + b":" + draw(ows).encode() + value + draw(ows).encode())
    return eol.join(head) + eol + eol + body


@st.composite
def requests(draw) -> bytes:
    """One to three pipelined requests, sometimes after empty lines."""
    n = draw(st.integers(1, 3))
    stream = b"\r\n" if draw(st.integers(0, 9)) == 0 else b""
    for i in range(n):
        stream += draw(one_request(last=i == n - 1))
    return stream


def _insert(data: bytes, pos: int, what: bytes) -> bytes:
    return data[:pos] + what + data[pos:]


@st.composite
def mutated(draw) -> bytes:
    """A :func:`requests` stream with one to three faults."""
    data = draw(requests())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "insert", "remove", "delete", "duplicate", "huge", "replace"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "insert":
            data = _insert(data, pos, draw(st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\t", b"\r\n", b"\x0b", b"\x7f"])))
        elif kind == "remove":
            # a CR, LF, space or tab taken out
            spots = [i for i, c in enumerate(data) if c in b"\r\n \t"]
            if spots:
                at = draw(st.sampled_from(spots))
                data = data[:at] + data[at + 1:]
        elif kind == "delete" and data:
            span = draw(st.integers(1, 2))
            data = data[:pos] + data[pos + span:]
        elif kind == "duplicate":
            lines = data.split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 2))
                lines.insert(i, lines[i])
                data = b"\r\n".join(lines)
        elif kind == "huge":
            digits = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39]
            if digits:
                at = draw(st.sampled_from(digits))
                data = _insert(data, at, draw(st.sampled_from([b"9" * 20, b"18446744073709551616", b"f" * 17, b"0" * 30])))
        elif kind == "replace" and data:
            data = data[:pos] + bytes([draw(st.integers(0, 255))]) + data[pos + 1:]
    return data


@st.composite
def streams(draw) -> bytes:
    return draw(st.one_of(requests(), mutated(), mutated()))
