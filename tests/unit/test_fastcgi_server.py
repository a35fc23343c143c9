"""The FastCGI connection handler, driven directly over a socketpair (no Worker)."""
import logging
import os
import socket
import tempfile

import pytest

from bridge.fastcgi import protocol as p
from bridge.fastcgi.server import FastCGIServer, _AddressList, fix_script_name_and_path_info
from support.fastcgi import get_params, parse_replies, request_bytes


class FakeState:
    def __init__(self):
        self.started = []
        self.finished = 0

    def request_started(self, environ):
        self.started.append(environ)

    def request_finished(self):
        self.finished += 1


class Listener:
    kind = "unix"
    name = "unix:/test"


class Pair:
    """A handler on one end of a socketpair, a raw FastCGI client on the other."""

    def __init__(self, app, **options):
        self.server = FastCGIServer(app, **options)
        self.client, theirs = socket.socketpair()
        self.client.settimeout(5)
        theirs.settimeout(5)          # like the Worker: blocking with a timeout
        self.theirs = theirs
        self.state = FakeState()
        self.handler = self.server.handler(theirs, "", Listener(), self.state)
        self.reader = p.RecordReader()

    def send(self, data):
        self.client.sendall(data)

    def send_in_background(self, data):
        """For more than a socket buffer holds: the handler reads while this writes."""
        import threading
        t = threading.Thread(target=self.client.sendall, args=(data,), daemon=True)
        t.start()
        return t

    def step_while_reading(self, rid=1):
        """on_readable in a thread while this side reads, for responses larger
        than a socket buffer; returns (on_readable's result, records)."""
        import threading
        result = []
        t = threading.Thread(target=lambda: result.append(self.step()), daemon=True)
        t.start()
        recs = []
        while not any(r[0] == p.END_REQUEST and r[1] == rid for r in recs):
            chunk = self.client.recv(1 << 20)
            if not chunk:
                break
            recs += self.reader.feed(chunk)
        t.join(5)
        return result[0], recs

    def serve_in_background(self):
        """A stand-in for the Worker: on_readable whenever the socket is readable."""
        import select
        import threading

        def loop():
            while not self.stopped:
                if select.select([self.theirs], [], [], 0.05)[0] and not self.step():
                    return
        self.stopped = False
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t

    def read_until_end(self, rid=1):
        recs = []
        while True:
            chunk = self.client.recv(1 << 20)
            if not chunk:
                break
            new = self.reader.feed(chunk)
            recs += new
            if any(r[0] == p.END_REQUEST and r[1] == rid for r in new):
                break
        return recs

    def step(self):
        """One on_readable call, as the Worker makes it when the socket is readable."""
        return self.handler.on_readable()

    def records(self):
        """Everything the handler has written so far (non-blocking read)."""
        out = []
        self.client.setblocking(False)
        try:
            while True:
                try:
                    chunk = self.client.recv(1 << 20)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                out += self.reader.feed(chunk)
        finally:
            self.client.settimeout(5)
        return out

    def replies(self):
        return parse_replies(self.records())

    def close(self):
        self.stopped = True
        self.handler.close()
        self.theirs.close()
        self.client.close()


@pytest.fixture
def pair_factory():
    pairs = []

    def make(app, **options):
        pair = Pair(app, **options)
        pairs.append(pair)
        return pair
    yield make
    for pair in pairs:
        pair.close()


def hello(environ, start_response):
    body = f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}|{environ['QUERY_STRING']}".encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("X-Terminated", str(environ.get("wsgi.input_terminated", False)))])
    return [body]


def test_small_response_is_one_stdout_record_and_end_request(pair_factory):
    pair = pair_factory(hello)
    pair.send(request_bytes(get_params("/a/b", "x=1")))
    assert pair.step() is False          # KEEP_CONN=0: close after the response
    recs = pair.records()
    assert [t for t, _, _ in recs] == [p.STDOUT, p.STDOUT, p.END_REQUEST]
    reply = parse_replies(recs)[1]
    status, headers, body = reply.head_and_body()
    assert status == "200 OK"
    assert headers["content-length"] == str(len(body))
    assert body == b"|/a/b|x=1"
    assert reply.protocol_status == p.REQUEST_COMPLETE
    assert pair.state.finished == 1


def test_keep_conn_serves_request_after_request(pair_factory):
    pair = pair_factory(hello)
    for i in range(3):
        pair.send(request_bytes(get_params(f"/{i}"), keep_conn=True))
        assert pair.step() is True
        assert pair.replies()[1].head_and_body()[2] == f"|/{i}|".encode()


def test_max_conn_requests_closes_a_kept_connection(pair_factory):
    pair = pair_factory(hello, max_conn_requests=2)
    pair.send(request_bytes(get_params(), keep_conn=True))
    assert pair.step() is True
    pair.send(request_bytes(get_params(), keep_conn=True))
    assert pair.step() is False
    assert pair.replies()[1].ended


def test_post_body_reaches_the_app_byte_exact_even_when_spooled(pair_factory):
    pair = pair_factory(echo, spool_threshold=1000)
    body = os.urandom(300_000)
    sender = pair.send_in_background(
        request_bytes(get_params(method="POST", CONTENT_LENGTH=str(len(body))), body, keep_conn=True))
    server = pair.serve_in_background()
    recs = pair.read_until_end()
    sender.join()
    pair.stopped = True
    server.join()
    reply = parse_replies(recs)[1]
    assert reply.head_and_body()[2] == body
    assert reply.head_and_body()[1]["x-terminated"] == "True"   # the whole body is in hand: always terminated


def test_response_larger_than_one_writev_goes_out_whole_through_partial_writes(pair_factory):
    # 24 MiB: more records than one writev takes (1024 buffers), and far
    # more than the socket buffer, so writes are partial and wait for room.
    big = os.urandom(1 << 20) * 24

    def large(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [big]
    pair = pair_factory(large)
    pair.send(request_bytes(get_params(), keep_conn=True))
    server = pair.serve_in_background()
    recs = pair.read_until_end()
    pair.stopped = True
    server.join()
    reply = parse_replies(recs)[1]
    status, headers, body = reply.head_and_body()
    assert status == "200 OK" and headers["content-length"] == str(len(big))
    assert body == big
    assert reply.protocol_status == p.REQUEST_COMPLETE


def test_body_without_content_length_is_read_to_the_end_and_marked_terminated(pair_factory):
    pair = pair_factory(echo)
    pair.send(request_bytes(get_params(method="POST"), b"no length"))
    pair.step()
    _, headers, body = pair.replies()[1].head_and_body()
    assert body == b"no length" and headers["x-terminated"] == "True"


def test_wsgi_errors_go_to_fcgi_stderr(pair_factory):
    def app(environ, start_response):
        print("warning from the app", file=environ["wsgi.errors"])
        start_response("200 OK", [])
        return [b"ok"]
    pair = pair_factory(app)
    pair.send(request_bytes(get_params()))
    pair.step()
    reply = pair.replies()[1]
    assert reply.stderr == b"warning from the app\n"
    assert reply.head_and_body()[2] == b"ok"


def test_wsgi_errors_go_to_the_log_with_errors_to_log(pair_factory, caplog):
    def app(environ, start_response):
        environ["wsgi.errors"].write("to the log\n")
        start_response("200 OK", [])
        return [b"ok"]
    pair = pair_factory(app, errors_to_log=True)
    pair.send(request_bytes(get_params()))
    with caplog.at_level(logging.INFO, logger="bridge"):
        logging.getLogger("bridge").propagate = True
        pair.step()
    assert pair.replies()[1].stderr == b""
    assert "to the log" in caplog.text


def test_app_error_gives_a_generic_500_and_the_traceback_only_on_stderr(pair_factory):
    def app(environ, start_response):
        raise RuntimeError("secret detail")
    pair = pair_factory(app)
    pair.send(request_bytes(get_params(), keep_conn=True))
    assert pair.step() is True
    reply = pair.replies()[1]
    status, _, body = reply.head_and_body()
    assert status == "500 Internal Server Error"
    assert b"secret" not in reply.stdout
    assert b"RuntimeError: secret detail" in reply.stderr


def test_app_error_after_the_head_closes_without_end_request(pair_factory):
    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("boom")
    pair = pair_factory(app)
    pair.send(request_bytes(get_params(), keep_conn=True))
    assert pair.step() is False
    reply = pair.replies()[1]
    assert reply.stdout.endswith(b"partial")
    assert not reply.ended


def test_abort_request_stops_a_streaming_response_and_closes_the_app(pair_factory):
    closed = []
    pair = None

    class Stream:
        def __init__(self):
            self.n = 0

        def __iter__(self):
            return self

        def __next__(self):
            self.n += 1
            if self.n == 2:   # the web server aborts while the response streams
                pair.send(p.encode_record(p.ABORT_REQUEST, 1, b""))
            if self.n > 100:
                raise StopIteration
            return b"chunk %d\n" % self.n

        def close(self):
            closed.append(self.n)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Stream()
    pair = pair_factory(app)
    pair.send(request_bytes(get_params(), keep_conn=True))
    assert pair.step() is True          # the connection itself is fine
    reply = pair.replies()[1]
    assert reply.ended and reply.app_status == 1
    assert closed and closed[0] < 100
    assert b"chunk 100" not in reply.stdout


def test_web_server_closing_mid_stream_stops_the_app(pair_factory):
    closed = []
    pair = None

    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            for i in range(100):
                if i == 2:
                    pair.client.shutdown(socket.SHUT_WR)
                yield b"x" * 10
        finally:
            closed.append(i)
    pair = pair_factory(app)
    pair.send(request_bytes(get_params(), keep_conn=True))
    assert pair.step() is False
    assert closed and closed[0] < 99


def test_multiplexed_requests_in_one_read_are_all_answered(pair_factory):
    pair = pair_factory(hello)
    pair.send(request_bytes(get_params("/one"), request_id=1, keep_conn=True)
              + request_bytes(get_params("/two"), request_id=2, keep_conn=True))
    assert pair.step() is True
    replies = pair.replies()
    assert replies[1].head_and_body()[2] == b"|/one|"
    assert replies[2].head_and_body()[2] == b"|/two|"


def test_get_values_is_answered_with_the_servers_real_limits(pair_factory):
    pair = pair_factory(hello, threads=3, workers=2)
    pair.send(p.encode_record(p.GET_VALUES, 0, p.encode_pairs([(p.MAX_CONNS, b""), (p.MAX_REQS, b""),
                                                               (p.MPXS_CONNS, b"")])))
    assert pair.step() is True
    ((rtype, content),) = pair.replies()[0]
    assert dict(p.decode_pairs(content)) == {p.MAX_CONNS: b"6", p.MAX_REQS: b"6", p.MPXS_CONNS: b"1"}


def test_garbage_closes_the_connection_and_is_logged(pair_factory, caplog):
    pair = pair_factory(hello)
    pair.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    logging.getLogger("bridge").propagate = True
    with caplog.at_level(logging.INFO, logger="bridge"):
        assert pair.step() is False
    assert "version" in caplog.text


def test_truncated_record_then_eof_closes_quietly(pair_factory):
    pair = pair_factory(hello)
    pair.send(request_bytes(get_params())[:-5])
    assert pair.step() is True
    pair.client.shutdown(socket.SHUT_WR)
    assert pair.step() is False
    assert pair.state.finished == 0


def test_oversized_params_are_answered_431_and_the_connection_lives_on(pair_factory):
    pair = pair_factory(hello, max_params=2000)
    pair.send(request_bytes(get_params(HTTP_COOKIE="x" * 5000), keep_conn=True))
    assert pair.step() is True
    assert pair.replies()[1].head_and_body()[0] == "431 Request Header Fields Too Large"
    pair.send(request_bytes(get_params("/next"), keep_conn=True))
    assert pair.step() is True
    assert pair.replies()[1].head_and_body()[2] == b"|/next|"


def test_authorizer_and_filter_roles_are_visible_to_the_app(pair_factory):
    seen = {}

    def app(environ, start_response):
        seen[environ["fastcgi.role"]] = environ.get("fastcgi.data") and environ["fastcgi.data"].read()
        start_response("200 OK", [("Variable-User", "bob")])
        return [b""]
    pair = pair_factory(app)
    pair.send(request_bytes(get_params(), role=p.AUTHORIZER, keep_conn=True))
    pair.step()
    pair.send(request_bytes(get_params(FCGI_DATA_LENGTH="5"), role=p.FILTER, data=b"file!", keep_conn=True))
    pair.step()
    assert seen == {"AUTHORIZER": None, "FILTER": b"file!"}


def test_file_wrapper_is_sent_with_sendfile_in_records(pair_factory):
    data = os.urandom(200_000)
    f = tempfile.TemporaryFile()
    f.write(data)
    f.seek(0)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    pair = pair_factory(app)
    pair.send(request_bytes(get_params()))
    _, recs = pair.step_while_reading()
    status, headers, body = parse_replies(recs)[1].head_and_body()
    assert headers["content-length"] == "200000"
    assert body == data


def test_file_that_shrinks_during_sendfile_cuts_the_connection_off(pair_factory, caplog):
    """A STDOUT record announced 65,528 bytes and the file ran out inside it: nothing
    may follow on that connection (no END_REQUEST, no next request's records inside
    the record), so the web server sees an upstream error, and it is logged."""
    from support.http_apps import ShrinkingFile, pattern

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](ShrinkingFile(200_000, 1000))
    pair = pair_factory(app)
    pair.send(request_bytes(get_params(), keep_conn=True)
              + request_bytes(get_params(), request_id=2, keep_conn=True))
    logging.getLogger("bridge").propagate = True
    with caplog.at_level(logging.ERROR, logger="bridge"):
        assert pair.step() is False
    raw = b""
    while True:
        chunk = pair.client.recv(1 << 20)
        if not chunk:
            break
        raw += chunk
    reader = p.RecordReader()
    recs = reader.feed(raw)
    assert [r[0] for r in recs] == [p.STDOUT]           # the head; then the cut-off record
    with pytest.raises(p.ProtocolError):
        reader.check_complete()                         # EOF inside the record: upstream error
    assert raw.endswith(pattern(1000))
    assert "file shrank" in caplog.text


@pytest.mark.parametrize("params, script_name, expected", [
    ({"SCRIPT_NAME": "/app", "PATH_INFO": "/x"}, None, ("/app", "/x")),
    ({"SCRIPT_NAME": "/a/b", "REQUEST_URI": "/a/b?q=1"}, None, ("", "/a/b")),
    ({"SCRIPT_NAME": "/app", "REQUEST_URI": "/app/caf%C3%A9?q"}, None, ("/app", "/caf\xc3\xa9")),
    ({"SCRIPT_NAME": "/app/x", "REQUEST_URI": "/app/x"}, "/app", ("/app", "/x")),
    ({"REQUEST_URI": "http://example.com/abs/path?x"}, None, ("", "/abs/path")),
    ({"SCRIPT_NAME": "/tcp/", "REQUEST_URI": "/tcp/"}, None, ("", "/tcp/")),      # Apache ProxyPass
    ({"SCRIPT_NAME": "/tcp/", "REQUEST_URI": "/tcp/"}, "/tcp", ("/tcp", "/")),
    ({"SCRIPT_NAME": "", "PATH_INFO": "/mnt/p"}, "/mnt", ("/mnt", "/p")),
])
def test_script_name_and_path_info_rules(params, script_name, expected):
    fix_script_name_and_path_info(params, script_name)
    assert (params["SCRIPT_NAME"], params["PATH_INFO"]) == expected


def test_web_server_addrs_accept_ipv4_ipv6_mapped_and_networks():
    allowed = _AddressList(["127.0.0.1", "::1", "10.1.0.0/16"])
    assert allowed.allows("127.0.0.1")
    assert allowed.allows("::ffff:127.0.0.1")
    assert allowed.allows("::1")
    assert allowed.allows("10.1.2.3")
    assert not allowed.allows("10.2.0.1")
    assert not allowed.allows("192.168.0.1")


def test_connection_from_an_address_not_allowed_is_closed_at_once():
    server = FastCGIServer(hello, web_server_addrs=["10.0.0.1"])

    class Tcp:
        kind = "tcp"
    handler = server.handler(None, ("127.0.0.1", 5555), Tcp(), FakeState())
    assert handler.on_readable() is False


# --------------------------------------------------------------------------
# Multiplexing on the real Worker (FCGI_MPXS_CONNS=1 is a promise)


class Gate:
    """An app whose ``/slow`` requests wait until the test opens the gate (ordering, not time)."""

    def __init__(self):
        import threading
        self.started = threading.Event()
        self.open = threading.Event()
        self.closed = []

    def app(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/slow":
            self.started.set()
            self.open.wait(20)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"slow done"]
        if path == "/slow-stream":
            start_response("200 OK", [("Content-Type", "text/plain")])

            def chunks():
                try:
                    yield b"first\n"
                    self.started.set()
                    for _ in range(2000):
                        if self.open.wait(0.01):
                            break
                        yield b"."
                    yield b"end\n"
                finally:
                    self.closed.append(path)
            return chunks()
        if path.startswith("/stream-"):
            start_response("200 OK", [("Content-Type", "text/plain")])
            n = int(path.rpartition("-")[2])
            return (bytes([65 + n]) * (1000 + i) for i in range(200))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fast " + path.encode()]


def ended(rid):
    return lambda recs: any(t == p.END_REQUEST and r == rid for t, r, _ in recs)


def test_a_multiplexed_request_is_answered_while_another_on_the_connection_still_runs():
    from support.fastcgi import Client, RunningFCGI
    gate = Gate()
    with RunningFCGI(gate.app, threads=2) as server, Client(server.address) as client:
        client.send(request_bytes(get_params("/slow"), request_id=1, keep_conn=True))
        assert gate.started.wait(10)
        client.send(request_bytes(get_params("/fast"), request_id=2, keep_conn=True))
        replies = parse_replies(client.read_until(ended(2)))
        assert replies[2].head_and_body()[2] == b"fast /fast"
        assert 1 not in replies or not replies[1].ended       # request 1 is still running
        gate.open.set()
        replies = parse_replies(client.read_until(ended(1)))
        assert replies[1].head_and_body()[2] == b"slow done" and replies[1].protocol_status == 0
        # The connection carries on: a third request on it.
        client.records = []
        assert client.request(get_params("/again"), request_id=1, keep_conn=True).head_and_body()[2] \
            == b"fast /again"


def test_concurrent_responses_on_one_connection_never_interleave_inside_a_record():
    """Four streamed responses at once on one connection: every record parses
    (the RecordReader checks each header, length and padding) and each body
    is its own, whole."""
    from support.fastcgi import Client, RunningFCGI
    gate = Gate()
    with RunningFCGI(gate.app, threads=4) as server, Client(server.address) as client:
        client.send(b"".join(request_bytes(get_params(f"/stream-{n}"), request_id=n + 1, keep_conn=True)
                             for n in range(4)))
        recs = client.read_until(lambda recs: all(ended(n + 1)(recs) for n in range(4)))
        replies = parse_replies(recs)
        for n in range(4):
            body = replies[n + 1].head_and_body()[2]
            assert body == b"".join(bytes([65 + n]) * (1000 + i) for i in range(200))


def test_abort_of_one_multiplexed_request_leaves_the_other_running():
    from support.fastcgi import Client, RunningFCGI
    gate = Gate()
    with RunningFCGI(gate.app, threads=2) as server, Client(server.address) as client:
        client.send(request_bytes(get_params("/slow-stream"), request_id=1, keep_conn=True))
        assert gate.started.wait(10)
        client.send(p.encode_record(p.ABORT_REQUEST, 1, b"")
                    + request_bytes(get_params("/fast"), request_id=2, keep_conn=True))
        replies = parse_replies(client.read_until(lambda recs: ended(1)(recs) and ended(2)(recs)))
        assert replies[1].app_status == 1 and not replies[1].stdout.endswith(b"end\n")
        assert replies[2].head_and_body()[2] == b"fast /fast"
        assert gate.closed == ["/slow-stream"]       # the app's close() was called


def test_web_server_closing_a_multiplexed_connection_stops_its_running_requests():
    import time
    from support.fastcgi import Client, RunningFCGI
    gate = Gate()
    with RunningFCGI(gate.app, threads=2) as server:
        with Client(server.address) as client:
            client.send(request_bytes(get_params("/slow-stream"), request_id=1, keep_conn=True))
            assert gate.started.wait(10)
        deadline = time.monotonic() + 10
        while not gate.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate.closed == ["/slow-stream"]
        with Client(server.address) as client:
            assert client.request(get_params("/next"), keep_conn=True).head_and_body()[2] == b"fast /next"


def test_without_a_spare_descriptor_kept_requests_are_served_in_turn(monkeypatch):
    import errno
    from support.fastcgi import Client, RunningFCGI

    def no_dup(self):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(socket.socket, "dup", no_dup)
    gate = Gate()
    with RunningFCGI(gate.app, threads=2) as server, Client(server.address) as client:
        for n in range(3):
            client.records = []
            assert client.request(get_params(f"/n{n}"), keep_conn=True).head_and_body()[2] == f"fast /n{n}".encode()


def test_making_room_at_the_connection_cap_never_closes_a_request_that_has_begun():
    """At --worker-connections a flood of empty connects closes the longest idle
    connections; one whose request has begun (PARAMS in, STDIN still coming) is
    not idle: closing it dropped the request without an END_REQUEST."""
    from support.fastcgi import Client, RunningFCGI

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + body]
    with RunningFCGI(app, threads=2, worker_connections=4, idle_timeout=60.0) as server:
        idle = Client(server.address)
        assert idle.request(get_params("/"), keep_conn=True).ended
        begun = Client(server.address)
        begun.send(request_bytes(get_params("/", REQUEST_METHOD="POST", CONTENT_LENGTH="6"), b"abc",
                                 keep_conn=True, end_stdin=False))
        flood = []
        try:
            for _ in range(12):
                flood.append(socket.create_connection(server.address))
            idle.sock.settimeout(5)
            assert idle.closed_by_server()      # room was made, the idle one first
            begun.send(p.encode_record(p.STDIN, 1, b"def") + p.encode_record(p.STDIN, 1, b""))
            begun.read_until(lambda recs: any(t == p.END_REQUEST for t, _, _ in recs))
            reply = parse_replies(begun.records).get(1)
            assert reply is not None and reply.ended and reply.stdout.endswith(b"got abcdef"), reply
        finally:
            for c in [idle, begun]:
                c.close()
            for c in flood:
                c.close()


def test_a_closed_connection_is_freed_by_reference_counting_not_left_to_the_cycle_collector():
    """Behind nginx's default every request is a new connection: a handler that
    stays in a reference cycle after close leaves a dozen objects per request
    for the cyclic collector (13 % of the instructions per request)."""
    import gc
    import weakref
    gc.collect()
    gc.disable()
    try:
        pair = Pair(hello)
        pair.send(request_bytes(get_params("/"), keep_conn=False))
        assert pair.step() is False
        assert parse_replies(pair.read_until_end())[1].head_and_body()[2] == b"|/|"
        handler = weakref.ref(pair.handler)
        pair.state.started.clear()      # the test's own record of the environ
        pair.close()
        del pair
        assert handler() is None, gc.get_referrers(handler())
    finally:
        gc.enable()
