"""A private php-fpm for tests: own config, unix socket in a public temp dir, stopped by PID.

``start_php_fpm()`` returns a :class:`PhpFpm` with ``.socket`` (a
unix socket path, mode 0666), ``.log()`` and ``.stop()``.  The master runs
in the foreground (``-F``) with the pool config of docs/composition-php-fpm.conf
(workers as www-data when started as root), so the document root must be readable by
them: use ``support.public_tmpdir()``.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from support import ROOT, Process, public_tmpdir, require_binary, wait_for_path
from support.nginx import include_file

CONFIG = ROOT / "docs" / "composition-php-fpm.conf"


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
    (directory / "php-fpm.conf").write_text(
        include_file(CONFIG, dir=directory, socket=socket, children=children))
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
