"""A private nginx: own config in a temp dir, a high port, stopped by PID.

``start_nginx(server_blocks)`` takes the ``server { ... }`` (and ``upstream``)
text for the ``http`` block, usually read from a file under ``docs/`` so that
the deployment guides show the very config the tests run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from support import public_tmpdir, require_binary, stop_pid, wait_for_port

MAIN_CONF = """\
{user}daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 100m;
    default_type application/octet-stream;
{body}
}}
"""


class Nginx:
    def __init__(self, directory: Path, port: int, proc: subprocess.Popen) -> None:
        self.dir = directory
        self.port = port
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_pid(self.proc.pid, signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def include_file(path: os.PathLike, **values: str) -> str:
    """A docs/ config snippet with its ``{placeholders}`` filled in."""
    text = Path(path).read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def start_nginx(body: str, port: int, directory: Path | None = None, user: str | None = None) -> Nginx:
    """nginx on ``body`` (the inside of ``http {}``); ``user``: its workers' user, as
    Debian's stock nginx.conf says ``user www-data;`` (default: nginx's own, nobody)."""
    binary = require_binary("nginx")
    directory = directory or public_tmpdir("bridge-nginx-")
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / sub).mkdir(exist_ok=True)
        os.chmod(directory / sub, 0o777)
    conf = directory / "nginx.conf"
    conf.write_text(MAIN_CONF.format(dir=directory, body=body, user=f"user {user};\n" if user else ""))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc=proc)
    except Exception:
        proc.kill()
        raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode(errors='replace') if proc.stderr else ''}"
                           f"\n{(directory / 'error.log').read_text(errors='replace') if (directory / 'error.log').exists() else ''}")
    return Nginx(directory, port, proc)
