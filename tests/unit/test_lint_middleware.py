"""bridge.middleware.Lint: violations become one log line each, responses pass unchanged.

The checking is bridge.lint's (shared with ``bridge check``).  Most tests
drive the middleware with a small stand-in checker of the same interface,
``lint(app, report) -> app`` with ``report(message, environ)``, to pin down
what the middleware itself does; the last ones use the real checker.
"""
import io
import os
import sys

import pytest

from bridge.middleware.lint import Lint, describe_request


def stand_in_wrap(app, report):
    """Reports a non-str status and non-bytes chunks; changes nothing."""
    def checked(environ, start_response):
        def checking_start_response(status, headers, exc_info=None):
            if type(status) is not str:
                report(f"status must be a str, got {status!r}", environ)
            return start_response(status, headers, exc_info)
        for chunk in app(environ, checking_start_response):
            if type(chunk) is not bytes:
                report(f"body chunk must be bytes,\n got {type(chunk).__name__}", environ)
            yield chunk
    return checked


def environ(path="/x", query="", method="GET"):
    return {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
            "wsgi.errors": io.StringIO()}


def call(app, env):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers
    body = list(app(env, start_response))
    return seen["status"], body


def test_each_violation_is_one_line_naming_the_request():
    def broken(environ, start_response):
        start_response(200, [])
        return ["text", b"bytes"]
    env = environ("/broken/status", "a=1")
    status, body = call(Lint(broken, checker=stand_in_wrap), env)
    lines = env["wsgi.errors"].getvalue().splitlines()
    assert lines == [
        "bridge lint: GET /broken/status?a=1: status must be a str, got 200",
        "bridge lint: GET /broken/status?a=1: body chunk must be bytes, got str",
    ]


def test_response_passes_unchanged():
    def fine(environ, start_response):
        start_response("201 Created", [("X", "1")])
        return [b"a", b"b"]
    env = environ()
    assert call(Lint(fine, checker=stand_in_wrap), env) == ("201 Created", [b"a", b"b"])
    assert env["wsgi.errors"].getvalue() == ""


def test_custom_log_receives_the_environ_and_the_line():
    lines = []

    def broken(environ, start_response):
        start_response(404, [])
        return [b""]
    call(Lint(broken, checker=stand_in_wrap, log=lambda env, line: lines.append((env["PATH_INFO"], line))),
         environ("/p", method="POST"))
    assert lines == [("/p", "bridge lint: POST /p: status must be a str, got 404")]


def test_a_failing_log_never_breaks_the_response():
    def broken(environ, start_response):
        start_response(200, [])
        return [b"ok"]

    def bad_log(env, line):
        raise OSError("disk full")
    assert call(Lint(broken, checker=stand_in_wrap, log=bad_log), environ())[1] == [b"ok"]


def test_missing_errors_stream_falls_back_to_stderr(capsys):
    def broken(environ, start_response):
        start_response(200, [])
        return [b"ok"]
    env = environ()
    del env["wsgi.errors"]
    call(Lint(broken, checker=stand_in_wrap), env)
    assert "bridge lint: GET /x: status must be a str" in capsys.readouterr().err


@pytest.mark.parametrize("env, expected", [
    ({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/app", "PATH_INFO": "/a b", "QUERY_STRING": "q=1"}, "GET /app/a b?q=1"),
    ({"REQUEST_METHOD": "HEAD", "PATH_INFO": "/x\r\nInjected: 1"}, "HEAD /x\\x0d\\x0aInjected: 1"),
    ({"REQUEST_METHOD": "GET", "PATH_INFO": "/caf\xc3\xa9"}, "GET /caf\\xc3\\xa9"),
    ({}, "? /"),
])
def test_request_description_is_one_printable_line(env, expected):
    assert describe_request(env) == expected


def test_without_bridge_lint_the_error_says_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "bridge.lint", None)
    with pytest.raises(RuntimeError, match="bridge.lint.lint"):
        Lint(lambda e, s: [])


# -- with the real checker (bridge.lint), through the WSGI core --------------------

from support import middleware_apps  # noqa: E402

from bridge.wsgi import call_app, make_environ  # noqa: E402


class Sink:
    def __init__(self):
        self.status = None
        self.body = b""
        self.sendfile = False

    def send_head(self, status, headers, body, end):
        self.status = status
        self.body += body

    def send_body(self, data):
        self.body += data

    def send_file(self, fd, offset, count):
        self.sendfile = True
        self.body += os.pread(fd, count, offset)

    def finish(self):
        pass

    def abort(self):
        pass


def serve(app, path, query="from=unit"):
    errors = io.StringIO()
    env = make_environ({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query},
                       input=io.BytesIO(), errors=errors, multithread=False, multiprocess=False)
    sink = Sink()
    call_app(app, env, sink)
    lines = [line for line in errors.getvalue().splitlines() if line.startswith("bridge lint: ")]
    return sink, lines


@pytest.mark.parametrize("path, words", [
    ("/broken/status", ("app:", "status", "int")),
    ("/broken/str-body", ("app:", "bytes", "str")),
    ("/broken/late-headers", ("app:", "start_response", "second time")),
    ("/broken/header-type", ("app:", "X-Count")),
])
def test_real_checker_reports_each_broken_app_in_one_line(path, words):
    sink, lines = serve(Lint(middleware_apps.app), path)
    assert lines, path
    assert all(line.startswith(f"bridge lint: GET {path}?from=unit: ") for line in lines)
    assert any(all(w.lower() in line.lower() for w in words) for line in lines), lines


def test_real_checker_leaves_the_response_to_the_gateway():
    # The int status is still refused by the core (500): Lint reports, it does not decide.
    sink, _ = serve(Lint(middleware_apps.app), "/broken/status")
    assert sink.status == "500 Internal Server Error"
    sink, lines = serve(Lint(middleware_apps.app), "/text")
    assert sink.status == "200 OK" and lines == []


def test_real_checker_keeps_the_file_wrapper_sendfile_path(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"file body")

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](open(tmp_path / "f.txt", "rb"))
    sink, lines = serve(Lint(app), "/")
    assert sink.sendfile and sink.body == b"file body" and lines == []
