"""The WSGI core (bridge.wsgi) with byte strings: environ, wsgi.input, start_response,
write, iteration, close, file_wrapper and the error responses (PEP 3333).

A recording transport stands in for a gateway: every test asserts on what
would have gone to the client (status, headers, body bytes, finish/abort)
and on what went to the log (wsgi.errors).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.wsgi import (ERROR_BODY, BoundedInput, FileWrapper, InputStream, Transport, WSGIError,
                         apply_script_name, call_app, decode_path, encode_headers, make_environ,
                         status_has_body)

SECRET = "secret-do-not-leak"


class Recorder(Transport):
    """What the client would receive, in order."""

    def __init__(self, fail_on: str | None = None, exc: type = BrokenPipeError) -> None:
        self.events: list = []
        self.fail_on = fail_on
        self.exc = exc

    def _maybe_fail(self, what: str) -> None:
        if self.fail_on == what:
            raise self.exc("client went away")

    def send_head(self, status, headers, body, end):
        self._maybe_fail("head")
        self.events.append(("head", status, list(headers), body, end))

    def send_body(self, data):
        self._maybe_fail("body")
        self.events.append(("body", data))

    def finish(self):
        self._maybe_fail("finish")
        self.events.append(("finish",))

    def abort(self):
        self.events.append(("abort",))

    # what a client sees
    @property
    def head(self):
        heads = [e for e in self.events if e[0] == "head"]
        assert len(heads) <= 1, f"headers sent twice: {self.events}"
        return heads[0] if heads else None

    @property
    def status(self):
        return self.head[1] if self.head else None

    @property
    def headers(self):
        return dict(self.head[2]) if self.head else {}

    @property
    def body(self):
        return b"".join([e[3] for e in self.events if e[0] == "head"] +
                        [e[1] for e in self.events if e[0] == "body"])

    @property
    def wire(self) -> bytes:
        """Everything sent, as bytes (to look for leaks)."""
        if not self.head:
            return b""
        return self.status.encode() + encode_headers(self.head[2]) + self.body


class SendfileRecorder(Recorder):
    def send_file(self, fd, offset, count):
        self.events.append(("sendfile", os.pread(fd, count, offset), offset, count))


def environ(method="GET", body=b"", errors=None, **cgi):
    cgi.setdefault("REQUEST_METHOD", method)
    if body:
        cgi.setdefault("CONTENT_LENGTH", str(len(body)))
    return make_environ(cgi, input=io.BytesIO(body), errors=errors if errors is not None else io.StringIO(),
                        multithread=False, multiprocess=True)


def run(app, method="GET", body=b"", transport=None, **cgi):
    env = environ(method, body, **cgi)
    t = transport or Recorder()
    response = call_app(app, env, t)
    return t, response, env["wsgi.errors"].getvalue()


def simple(status="200 OK", headers=None, body=(b"hello",)):
    headers = [("Content-Type", "text/plain")] if headers is None else headers

    def app(environ, start_response):
        start_response(status, list(headers))
        return list(body)
    return app


class Closing:
    """A result iterable that records close() (and how far it was iterated)."""

    def __init__(self, chunks, fail_at=None, start=None):
        self.chunks = chunks
        self.fail_at = fail_at
        self.start = start
        self.closed = 0
        self.yielded = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError(SECRET)
            self.yielded += 1
            yield chunk

    def close(self):
        self.closed += 1


def closing_app(result, status="200 OK", headers=None):
    def app(environ, start_response):
        start_response(status, headers if headers is not None else [("Content-Type", "text/plain")])
        return result
    return app


# --------------------------------------------------------------------------
# environ

def test_environ_has_every_key_pep3333_requires_with_the_right_types():
    env = make_environ({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "3"}, input=io.BytesIO(b"abc"),
                       errors=sys.stderr, multithread=True, multiprocess=False)
    for key in ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
                "SERVER_PORT", "SERVER_PROTOCOL"):
        assert type(env[key]) is str, key
    assert env["wsgi.version"] == (1, 0) and type(env["wsgi.version"]) is tuple
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.errors"] is sys.stderr
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.input"].read(3) == b"abc"
    assert "wsgi.input_terminated" not in env


def test_missing_cgi_variables_get_pep3333_defaults():
    env = make_environ({}, input=io.BytesIO(), errors=sys.stderr, multithread=False, multiprocess=False)
    assert (env["REQUEST_METHOD"], env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("GET", "", "", "")
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == ("localhost", "80", "HTTP/1.0")


def test_server_name_falls_back_to_the_host_header_without_its_port():
    env = make_environ({"HTTP_HOST": "example.org:8080"}, input=io.BytesIO(), errors=sys.stderr,
                       multithread=False, multiprocess=False)
    assert env["SERVER_NAME"] == "example.org"


@pytest.mark.parametrize("https, scheme", [("on", "https"), ("ON", "https"), ("1", "https"),
                                           ("off", "http"), ("0", "http"), ("", "http")])
def test_url_scheme_comes_from_the_https_variable(https, scheme):
    assert environ(HTTPS=https)["wsgi.url_scheme"] == scheme


@pytest.mark.parametrize("request_scheme, scheme", [("https", "https"), ("HTTPS", "https"), ("http", "http")])
def test_url_scheme_comes_from_request_scheme(request_scheme, scheme):
    assert environ(REQUEST_SCHEME=request_scheme, HTTPS="off")["wsgi.url_scheme"] == scheme


def test_a_gateway_given_url_scheme_wins():
    env = make_environ({"HTTPS": "on"}, input=io.BytesIO(), errors=sys.stderr, multithread=False,
                       multiprocess=False, url_scheme="http")
    assert env["wsgi.url_scheme"] == "http"


def test_httpoxy_proxy_header_is_dropped_from_the_environ():
    assert "HTTP_PROXY" not in environ(HTTP_PROXY="http://evil:3128")


def test_input_terminated_is_set_only_when_the_gateway_delimits_the_body():
    env = make_environ({}, input=io.BytesIO(), errors=sys.stderr, multithread=False, multiprocess=False,
                       input_terminated=True)
    assert env["wsgi.input_terminated"] is True


def test_utf8_path_arrives_as_latin1_bytes_as_str():
    path = decode_path(b"/caf%C3%A9/\xe2\x82\xac")
    assert path == "/caf\xc3\xa9/\xe2\x82\xac"
    assert path.encode("latin-1") == "/café/€".encode("utf-8")


def test_invalid_utf8_path_arrives_intact():
    path = decode_path(b"/%FF%FE/\xc3(")
    assert path.encode("latin-1") == b"/\xff\xfe/\xc3("


def test_decode_path_keeps_malformed_escapes_and_decodes_2f():
    assert decode_path(b"/a%2Fb") == "/a/b"
    assert decode_path(b"/%zz/%4/%") == "/%zz/%4/%"
    assert decode_path(b"/%4g%41") == "/%4gA"


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_decode_path_inverts_percent_encoding_of_any_bytes(raw):
    assert decode_path(quote_from_bytes(raw, safe="/").encode("ascii")).encode("latin-1") == raw


def test_apply_script_name_moves_the_prefix_to_script_name():
    env = {"SCRIPT_NAME": "", "PATH_INFO": "/app/x/y"}
    apply_script_name(env, "/app/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/x/y")
    env = {"SCRIPT_NAME": "", "PATH_INFO": "/application"}
    apply_script_name(env, "/app")      # not a path segment boundary: untouched
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/application")


def test_status_has_body():
    assert status_has_body("200 OK", "GET")
    assert not status_has_body("200 OK", "HEAD")
    assert not status_has_body("204 No Content", "GET")
    assert not status_has_body("304 Not Modified", "GET")
    assert not status_has_body("101 Switching", "GET")


# --------------------------------------------------------------------------
# wsgi.input

class Trickle(io.RawIOBase):
    """A raw stream that returns at most ``step`` bytes per read, like a socket."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self.data = data
        self.pos = 0
        self.step = step
        self.reads = 0

    def readable(self):
        return True

    def read(self, n=-1):
        self.reads += 1
        n = self.step if n is None or n < 0 else min(n, self.step)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


BODY = b"first line\nsecond\n\nlast without newline"


def test_input_read_all_stops_at_content_length():
    raw = io.BytesIO(BODY + b"NEXT REQUEST")
    stream = BoundedInput(raw, len(BODY))
    assert stream.read() == BODY
    assert stream.read() == b"" and stream.read(10) == b""
    assert raw.read() == b"NEXT REQUEST"          # never read past CONTENT_LENGTH


def test_input_read_n_in_pieces():
    stream = BoundedInput(Trickle(BODY + b"XX"), len(BODY))
    assert stream.read(5) == b"first"
    assert stream.read(0) == b""
    assert stream.read(6) == b" line\n"
    assert stream.read(1000) == BODY[11:]
    assert stream.read(1) == b""


def test_input_readline_and_readline_size():
    stream = BoundedInput(Trickle(BODY), len(BODY))
    assert stream.readline() == b"first line\n"
    assert stream.readline(3) == b"sec"
    assert stream.readline(100) == b"ond\n"
    assert stream.readline() == b"\n"
    assert stream.readline() == b"last without newline"
    assert stream.readline() == b""


def test_input_readlines_with_and_without_hint():
    assert BoundedInput(io.BytesIO(BODY), len(BODY)).readlines() == BODY.splitlines(keepends=True)
    stream = BoundedInput(io.BytesIO(BODY), len(BODY))
    assert stream.readlines(5) == [b"first line\n"]
    assert stream.readlines(None) == [b"second\n", b"\n", b"last without newline"]


def test_input_iteration_yields_lines():
    assert list(BoundedInput(Trickle(BODY, 1), len(BODY))) == BODY.splitlines(keepends=True)


def test_empty_body_is_empty_for_every_method():
    stream = BoundedInput(io.BytesIO(b"do not read me"), 0)
    assert stream.read() == b"" and stream.read(5) == b"" and stream.readline() == b""
    assert stream.readlines() == [] and list(stream) == []


def test_a_body_shorter_than_content_length_is_an_error_not_a_short_read():
    stream = BoundedInput(io.BytesIO(b"abc"), 10)
    with pytest.raises(OSError) as info:
        stream.read()
    assert getattr(info.value, "client_gone", False)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"\n")),
       step=st.integers(1, 17),
       ops=st.lists(st.tuples(st.sampled_from(["read", "read_n", "readline", "readline_n", "readlines"]),
                              st.integers(0, 40)), max_size=12))
def test_input_matches_bytesio_for_any_sequence_of_calls(body, step, ops):
    """io.BytesIO over the body is the reference for what wsgi.input must return."""
    stream = BoundedInput(Trickle(body + b"TRAILING", step), len(body))
    ref = io.BytesIO(body)
    for op, n in ops:
        if op == "read":
            assert stream.read() == ref.read()
        elif op == "read_n":
            assert stream.read(n) == ref.read(n)
        elif op == "readline":
            assert stream.readline() == ref.readline()
        elif op == "readline_n":
            assert stream.readline(n) == ref.readline(n)
        else:
            assert stream.readlines(n) == ref.readlines(n)
    assert stream.read() == ref.read()


def test_input_stream_subclass_only_implements_fill():
    class Chunks(InputStream):
        def __init__(self, parts):
            super().__init__()
            self.parts = list(parts)

        def _fill(self, n):
            return self.parts.pop(0) if self.parts else b""
    assert list(Chunks([b"a\nb", b"c\n", b"d"])) == [b"a\n", b"bc\n", b"d"]


# --------------------------------------------------------------------------
# start_response validation: each fault is a 500 with a generic body

@pytest.mark.parametrize("status", ["200", "OK 200", 200, b"200 OK", "2000 OK", "20a OK", "099 Low",
                                    "200 OK\r\nX-Injected: 1", "200 \u20ac", "\u0663\u0660\u0660 OK"])
def test_a_malformed_status_is_a_500(status):
    t, response, log = run(simple(status=status))
    assert t.status == "500 Internal Server Error"
    assert t.body == ERROR_BODY
    assert response.failed
    assert "WSGIError" in log and "status" in log


@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "103 Early Hints",
                                    "199 Misc", "600 Beyond", "999 Internal"])
def test_a_status_that_is_no_final_http_response_is_a_500(status):
    # A 1xx is interim (RFC 9110 §15.2): sent as the answer, the client takes
    # the next response on the connection for it.  600-999 are no HTTP codes.
    t, response, log = run(simple(status=status))
    assert t.status == "500 Internal Server Error" and response.failed
    assert "WSGIError" in log and "status" in log


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found", "299 Whatever You Like", "500 Oops",
                                    "599 Last"])
def test_a_well_formed_status_is_sent_as_given(status):
    t, response, _ = run(simple(status=status))
    assert t.status == status and not response.failed


@pytest.mark.parametrize("header", [("Bad Name", "v"), ("X:Y", "v"), ("", "v"), ("\u00c4rger", "v"),
                                    (b"X-Bytes", "v"), ("X-Int", 5), ("X-Bytes-Value", b"v")])
def test_a_header_name_or_value_of_the_wrong_shape_is_a_500(header):
    t, response, log = run(simple(headers=[("Content-Type", "text/plain"), header]))
    assert t.status == "500 Internal Server Error" and response.failed
    assert "WSGIError" in log


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: x=1", "a\nb", "a\rb", "a\0b"])
def test_a_header_value_with_cr_lf_or_nul_is_a_500(value):
    t, _, log = run(simple(headers=[("X-Test", value)]))
    assert t.status == "500 Internal Server Error"
    assert b"Set-Cookie" not in t.wire
    assert "CR, LF or NUL" in log


def test_a_header_value_beyond_latin1_is_a_500_not_a_cut_off_response():
    t, _, log = run(simple(headers=[("X-Test", "price \u20ac")]))
    assert t.status == "500 Internal Server Error"
    assert t.events[-1] == ("finish",)
    assert "latin-1" in log


def test_a_latin1_header_value_goes_out_as_its_byte():
    t, _, _ = run(simple(headers=[("X-Name", "caf\xe9")]))
    assert t.status == "200 OK"
    assert encode_headers(t.head[2]).startswith(b"X-Name: caf\xe9\r\n")


@pytest.mark.parametrize("name", ["Connection", "keep-alive", "Transfer-Encoding", "Upgrade", "TE",
                                  "Trailer", "Proxy-Authenticate", "Proxy-Authorization"])
def test_a_hop_by_hop_header_from_the_app_is_a_500(name):
    t, _, log = run(simple(headers=[(name, "close")]))
    assert t.status == "500 Internal Server Error"
    assert "hop-by-hop" in log


@pytest.mark.parametrize("name", ["Status", "status", "STATUS"])
def test_a_status_header_from_the_app_is_a_500_never_a_second_cgi_status_line(name):
    """Under CGI and FastCGI a ``Status:`` field *is* the response status (RFC 3875 §6.3.3):
    an app's own would be a second one on the wire, and the web server picks one of them."""
    t, _, log = run(simple(headers=[("Content-Type", "text/plain"), (name, "200 OK")]))
    assert t.status == "500 Internal Server Error"
    assert "Status" in log and "start_response" in log


class Lookalike(str):
    """A str that claims to equal (and hashes like) a header already checked."""

    def __new__(cls, text, like):
        self = super().__new__(cls, text)
        self.like = like
        return self

    def __eq__(self, other):
        return True

    def __hash__(self):
        return hash(self.like)


@pytest.mark.parametrize("header", [
    ("X-Cached", Lookalike("a\r\nSet-Cookie: x=1", "fine")),
    (Lookalike("Bad Name\r\nSet-Cookie: x=1", "X-Cached"), "fine"),
    ("Content-Length", Lookalike("5, 6", "5")),
])
def test_the_header_cache_answers_only_for_the_exact_pair_it_checked(header):
    for _ in range(3):   # the genuine pairs checked and cached first
        assert run(simple(headers=[("X-Cached", "fine"), ("Content-Length", "5")]))[0].status == "200 OK"
    t, _, log = run(simple(headers=[header]))
    assert t.status == "500 Internal Server Error"
    assert b"Set-Cookie" not in t.wire and b"5, 6" not in t.wire


@pytest.mark.parametrize("headers", [(("Content-Type", "text/plain"),), [["Content-Type", "text/plain"]],
                                     [("Content-Type", "text/plain", "extra")], "Content-Type: text/plain"])
def test_headers_must_be_a_list_of_name_value_tuples(headers):
    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"x"]
    t, _, log = run(app)
    assert t.status == "500 Internal Server Error"
    assert "WSGIError" in log


def test_a_second_start_response_without_exc_info_is_an_error():
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"x"]
    t, _, log = run(app)
    assert t.status == "500 Internal Server Error"
    assert "second time without exc_info" in log


def test_exc_info_before_output_replaces_status_and_headers():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html"), ("X-First", "1")])
        try:
            raise KeyError("lookup failed")
        except KeyError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"try later"]
    t, response, _ = run(app)
    assert t.status == "503 Service Unavailable"
    assert "X-First" not in t.headers
    assert t.body == b"try later" and not response.failed


def test_exc_info_after_output_reraises_the_apps_own_exception():
    seen = {}

    class AppError(Exception):
        pass

    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"partial")
        try:
            raise AppError("mid-stream")
        except AppError as exc:
            original = exc
            try:
                start_response("500 Oops", [], sys.exc_info())
            except BaseException as raised:
                seen["same"] = raised is original
                seen["tb"] = raised.__traceback__ is not None
                raise
        return [b"never"]
    t, response, log = run(app)
    assert seen == {"same": True, "tb": True}
    assert t.status == "200 OK" and t.body == b"partial"
    assert t.events[-1] == ("abort",)
    assert response.failed and "AppError: mid-stream" in log


# --------------------------------------------------------------------------
# sending: headers with the first non-empty chunk, write(), Content-Length

def test_headers_wait_for_the_first_non_empty_chunk():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b""
        raise RuntimeError(SECRET)
    t, response, _ = run(app)
    # Nothing had been sent, so the failure is still a clean 500.
    assert t.status == "500 Internal Server Error" and response.failed


def test_empty_chunks_before_the_first_data_are_skipped():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b"a"
        yield b""
        yield b"b"
    t, _, _ = run(app)
    assert [e[0] for e in t.events] == ["head", "body", "finish"]
    assert t.head[3] == b"a" and t.body == b"ab"
    assert "Content-Length" not in t.headers


def test_write_callable_sends_before_the_returned_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(bytearray(b"two,"))
        return [b"three"]
    t, _, _ = run(app)
    assert t.body == b"one,two,three"
    assert "Content-Length" not in t.headers


def test_write_before_start_response_is_a_500():
    def app(environ, start_response):
        environ["bridge.test"] = start_response
        return [b"x"]
    t, _, _ = run(app)
    assert t.status == "500 Internal Server Error"


@pytest.mark.parametrize("chunk", ["text", 5, None])
def test_a_body_chunk_that_is_not_bytes_is_a_500(chunk):
    t, _, log = run(simple(body=[chunk, b"x"]))
    assert t.status == "500 Internal Server Error"
    assert "must be bytes" in log


def test_a_one_element_list_gets_content_length_and_one_send():
    t, _, _ = run(simple(body=[b"hello"]))
    assert t.headers["Content-Length"] == "5"
    assert t.events == [("head", "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")], b"hello", True),
                        ("finish",)]


def test_a_one_element_tuple_and_bytearray_get_content_length():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (bytearray(b"abc"),)
    t, _, _ = run(app)
    assert t.headers["Content-Length"] == "3" and t.body == b"abc"


def test_a_longer_list_is_streamed_without_content_length():
    t, _, _ = run(simple(body=[b"a", b"b"]))
    assert "Content-Length" not in t.headers and t.body == b"ab"


def test_the_apps_own_content_length_is_kept_and_its_header_list_never_changed():
    headers = [("Content-Type", "text/plain")]

    def app(environ, start_response):
        start_response("200 OK", headers)
        return [b"hello"]
    for _ in range(3):
        t, _, _ = run(app)
        assert t.headers["Content-Length"] == "5"
    assert headers == [("Content-Type", "text/plain")]


@pytest.mark.parametrize("lengths", [("3", "30"), ("5", "6"), ("5", "5", "6"), ("0", "5")])
@pytest.mark.parametrize("cached", [False, True])
def test_differing_content_lengths_from_an_app_are_a_500(lengths, cached):
    names = ["Content-Length", "content-length", "CONTENT-LENGTH"]
    headers = [(names[i % 3], v) for i, v in enumerate(lengths)]
    if cached:   # each pair alone already checked (and cached) by earlier responses
        for h in headers:
            run(simple(headers=[h], body=[b"x" * int(h[1])]))
    t, response, log = run(simple(headers=headers, body=[b"x" * int(lengths[-1])]))
    assert t.status == "500 Internal Server Error" and response.failed
    assert [v for k, v in t.head[2] if k.lower() == "content-length"] == [str(len(ERROR_BODY))]
    assert "Content-Length fields that differ" in log


@pytest.mark.parametrize("cached", [False, True])
def test_identical_content_lengths_from_an_app_go_out_as_one(cached):
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5"), ("content-length", "5")]
    for _ in range(2 if cached else 1):
        for app in (simple(headers=headers), closing_app(Closing([b"hel", b"lo"]), headers=headers)):
            t, _, _ = run(app)
            assert t.status == "200 OK" and t.body == b"hello"
            assert [v for k, v in t.head[2] if k.lower() == "content-length"] == ["5"]
    assert headers == [("Content-Type", "text/plain"), ("Content-Length", "5"), ("content-length", "5")]


def test_a_body_shorter_than_its_content_length_is_cut_off():
    t, response, log = run(simple(headers=[("Content-Type", "text/plain"), ("Content-Length", "10")],
                                  body=[b"a", b"b"]))
    assert t.status == "200 OK" and t.events[-1] == ("abort",)
    assert response.failed and "2 bytes for a Content-Length of 10" in log


def test_a_body_longer_than_its_content_length_is_a_500_before_output():
    t, _, log = run(simple(headers=[("Content-Type", "text/plain"), ("Content-Length", "2")], body=[b"abc"]))
    assert t.status == "500 Internal Server Error"
    assert "Content-Length" in log


def test_an_app_that_never_calls_start_response_is_a_500():
    t, _, log = run(lambda environ, start_response: [])
    assert t.status == "500 Internal Server Error"
    assert "without calling start_response" in log


@pytest.mark.parametrize("result", [None, "a string", 42])
def test_a_result_that_is_not_an_iterable_of_bytes_is_a_500(result):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result
    t, _, _ = run(app)
    assert t.status == "500 Internal Server Error"


# --------------------------------------------------------------------------
# HEAD, 204, 304

def test_head_sends_the_content_length_of_get_and_no_body():
    t, response, _ = run(simple(body=[b"hello"]), method="HEAD")
    assert t.headers["Content-Length"] == "5"
    assert t.body == b"" and t.head[4] is True
    assert response.status == "200 OK"


def test_head_of_a_streamed_response_sends_headers_and_stops_iterating():
    result = Closing([b"a", b"b", b"c"])
    t, _, _ = run(closing_app(result), method="HEAD")
    assert t.status == "200 OK" and t.body == b""
    assert result.yielded == 1 and result.closed == 1


@pytest.mark.parametrize("length", ["0", "5", "7"])
def test_a_204_never_carries_the_content_length_an_app_gave(length):
    # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204.
    t, response, _ = run(simple(status="204 No Content", headers=[("Content-Length", length), ("X-A", "1")],
                                body=[b"hello"]))
    assert t.status == "204 No Content" and t.body == b"" and not response.failed
    assert [n.lower() for n in t.headers] == ["x-a"]


def test_a_304_keeps_the_content_length_of_the_representation():
    # RFC 9110 §8.6 allows it there (the size a 200 would have had).
    t, _, _ = run(simple(status="304 Not Modified", headers=[("Content-Length", "5")], body=[b""]))
    assert t.headers.get("Content-Length") == "5" and t.body == b""


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_have_no_body_and_no_added_content_length(status):
    t, _, _ = run(simple(status=status, headers=[], body=[b"ignored"]))
    assert t.status == status and t.body == b""
    assert "Content-Length" not in t.headers


# --------------------------------------------------------------------------
# close() is always called

def test_close_is_called_after_success():
    result = Closing([b"a", b"b"])
    t, _, _ = run(closing_app(result))
    assert result.closed == 1 and t.body == b"ab"


def test_close_is_called_after_an_error_in_iteration():
    result = Closing([b"a", b"b"], fail_at=1)
    t, response, _ = run(closing_app(result))
    assert result.closed == 1 and response.failed
    assert t.events[-1] == ("abort",)


def test_close_is_called_after_a_client_disconnect():
    result = Closing([b"a", b"b", b"c"])
    t, response, log = run(closing_app(result), transport=Recorder(fail_on="body"))
    assert result.closed == 1
    assert response.disconnected and not response.failed
    assert "disconnected" in log and "Traceback" not in log


def test_close_is_called_when_the_client_is_gone_before_the_headers():
    result = Closing([b"a"])
    _, response, _ = run(closing_app(result), transport=Recorder(fail_on="head", exc=ConnectionResetError))
    assert result.closed == 1 and response.disconnected


def test_an_error_in_close_is_logged_after_the_response():
    class BadClose(Closing):
        def close(self):
            raise ValueError("close failed")
    t, response, log = run(closing_app(BadClose([b"ok"])))
    assert t.body == b"ok" and t.events[-1] == ("finish",)
    assert response.failed and "ValueError: close failed" in log


# --------------------------------------------------------------------------
# errors: a 500 before output, a cut-off after, never a traceback to the client

def test_an_app_error_before_output_is_a_generic_500_with_the_traceback_in_the_log():
    def app(environ, start_response):
        raise RuntimeError(SECRET)
    t, response, log = run(app)
    assert t.status == "500 Internal Server Error"
    assert t.headers == {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(ERROR_BODY))}
    assert t.body == ERROR_BODY
    assert SECRET.encode() not in t.wire and b"Traceback" not in t.wire
    assert "Traceback" in log and SECRET in log
    assert response.failed and response.status == "500 Internal Server Error"


def test_an_app_error_after_start_response_but_before_output_replaces_its_headers():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/html"), ("Set-Cookie", "a=1")])
        raise RuntimeError(SECRET)
    t, _, _ = run(app)
    assert t.status == "500 Internal Server Error" and "Set-Cookie" not in t.headers


def test_an_app_error_after_output_cuts_the_response_off():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError(SECRET)
    t, response, log = run(app)
    assert t.status == "200 OK" and t.body == b"partial"
    assert t.events[-1] == ("abort",) and ("finish",) not in t.events
    assert SECRET.encode() not in t.wire and SECRET in log and response.failed


def test_a_500_to_head_has_no_body():
    def app(environ, start_response):
        raise RuntimeError(SECRET)
    t, _, _ = run(app, method="HEAD")
    assert t.status == "500 Internal Server Error" and t.body == b""


def test_the_apps_own_connection_error_is_a_500_not_a_disconnect():
    def app(environ, start_response):
        raise ConnectionRefusedError("database at 10.0.0.5:5432 refused")
    t, response, log = run(app)
    assert t.status == "500 Internal Server Error"
    assert not response.disconnected and response.failed
    assert "ConnectionRefusedError" in log


def test_a_client_gone_while_the_app_reads_the_body_is_a_disconnect():
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"x"]
    env = environ("POST", CONTENT_LENGTH="100")
    env["wsgi.input"] = BoundedInput(io.BytesIO(b"short"), 100)
    t = Recorder()
    response = call_app(app, env, t)
    assert response.disconnected and t.events == []


# --------------------------------------------------------------------------
# wsgi.file_wrapper

def _file(data: bytes):
    f = tempfile.TemporaryFile()
    f.write(data)
    f.seek(0)
    return f


def test_file_wrapper_uses_send_file_with_offset_and_content_length():
    f = _file(b"0123456789")
    f.seek(4)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    t, _, _ = run(app, transport=SendfileRecorder())
    assert t.headers["Content-Length"] == "6"
    assert ("sendfile", b"456789", 4, 6) in t.events
    assert t.events[-1] == ("finish",) and f.closed


def test_file_wrapper_without_send_file_streams_blocks():
    f = _file(b"x" * 10)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return FileWrapper(f, 4)
    t, _, _ = run(app)
    assert t.body == b"x" * 10
    assert [len(e[3] if e[0] == "head" else e[1]) for e in t.events if e[0] in ("head", "body")] == [4, 4, 2]
    assert f.closed


def test_file_wrapper_of_a_non_file_is_iterated():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return FileWrapper(io.BytesIO(b"in memory"))
    t, _, _ = run(app, transport=SendfileRecorder())
    assert t.body == b"in memory" and not any(e[0] == "sendfile" for e in t.events)


def test_file_wrapper_after_write_does_not_send_the_headers_twice():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"head:")
        return FileWrapper(_file(b"tail"))
    t, _, _ = run(app, transport=SendfileRecorder())
    assert t.body == b"head:tail"


def test_file_wrapper_to_head_sends_no_body():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return FileWrapper(_file(b"abc"))
    t, _, _ = run(app, method="HEAD", transport=SendfileRecorder())
    assert t.headers["Content-Length"] == "3" and t.body == b""
    assert not any(e[0] == "sendfile" for e in t.events)


def test_wsgi_error_is_a_real_exception_not_an_assertion():
    assert issubclass(WSGIError, Exception) and not issubclass(WSGIError, AssertionError)


# -- internal redirects (RFC 3875 §6.2.2 local redirects, served by the gateway) -----------


def test_an_internal_redirect_runs_the_whole_app_again_with_the_new_environ():
    from bridge.wsgi import INTERNAL_REDIRECT_ROOT, InternalRedirect
    seen = []

    def app(env, start_response):
        seen.append((env["PATH_INFO"], env[INTERNAL_REDIRECT_ROOT]))
        if env["PATH_INFO"] == "/old":
            raise InternalRedirect(dict(env, PATH_INFO="/new", REQUEST_URI="/new"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"new page"]
    t = Recorder()
    env = environ(PATH_INFO="/old", SCRIPT_NAME="/root", REQUEST_METHOD="HEAD")
    response = call_app(app, env, t)
    assert seen == [("/old", "/root"), ("/new", "/root")]
    assert t.head[1] == "200 OK" and t.body == b""        # still the client's HEAD
    assert response.environ is env                         # the access log keeps the request sent


def test_an_app_redirecting_forever_is_stopped_with_a_500():
    from bridge.wsgi import MAX_INTERNAL_REDIRECTS, InternalRedirect
    calls = []

    def app(env, start_response):
        calls.append(1)
        raise InternalRedirect(dict(env))
    t = Recorder()
    errors = io.StringIO()
    call_app(app, environ(errors=errors), t)
    assert t.head[1] == "500 Internal Server Error"
    assert len(calls) == MAX_INTERNAL_REDIRECTS + 1
    assert "internal redirects" in errors.getvalue()


def test_an_internal_redirect_after_start_response_is_an_error():
    from bridge.wsgi import InternalRedirect

    def app(env, start_response):
        start_response("200 OK", [])
        raise InternalRedirect(dict(env))
    t = Recorder()
    call_app(app, environ(), t)
    assert t.head[1] == "500 Internal Server Error"
