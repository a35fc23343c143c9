"""Helpers for tests of warm CGI (bridge.warm): find and stop the daemons a test started.

The daemons are detached (their own session, no parent but init), so a test
finds them by the private directory it gave them, which is on their command
line (``--socket DIR/KEY.sock``), and stops them by process id.
"""
from __future__ import annotations

import os
import signal
import time


def daemon_pids(warm_dir) -> list:
    """Process ids of the warm daemons whose socket is in ``warm_dir``."""
    marker = f"--socket\0{warm_dir}/".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"bridge.warm_daemon" in cmdline and marker in cmdline:
            pids.append(int(entry))
    return sorted(pids)


def wait_for_daemons(warm_dir, count: int, timeout: float = 15.0) -> list:
    """Wait until exactly ``count`` daemons run for ``warm_dir``; returns their pids."""
    deadline = time.monotonic() + timeout
    while True:
        pids = daemon_pids(warm_dir)
        if len(pids) == count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def stop_daemons(warm_dir) -> None:
    """SIGKILL every daemon of ``warm_dir`` (test teardown)."""
    for pid in daemon_pids(warm_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for_daemons(warm_dir, 0, timeout=5.0)
