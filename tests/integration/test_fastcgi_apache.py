"""Apache -> bridge fcgi: mod_proxy_fcgi over TCP and a unix socket, with apache/fastcgi-proxy.conf."""
import hashlib
import http.client
import json
import os
import shutil

import pytest

from support import ROOT, Process, bridge_env, free_port, public_tmpdir, wait_for_port
from support.apache_fcgi import start_apache
from support.doc_commands import doc_command
from support.fastcgi import start_bridge_fcgi
from support.nginx import include_file


@pytest.fixture(scope="module")
def apache():
    tmp = public_tmpdir("bridge-fcgi-")
    sock = tmp / "app.sock"
    backend_port = free_port()
    # mod_proxy_fcgi sends the whole path as SCRIPT_NAME and no PATH_INFO:
    # --script-name says where the app is mounted.
    tcp = Process(doc_command("docs/apache.md", "fcgi-apache-tcp", app="support.fastcgi:inspect_app",
                              backend_port=backend_port), env=bridge_env())
    wait_for_port(backend_port, proc=tcp.proc)
    unix = start_bridge_fcgi(f"unix:{sock}", "--script-name", "/unix")
    port = free_port()
    body = include_file(ROOT / "apache" / "fastcgi-proxy.conf", backend_port=backend_port, socket=sock)
    server = start_apache(body, port, ["proxy", "proxy_fcgi"])
    server.port = port
    yield server
    server.stop()
    tcp.stop()
    unix.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def authnz():
    auth_port, backend_port = free_port(), free_port()
    authorizer = start_bridge_fcgi(f"127.0.0.1:{auth_port}", app="support.fastcgi:authorizer_app")
    backend = start_bridge_fcgi(f"127.0.0.1:{backend_port}", "--script-name", "/protected")
    port = free_port()
    body = include_file(ROOT / "apache" / "fastcgi-authnz.conf", auth_port=auth_port,
                        backend_port=backend_port)
    server = start_apache(body, port, ["authnz_fcgi", "auth_basic", "proxy", "proxy_fcgi"])
    server.port = port
    yield server
    server.stop()
    authorizer.stop()
    backend.stop()


def request(apache, method, target, body=None, headers=None, chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", apache.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("mount", ["/tcp", "/unix"])
def test_get_reaches_the_app_mounted_at_its_prefix(apache, mount):
    status, _, data = request(apache, "GET", f"{mount}/x/caf%C3%A9?q=%C3%A9&r=2")
    assert status == 200
    env = json.loads(data)
    assert env["SCRIPT_NAME"] == mount
    assert env["PATH_INFO"] == "/x/café".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=%C3%A9&r=2"
    assert env["REQUEST_METHOD"] == "GET"


@pytest.mark.parametrize("mount", ["/tcp", "/unix"])
def test_authorization_header_reaches_the_app(apache, mount):
    status, _, data = request(apache, "GET", f"{mount}/private",
                              headers={"Authorization": "Basic dXNlcjpzZWNyZXQ="})
    assert status == 200
    assert json.loads(data)["HTTP_AUTHORIZATION"] == "Basic dXNlcjpzZWNyZXQ="


@pytest.mark.parametrize("mount", ["/tcp", "/unix"])
def test_one_mib_post_comes_back_byte_exact(apache, mount):
    body = os.urandom(1 << 20)
    status, _, data = request(apache, "POST", f"{mount}/echo", body,
                              {"Content-Type": "application/octet-stream"})
    assert status == 200
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


def test_chunked_post_through_apache_arrives_complete(apache):
    parts = [os.urandom(5000 + i) for i in range(10)]
    status, _, data = request(apache, "POST", "/unix/echo", iter(parts), chunked=True)
    assert status == 200
    assert data == b"".join(parts)


def test_app_error_through_apache_is_a_bare_500(apache):
    status, _, data = request(apache, "GET", "/tcp/error")
    assert status == 500
    assert b"Traceback" not in data and b"RuntimeError" not in data


def basic(credentials: str) -> dict:
    import base64
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_authorizer_role_lets_a_user_through_with_its_variables(authnz):
    status, _, data = request(authnz, "GET", "/protected/page?x=1", headers=basic("alice:secret"))
    assert status == 200
    env = json.loads(data)
    assert (env["REMOTE_USER"], env["AUTHORIZED_BY"]) == ("alice", "bridge")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/protected", "/page")


@pytest.mark.parametrize("credentials", [None, "alice:wrong", "bob:secret", "mallory:secret"])
def test_authorizer_role_refusals_keep_the_client_out(authnz, credentials):
    status, _, data = request(authnz, "GET", "/protected/page",
                              headers=basic(credentials) if credentials else {})
    assert status in (401, 403)
    assert b"REMOTE_USER" not in data


def test_apache_doc_shows_the_fastcgi_configs_the_tests_load():
    doc = (ROOT / "docs" / "apache.md").read_text()
    for name in ("fastcgi-proxy.conf", "fastcgi-fcgid.conf", "fastcgi-authnz.conf"):
        text = (ROOT / "apache" / name).read_text().rstrip("\n")
        assert text in doc, f"apache/{name} is not shown verbatim in docs/apache.md"
