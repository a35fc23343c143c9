"""A socket on fd 0 (FastCGI 1.0 §2.2), and libfcgi's cgi-fcgi as an independent client.

The shipped cgi-bin/demo.cgi (``from bridge import run; run(app)``) is run,
unchanged, by spawn-fcgi (unix and TCP) and by Apache mod_fcgid with
apache/fastcgi-fcgid.conf: it finds a listening socket on fd 0 and serves
FastCGI.  cgi-fcgi, the libfcgi reference client, talks to ``bridge fcgi``.
"""
import hashlib
import http.client
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import (ROOT, Process, bridge_env, free_port, public_tmpdir, require_binary,
                     wait_for_port)
from support.apache_fcgi import start_apache
from support.fastcgi import Client, get_params, start_bridge_fcgi, wait_for_unix_socket
from support.nginx import include_file

DEMO_CGI = ROOT / "cgi-bin" / "demo.cgi"


def spawn_fcgi(*where: str) -> Process:
    """spawn-fcgi -n (no fork: it execs the script, so its PID is the script's)."""
    binary = require_binary("spawn-fcgi")
    assert DEMO_CGI.exists(), f"{DEMO_CGI} is missing"
    return Process([binary, "-n", *where, "--", str(DEMO_CGI)], env=bridge_env())


def test_demo_cgi_under_spawn_fcgi_on_a_unix_socket_serves_fastcgi():
    tmp = public_tmpdir("bridge-spawn-")
    sock = str(tmp / "demo.sock")
    proc = spawn_fcgi("-s", sock, "-M", "0600")
    try:
        wait_for_unix_socket(sock, timeout=15)
        with Client(sock) as client:
            for _ in range(3):      # one process, request after request
                reply = client.request(get_params("/hello"), keep_conn=True)
                assert reply.head_and_body()[2] == b"Hello, world!\n"
            body = os.urandom(300_000)
            reply = client.request(get_params("/echo", method="POST", CONTENT_LENGTH=str(len(body))), body)
            assert reply.head_and_body()[2] == body
    finally:
        code = proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    assert code == 0, proc.output()   # SIGTERM: a graceful stop


def test_demo_cgi_under_spawn_fcgi_on_tcp_serves_fastcgi():
    port = free_port()
    proc = spawn_fcgi("-a", "127.0.0.1", "-p", str(port))
    try:
        wait_for_port(port, proc=proc.proc)
        with Client(("127.0.0.1", port)) as client:
            reply = client.request(get_params("/hello"))
            assert reply.head_and_body()[0] == "200 OK"
            assert reply.head_and_body()[2] == b"Hello, world!\n"
    finally:
        proc.stop()


def test_web_server_addrs_refuse_a_client_not_listed():
    port = free_port()
    proc = start_bridge_fcgi(f"127.0.0.1:{port}", FCGI_WEB_SERVER_ADDRS="10.9.8.7,::1")
    try:
        with Client(("127.0.0.1", port)) as client:
            client.send(b"")
            assert client.closed_by_server()
        assert "not in FCGI_WEB_SERVER_ADDRS" in proc.output()
    finally:
        proc.stop()


def test_web_server_addrs_admit_a_listed_ipv6_client():
    port = free_port("::1")
    proc = start_bridge_fcgi(f"[::1]:{port}", FCGI_WEB_SERVER_ADDRS="10.9.8.7, ::1")
    try:
        with Client(("::1", port)) as client:
            reply = client.request(get_params("/v6"))
        assert reply.head_and_body()[0] == "200 OK"
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def fcgid():
    tmp = public_tmpdir("bridge-fcgid-")
    run_dir = tmp / "run"
    run_dir.mkdir()
    run_dir.chmod(0o777)          # Apache's www-data makes its sockets there
    assert DEMO_CGI.exists(), f"{DEMO_CGI} is missing"
    # www-data must read the script and bridge: the checkout may sit under a
    # mode-700 directory, so both are copied to public places first.
    from support.apache import install_script, public_bridge_pythonpath
    cgi_bin = tmp / "cgi-bin"
    cgi_bin.mkdir()
    cgi_bin.chmod(0o755)
    install_script(DEMO_CGI, cgi_bin / DEMO_CGI.name, Path("/usr/bin/python3"))
    body = include_file(ROOT / "apache" / "fastcgi-fcgid.conf", cgi_bin=cgi_bin,
                        run_dir=run_dir, pythonpath=public_bridge_pythonpath())
    port = free_port()
    server = start_apache(body, port, ["fcgid", "alias"], log_level="info")
    server.port = port
    yield server
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def fcgid_get(server, method, target, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_demo_cgi_under_mod_fcgid_is_one_process_serving_many_requests(fcgid):
    for _ in range(5):
        assert fcgid_get(fcgid, "GET", "/fcgi-bin/demo.cgi/hello") == (200, b"Hello, world!\n")
    log = fcgid.error_log()
    # mod_fcgid started the script once, as a FastCGI server on the socket it passed as fd 0
    assert log.count("demo.cgi(") >= 1
    assert "Listening on unix:" in log


def test_demo_cgi_under_mod_fcgid_echoes_a_post_byte_exact(fcgid):
    body = os.urandom(1 << 20)
    status, data = fcgid_get(fcgid, "POST", "/fcgi-bin/demo.cgi/echo", body,
                             {"Content-Type": "application/octet-stream"})
    assert status == 200
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


def test_demo_cgi_under_mod_fcgid_sees_path_info_query_and_authorization(fcgid):
    status, page = fcgid_get(fcgid, "GET", "/fcgi-bin/demo.cgi/?who=me",
                             headers={"Authorization": "Basic dTpw"})
    assert status == 200
    assert b"<th>SCRIPT_NAME</th><td>/fcgi-bin/demo.cgi</td>" in page
    assert b"<th>QUERY_STRING</th><td>who=me</td>" in page
    assert b"<th>HTTP_AUTHORIZATION</th><td>Basic dTpw</td>" in page
    assert b"<th>fastcgi.role</th><td>RESPONDER</td>" in page


# --------------------------------------------------------------------------
# cgi-fcgi (libfcgi) as an independent client


def cgi_fcgi(address: str, environ: dict, body: bytes = b"") -> bytes:
    binary = require_binary("cgi-fcgi")
    env = {"PATH": os.environ.get("PATH", ""), **environ}
    done = subprocess.run([binary, "-bind", "-connect", address], input=body, env=env,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bridge_unix():
    tmp = public_tmpdir("bridge-cgifcgi-")
    sock = str(tmp / "app.sock")
    proc = start_bridge_fcgi(f"unix:{sock}")
    yield sock
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_cgi_fcgi_gets_the_environ_it_sent(bridge_unix):
    import json
    out = cgi_fcgi(bridge_unix, {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/app", "PATH_INFO": "/p",
                                 "QUERY_STRING": "a=b", "SERVER_NAME": "example.org",
                                 "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
                                 "HTTP_X_CUSTOM": "yes"})
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK\r\n")
    env = json.loads(body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/app", "/p", "a=b")
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["HTTP_X_CUSTOM"]) == ("example.org", "8080", "yes")


def test_cgi_fcgi_posts_two_mib_byte_exact(bridge_unix):
    body = os.urandom(2 << 20)
    out = cgi_fcgi(bridge_unix, {"REQUEST_METHOD": "POST", "PATH_INFO": "/echo",
                                 "CONTENT_LENGTH": str(len(body)),
                                 "CONTENT_TYPE": "application/octet-stream"}, body)
    head, _, data = out.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert data == body
