"""``bridge http newsite:app --mount /cgi-bin=cgi:DIR``: old CGI scripts next to a new app.

The command is the one in docs/composition.md; the scripts (shell, Python,
Perl) are in tests/integration/fixtures/cgi-bin.  Everything is asserted on
what an HTTP client gets back, and on bridge's error log.
"""
import time

import pytest
import requests

from support import free_port
from support.composition import CGI_BIN, DOC, SITE, start_bridge
from support.doc_commands import doc_command


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = start_bridge(doc_command(DOC, "cgi-bin", site=SITE, cgi_bin=CGI_BIN, port=port), port=port)
    proc.url = f"http://127.0.0.1:{port}"
    yield proc
    proc.stop()


def log_eventually(server, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.output():
            return True
        time.sleep(0.05)
    return False


def test_the_new_app_answers_at_the_root(server):
    r = requests.get(server.url + "/about/team")
    assert r.status_code == 200
    assert r.json()["app"] == "newsite"
    assert (r.json()["script_name"], r.json()["path_info"]) == ("", "/about/team")


def test_a_shell_script_gets_path_info_query_body_and_its_own_directory(server):
    r = requests.post(server.url + "/cgi-bin/hello.sh/some/path?x=1&y=2", data=b"posted bytes",
                      headers={"Proxy": "http://evil.example:3128"})
    assert r.status_code == 200
    assert r.headers["X-Script"] == "hello.sh"
    assert r.headers["Content-Type"] == "text/plain"
    lines = r.text.splitlines()
    assert lines[0] == "shell says hello"
    assert "method=POST" in lines
    assert "script_name=/cgi-bin/hello.sh" in lines
    assert "path_info=/some/path" in lines
    assert "query=x=1&y=2" in lines
    assert "content_length=12" in lines
    assert "proxy=unset" in lines
    assert f"cwd={CGI_BIN}" in lines
    assert "body=posted bytes" in lines
    assert log_eventually(server, "[cgi hello.sh] hello.sh was run")


def test_a_python_script_gets_the_rfc_3875_meta_variables(server):
    r = requests.post(server.url + "/cgi-bin/env.py/extra?q=%20a", data={"name": "Ada", "status": "201 Created"},
                      headers={"X-Custom": "yes", "Proxy": "http://evil.example:3128"})
    assert r.status_code == 201
    assert r.reason == "Created"
    assert r.headers["Content-Type"] == "application/json"
    data = r.json()
    env = data["env"]
    assert data["lang"] == "python"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/cgi-bin/env.py"
    assert env["PATH_INFO"] == "/extra"
    assert env["QUERY_STRING"] == "q=%20a"
    assert env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert env["CONTENT_LENGTH"] == str(len("name=Ada&status=201+Created"))
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_HOST"]
    assert env["SCRIPT_FILENAME"] == str(CGI_BIN / "env.py")
    assert env["REQUEST_URI"] == "/cgi-bin/env.py/extra?q=%20a"
    assert env["HTTP_X_CUSTOM"] == "yes"
    assert env["HTTP_PROXY"] is None
    assert data["form"] == {"name": ["Ada"], "status": ["201 Created"]}
    # bridge's own environment does not leak into scripts
    assert not [n for n in data["all_names"] if n.startswith("BRIDGE") or n == "PYTHONPATH"]


def test_a_perl_script_answers_get(server):
    r = requests.get(server.url + "/cgi-bin/guestbook.pl/sign")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<h1>Perl guestbook</h1><p>path_info=/sign</p>" in r.text


def test_a_perl_local_redirect_is_served_by_the_new_app(server):
    r = requests.post(server.url + "/cgi-bin/guestbook.pl", data={"name": "Grace"}, allow_redirects=False)
    assert r.status_code == 200           # the client never sees a redirect (RFC 3875 §6.2.2)
    data = r.json()
    assert data["app"] == "newsite"
    assert (data["method"], data["path_info"], data["query"], data["body_length"]) == \
        ("GET", "/thanks", "name=Grace", 0)
    assert log_eventually(server, "[cgi guestbook.pl] guestbook: entry from Grace")


def test_a_script_that_prints_garbage_is_a_502_and_the_reason_is_logged(server):
    r = requests.get(server.url + "/cgi-bin/broken.sh")
    assert r.status_code == 502
    assert "oops" not in r.text
    assert log_eventually(server, "did not answer a valid CGI response (header line without a colon")
    assert log_eventually(server, "[cgi broken.sh] broken.sh: printed a page without headers")


def test_missing_scripts_are_404_and_other_files_are_never_sent(server):
    assert requests.get(server.url + "/cgi-bin/nothing.sh").status_code == 404
    r = requests.get(server.url + "/cgi-bin/readme.txt")
    assert r.status_code == 403
    assert "Not executable" not in r.text


def test_a_large_upload_and_a_streamed_answer_go_through_a_script(server):
    body = b"0123456789abcdef" * (1 << 16)   # 1 MiB, more than a pipe holds
    r = requests.post(server.url + "/cgi-bin/hello.sh", data=body)
    assert r.status_code == 200
    assert r.content.split(b"body=", 1)[1] == body + b"\n"


def test_a_chunked_upload_reaches_the_script_with_a_content_length(server):
    def chunks():
        yield b"part one,"
        yield b"part two"
    r = requests.post(server.url + "/cgi-bin/hello.sh", data=chunks())
    assert r.status_code == 200
    assert "content_length=17" in r.text.splitlines()
    assert r.text.endswith("body=part one,part two\n")


def test_concurrent_requests_each_run_their_own_script(server):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        r = requests.post(f"{server.url}/cgi-bin/hello.sh/{i}", data=f"body {i}".encode())
        return i, r.status_code, r.text
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(32)))
    for i, status, text in results:
        assert status == 200
        assert f"path_info=/{i}" in text and text.endswith(f"body=body {i}\n")


@pytest.fixture(scope="module")
def redirecting():
    """bridge http with --static in front and scripts that redirect locally (once, or in a loop)."""
    from support import bridge_command, public_tmpdir
    d = public_tmpdir("bridge-cgi-redirect-")
    (d / "static").mkdir()
    (d / "static" / "a.txt").write_text("served by Static\n")
    cgi = d / "cgi"
    cgi.mkdir()
    for name, location in (("go.sh", "/s/a.txt"), ("loop.sh", "/cgi/loop.sh")):
        (cgi / name).write_text(f"#!/bin/sh\nprintf 'Location: {location}\\n\\n'\n")
        (cgi / name).chmod(0o755)
    port = free_port()
    proc = start_bridge(bridge_command("http", "newsite:app", "--pythonpath", str(SITE),
                                       "--static", f"/s={d / 'static'}", "--mount", f"/cgi=cgi:{cgi}",
                                       "--ping-path", "/ping", "--bind", f"127.0.0.1:{port}"), port=port)
    proc.url = f"http://127.0.0.1:{port}"
    yield proc
    proc.stop()


def test_a_local_redirect_to_a_static_file_is_served_by_static(redirecting):
    r = requests.post(redirecting.url + "/cgi/go.sh", data=b"dropped", allow_redirects=False)
    assert r.status_code == 200
    assert r.text == "served by Static\n"
    assert "ETag" in r.headers           # Static's answer, not the app's


def test_a_local_redirect_loop_ends_with_a_500_and_a_log_line(redirecting):
    r = requests.get(redirecting.url + "/cgi/loop.sh", allow_redirects=False)
    assert r.status_code == 500
    assert log_eventually(redirecting, "more than 10 CGI local redirects (last to /cgi/loop.sh)")
