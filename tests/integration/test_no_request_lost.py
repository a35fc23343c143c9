"""Every request completely sent gets exactly one response; a POST runs at most once.

Real ``bridge http`` / ``bridge fcgi`` processes, raw sockets, short
timeouts so the idle sweep, the accept limits and the pool's threads are all
exercised while requests are in flight.  The app (``support.lost_apps``)
names the request and the worker pid in every answer and records each POST
it runs in a directory the test reads afterwards.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from support import Process, bridge_command, bridge_env, free_port, wait_for_port
from support.fastcgi import Client, get_params, request_bytes

APP = "support.lost_apps:app"


def start(command: str, *args: str, lost_dir, preexec=None) -> tuple:
    """``bridge COMMAND`` serving the recording app on a free port: (Process, port)."""
    port = free_port()
    proc = Process(bridge_command(command, APP, "--bind", f"127.0.0.1:{port}", *args),
                   env=bridge_env(LOST_DIR=str(lost_dir)))
    try:
        wait_for_port(port, proc=proc.proc)
    except Exception:
        proc.stop()
        raise RuntimeError(f"bridge {command} did not start:\n{proc.output()}")
    return proc, port


def http_request(method: str, target: str, body: bytes = b"") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: test\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def read_http_response(reader) -> tuple:
    """``(status, body)`` of the next response on a buffered reader; raises EOFError at EOF."""
    line = reader.readline()
    if not line:
        raise EOFError("connection closed before a response")
    status = int(line.split()[1])
    length = 0
    while True:
        header = reader.readline()
        if header in (b"\r\n", b""):
            break
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = reader.read(length)
    return status, body


def recorded(lost_dir) -> dict:
    """``{post id: number of times it ran}``."""
    return {name: len(open(os.path.join(lost_dir, name)).read().split())
            for name in os.listdir(lost_dir)}


def fcgi_reply_body(reply) -> bytes:
    return reply.head_and_body()[2]


# -- the idle sweep (issue 15 item 4) -----------------------------------------------

def test_post_sent_into_the_keep_alive_window_while_the_thread_is_busy_is_answered(tmp_path):
    proc, port = start("http", "--threads", "1", "--keep-alive", "2", lost_dir=tmp_path)
    try:
        kept = socket.create_connection(("127.0.0.1", port), timeout=15)
        slow = socket.create_connection(("127.0.0.1", port), timeout=15)
        kept_reader, slow_reader = kept.makefile("rb"), slow.makefile("rb")
        kept.sendall(http_request("GET", "/?id=first"))
        assert read_http_response(kept_reader)[0] == 200     # the keep-alive window opens
        slow.sendall(http_request("GET", "/?id=slow&s=2.5"))  # the only thread: busy until +2.5 s
        time.sleep(0.5)
        kept.sendall(http_request("POST", "/?id=late", b"payload"))
        assert read_http_response(slow_reader)[0] == 200
        status, body = read_http_response(kept_reader)       # not reset at +2 s
        assert status == 200 and body.split()[1:] == [b"late", b"7"]
        assert recorded(tmp_path) == {"late": 1}
        kept.close()
        slow.close()
    finally:
        proc.stop()


def test_fastcgi_request_sent_at_the_idle_timeout_while_the_thread_is_busy_is_answered(tmp_path):
    proc, port = start("fcgi", "--threads", "1", "--idle-timeout", "1", lost_dir=tmp_path)
    try:
        with Client(("127.0.0.1", port), timeout=15) as kept, \
                Client(("127.0.0.1", port), timeout=15) as slow:
            first = kept.request(get_params("/", "id=first"), keep_conn=True)
            assert fcgi_reply_body(first).split()[1] == b"first"
            slow.send(request_bytes(get_params("/", "id=slow&s=2"), keep_conn=True))
            time.sleep(0.3)
            late = kept.request(get_params("/", "id=late", method="POST", CONTENT_LENGTH="3"),
                                b"abc", keep_conn=True)
            assert late.ended and fcgi_reply_body(late).split()[1:] == [b"late", b"3"]
        assert recorded(tmp_path) == {"late": 1}
    finally:
        proc.stop()
