"""Processes, ports and directories for the benchmark (no pytest: it runs on its own).

Every server is started in its own session so that it and the workers it
forks can be stopped together by the group id of the process the harness
started, and by nothing broader.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def public_dir(prefix: str = "bridge-bench-") -> Path:
    """A temp dir nginx's nobody and Apache's www-data can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, proc: "Proc | None" = None, what: str = "server") -> None:
    """Polls ``check()`` until it is true; fails early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.exited():
            raise RuntimeError(f"{what} exited with status {proc.popen.returncode} before it was ready:\n"
                               f"{proc.tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s" + (f":\n{proc.tail()}" if proc else ""))


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A program the harness started: own session, output in a log file, stopped by group id."""

    def __init__(self, args: list, *, log: Path, env: dict | None = None, cwd: str | None = None) -> None:
        self.args = [str(a) for a in args]
        self.log_path = log
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(self.args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self.extra_pids: list[int] = []  # daemonized children (spawn-fcgi), stopped one by one

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        for pid in self.extra_pids:
            _signal_pid(pid, sig)
        if self.popen.poll() is None:
            _signal_group(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Workers that outlive their master (or spawn-fcgi's children) go too.
        _signal_group(self.pid, signal.SIGKILL)
        for pid in self.extra_pids:
            _wait_gone(pid, timeout)
            _signal_pid(pid, signal.SIGKILL)
        self._log.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _stat_fields(pid) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (None if gone).

    The command name may hold spaces and parentheses: split after the last ')'.
    So field 0 here is the state, 1 the parent, 11/12 utime/stime (man 5 proc
    numbers them 3, 4, 14, 15).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2:].split()


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of the processes ``pids`` (all their threads)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def run(args: list, *, timeout: float = 600, env: dict | None = None, check: bool = True,
        cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=check, cwd=cwd, stdin=subprocess.DEVNULL)
