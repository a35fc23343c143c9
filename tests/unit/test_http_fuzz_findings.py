"""Defects the differential fuzzer (test_fuzz_http.py) found in the request parser.

Each test starts from the failing example Hypothesis printed, and covers the
family it belongs to.
"""
import pytest

from bridge.http.protocol import NEED_DATA, Connection, RemoteProtocolError, Request

H = b"Host: h\r\n"


def refusal(raw: bytes) -> int:
    conn = Connection()
    conn.receive_data(raw)
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(20):
            conn.next_event()
    return info.value.status


# Found: b'CONNECT /J1iLQ/%20? HTTP/1.1\r\nHost:example.com:80\r\n\r\n' reached the
# app as an ordinary request (only the authority form of CONNECT was refused),
# while llhttp switches such a connection to a tunnel.
@pytest.mark.parametrize("target", [b"/J1iLQ/%20?", b"/", b"*", b"http://h/x", b"h:443"])
def test_connect_is_not_implemented_whatever_the_target_form(target):
    assert refusal(b"CONNECT " + target + b" HTTP/1.1\r\n" + H + b"\r\n") == 501


# Found: b"GET /;//&nTl&v/:495%2F?TE\t!sN2MT HTTP/1.1\r\n..." was accepted with a
# tab inside the target; RFC 9112 §3 lets a recipient split the request line
# on any whitespace, so another parser would read a different target.
@pytest.mark.parametrize("line", [
    b"GET /a?b\tc HTTP/1.1", b"GET\t/ HTTP/1.1", b"GET /\tHTTP/1.1", b"GET / HTTP/1.1\t", b"\tGET / HTTP/1.1",
])
def test_a_tab_in_the_request_line_is_refused(line):
    assert refusal(line + b"\r\n" + H + b"\r\n") == 400


# Found: b'\r0 /y.m!2t///ppDtk? HTTP/1.1\r\nHost:localhost\r\n\r\n' was accepted: a
# lone CR before the request line was dropped as if it were an empty line.
# RFC 9112 §2.2: empty lines (CRLF, or a bare LF) may precede a request; a bare
# CR is invalid.
@pytest.mark.parametrize("prefix", [b"\r", b"\r\r\n", b"\r\n\r", b"\n\r"])
def test_a_bare_cr_before_the_request_line_is_refused(prefix):
    assert refusal(prefix + b"GET / HTTP/1.1\r\n" + H + b"\r\n") == 400


@pytest.mark.parametrize("prefix", [b"\r\n", b"\n", b"\r\n\n\r\n"])
def test_empty_lines_before_the_request_line_are_still_ignored(prefix):
    conn = Connection()
    conn.receive_data(prefix + b"GET / HTTP/1.1\r\n" + H + b"\r\n")
    assert isinstance(conn.next_event(), Request)


def test_an_empty_line_split_between_cr_and_lf_is_still_ignored():
    conn = Connection()
    conn.receive_data(b"\r")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\nGET / HTTP/1.1\r\n" + H + b"\r\n")
    assert isinstance(conn.next_event(), Request)
