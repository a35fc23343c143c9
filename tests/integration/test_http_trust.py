"""What a client, a CGI script or a proxy can make bridge http say, through real sockets.

Each test starts ``bridge http`` (and nginx where the shipped config is the
subject) and looks at the bytes on the wire or in the error log: a forged
response, a spoofed host or a forged log line is only visible there.
"""
from __future__ import annotations

import socket

import pytest
import requests

from support import ROOT, free_port
from support.http_proc import BridgeHTTP
from support.nginx import include_file, start_nginx

SMUGGLED = b"HTTP/1.1 200 OK\r\nX-Evil: 1\r\n\r\n"


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            return data
        data += part


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` (which ends with Connection: close) and read until bridge closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        return read_all(s)


def field_lines(head: bytes, name: bytes) -> list:
    """The lines of field ``name`` (lower case) in one response's head."""
    lines = head.partition(b"\r\n\r\n")[0].split(b"\r\n")
    return [line for line in lines if line.lower().startswith(name + b":")]


def cgi_script(tmp_path, name: str, head: bytes, body: bytes) -> str:
    """A shell CGI script that prints ``head`` (CRLF lines), a blank line and ``body``."""
    data = tmp_path / (name + ".out")
    data.write_bytes(head + b"\r\n" + body)
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\nexec cat '{data}'\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture()
def framing_server(tmp_path):
    two = cgi_script(tmp_path, "two", b"Content-Type: text/plain\r\nContent-Length: 3\r\n"
                     b"Content-Length: %d\r\n" % (3 + len(SMUGGLED)), b"abc" + SMUGGLED)
    same = cgi_script(tmp_path, "same", b"Content-Type: text/plain\r\nContent-Length: 5\r\n"
                      b"content-length: 5\r\n", b"hello")
    with BridgeHTTP("--mount", f"/cgi=cgi:{two}", "--mount", f"/same=cgi:{same}", "--threads", "1") as server:
        yield server


def test_a_cgi_script_with_two_differing_content_lengths_gets_one_502_and_no_forged_response(framing_server):
    for keep_alive in (False, True):
        # The second request on the connection is where a forged response
        # would be taken for the answer; bridge must answer each once.
        request = b"GET /cgi HTTP/1.1\r\nHost: t\r\n\r\n" if keep_alive else b""
        wire = raw_exchange(framing_server.port, request + b"GET /cgi HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        responses = wire.count(b"HTTP/1.1 ")
        assert responses == (2 if keep_alive else 1), wire
        assert b"X-Evil" not in wire and b"abc" not in wire
        assert wire.startswith(b"HTTP/1.1 502 ")
        for head in wire.split(b"HTTP/1.1 ")[1:]:
            assert len(field_lines(head, b"content-length")) == 1
    framing_server.wait_output("Content-Length fields that differ")


def test_a_cgi_script_with_identical_content_lengths_sends_one(framing_server):
    wire = raw_exchange(framing_server.port, b"GET /same HTTP/1.1\r\nHost: t\r\n\r\n"
                                             b"GET /same HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert wire.count(b"HTTP/1.1 200 ") == 2
    for head in wire.split(b"HTTP/1.1 ")[1:]:
        assert field_lines(head, b"content-length") == [b"Content-Length: 5"]
        assert head.endswith(b"\r\n\r\nhello")


# --------------------------------------------------------------------------
# Forwarded headers through the shipped nginx config (issue 15 item 1)

SPOOFS = {
    "X-Forwarded-Host": "evil.example/pwn?x=1 junk",
    "Forwarded": "for=6.6.6.6;proto=https;host=evil.example",
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
}


@pytest.mark.parametrize("bridge_args", [(), ("--forwarded-host",)], ids=["default", "forwarded_host_on"])
def test_a_clients_forwarded_headers_through_operations_nginx_conf_do_not_reach_the_app(bridge_args):
    with BridgeHTTP("--threads", "2", *bridge_args) as bridge:
        port = free_port()
        nginx = start_nginx(include_file(ROOT / "docs" / "operations-nginx.conf", port=port,
                                         backend=f"127.0.0.1:{bridge.port}"), port)
        try:
            for spoof in [{name: value} for name, value in SPOOFS.items()] + [SPOOFS]:
                env = requests.get(f"http://127.0.0.1:{port}/environ", headers=spoof, timeout=10).json()
                assert env["HTTP_HOST"] == "127.0.0.1", spoof       # nginx's $host
                assert "HTTP_X_FORWARDED_HOST" not in env and "HTTP_FORWARDED" not in env
                assert env["REMOTE_ADDR"] == "127.0.0.1"             # the rightmost X-Forwarded-For
                assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env
        finally:
            nginx.stop()


# --------------------------------------------------------------------------
# Client data in the error log (issue 21 item 4)

FORGED_PATH = (b"/x%0a[2026-01-01 00:00:00 +0000] [1] [INFO] admin password reset"
               b"%0d%1b[2J%07%00%08%7f%c3%a9%ff%e2%80%a8")
FORGED_TEXT = "[INFO] admin password reset"


def test_a_path_with_line_breaks_and_escapes_gives_one_escaped_error_log_line(tmp_path):
    (tmp_path / "boomapp.py").write_text(
        "def app(environ, start_response):\n    raise RuntimeError('boom')\n")
    closed = free_port()   # nothing listens there: the FastCGI client logs its failure
    with BridgeHTTP("--pythonpath", str(tmp_path), "--mount", f"/php=fcgi://127.0.0.1:{closed}",
                    app="boomapp:app") as bridge:
        for prefix, marker in ((b"/app", "error while serving GET /app/x"),
                               (b"/php", "no FastCGI backend could take GET /php/x")):
            wire = raw_exchange(bridge.port, b"GET " + prefix + FORGED_PATH.replace(b" ", b"%20")
                                + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert wire.startswith(b"HTTP/1.1 50")
            bridge.wait_output(marker)
        log = bridge.output()
    lines = [line for line in log.split("\n") if "admin password reset" in line]
    assert len(lines) == 2, lines                      # one line per request, nothing split off
    for line in lines:
        assert not line.lstrip().startswith("[2026-01-01")
        assert line.isascii() and line.isprintable(), repr(line)
        assert "/x\\x0a[2026-01-01 00:00:00 +0000] [1] " + FORGED_TEXT + "\\x0d\\x1b[2J\\x07\\x00\\x08\\x7f\\xc3\\xa9\\xff" in line
    for ch in "\r\x1b\x07\x00\x08\x7f":
        assert ch not in log
