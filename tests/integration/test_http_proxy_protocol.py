"""bridge http --proxy-protocol behind a real HAProxy in TCP mode (send-proxy and send-proxy-v2)."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time

import pytest

from support import ROOT, public_tmpdir, require_binary
from support.haproxy import CONF, TLS_CONF, HAProxy
from support.http_proc import BridgeHTTP

REQUEST = b"GET /environ HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def stack():
    directory = public_tmpdir("bridge-pp-")
    log = directory / "access.log"
    with BridgeHTTP("--proxy-protocol", "--ping-path", "/ping", "--access-log", str(log),
                    "--access-log-format", "%h %r") as bridge:
        with HAProxy(f"127.0.0.1:{bridge.port}") as haproxy:
            yield bridge, haproxy, log


def read_all(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def environ_via(host: str, port: int, wrap=None) -> tuple:
    """The app's environ for one request sent through HAProxy, and the client's own port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect((host, port))
        client_port = raw.getsockname()[1]
        sock = wrap(raw) if wrap else raw
        sock.sendall(REQUEST)
        response = read_all(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response[:300]
    return json.loads(body), client_port


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_remote_addr_and_port_are_the_client_behind_haproxy(stack, version, host):
    bridge, haproxy, _ = stack
    port = haproxy.port if version == "v1" else haproxy.port_v2
    env, client_port = environ_via(host, port)
    assert env["REMOTE_ADDR"] == host
    assert env["REMOTE_PORT"] == str(client_port)          # not HAProxy's own connection
    assert env["SERVER_PORT"] == str(port)                 # what the client connected to
    assert env["SERVER_NAME"] == host


def test_haproxy_health_checks_send_local_and_keep_the_peer_address(stack):
    bridge, haproxy, log = stack
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(line == "127.0.0.1 GET /ping HTTP/1.1" or line == "127.0.0.1 GET /ping HTTP/1.0"
               for line in lines):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no health check in the access log:\n{lines}\n{haproxy.output()}")
    assert "DOWN" not in haproxy.output()


def test_a_client_connecting_directly_without_the_header_is_closed_and_logged(stack):
    bridge, _, _ = stack
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as c:
        c.sendall(REQUEST)
        try:
            assert read_all(c) == b""
        except ConnectionResetError:
            pass
    out = bridge.wait_output("no PROXY protocol header")
    line = next(l for l in out.splitlines() if "no PROXY protocol header" in l)
    assert "closed a connection from 127.0.0.1 (--proxy-protocol)" in line


def test_a_forged_header_from_an_address_not_allowed_is_refused(stack):
    """Only --proxy-allow-ips peers may send the header: bridge on a port a client can reach
    refuses it, whatever the header says."""
    with BridgeHTTP("--proxy-protocol", "--proxy-allow-ips", "192.0.2.1") as bridge:
        with socket.create_connection(("127.0.0.1", bridge.port), timeout=10) as c:
            c.sendall(b"PROXY TCP4 203.0.113.1 127.0.0.1 1 80\r\n" + REQUEST)
            try:
                assert read_all(c) == b""
            except ConnectionResetError:
                pass
        bridge.wait_output("not in --proxy-allow-ips")


def self_signed(directory):
    out = subprocess.run([require_binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
                          "-days", "2", "-subj", "/CN=localhost"], cwd=directory, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_tls_passes_through_haproxy_and_the_header_is_read_before_the_handshake():
    directory = public_tmpdir("bridge-pp-tls-")
    self_signed(directory)
    context = ssl.create_default_context(cafile=str(directory / "cert.pem"))
    with BridgeHTTP("--proxy-protocol", "--ping-path", "/ping", "--certfile", str(directory / "cert.pem"),
                    "--keyfile", str(directory / "key.pem")) as bridge:
        # The docs' config with its health check over TLS, as its comment says.
        with HAProxy(f"127.0.0.1:{bridge.port}", check_ssl=True) as haproxy:
            for port in (haproxy.port, haproxy.port_v2):
                env, client_port = environ_via(
                    "127.0.0.1", port, wrap=lambda s: context.wrap_socket(s, server_hostname="localhost"))
                assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on", bridge.output()
                assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", str(client_port))


def test_haproxy_terminating_tls_makes_the_scheme_https_through_the_v2_ssl_tlv(stack):
    bridge, _, _ = stack
    directory = public_tmpdir("bridge-pp-tls-")
    self_signed(directory)
    pem = directory / "haproxy.pem"
    pem.write_bytes((directory / "cert.pem").read_bytes() + (directory / "key.pem").read_bytes())
    context = ssl.create_default_context(cafile=str(directory / "cert.pem"))
    with HAProxy(f"127.0.0.1:{bridge.port}", conf=TLS_CONF, pem=str(pem)) as haproxy:
        env, client_port = environ_via(
            "127.0.0.1", haproxy.port, wrap=lambda s: context.wrap_socket(s, server_hostname="localhost"))
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"].startswith("TLSv1.") and env["SSL_CIPHER"]
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("127.0.0.1", str(client_port))


def test_plain_connections_through_send_proxy_v2_stay_http(stack):
    bridge, haproxy, _ = stack
    env, _ = environ_via("127.0.0.1", haproxy.port_v2)
    assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env


def test_docs_show_the_haproxy_configs_the_tests_load():
    doc = (ROOT / "docs" / "http.md").read_text()
    assert CONF.read_text().rstrip("\n") in doc
    assert TLS_CONF.read_text().rstrip("\n") in doc
