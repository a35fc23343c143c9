"""Finding processes by a marker: what a test started must be gone when it says so.

A script under test exports a unique ``MARK`` value (or passes it as an
argument); every process it starts, however deep, carries it in
``/proc/PID/environ`` or ``/proc/PID/cmdline``, so leftovers are found even
after they were reparented to init.
"""
from __future__ import annotations

import os
import time
import uuid


def new_marker() -> str:
    return "bridge-mark-" + uuid.uuid4().hex


def processes_with(marker: str) -> list:
    """Pids of live (not zombie) processes whose command line or environment holds ``marker``."""
    needle = marker.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                text = f.read()
            with open(f"/proc/{name}/environ", "rb") as f:
                text += f.read()
        except OSError:
            continue
        if needle in text:
            found.append(int(name))
    return found


def wait_gone(marker: str, timeout: float = 10.0) -> list:
    """Poll until no process carries ``marker``; the survivors if some remain at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_with(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_marked(marker: str) -> None:
    """Cleanup whatever happened: never leave a marked process behind."""
    import signal
    for pid in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def children_of(pid: int) -> set:
    """The live child processes of ``pid`` (from /proc)."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] not in ("Z", "X") and int(fields[1]) == pid:
            found.add(int(name))
    return found
