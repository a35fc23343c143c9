"""nginx -> bridge fcgi, over a unix socket and TCP, with the configs in docs/nginx/.

Each site is a private nginx (config read from docs/nginx/*.conf, nginx's own
/etc/nginx/fastcgi_params next to it) in front of a private ``bridge fcgi``
serving ``support.fastcgi:inspect_app``.  Everything is asserted on what an
HTTP client gets back.
"""
import hashlib
import http.client
import json
import os
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from support import Process, bridge_env, free_port, public_tmpdir, wait_for_port
from support.doc_commands import doc_command
from support.fastcgi import start_bridge_fcgi
from support.nginx import include_file, start_nginx

DOCS = Path(__file__).resolve().parents[2] / "docs" / "nginx"


@pytest.fixture(scope="module")
def backends():
    """One bridge on a unix socket, one on TCP, shared by every site of this module."""
    tmp = public_tmpdir("bridge-fcgi-")
    sock = tmp / "app.sock"
    port = free_port()
    unix = start_bridge_fcgi(f"unix:{sock}", "--threads", "8")
    # the TCP one is started with the command docs/nginx.md shows
    tcp = Process(doc_command("docs/nginx.md", "fcgi-tcp", app="support.fastcgi:inspect_app",
                              backend_port=port), env=bridge_env())
    wait_for_port(port, proc=tcp.proc)
    yield {"unix": (f"unix:{sock}", unix), "tcp": (f"127.0.0.1:{port}", tcp)}
    unix.stop()
    tcp.stop()
    shutil.rmtree(tmp, ignore_errors=True)


class Site:
    def __init__(self, conf: str, transport: str, backends) -> None:
        backend, self.bridge = backends[transport]
        self.conf = conf
        self.port = free_port()
        directory = public_tmpdir("bridge-nginx-")
        shutil.copy("/etc/nginx/fastcgi_params", directory / "fastcgi_params")
        body = include_file(DOCS / conf, port=self.port, backend=backend)
        self.nginx = start_nginx(body, self.port, directory)

    def request(self, method: str, target: str, body=None, headers=None, chunked=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, target, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def environ(self, target: str, method: str = "GET", body=None) -> dict:
        status, _, data = self.request(method, target, body)
        assert status == 200, data
        return json.loads(data)

    def stop(self) -> None:
        self.nginx.stop()


SITES = [("fastcgi.conf", "unix"), ("fastcgi.conf", "tcp"),
         ("fastcgi-keepalive.conf", "unix"), ("fastcgi-keepalive.conf", "tcp")]


@pytest.fixture(scope="module", params=SITES, ids=[f"{c[:-5]}-{t}" for c, t in SITES])
def site(request, backends):
    site = Site(*request.param, backends)
    yield site
    errors = [line for line in site.nginx.error_log().splitlines()
              if "[error]" in line and "GET /error" not in line]
    site.stop()
    assert not errors, "nginx logged errors:\n" + "\n".join(errors)


def test_get_with_query_string_reaches_the_app_at_the_root(site):
    env = site.environ("/some/path?a=1&b=%20x")
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "a=1&b=%20x"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["wsgi.url_scheme"] == "http"
    assert env["fastcgi.role"] == "RESPONDER"


def test_non_ascii_path_arrives_as_latin1_decoded_utf8_bytes(site):
    env = site.environ("/caf%C3%A9/%E2%82%AC?q=%C3%A9")
    assert env["PATH_INFO"] == "/café/€".encode("utf-8").decode("latin-1")
    assert env["QUERY_STRING"] == "q=%C3%A9"


def test_ten_mib_random_post_comes_back_byte_exact(site):
    body = os.urandom(10 << 20)
    status, headers, data = site.request("POST", "/echo", body,
                                         {"Content-Type": "application/octet-stream"})
    assert status == 200
    assert len(data) == len(body)
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


def test_empty_post_gives_an_empty_body(site):
    env = site.environ("/form", "POST", b"")
    assert env["REQUEST_METHOD"] == "POST"
    assert env["body_length"] == 0
    assert env.get("CONTENT_LENGTH", "0") in ("", "0")


def test_chunked_request_body_unbuffered_is_complete_and_input_terminated(site):
    parts = [os.urandom(1000 + i * 7919) for i in range(20)]
    status, headers, data = site.request("POST", "/unbuffered/echo", iter(parts), chunked=True)
    assert status == 200
    assert data == b"".join(parts)
    assert headers["X-Input-Terminated"] == "True"


def test_streaming_response_reaches_the_client_before_the_app_finishes(site):
    token_dir = public_tmpdir("bridge-token-")
    token = token_dir / "go"
    path = "/live/stream" if "/live/" in (DOCS / site.conf).read_text() else "/stream"
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=60)
    try:
        conn.request("GET", f"{path}?token={urllib.parse.quote(str(token))}")
        resp = conn.getresponse()
        assert resp.status == 200
        first = resp.readline()
        # The app is still waiting for the token: this line came while it runs.
        assert first == b"first\n"
        token.touch()
        rest = resp.read()
        assert rest.endswith(b"second\n")
    finally:
        conn.close()
        shutil.rmtree(token_dir, ignore_errors=True)


def test_app_error_is_a_500_without_the_traceback(site):
    status, _, data = site.request("GET", "/error")
    assert status == 500
    assert b"RuntimeError" not in data and b"Traceback" not in data
    # the traceback went to FCGI_STDERR, that is nginx's error log
    assert "inspect_app error" in site.nginx.error_log()


def test_fifty_concurrent_clients_lose_nothing(site):
    results = {}
    errors = []

    def client(n: int) -> None:
        try:
            for i in range(4):
                body = f"client {n} request {i}".encode() * (n + 1)
                status, _, data = site.request("POST", f"/echo?n={n}&i={i}", body)
                results[(n, i)] = (status, data == body)
        except Exception as exc:   # reported below, with the others
            errors.append(f"client {n}: {exc!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(results) == 200
    assert all(v == (200, True) for v in results.values())


@pytest.fixture(scope="module")
def mounted(backends):
    site = Site("fastcgi-split-path.conf", "unix", backends)
    yield site
    site.stop()


def test_split_path_info_gives_script_name_and_path_info(mounted):
    env = mounted.environ("/app/x/y%20z?q=1")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/app", "/x/y z", "q=1")


def test_split_path_info_for_the_mount_point_itself(mounted):
    env = mounted.environ("/app")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "")


def test_split_path_info_for_the_mount_point_with_a_slash(mounted):
    env = mounted.environ("/app/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/")


@pytest.mark.parametrize("target", ["/apple", "/apple/x", "/app.old/x", "/appx?q=1"])
def test_a_path_that_only_starts_with_the_prefixs_letters_never_reaches_the_app(mounted, target):
    # "location /app" matches characters: /apple/x reached the app with
    # SCRIPT_NAME=/apple/x (issue 17).  nginx's own 404 here, not the app's JSON.
    status, _, body = mounted.request("GET", target)
    assert status == 404 and b"nginx" in body and b"SCRIPT_NAME" not in body, (status, body[:200])


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_keep_conn_serves_request_after_request_on_one_connection(backends, transport):
    site = Site("fastcgi-keepalive.conf", transport, backends)
    try:
        connections = {site.environ(f"/n/{i}")["connection"] for i in range(6)}
    finally:
        site.stop()
    assert len(connections) == 1


def test_nginx_doc_shows_every_config_the_tests_load():
    doc = (DOCS.parent / "nginx.md").read_text()
    for conf in sorted(DOCS.glob("fastcgi*.conf")):
        assert conf.read_text().rstrip("\n") in doc, f"{conf.name} is not shown verbatim in docs/nginx.md"


def test_nginx_doc_option_table_is_the_generated_one():
    from bridge.config import load_declarations, option_table
    doc = (DOCS.parent / "nginx.md").read_text()
    start = doc.index("<!-- generated from src/bridge/fastcgi/options.py -->")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end generated -->", start)]
    flags = {f"`{f}`" for s in load_declarations().values() if s.section == "fastcgi" for f in s.flags}
    rows = option_table("fcgi").splitlines()
    assert table.splitlines() == rows[:2] + [r for r in rows if r.split(" |")[0][2:] in flags]
