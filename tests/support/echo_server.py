"""A line-echo protocol handler for testing bridge.server without FastCGI or HTTP.

Each ``\\n``-terminated line is one request, answered with the same line.
Commands: ``sleep S`` sleeps S seconds before answering, ``block`` waits
for ``EchoHandler.release`` (an Event the test sets), ``raise`` makes the
handler fail, ``pid`` answers the worker's pid, ``quit`` closes.

Run as a program it serves with ``bridge.server.serve``:
``python -m support.echo_server --bind 127.0.0.1:PORT [bridge options]``.
"""
from __future__ import annotations

import os
import threading
import time

from bridge.server.worker import recv_available


class EchoHandler:
    release = threading.Event()
    started = threading.Event()

    def __init__(self, sock, addr, listener, state) -> None:
        self.sock = sock
        self.state = state
        self.buf = b""
        self.idle_deadline = None
        self.closed = False

    def on_readable(self) -> bool:
        while True:
            data = recv_available(self.sock)
            if data is None:
                return True
            if not data:
                return False
            self.buf += data
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if line == b"quit":
                    return False
                if not self.serve(line):
                    return False

    def serve(self, line: bytes) -> bool:
        self.state.request_started({"REQUEST_METHOD": "ECHO", "REQUEST_URI": line.decode("latin-1")})
        try:
            if line.startswith(b"sleep "):
                time.sleep(float(line[6:]))
            elif line == b"block":
                EchoHandler.started.set()
                EchoHandler.release.wait(30)
            elif line == b"raise":
                raise RuntimeError("asked to fail")
            elif line == b"pid":
                line = str(os.getpid()).encode()
            self.sock.sendall(line + b"\n")
        finally:
            self.state.request_finished()
        return True

    def close(self) -> None:
        self.closed = True


def factory_builder(app, config):
    return EchoHandler


def main(argv=None) -> int:
    import sys
    from bridge.config import Config
    from bridge.cli import build_parser
    args = build_parser().parse_args(["fcgi", "support.echo_server:app", *(argv or sys.argv[1:])])
    values = {k: v for k, v in vars(args).items() if k != "command"}
    config = Config.build("fcgi", values)
    from bridge.server import serve
    return serve(config, factory_builder, scheme="echo")


def app(environ, start_response):   # never called: the echo protocol has no WSGI side
    start_response("200 OK", [])
    return [b""]


if __name__ == "__main__":
    raise SystemExit(main())
