"""--proxy-protocol on bridge http's connection handler: real Worker, loopback sockets, in process."""
from __future__ import annotations

import json
import logging
import os
import socket
import struct

import pytest

from bridge.http.proxyproto import V2_SIGNATURE
from support import http_apps
from support.http_server import RunningHTTP, closed_by_peer, read_response

REQUEST = b"GET /environ HTTP/1.1\r\nHost: h\r\n\r\n"


def v2_tcp4(src: str, dst: str, sport: int, dport: int, command: int = 0x21) -> bytes:
    return (V2_SIGNATURE + bytes([command, 0x11]) + struct.pack(">H", 12) + socket.inet_aton(src)
            + socket.inet_aton(dst) + struct.pack(">HH", sport, dport))


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (V2_SIGNATURE + b"\x21\x21" + struct.pack(">H", 36) + socket.inet_pton(socket.AF_INET6, src)
            + socket.inet_pton(socket.AF_INET6, dst) + struct.pack(">HH", sport, dport))


def closed_unanswered(c: socket.socket) -> bool:
    try:
        return c.recv(65536) == b""
    except ConnectionResetError:
        return True


@pytest.fixture(scope="module")
def server():
    with RunningHTTP(http_apps.app, threads=2, proxy_protocol=True) as running:
        yield running


def environ_through(server, *pieces: bytes) -> dict:
    with server.connect() as c:
        for piece in pieces:
            c.sendall(piece)
        status, _, body = read_response(c)
    assert status.startswith("HTTP/1.1 200"), (status, body)
    return json.loads(body)


def test_v1_header_sets_remote_and_server_addresses():
    with RunningHTTP(http_apps.app, threads=2, proxy_protocol=True) as server:
        env = environ_through(server, b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 443\r\n" + REQUEST)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.10", "56324")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("198.51.100.1", "443")


def test_v2_ipv4_and_ipv6_headers_set_remote_addr(server):
    env = environ_through(server, v2_tcp4("203.0.113.7", "10.0.0.1", 4000, 80) + REQUEST)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["SERVER_PORT"]) == ("203.0.113.7", "4000", "80")
    env6 = environ_through(server, v2_tcp6("2001:db8::7", "2001:db8::1", 5000, 8080) + REQUEST)
    assert (env6["REMOTE_ADDR"], env6["REMOTE_PORT"]) == ("2001:db8::7", "5000")
    env1 = environ_through(server, b"PROXY TCP6 2001:db8::9 2001:db8::1 6000 443\r\n" + REQUEST)
    assert env1["REMOTE_ADDR"] == "2001:db8::9"


def test_header_and_request_in_separate_and_split_writes(server):
    header = v2_tcp4("203.0.113.8", "10.0.0.1", 4001, 80)
    env = environ_through(server, header[:5], header[5:20], header[20:] + REQUEST[:4], REQUEST[4:])
    assert env["REMOTE_ADDR"] == "203.0.113.8"
    env = environ_through(server, b"PROXY TCP4 203.0.113.9 10.0.0.1 1 2\r", b"\n", REQUEST)
    assert env["REMOTE_ADDR"] == "203.0.113.9"


def test_header_applies_to_every_request_of_a_kept_alive_connection(server):
    with server.connect() as c:
        c.sendall(b"PROXY TCP4 203.0.113.10 10.0.0.1 7 8\r\n" + REQUEST + REQUEST)
        first = json.loads(read_response(c)[2])
        c.sendall(REQUEST)
        second = json.loads(read_response(c)[2])
    assert first["REMOTE_ADDR"] == second["REMOTE_ADDR"] == "203.0.113.10"


def test_local_command_and_unknown_keep_the_peer_address(server):
    for header in (v2_tcp4("203.0.113.11", "10.0.0.1", 1, 2, command=0x20), b"PROXY UNKNOWN\r\n"):
        env = environ_through(server, header + REQUEST)
        assert env["REMOTE_ADDR"] == "127.0.0.1", header


@pytest.mark.parametrize("first", [
    REQUEST,                                              # a client speaking plain HTTP
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",      # a TLS ClientHello
    b"PROXY TCP4 203.0.113.1 10.0.0.1 1 2\n" + REQUEST,  # bare LF
    b"PROXY TCP4 1.2.3.4 \x1b[2J\r\nforged log line\r\n",
    V2_SIGNATURE + b"\x21\x11\xff\xff",                   # v2 length overflow
    b"PROXY UNKNOWN " + b"x" * 200,                       # overlong v1
])
def test_a_connection_without_a_valid_header_is_closed_unanswered_and_logged_on_one_line(server, first, caplog):
    with caplog.at_level(logging.WARNING, logger="bridge.http"):
        with server.connect() as c:
            c.sendall(first)
            assert closed_unanswered(c)
    lines = [r.getMessage() for r in caplog.records if "--proxy-protocol" in r.getMessage()]
    assert len(lines) == 1, caplog.text      # once: not again when the connection is closed
    assert all("\n" not in line and "\r" not in line and "\x1b" not in line for line in lines)
    assert "127.0.0.1" in lines[0]


def test_header_prefix_then_close_is_logged_and_the_server_goes_on(server, caplog):
    with caplog.at_level(logging.WARNING, logger="bridge.http"):
        with server.connect() as c:
            c.sendall(b"PROXY TCP4 1.2")
            c.shutdown(socket.SHUT_WR)
            assert closed_by_peer(c)
    assert "inside its PROXY protocol header" in caplog.text
    assert environ_through(server, b"PROXY UNKNOWN\r\n" + REQUEST)["REMOTE_ADDR"] == "127.0.0.1"


def test_peer_not_in_proxy_allow_ips_is_closed_even_with_a_valid_header(caplog):
    with RunningHTTP(http_apps.app, threads=2, proxy_protocol=True, proxy_allow_ips="10.9.8.7") as server:
        with caplog.at_level(logging.WARNING, logger="bridge.http"):
            with server.connect() as c:
                c.sendall(b"PROXY TCP4 203.0.113.1 10.0.0.1 1 2\r\n" + REQUEST)
                assert closed_by_peer(c)
    assert "not in --proxy-allow-ips" in caplog.text


def test_silent_untrusted_peer_is_closed_without_waiting_for_bytes():
    with RunningHTTP(http_apps.app, threads=2, proxy_protocol=True, proxy_allow_ips="10.9.8.7",
                     header_timeout=0) as server:
        with server.connect(timeout=10) as c:
            assert c.recv(1) == b""     # the sweep closes it; no header_timeout to wait for


def test_forwarded_headers_are_judged_by_the_client_the_header_names():
    """X-Forwarded-For counts only when the PROXY header's client is a trusted proxy,
    never because the load balancer itself (127.0.0.1) is."""
    with RunningHTTP(http_apps.app, threads=2, proxy_protocol=True,
                     forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as server:
        spoof = environ_through(server, b"PROXY TCP4 203.0.113.5 10.0.0.1 1 2\r\n"
                                        b"GET /environ HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n")
        chained = environ_through(server, b"PROXY TCP4 10.1.2.3 10.0.0.1 1 2\r\n"
                                          b"GET /environ HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n")
    assert spoof["REMOTE_ADDR"] == "203.0.113.5"
    assert chained["REMOTE_ADDR"] == "198.51.100.4"


def test_unix_socket_peer_may_send_the_header():
    path = f"/tmp/bridge-pp-test-{os.getpid()}.sock"
    with RunningHTTP(http_apps.app, bind=f"unix:{path}", threads=2, proxy_protocol=True,
                     proxy_allow_ips="") as server:
        env = environ_through(server, b"PROXY TCP4 192.0.2.44 10.0.0.1 9 443\r\n"
                                      b"GET /environ HTTP/1.1\r\nHost: site.example\r\n\r\n")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.44", "9")
    assert env["SERVER_NAME"] == "site.example"


def test_without_the_option_a_proxy_line_is_just_a_bad_request():
    with RunningHTTP(http_apps.app, threads=2) as server:
        with server.connect() as c:
            c.sendall(b"PROXY TCP4 203.0.113.1 10.0.0.1 1 2\r\n" + REQUEST)
            status, _, _ = read_response(c)
    assert status.startswith("HTTP/1.1 400")


def test_bad_proxy_allow_ips_is_a_settings_error():
    from bridge.http.server import check_config
    from support.http_server import http_config
    assert "--proxy-allow-ips" in check_config(http_config(proxy_protocol=True, proxy_allow_ips="nohost"))


def test_a_header_that_never_ends_is_closed_at_the_header_timeout_and_logged(caplog):
    with RunningHTTP(http_apps.app, threads=2, proxy_protocol=True, header_timeout=0.3) as server:
        with caplog.at_level(logging.WARNING, logger="bridge.http"):
            with server.connect() as c:
                c.sendall(V2_SIGNATURE + b"\x21\x11\x00\x0c\x01")     # 17 of its 28 bytes
                assert closed_by_peer(c)
    assert "PROXY protocol header incomplete after 17 bytes" in caplog.text
    assert caplog.text.count("--proxy-protocol") == 1


def test_v2_ssl_tlv_makes_the_scheme_https_and_plain_v2_does_not(server):
    ssl_value = b"\x01" + bytes(4) + b"\x21\x00\x07TLSv1.3"
    tlv = b"\x20" + struct.pack(">H", len(ssl_value)) + ssl_value
    body = socket.inet_aton("203.0.113.20") + socket.inet_aton("10.0.0.1") + struct.pack(">HH", 1, 443) + tlv
    header = V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(body)) + body
    env = environ_through(server, header + REQUEST)
    assert (env["wsgi.url_scheme"], env["HTTPS"], env["SSL_PROTOCOL"]) == ("https", "on", "TLSv1.3")
    plain = environ_through(server, v2_tcp4("203.0.113.21", "10.0.0.1", 1, 80) + REQUEST)
    assert plain["wsgi.url_scheme"] == "http" and "HTTPS" not in plain
