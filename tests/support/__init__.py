"""Helpers the tests share: ports, private directories, real server processes.

Integration tests start real programs (nginx, Apache, bridge itself) as
private processes: own config in a temporary directory that the servers'
unprivileged workers (nobody, www-data) can read, a free high port, and a
stop by PID.  A missing program is a test failure, never a skip: CI
installs everything (.ci/run), so a missing binary is a broken machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def require_binary(name: str, *candidates: str) -> str:
    """The path of a program the test needs; fails the test when it is missing."""
    for candidate in (name, *candidates):
        path = shutil.which(candidate, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if path:
            return path
    pytest.fail(f"{name} is not installed: run .ci/run (or apt-get install it) before the tests",
                pytrace=False)


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_for_path(path: str, timeout: float = 15.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before creating {path}")
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear after {timeout}s")


def public_tmpdir(prefix: str = "bridge-test-") -> Path:
    """A temp dir that nobody/www-data can traverse (pytest's tmp_path is mode 700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def bridge_command(*args: str) -> list:
    """``python -m bridge ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "bridge", *args]


def bridge_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """A server started by a test: stopped by PID, its output kept for failure messages."""

    def __init__(self, args: list, *, env=None, cwd=None, log: Path | None = None,
                 new_session: bool = False, pass_fds=()) -> None:
        self.args = args
        self.log_path = log or Path(tempfile.mkstemp(prefix="bridge-proc-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=new_session,
                                     pass_fds=pass_fds)
        self.pid = self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Printed, so a failing test shows why (pytest shows captured output).
                name = signal.Signals(sig).name
                print(f"{self.args[:4]} (pid {self.pid}) did not stop within {timeout}s of {name}: "
                      f"killed.  Its output, last lines:\n{self.output()[-3000:]}")
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
