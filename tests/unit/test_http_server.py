"""bridge http's connection handler on the real Worker, in process, over loopback sockets."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest

import bridge.http.server as http_server
from support import http_apps
from support.http_server import Reader, RunningHTTP, closed_by_peer, read_response


@pytest.fixture(scope="module")
def server():
    with RunningHTTP(http_apps.app, threads=4) as running:
        yield running


@pytest.fixture(scope="module")
def streaming():
    """--stream-request-body: the app reads the body from the socket."""
    with RunningHTTP(http_apps.app, threads=4, stream_request_body=True) as running:
        yield running


@pytest.fixture(params=["received", "streamed"])
def either(request, server, streaming):
    """The module's server in both body modes."""
    return server if request.param == "received" else streaming


def exchange(server, raw: bytes) -> tuple:
    with server.connect() as c:
        c.sendall(raw)
        return read_response(c)


def get_environ(server, raw: bytes) -> dict:
    status, _, body = exchange(server, raw)
    assert status.startswith("HTTP/1.1 200"), (status, body)
    return json.loads(body)


# --------------------------------------------------------------------------
# environ


def test_environ_has_decoded_path_raw_query_and_cgi_variables(server):
    env = get_environ(server, b"GET /environ/a%20b/%C3%A9%2F?x=%20y&z HTTP/1.1\r\nHost: example.org:8080\r\n\r\n")
    assert env["PATH_INFO"] == "/environ/a b/\xc3\xa9/"
    assert env["QUERY_STRING"] == "x=%20y&z"
    assert env["REQUEST_URI"] == "/environ/a%20b/%C3%A9%2F?x=%20y&z"
    assert env["SCRIPT_NAME"] == ""
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "example.org:8080"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(server.address[1])
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
    assert env["wsgi.url_scheme"] == "http" and env["wsgi.input_terminated"] is True
    assert env["SERVER_SOFTWARE"].startswith("wsgi-bridge/")


def test_path_info_keeps_invalid_utf8_bytes_as_latin1(server):
    env = get_environ(server, b"GET /environ/%FF%FE/\xe9 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert env["PATH_INFO"] == "/environ/\xff\xfe/\xe9"


def test_repeated_headers_are_joined_and_cookies_with_semicolons(server):
    env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: h\r\nX-Multi: a\r\nX-Multi: b, c\r\n"
                              b"Cookie: a=1\r\nCookie: b=2\r\n\r\n")
    assert env["HTTP_X_MULTI"] == "a, b, c"
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_content_type_and_length_are_cgi_variables_not_http_ones(server):
    env = get_environ(server, b"POST /environ HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\n"
                              b"Content-Length: 3, 3\r\n\r\nabc")
    assert env["CONTENT_TYPE"] == "text/plain" and env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_header_names_with_underscores_and_proxy_header_never_reach_the_app(server):
    env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\n"
                              b"Proxy: http://evil:1\r\n\r\n")
    assert "HTTP_X_FORWARDED_FOR" not in env and "HTTP_PROXY" not in env
    assert env["REMOTE_ADDR"] == "127.0.0.1"


def test_absolute_form_target_sets_http_host(server):
    env = get_environ(server, b"GET http://abs.example/environ?q HTTP/1.1\r\nHost: other\r\n\r\n")
    assert env["HTTP_HOST"] == "abs.example" and env["PATH_INFO"] == "/environ" and env["QUERY_STRING"] == "q"


def test_forwarded_headers_from_a_trusted_peer_are_applied(server):
    env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"
                              b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: www.example.com\r\n\r\n")
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["HTTP_HOST"] == "internal"   # X-Forwarded-Host only with --forwarded-host
    assert env["HTTP_X_FORWARDED_HOST"] == "www.example.com"


def test_rfc7239_forwarded_header_from_a_trusted_peer_is_applied(server):
    env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: internal\r\n"
                              b"Forwarded: for=\"[2001:db8::1]:4711\";proto=https;host=fw.example\r\n\r\n")
    assert env["REMOTE_ADDR"] == "2001:db8::1"
    assert env["wsgi.url_scheme"] == "https" and env["HTTP_HOST"] == "internal"


def test_forwarded_host_setting_applies_only_a_valid_host_from_a_trusted_peer():
    with RunningHTTP(http_apps.app, forwarded_host=True) as server:
        good = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: internal\r\n"
                                   b"X-Forwarded-Host: www.example.com:8443\r\n\r\n")
        bad = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: internal\r\n"
                                  b"X-Forwarded-Host: evil.example/pwn?x=1 junk\r\n\r\n")
        rfc = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: internal\r\n"
                                  b"Forwarded: for=192.0.2.1;host=\"[2001:db8::1]:8080\"\r\n\r\n")
    assert good["HTTP_HOST"] == "www.example.com:8443"
    assert bad["HTTP_HOST"] == "internal"
    assert rfc["HTTP_HOST"] == "[2001:db8::1]:8080"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored():
    with RunningHTTP(http_apps.app, forwarded_allow_ips="10.9.8.7") as server:
        env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 203.0.113.9\r\n"
                                  b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n")
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http" and env["HTTP_HOST"] == "internal"
    assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.9"   # visible, not applied


def test_client_chosen_addresses_left_of_the_trusted_proxy_chain_do_not_win():
    with RunningHTTP(http_apps.app, forwarded_allow_ips="127.0.0.1,10.0.0.0/8") as server:
        env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: h\r\n"
                                  b"X-Forwarded-For: 1.1.1.1, 198.51.100.7, 10.1.2.3\r\n\r\n")
    assert env["REMOTE_ADDR"] == "198.51.100.7"


def test_unix_socket_peers_are_trusted_and_server_name_comes_from_host(tmp_path):
    path = f"/tmp/bridge-http-test-{os.getpid()}.sock"
    with RunningHTTP(http_apps.app, bind=f"unix:{path}", forwarded_allow_ips="") as server:
        env = get_environ(server, b"GET /environ HTTP/1.1\r\nHost: site.example:8443\r\n"
                                  b"X-Forwarded-For: 192.0.2.1\r\n\r\n")
    assert env["REMOTE_ADDR"] == "192.0.2.1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("site.example", "8443")


def test_script_name_setting_moves_the_prefix():
    with RunningHTTP(http_apps.app, script_name="/app") as server:
        env = get_environ(server, b"GET /app/environ HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/environ")


# --------------------------------------------------------------------------
# Responses


def test_date_and_server_headers_are_added_but_an_app_server_header_wins(server):
    status, headers, body = exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
    assert headers["server"] == "wsgi-bridge" and headers["date"].endswith(" GMT")
    status, headers, body = exchange(server, b"GET /server-header HTTP/1.1\r\nHost: h\r\n\r\n")
    assert headers["server"] == "my-app/1.0"


def test_small_response_leaves_in_one_write(server, monkeypatch):
    calls = []
    real = os.writev

    def counting(fd, buffers):
        calls.append(len(buffers))
        return real(fd, buffers)
    monkeypatch.setattr(http_server, "_writev", counting)
    status, headers, body = exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
    assert body == b"one" and len(calls) == 1


def test_head_response_has_content_length_and_no_body(server):
    with server.connect() as c:
        c.sendall(b"HEAD /download?size=5000 HTTP/1.1\r\nHost: h\r\n\r\nGET /version HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = Reader(c)
        status, headers, body = reader.response(head_only=True)
        assert headers["content-length"] == "5000"
        assert reader.response()[2] == b"one"     # nothing of a body came in between


def test_unknown_length_is_chunked_on_http11_and_close_delimited_on_http10(server):
    status, headers, body = exchange(server, b"GET /stream?n=3 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert headers["transfer-encoding"] == "chunked" and body == b"chunk 0\nchunk 1\nchunk 2\n"
    with server.connect() as c:
        c.sendall(b"GET /stream?n=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(c)
        assert headers["connection"] == "close" and "transfer-encoding" not in headers
        assert body == b"chunk 0\nchunk 1\n"


def test_pipelined_requests_are_answered_in_order(server):
    with server.connect() as c:
        c.sendall(b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
                  b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                  b"GET /download?size=70000 HTTP/1.1\r\nHost: h\r\n\r\n"
                  b"GET /version HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        reader = Reader(c)
        bodies = [reader.response()[2] for _ in range(5)]
        assert bodies == [b"one", b"hello", b"abc", http_apps.pattern(70000), b"one"]
        assert closed_by_peer(c)


def test_http10_keep_alive_and_default_close(server):
    with server.connect() as c:
        c.sendall(b"GET /version HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, body = read_response(c)
        assert headers["connection"] == "keep-alive"
        c.sendall(b"GET /version HTTP/1.0\r\n\r\n")
        status, headers, body = read_response(c)
        assert headers["connection"] == "close" and body == b"one"
        assert closed_by_peer(c)


def test_app_error_is_a_generic_500_and_the_connection_goes_on(server):
    with server.connect() as c:
        c.sendall(b"GET /error HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = Reader(c)
        status, headers, body = reader.response()
        assert status.startswith("HTTP/1.1 500") and b"secret" not in body
        c.sendall(b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
        assert reader.response()[2] == b"one"


def test_app_error_after_the_head_cuts_the_response_off(server):
    with server.connect() as c:
        c.sendall(b"GET /error-late HTTP/1.1\r\nHost: h\r\n\r\n")
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b"first part" in data
        assert not data.endswith(b"0\r\n\r\n") and b"secret" not in data


def test_file_wrapper_goes_out_with_sendfile_byte_exact(server, monkeypatch):
    calls = []
    real = os.sendfile

    def counting(*args):
        calls.append(args[3])
        return real(*args)
    monkeypatch.setattr(os, "sendfile", counting)
    status, headers, body = exchange(server, b"GET /file?size=300000 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert headers["content-length"] == "300000" and body == http_apps.pattern(300000)
    assert calls


def test_file_that_shrinks_during_sendfile_cuts_the_connection_off(server, caplog):
    """The head announced 200,000 bytes; the file has 1,000 when they are sent.  The
    pipelined request behind it must not appear inside that body: the connection ends."""
    import logging
    logging.getLogger("bridge").propagate = True
    with caplog.at_level(logging.ERROR, logger="bridge.http"):
        with server.connect() as c:
            c.sendall(b"GET /shrinking-file?size=200000&to=1000 HTTP/1.1\r\nHost: h\r\n\r\n"
                      b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 200000" in head
    assert body == http_apps.pattern(1000)       # what there was, then the end
    assert b"HTTP/1.1" not in body
    assert "file shrank" in caplog.text
    assert exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")[2] == b"one"


def test_client_gone_mid_response_closes_the_result_and_others_are_served(server):
    before = len(http_apps.closed_events)
    c = server.connect()
    c.sendall(b"GET /closing?size=50000000 HTTP/1.1\r\nHost: h\r\n\r\n")
    c.recv(1000)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()   # reset
    deadline = time.monotonic() + 10
    while len(http_apps.closed_events) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(http_apps.closed_events) > before
    assert exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")[2] == b"one"


# --------------------------------------------------------------------------
# Request bodies


def test_expect_100_continue_is_sent_when_the_server_starts_receiving(server):
    """By default the server receives the body before the app runs: the 100 goes
    out as soon as the head is in, and the app that ignores the body still
    leaves the connection reusable."""
    with server.connect() as c:
        c.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(c)
        assert reader.response()[0] == "HTTP/1.1 100 Continue"
        c.sendall(b"dataGET /version HTTP/1.1\r\nHost: h\r\n\r\n")
        status, headers, body = reader.response()
        assert status.startswith("HTTP/1.1 200") and "connection" not in headers
        assert reader.response()[2] == b"one"


def test_expect_100_continue_is_sent_when_the_app_reads_the_body(either):
    server = either
    with server.connect() as c:
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(c)
        status, _, _ = reader.response()
        assert status == "HTTP/1.1 100 Continue"
        c.sendall(b"data")
        status, headers, body = reader.response()
        assert status.startswith("HTTP/1.1 200") and body == b"data"


def test_expect_100_continue_without_reading_gets_no_100_and_a_close(streaming):
    server = streaming
    with server.connect() as c:
        c.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        status, headers, body = read_response(c)
        assert status.startswith("HTTP/1.1 200") and headers["connection"] == "close"
        assert closed_by_peer(c)


def test_unread_small_body_is_drained_and_the_connection_reused(either):
    server = either
    with server.connect() as c:
        c.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789"
                  b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = Reader(c)
        assert reader.response()[2] == b"ignored\n"
        assert reader.response()[2] == b"one"


def _chunked(body: bytes, size: int = 16384) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


UNREAD_BODIES = {
    "chunked-2MiB": (b"Transfer-Encoding: chunked\r\n", _chunked(b"x" * (2 << 20))),
    "length-300KiB": (b"Content-Length: 307200\r\n", b"x" * 307200),
    "length-2MiB": (b"Content-Length: 2097152\r\n", b"x" * (2 << 20)),
}


def send_body_the_app_ignores(server, framing: bytes, body: bytes) -> tuple:
    """The whole request in one sendall (from a thread: more than the socket buffers
    hold) to an app that answers without reading it; (response, sender's error)."""
    import threading
    errors = []
    with server.connect() as c:
        def send():
            try:
                c.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\n" + body)
                c.shutdown(socket.SHUT_WR)
            except OSError as exc:
                errors.append(exc)
        t = threading.Thread(target=send, daemon=True)
        t.start()
        try:
            response = read_response(c)
        except OSError as exc:
            response = exc
        t.join(10)
    return response, errors


@pytest.mark.parametrize("name", sorted(UNREAD_BODIES))
def test_big_unread_body_gets_the_whole_response_and_no_reset(either, name):
    server = either
    framing, body = UNREAD_BODIES[name]
    for _ in range(5):
        response, errors = send_body_the_app_ignores(server, framing, body)
        assert not isinstance(response, Exception), response
        status, headers, data = response
        assert status.startswith("HTTP/1.1 200") and data == b"ignored\n"
        assert errors == []


def test_readline_over_a_chunked_body(server):
    status, headers, body = exchange(server, b"POST /echo?readline=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                                             b"4\r\nab\nc\r\n3\r\nd\ne\r\n0\r\n\r\n")
    assert body == b"ab\ncd\ne"


def test_bad_chunk_while_the_app_reads_is_400_and_close(either):
    server = either
    with server.connect() as c:
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nxyz\r\n")
        status, headers, body = read_response(c)
        assert status.startswith("HTTP/1.1 400") and headers["connection"] == "close"
        assert closed_by_peer(c)


@pytest.mark.parametrize("stream", [False, True])
def test_body_over_the_limit_is_413_before_the_app_runs_and_chunked_too(stream):
    with RunningHTTP(http_apps.app, limit_request_body=100, stream_request_body=stream) as server:
        with server.connect() as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n")
            status, headers, _ = read_response(c)
            assert status.startswith("HTTP/1.1 413") and headers["connection"] == "close"
        with server.connect() as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"64\r\n" + b"x" * 100 + b"\r\n1\r\ny\r\n0\r\n\r\n")
            status, headers, _ = read_response(c)
            assert status.startswith("HTTP/1.1 413")


def test_request_line_and_header_limits_give_414_and_431():
    with RunningHTTP(http_apps.app, limit_request_line=100, limit_request_fields=5,
                     limit_request_field_size=200) as server:
        assert exchange(server, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: h\r\n\r\n")[0].startswith("HTTP/1.1 414")
        many = b"".join(b"X-%d: v\r\n" % i for i in range(10))
        assert exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\n" + many + b"\r\n")[0].startswith("HTTP/1.1 431")
        assert exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"v" * 300 + b"\r\n\r\n")[0].startswith("HTTP/1.1 431")


def test_a_field_line_without_a_colon_is_400_even_after_the_name_was_served(server):
    for _ in range(3):
        assert exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\n\r\n")[0].startswith("HTTP/1.1 404")
    for line in (b"X-Foo", b"X-Foo : 1", b"x-foo\t: 1"):
        status = exchange(server, b"GET /environ HTTP/1.1\r\nHost: h\r\n" + line + b"\r\n\r\n")[0]
        assert status.startswith("HTTP/1.1 400"), (line, status)


def test_the_whole_request_head_is_capped_by_its_setting_and_defaults_to_64k():
    def head(n: int) -> bytes:   # n fields of about 1 KiB each: every one far below its own limit
        return b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: " % i + b"v" * 1000 + b"\r\n"
                                                          for i in range(n)) + b"\r\n"
    with RunningHTTP(http_apps.app) as server:
        assert exchange(server, head(70))[0].startswith("HTTP/1.1 431")
        assert exchange(server, head(60))[0].startswith("HTTP/1.1 404")   # the app answered
    with RunningHTTP(http_apps.app, limit_request_header_size=2048) as server:
        assert exchange(server, head(3))[0].startswith("HTTP/1.1 431")
        assert exchange(server, head(1))[0].startswith("HTTP/1.1 404")


def test_malformed_request_is_rejected_and_the_server_keeps_serving(server):
    status, headers, body = exchange(server, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert status.startswith("HTTP/1.1 400") and headers["connection"] == "close"
    assert exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")[2] == b"one"


# --------------------------------------------------------------------------
# Timeouts


def test_slow_loris_head_is_cut_off_after_the_header_timeout():
    with RunningHTTP(http_apps.app, header_timeout=0.3, keepalive=30.0) as server:
        with server.connect(timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\n")
            for _ in range(3):
                time.sleep(0.1)
                c.sendall(b"X: 1\r\n")
            assert closed_by_peer(c)   # before the 10 s client timeout
        assert exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")[2] == b"one"


@pytest.mark.parametrize("stream", [False, True])
def test_stalled_body_gets_408_after_the_io_timeout(stream):
    with RunningHTTP(http_apps.app, io_timeout=0.3, stream_request_body=stream) as server:
        with server.connect() as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
            status, headers, _ = read_response(c)
            assert status.startswith("HTTP/1.1 408") and headers["connection"] == "close"


@pytest.mark.parametrize("stream", [False, True])
def test_trickled_body_gets_408_at_the_body_timeout_however_steady(stream):
    """One byte every 0.05 s never trips --io-timeout; --body-timeout bounds the whole body."""
    with RunningHTTP(http_apps.app, io_timeout=5.0, body_timeout=0.4, stream_request_body=stream) as server:
        with server.connect() as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
            sent = 0
            try:
                while sent < 200:           # 10 s of trickling at most: the 408 must come first
                    c.sendall(b"x")
                    sent += 1
                    time.sleep(0.05)
                    if select_readable(c):
                        break
            except OSError:
                pass
            status, headers, _ = read_response(c)
            assert status.startswith("HTTP/1.1 408") and headers["connection"] == "close"
            assert sent < 200
        assert exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")[2] == b"one"


def select_readable(sock) -> bool:
    import select
    return bool(select.select([sock], [], [], 0)[0])


def test_body_is_received_in_memory_or_an_unlinked_spool_file_and_reaches_the_app_whole(monkeypatch):
    """Past --body-spool-threshold the body goes to a temporary file; below it, none is
    made (a small body that came with the head takes no detour)."""
    import hashlib
    import tempfile
    made = []
    real = tempfile.TemporaryFile

    def counting(*args, **kw):
        made.append(1)
        return real(*args, **kw)
    monkeypatch.setattr(tempfile, "TemporaryFile", counting)
    with RunningHTTP(http_apps.app, body_spool_threshold=100_000) as server:
        for size, spooled in ((10, 0), (99_999, 0), (100_001, 1), (3 << 20, 1)):
            made.clear()
            body = os.urandom(size)
            for framing, payload in ((b"Content-Length: %d\r\n" % size, body),
                                     (b"Transfer-Encoding: chunked\r\n", _chunked(body))):
                with server.connect() as c:
                    c.sendall(b"POST /echo-length HTTP/1.1\r\nHost: h\r\n" + framing + b"\r\n" + payload)
                    status, _, answer = read_response(c)
                assert answer.decode() == f"{size} {hashlib.sha256(body).hexdigest()}", (size, framing)
            assert len(made) == 2 * spooled, size


def test_a_body_past_the_shared_body_memory_spools_and_gives_its_share_back_on_close():
    """The rule, without sockets: --body-spool-threshold bounds one body, --body-memory
    all of a worker's bodies together; what a body reserved comes back on close."""
    from bridge.http.environ import BodyMemory, ReceivedBody
    memory = BodyMemory(100)
    first, second = ReceivedBody(80, memory), ReceivedBody(80, memory)
    first.add(b"x" * 60)
    second.add(b"y" * 60)           # 120 > 100 together: this one spools
    assert (first.file is None, second.file is not None, memory.used) == (True, True, 60)
    assert second.stream().read() == b"y" * 60
    first.add(b"x" * 30)            # 90 > 80: past its own threshold, spools, gives back its 60
    assert (first.file is not None, memory.used) == (True, 0)
    first.close()
    second.close()
    assert memory.used == 0


def test_unfinished_bodies_together_never_hold_more_memory_than_body_memory(monkeypatch):
    """Clients that each send a body just under the spool threshold and never finish
    (200 x 1 MB took a worker from 34 MB to 262 MB): past --body-memory the next
    bodies go to their temporary files, and the memory is given back when a body ends."""
    import tempfile
    made = []
    real = tempfile.TemporaryFile

    def counting(*args, **kw):
        made.append(1)
        return real(*args, **kw)
    monkeypatch.setattr(tempfile, "TemporaryFile", counting)
    # 6 clients, each 60 KB of a 100 KB body, threshold 100 KB, budget 150 KB.
    with RunningHTTP(http_apps.app, body_spool_threshold=100_000, body_memory=150_000) as server:
        clients = []
        try:
            for _ in range(6):
                c = server.connect()
                c.sendall(b"POST /echo-length HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n"
                          + b"z" * 60_000)
                clients.append(c)
            for _ in range(200):        # until the server has taken in every byte (bounded)
                if len(made) >= 4:
                    break
                time.sleep(0.025)
            assert len(made) == 4       # 2 x 60 KB fit in 150 KB, the other 4 bodies spool
            for c in clients:
                c.sendall(b"z" * 40_000)
                assert read_response(c)[2].startswith(b"100000 ")
        finally:
            for c in clients:
                c.close()
        made.clear()
        assert exchange(server, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")[2] == b"abc"
        assert not made                 # all given back: a small body is in memory again


def _evicted(sock, seconds: float = 5.0) -> bool:
    """Whether the server closed ``sock`` (read EOF) within ``seconds`` (bounded wait)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def test_making_room_at_the_connection_cap_never_closes_a_request_whose_body_is_arriving():
    """At --worker-connections, the longest idle connections are closed for new ones;
    an upload whose head has arrived and whose body is on its way is no idle
    connection: a flood of empty connects closed it, without an answer."""
    with RunningHTTP(http_apps.app, worker_connections=4, keepalive=60.0, header_timeout=60.0) as server:
        idle = server.connect()
        assert exchange_on(idle, b"GET /echo HTTP/1.1\r\nHost: h\r\n\r\n")[0].startswith("HTTP/1.1 200")
        upload = server.connect()
        upload.sendall(b"POST /echo-length HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n" + b"a" * 10000)
        flood = []
        try:
            for _ in range(12):
                flood.append(server.connect())
            assert _evicted(idle)           # room was made (the keep-alive one went first) ...
            for c in flood[:6]:
                _evicted(c, 0.2)            # ... and more rounds of it ran
            upload.settimeout(10)
            upload.sendall(b"a" * 10000)    # ... but the upload was never a candidate
            status, _, body = read_response(upload)
            assert status.startswith("HTTP/1.1 200") and body.startswith(b"20000 "), (status, body)
        finally:
            for c in [idle, upload, *flood]:
                c.close()


def exchange_on(sock, raw: bytes) -> tuple:
    sock.sendall(raw)
    return read_response(sock)


def test_body_that_cannot_be_spooled_gets_500_and_the_server_goes_on(monkeypatch):
    import errno
    import tempfile

    def full(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    with RunningHTTP(http_apps.app, body_spool_threshold=1000) as server:
        with server.connect() as c:
            c.sendall(b"POST /echo-length HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
            status, headers, _ = read_response(c)
            assert status.startswith("HTTP/1.1 500") and headers["connection"] == "close"
        assert exchange(server, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")[2] == b"abc"


def test_chunked_body_received_whole_has_its_content_length(server):
    env = get_environ(server, b"POST /environ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert env["CONTENT_LENGTH"] == "5" and env["wsgi.input_terminated"] is True


def test_slow_body_holds_no_pool_thread():
    """With one thread, a request whose body is still coming does not hold up another:
    that one is answered while the first body is incomplete (an ordering, not a time)."""
    with RunningHTTP(http_apps.app, threads=1) as server:
        with server.connect() as slow:
            slow.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nab")
            for _ in range(3):
                with server.connect() as c:
                    c.sendall(b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
                    assert read_response(c)[2] == b"one"
                slow.sendall(b"c")
            slow.sendall(b"f")
            assert read_response(slow)[2] == b"abcccf"


def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout():
    with RunningHTTP(http_apps.app, keepalive=0.3) as server:
        with server.connect() as c:
            c.sendall(b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(c)[2] == b"one"
            assert closed_by_peer(c)


# --------------------------------------------------------------------------
# Access log


def log_lines(path, count: int) -> list:
    """The access log once it has ``count`` lines (it is written just after the response)."""
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)


def test_access_log_is_apache_combined_by_default(tmp_path):
    log = tmp_path / "access.log"
    with RunningHTTP(http_apps.app, access_log=str(log)) as server:
        exchange(server, b"GET /version?x=1 HTTP/1.1\r\nHost: h\r\nReferer: http://r/\r\nUser-Agent: t \"q\"\r\n\r\n")
        exchange(server, b"GET / HTTP/1.1\r\n\r\n")
        lines = log_lines(log, 2)
    assert len(lines) == 2
    first = lines[0]
    assert first.startswith("127.0.0.1 - - [")
    assert first.endswith('] "GET /version?x=1 HTTP/1.1" 200 3 "http://r/" "t \\"q\\""')
    assert lines[1].startswith("127.0.0.1 - - [") and '"-" 400 ' in lines[1]


def test_access_log_format_is_configurable(tmp_path):
    log = tmp_path / "access.log"
    with RunningHTTP(http_apps.app, access_log=str(log),
                     access_log_format="%m %U%q %>s %B %{X-Req}i %{Content-Type}o %D") as server:
        exchange(server, b"POST /echo?a=b HTTP/1.1\r\nHost: h\r\nX-Req: r1\r\nContent-Length: 2\r\n\r\nhi")
        method, path, status, size, req, ctype, micros = log_lines(log, 1)[0].split()
    assert (method, path, status, size, req, ctype) == ("POST", "/echo?a=b", "200", "2", "r1", "application/octet-stream")
    assert micros.isdigit()


def test_client_that_stops_reading_is_dropped_after_the_io_timeout():
    with RunningHTTP(http_apps.app, io_timeout=0.5) as server:
        before = len(http_apps.closed_events)
        c = server.connect()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sendall(b"GET /closing?size=200000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        deadline = time.monotonic() + 20
        while len(http_apps.closed_events) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(http_apps.closed_events) > before     # the result was closed, the thread freed
        c.close()
        assert exchange(server, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")[2] == b"one"


def test_http_date_is_the_imf_fixdate_of_rfc9110():
    from email.utils import formatdate
    for t in (0, 784111777, 1700000000, 1709251199):
        assert http_server.http_date(t) == formatdate(t, usegmt=True)
    assert http_server.http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "103 Early Hints"])
def test_an_app_1xx_status_never_reaches_the_wire_as_a_final_response(status):
    """The client would take the pipelined request's answer for this one's:
    the answers on a kept-alive connection must stay one per request, in order."""
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/first":
            start_response(status, [("Content-Type", "text/plain")])
            return [b"x"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"second"]
    with RunningHTTP(app, threads=1) as server, server.connect() as c:
        c.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = Reader(c)
        first, second = reader.response(), reader.response()
        assert first[0].startswith("HTTP/1.1 500"), first
        assert second[0].startswith("HTTP/1.1 200") and second[2] == b"second", second


def test_a_204_from_the_app_goes_out_without_content_length_and_the_connection_stays_in_step():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/first":
            start_response("204 No Content", [("Content-Length", "5")])
            return [b"hello"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"second"]
    with RunningHTTP(app, threads=1) as server, server.connect() as c:
        c.sendall(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\n")
        reader = Reader(c)
        first, second = reader.response(), reader.response()
        assert first[0].startswith("HTTP/1.1 204") and "content-length" not in first[1], first
        assert second[2] == b"second", second
