"""A private Apache for the FastCGI tests (mod_proxy_fcgi, mod_fcgid).

Own ServerRoot in a public temp dir, modules loaded from
/usr/lib/apache2/modules, a high port, started with setsid (Apache signals
its whole process group when it stops) and stopped by PID.  The
site-specific part of the config is a file from apache/ with its
``{placeholders}`` filled in (:func:`support.nginx.include_file`).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from support import Process, public_tmpdir, require_binary, wait_for_port

MODULES = "/usr/lib/apache2/modules"

MAIN_CONF = """\
ServerRoot {dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
DefaultRuntimeDir {dir}
ErrorLog {dir}/error.log
LogLevel {log_level}
LogFormat "%h %r %>s %b" simple
CustomLog {dir}/access.log simple
{modules}
User www-data
Group www-data
StartServers 1
ServerLimit 2
ThreadsPerChild 32
MaxRequestWorkers 64
{body}
"""


class Apache:
    def __init__(self, directory: Path, port: int, process: Process) -> None:
        self.dir = directory
        self.port = port
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        self.process.stop(signal.SIGTERM, timeout=15)


def start_apache(body: str, port: int, modules: list, *, directory: Path | None = None,
                 log_level: str = "warn") -> Apache:
    """Apache with ``modules`` (names like ``proxy_fcgi``) and ``body`` as its site config."""
    binary = require_binary("apache2", "httpd")
    directory = directory or public_tmpdir("bridge-apache-")
    wanted = ["mpm_event", "authz_core", "authn_core", *modules]
    lines = []
    for name in dict.fromkeys(wanted):
        path = f"{MODULES}/mod_{name}.so"
        if not os.path.exists(path):
            raise RuntimeError(f"Apache module {path} is missing (apt-get install the package providing it)")
        lines.append(f"LoadModule {name}_module {path}")
    conf = directory / "httpd.conf"
    conf.write_text(MAIN_CONF.format(dir=directory, port=port, body=body, log_level=log_level,
                                     modules="\n".join(lines)))
    env = {"PATH": os.environ.get("PATH", "") + ":/usr/sbin", "LANG": "C"}
    process = Process([binary, "-f", str(conf), "-DFOREGROUND"], env=env, cwd=str(directory),
                      log=directory / "apache.out", new_session=True)
    try:
        wait_for_port(port, proc=process.proc)
    except Exception:
        output = process.output()
        process.stop()
        errors = (directory / "error.log").read_text(errors="replace") if (directory / "error.log").exists() else ""
        raise RuntimeError(f"Apache did not start:\n{output}\n{errors}")
    return Apache(directory, port, process)
