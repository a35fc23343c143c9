"""``bridge http``'s handler on the real Worker, in a background thread of the test process.

For tests that need the app and the server in one process (to look at what
the app saw, to count system calls, to use tiny timeouts) without starting a
subprocess.  The real ``bridge http`` command is tested in tests/integration.
"""
from __future__ import annotations

import socket
import threading

from bridge.config import Config
from bridge.server import make_worker
from bridge.server.listeners import open_listeners
from bridge.http.server import factory_builder


def http_config(**settings) -> Config:
    config = Config.build("http", {}, environ={})
    for name, value in settings.items():
        setattr(config, name, value)
    return config


class RunningHTTP:
    """``with RunningHTTP(app, threads=2, header_timeout=0.5) as server: server.request(...)``."""

    def __init__(self, app, bind: str = "127.0.0.1:0", **settings) -> None:
        self.config = http_config(**settings)
        self.listeners = open_listeners([bind], socket_mode=0o666)
        self.factory = factory_builder(app, self.config)
        self.worker = make_worker(self.listeners, self.factory, self.config)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()
        self.address = self.listeners[0].sock.getsockname()

    def connect(self, timeout: float = 10.0) -> socket.socket:
        family = self.listeners[0].sock.family
        c = socket.socket(family, socket.SOCK_STREAM)
        c.settimeout(timeout)
        c.connect(self.address)
        return c

    def stop(self) -> None:
        self.worker.stop(graceful=False)
        self.thread.join(10)
        for listener in self.listeners:
            listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Reader:
    """Reads responses off a client socket, keeping what follows one for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed; unparsed: {self.buf[:200]!r}")
        self.buf += data
        return data

    def response(self, head_only: bool = False) -> tuple:
        """(status line, {lower name: value}, body); handles Content-Length, chunked, close."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers: dict = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        status = lines[0]
        code = status.split()[1]
        if head_only or code[0] == "1" or code in ("204", "304"):
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._more()
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._more()
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._more()
                if size == 0:
                    self.buf = self.buf[2:]
                    return status, headers, body
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
        while True:
            data = self.sock.recv(65536)
            if not data:
                body, self.buf = self.buf, b""
                return status, headers, body
            self.buf += data


def read_response(sock: socket.socket, head_only: bool = False) -> tuple:
    return Reader(sock).response(head_only)


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset), reading what is left."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
