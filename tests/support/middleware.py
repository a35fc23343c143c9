"""Front doors for the middleware integration tests: ``bridge http`` alone, or
nginx → ``bridge fcgi``, both started privately and stopped by PID.

``front_door(kind, *bridge_args)`` returns a :class:`FrontDoor` whose
``.url`` a client talks to and whose ``.bridge`` is the bridge process (for
its log and its memory).
"""
from __future__ import annotations

import socket
from pathlib import Path

from support import (ROOT, Process, bridge_command, bridge_env, free_port, public_tmpdir,
                     wait_for_path, wait_for_port)
from support.nginx import include_file, start_nginx

KINDS = ("http", "nginx-fcgi")
FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"


class FrontDoor:
    def __init__(self, kind: str, bridge: Process, url: str, nginx=None) -> None:
        self.kind = kind
        self.bridge = bridge
        self.url = url
        self.nginx = nginx
        host, _, port = url.rpartition("//")[2].partition(":")
        self.address = (host, int(port))

    def log(self) -> str:
        text = self.bridge.output()
        if self.nginx is not None:
            text += "\n--- nginx error.log ---\n" + self.nginx.error_log()
        return text

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        self.bridge.stop()


def front_door(kind: str, *bridge_args: str, nginx_conf: str = "docs/middleware-nginx-fcgi.conf",
               **placeholders: str) -> FrontDoor:
    env = bridge_env()
    if kind == "http":
        port = free_port()
        bridge = Process(bridge_command("http", *bridge_args, "--bind", f"127.0.0.1:{port}"), env=env)
        try:
            wait_for_port(port, proc=bridge.proc)
        except Exception:
            output = bridge.output()
            bridge.stop()
            raise RuntimeError(f"bridge http did not start:\n{output}") from None
        return FrontDoor(kind, bridge, f"http://127.0.0.1:{port}")
    if kind == "nginx-fcgi":
        directory = public_tmpdir("bridge-mw-")
        sock = directory / "bridge.sock"
        bridge = Process(bridge_command("fcgi", *bridge_args, "--bind", f"unix:{sock}", "--socket-mode", "666"),
                         env=env)
        try:
            wait_for_path(str(sock), proc=bridge.proc)
        except Exception:
            output = bridge.output()
            bridge.stop()
            raise RuntimeError(f"bridge fcgi did not start:\n{output}") from None
        port = free_port()
        try:
            nginx = start_nginx(include_file(ROOT / nginx_conf, port=port, socket=sock,
                                             fastcgi_params=FASTCGI_PARAMS, **placeholders), port)
        except Exception:
            bridge.stop()
            raise
        return FrontDoor(kind, bridge, nginx.url, nginx)
    raise ValueError(kind)


def raw_request(address: tuple, head: bytes, timeout: float = 10.0) -> bytes:
    """Send ``head`` as is (no client normalises the target) and read until close."""
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(head)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def split_response(raw: bytes) -> tuple:
    """``(status code, {lower name: value}, body)`` of a raw HTTP/1.1 response, chunked decoded."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers: dict = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = dechunk(body)
    return code, headers, body


def dechunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2:]
    return b"".join(out)


def memory_kib(pid: int) -> dict:
    """``{"VmRSS": kib, "VmHWM": kib}`` of a process (Linux /proc)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


class Gate:
    """A directory of files an app waits for (see ``support.middleware_apps.events``)."""

    def __init__(self) -> None:
        self.dir = public_tmpdir("bridge-gate-")

    def open(self, n: int) -> None:
        (self.dir / f"gate-{n}").touch()

    def open_all(self, count: int) -> None:
        for i in range(count):
            self.open(i)
