"""Differential fuzzing of the HTTP/1.1 request parser against h11 and llhttp.

Request byte streams built from the RFC 9112 grammar, and mutated
(tests/support/http_grammar.py), go through bridge's sans-I/O parser and
through h11 (server role) and llhttp (httptools).  Where they disagree, the
difference must be one of the documented ones: the table "Where bridge
differs from h11 and llhttp, and why" in docs/http.md, whose first column
is the category id this test gives each disagreement.  A disagreement no
row explains fails the test; fix bridge or, when bridge follows the RFC and
a reference does not, add a row (with its RFC section) and a rule below.

How many examples run is the Hypothesis profile's business (tests/conftest.py:
``CI=true`` and ``BRIDGE_FUZZ=long``).
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

from hypothesis import example, given, strategies as st

from support.http_grammar import streams
from support.http_parsers import CLEAN, ERROR, PARTIAL, run_bridge, run_h11, run_llhttp

DOC = Path(__file__).resolve().parents[2] / "docs" / "http.md"
TABLE_TITLE = "Where bridge differs from h11 and llhttp, and why"


def documented_categories() -> set:
    """The ids in the first column of the docs table."""
    text = DOC.read_text()
    start = text.index(TABLE_TITLE)
    section = text[start:].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9.-]+)` \|", section, re.M))


# --------------------------------------------------------------------------
# Classification.  bridge refusing what a reference accepts is classified by
# bridge's own error message (it names the rule it applied); bridge accepting
# what a reference refuses, by the reference's message plus a check on the
# bytes that the documented leniency is really what happened.

#: bridge's error message (start) -> category, when bridge is the stricter one.
STRICTER = [
    ("invalid request target", "target-form"),
    ("absolute-form target without a host", "target-form"),
    ("asterisk-form target is only for OPTIONS", "asterisk-form"),
    ("a fragment is not allowed", "target-form"),
    ("CONNECT (tunnelling) is not supported", "connect"),
    ("invalid Host header", "host-value"),
    ("invalid host in the request target", "host-value"),
    ("userinfo in an absolute-form target", "target-form"),
    ("request head larger than", "limits"),
    ("HTTP/1.1 request without a Host header", "host-missing"),
    ("more than one Host header", "host-repeated"),
    ("control character in", "control-characters"),
    ("bare CR in the request head", "control-characters"),
    ("obsolete line folding", "obs-fold"),
    ("Transfer-Encoding in an HTTP/1.0 request", "te-in-http-1.0"),
    ("both Content-Length and Transfer-Encoding", "cl-and-te"),
    ("malformed request line", "request-line-whitespace"),
    ("a tab in the request line", "request-line-whitespace"),
    ("HTTP version", "http-version"),
    ("invalid HTTP version", "http-version"),
    ("Content-Length", "limits"),
    ("chunked body exceeds the limit", "limits"),
    ("request head too large", "limits"),
    ("trailer section larger than", "limits"),
    ("request line longer than", "limits"),
    ("differing Content-Length values", "content-length-list"),
    ("invalid Content-Length", "content-length-list"),
    ("Transfer-Encoding", "transfer-coding"),
    ("transfer coding", "transfer-coding"),
    ("chunk line not ended by CRLF", "chunk-line-ending"),
    ("invalid chunk size line", "chunk-ext-grammar"),
]

BARE_LF = re.compile(rb"(?<!\r)\n")
LONG_LENGTH = re.compile(rb"(?i)content-length:[ \t]*[0-9]{21,}")
TE_TAB = re.compile(rb"chunked[ \t]*\t", re.I)
CHUNK_LINE_WS = re.compile(rb"\r\n[0-9A-Fa-f]+[^\r\n]*[ \t][^\r\n]*\r\n")


#: The methods llhttp knows (it refuses any other token).
LLHTTP_METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT"}


#: Leniencies that can be undone in the bytes: (category, repair).  When the
#: reference takes the request once the repairs are made, bridge's leniency
#: is what made the difference.
CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)([^\r\n]*)\r\n")
HEAD_END = re.compile(rb"\n\r?\n")
LINE_END = re.compile(rb"\r?\n")
CHUNKED = re.compile(rb"(?im)^transfer-encoding:[^\n]*chunked")
LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]{1,18})[ \t]*\r?$")


def _tight_chunk_ext(ext: bytes) -> bytes:
    return re.sub(rb"[ \t]*([;=])[ \t]*", rb"\1", ext).rstrip(b" \t")


def _tight_chunk_lines(data: bytes) -> bytes:
    """Whitespace around ``;``/``=`` in chunk-size lines removed, and only there.

    The stream is walked by its framing (head, then Content-Length or chunks)
    so that chunk *data* that happens to look like a chunk line (``A ``) is
    never rewritten: a repair that changes a body makes the reference's
    answer differ for another reason and hides the leniency."""
    out, pos = bytearray(), 0
    while pos < len(data):
        end = HEAD_END.search(data, pos)
        if end is None:
            break
        head = data[pos:end.end()]
        out += head
        pos = end.end()
        if CHUNKED.search(head):
            while True:
                line = CHUNK_LINE.match(data, pos)
                if line is None:
                    return bytes(out + data[pos:])
                size = int(line[1], 16)
                out += line[1] + _tight_chunk_ext(line[2]) + b"\r\n"
                pos = line.end()
                if size == 0:
                    break
                if size >= len(data):
                    return bytes(out + data[pos:])
                out += data[pos:pos + size + 2]
                pos += size + 2
            # The trailer section: an empty line at once, or field lines up to one.
            blank = LINE_END.match(data, pos) or HEAD_END.search(data, pos)
            if blank is None:
                break
            out += data[pos:blank.end()]
            pos = blank.end()
        elif (length := LENGTH.search(head)) is not None:
            size = int(length[1])
            out += data[pos:pos + size]
            pos += size
    return bytes(out + data[pos:])


def message_ends(data: bytes) -> list:
    """Where each request bridge accepts ends in ``data`` (fed byte by byte)."""
    from bridge.http import protocol as bridge_http
    conn = bridge_http.Connection()
    ends = []
    try:
        for i in range(len(data)):
            conn.receive_data(data[i:i + 1])
            while True:
                event = conn.next_event()
                if event is bridge_http.NEED_DATA or event is bridge_http.PAUSED:
                    break
                if isinstance(event, bridge_http.EndOfMessage):
                    ends.append(i + 1 - len(conn.trailing_data[0]))
                    conn.response_head("200 OK", b"", 0, True)
                    conn.end_response()
                    conn.start_next_cycle()
    except (bridge_http.RemoteProtocolError, bridge_http.LocalProtocolError):
        pass
    return ends


def _head_lf_repair(data: bytes, index: int) -> bytes:
    """Bare LFs as CRLF in the head of request ``index`` only (a body may hold LFs)."""
    ends = message_ends(data)
    start = ends[index - 1] if 0 < index <= len(ends) else 0
    stops = [i for i in (data.find(b"\n\n", start), data.find(b"\n\r\n", start)) if i >= 0]
    stop = min(stops) + 3 if stops else len(data)
    return data[:start] + BARE_LF.sub(b"\r\n", data[start:stop]) + data[stop:]


REPAIRS = [
    ("bare-lf", lambda data: BARE_LF.sub(b"\r\n", data)),
    ("chunk-ext-whitespace", _tight_chunk_lines),
    ("te-trailing-tab", lambda data: TE_TAB.sub(b"chunked", data)),
]


def _repaired(ref_name: str, ref, data: bytes, accepted, depth: int):
    """The leniency categories whose repair makes ``ref`` take the request it refused."""
    run = run_h11 if ref_name == "h11" else run_llhttp
    index = len(ref.requests)
    repairs = REPAIRS + [("bare-lf", lambda data: _head_lf_repair(data, index))]
    usable = [(c, r) for c, r in repairs if r(data) != data]
    for size in range(1, len(usable) + 1):
        for chosen in itertools.combinations(usable, size):
            fixed = data
            if len({c for c, _ in chosen}) < len(chosen):
                continue
            for _, repair in chosen:
                fixed = repair(fixed)
            result = run(fixed)
            if len(result.requests) > index or result.end != ERROR:
                return [c for c, _ in chosen]
            if result.error != ref.error and len(result.requests) == index and depth < 2:
                # Repaired past its first objection the reference stops at a
                # second one (a bare LF, then a repeated Content-Length):
                # both differences must be documented ones.
                further = _lenient(ref_name, result, fixed, accepted, depth + 1)
                if further is not None:
                    return [c for c, _ in chosen] + further
    return None


def _lenient(ref_name: str, ref, data: bytes, accepted, depth: int = 0):
    """Categories when bridge accepted what ``ref`` refused (``accepted``: bridge's request, or None)."""
    msg = ref.error
    if ref_name == "llhttp" and msg in ("Invalid method encountered", "Expected space after method") \
            and accepted is not None \
            and accepted[0] not in LLHTTP_METHODS:
        return ["method-token"]
    if ref_name == "llhttp" and msg == "Duplicate Content-Length":
        return ["content-length-list"]
    if accepted is not None and not set(accepted[1]) <= URI_CHARS and (
            "url" in msg or "illegal request line" in msg):
        return ["target-characters"]
    if ref_name == "h11" and msg == "bad Content-Length" and LONG_LENGTH.search(data):
        return ["content-length-digits"]
    if ref_name == "h11" and msg == "no request line received":
        return ["empty-lines"]
    if ref_name == "llhttp" and msg == "Invalid HTTP version":
        return ["http-version"]
    if ref_name == "llhttp" and msg == "upgrade" and ref.requests and _asks_upgrade(ref.requests[-1]):
        # llhttp stops at a request asking to switch protocols; bridge
        # answers it as HTTP/1.1 and reads on.
        return ["upgrade-ignored"]
    return _repaired(ref_name, ref, data, accepted, depth)


def _asks_upgrade(request: tuple) -> bool:
    return any(name == b"upgrade" for name, _ in request[3])


def _field_difference(ref_name: str, b_req: tuple, r_req: tuple, ref) -> str:
    """Both parsers took the request but saw it differently."""
    if ref_name == "llhttp" and ref.error == "upgrade" and r_req is ref.requests[-1] \
            and _asks_upgrade(r_req) and b_req[:4] == r_req[:4] and r_req[4] == b"":
        # llhttp leaves the bytes after an upgrade's head to the new
        # protocol; bridge reads them as the body the head announced.
        return ["upgrade-ignored"]
    if b_req[:3] == r_req[:3] and b_req[4:] == r_req[4:]:
        b_other = [f for f in b_req[3] if f[0] != b"content-length"]
        r_other = [f for f in r_req[3] if f[0] != b"content-length"]
        if b_other == r_other and {v for n, v in b_req[3] if n == b"content-length"} == \
                {v for n, v in r_req[3] if n == b"content-length"}:
            return ["content-length-list"]   # h11 keeps one of identical lines
    return f"request differs: {b_req!r} / {r_req!r}"


#: URI characters (RFC 3986 §2: unreserved, reserved, "%").
URI_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")


def classify(ref_name: str, bridge, ref, data: bytes):
    """The documented category of a disagreement, or a description of it."""
    i = 0
    while i < min(len(bridge.requests), len(ref.requests)) and bridge.requests[i] == ref.requests[i]:
        i += 1
    b_req = bridge.requests[i] if i < len(bridge.requests) else None
    r_req = ref.requests[i] if i < len(ref.requests) else None
    if b_req is not None and r_req is not None:
        return _field_difference(ref_name, b_req, r_req, ref)
    if b_req is None and bridge.end == ERROR and (r_req is not None or ref.end != ERROR):
        for prefix, category in STRICTER:
            if bridge.error.startswith(prefix):
                return [category]
        if "not allowed in a trailer section" in bridge.error:
            return ["trailer-fields"]
        return f"bridge refused request {i}: {bridge.error}"
    if r_req is None and ref.end == ERROR and (b_req is not None or bridge.end != ERROR):
        if b_req is None and bridge.end == PARTIAL:
            # bridge judges a head once it is complete (llhttp byte by
            # byte), and waits for the body: complete the stream to see.
            completed = run_bridge(data + b"\r\n\r\n")
            if completed.end == ERROR and len(completed.requests) == i:
                return ["early-refusal"]
            completed = run_bridge(data + b"\r\n\r\n" + bytes(40))
            if len(completed.requests) > i:
                b_req = completed.requests[i]
        categories = _lenient(ref_name, ref, data, b_req)
        if categories is not None:
            return categories
        return f"bridge accepted request {i} that {ref_name} refused: {ref.error}"
    if b_req is None and r_req is None:
        if {bridge.end, ref.end} == {CLEAN, PARTIAL}:
            return ["empty-lines"] if data.rstrip(b"\r\n") != data else f"ends differ: {bridge.end}/{ref.end}"
        if {bridge.end, ref.end} == {ERROR}:
            return None
    return f"ends differ at request {i}: bridge {bridge!r}, {ref_name} {ref!r}"


def disagreements(data: bytes) -> list:
    """[(reference, category, bridge's result, the reference's)]: categories
    are the documented ids, or a description of an unexplained difference."""
    bridge = run_bridge(data)
    out = []
    for name, run in (("h11", run_h11), ("llhttp", run_llhttp)):
        ref = run(data)
        if ref != bridge:
            found = classify(name, bridge, ref, data)
            for category in ([found] if isinstance(found, str) else found or []):
                out.append((name, category, bridge, ref))
    return out


DOCUMENTED = documented_categories()


@given(streams())
# Inputs that once failed it (CI on 3.12, then longer runs): chunk data "A "
# that a pattern-based repair took for a chunk line; an Upgrade that llhttp
# stops at; a bare LF hiding a repeated Content-Length behind it.
@example(b"\r\nGET /? HTTP/1.1\nHost:example.com\nConnection:\nTransfer-Encoding:chunked\n\n"
         b"1\r\n\x00\r\n2\r\nA \r\n0; 0\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: a\r\nContent-Length: 1\r\n\r\n\x00")
@example(b"GET / HTTP/1.1\nHost: a\nContent-Length: 0\nContent-Length: 0\n\n")
@example(b"GET / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n999999999999999999990\r\n\r\n")
def test_bridge_agrees_with_h11_and_llhttp_or_the_difference_is_documented(data):
    for name, category, bridge, ref in disagreements(data):
        assert category in DOCUMENTED, (
            f"undocumented disagreement with {name}: {category}\nbridge: {bridge!r}\n{name}: {ref!r}")


def test_the_documented_table_lists_every_category_the_test_knows():
    known = {c for _, c in STRICTER} | {"bare-lf", "chunk-ext-whitespace", "empty-lines",
                                        "http-version", "early-refusal", "method-token",
                                        "te-trailing-tab", "target-characters", "trailer-fields", "upgrade-ignored",
                                        "content-length-digits"} | {c for c, _ in REPAIRS}
    assert known <= DOCUMENTED, known - DOCUMENTED


@given(streams(), st.lists(st.integers(0, 400), max_size=12))
def test_the_same_stream_in_pieces_gives_the_same_requests(data, cuts):
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    assert run_bridge(data, pieces) == run_bridge(data)


@given(streams())
def test_the_same_stream_byte_by_byte_gives_the_same_requests(data):
    pieces = [data[i:i + 1] for i in range(len(data))]
    assert run_bridge(data, pieces) == run_bridge(data)
