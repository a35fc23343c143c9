"""The master as root (issue 21, items 2 and 5-8): pid file, --user, logs, signals at start.

Real ``bridge http|fcgi`` processes started as root with ``--user nobody``,
files owned by root with mode 0600, links planted where the master writes,
signals sent while the app is still being imported.
"""
from __future__ import annotations

import os
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import Process, bridge_command, bridge_env, free_port, public_tmpdir, wait_for_port
from support.prefork import children, get, wait_for

NOBODY = 65534


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the CI runs as root)")


@pytest.fixture
def tmp():
    path = public_tmpdir("bridge-priv-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs():
    started = []

    def start(argv, **kw):
        p = Process(argv, env=bridge_env(**kw.pop("env", {})), **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        kids = children(p.pid)
        p.stop(signal.SIGTERM, timeout=20)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def root_only(path: Path, text: str = "secret\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def uids(pid: int) -> set:
    line = [x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:")][0]
    return set(map(int, line.split()[1:]))


# -- item 2: the pid file ----------------------------------------------------------------------


PLANT_AND_EXEC = (
    "import os, sys\n"
    "os.symlink(sys.argv[1], f'{sys.argv[2]}.{os.getpid()}.tmp')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'bridge', *sys.argv[3:]])\n"
)


def test_master_never_writes_its_pid_through_a_link_at_the_temporary_name(tmp, procs):
    """The old code wrote PATH.PID.tmp with open(..., 'w'): exec keeps the pid, so plant it."""
    target = root_only(tmp / "root-only")
    pidfile = tmp / "run" / "bridge.pid"
    pidfile.parent.mkdir(mode=0o755)
    port = free_port()
    p = procs([sys.executable, "-c", PLANT_AND_EXEC, str(target), str(pidfile),
               "http", "support.pm_apps:app", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "--pid", str(pidfile)])
    wait_for_port(port, proc=p.proc)
    assert target.read_text() == "secret\n"
    assert pidfile.read_text() == f"{p.pid}\n"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    assert not pidfile.exists()


@pytest.mark.parametrize("setup, message", [
    ("world-writable", "is writable by others"),
    ("link", "is a symbolic link"),
])
def test_an_unsafe_pid_path_stops_the_start_with_one_line_and_status_2(tmp, procs, setup, message):
    target = root_only(tmp / "root-only")
    run = tmp / "run"
    run.mkdir()
    if setup == "world-writable":
        run.chmod(0o777)
    else:
        os.symlink(target, run / "bridge.pid")
    p = procs(bridge_command("http", "support.pm_apps:app", "--bind", f"127.0.0.1:{free_port()}",
                             "--workers", "1", "--pid", str(run / "bridge.pid")))
    assert p.proc.wait(30) == 2
    out = p.output().strip()
    assert message in out and "\n" not in out, out
    assert target.read_text() == "secret\n"
