"""Operating bridge http: --reload, log rotation with SIGUSR1, and the README's quick start."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from support import ROOT, Process, bridge_env, free_port, public_tmpdir, stop_pid, wait_for_port
from support.http_proc import BridgeHTTP
from support.prefork import wait_for as wait_until
from support.procs import children_of

APP_V1 = '''\
VERSION = "{version}"


def app(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def body_of(url: str) -> str | None:
    try:
        return requests.get(url, timeout=5).text
    except requests.RequestException:
        return None


def test_reload_serves_edited_code_and_keeps_the_old_app_on_a_syntax_error():
    d = public_tmpdir("bridge-reload-")
    module = d / "reloadable_app.py"
    module.write_text(APP_V1.format(version="v1"))
    with BridgeHTTP("--reload", "--chdir", str(d), app="reloadable_app:app") as server:
        url = server.url + "/"
        assert wait_until(lambda: body_of(url) == "v1", what="v1")
        time.sleep(0.05)
        module.write_text(APP_V1.format(version="v2"))
        wait_until(lambda: body_of(url) == "v2", what="the edit to be served")

        module.write_text(APP_V1.format(version="v3") + "\ndef broken(:\n")
        wait_until(lambda: "still serving the previous code" in server.output(), what="the reload failure")
        out = server.output()
        assert "SyntaxError" in out
        assert body_of(url) == "v2"

        module.write_text(APP_V1.format(version="v4"))
        wait_until(lambda: body_of(url) == "v4", what="the fixed code to be served")
        assert server.stop(signal.SIGINT) == 0


def test_a_stop_that_comes_with_a_reload_request_stops_the_supervisor_and_every_child():
    """INT right after HUP (or an edit): the stop wins, no child is started to be left serving.

    Both signals land in the same poll interval; CI once saw the supervisor
    start the reload's child anyway and SIGTERM it a millisecond after the
    fork, while it still had the supervisor's handlers: the TERM was lost
    and the child served on (the supervisor waited for it, 10 s and more).
    """
    d = public_tmpdir("bridge-reload-stop-")
    (d / "reloadable_app.py").write_text(APP_V1.format(version="v1"))
    for delay in (0.0, 0.05, 0.15, 0.3):
        with BridgeHTTP("--reload", "--chdir", str(d), app="reloadable_app:app") as server:
            wait_until(lambda: body_of(server.url + "/") == "v1", what="v1")
            wait_until(lambda: "Reloading on change" in server.output(), what="the supervisor's loop")
            children = children_of(server.pid)
            assert len(children) == 1, children
            server.send_signal(signal.SIGHUP)
            time.sleep(delay)
            server.send_signal(signal.SIGINT)
            try:
                code = server.process.proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            leftover = children_of(server.pid) | {pid for pid in children if os.path.exists(f"/proc/{pid}")}
            for pid in leftover:
                os.kill(pid, signal.SIGKILL)
            assert code == 0, f"not stopped 5 s after HUP+INT {delay}s apart:\n{server.output()}"
            assert not leftover, f"children left running: {leftover}"


FORK_THEN_SIGTERM = """
import os, signal, sys
real_fork = os.fork

def fork_then_sigterm():
    pid = real_fork()
    if pid == 0:
        # The supervisor's stop reaching the new child at once, before the
        # child's first line ran.
        os.kill(os.getpid(), signal.SIGTERM)
    return pid

os.fork = fork_then_sigterm
from bridge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_that_reaches_a_new_child_before_its_first_line_ends_it():
    """The supervisor's signals are blocked across fork(): a TERM sent to a child at once is not lost."""
    d = public_tmpdir("bridge-reload-fork-")
    (d / "reloadable_app.py").write_text(APP_V1.format(version="v1"))
    port = free_port()
    proc = Process([sys.executable, "-c", FORK_THEN_SIGTERM, "http", "reloadable_app:app",
                    "--bind", f"127.0.0.1:{port}", "--reload", "--chdir", str(d)], env=bridge_env())
    try:
        code = proc.proc.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    for pid in children_of(proc.pid):
        os.kill(pid, signal.SIGKILL)
    proc.stop(signal.SIGKILL)
    out = proc.output()
    assert code == 128 + signal.SIGTERM, out
    assert "Listening on" not in out


@pytest.mark.parametrize("mode", [(), ("--workers", "2"), ("--reload",), ("--reload", "--workers", "2")],
                         ids=["alone", "master", "reload", "reload-master"])
def test_sigusr1_reopens_rotated_access_and_error_logs(mode):
    """Whoever gets USR1 -- the one process, the master, --reload's supervisor -- the logs are reopened.

    (Under --reload the child starts with HUP and USR1 blocked until its
    handlers exist: a master that never unblocked them ignored USR1.)
    """
    d = public_tmpdir("bridge-logs-")
    access, errors = d / "access.log", d / "error.log"
    with BridgeHTTP("--access-log", str(access), "--error-log", str(errors), *mode) as server:
        if "--reload" in mode:
            wait_until(lambda: errors.exists() and "Reloading on change" in errors.read_text(),
                       what="the supervisor's loop")
        assert requests.get(server.url + "/version?first", timeout=10).status_code == 200
        wait_until(lambda: access.exists() and "?first" in access.read_text(), what="the first access line")
        access.rename(d / "access.log.1")
        errors.rename(d / "error.log.1")
        server.send_signal(signal.SIGUSR1)
        wait_until(access.exists, what="a new access log")
        assert requests.get(server.url + "/version?second", timeout=10).status_code == 200
        assert requests.get(server.url + "/error", timeout=10).status_code == 500
        wait_until(lambda: "?second" in access.read_text() and "/error" in access.read_text(),
                   what="the new access lines")
        wait_until(lambda: errors.exists() and "secret-detail" in errors.read_text(), what="the traceback")
    old = (d / "access.log.1").read_text()
    assert "?first" in old and "?second" not in old
    new = access.read_text()
    assert re.search(r'"GET /version\?second HTTP/1\.1" 200 3 ', new)
    assert re.search(r'"GET /error HTTP/1\.1" 500 \d+ ', new)
    assert "Listening on" in (d / "error.log.1").read_text()


def test_readme_quick_start_in_a_fresh_virtual_environment():
    """The README's first command, run as written (in a copy of the project)."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"```sh\n(.+?)\n```", readme, re.S)[1].strip()
    assert command.endswith("bridge http bridge.demo:app"), command
    d = public_tmpdir("bridge-quickstart-")
    for name in ("src", "scripts", "pyproject.toml", "README.md"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, d / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        else:
            shutil.copy(src, d / name)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8000)) != 0, "port 8000 is taken: the quick start needs it"
    # python3 here is Debian's, as on a fresh machine (not a pyenv shim).
    env = dict(os.environ, PATH="/usr/bin:/bin")
    env.pop("PYTHONPATH", None)
    shell = Process(["/bin/sh", "-c", command], env=env, cwd=str(d), new_session=True)
    try:
        wait_for_port(8000, timeout=240, proc=shell.proc)
        page = requests.get("http://127.0.0.1:8000/", timeout=10)
        assert page.status_code == 200 and "Hello from wsgi-bridge" in page.text
        assert "Listening on http://127.0.0.1:8000" in shell.output()
    finally:
        os.killpg(shell.pid, signal.SIGINT)
        try:
            shell.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(shell.pid, signal.SIGKILL)
        shell.stop()
    assert shlex.split(command)[0] == "python3"
    stop_pid(shell.pid)
    # The README then says the program is .venv/bin/bridge, on PATH once activated.
    assert "source .venv/bin/activate" in readme
    activated = subprocess.run(["/bin/bash", "-c", "source .venv/bin/activate && bridge --version"],
                               cwd=str(d), env=env, capture_output=True, text=True, timeout=60)
    assert activated.returncode == 0 and activated.stdout.startswith("wsgi-bridge "), activated.stderr
