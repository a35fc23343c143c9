"""Helpers for tests of the pre-fork master: start it, find its workers, load it.

A master is a real ``bridge http|fcgi`` process; its workers are found in
``/proc/PID/task/PID/children``; a bounded client loop counts every failure.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import pytest
from pathlib import Path

from support import Process, bridge_command, bridge_env, free_port, public_tmpdir, wait_for_port


def children(pid: int) -> set:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


def wait_for(predicate, timeout: float = 20.0, what: str = "condition", interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(interval)


def get(port: int, path: str = "/", timeout: float = 30.0, host: str = "127.0.0.1") -> tuple:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Master:
    """``bridge http support.pm_apps:app --workers N ...`` on a free port, with a status page."""

    def __init__(self, *args: str, command: str = "http", app: str = "support.pm_apps:app",
                 bind: str | None = None, workers: int = 2, wait: bool = True, env=None) -> None:
        self.dir = public_tmpdir("bridge-pm-")
        self.port = free_port()
        self.bind = bind or f"127.0.0.1:{self.port}"
        self.pidfile = self.dir / "master.pid"
        self.log = self.dir / "bridge.log"
        argv = bridge_command(command, app, "--bind", self.bind, "--workers", str(workers),
                              "--pid", str(self.pidfile), "--status-path", "/bridge-status",
                              "--ping-path", "/ping", *args)
        self.process = Process(argv, env=bridge_env(**(env or {})), log=self.log)
        self.pid = self.process.pid
        if wait:
            self.wait_ready(workers)

    def wait_ready(self, workers: int, timeout: float = 30.0) -> None:
        if self.bind.startswith("127.0.0.1:"):
            wait_for_port(self.port, proc=self.process.proc, timeout=timeout)
        wait_for(lambda: len(self.ready_workers()) == workers, timeout,
                 f"{workers} ready workers\n{self.output()}")

    def ready_workers(self) -> set:
        """Pids of the workers that answer, per the status page (only with a TCP bind)."""
        try:
            data = self.status()
        except (OSError, ValueError, http.client.HTTPException):
            return set()
        return {p["pid"] for p in data["processes"] if p["state"] == "ready"}

    def status(self) -> dict:
        status, body = get(self.port, "/bridge-status?json", timeout=10)
        if status != 200:
            raise ValueError(f"status page answered {status}")
        return json.loads(body)

    def children(self) -> set:
        return children(self.pid)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def output(self) -> str:
        return self.process.output()

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.process.proc.wait(timeout)

    def stop(self) -> None:
        kids = self.children()
        self.process.stop(signal.SIGTERM, timeout=20)
        for pid in kids:          # never leave a worker behind, whatever happened
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Load:
    """A bounded client loop: ``threads`` keep-alive clients GET ``path`` until stopped.

    Every non-2xx answer and every socket error is counted (with its text);
    a client reconnects after an error, as a browser would, and carries on.
    """

    def __init__(self, port: int, path: str = "/", threads: int = 4, limit: int = 1_000_000,
                 retry_reused: bool = False) -> None:
        self.port = port
        self.path = path
        self.retry_reused = retry_reused
        self.retried = 0
        self.ok = 0
        self.failures: list = []
        self.pids: set = set()
        self.limit = limit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set() and self.ok + len(self.failures) < self.limit:
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read()
                with self._lock:
                    if 200 <= resp.status < 300:
                        self.ok += 1
                        self.pids.add(body.strip())
                    else:
                        self.failures.append(f"{resp.status}: {body[:200]!r}")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                # retry_reused: a GET on a reused keep-alive connection the server
                # closed before answering (the idle close racing the next request,
                # which RFC 9112 §9.3.1 lets a client retry) is sent again on a new
                # connection, as browsers do; any failure on a new one still counts.
                closed_unanswered = isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                     BrokenPipeError))
                with self._lock:
                    if self.retry_reused and reused and closed_unanswered:
                        self.retried += 1
                    else:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wait_for_requests(self, n: int, timeout: float = 60.0) -> None:
        start = self.ok
        wait_for(lambda: self.ok - start >= n or self.failures, timeout, f"{n} more requests")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


@pytest.fixture
def masters():
    """Start ``Master`` processes in a test; every one is stopped after it (import it as a fixture)."""
    started = []

    def start(*args, **kw):
        m = Master(*args, **kw)
        started.append(m)
        return m
    yield start
    for m in started:
        m.stop()
