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


def make_warm(script, warm_dir, **options) -> None:
    """Turn a cgi-bin script's last ``run(...)`` call into ``run(..., warm=True, warm_dir=...)``."""
    from pathlib import Path
    path = Path(script)
    lines = path.read_text().splitlines(keepends=True)
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].rstrip("\n")
        if line.startswith("run(") and line.endswith(")"):
            extra = "".join(f", {k}={v!r}" for k, v in {"warm": True, "warm_dir": str(warm_dir), **options}.items())
            lines[i] = line[:-1] + extra + ")\n"
            path.write_text("".join(lines))
            return
    raise ValueError(f"{script} has no run(...) line")


def private_dir_for(path, user: str = "www-data"):
    """A mode-700 directory owned by ``user`` (where Apache's scripts keep their daemons)."""
    import pwd
    from pathlib import Path
    entry = pwd.getpwnam(user)
    path = Path(path)
    path.mkdir(mode=0o700)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def remove_spare_markers(text: str) -> None:
    """Remove the /tmp failure markers (``bridge-warm-UID-KEY.failed``) whose reason mentions ``text``.

    A script without a usable private directory remembers its failure
    beside where the directory would be (bridge.warm); a test that makes
    that happen cleans up after itself.
    """
    import glob
    for path in glob.glob("/tmp/bridge-warm-*-*.failed"):
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    os.unlink(path)
        except OSError:
            pass
