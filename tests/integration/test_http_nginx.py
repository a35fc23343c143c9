"""bridge http behind a private nginx (docs/nginx/http-proxy.conf) over TCP and a unix socket."""
from __future__ import annotations

import os
import socket

import pytest
import requests

from support import ROOT, free_port, public_tmpdir
from support.http_apps import pattern
from support.http_proc import BridgeHTTP
from support.nginx import include_file, start_nginx

CONF = ROOT / "docs" / "nginx" / "http-proxy.conf"


@pytest.fixture(scope="module", params=["tcp", "unix"])
def stack(request):
    directory = public_tmpdir("bridge-http-nginx-")
    if request.param == "tcp":
        bridge = BridgeHTTP("--threads", "4")
        backend = f"127.0.0.1:{bridge.port}"
    else:
        sock = directory / "bridge.sock"
        bridge = BridgeHTTP("--threads", "4", "--socket-mode", "666", "--forwarded-allow-ips", "",
                            bind=f"unix:{sock}")
        backend = f"unix:{sock}"
    port = free_port()
    nginx = start_nginx(include_file(CONF, port=port, backend=backend), port)
    yield request.param, nginx, bridge
    nginx.stop()
    bridge.stop()
    assert "[alert]" not in nginx.error_log()


def test_get_through_nginx_sees_the_client_as_nginx_saw_it(stack):
    kind, nginx, bridge = stack
    env = requests.get(nginx.url + "/environ/a%20b?x=%20", timeout=10).json()
    assert env["PATH_INFO"] == "/environ/a b" and env["QUERY_STRING"] == "x=%20"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_HOST"] == f"127.0.0.1:{nginx.port}"
    assert env["wsgi.url_scheme"] == "http"


def test_forwarded_headers_a_client_sends_do_not_reach_the_app_unchanged(stack):
    kind, nginx, bridge = stack
    env = requests.get(nginx.url + "/environ", timeout=10,
                       headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
                                "X-Forwarded-Host": "evil.example", "Forwarded": "for=6.6.6.6;host=evil"}).json()
    # nginx set or cleared all four (docs/nginx/http-proxy.conf), bridge applied nginx's values.
    assert "HTTP_X_FORWARDED_HOST" not in env and "HTTP_FORWARDED" not in env
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http" and "HTTPS" not in env
    assert env["HTTP_HOST"] == f"127.0.0.1:{nginx.port}"
    assert env["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"


def test_upstream_connection_is_kept_alive_across_client_connections(stack):
    kind, nginx, bridge = stack
    seen = set()
    for _ in range(5):
        with requests.Session() as fresh:
            env = fresh.get(nginx.url + "/environ", timeout=10).json()
        seen.add(env.get("REMOTE_PORT", "unix"))
    if kind == "tcp":
        assert len(seen) == 1, seen   # one nginx->bridge connection served all five
    log = bridge.output()
    assert "Traceback" not in log


def test_ten_mib_both_ways_through_nginx(stack):
    kind, nginx, bridge = stack
    body = os.urandom(10 * 1024 * 1024)
    r = requests.post(nginx.url + "/echo", data=body, timeout=60)
    assert r.status_code == 200 and r.content == body
    r = requests.get(nginx.url + "/download?size=10485760&chunked=1", timeout=60)
    assert r.content == pattern(10485760)


def test_unbuffered_location_streams_a_chunked_upload(stack):
    kind, nginx, bridge = stack
    parts = [os.urandom(n) for n in (10, 100000, 3)]
    r = requests.post(nginx.url + "/unbuffered/echo", data=iter(parts), timeout=30)
    assert r.content == b"".join(parts)
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as c:
        c.sendall(b"GET /unbuffered/stream?n=3&delay=0.05 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
    assert b"chunk 0\n" in data and b"chunk 2\n" in data
