"""A tiny raw FastCGI client for tests: build request bytes, read a response.

Built on the role-neutral record layer of ``bridge.fastcgi.protocol``;
everything else (what a web server would send) is spelled out here so the
tests show the bytes.
"""
from __future__ import annotations

import os
import socket

from bridge.fastcgi import protocol as p


def request_bytes(params: dict | list, stdin: bytes = b"", *, request_id: int = 1,
                  role: int = p.RESPONDER, keep_conn: bool = False,
                  data: bytes | None = None, end_stdin: bool = True) -> bytes:
    """BEGIN_REQUEST, PARAMS (+ empty), STDIN (+ empty) [, DATA (+ empty)]."""
    out = [p.encode_record(p.BEGIN_REQUEST, request_id,
                           p.encode_begin_request(role, p.KEEP_CONN if keep_conn else 0))]
    pairs = p.encode_pairs(params)
    if pairs:
        out.append(p.encode_record(p.PARAMS, request_id, pairs))
    out.append(p.encode_record(p.PARAMS, request_id, b""))
    if role != p.AUTHORIZER:
        if stdin:
            out.append(p.encode_record(p.STDIN, request_id, stdin))
        if end_stdin:
            out.append(p.encode_record(p.STDIN, request_id, b""))
    if data is not None:
        if data:
            out.append(p.encode_record(p.DATA, request_id, data))
        out.append(p.encode_record(p.DATA, request_id, b""))
    return b"".join(out)


class Reply:
    """What came back for one request id."""

    def __init__(self) -> None:
        self.stdout_parts: list = []    # joined on demand: += would copy quadratically
        self.stderr = b""
        self.app_status = None
        self.protocol_status = None
        self.stdout_records = 0
        self.stdout_closed = False

    @property
    def stdout(self) -> bytes:
        if len(self.stdout_parts) > 1:
            self.stdout_parts[:] = [b"".join(self.stdout_parts)]
        return self.stdout_parts[0] if self.stdout_parts else b""

    @property
    def ended(self) -> bool:
        return self.protocol_status is not None

    def head_and_body(self) -> tuple:
        """``(status_line_or_None, {lowercased header: value}, body)`` of the CGI response."""
        head, _, body = self.stdout.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        return headers.get("status"), headers, body

    def __repr__(self) -> str:
        return (f"Reply(stdout={self.stdout[:80]!r}..., stderr={self.stderr[:80]!r}, "
                f"app_status={self.app_status}, protocol_status={self.protocol_status})")


def parse_replies(records) -> dict:
    """Group records (from ``RecordReader.feed``) by request id into :class:`Reply` objects.

    Management records (id 0) are collected under key 0 as a list.
    """
    replies: dict = {}
    for rtype, rid, content in records:
        if rid == 0:
            replies.setdefault(0, []).append((rtype, content))
            continue
        reply = replies.setdefault(rid, Reply())
        if rtype == p.STDOUT:
            if content:
                reply.stdout_parts.append(content)
                reply.stdout_records += 1
            else:
                reply.stdout_closed = True
        elif rtype == p.STDERR:
            reply.stderr += content
        elif rtype == p.END_REQUEST:
            reply.app_status, reply.protocol_status = p.decode_end_request(content)
    return replies


class Client:
    """One FastCGI transport connection to a server (TCP ``(host, port)`` or a unix path)."""

    def __init__(self, address, timeout: float = 10.0) -> None:
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.reader = p.RecordReader()
        self.records: list = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, done) -> list:
        """Read records until ``done(records)`` is true or the server closes; return them all."""
        while not done(self.records):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.records += self.reader.feed(chunk)
        return self.records

    def request(self, params: dict, stdin: bytes = b"", *, request_id: int = 1, **kw) -> Reply:
        self.records = []
        self.send(request_bytes(params, stdin, request_id=request_id, **kw))
        self.read_until(lambda recs: any(t == p.END_REQUEST and r == request_id for t, r, _ in recs))
        return parse_replies(self.records).get(request_id, Reply())

    def closed_by_server(self) -> bool:
        """True when the server has closed the connection (reads EOF)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def get_params(path: str = "/", query: str = "", method: str = "GET", **extra: str) -> dict:
    """The PARAMS nginx's fastcgi_params would send for a simple request."""
    params = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REQUEST_URI": path + ("?" + query if query else ""),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
    }
    params.update(extra)
    return params


# --------------------------------------------------------------------------
# The app the FastCGI integration tests serve (``support.fastcgi:inspect_app``)


def inspect_app(environ, start_response):
    """``/echo``: the body back, byte-exact; ``/stream``: chunks, each sent
    only after the test created a file named by ``?token=`` (proves streaming
    without timing); anything else: the str environ as JSON, plus the body's
    length and sha256."""
    import hashlib
    import json
    import time
    path = environ.get("PATH_INFO", "")
    if path.endswith("/echo"):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body))),
                                  ("X-Input-Terminated", str(bool(environ.get("wsgi.input_terminated"))))])
        return [body]
    if path.endswith("/stream"):
        query = dict(part.partition("=")[::2] for part in environ.get("QUERY_STRING", "").split("&") if part)
        token = query.get("token", "")
        start_response("200 OK", [("Content-Type", "text/plain")])

        def chunks():
            yield b"first\n"
            deadline = time.monotonic() + 20
            while token and not os.path.exists(token) and time.monotonic() < deadline:
                time.sleep(0.01)
            yield b"second\n" if not token or os.path.exists(token) else b"gave up waiting\n"
        return chunks()
    if path.endswith("/error"):
        raise RuntimeError("inspect_app error (expected by the test)")
    body = environ["wsgi.input"].read()
    info = {k: v for k, v in environ.items() if isinstance(v, str)}
    info["wsgi.input_terminated"] = bool(environ.get("wsgi.input_terminated"))
    # bridge's wsgi.errors is one object per FastCGI connection: its id tells
    # the test whether two requests came over the same connection.
    info["connection"] = id(environ["wsgi.errors"])
    info["body_length"] = len(body)
    info["body_sha256"] = hashlib.sha256(body).hexdigest()
    out = json.dumps(info, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]




def start_bridge_fcgi(bind: str, *args: str, app: str = "support.fastcgi:inspect_app", **env: str):
    """``bridge fcgi APP --bind BIND`` as a Process, waited for; unix sockets made 0666."""
    from support import Process, bridge_command, bridge_env, wait_for_path, wait_for_port
    extra = ["--socket-mode", "666"] if bind.startswith("unix:") else []
    proc = Process(bridge_command("fcgi", app, "--bind", bind, *extra, *args), env=bridge_env(**env))
    try:
        if bind.startswith("unix:"):
            wait_for_path(bind[5:], proc=proc.proc)
            wait_for_unix_socket(bind[5:])
        else:
            host, _, port = bind.rpartition(":")
            wait_for_port(int(port), host.strip("[]"), proc=proc.proc)
    except Exception:
        out = proc.output()
        proc.stop()
        raise RuntimeError(f"bridge fcgi did not start:\n{out}")
    return proc


def wait_for_unix_socket(path: str, timeout: float = 10.0) -> None:
    """Until a connect succeeds (the file appears at bind(), before listen())."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        finally:
            s.close()


def authorizer_app(environ, start_response):
    """A FastCGI Authorizer (FastCGI 1.0 §6.3) for Apache mod_authnz_fcgi.

    Authentication: alice and bob, password "secret".  Authorization: alice
    only, with a Variable- header for the app behind.  Everything else is
    refused.  Under the Responder role it answers like :func:`inspect_app`."""
    if environ.get("fastcgi.role") != "AUTHORIZER":
        return inspect_app(environ, start_response)
    phase = environ.get("FCGI_APACHE_ROLE", "AUTHORIZER")
    user = environ.get("REMOTE_USER", "")
    if phase == "AUTHENTICATOR":
        ok = user in ("alice", "bob") and environ.get("REMOTE_PASSWD") == "secret"
    else:
        ok = user == "alice"
    if ok:
        start_response("200 OK", [("Variable-AUTHORIZED_BY", "bridge"), ("Content-Length", "0")])
        return [b""]
    body = b"refused by the bridge authorizer\n"
    start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class RunningFCGI:
    """``bridge fcgi``'s handler on the real Worker, in a background thread of the
    test process (like support.http_server.RunningHTTP): ``with RunningFCGI(app,
    threads=2) as server: Client(server.address)``."""

    def __init__(self, app, bind: str = "127.0.0.1:0", **settings) -> None:
        import threading
        from bridge.config import Config
        from bridge.fastcgi.server import factory_builder
        from bridge.server import make_worker
        from bridge.server.listeners import open_listeners
        self.config = Config.build("fcgi", {}, environ={})
        for name, value in settings.items():
            setattr(self.config, name, value)
        self.listeners = open_listeners([bind], socket_mode=0o666)
        self.worker = make_worker(self.listeners, factory_builder(app, self.config), self.config)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        self.address = self.listeners[0].sock.getsockname()[:2]

    def stop(self) -> None:
        self.worker.stop(graceful=False)
        self.thread.join(10)
        for listener in self.listeners:
            listener.close()

    def __enter__(self) -> "RunningFCGI":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
