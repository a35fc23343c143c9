"""The worker's epoll loop and thread pool, with a line-echo handler over real loopback sockets."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from bridge.server.listeners import open_listeners
from bridge.server.worker import Worker, WorkerState, recv_available
from support.echo_server import EchoHandler


@pytest.fixture(autouse=True)
def _reset_echo_events():
    EchoHandler.release.clear()
    EchoHandler.started.clear()
    yield
    EchoHandler.release.set()


class Running:
    """A Worker serving in a background thread."""

    def __init__(self, binds=("127.0.0.1:0",), factory=EchoHandler, **options) -> None:
        self.listeners = open_listeners(list(binds), socket_mode=0o600)
        self.address = self.listeners[0].sock.getsockname()
        self.worker = Worker(self.listeners, factory, **options)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def connect(self, index: int = 0) -> socket.socket:
        listener = self.listeners[index]
        family = listener.sock.family
        c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(listener.sock.getsockname())
        return c

    def stop(self, graceful: bool = True) -> None:
        self.worker.stop(graceful)
        self.thread.join(15)
        for listener in self.listeners:
            listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        EchoHandler.release.set()
        self.stop(graceful=False)


def ask(conn: socket.socket, line: bytes) -> bytes:
    conn.sendall(line + b"\n")
    return read_line(conn)


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    return data[:-1]


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_accepted_tcp_connection_is_answered():
    with Running() as r:
        with r.connect() as c:
            assert ask(c, b"hello") == b"hello"


def test_accepted_unix_connection_is_answered(tmp_path):
    with Running(binds=[f"unix:{tmp_path}/s.sock"]) as r:
        with r.connect() as c:
            assert ask(c, b"over unix") == b"over unix"


def test_every_listener_of_a_worker_is_served(tmp_path):
    with Running(binds=["127.0.0.1:0", f"unix:{tmp_path}/s.sock"]) as r:
        for i in range(2):
            with r.connect(i) as c:
                assert ask(c, b"on %d" % i) == b"on %d" % i


def test_keep_alive_connection_is_rearmed_for_each_request():
    with Running(threads=2) as r:
        with r.connect() as c:
            for i in range(200):
                assert ask(c, b"request %d" % i) == b"request %d" % i
        wait_until(lambda: r.worker.state.requests == 200)
        assert r.worker.state.accepted == 1


def test_many_connections_share_few_threads():
    with Running(threads=2) as r:
        conns = [r.connect() for _ in range(50)]
        try:
            for round_ in range(3):
                for i, c in enumerate(conns):
                    assert ask(c, b"%d-%d" % (round_, i)) == b"%d-%d" % (round_, i)
        finally:
            for c in conns:
                c.close()
        wait_until(lambda: r.worker.state.requests == 150)


def test_pipelined_requests_are_answered_in_order():
    with Running() as r:
        with r.connect() as c:
            c.sendall(b"".join(b"line %d\n" % i for i in range(100)))
            reader = c.makefile("rb")
            for i in range(100):
                assert reader.readline() == b"line %d\n" % i


def test_idle_connection_is_closed_after_idle_timeout():
    with Running(idle_timeout=0.2) as r:
        with r.connect() as c:
            assert ask(c, b"once") == b"once"
            assert c.recv(10) == b""          # closed by the server, not by us


def test_idle_deadline_set_by_handler_cuts_off_a_slow_client():
    class HeaderTimeout(EchoHandler):
        def on_readable(self):
            keep = super().on_readable()
            # an incomplete request: give the rest of it 0.2 s (slow-loris cut-off)
            self.idle_deadline = time.monotonic() + 0.2 if self.buf else None
            return keep

    with Running(factory=HeaderTimeout, idle_timeout=None) as r:
        with r.connect() as idle, r.connect() as slow:
            slow.sendall(b"never finis")
            assert slow.recv(10) == b""
            assert ask(idle, b"still served") == b"still served"


def test_client_closing_the_connection_closes_the_handler():
    handlers = []

    def factory(*args):
        h = EchoHandler(*args)
        handlers.append(h)
        return h

    with Running(factory=factory) as r:
        c = r.connect()
        assert ask(c, b"x") == b"x"
        c.close()
        wait_until(lambda: handlers[0].closed)


def test_lone_worker_keeps_accepting_while_its_threads_are_busy():
    # No sibling process would take the connection: it queues in the pool
    # and is served as soon as a thread frees up.
    with Running(threads=1) as r:
        first = r.connect()
        first.sendall(b"block\n")
        assert EchoHandler.started.wait(10)
        second = r.connect()
        second.sendall(b"waiting\n")
        wait_until(lambda: r.worker.state.accepted == 2)
        assert not r.worker._paused
        EchoHandler.release.set()
        assert read_line(first) == b"block"
        assert read_line(second) == b"waiting"
        first.close()
        second.close()


def test_worker_with_siblings_stops_accepting_when_its_pool_is_full():
    with Running(threads=1, accept_limit=1) as r:
        first = r.connect()
        first.sendall(b"block\n")
        assert EchoHandler.started.wait(10)
        second = r.connect()                   # completes in the kernel's queue
        second.sendall(b"waiting\n")
        wait_until(lambda: r.worker._paused)
        assert r.worker.state.accepted == 1    # left for another worker process
        EchoHandler.release.set()
        assert read_line(first) == b"block"
        assert read_line(second) == b"waiting"
        assert r.worker.state.accepted == 2
        first.close()
        second.close()


def test_graceful_stop_finishes_the_request_in_flight():
    r = Running(threads=2, graceful_timeout=30)
    try:
        busy = r.connect()
        idle = r.connect()
        assert ask(idle, b"before") == b"before"
        busy.sendall(b"block\n")
        assert EchoHandler.started.wait(10)
        stopper = threading.Thread(target=r.worker.stop, args=(True,))
        stopper.start()
        wait_until(lambda: not r.worker.state.accepting)
        assert idle.recv(10) == b""            # idle keep-alive connection closed at once
        with pytest.raises(ConnectionRefusedError):   # no longer accepting
            socket.create_connection(r.address, timeout=2)
        EchoHandler.release.set()
        assert read_line(busy) == b"block"     # the in-flight request completed
        assert busy.recv(10) == b""            # then the connection is closed
        r.thread.join(10)
        assert not r.thread.is_alive()
    finally:
        EchoHandler.release.set()
        r.stop(graceful=False)


def test_immediate_stop_does_not_wait_for_requests_in_flight():
    r = Running(threads=1, graceful_timeout=30)
    c = r.connect()
    c.sendall(b"block\n")
    assert EchoHandler.started.wait(10)
    r.worker.stop(graceful=False)
    r.thread.join(10)
    assert not r.thread.is_alive()
    EchoHandler.release.set()
    r.stop()
    c.close()


def test_graceful_timeout_abandons_a_request_that_does_not_finish():
    r = Running(threads=1, graceful_timeout=0.2)
    c = r.connect()
    c.sendall(b"block\n")
    assert EchoHandler.started.wait(10)
    r.worker.stop(graceful=True)
    r.thread.join(10)
    assert not r.thread.is_alive()
    EchoHandler.release.set()
    r.stop()
    c.close()


def test_max_requests_stops_the_worker_after_that_many_requests():
    with Running(max_requests=5) as r:
        with r.connect() as c:
            for i in range(5):
                assert ask(c, b"%d" % i) == b"%d" % i
        r.thread.join(10)
        assert not r.thread.is_alive()
        assert r.worker.state.requests == 5


def test_failing_handler_closes_only_its_connection():
    with Running(threads=2) as r:
        with r.connect() as good, r.connect() as bad:
            assert ask(good, b"ok") == b"ok"
            bad.sendall(b"raise\n")
            assert bad.recv(10) == b""
            assert ask(good, b"still ok") == b"still ok"


def test_state_shows_the_request_in_flight():
    with Running(threads=2) as r:
        with r.connect() as c:
            c.sendall(b"block\n")
            assert EchoHandler.started.wait(10)
            wait_until(lambda: r.worker.state.busy_threads == 1)
            [(seconds, environ)] = r.worker.state.in_flight()
            assert environ["REQUEST_URI"] == "block" and seconds >= 0
            EchoHandler.release.set()
            assert read_line(c) == b"block"
        wait_until(lambda: r.worker.state.busy_threads == 0)


def test_call_soon_runs_in_the_loop_thread():
    ran = []
    with Running() as r:
        r.worker.call_soon(lambda: ran.append(threading.current_thread()))
        wait_until(lambda: ran)
        assert ran[0] is r.thread


def test_recv_available_does_not_wait_on_a_socket_with_a_timeout():
    a, b = socket.socketpair()
    a.settimeout(30)
    try:
        assert recv_available(a) is None
        b.sendall(b"data")
        assert recv_available(a) == b"data"
        b.close()
        assert recv_available(a) == b""
    finally:
        a.close()


def test_worker_state_counts_requests_from_any_thread():
    state = WorkerState(2)
    for _ in range(3):
        state.request_started({})
        state.request_finished()
    assert state.requests == 3


# -- scoreboard and status page (no sockets: the shared memory and the WSGI wrapper) --------

def _call(app, path, remote="127.0.0.1", query="", accept=""):
    import io
    out = {}

    def start_response(status, headers, exc_info=None):
        out["status"], out["headers"] = status, dict(headers)
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
               "REMOTE_ADDR": remote, "HTTP_ACCEPT": accept, "wsgi.errors": io.StringIO()}
    body = b"".join(app(environ, start_response))
    return out["status"], out["headers"], body


class _Config:
    workers = 2
    workers_min = workers_max = None
    status_path = "/bridge-status"
    ping_path = "/ping"
    status_allow = ["127.0.0.1", "10.1.0.0/16"]


def _board_with_a_request_in_flight():
    from bridge.server import status
    from bridge.server.scoreboard import READY, Scoreboard
    board = Scoreboard(4, 2)
    board.write_header(master_pid=1, target=2)
    for pid in (101, 102):
        board.slot(board.claim(pid, 1)).set_state(READY)
    slot = board.slot(0)
    slot.request_started(1, time.monotonic() - 2.5, {"REQUEST_METHOD": "POST", "REQUEST_URI": "/upload?x=1"})
    status.set_context(board, [], _Config(), "prefork")
    return board, slot


def test_scoreboard_shows_each_workers_request_in_flight_and_counts_when_it_ends():
    board, slot = _board_with_a_request_in_flight()
    [first, second] = board.workers()
    [running] = first["running"]
    assert running["request"] == "POST /upload?x=1" and running["duration"] >= 2.5
    assert second["running"] == []
    slot.request_finished(1)
    assert board.read_slot(0)["requests"] == 1 and board.read_slot(0)["running"] == []
    board.release(0)                       # a recycled worker's requests still count
    assert board.header()["gone_requests"] == 1


def test_status_page_reports_the_pool_as_json():
    import json
    from bridge.server.status import wrap
    _board_with_a_request_in_flight()
    app = wrap(lambda e, s: [b"app"], _Config())
    status, headers, body = _call(app, "/bridge-status")
    assert status == "200 OK" and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["workers"] == 2 and data["busy_workers"] == 1 and data["idle_workers"] == 1
    assert data["busy_threads"] == 1 and data["idle_threads"] == 3
    assert data["processes"][0]["requests_in_flight"][0]["request"] == "POST /upload?x=1"


def test_status_page_is_html_for_a_browser_and_escapes_request_lines():
    from bridge.server.status import wrap
    board, slot = _board_with_a_request_in_flight()
    slot.request_started(0, time.monotonic(), {"REQUEST_METHOD": "GET", "REQUEST_URI": "/<script>"})
    app = wrap(lambda e, s: [b"app"], _Config())
    status, headers, body = _call(app, "/bridge-status", accept="text/html,*/*")
    assert headers["Content-Type"].startswith("text/html")
    assert b"&lt;script&gt;" in body and b"<script>" not in body


def test_status_page_is_refused_to_other_addresses_ping_is_not():
    from bridge.server.status import wrap
    _board_with_a_request_in_flight()
    app = wrap(lambda e, s: [b"app"], _Config())
    assert _call(app, "/bridge-status", remote="192.0.2.7")[0] == "403 Forbidden"
    assert _call(app, "/bridge-status", remote="10.1.200.3")[0] == "200 OK"
    assert _call(app, "/bridge-status", remote="::ffff:127.0.0.1")[0] == "200 OK"
    assert _call(app, "/ping", remote="192.0.2.7")[2] == b"pong\n"


def test_other_paths_go_to_the_app():
    from bridge.server.status import wrap

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"the app"]
    assert _call(wrap(app, _Config()), "/bridge-status/more")[2] == b"the app"



def test_blocked_requests_each_let_one_more_thread_in_up_to_the_pool_size():
    with Running(threads=3) as running:
        blocked = [running.connect() for _ in range(3)]
        for conn in blocked:
            conn.sendall(b"sleep 2\n")
        worker = running.worker
        # Every thread ends up in a request: the monitor let two more in.
        wait_until(lambda: sum(1 for tag in worker._serving if tag) == 3)
        assert worker._extra == 2
        # A fourth request waits for a free thread rather than a fourth one.
        extra = running.connect()
        extra.sendall(b"late\n")
        for conn in blocked:
            assert read_line(conn) == b"sleep 2"
        assert read_line(extra) == b"late"


def test_threads_let_in_for_a_blocked_request_park_again_when_it_ends():
    with Running(threads=4) as running:
        worker = running.worker
        hung = running.connect()
        hung.sendall(b"block\n")
        assert EchoHandler.started.wait(5)
        other = running.connect()
        assert ask(other, b"meanwhile") == b"meanwhile"     # served by a thread let in
        assert worker._extra == 1
        EchoHandler.release.set()
        assert read_line(hung) == b"block"
        wait_until(lambda: worker._extra == 0)
        # Back to one running thread: the others wait on the semaphore.
        assert worker._slots._value == 0
        for i in range(20):
            assert ask(other, b"after %d" % i) == b"after %d" % i


def test_a_request_polled_together_with_one_that_blocks_is_still_served():
    # Two threads, both held in a request while two idle connections get
    # theirs: the next poll returns both events at once.  The first blocks;
    # the second must not wait behind it (a thread let in takes it).
    with Running(threads=2) as running:
        worker = running.worker
        first, second = running.connect(), running.connect()
        assert ask(first, b"warm") == b"warm"
        assert ask(second, b"warm") == b"warm"
        busy = [running.connect(), running.connect()]
        for conn in busy:
            conn.sendall(b"sleep 0.5\n")
        wait_until(lambda: all(worker._serving))
        first.sendall(b"block\n")
        second.sendall(b"meanwhile\n")
        assert EchoHandler.started.wait(5)
        assert read_line(second) == b"meanwhile"
        assert not EchoHandler.release.is_set()
        EchoHandler.release.set()
        assert read_line(first) == b"block"
        for conn in busy:
            assert read_line(conn) == b"sleep 0.5"


# -- the idle sweep: nothing that has arrived is dropped ---------------------------

class _IdleHandler:
    def __init__(self, deadline, lingering: bool = False) -> None:
        self.idle_deadline = deadline
        self.lingering = lingering

    def close(self) -> None:
        pass


@pytest.mark.parametrize("deadline, idle_timeout", [
    (100.0, None),      # the handler's deadline: keep-alive end, header timeout of a new connection
    (None, 100.0),      # the worker's idle timeout (FastCGI between requests)
])
def test_sweep_spares_an_expired_connection_whose_next_request_has_arrived(deadline, idle_timeout):
    from bridge.server.worker import Connection, idle_expired
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        conns = []
        for server, _ in pairs:
            conn = Connection(server, _IdleHandler(deadline))
            conn.busy = False
            conns.append(conn)
        silent, request, eof, busy = conns
        pairs[1][1].sendall(b"POST /once HTTP/1.1\r\n")    # arrived while every thread was busy
        pairs[2][1].close()                                  # EOF: its thread closes it
        busy.busy = True
        assert idle_expired(conns, 1000.0, idle_timeout) == [silent]
        # Before the deadline nothing goes, input or not.
        assert idle_expired(conns, 1.0, idle_timeout) == []
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_sweep_leaves_a_request_sent_into_the_keep_alive_window_to_the_busy_thread():
    with Running(threads=1, idle_timeout=0.3) as r:
        with r.connect() as kept, r.connect() as slow:
            assert ask(kept, b"first") == b"first"
            slow.sendall(b"sleep 1\n")
            wait_until(lambda: r.worker.state.busy_threads == 1)
            kept.sendall(b"second\n")          # inside the window; the only thread is busy
            assert read_line(slow) == b"sleep 1"
            assert read_line(kept) == b"second"


# -- an idle worker sleeps ----------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 4])
def test_idle_worker_wakes_only_a_few_times_a_second(threads):
    with Running(threads=threads) as r:
        with r.connect() as c:
            for i in range(20):         # requests come in: the monitor looks every few ms
                assert ask(c, b"%d" % i) == b"%d" % i
        time.sleep(0.3)                 # past the monitor's linger
        before = r.worker.wakeups
        time.sleep(1.0)
        # 4 sweeps and a tick a second; the monitor's 1-5 ms looks made it 200+.
        assert r.worker.wakeups - before < 20
        with r.connect() as c:          # and it still wakes up for a request
            assert ask(c, b"after") == b"after"


# -- accept limits: a busy worker leaves what it cannot start in the kernel's queue --

def test_worker_with_siblings_leaves_a_queued_burst_it_cannot_start_to_them():
    # The burst is in the kernel's queue before the worker looks: the thread
    # that accepts the first must not take the rest in its batch.
    listeners = open_listeners(["127.0.0.1:0"], socket_mode=0o600)
    address = listeners[0].sock.getsockname()
    clients = [socket.create_connection(address, timeout=10) for _ in range(5)]
    for c in clients:
        c.sendall(b"block\n")
    worker = Worker(listeners, EchoHandler, threads=1, accept_limit=2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert EchoHandler.started.wait(10)
        assert worker.state.accepted == 2 and worker._paused   # the one running, one more
        EchoHandler.release.set()
        for c in clients:
            assert read_line(c) == b"block"
        assert worker.state.accepted == 5
    finally:
        EchoHandler.release.set()
        worker.stop(graceful=False)
        thread.join(10)
        for c in clients:
            c.close()
        for listener in listeners:
            listener.close()


def test_batch_accepted_connection_counts_in_hand_until_served_or_closed(tmp_path):
    # A unix socket: no TCP_DEFER_ACCEPT, so silent connections are accepted too.
    listeners = open_listeners([f"unix:{tmp_path}/s.sock"], socket_mode=0o600)
    address = listeners[0].sock.getsockname()
    clients = []
    for _ in range(3):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(10)
        c.connect(address)
        clients.append(c)
    clients[0].sendall(b"block\n")
    worker = Worker(listeners, EchoHandler, threads=1, accept_limit=3, idle_timeout=0.5)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert EchoHandler.started.wait(10)
        assert worker.state.accepted == 3 and worker._in_hand == 3 and worker._paused
        # The two silent ones reach their idle timeout: closed, no longer in hand.
        wait_until(lambda: worker._in_hand == 1)
        assert not worker._paused
        assert clients[1].recv(10) == b"" and clients[2].recv(10) == b""
        EchoHandler.release.set()
        assert read_line(clients[0]) == b"block"
        wait_until(lambda: worker._in_hand == 0)
    finally:
        EchoHandler.release.set()
        worker.stop(graceful=False)
        thread.join(10)
        for c in clients:
            c.close()
        for listener in listeners:
            listener.close()


def test_worker_holds_at_most_max_connections_the_rest_wait_in_the_kernels_queue():
    with Running(threads=3, max_connections=3) as r:
        held = [r.connect() for _ in range(3)]
        for c in held:
            c.sendall(b"sleep 0.5\n")
        wait_until(lambda: r.worker.state.accepted == 3 and r.worker._paused)
        late = r.connect()                 # completes in the kernel's listen queue
        late.sendall(b"late\n")
        # Paused with the three busy: the fourth stays in the kernel's queue.
        assert r.worker._paused and r.worker._open == 3 and r.worker.state.accepted == 3
        for c in held:
            assert read_line(c) == b"sleep 0.5"
            c.close()                      # slots free: the next one is taken
        assert read_line(late) == b"late"
        assert r.worker.state.accepted == 4
        late.close()


def test_default_max_connections_leaves_half_the_open_files_limit_to_the_app(monkeypatch):
    import resource
    from bridge.server import worker as worker_module
    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, 4096))
    assert worker_module.default_max_connections() == 128
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY,) * 2)
    assert worker_module.default_max_connections() > 1000


class _ExhaustedSocket:
    def accept(self):
        import errno
        raise OSError(errno.EMFILE, "Too many open files")


class _ExhaustedListener:
    name = "127.0.0.1:1"
    kind = "tcp"
    sock = _ExhaustedSocket()


def test_running_out_of_descriptors_on_accept_pauses_and_is_logged_once(caplog):
    worker = Worker([], EchoHandler, threads=1)
    with caplog.at_level("ERROR", logger="bridge.server"):
        for _ in range(50):
            worker._resume_at = 0.0
            assert worker._accept(_ExhaustedListener()) is None
            assert worker._paused
    [record] = [r for r in caplog.records if "Too many open files" in r.getMessage()]
    assert "ulimit -n" in record.getMessage()


def test_at_max_connections_the_longest_idle_connection_makes_room_for_a_new_one():
    with Running(threads=1, max_connections=2, idle_timeout=None) as r:
        oldest, recent = r.connect(), r.connect()
        assert ask(oldest, b"one") == b"one"
        assert ask(recent, b"two") == b"two"
        late = r.connect()                  # waits in the listen queue: the cap is reached
        late.sendall(b"late\n")
        assert read_line(late) == b"late"   # served, in a sweep or two, not never
        assert oldest.recv(10) == b""       # the longest idle one was closed for it
        for c in (oldest, recent, late):
            c.close()


def test_sweep_holds_a_lingering_connections_deadline_even_while_its_client_keeps_sending():
    # Closing gently, the handler only drops what still comes: nothing there
    # is a request, and a client that never stops sending must not keep it.
    from bridge.server.worker import Connection, idle_expired
    server, client = socket.socketpair()
    try:
        conn = Connection(server, _IdleHandler(100.0, lingering=True))
        conn.busy = False
        client.sendall(b"more of a refused body")
        assert idle_expired([conn], 1000.0, None) == [conn]
        assert idle_expired([conn], 1.0, None) == []
    finally:
        server.close()
        client.close()
