"""A private php-fpm for tests: own config, unix socket in a public temp dir, stopped by PID.

``start_php_fpm(docroot)`` returns a :class:`PhpFpm` with ``.socket`` (a
unix socket path, mode 0666), ``.log()`` and ``.stop()``.  The master runs
in the foreground (``-F``) as root with its pool workers as www-data (or as
the current user when not root), so the document root must be readable by
them: use ``support.public_tmpdir()``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from support import Process, public_tmpdir, require_binary, wait_for_path

CONFIG = """\
[global]
pid = {dir}/php-fpm.pid
error_log = {dir}/php-fpm.log
log_level = notice
daemonize = no

[test]
{user}
listen = {socket}
listen.mode = 0666
pm = static
pm.max_children = {children}
; keep the test's environment out of the scripts, like a real pool
clear_env = yes
catch_workers_output = yes
security.limit_extensions = .php
php_admin_value[display_errors] = stderr
php_admin_value[log_errors] = on
php_admin_value[output_buffering] = 0
"""


class PhpFpm:
    def __init__(self, dir: Path, socket: str, process: Process) -> None:
        self.dir = dir
        self.socket = socket
        self.process = process
        self.pid = process.pid

    def log(self) -> str:
        path = self.dir / "php-fpm.log"
        return (path.read_text(errors="replace") if path.exists() else "") + self.process.output()

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_php_fpm(children: int = 2) -> PhpFpm:
    binary = require_binary("php-fpm8.2", "php-fpm")
    directory = public_tmpdir("bridge-php-fpm-")
    socket = str(directory / "php-fpm.sock")
    user = "user = www-data\ngroup = www-data" if os.geteuid() == 0 else ""
    (directory / "php-fpm.conf").write_text(
        CONFIG.format(dir=directory, socket=socket, user=user, children=children))
    process = Process([binary, "-F", "-n", "-y", str(directory / "php-fpm.conf")],
                      log=directory / "stdout.log")
    try:
        wait_for_path(socket, proc=process.proc)
    except Exception:
        output = process.output()
        process.stop()
        raise RuntimeError(f"php-fpm did not start:\n{output}") from None
    return PhpFpm(directory, socket, process)


def php_docroot(fixtures: Path) -> Path:
    """A copy of the PHP fixtures in a directory www-data can read."""
    root = public_tmpdir("bridge-php-root-")
    shutil.copytree(fixtures, root, dirs_exist_ok=True)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return root
