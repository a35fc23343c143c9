"""FastCGIApp against scripted FastCGI backends (threads on private unix sockets).

Each fake backend decodes what the client sent with the record layer of
bridge.fastcgi.protocol and answers with bytes the test chooses, so every
framing case (STDOUT split anywhere, STDERR, END_REQUEST statuses, garbage,
early close, silence) is exercised without a real FastCGI server.  Real
php-fpm and bridge fcgi are in tests/integration/test_composition_fastcgi.py.
"""
import io
import os
import socket
import threading

import pytest

from bridge.fastcgi import protocol as p
from bridge.fastcgi.client import FastCGIApp, parse_address
from bridge.wsgi import call_app


class FakeBackend:
    """Accepts connections; per request, reads BEGIN/PARAMS/STDIN and sends ``respond(req)``."""

    def __init__(self, path, respond):
        self.path = str(path)
        self.respond = respond
        self.requests = []
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return "unix:" + self.path

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        reader = p.RecordReader()
        with conn:
            while True:
                req = {"params": b"", "stdin": [], "begin": None, "conn": conn}
                done = False
                while not done:
                    data = conn.recv(65536)
                    if not data:
                        return
                    for rtype, rid, content in reader.feed(data):
                        req["id"] = rid
                        if rtype == p.BEGIN_REQUEST:
                            req["begin"] = p.decode_begin_request(content)
                        elif rtype == p.PARAMS:
                            req["params"] += content
                        elif rtype == p.STDIN:
                            req["stdin"].append(content)
                            done = content == b""
                req["params"] = {k.decode("latin-1"): v.decode("latin-1")
                                 for k, v in p.decode_pairs(req["params"])}
                req["body"] = b"".join(req["stdin"])
                self.requests.append(req)
                answer = self.respond(req)
                if answer is None:
                    return   # close without a word
                conn.sendall(answer)
                if not req["begin"][1] & p.KEEP_CONN:
                    return

    def close(self):
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def reply(stdout=b"Content-Type: text/plain\r\n\r\nok", stderr=b"", rid=1,
          protocol_status=p.REQUEST_COMPLETE):
    out = b""
    if stderr:
        out += p.encode_record(p.STDERR, rid, stderr) + p.encode_record(p.STDERR, rid, b"")
    if stdout:
        out += p.encode_record(p.STDOUT, rid, stdout)
    out += p.encode_record(p.STDOUT, rid, b"")
    return out + p.encode_record(p.END_REQUEST, rid, p.encode_end_request(0, protocol_status))


@pytest.fixture
def backend(tmp_path):
    made = []

    def make(respond=lambda req: reply(), name=None):
        b = FakeBackend(tmp_path / (name or f"b{len(made)}.sock"), respond)
        made.append(b)
        return b
    yield make
    for b in made:
        b.close()


class Collect:
    def __init__(self):
        self.status = self.headers = None
        self.body = b""
        self.aborted = False

    def send_head(self, status, headers, body, end):
        self.status, self.headers, self.body = status, headers, body

    def send_body(self, data):
        self.body += data

    def finish(self):
        pass

    def abort(self):
        self.aborted = True


def run(app, path="/", method="GET", body=b"", script_name="", query="", **extra):
    errors = io.StringIO()
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": script_name, "PATH_INFO": path,
               "QUERY_STRING": query, "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.input": io.BytesIO(body), "wsgi.errors": errors, "wsgi.url_scheme": "http"}
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    environ.update(extra)
    out = Collect()
    call_app(app, environ, out)
    out.errors = errors.getvalue()
    return out


# -- what is sent --------------------------------------------------------------


def test_request_is_a_keep_conn_responder_with_cgi_params(backend):
    b = backend()
    app = FastCGIApp([b.address])
    out = run(app, "/x y", script_name="/app", query="a=1", HTTP_X_TOKEN="t",
              HTTP_PROXY="http://evil:1", SECRET="no")
    assert out.status == "200 OK" and out.body == b"ok"
    req = b.requests[0]
    assert req["id"] == 1
    assert req["begin"] == (p.RESPONDER, p.KEEP_CONN)
    params = req["params"]
    assert params["SCRIPT_NAME"] == "/app" and params["PATH_INFO"] == "/x y"
    assert params["QUERY_STRING"] == "a=1" and params["REQUEST_METHOD"] == "GET"
    assert params["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert params["HTTP_X_TOKEN"] == "t"
    assert params["REQUEST_URI"] == "/app/x%20y?a=1"
    assert "HTTP_PROXY" not in params and "SECRET" not in params
    assert "SCRIPT_FILENAME" not in params


def test_the_body_goes_as_stdin_records_ending_with_an_empty_one(backend):
    b = backend()
    body = os.urandom(200_000)
    out = run(FastCGIApp([b.address]), method="POST", body=body)
    assert out.status == "200 OK"
    req = b.requests[0]
    assert req["body"] == body
    assert req["params"]["CONTENT_LENGTH"] == "200000"
    assert all(0 < len(chunk) <= 65535 for chunk in req["stdin"][:-1])
    assert req["stdin"][-1] == b""


def test_extra_params_are_added_and_none_removes_one(backend):
    b = backend()
    run(FastCGIApp([b.address], params={"APP_ENV": "test", "SERVER_SOFTWARE": None}))
    params = b.requests[0]["params"]
    assert params["APP_ENV"] == "test" and "SERVER_SOFTWARE" not in params


@pytest.mark.parametrize("path, script_name, path_info, filename", [
    ("/index.php", "/legacy/index.php", "", "/srv/www/index.php"),
    ("/a/b.php/extra/x", "/legacy/a/b.php", "/extra/x", "/srv/www/a/b.php"),
    ("/dir/", "/legacy/dir/index.php", "", "/srv/www/dir/index.php"),
    ("", "/legacy/index.php", "", "/srv/www/index.php"),
    ("/style.css", "/legacy/style.css", "", "/srv/www/style.css"),
])
def test_document_root_splits_the_script_from_path_info_like_nginx(backend, path, script_name,
                                                                    path_info, filename):
    b = backend()
    run(FastCGIApp([b.address], document_root="/srv/www/"), path, script_name="/legacy")
    params = b.requests[0]["params"]
    assert (params["SCRIPT_NAME"], params["PATH_INFO"], params["SCRIPT_FILENAME"]) == \
        (script_name, path_info, filename)
    assert params["DOCUMENT_ROOT"] == "/srv/www"


def test_dot_dot_never_reaches_a_document_root_backend(backend):
    b = backend()
    out = run(FastCGIApp([b.address], document_root="/srv/www"), "/../etc/passwd.php")
    assert out.status == "404 Not Found" and not b.requests


def test_a_fixed_script_filename_is_a_front_controller(backend):
    b = backend()
    run(FastCGIApp([b.address], script_filename="/srv/app/index.php"), "/any/path", script_name="/x")
    params = b.requests[0]["params"]
    assert params["SCRIPT_FILENAME"] == "/srv/app/index.php"
    assert params["PATH_INFO"] == "/any/path" and params["SCRIPT_NAME"] == "/x"


# -- what comes back -------------------------------------------------------------


def test_stdout_split_at_every_byte_gives_the_same_response(backend):
    stdout = b"Status: 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nhello world"

    def split_at(cut):
        def respond(req):
            return (p.encode_record(p.STDOUT, 1, stdout[:cut]) + p.encode_record(p.STDOUT, 1, stdout[cut:])
                    + p.encode_record(p.STDOUT, 1, b"")
                    + p.encode_record(p.END_REQUEST, 1, p.encode_end_request(0)))
        return respond
    for cut in range(0, len(stdout) + 1, 3):
        b = backend(split_at(cut))
        out = run(FastCGIApp([b.address]))
        assert out.status == "201 Created", cut
        assert out.headers == [("Content-Type", "text/plain"), ("X-A", "1")], cut
        assert out.body == b"hello world", cut


def test_stderr_goes_to_wsgi_errors(backend):
    b = backend(lambda req: reply(stderr=b"PHP Warning: something\nsecond line\n"))
    out = run(FastCGIApp([b.address]))
    assert out.body == b"ok"
    assert "PHP Warning: something" in out.errors and "second line" in out.errors


def test_a_large_response_streams_through(backend):
    big = os.urandom(1_000_000)
    b = backend(lambda req: reply(stdout=b"Content-Type: application/octet-stream\n\n" + big))
    out = run(FastCGIApp([b.address]))
    assert out.body == big


def test_a_local_redirect_is_served_again_with_get(backend):
    def respond(req):
        if req["params"]["PATH_INFO"] == "/old":
            return reply(stdout=b"Location: /new?x=1\r\n\r\n")
        return reply(stdout=b"Content-Type: text/plain\r\n\r\n" + req["params"]["REQUEST_METHOD"].encode()
                     + b" " + req["params"]["PATH_INFO"].encode() + b"?" + req["params"]["QUERY_STRING"].encode())
    b = backend(respond)
    out = run(FastCGIApp([b.address]), "/old", method="POST", body=b"data")
    assert out.body == b"GET /new?x=1"


@pytest.mark.parametrize("answer, status, logged", [
    (reply(stdout=b"this is not a header block\n\n"), "502 Bad Gateway", "without a colon"),
    (reply(stdout=b""), "502 Bad Gateway", "no output"),
    (reply(stdout=b"Content-Type: text/plain\r\n"), "502 Bad Gateway", "END_REQUEST before"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "502 Bad Gateway", "not a FastCGI 1 record"),
    (reply(stdout=b"", protocol_status=p.OVERLOADED), "503 Service Unavailable", "OVERLOADED"),
    (reply(stdout=b"", protocol_status=p.UNKNOWN_ROLE), "502 Bad Gateway", "UNKNOWN_ROLE"),
])
def test_a_backend_answering_garbage_is_a_502_with_the_reason_logged(backend, answer, status, logged):
    b = backend(lambda req: answer)
    out = run(FastCGIApp([b.address]))
    assert out.status == status
    assert logged in out.errors
    assert logged.encode() not in out.body


def test_an_overloaded_backend_passes_the_request_to_the_next_one(backend):
    full = backend(lambda req: reply(stdout=b"", protocol_status=p.OVERLOADED))
    free = backend()
    out = run(FastCGIApp([full.address, free.address]))
    assert out.status == "200 OK" and out.body == b"ok"
    assert len(full.requests) == 1 and len(free.requests) == 1


def test_a_backend_closing_without_a_word_is_a_502(backend):
    b = backend(lambda req: None)
    out = run(FastCGIApp([b.address]))
    assert out.status == "502 Bad Gateway"
    assert "closed the connection" in out.errors


def test_a_backend_closing_inside_the_header_block_is_a_502(backend):
    def respond(req):
        req["conn"].sendall(p.encode_record(p.STDOUT, 1, b"Content-Type: text/plain\r\n"))
        return None
    b = backend(respond)
    out = run(FastCGIApp([b.address]))
    assert out.status == "502 Bad Gateway"
    assert "closed the connection before END_REQUEST" in out.errors


def test_a_silent_backend_is_a_504(backend):
    b = backend(lambda req: b"")   # reads the request, never answers
    out = run(FastCGIApp([b.address], timeout=0.3))
    assert out.status == "504 Gateway Timeout"
    assert "did not answer" in out.errors


def test_a_backend_going_silent_mid_body_cuts_the_response_off(backend):
    b = backend(lambda req: p.encode_record(p.STDOUT, 1, b"Content-Type: text/plain\r\n\r\npartial"))
    out = run(FastCGIApp([b.address], timeout=0.3))
    assert out.status == "200 OK" and out.body == b"partial"
    assert out.aborted
    assert "silent" in out.errors


# -- connections -----------------------------------------------------------------


def test_connections_are_kept_and_reused(backend):
    b = backend()
    app = FastCGIApp([b.address])
    for _ in range(5):
        assert run(app).body == b"ok"
    assert b.connections == 1
    assert len(b.requests) == 5


def test_a_pooled_connection_the_backend_closed_is_replaced(backend):
    count = {"n": 0}

    def respond(req):
        count["n"] += 1
        req["conn"].sendall(reply())
        return None   # then close: the pooled connection is dead
    b = backend(respond)
    app = FastCGIApp([b.address])
    assert run(app).body == b"ok"
    out = run(app)
    assert out.body == b"ok", out.errors
    assert b.connections == 2


@pytest.mark.parametrize("method", ["POST", "PATCH", "LOCK", "BREW"])
def test_a_request_that_is_not_idempotent_runs_once_when_backends_close_after_reading_it(
        backend, method):
    # php-fpm children killed mid-request: each backend read the whole request, then closed.
    dying = [backend(lambda req: None) for _ in range(3)]
    app = FastCGIApp([b.address for b in dying], retry_after=60)
    out = run(app, "/pay", method=method)
    assert out.status == "502 Bad Gateway"
    assert sum(len(b.requests) for b in dying) == 1   # ran once, not three times
    assert "not retried" in out.errors
    # The backend was reachable: it is not taken out as if it were down.
    assert all(b.down_until == 0 for b in app.backends)
    assert "taken out" not in out.errors


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_an_idempotent_request_moves_on_when_a_backend_closes_after_reading_it(backend, method):
    dying = backend(lambda req: None)
    good = backend()
    app = FastCGIApp([dying.address, good.address], retry_after=60)
    out = run(app, method=method)
    assert out.status == "200 OK"
    assert len(dying.requests) == 1 and len(good.requests) == 1
    assert all(b.down_until == 0 for b in app.backends)


def test_a_post_moves_on_when_a_backend_refuses_the_connection(backend, tmp_path):
    good = backend()
    app = FastCGIApp([f"unix:{tmp_path}/nobody.sock", good.address], retry_after=60)
    out = run(app, method="POST")
    assert out.status == "200 OK" and out.body == b"ok"
    assert len(good.requests) == 1
    assert app.backends[0].down_until > 0   # unreachable: taken out


def test_a_post_on_a_pooled_connection_closed_after_reading_it_is_not_replayed(backend):
    seen = []

    def respond(req):
        seen.append(req["params"]["REQUEST_METHOD"])
        return reply() if len(seen) == 1 else None   # answers the first, dies on the second
    b = backend(respond)
    app = FastCGIApp([b.address])
    assert run(app).body == b"ok"
    assert run(app, method="POST").status == "502 Bad Gateway"
    assert seen == ["GET", "POST"]


def test_a_backend_that_is_not_there_is_skipped_and_taken_out(backend, tmp_path):
    good = backend()
    app = FastCGIApp([f"unix:{tmp_path}/nobody.sock", good.address], retry_after=60)
    outs = [run(app) for _ in range(4)]
    assert all(o.body == b"ok" for o in outs)
    logged = "".join(o.errors for o in outs)
    assert logged.count("taken out for 60s") == 1   # one line when it goes, not one per request
    assert len(good.requests) == 4


def test_a_request_nobody_can_take_is_a_502_naming_every_backend(tmp_path):
    app = FastCGIApp([f"unix:{tmp_path}/a.sock", f"unix:{tmp_path}/b.sock"])
    out = run(app, "/page")
    assert out.status == "502 Bad Gateway"
    assert "no FastCGI backend could take GET /page" in out.errors
    assert "a.sock" in out.errors and "b.sock" in out.errors
    assert b"sock" not in out.body


def test_a_backend_taken_out_is_tried_again_after_retry_after(backend, tmp_path):
    path = tmp_path / "late.sock"
    app = FastCGIApp([f"unix:{path}"], retry_after=0.01)
    assert run(app).status == "502 Bad Gateway"
    late = FakeBackend(path, lambda req: reply())
    try:
        out = run(app)
        assert out.body == b"ok"
        assert "is back" in out.errors
    finally:
        late.close()


def test_round_robin_spreads_requests_evenly(backend):
    bs = [backend() for _ in range(3)]
    app = FastCGIApp([b.address for b in bs])
    for _ in range(9):
        run(app)
    assert [len(b.requests) for b in bs] == [3, 3, 3]


def test_least_busy_avoids_a_backend_with_a_request_in_flight(backend):
    release = threading.Event()

    def slow(req):
        release.wait(10)
        return reply(stdout=b"Content-Type: text/plain\r\n\r\nslow")
    slow_b = backend(slow)
    fast_b = backend()
    app = FastCGIApp([slow_b.address, fast_b.address], balance="least_busy")
    t = threading.Thread(target=run, args=(app,))
    t.start()
    try:
        while not slow_b.requests:
            threading.Event().wait(0.01)
        for _ in range(4):
            assert run(app).body == b"ok"
    finally:
        release.set()
        t.join()
    assert len(fast_b.requests) == 4


@pytest.mark.parametrize("text, expected", [
    ("unix:/run/php.sock", (socket.AF_UNIX, "/run/php.sock", "unix:/run/php.sock")),
    ("fcgi://127.0.0.1:9000", (socket.AF_UNSPEC, ("127.0.0.1", 9000), "127.0.0.1:9000")),
    ("[::1]:9000", (socket.AF_UNSPEC, ("::1", 9000), "[::1]:9000")),
])
def test_backend_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", "host:port", ":9000", "unix:", "h:70000"])
def test_bad_backend_addresses_are_refused(text):
    with pytest.raises(ValueError):
        parse_address(text)
