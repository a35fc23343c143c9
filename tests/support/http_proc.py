"""A real ``bridge http`` process for integration tests: own port or socket, stopped by PID."""
from __future__ import annotations

import os
import signal
import time

from support import Process, bridge_command, bridge_env, free_port, wait_for_path, wait_for_port

APP = "support.http_apps:app"


class BridgeHTTP:
    """``bridge http APP --bind ...`` started for one test (``with`` stops it)."""

    def __init__(self, *args: str, app: str = APP, bind: str | None = None, env: dict | None = None,
                 cwd=None, scheme: str = "http") -> None:
        self.port = None
        self.path = None
        if bind is None:
            self.port = free_port()
            bind = f"127.0.0.1:{self.port}"
        elif bind.startswith("unix:"):
            self.path = bind[5:]
        else:
            self.port = int(bind.rpartition(":")[2])
        self.bind = bind
        command = bridge_command("http", app, "--bind", bind, *args)
        self.process = Process(command, env=bridge_env(**(env or {})), cwd=cwd)
        self.pid = self.process.pid
        host = bind.rpartition(":")[0].strip("[]") if self.port else None
        self.url = f"{scheme}://{bind.rpartition(':')[0]}:{self.port}" if self.port else None
        try:
            if self.path:
                wait_for_path(self.path, proc=self.process.proc)
            else:
                wait_for_port(self.port, host=host, proc=self.process.proc)
        except Exception as exc:
            self.process.stop()
            raise RuntimeError(f"bridge http did not start:\n{self.process.output()}") from exc

    def output(self) -> str:
        return self.process.output()

    def wait_output(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the output:\n{self.output()}")

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return self.process.stop(sig)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
