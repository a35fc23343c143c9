"""The CGI gateway under a real Apache httpd, with the shipped config and scripts.

A private Apache (tests/support/apache.py: own ServerRoot, high port,
mod_cgid under the event MPM, workers as www-data) loads apache/cgi.conf
as it is, over a cgi-bin/ directory holding:

- cgi-bin/demo.cgi, unchanged: its ``#!/usr/bin/python3`` finds bridge
  through the config's ``SetEnv PYTHONPATH`` (a world-readable copy of
  this checkout's package);
- app.cgi, made from cgi-bin/app.cgi.example with only its ``#!`` line
  rewritten to the python of a world-readable virtual environment that has
  bridge (the other deployment docs/cgi.md describes), serving a small test
  app (myproject.wsgi:application, the template's APP).

apache/cgi-root.conf (the app mounted at /) runs on a second Apache.
Everything is asserted on what an HTTP client receives, plus Apache's
error log where tracebacks must land.
"""
from __future__ import annotations

import html
import http.client
import json
import os
import re
import shutil
import socket
import time

import pytest

from support import ROOT, public_tmpdir
from support.apache import install_script, public_bridge_python, public_bridge_pythonpath, start_apache
from support.nginx import include_file
from support.warm import make_warm, private_dir_for, stop_daemons

SECRET = "do-not-leak"

# The app behind the template: the environ as JSON, and a few misbehaviours.
TEST_APP = '''\
import json, os

if os.environ.get("HTTP_X_BREAK_IMPORT"):
    raise ImportError("myproject cannot be imported today (secret: do-not-leak)")


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise ValueError("the test app failed (secret: do-not-leak)")
    if path == "/print":
        print("a stray print() from the app")
    info = {k: v for k, v in environ.items() if isinstance(v, str)}
    info["wsgi.input_terminated"] = environ.get("wsgi.input_terminated", False)
    info["os.environ:HTTP_PROXY"] = os.environ.get("HTTP_PROXY")
    info["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''


def make_site(root, *, venv_python) -> None:
    """{root}/cgi-bin with demo.cgi (as shipped), app.cgi (from the template) and the test app."""
    cgi_bin = root / "cgi-bin"
    cgi_bin.mkdir()
    cgi_bin.chmod(0o755)
    shutil.copy(ROOT / "cgi-bin" / "demo.cgi", cgi_bin / "demo.cgi")
    (cgi_bin / "demo.cgi").chmod(0o755)
    install_script(ROOT / "cgi-bin" / "app.cgi.example", cgi_bin / "app.cgi", venv_python)
    package = cgi_bin / "myproject"
    package.mkdir()
    package.chmod(0o755)
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text(TEST_APP)
    for f in package.iterdir():
        f.chmod(0o644)


@pytest.fixture(scope="module", params=["plain", "warm"])
def apache(request):
    """The site under Apache; a second time with both scripts made warm (docs/cgi.md, "A warm app").

    Warm: each script relays to its daemon (run(..., warm=True)), started by
    its first request, in a mode-700 directory of www-data's; every test
    below must hold through the relay as it does for plain CGI.
    """
    python = public_bridge_python()
    root = public_tmpdir("bridge-cgi-site-")
    make_site(root, venv_python=python)
    warm_dir = None
    if request.param == "warm":
        warm_dir = private_dir_for(root / "warm")
        for name in ("demo.cgi", "app.cgi"):
            make_warm(root / "cgi-bin" / name, warm_dir)
    body = include_file(ROOT / "apache" / "cgi.conf", root=root, pythonpath=public_bridge_pythonpath())
    server = start_apache(body, modules=("cgid",))
    server.warm_dir = warm_dir
    server.root = root
    yield server
    server.stop()
    if warm_dir is not None:
        stop_daemons(warm_dir)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(server.dir, ignore_errors=True)


def request(server, method, target, body=None, headers=None, encode_chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers=headers or {}, encode_chunked=encode_chunked)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def demo_environ(page: bytes) -> dict:
    """The demo page's environ table, values back to PEP 3333 latin-1 strings."""
    rows = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", page.decode("utf-8"), re.S)
    return {html.unescape(k): html.unescape(v) for k, v in rows}


def raw_exchange(server, data: bytes, until=None) -> bytes:
    """Send raw bytes; read until the server closes (or ``until(received)`` is true)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
            if until is not None and until(received):
                return received


def wait_for_log(server, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = server.error_log()
        if text in log or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_get_with_a_query_string_reaches_the_app_as_cgi(apache):
    status, headers, page = request(apache, "GET", "/cgi-bin/demo.cgi/?a=1&b=%C3%A4&c")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    env = demo_environ(page)
    assert env["QUERY_STRING"] == "a=1&b=%C3%A4&c"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == "/cgi-bin/demo.cgi"
    assert env["PATH_INFO"] == "/"
    assert env["SERVER_PORT"] == str(apache.port)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["wsgi.url_scheme"] == "http"
    if apache.warm_dir:      # the daemon: one process, a few threads, many requests
        assert (env["wsgi.run_once"], env["wsgi.multiprocess"], env["wsgi.multithread"]) == ("False", "False", "True")
    else:
        assert env["wsgi.run_once"] == "True"
        assert env["wsgi.multiprocess"] == "True"
        assert env["wsgi.multithread"] == "False"


def test_script_name_and_path_info_for_a_utf8_path_below_the_script(apache):
    status, _, page = request(apache, "GET", "/cgi-bin/demo.cgi/extra/p%C3%A4th")
    assert status == 404          # the demo has no such route, and lists the environ anyway
    env = demo_environ(page)
    assert env["SCRIPT_NAME"] == "/cgi-bin/demo.cgi"
    # PEP 3333 bytes as str: the UTF-8 bytes of "ä", each as one latin-1 character.
    assert env["PATH_INFO"].encode("latin-1") == "/extra/päth".encode("utf-8")


def test_post_of_one_mib_of_random_bytes_is_echoed_byte_exact(apache):
    body = os.urandom(1 << 20)
    status, headers, echoed = request(apache, "POST", "/cgi-bin/demo.cgi/echo", body,
                                      {"Content-Type": "application/octet-stream"})
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert echoed == body


def test_empty_post_is_echoed_as_an_empty_body(apache):
    status, headers, echoed = request(apache, "POST", "/cgi-bin/demo.cgi/echo", b"")
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert echoed == b""


def test_chunked_post_without_content_length_reaches_the_app_whole(apache):
    parts = [os.urandom(10000), b"", os.urandom(70000)]
    status, _, echoed = request(apache, "POST", "/cgi-bin/demo.cgi/echo", iter([p for p in parts if p]),
                                encode_chunked=True)
    assert status == 200
    assert echoed == b"".join(parts)


def test_authorization_header_reaches_the_app(apache):
    status, _, page = request(apache, "GET", "/cgi-bin/demo.cgi/",
                              headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert status == 200
    assert demo_environ(page)["HTTP_AUTHORIZATION"] == "Basic dXNlcjpwYXNz"


def test_head_gets_the_headers_of_get_and_no_body(apache):
    # Apache 2.4 re-frames CGI output itself (it drops the script's
    # Content-Length and chunks GET responses), so the client-visible proof
    # is: the status and headers of GET, and not one byte after them.
    reply = raw_exchange(apache, b"HEAD /cgi-bin/demo.cgi/hello HTTP/1.1\r\nHost: t\r\n"
                                 b"Connection: close\r\n\r\n")
    head, _, rest = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nContent-Type: text/plain" in head
    assert rest == b""


def test_streamed_chunks_arrive_before_the_response_ends(apache):
    with socket.create_connection(("127.0.0.1", apache.port), timeout=60) as sock:
        sock.sendall(b"GET /cgi-bin/demo.cgi/stream?n=3&delay=1 HTTP/1.1\r\nHost: t\r\n"
                     b"Connection: close\r\n\r\n")
        received = b""
        while b"chunk 0" not in received:
            data = sock.recv(65536)
            assert data, f"connection closed before the first chunk: {received!r}"
            received += data
        # The first chunk is here while the app is still sleeping before the last.
        assert b"chunk 2" not in received
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding: chunked" in received
    for i in range(3):
        assert f"chunk {i}\n".encode() in received


def test_an_app_that_raises_gives_a_500_and_the_traceback_only_in_the_error_log(apache):
    status, headers, body = request(apache, "GET", "/cgi-bin/demo.cgi/error")
    assert status == 500
    assert body == b"Internal Server Error\n"
    assert SECRET not in repr(headers) and b"Traceback" not in body
    log = wait_for_log(apache, "the demo app failed on purpose")
    assert "Traceback" in log and "RuntimeError: the demo app failed on purpose" in log


def test_the_template_serves_a_user_app_with_a_venv_python(apache):
    status, headers, body = request(apache, "GET", "/cgi-bin/app.cgi/x/y?z=1")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    env = json.loads(body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/cgi-bin/app.cgi", "/x/y", "z=1")


def test_a_user_app_that_fails_to_import_still_gives_a_valid_500(apache):
    script = "app.cgi"
    if apache.warm_dir:
        # The daemon does not see a request's headers at import time (it
        # keeps none of the variables of the request that started it): an
        # app that always fails to import, under a script of its own.  The
        # daemon cannot start, so the script answers as plain CGI.
        script = "broken.cgi"
        broken = apache.root / "cgi-bin" / "myproject" / "broken.py"
        broken.write_text('raise ImportError("myproject cannot be imported today (secret: do-not-leak)")\n')
        broken.chmod(0o644)
        text = (apache.root / "cgi-bin" / "app.cgi").read_text()
        (apache.root / "cgi-bin" / script).write_text(text.replace('"myproject.wsgi:application"',
                                                                   '"myproject.broken:application"'))
        (apache.root / "cgi-bin" / script).chmod(0o755)
    status, headers, body = request(apache, "GET", f"/cgi-bin/{script}/", headers={"X-Break-Import": "1"})
    assert status == 500
    assert body == b"Internal Server Error\n"
    assert SECRET not in repr(headers)
    log = wait_for_log(apache, "myproject cannot be imported today")
    assert "ImportError" in log


def test_a_user_app_that_raises_gives_a_500_that_leaks_nothing(apache):
    status, headers, body = request(apache, "GET", "/cgi-bin/app.cgi/raise")
    assert status == 500
    assert body == b"Internal Server Error\n"
    assert SECRET not in repr(headers)
    assert "ValueError: the test app failed" in wait_for_log(apache, "the test app failed")


def test_a_stray_print_goes_to_the_error_log_not_into_the_response(apache):
    status, _, body = request(apache, "GET", "/cgi-bin/app.cgi/print")
    assert status == 200
    assert json.loads(body)["PATH_INFO"] == "/print"
    if apache.warm_dir:         # the daemon's stdout is its log file
        deadline = time.monotonic() + 15
        while not any("a stray print() from the app" in p.read_text(errors="replace")
                      for p in apache.warm_dir.glob("*.log")):
            assert time.monotonic() < deadline, "the print is not in the daemon's log"
            time.sleep(0.1)
    else:
        assert "a stray print() from the app" in wait_for_log(apache, "a stray print() from the app")


def test_a_post_body_reaches_the_user_app(apache):
    status, _, body = request(apache, "POST", "/cgi-bin/app.cgi/form", b"a=1&b=2",
                              {"Content-Type": "application/x-www-form-urlencoded"})
    env = json.loads(body)
    assert status == 200
    assert (env["body"], env["CONTENT_LENGTH"], env["CONTENT_TYPE"]) == (
        "a=1&b=2", "7", "application/x-www-form-urlencoded")


def test_an_app_mounted_at_the_root_gets_an_empty_script_name():
    python = public_bridge_python()
    root = public_tmpdir("bridge-cgi-root-")
    make_site(root, venv_python=python)
    # No PYTHONPATH: app.cgi's venv python has bridge on its own.
    body = include_file(ROOT / "apache" / "cgi-root.conf", root=root, pythonpath="", script="app.cgi")
    server = start_apache(body, modules=("cgid",))
    try:
        for target, path_info in (("/", "/"), ("/foo/bar?q=1", "/foo/bar")):
            status, _, reply = request(server, "GET", target)
            assert status == 200, reply
            env = json.loads(reply)
            assert env["SCRIPT_NAME"] == ""
            assert env["PATH_INFO"] == path_info
            assert "PYTHONPATH" not in env or env["PYTHONPATH"] == ""
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(server.dir, ignore_errors=True)


def test_the_docs_show_the_shipped_configs_and_template_verbatim():
    cgi_doc = (ROOT / "docs" / "cgi.md").read_text()
    apache_doc = (ROOT / "docs" / "apache.md").read_text()
    for name in ("cgi.conf", "cgi-root.conf"):
        assert (ROOT / "apache" / name).read_text() in cgi_doc, f"apache/{name} is not verbatim in docs/cgi.md"
    assert (ROOT / "apache" / "cgi.conf").read_text() in apache_doc
    assert (ROOT / "cgi-bin" / "app.cgi.example").read_text() in cgi_doc


def test_the_shipped_scripts_name_a_real_interpreter_and_are_executable():
    for name in ("demo.cgi", "app.cgi.example"):
        path = ROOT / "cgi-bin" / name
        first = path.read_text().splitlines()[0]
        assert first == "#!/usr/bin/python3", f"{name}: {first}"
        assert os.access(path, os.X_OK), f"{name} is not executable"


def test_the_documented_check_command_passes_on_the_demo():
    import subprocess
    from support import bridge_env
    from support.doc_commands import doc_command
    proc = subprocess.run(doc_command("docs/cgi.md", "check-demo"), env=bridge_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no problems found" in proc.stdout
