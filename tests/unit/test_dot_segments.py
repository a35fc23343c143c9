"""Dot segments never cross a mount boundary (RFC 3986 §5.2.4 after decoding, before routing).

One list of forms, checked against the rule (``remove_dot_segments`` of the
decoded path) and against every place that turns a request into a
PATH_INFO or routes on one: the HTTP server's environ, the FastCGI server's
re-decoding of REQUEST_URI, the PATH_INFO a web server
sends (CGI gateway, FastCGI) and :class:`bridge.mount` itself (for servers that do not
normalise, such as a plain WSGI server in front of ``bridge.mount``).
"""
import io
import json

import pytest

from bridge.fastcgi.server import fix_script_name_and_path_info
from bridge.middleware.mount import Mount
from bridge.cgi.gateway import run_cgi
from bridge.wsgi import AmbiguousPath, decode_path, remove_dot_segments
from support.http_server import RunningHTTP, read_response

#: raw request path → the PATH_INFO every gateway hands on.
FORMS = [
    ("/admin/../public", "/public"),
    ("/admin/%2e%2e/public", "/public"),
    ("/admin/%2E%2E/public", "/public"),
    ("/admin/.%2e/public", "/public"),
    ("/admin/%2e./public", "/public"),
    ("/admin/./../public", "/public"),
    ("/admin/./..//public", "//public"),          # the empty segment stays (RFC 3986)
    ("/admin/x/../../public", "/public"),
    ("/admin/..", "/"),                          # trailing: the directory
    ("/admin/%2e%2e", "/"),
    ("/admin/.", "/admin/"),
    ("/admin/%2e", "/admin/"),
    ("/../../../public", "/public"),             # above the root: dropped, as the RFC says
    ("/admin/../../../public", "/public"),
    ("/admin/..%2fpublic", "/public"),           # %2F decodes to "/" (as for CGI): a separator
    ("/admin%2F..%2Fpublic", "/public"),
    ("/admin/..%2Fpublic", "/public"),
    ("/admin/..;/public", "/admin/..;/public"),  # no path parameters in HTTP: an ordinary name
    ("/admin/..\\public", "/admin/..\\public"),  # backslash: an ordinary character on POSIX
    ("/admin/.../public", "/admin/.../public"),
    ("/admin/%252e%252e/public", "/admin/%2e%2e/public"),   # decoded once, never twice
    ("/admin/.well-known", "/admin/.well-known"),
    ("/public/page", "/public/page"),
]


#: A ``..`` that would remove an empty segment: nginx and Apache (merging
#: ``//`` by default) resolve ``/admin//../x`` to ``/x``, without merging to
#: ``/admin/x``.  Routed either way, one configuration lets it past a front
#: proxy's deny rule for ``/admin/``: every gateway refuses it (400).
AMBIGUOUS = [
    "/admin//../x",
    "/admin/%2f../x",
    "/admin%2f%2f..%2fx",
    "/admin/x//..//../y",
    "/admin//x/../../y",
    "/admin/.//../x",
    "/public//../admin/x",
    "//..",
    "/admin//..",
]


@pytest.mark.parametrize("raw", AMBIGUOUS)
def test_a_dot_dot_after_an_empty_segment_is_refused_by_the_rule(raw):
    with pytest.raises(AmbiguousPath):
        remove_dot_segments(decode_path(raw.encode("latin-1")))


@pytest.mark.parametrize("raw", AMBIGUOUS)
def test_a_mount_refuses_a_dot_dot_after_an_empty_segment(raw):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
    body = b"".join(SITE({"SCRIPT_NAME": "", "PATH_INFO": decode_path(raw.encode("latin-1"))}, start_response))
    assert seen["status"].startswith("400"), (seen, body)


@pytest.mark.parametrize("raw", AMBIGUOUS)
def test_fastcgi_refuses_a_dot_dot_after_an_empty_segment(raw):
    with pytest.raises(AmbiguousPath):
        fix_script_name_and_path_info({"REQUEST_URI": raw, "SCRIPT_NAME": "/x"}, None)
    with pytest.raises(AmbiguousPath):
        fix_script_name_and_path_info({"SCRIPT_NAME": "", "PATH_INFO": decode_path(raw.encode("latin-1"))}, None)


@pytest.mark.parametrize("raw", AMBIGUOUS)
def test_the_cgi_gateway_refuses_a_dot_dot_after_an_empty_segment(raw):
    environ = {"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/site.cgi",
               "PATH_INFO": decode_path(raw.encode("latin-1")), "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}
    stdout = io.BytesIO()
    run_cgi(who("app"), environ=environ, stdin=io.BytesIO(), stdout=stdout, stderr=io.StringIO())
    assert stdout.getvalue().startswith(b"Status: 400"), stdout.getvalue()


@pytest.mark.parametrize("raw, expected", FORMS)
def test_the_rule_decodes_then_removes_dot_segments(raw, expected):
    assert remove_dot_segments(decode_path(raw.encode("latin-1"))) == expected


@pytest.mark.parametrize("path", ["", "*", "admin/../x", "/", "/a/b/"])
def test_paths_without_dot_segments_or_a_leading_slash_are_left_alone(path):
    assert remove_dot_segments(path) == path


def who(name):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps([name, environ["SCRIPT_NAME"], environ["PATH_INFO"]]).encode()]
    return app


SITE = Mount({"/admin": who("admin"), "/": who("public")})


def call(app, environ):
    out = {}

    def start_response(status, headers, exc_info=None):
        out["status"] = status
    body = b"".join(app(environ, start_response))
    return json.loads(body)


@pytest.mark.parametrize("raw, expected", FORMS)
def test_a_mount_never_routes_a_dot_segment_into_a_prefix(raw, expected):
    # What a server that does not normalise hands over: the decoded path as is.
    got = call(SITE, {"SCRIPT_NAME": "", "PATH_INFO": decode_path(raw.encode("latin-1"))})
    if expected == "/admin" or expected.startswith("/admin/"):
        assert got == ["admin", "/admin", expected[len("/admin"):]]
    else:
        assert got == ["public", "", expected]


@pytest.mark.parametrize("raw, expected", FORMS)
def test_fastcgi_decodes_request_uri_without_dot_segments(raw, expected):
    # nginx's stock fastcgi_params: REQUEST_URI raw, SCRIPT_NAME its normalised $uri.
    params = {"REQUEST_URI": raw + "?q=1", "SCRIPT_NAME": expected}
    fix_script_name_and_path_info(params, None)
    assert params["SCRIPT_NAME"] + params["PATH_INFO"] == expected
    assert params["REQUEST_URI"] == raw + "?q=1"          # the raw target, as received


@pytest.mark.parametrize("raw, expected", FORMS)
def test_fastcgi_normalises_a_path_info_the_web_server_sent(raw, expected):
    params = {"SCRIPT_NAME": "", "PATH_INFO": decode_path(raw.encode("latin-1"))}
    fix_script_name_and_path_info(params, None)
    assert params["PATH_INFO"] == expected


@pytest.mark.parametrize("raw, expected", FORMS)
def test_the_cgi_gateway_normalises_the_path_info_it_is_given(raw, expected):
    # A web server that did not normalise: the gateway routes on the clean path.
    environ = {"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/site.cgi",
               "PATH_INFO": decode_path(raw.encode("latin-1")), "QUERY_STRING": "",
               "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1"}
    stdout = io.BytesIO()
    run_cgi(who("app"), environ=environ, stdin=io.BytesIO(), stdout=stdout, stderr=io.StringIO())
    head, _, body = stdout.getvalue().partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200"), stdout.getvalue()
    assert json.loads(body) == ["app", "/site.cgi", expected]


def echo_environ(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({k: environ[k] for k in ("SCRIPT_NAME", "PATH_INFO", "REQUEST_URI")}).encode()]


@pytest.fixture(scope="module")
def http():
    # The app itself, no mount: what the HTTP gateway alone hands on.
    with RunningHTTP(echo_environ, threads=2) as running:
        yield running


@pytest.mark.parametrize("raw", AMBIGUOUS)
def test_the_http_server_refuses_a_dot_dot_after_an_empty_segment(http, raw):
    with http.connect() as c:
        c.sendall(f"GET {raw}?x HTTP/1.1\r\nHost: h\r\n\r\n".encode("latin-1"))
        status, _, body = read_response(c)
    assert status.startswith("HTTP/1.1 400"), (status, body)


@pytest.mark.parametrize("raw, expected", FORMS)
def test_the_http_server_hands_on_the_path_without_dot_segments(http, raw, expected):
    with http.connect() as c:
        c.sendall(f"GET {raw}?x HTTP/1.1\r\nHost: h\r\n\r\n".encode("latin-1"))
        status, _, body = read_response(c)
    assert status.startswith("HTTP/1.1 200"), (status, body)
    assert json.loads(body) == {"SCRIPT_NAME": "", "PATH_INFO": expected, "REQUEST_URI": raw + "?x"}
