"""WSGI apps the HTTP server tests run (in process, or as ``support.http_apps:app`` in a real bridge).

``/environ[/...]``    the environ's str values as JSON (plus wsgi.url_scheme, wsgi.input_terminated)
``/echo``             the request body, read in 64 KiB pieces (``?readline=1``: line by line)
``/echo-length``      the body length and a SHA-256, as text (for big uploads)
``/download?size=N``  N deterministic bytes (``?chunked=1``: streamed without Content-Length)
``/file?size=N``      N deterministic bytes through ``wsgi.file_wrapper`` (a real file: sendfile)
``/shrinking-file?size=N&to=M``  a file of N bytes through ``wsgi.file_wrapper``, cut to M
                      bytes after the gateway measured it (a file truncated during sendfile)
``/stream?n=N``       N chunks of ``chunk i\\n`` with a small pause, no Content-Length
``/ignore-body``      answers without reading the request body
``/error``            raises before start_response
``/error-late``       raises after the first chunk went out
``/server-header``    sets its own Server header
``/closing``          a generator that records when close() is called (``/closed`` reports)
``/version``          a module-level string (the --reload test edits a copy of this file)
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time

VERSION = "one"
PATTERN = bytes(range(256)) * 256   # 64 KiB


def pattern(size: int) -> bytes:
    reps, rest = divmod(size, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


_files: dict = {}
_files_lock = threading.Lock()
closed_events: list = []


def _query(environ) -> dict:
    return dict(p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p)


def _text(start_response, body: bytes, status: str = "200 OK", ctype: str = "text/plain"):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    q = _query(environ)
    if path == "/environ" or path.startswith("/environ/"):
        data = {k: v for k, v in environ.items() if isinstance(v, str)}
        data["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
        data["wsgi.input_terminated"] = environ.get("wsgi.input_terminated", False)
        data["wsgi.multithread"] = environ["wsgi.multithread"]
        return _text(start_response, json.dumps(data).encode(), ctype="application/json")
    if path == "/echo":
        stream = environ["wsgi.input"]
        if q.get("readline"):
            body = b"".join(iter(stream.readline, b""))
        else:
            parts = []
            while True:
                data = stream.read(65536)
                if not data:
                    break
                parts.append(data)
            body = b"".join(parts)
        return _text(start_response, body, ctype="application/octet-stream")
    if path == "/echo-length":
        h = hashlib.sha256()
        n = 0
        stream = environ["wsgi.input"]
        while True:
            data = stream.read(65536)
            if not data:
                break
            h.update(data)
            n += len(data)
        return _text(start_response, f"{n} {h.hexdigest()}".encode())
    if path == "/download":
        size = int(q.get("size", 1024))
        if q.get("chunked"):
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            body = pattern(size)
            return (body[i:i + 100_000] for i in range(0, len(body), 100_000))
        return _text(start_response, pattern(size), ctype="application/octet-stream")
    if path == "/file":
        size = int(q.get("size", 1024))
        with _files_lock:
            name = _files.get(size)
            if name is None:
                fd, name = tempfile.mkstemp(prefix="bridge-http-file-")
                os.write(fd, pattern(size))
                os.close(fd)
                _files[size] = name
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(name, "rb"), 65536)
    if path == "/shrinking-file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](
            ShrinkingFile(int(q.get("size", 200_000)), int(q.get("to", 1000))), 65536)
    if path == "/stream":
        n = int(q.get("n", 3))
        delay = float(q.get("delay", 0.01))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            for i in range(n):
                if i:
                    time.sleep(delay)
                yield f"chunk {i}\n".encode()
        return gen()
    if path == "/ignore-body":
        return _text(start_response, b"ignored\n")
    if path == "/error":
        raise RuntimeError("secret-detail-that-must-not-leak")
    if path == "/error-late":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def late():
            yield b"first part\n"
            raise RuntimeError("secret-late-detail")
        return late()
    if path == "/server-header":
        start_response("200 OK", [("Server", "my-app/1.0"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/closing":
        return Closing(start_response, int(q.get("size", 10_000_000)))
    if path == "/closed":
        return _text(start_response, str(len(closed_events)).encode())
    if path == "/version":
        return _text(start_response, VERSION.encode())
    return _text(start_response, b"Not Found\n", "404 Not Found")


class ShrinkingFile:
    """A temporary file of ``size`` bytes that truncates itself to ``to`` bytes on
    ``tell()``: the file wrapper path asks for fileno, fstat, then tell, so the
    length it announces is the old size and the send finds the file short."""

    def __init__(self, size: int, to: int) -> None:
        self.file = tempfile.TemporaryFile()
        self.file.write(pattern(size))
        self.file.flush()
        self.file.seek(0)
        self.to = to

    def fileno(self) -> int:
        return self.file.fileno()

    def tell(self) -> int:
        os.ftruncate(self.file.fileno(), self.to)
        return self.file.tell()

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def close(self) -> None:
        self.file.close()


class Closing:
    """A big streamed response whose close() is recorded (client disconnect test)."""

    def __init__(self, start_response, size: int) -> None:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        self.left = size

    def __iter__(self):
        while self.left > 0:
            n = min(self.left, 65536)
            self.left -= n
            yield PATTERN[:n]

    def close(self) -> None:
        closed_events.append(time.time())
