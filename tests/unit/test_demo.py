"""Every route of bridge.demo:app under wsgiref.validate, through bridge's own core.

wsgiref.validate raises AssertionError at the first violation and warns
(WSGIWarning) about doubtful things; both are failures here.  The requests
go through bridge.wsgi.call_app, as every gateway sends them.
"""
from __future__ import annotations

import io
import os
import warnings
from wsgiref.validate import validator

import pytest

from bridge import demo
from bridge.wsgi import Transport, call_app, make_environ


class Capture(Transport):
    def __init__(self):
        self.status = None
        self.headers = []
        self.parts = []
        self.ended = None

    def send_head(self, status, headers, body, end):
        self.status, self.headers = status, list(headers)
        self.parts.append(body)

    def send_body(self, data):
        self.parts.append(data)

    def finish(self):
        self.ended = "finish"

    def abort(self):
        self.ended = "abort"

    @property
    def body(self):
        return b"".join(self.parts)


def validated(method, path, query="", body=b"", **cgi):
    cgi.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query, SCRIPT_NAME="",
               SERVER_NAME="localhost", SERVER_PORT="80", SERVER_PROTOCOL="HTTP/1.1")
    if body or method == "POST":
        cgi["CONTENT_LENGTH"] = str(len(body))
    errors = io.StringIO()
    env = make_environ(cgi, input=io.BytesIO(body), errors=errors, multithread=False, multiprocess=False)
    t = Capture()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = call_app(validator(demo.app), env, t)
    assert "AssertionError" not in errors.getvalue(), errors.getvalue()
    assert [str(w.message) for w in caught] == []
    return t, response, errors.getvalue()


def test_index_lists_the_environ_under_validate():
    t, response, _ = validated("GET", "/", "who=me")
    assert t.status == "200 OK" and t.ended == "finish" and not response.failed
    assert b"<th>QUERY_STRING</th><td>who=me</td>" in t.body
    assert b"Hello from wsgi-bridge" in t.body


def test_index_escapes_what_it_shows():
    t, _, _ = validated("GET", "/", HTTP_X_EVIL="<script>alert(1)</script>")
    assert b"<script>alert" not in t.body and b"&lt;script&gt;" in t.body


def test_hello_under_validate():
    t, _, _ = validated("GET", "/hello")
    assert (t.status, t.body) == ("200 OK", b"Hello, world!\n")


def test_echo_returns_the_body_byte_exact_under_validate():
    body = os.urandom(100_000)
    t, _, _ = validated("POST", "/echo", body=body)
    assert t.status == "200 OK" and t.body == body
    assert ("Content-Type", "application/octet-stream") in t.headers


def test_echo_of_an_empty_body_under_validate():
    t, _, _ = validated("POST", "/echo")
    assert t.status == "200 OK" and t.body == b""


def test_stream_yields_chunks_under_validate():
    t, _, _ = validated("GET", "/stream", "n=4&delay=0")
    assert t.status == "200 OK"
    assert t.parts == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n", b"chunk 3\n"]


def test_stream_with_bad_parameters_falls_back_to_defaults():
    t, _, _ = validated("HEAD", "/stream", "n=x&delay=y")
    assert t.status == "200 OK" and t.body == b""


def test_an_unknown_path_is_a_404_that_shows_the_mount():
    t, _, _ = validated("GET", "/extra/p\xc3\xa4th")
    assert t.status == "404 Not Found"
    # The latin-1 "bytes as str" PATH_INFO, shown in UTF-8.
    assert "<th>PATH_INFO</th><td>/extra/p\xc3\xa4th</td>".encode("utf-8") in t.body


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_error_route_is_a_generic_500_under_validate(method):
    t, response, log = validated(method, "/error")
    assert t.status == "500 Internal Server Error" and response.failed
    assert b"do-not-leak" not in t.body
    assert "RuntimeError: the demo app failed on purpose" in log


def test_demo_module_does_not_import_html_until_the_index_page():
    import subprocess
    import sys
    code = "import sys, bridge.demo; print('html' in sys.modules, 're' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout
    assert out.split() == ["False", "False"]
