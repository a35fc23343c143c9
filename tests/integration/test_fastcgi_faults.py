"""Bad input and faults against a running ``bridge fcgi``: the one connection or
request ends, the reason is logged, and everyone else keeps being served."""
import os
import shutil
import socket
import time
import urllib.parse

import pytest

from bridge.fastcgi import protocol as p
from support import public_tmpdir
from support.fastcgi import Client, get_params, parse_replies, request_bytes, start_bridge_fcgi


@pytest.fixture(scope="module")
def server():
    tmp = public_tmpdir("bridge-faults-")
    sock = str(tmp / "app.sock")
    proc = start_bridge_fcgi(f"unix:{sock}", "--threads", "4", "--fcgi-max-params", "4k")
    server = type("Server", (), {"sock": sock, "proc": proc, "tmp": tmp})
    yield server
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def still_serving(server):
    with Client(server.sock) as client:
        reply = client.request(get_params("/after"))
    assert reply.head_and_body()[0] == "200 OK"
    return True


def wait_for_log(server, text, timeout=10.0):
    deadline = time.monotonic() + timeout
    while text not in server.proc.output():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.proc.output()}"
        time.sleep(0.02)


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes([2]) + bytes(15),                     # version 2
    bytes([0xFF]) + os.urandom(4095),           # random, but never version 1 by chance
])
def test_garbage_closes_that_connection_only(server, garbage):
    with Client(server.sock) as client:
        client.send(garbage)
        assert client.closed_by_server()
    wait_for_log(server, "not a FastCGI 1 record")
    assert still_serving(server)


def test_truncated_record_then_close_is_logged(server):
    with Client(server.sock) as client:
        client.send(request_bytes(get_params())[:-3])
        client.sock.shutdown(socket.SHUT_WR)
        assert client.closed_by_server()
    wait_for_log(server, "connection closed inside a record")
    assert still_serving(server)


def test_records_for_an_unknown_request_id_are_ignored_and_logged(server):
    with Client(server.sock) as client:
        client.send(p.encode_record(p.STDIN, 77, b"stray"))
        reply = client.request(get_params("/ok"), request_id=1)
        assert reply.head_and_body()[0] == "200 OK"
    wait_for_log(server, "record for request 77")


def test_oversized_params_are_refused_with_431(server):
    with Client(server.sock) as client:
        reply = client.request(get_params("/", HTTP_COOKIE="x" * 10000))
    assert reply.head_and_body()[0] == "431 Request Header Fields Too Large"
    wait_for_log(server, "refused with 431")
    assert still_serving(server)


def test_endless_params_stream_stops_at_the_limit(server):
    with Client(server.sock) as client:
        client.send(p.encode_record(p.BEGIN_REQUEST, 1, p.encode_begin_request(p.RESPONDER)))
        chunk = p.encode_record(p.PARAMS, 1, p.encode_pairs([(b"HTTP_X", b"y" * 1000)]))
        for _ in range(10):
            client.send(chunk)
        recs = client.read_until(lambda r: any(t == p.END_REQUEST for t, _, _ in r))
    assert parse_replies(recs)[1].head_and_body()[0].startswith("431")


def test_client_disconnect_mid_body_drops_the_request(server):
    with Client(server.sock) as client:
        client.send(request_bytes(get_params("/echo", method="POST", CONTENT_LENGTH="100000"),
                                  b"x" * 5000, end_stdin=False))
    assert still_serving(server)


def test_abort_during_upload_is_answered_with_end_request(server):
    with Client(server.sock) as client:
        client.send(request_bytes(get_params("/echo", method="POST", CONTENT_LENGTH="100"),
                                  b"x" * 10, keep_conn=True, end_stdin=False))
        client.send(p.encode_record(p.ABORT_REQUEST, 1, b""))
        recs = client.read_until(lambda r: any(t == p.END_REQUEST for t, _, _ in r))
        assert parse_replies(recs)[1].protocol_status == p.REQUEST_COMPLETE
        # the connection goes on
        reply = client.request(get_params("/next"), keep_conn=True)
        assert reply.head_and_body()[0] == "200 OK"


def test_app_that_raises_gives_500_and_the_next_request_works(server):
    with Client(server.sock) as client:
        reply = client.request(get_params("/error"), keep_conn=True)
        assert reply.head_and_body()[0] == "500 Internal Server Error"
        assert b"inspect_app error" in reply.stderr and b"inspect_app" not in reply.stdout
        assert client.request(get_params("/x"), keep_conn=True).head_and_body()[0] == "200 OK"


def test_app_that_hangs_does_not_stop_the_others(server):
    token = server.tmp / "release"
    with Client(server.sock) as hung:
        hung.send(request_bytes(get_params("/stream", "token=" + urllib.parse.quote(str(token)))))
        hung.read_until(lambda r: any(t == p.STDOUT and c for t, _, c in r))   # it is running
        for _ in range(10):
            assert still_serving(server)
        token.touch()
        recs = hung.read_until(lambda r: any(t == p.END_REQUEST for t, _, _ in r))
    assert parse_replies(recs)[1].stdout.endswith(b"second\n")


def test_web_server_closing_during_a_streamed_response_closes_the_app(server):
    token = server.tmp / "release2"
    with Client(server.sock) as client:
        client.send(request_bytes(get_params("/stream", "token=" + urllib.parse.quote(str(token)))))
        client.read_until(lambda r: any(t == p.STDOUT and c for t, _, c in r))
    token.touch()
    wait_for_log(server, "client disconnected during GET /stream")
    assert still_serving(server)
