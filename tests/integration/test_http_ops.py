"""Operating bridge http: --reload, log rotation with SIGUSR1, and the README's quick start."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time

import requests

from support import ROOT, Process, public_tmpdir, stop_pid, wait_for_port
from support.http_proc import BridgeHTTP

APP_V1 = '''\
VERSION = "{version}"


def app(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


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


def test_sigusr1_reopens_rotated_access_and_error_logs():
    d = public_tmpdir("bridge-logs-")
    access, errors = d / "access.log", d / "error.log"
    with BridgeHTTP("--access-log", str(access), "--error-log", str(errors)) as server:
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
