"""bridge.logtext: the one escaping of client data in every log line."""
from __future__ import annotations

import io

import pytest

from bridge.logtext import describe_request, escape

FORGED = "/x\n[2026-01-01 00:00:00 +0000] [1] [INFO] admin password reset\r\x1b[2J\x07\x00\x7f\x85\xe9\xff"


@pytest.mark.parametrize("ch", [chr(c) for c in [*range(0x20), 0x7f, *range(0x80, 0x100)]])
def test_every_control_and_non_ascii_byte_becomes_a_visible_escape(ch):
    assert escape("a" + ch + "b") == f"a\\x{ord(ch):02x}b"


def test_printable_ascii_passes_and_quote_and_backslash_are_escaped():
    assert escape("/a b?c=d&e=%41") == "/a b?c=d&e=%41"
    assert escape('say "hi" \\x0a') == 'say \\"hi\\" \\\\x0a'   # a typed \x0a differs from an escaped LF


def test_characters_beyond_latin1_are_escaped_too():
    assert escape("\u2028\U0001f600") == "\\u2028\\U0001f600"


def test_a_forged_path_gives_one_printable_line():
    line = describe_request({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/php", "PATH_INFO": FORGED,
                             "QUERY_STRING": "q=\x1b"}, query=True)
    assert line.isprintable() and line.isascii() and "\n" not in line
    assert line.startswith("GET /php/x\\x0a[2026-01-01") and line.endswith("?q=\\x1b")


def test_the_wsgi_core_error_line_describes_the_request_escaped():
    from bridge.wsgi import Transport, call_app, make_environ

    def app(environ, start_response):
        raise RuntimeError("boom")
    errors = io.StringIO()
    env = make_environ({"REQUEST_METHOD": "GET", "PATH_INFO": FORGED}, input=io.BytesIO(), errors=errors,
                       multithread=False, multiprocess=False)
    call_app(app, env, Transport())
    first = errors.getvalue().splitlines()[0]
    assert first.startswith("error while serving GET /x\\x0a[2026-01-01")
    assert first.isascii() and first.isprintable()
    assert "\x1b" not in errors.getvalue() and "\r" not in errors.getvalue()


def test_a_scripts_stderr_lines_are_escaped(tmp_path):
    from bridge.cgi.app import CGIApp
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\nprintf 'line one\\033[2J\\r\\n[2026-01-01] [INFO] forged\\n' >&2\n"
                      "printf 'Content-Type: text/plain\\n\\nok'\n")
    script.chmod(0o755)
    errors = io.StringIO()
    env = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "", "wsgi.errors": errors,
           "wsgi.input": io.BytesIO(), "SERVER_NAME": "x", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}
    body = b"".join(CGIApp(str(script))(env, lambda s, h, e=None: None))
    assert body == b"ok"
    lines = errors.getvalue().splitlines()
    assert "[cgi s.sh] line one\\x1b[2J" in lines and "[cgi s.sh] [2026-01-01] [INFO] forged" in lines
    assert "\x1b" not in errors.getvalue()
