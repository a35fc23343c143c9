"""docs/nginx.md's quick start, run as written, with real nginx (issue 17).

The guide's commands (the socket directory made with ``install -d``, bridge
with ``--socket-mode``, ``--user``, ``--group``), its whole nginx file
(docs/nginx/fastcgi-quickstart.conf, the inside of ``http {}`` as conf.d
files are) with nginx's workers as ``www-data`` like Debian's nginx.conf,
and its systemd unit's ``ExecStart=`` run as systemd would.  Only what a test
cannot use is replaced: the paths under /run and /srv (a private directory),
the app (a test app), the app's user (``nobody``, which exists everywhere;
the guide's ``useradd`` is not run) and port 80.

The mistake the guide warns about is run too: without ``--socket-mode``
nginx gets EACCES, which bridge cannot see, so its start-up line must say it.
"""
from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support import Process, bridge_env, free_port, public_tmpdir, require_binary, wait_for_path
from support.doc_commands import doc_command, doc_commands, shlex_bridge_argv
from support.fastcgi import wait_for_unix_socket
from support.nginx import start_nginx

ROOT = Path(__file__).resolve().parents[2]
DOC = "docs/nginx.md"
CONF = ROOT / "docs" / "nginx" / "fastcgi-quickstart.conf"
APP_USER = "nobody"
WEB_USER = "www-data"


class Deployment:
    """One run of the quick start in a private directory: bridge, then nginx in front."""

    def __init__(self) -> None:
        self.dir = public_tmpdir("bridge-quickstart-")
        self.run = self.dir / "run" / "myproject"
        self.sock = self.run / "app.sock"
        self.static = self.dir / "srv" / "myproject" / "static"
        self.static.mkdir(parents=True)
        (self.static / "hello.txt").write_text("static hello\n")
        for path in (self.static.parent, self.static.parent.parent):
            path.chmod(0o755)
        self.bridge: Process | None = None
        self.nginx = None

    def start_bridge(self, argv: list) -> None:
        self.bridge = Process(argv, env=bridge_env())
        try:
            wait_for_path(str(self.sock), proc=self.bridge.proc)
            wait_for_unix_socket(str(self.sock))
        except Exception:
            raise RuntimeError(f"bridge did not start:\n{self.bridge.output()}")

    def start_nginx(self) -> None:
        port = free_port()
        directory = public_tmpdir("bridge-nginx-")
        shutil.copy("/etc/nginx/fastcgi_params", directory / "fastcgi_params")
        body = CONF.read_text()
        for old, new in {"listen 80;": f"listen 127.0.0.1:{port};",
                         "/run/myproject": str(self.run),
                         "/srv/myproject": str(self.static.parent)}.items():
            assert old in body, f"{CONF.name} no longer has {old!r}"
            body = body.replace(old, new)
        self.nginx = start_nginx(body, port, directory, user=WEB_USER)

    def get(self, target: str):
        conn = http.client.HTTPConnection("127.0.0.1", self.nginx.port, timeout=30)
        try:
            conn.request("GET", target, headers={"Host": "myproject.example.com"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def startup_log(self) -> str:
        return self.bridge.output()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        if self.bridge is not None:
            self.bridge.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def quick_start_commands(deployment: Deployment, *, drop: tuple = ()) -> tuple:
    """The guide's two commands, for ``deployment``; ``drop``: flags left out (the mistakes)."""
    mkdir = doc_command(DOC, "nginx-quick-start", 0,
                        literal={"-o myproject": f"-o {APP_USER}", "/run/myproject": deployment.run})
    serve = doc_command(DOC, "nginx-quick-start", 1,
                        literal={"myproject.wsgi:application": "support.fastcgi:inspect_app",
                                 "/run/myproject": deployment.run,
                                 "--user myproject": f"--user {APP_USER}"})
    for flag in drop:
        at = serve.index(flag)
        del serve[at:at + 2]
    return mkdir, serve


@pytest.fixture
def deployment():
    require_binary("nginx")
    d = Deployment()
    yield d
    d.stop()


def test_the_quick_start_as_written_serves_the_app_and_the_static_files(deployment):
    mkdir, serve = quick_start_commands(deployment)
    subprocess.run(mkdir, check=True, timeout=30)
    deployment.start_bridge(serve)
    deployment.start_nginx()
    status, body = deployment.get("/hello?x=1")
    assert status == 200, body
    env = json.loads(body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("", "/hello", "x=1")
    assert deployment.get("/static/hello.txt") == (200, b"static hello\n")
    assert "[error]" not in deployment.nginx.error_log()


def test_the_quick_start_logs_the_sockets_mode_and_owner_and_that_nginx_may_connect(deployment):
    mkdir, serve = quick_start_commands(deployment)
    subprocess.run(mkdir, check=True, timeout=30)
    deployment.start_bridge(serve)
    deployment.start_nginx()
    assert deployment.get("/")[0] == 200
    log = deployment.startup_log()
    assert (f"[INFO] unix:{deployment.sock}: mode 0660, owner {APP_USER}:{WEB_USER}; "
            f"directory {deployment.run}: mode 0750, owner {APP_USER}:{WEB_USER}; "
            f"{WEB_USER} may connect") in log, log
    assert "running as root" not in log and "[WARNING]" not in log, log


def test_without_socket_mode_and_user_nginx_gets_502_and_the_startup_log_says_why(deployment):
    # The report: --group www-data without --user, no --socket-mode:
    # the app ran as root and nginx answered 502 with nothing in bridge's log.
    mkdir, serve = quick_start_commands(deployment, drop=("--socket-mode", "--user"))
    subprocess.run(mkdir, check=True, timeout=30)
    deployment.start_bridge(serve)
    deployment.start_nginx()
    assert deployment.get("/")[0] == 502
    assert "Permission denied" in deployment.nginx.error_log()
    log = deployment.startup_log()
    assert (f"[WARNING] unix:{deployment.sock}: mode 0755, owner root:{WEB_USER}; "
            f"directory {deployment.run}: mode 0750, owner {APP_USER}:{WEB_USER}; "
            f"{WEB_USER} (the web server's user) cannot connect: the socket needs write "
            f"permission for it: --socket-mode 0660 --group {WEB_USER}") in log, log
    assert "[WARNING] running as root with a unix socket and no --user" in log, log


def unit_settings() -> dict:
    """The ``[Service]`` lines of the guide's systemd unit, as a dict."""
    settings = {}
    for line in doc_commands(DOC, "nginx-quick-start-unit"):
        key, sep, value = line.partition("=")
        if sep and not line.startswith("["):
            settings[key.strip()] = value.strip()
    return settings


def test_the_systemd_unit_as_systemd_runs_it_serves_without_root(deployment):
    unit = unit_settings()
    assert (unit["User"], unit["Group"], unit["RuntimeDirectory"]) == ("myproject", WEB_USER, "myproject")
    # RuntimeDirectory=: /run/NAME, owned by User=:Group=, mode RuntimeDirectoryMode=.
    subprocess.run(["install", "-d", "-o", APP_USER, "-g", unit["Group"],
                    "-m", unit["RuntimeDirectoryMode"], str(deployment.run)], check=True, timeout=30)
    line = unit["ExecStart"]
    for old, new in {"myproject.wsgi:application": "support.fastcgi:inspect_app",
                     "/run/myproject": str(deployment.run)}.items():
        assert old in line
        line = line.replace(old, new)
    argv = shlex_bridge_argv(line)
    # User=/Group=: the process starts with those ids and no supplementary groups.
    setpriv = require_binary("setpriv")
    deployment.start_bridge([setpriv, f"--reuid={APP_USER}", f"--regid={unit['Group']}",
                             "--clear-groups", "--", *argv])
    deployment.start_nginx()
    status, body = deployment.get("/")
    assert status == 200, body
    log = deployment.startup_log()
    assert (f"unix:{deployment.sock}: mode 0660, owner {APP_USER}:{WEB_USER}; "
            f"directory {deployment.run}: mode 0750, owner {APP_USER}:{WEB_USER}; "
            f"{WEB_USER} may connect") in log, log
    assert "[WARNING]" not in log, log
