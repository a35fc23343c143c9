"""bridge http over TLS (--certfile/--keyfile, --ca-certs) with certificates the test makes with openssl."""
from __future__ import annotations

import os
import socket
import ssl
import subprocess

import pytest
import requests

from support import public_tmpdir, require_binary
from support.http_apps import pattern
from support.http_proc import BridgeHTTP


def openssl(*args: str, cwd) -> None:
    out = subprocess.run([require_binary("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def certs():
    d = public_tmpdir("bridge-tls-")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "server.key", "-out", "server.pem", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    # A CA as a real one is made: with keyUsage (RFC 5280 §4.2.1.3, keyCertSign).
    # Python 3.13's default context sets VERIFY_X509_STRICT, which refuses a
    # client certificate whose CA has none (see docs/http.md, --ca-certs).
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=d)
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/O=Example/CN=alice", cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.pem", "-days", "2", cwd=d)
    return d


@pytest.fixture(scope="module")
def https(certs):
    with BridgeHTTP("--certfile", str(certs / "server.pem"), "--keyfile", str(certs / "server.key"),
                    scheme="https") as server:
        yield server


def test_https_request_sees_the_https_scheme(https, certs):
    r = requests.get(https.url + "/environ", verify=str(certs / "server.pem"), timeout=10)
    env = r.json()
    assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"].startswith("TLSv1.") and env["SSL_CLIENT_VERIFY"] == "NONE"
    assert f"Listening on https://127.0.0.1:{https.port}" in https.output()


def test_keep_alive_bodies_and_streaming_over_tls(https, certs):
    body = os.urandom(1024 * 1024 + 7)
    v = str(certs / "server.pem")   # per call: a Session's verify loses to REQUESTS_CA_BUNDLE
    with requests.Session() as s:
        ports = set()
        for _ in range(3):
            ports.add(s.get(https.url + "/environ", verify=v, timeout=10).json()["REMOTE_PORT"])
        assert len(ports) == 1
        assert s.post(https.url + "/echo", data=body, verify=v, timeout=30).content == body
        assert s.post(https.url + "/echo", data=iter([body[:1000], body[1000:]]), verify=v, timeout=30).content == body
        assert s.get(https.url + "/download?size=3000000&chunked=1", verify=v, timeout=30).content == pattern(3000000)
        assert s.get(https.url + "/file?size=2000000", verify=v, timeout=30).content == pattern(2000000)
        assert s.get(https.url + "/stream?n=3", verify=v, timeout=30).text == "chunk 0\nchunk 1\nchunk 2\n"


def test_plain_http_to_the_tls_port_is_dropped_and_the_server_goes_on(https, certs):
    with socket.create_connection(("127.0.0.1", https.port), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        data = b""
        try:
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        assert b"HTTP/1.1 200" not in data
    assert requests.get(https.url + "/version", verify=str(certs / "server.pem"), timeout=10).text == "one"


def test_client_certificates_are_required_with_ca_certs(certs):
    with BridgeHTTP("--certfile", str(certs / "server.pem"), "--keyfile", str(certs / "server.key"),
                    "--ca-certs", str(certs / "ca.pem"), scheme="https") as server:
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(server.url + "/version", verify=str(certs / "server.pem"), timeout=10)
        r = requests.get(server.url + "/environ", verify=str(certs / "server.pem"), timeout=10,
                         cert=(str(certs / "client.pem"), str(certs / "client.key")))
        env = r.json()
        assert env["SSL_CLIENT_VERIFY"] == "SUCCESS" and env["SSL_CLIENT_S_DN_CN"] == "alice"
        assert env["SSL_CLIENT_S_DN"] == "CN=alice,O=Example"


def test_unreadable_certificate_is_one_clear_line_and_status_2(certs):
    from support import Process, bridge_command, bridge_env
    proc = Process(bridge_command("http", "support.http_apps:app", "--bind", "127.0.0.1:1",
                                  "--certfile", str(certs / "missing.pem")), env=bridge_env())
    assert proc.proc.wait(30) == 2
    out = proc.output()
    assert "cannot load --certfile" in out and "Traceback" not in out
    proc.stop()


def test_tls_handshake_that_never_comes_is_cut_off_by_the_header_timeout(certs):
    with BridgeHTTP("--certfile", str(certs / "server.pem"), "--keyfile", str(certs / "server.key"),
                    "--header-timeout", "0.5", scheme="https") as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as c:
            c.sendall(b"\x16\x03\x01")   # the start of a ClientHello, and nothing more
            assert c.recv(100) == b""
        ctx = ssl.create_default_context(cafile=str(certs / "server.pem"))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as c:
                c.sendall(b"GET /version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"one")
