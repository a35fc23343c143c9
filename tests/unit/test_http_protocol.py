"""The sans-I/O HTTP/1.1 protocol with byte strings: parsing, framing, keep-alive, errors."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.http.protocol import (
    CLOSED, DONE, ERROR, IDLE, MUST_CLOSE, NEED_DATA, PAUSED, SEND_BODY, SEND_RESPONSE,
    Connection, ConnectionClosed, Data, EndOfMessage, LocalProtocolError, Limits,
    RemoteProtocolError, Request,
)


def events(conn: Connection) -> list:
    out = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA or ev is PAUSED:
            out.append(ev)
            return out
        out.append(ev)
        if type(ev) in (EndOfMessage, ConnectionClosed):
            return out


def parse(raw: bytes, limits: Limits = Limits()) -> tuple:
    """(Request, body bytes, trailers) of one complete request."""
    conn = Connection(limits)
    conn.receive_data(raw)
    req = conn.next_event()
    assert type(req) is Request
    body = b""
    while True:
        ev = conn.next_event()
        if type(ev) is Data:
            body += ev.data
        elif type(ev) is EndOfMessage:
            return req, body, ev.trailers
        else:
            raise AssertionError(f"incomplete request: {ev!r}")


def rejected(raw: bytes, limits: Limits = Limits()) -> int:
    conn = Connection(limits)
    conn.receive_data(raw)
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(10):
            if conn.next_event() in (NEED_DATA, PAUSED):
                break
    assert conn.their_state is ERROR
    return info.value.status


# --------------------------------------------------------------------------
# Request heads


def test_get_request_head_is_parsed_into_method_path_query_and_fields():
    req, body, _ = parse(b"GET /a%20b/c?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
                         b"Accept:  text/html \t\r\nX-Empty:\r\n\r\n")
    assert (req.method, req.target, req.path, req.query) == ("GET", "/a%20b/c?x=1&y=%20", "/a%20b/c", "x=1&y=%20")
    assert req.http_version == "1.1"
    assert req.headers == [("host", "example.com:8080"), ("accept", "text/html"), ("x-empty", "")]
    assert req.host == "example.com:8080"
    assert req.keep_alive and body == b""


def test_field_values_keep_obs_text_bytes_as_latin1():
    req, _, _ = parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n")
    assert req.headers[1] == ("x-name", "caf\xc3\xa9 \xff")


def test_bare_lf_line_endings_are_accepted_in_the_head():
    req, _, _ = parse(b"GET /lf HTTP/1.1\nHost: h\nX-A: 1\n\n")
    assert req.path == "/lf" and req.headers == [("host", "h"), ("x-a", "1")]


def test_empty_lines_before_the_request_line_are_ignored():
    req, _, _ = parse(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert req.method == "GET"


def test_absolute_form_target_gives_path_and_overrides_host():
    req, _, _ = parse(b"GET http://other.example:81/p/q?z=1 HTTP/1.1\r\nHost: ignored\r\n\r\n")
    assert (req.path, req.query, req.host) == ("/p/q", "z=1", "other.example:81")
    req, _, _ = parse(b"GET https://h.example HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (req.path, req.host) == ("/", "h.example")


def test_asterisk_form_is_for_options_only():
    req, _, _ = parse(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
    assert req.path == "*"
    assert rejected(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n") == 400


def test_http10_request_needs_no_host():
    req, _, _ = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert req.host is None and req.http_version == "1.0" and not req.keep_alive


def test_higher_http1_minor_version_is_served_as_11():
    req, _, _ = parse(b"GET / HTTP/1.7\r\nHost: h\r\n\r\n")
    assert req.http_version == "1.7" and req.keep_alive


@pytest.mark.parametrize("raw, keep", [
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
])
def test_keep_alive_follows_version_and_connection_header(raw, keep):
    req, _, _ = parse(raw)
    assert req.keep_alive is keep


# --------------------------------------------------------------------------
# Bodies


def test_content_length_body():
    req, body, _ = parse(b"POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert req.content_length == 5 and body == b"hello"


def test_identical_content_length_values_count_as_one():
    req, body, _ = parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 003\r\n\r\nabc")
    assert req.content_length == 3 and body == b"abc"


def test_chunked_body_with_extensions_and_trailers():
    raw = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value;q=\"a \\\" b\"\r\nhello\r\n"
           b"A ; ext\r\n0123456789\r\n"
           b"000\r\nX-Trailer: yes\r\nChecksum: 1\r\n\r\n")
    req, body, trailers = parse(raw)
    assert req.chunked and req.content_length is None
    assert body == b"hello0123456789"
    assert trailers == [("x-trailer", "yes"), ("checksum", "1")]


def test_transfer_coding_names_are_case_insensitive():
    req, body, _ = parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
    assert req.chunked and body == b""


def test_pipelined_requests_wait_until_the_response_is_done():
    conn = Connection()
    conn.receive_data(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    first = conn.next_event()
    assert first.path == "/1"
    assert type(conn.next_event()) is EndOfMessage
    assert conn.next_event() is PAUSED
    conn.response_head("200 OK", b"Content-Length: 0\r\n", 0, True)
    conn.end_response()
    conn.start_next_cycle()
    assert conn.next_event().path == "/2"


def test_a_request_asking_to_upgrade_is_answered_as_http_1_1_and_the_next_one_is_read():
    # RFC 9110 §7.8: a server MAY ignore Upgrade.  bridge has no protocol to
    # switch to (a WSGI app cannot take the socket), so it never sends 101
    # and the bytes after the head are the next request, not another protocol.
    conn = Connection()
    conn.receive_data(b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
                      b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    first = conn.next_event()
    assert first.path == "/1" and ("upgrade", "websocket") in first.headers
    assert type(conn.next_event()) is EndOfMessage
    conn.response_head("200 OK", b"Content-Length: 0\r\n", 0, True)
    conn.end_response()
    conn.start_next_cycle()
    assert conn.next_event().path == "/2"


def test_eof_between_requests_is_a_clean_close_and_mid_request_is_an_error():
    conn = Connection()
    conn.receive_data(b"")
    assert type(conn.next_event()) is ConnectionClosed
    assert conn.their_state is CLOSED
    conn = Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHo")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    conn = Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
    events(conn)
    conn.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


# --------------------------------------------------------------------------
# Every split point gives the same events (hypothesis)

STREAM = (
    b"GET /first?q=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n"
    b"POST /cl HTTP/1.1\r\nHost: example\r\nContent-Length: 11\r\n\r\nhello world"
    b"PUT /chunked HTTP/1.1\r\nHost: example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\n"
    b"\r\nGET /lf HTTP/1.1\nHost: example\n\n"
    b"GET /last HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
)


def run_stream(pieces: list) -> list:
    """Feed pieces, answer each request, return a normalised list of what was seen."""
    conn = Connection()
    seen = []
    body = b""
    pieces = [p for p in pieces if p]
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            if not pieces:
                conn.receive_data(b"")
                continue
            conn.receive_data(pieces.pop(0))
            continue
        if type(ev) is Request:
            seen.append(("request", ev.method, ev.target, ev.http_version, tuple(ev.headers), ev.keep_alive))
        elif type(ev) is Data:
            body += ev.data
        elif type(ev) is EndOfMessage:
            seen.append(("end", body, tuple(ev.trailers)))
            body = b""
            conn.response_head("200 OK", b"Content-Length: 0\r\n", 0, True)
            conn.end_response()
            conn.start_next_cycle()
        elif type(ev) is ConnectionClosed:
            seen.append(("closed",))
            return seen
        else:
            raise AssertionError(ev)


EXPECTED = run_stream([STREAM])


def test_the_stream_parses_into_five_requests():
    requests = [s for s in EXPECTED if s[0] == "request"]
    assert [r[2] for r in requests] == ["/first?q=1", "/cl", "/chunked", "/lf", "/last"]
    bodies = [s[1] for s in EXPECTED if s[0] == "end"]
    assert bodies == [b"", b"hello world", b"Wikipedia", b"", b""]
    assert EXPECTED[-1] == ("closed",)


def test_every_single_split_point_gives_the_same_events():
    for i in range(len(STREAM) + 1):
        assert run_stream([STREAM[:i], STREAM[i:]]) == EXPECTED, i


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=25))
def test_any_splitting_gives_the_same_events(cuts):
    cuts = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(STREAM)]) if STREAM[a:b]]
    assert run_stream(pieces) == EXPECTED


def test_byte_by_byte_feeding_gives_the_same_events():
    assert run_stream([bytes([b]) for b in STREAM]) == EXPECTED


# --------------------------------------------------------------------------
# Malformed requests: each gets its status and the connection is done.

H = b"Host: h\r\n"
MALFORMED = [
    # request smuggling (RFC 9112 §6.3, §11.2)
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_and_cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
    ("differing_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("differing_cl_list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello", 400),
    ("negative_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("plus_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("hex_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("empty_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400),
    ("spaced_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 2\r\n\r\n", 400),
    ("unicode_digit_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \xb2\r\n\r\n", 400),
    ("te_not_chunked_last", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te_identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("te_chunked_twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("te_obfuscated", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("te_in_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n", 400),
    ("te_gzip_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n  continued\r\n\r\n", 400),
    ("obs_fold_tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n\tcontinued: x\r\n\r\n", 400),
    ("space_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A : 1\r\n\r\n", 400),
    ("tab_before_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\t: 1\r\n\r\n", 400),
    ("no_colon", b"GET / HTTP/1.1\r\n" + H + b"X-A 1\r\n\r\n", 400),
    ("empty_name", b"GET / HTTP/1.1\r\n" + H + b": 1\r\n\r\n", 400),
    ("bad_name_char", b"GET / HTTP/1.1\r\n" + H + b"X(A): 1\r\n\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    ("ctl_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n", 400),
    ("del_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n", 400),
    ("bare_cr_line_end", b"GET / HTTP/1.1\r" + H + b"\r\n", 400),
    ("bad_method", b"G(ET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("method_with_nul", b"GE\x00T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("double_space", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("trailing_space", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("http09", b"GET /\r\n\r\n", 400),
    ("bad_version", b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    ("lowercase_version", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("http2_version", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ("no_host_11", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two_hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("two_hosts_http10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    ("bad_host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("host_with_slash", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    ("host_with_at", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
    ("host_ipv6_not_hex", b"GET / HTTP/1.1\r\nHost: [zz::1]\r\n\r\n", 400),
    ("host_ipv6_junk_after", b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400),
    ("host_ipv6_unbracketed", b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", 400),
    ("relative_target", b"GET foo HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("fragment", b"GET /a#b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("ftp_absolute", b"GET ftp://h/x HTTP/1.1\r\n" + H + b"\r\n", 400),
    # The absolute form's authority becomes HTTP_HOST (it wins over Host:),
    # so it obeys the Host grammar too, and userinfo is an error (RFC 9110 §4.2.4).
    ("absolute_userinfo", b"GET http://user@h.example/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_userinfo_password", b"GET http://u:p@h.example/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_host_quote", b'GET http://evil"x/ HTTP/1.1\r\n' + H + b"\r\n", 400),
    ("absolute_host_backslash", b"GET http://evil\\x/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_host_angle", b"GET http://<evil>/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_host_bad_ipv6", b"GET http://[zz::1]/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_host_bad_port", b"GET http://h.example:8x/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("absolute_host_control", b"GET http://h\x01x/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("connect", b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501),
    ("bad_chunk_size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_0x", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_space", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_negative", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_huge", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", 400),
    ("chunk_bare_lf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    ("chunk_data_too_long", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_data_lf_only", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400),
    ("chunk_bad_extension", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5;a\"b\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_ext_bare_cr", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    ("trailer_obs_fold", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\n b\r\n\r\n", 400),
    ("trailer_no_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\nA 1\r\n\r\n", 400),
]


@pytest.mark.parametrize("raw, status", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_request_gets_its_status_and_a_closing_response(raw, status):
    conn = Connection()
    conn.receive_data(raw)
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(20):
            conn.next_event()
    assert info.value.status == status
    page = conn.error_response(info.value.status)
    assert page.startswith(b"HTTP/1.1 %d " % status)
    assert b"\r\nConnection: close\r\n" in page
    assert conn.their_state is ERROR and not conn.keep_alive


# A field name seen valid before must not excuse a bad line that carries it:
# the cache of checked names says nothing about the colon or the whitespace.
NAME_SEEN_BEFORE = [
    ("no_colon", b"X-Seen\r\n"),
    ("no_colon_other_case", b"x-seen\r\n"),
    ("space_before_colon", b"X-Seen : 1\r\n"),
    ("tab_before_colon", b"X-Seen\t: 1\r\n"),
    ("obs_fold_of_the_name", b"X-Seen: 1\r\n X-Seen: 2\r\n"),
    ("name_with_space_inside", b"X-Seen X: 1\r\n"),
]


@pytest.mark.parametrize("line", [c[1] for c in NAME_SEEN_BEFORE], ids=[c[0] for c in NAME_SEEN_BEFORE])
@pytest.mark.parametrize("where", ["header", "trailer"])
def test_a_bad_field_line_is_refused_even_after_its_name_was_seen_valid(line, where):
    for _ in range(3):   # the same names valid, in this process, several times
        parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-Seen: 1\r\nx-seen: 2\r\n\r\n")
        parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\nX-Seen: 1\r\n\r\n")
    if where == "header":
        raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n"
    else:
        raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + line + b"\r\n"
    assert rejected(raw) == 400


# --------------------------------------------------------------------------
# Limits


def test_long_request_line_is_414_even_before_it_ends():
    limits = Limits(request_line=100)
    assert rejected(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n", limits) == 414
    assert rejected(b"GET /" + b"a" * 200, limits) == 414
    req, _, _ = parse(b"GET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: h\r\n\r\n", limits)
    assert len(req.path) == 81


def test_too_many_header_fields_is_431():
    limits = Limits(fields=5)
    ok = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(4)) + H + b"\r\n"
    parse(ok, limits)
    bad = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5)) + H + b"\r\n"
    assert rejected(bad, limits) == 431


def test_long_header_field_is_431():
    limits = Limits(field_size=50)
    assert rejected(b"GET / HTTP/1.1\r\n" + H + b"X-Long: " + b"v" * 60 + b"\r\n\r\n", limits) == 431


def test_endless_head_is_431_without_waiting_for_its_end():
    limits = Limits(request_line=50, fields=3, field_size=20)
    conn = Connection(limits)
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    for _ in range(20):
        conn.receive_data(b"X-A: 1\r\n")
        try:
            if conn.next_event() is not NEED_DATA:
                break
        except RemoteProtocolError as exc:
            assert exc.status == 431
            return
    raise AssertionError("no 431")


def head_of(size: int) -> bytes:
    """A GET head of exactly ``size`` bytes, in fields of at most 1,000 bytes."""
    start, end = b"GET / HTTP/1.1\r\n" + H, b"\r\n"
    fields, left, i = [], size - len(start) - len(end), 0
    while left:
        n = min(1000, left)
        if left - n and left - n < 12:
            n -= 12
        fields.append(b"X-%03d: " % i + b"v" * (n - 9) + b"\r\n")
        left -= n
        i += 1
    raw = start + b"".join(fields) + end
    assert len(raw) == size
    return raw


@pytest.mark.parametrize("limits, cap", [(Limits(), 64 * 1024), (Limits(header_size=4096), 4096)],
                         ids=["default_64k", "4k"])
def test_the_whole_head_is_capped_not_only_each_field(limits, cap):
    parse(head_of(cap), limits)
    assert rejected(head_of(cap + 1), limits) == 431
    # A head that never ends is refused once it passes the cap, not at the end.
    conn = Connection(limits)
    conn.receive_data(head_of(cap + 1000)[:-2])
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.status == 431


CHUNKED = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"


@pytest.mark.parametrize("field", [b"Content-Length: 5", b"content-length: 0", b"Transfer-Encoding: chunked",
                                   b"Host: evil.example", b"Trailer: X-A", b"Connection: close", b"TE: trailers",
                                   b"Upgrade: h2c", b"Expect: 100-continue", b"Authorization: Basic eA==",
                                   b"Cookie: a=1", b"Content-Type: text/evil", b"Content-Encoding: gzip",
                                   b"Range: bytes=0-1", b"Keep-Alive: timeout=1"])
def test_a_trailer_section_may_not_carry_framing_routing_or_control_fields(field):
    assert rejected(CHUNKED + b"X-Fine: 1\r\n" + field + b"\r\n\r\n") == 400


def test_ordinary_trailer_fields_are_accepted_and_the_trailer_section_is_capped():
    _, body, trailers = parse(CHUNKED + b"X-Checksum: abc\r\nServer-Timing: db;dur=5\r\n\r\n")
    assert body == b"hello" and trailers == [("x-checksum", "abc"), ("server-timing", "db;dur=5")]
    limits = Limits(header_size=2048)
    many = b"".join(b"X-%d: " % i + b"v" * 90 + b"\r\n" for i in range(30))
    assert rejected(CHUNKED + many + b"\r\n", limits) == 431


def test_body_over_the_limit_is_413_by_content_length_and_by_chunks():
    limits = Limits(body=10)
    parse(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 10\r\n\r\n0123456789", limits)
    assert rejected(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 11\r\n\r\n", limits) == 413
    chunked = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
    parse(chunked + b"5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", limits)
    assert rejected(chunked + b"5\r\n01234\r\n6\r\n567890\r\n0\r\n\r\n", limits) == 413


def test_zero_body_limit_means_no_limit():
    req, _, _ = parse(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", Limits(body=0))
    conn = Connection(Limits(body=0))
    conn.receive_data(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999\r\n\r\n")
    assert conn.next_event().content_length == 99999999999999


# --------------------------------------------------------------------------
# Responses


def answered(request: bytes, status: str, block: bytes, length, body_allowed=True, body=b"") -> tuple:
    conn = Connection()
    conn.receive_data(request)
    events(conn)
    head = conn.response_head(status, block, length, body_allowed)
    wire = head + (conn.frame(body) if body else b"") + conn.end_response()
    return conn, wire


def test_response_with_content_length_keeps_the_connection():
    conn, wire = answered(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "200 OK", b"Content-Length: 2\r\n", 2, body=b"hi")
    assert wire == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    assert conn.our_state is DONE and conn.their_state is DONE
    conn.start_next_cycle()
    assert conn.our_state is IDLE


def test_response_of_unknown_length_is_chunked_on_http11():
    conn, wire = answered(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", "200 OK", b"", None, body=b"hello")
    assert wire == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert conn.keep_alive


def test_response_of_unknown_length_is_close_delimited_on_http10():
    conn, wire = answered(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "200 OK", b"", None, body=b"hello")
    assert wire == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"
    assert conn.our_state is MUST_CLOSE


def test_http10_keep_alive_response_says_keep_alive():
    conn, wire = answered(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "200 OK",
                          b"Content-Length: 0\r\n", 0)
    assert wire.endswith(b"Connection: keep-alive\r\n\r\n")
    assert conn.our_state is DONE


def test_connection_close_request_gets_connection_close_response():
    conn, wire = answered(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", "200 OK",
                          b"Content-Length: 0\r\n", 0)
    assert b"Connection: close\r\n" in wire
    assert conn.our_state is MUST_CLOSE and conn.their_state is MUST_CLOSE


@pytest.mark.parametrize("method, status", [("HEAD", "200 OK"), ("GET", "204 No Content"),
                                            ("GET", "304 Not Modified")])
def test_no_body_for_head_204_and_304(method, status):
    request = f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    conn, wire = answered(request, status, b"Content-Length: 5\r\n", 5, body_allowed=False)
    assert wire.endswith(b"\r\n\r\n") and b"Transfer-Encoding" not in wire
    assert conn.frame(b"hello") == b""


def test_server_can_close_after_the_response():
    conn = Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    events(conn)
    conn.close_after_response()
    assert b"Connection: close" in conn.response_head("200 OK", b"", 0, True)


def test_sending_more_than_content_length_is_a_local_error():
    conn = Connection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    events(conn)
    conn.response_head("200 OK", b"Content-Length: 2\r\n", 2, True)
    with pytest.raises(LocalProtocolError):
        conn.frame(b"abc")


def test_error_response_is_none_once_a_head_was_sent():
    conn = Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    conn.next_event()
    conn.response_head("200 OK", b"", None, True)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.error_response(400) is None


# --------------------------------------------------------------------------
# Expect: 100-continue


def test_client_expecting_100_waits_until_the_server_sends_it():
    conn = Connection()
    conn.receive_data(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    req = conn.next_event()
    assert req.expect_continue and conn.client_waiting_for_100
    assert conn.next_event() is NEED_DATA
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.our_state is SEND_RESPONSE and not conn.client_waiting_for_100
    conn.receive_data(b"abc")
    assert conn.next_event().data == b"abc"


def test_body_sent_without_waiting_for_100_needs_no_100():
    conn = Connection()
    conn.receive_data(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc")
    conn.next_event()
    assert type(conn.next_event()) is Data
    assert not conn.client_waiting_for_100


def test_answering_before_the_100_closes_the_connection():
    conn = Connection()
    conn.receive_data(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    conn.next_event()
    head = conn.response_head("413 Content Too Large", b"Content-Length: 0\r\n", 0, True)
    assert b"Connection: close" in head
    conn.end_response()
    assert conn.our_state is MUST_CLOSE


def test_expect_100_is_ignored_for_http10_and_for_requests_without_body():
    req, _, _ = parse(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n")
    assert not req.expect_continue
    req, _, _ = parse(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
    assert not req.expect_continue


def test_unread_small_body_keeps_the_connection_and_a_big_one_closes_it():
    conn = Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n")
    conn.next_event()
    assert b"Connection: close" not in conn.response_head("200 OK", b"", 0, True)
    conn = Connection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000000\r\n\r\n")
    conn.next_event()
    assert b"Connection: close" in conn.response_head("200 OK", b"", 0, True)


@pytest.mark.parametrize("body, arrived, keeps", [
    (b"5\r\nhello\r\n0\r\n\r\n", None, True),                   # all there: drained, kept
    (b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", None, True),         # with a trailer
    (b"5\r\nhello\r\n0\r\n\r\n", 12, False),                     # the last chunk still to come
    (b"5\r\nhello\r\n", None, False),                              # more chunks may follow
    (b"", None, False),                                               # nothing yet: size unknown
    (b"5\r\nhelloXX", None, False),                                  # malformed: not drainable
])
def test_unread_chunked_body_closes_the_connection_unless_its_end_has_arrived(body, arrived, keeps):
    conn = Connection()
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    conn.receive_data(raw if arrived is None else raw[:len(raw) - len(body) + arrived])
    conn.next_event()
    head = conn.response_head("200 OK", b"Content-Length: 0\r\n", 0, True)
    assert (b"Connection: close" not in head) is keeps
    if keeps:
        # The look ahead consumed nothing: the body is still there to read (or drain).
        got = events(conn)
        assert [type(e) for e in got] == [Data, EndOfMessage] and got[0].data == b"hello"


def test_states_move_only_through_the_tables():
    conn = Connection()
    assert (conn.their_state, conn.our_state) == (IDLE, IDLE)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx")
    conn.next_event()
    assert (conn.their_state, conn.our_state) == (SEND_BODY, SEND_RESPONSE)
    with pytest.raises(LocalProtocolError):
        conn.start_next_cycle()
    conn.next_event()
    conn.next_event()
    assert conn.their_state is DONE
    with pytest.raises(LocalProtocolError):
        conn.end_response()
