"""docs/cgi.md's interpreter advice, run as written (issue 17).

The guide builds the virtual environment with /usr/bin/python3 and checks it
as www-data with ``sudo -u www-data VENV/bin/python -c pass`` (``runuser``
where there is no sudo).  Proved both ways: the check passes on a venv of
/usr/bin/python3, and on a venv whose interpreter lives in a mode-700
directory (a pyenv build in root's home) the check fails with "Permission
denied", and Apache answers 500 with "End of script output before headers",
as the guide says.
"""
from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import ROOT, public_tmpdir, require_binary
from support.apache import install_script, public_bridge_python, start_apache
from support.doc_commands import doc_commands
from support.nginx import include_file

DOC = "docs/cgi.md"
DOC_VENV = "/srv/wsgi-bridge/venv"


def check_commands(venv: Path) -> list:
    """The guide's check commands for ``venv``, as argv lists; runuser where sudo is missing."""
    import shlex
    commands = []
    for line in doc_commands(DOC, "cgi-venv-check"):
        assert DOC_VENV in line, line
        argv = shlex.split(line.replace(DOC_VENV, str(venv)))
        assert argv[:3] == ["sudo", "-u", "www-data"], argv
        if shutil.which("sudo") is None:
            # the guide's alternative: runuser -u www-data -- COMMAND
            argv = [require_binary("runuser"), "-u", "www-data", "--", *argv[3:]]
        commands.append(argv)
    return commands


@pytest.fixture
def pyenv_like_venv():
    """A venv made by an interpreter in a mode-700 directory, as a pyenv build in /root is."""
    home = Path(public_tmpdir("bridge-home-"))
    home.chmod(0o700)
    (home / "python3").symlink_to("/usr/bin/python3")
    public = public_tmpdir("bridge-badvenv-")
    subprocess.run([str(home / "python3"), "-m", "venv", "--without-pip", str(public / "venv")],
                   check=True, timeout=60)
    yield public / "venv"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(public, ignore_errors=True)


def test_the_check_passes_on_a_venv_of_the_systems_python():
    venv = public_bridge_python().parent.parent     # /usr/bin/python3 -m venv, bridge installed
    assert (venv / "pyvenv.cfg").read_text().count("home = /usr/bin") == 1
    for argv in check_commands(venv):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", ""), (argv, proc.stderr)


def test_the_check_fails_with_permission_denied_on_a_venv_from_a_private_home(pyenv_like_venv):
    for argv in check_commands(pyenv_like_venv):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, (argv, proc.stderr)


def test_apache_says_end_of_script_output_before_headers_for_such_a_venv(pyenv_like_venv):
    root = public_tmpdir("bridge-cgi-badvenv-")
    cgi_bin = root / "cgi-bin"
    cgi_bin.mkdir()
    cgi_bin.chmod(0o755)
    install_script(ROOT / "cgi-bin" / "demo.cgi", cgi_bin / "demo.cgi", pyenv_like_venv / "bin" / "python")
    body = include_file(ROOT / "apache" / "cgi.conf", root=root, pythonpath="")
    server = start_apache(body, modules=("cgid",))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/cgi-bin/demo.cgi/hello")
        status = conn.getresponse().status
        conn.close()
        assert status == 500
        deadline = time.monotonic() + 10
        while "End of script output before headers" not in server.error_log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = server.error_log()
        assert "End of script output before headers" in log and "Permission denied" in log, log
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(server.dir, ignore_errors=True)
