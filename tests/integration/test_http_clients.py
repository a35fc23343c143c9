"""A real ``bridge http`` process and real clients: requests, curl, wrk and raw sockets."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess

import pytest
import requests

from support import free_port, public_tmpdir, require_binary
from support.http_apps import pattern
from support.http_proc import BridgeHTTP
from support.http_server import Reader, closed_by_peer, read_response


@pytest.fixture(scope="module")
def bridge():
    with BridgeHTTP("--threads", "4", "--limit-request-body", "64M") as server:
        yield server


def raw(bridge, data: bytes, timeout: float = 10.0) -> socket.socket:
    c = socket.create_connection(("127.0.0.1", bridge.port), timeout=timeout)
    c.sendall(data)
    return c


def test_start_prints_one_listening_line_and_ctrl_c_stops_cleanly():
    server = BridgeHTTP()
    out = server.wait_output("Listening on")
    assert len(re.findall(r"Listening on http://127\.0\.0\.1:%d\b" % server.port, out)) == 1
    assert requests.get(server.url + "/version", timeout=10).text == "one"
    assert server.stop(signal.SIGINT) == 0
    assert "Traceback" not in server.output()


def test_ipv6_loopback_bind():
    port = free_port("::1")
    with BridgeHTTP(bind=f"[::1]:{port}") as server:
        r = requests.get(f"http://[::1]:{port}/environ", timeout=10)
        assert r.json()["REMOTE_ADDR"] == "::1"
        assert f"http://[::1]:{port}" in server.output()


def test_requests_session_reuses_one_connection(bridge):
    with requests.Session() as session:
        ports = {session.get(bridge.url + "/environ", timeout=10).json()["REMOTE_PORT"] for _ in range(5)}
        r = session.post(bridge.url + "/echo", data=b"x" * 1000, timeout=10)
        assert r.content == b"x" * 1000
        ports.add(session.get(bridge.url + "/environ", timeout=10).json()["REMOTE_PORT"])
    assert len(ports) == 1


def test_ten_mib_upload_and_download_are_byte_exact(bridge):
    body = os.urandom(10 * 1024 * 1024)
    r = requests.post(bridge.url + "/echo", data=body, timeout=60)
    assert r.status_code == 200 and r.content == body
    r = requests.get(bridge.url + "/download?size=10485760", timeout=60)
    assert r.headers["Content-Length"] == "10485760" and r.content == pattern(10485760)
    r = requests.get(bridge.url + "/download?size=10485760&chunked=1", timeout=60)
    assert r.headers["Transfer-Encoding"] == "chunked" and r.content == pattern(10485760)
    r = requests.get(bridge.url + "/file?size=10485760", timeout=60)
    assert r.content == pattern(10485760)


def test_chunked_upload_from_a_generator(bridge):
    parts = [os.urandom(n) for n in (1, 1000, 70000, 5)]
    r = requests.post(bridge.url + "/echo", data=iter(parts), timeout=30)
    assert r.content == b"".join(parts)


def test_curl_expect_100_continue_and_chunked_upload(bridge):
    curl = require_binary("curl")
    tmp = public_tmpdir()
    data = os.urandom(3 * 1024 * 1024)
    (tmp / "body").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    out = subprocess.run([curl, "-sS", "-v", "-H", "Expect: 100-continue", "--data-binary", f"@{tmp}/body",
                          bridge.url + "/echo-length"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"HTTP/1.1 100 Continue" in out.stderr
    assert out.stdout.decode() == f"{len(data)} {digest}"
    out = subprocess.run([curl, "-sS", "-v", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp}/body",
                          bridge.url + "/echo-length"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert b"Transfer-Encoding: chunked" in out.stderr
    assert out.stdout.decode() == f"{len(data)} {digest}"


def test_raw_socket_pipelining(bridge):
    with raw(bridge, b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n" * 3 +
             b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
             b"GET /stream?n=2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") as c:
        reader = Reader(c)
        bodies = [reader.response()[2] for _ in range(5)]
        assert bodies == [b"one", b"one", b"one", b"abc", b"chunk 0\nchunk 1\n"]
        assert closed_by_peer(c)


SMUGGLING = [
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /version HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\nGET /version HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /version HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2;\nxx\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 1_0\r\n\r\n0123456789",
    b"GET /version HTTP/1.1\r\nHost: h\r\nHost: evil\r\n\r\n",
    b"GET /version HTTP/1.1\r\n\r\n",
    b"GET /version HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
    b"GET /version HTTP/1.1\r\nHost: h\r\nX: \x00\r\n\r\n",
    b"G\x00ET /version HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /version HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("attempt", SMUGGLING, ids=[f"attempt{i}" for i in range(len(SMUGGLING))])
def test_smuggling_attempt_gets_400_then_close_and_the_server_survives(bridge, attempt):
    with raw(bridge, attempt) as c:
        status, headers, _ = read_response(c)
        assert status.startswith("HTTP/1.1 400"), status
        assert headers["connection"] == "close"
        assert closed_by_peer(c)
    assert requests.get(bridge.url + "/version", timeout=10).text == "one"


def test_limits_are_answered_413_414_431(bridge):
    with raw(bridge, b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (65 * 1024 * 1024)) as c:
        assert read_response(c)[0].startswith("HTTP/1.1 413")
    with raw(bridge, b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n") as c:
        assert read_response(c)[0].startswith("HTTP/1.1 414")
    with raw(bridge, b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 101 + b"\r\n") as c:
        assert read_response(c)[0].startswith("HTTP/1.1 431")


def test_client_disconnect_mid_response_closes_the_result(bridge):
    before = int(requests.get(bridge.url + "/closed", timeout=10).text)
    c = raw(bridge, b"GET /closing?size=100000000 HTTP/1.1\r\nHost: h\r\n\r\n")
    c.recv(100)
    c.close()
    import time
    deadline = time.monotonic() + 15
    while int(requests.get(bridge.url + "/closed", timeout=10).text) == before:
        assert time.monotonic() < deadline, "close() was not called"
        time.sleep(0.05)


def test_wrk_256_keep_alive_connections_without_errors(bridge):
    wrk = require_binary("wrk")
    out = subprocess.run([wrk, "-t2", "-c256", "-d3s", "--timeout", "5s", bridge.url + "/version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Socket errors" not in out.stdout, out.stdout
    assert "Non-2xx" not in out.stdout, out.stdout
    assert re.search(r"(\d+) requests in", out.stdout) and int(re.search(r"(\d+) requests in", out.stdout)[1]) > 256


def test_environ_through_a_real_process(bridge):
    env = requests.get(bridge.url + "/environ/caf%C3%A9?q=%20", headers={"X-Test": "1"}, timeout=10).json()
    assert env["PATH_INFO"] == "/environ/caf\xc3\xa9" and env["QUERY_STRING"] == "q=%20"
    assert env["HTTP_X_TEST"] == "1" and env["SERVER_PORT"] == str(bridge.port)
    assert env["wsgi.multithread"] is True
    json.dumps(env)


def test_several_binds_at_once_tcp_and_unix():
    d = public_tmpdir("bridge-http-binds-")
    port = free_port()
    with BridgeHTTP("--bind", f"unix:{d}/app.sock", bind=f"127.0.0.1:{port}") as server:
        assert requests.get(f"http://127.0.0.1:{port}/version", timeout=10).text == "one"
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(f"{d}/app.sock")
            c.sendall(b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(c)[2] == b"one"
        out = server.output()
        assert f"http://127.0.0.1:{port}" in out and f"unix:{d}/app.sock" in out


def test_systemd_socket_activation_is_used_without_bind():
    from support import Process, bridge_command, bridge_env
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    os.set_inheritable(listener.fileno(), True)
    # systemd passes fd 3 and the LISTEN_PID of the process it starts: this
    # launcher puts the socket on fd 3 and execs (same pid) into bridge.
    fd = listener.fileno()
    launcher = ("import os, sys; os.dup2(%d, 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
                "os.environ['LISTEN_FDS'] = '1'; os.execv(sys.argv[1], sys.argv[1:])" % fd)
    command = bridge_command("http", "support.http_apps:app")
    proc = Process([command[0], "-c", launcher, *command], env=bridge_env(), pass_fds=(fd,))
    listener.close()
    try:
        try:
            r = requests.get(f"http://127.0.0.1:{port}/version", timeout=15)
        except requests.ConnectionError:
            raise AssertionError(proc.output()) from None
        assert r.text == "one"
        assert f"Listening on http://127.0.0.1:{port}" in proc.output()
    finally:
        proc.stop()


def test_slow_uploads_do_not_delay_a_normal_request_with_one_thread():
    """30 clients trickle their bodies (1 byte per round); a normal request sent after
    they started is answered before any of them has finished sending (an ordering,
    not a time), and every upload still gets its own body back."""
    import threading
    import time
    with BridgeHTTP("--threads", "1", "--workers", "1") as server:
        body = b"slowbody"
        uploaders = []
        for _ in range(30):
            c = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
            uploaders.append(c)
        rounds_done = [0]
        answered_after = []

        def normal():
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as c:
                c.sendall(b"GET /version HTTP/1.1\r\nHost: h\r\n\r\n")
                answer = read_response(c)
                answered_after.append((rounds_done[0], answer[2]))
        probe = None
        for i in range(len(body)):
            for c in uploaders:
                c.sendall(body[i:i + 1])
            rounds_done[0] = i + 1
            if i == 0:
                probe = threading.Thread(target=normal, daemon=True)
                probe.start()
            time.sleep(0.2)
        probe.join(30)
        for c in uploaders:
            status, _, echoed = read_response(c)
            assert status.startswith("HTTP/1.1 200") and echoed == body
            c.close()
        (rounds, version), = answered_after
        assert version == b"one"
        assert rounds < len(body), "the normal request waited for the slow uploads"
