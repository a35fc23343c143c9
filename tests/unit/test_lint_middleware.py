"""bridge.middleware.Lint: violations become one log line each, responses pass unchanged.

The checking is bridge.lint's (shared with ``bridge check``); these tests
drive the middleware with a small stand-in checker of the same interface,
``wrap(app, report) -> app``, to pin down what the middleware itself does.
"""
import io
import sys

import pytest

from bridge.middleware.lint import Lint, describe_request


def stand_in_wrap(app, report):
    """Reports a non-str status and non-bytes chunks; changes nothing."""
    def checked(environ, start_response):
        def checking_start_response(status, headers, exc_info=None):
            if type(status) is not str:
                report(environ, f"status must be a str, got {status!r}")
            return start_response(status, headers, exc_info)
        for chunk in app(environ, checking_start_response):
            if type(chunk) is not bytes:
                report(environ, f"body chunk must be bytes,\n got {type(chunk).__name__}")
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
    ({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/app", "PATH_INFO": "/a b", "QUERY_STRING": "q=1"}, "GET /app/a\\x20b?q=1"),
    ({"REQUEST_METHOD": "HEAD", "PATH_INFO": "/x\r\nInjected: 1"}, "HEAD /x\\x0d\\x0aInjected:\\x201"),
    ({"REQUEST_METHOD": "GET", "PATH_INFO": "/caf\xc3\xa9"}, "GET /caf\\xc3\\xa9"),
    ({}, "? /"),
])
def test_request_description_is_one_printable_line(env, expected):
    assert describe_request(env) == expected


def test_without_bridge_lint_the_error_says_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "bridge.lint", None)
    with pytest.raises(RuntimeError, match="bridge.lint.wrap"):
        Lint(lambda e, s: [])
