"""Warm CGI (bridge.warm) under a real Apache: daemons started, shared, retired and refused.

A private Apache (tests/support/apache.py: mod_cgid, then mod_cgi; scripts
run as www-data) serves a cgi-bin directory of small scripts, each
``run("probe:application", warm=True, warm_dir=WARM, ...)`` with its own
name, so each test has its own daemon (the daemon is per script and app).
The daemons run as www-data in the mode-700 directory WARM; the tests count
them by process id (tests/support/warm.py) and stop them at the end.

The same Apache serves ``cf.fcgi``, the zero-Python relay: libfcgi's
``cgi-fcgi`` as the script's interpreter, which starts a plain bridge
script with the listening socket on fd 0.

tests/integration/test_apache_cgi.py runs the CGI behaviour tests (environ,
bodies, streaming, HEAD, errors) a second time with its scripts made warm.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import ROOT, public_tmpdir, require_binary
from support.apache import public_bridge_python, start_apache
from support.warm import daemon_pids, private_dir_for, remove_spare_markers, stop_daemons, wait_for_daemons

PROBE_APP = '''\
import os, sys, time

VERSION = 1

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(30)
    info = {"pid": os.getpid(), "version": VERSION, "path": path,
            "run_once": environ["wsgi.run_once"], "uid": os.getuid()}
    body = __import__("json").dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''

SCRIPT = '''\
#!{python}
from bridge import run
run("{module}:application", warm=True, warm_dir={warm!r}, warm_idle={idle})
'''

CONF = '''\
ScriptAlias /cgi-bin/ "{root}/cgi-bin/"
<Directory "{root}/cgi-bin">
    AllowOverride None
    Options +ExecCGI
    Require all granted
</Directory>
'''

# The zero-Python relay (docs/cgi.md): cgi-fcgi connects to the socket, or
# starts the script with the listening socket on fd 0 when nobody listens.
CGI_FCGI = '''\
#!{cgi_fcgi} -f
-connect {sock} {script}
'''

PLAIN = '''\
#!{python}
from bridge import run
run("probe:application")
'''


@pytest.fixture(scope="module", params=["cgid", "cgi"], ids=["mod_cgid", "mod_cgi"])
def site(request):
    """The site under mod_cgid (event MPM) and again under mod_cgi (prefork MPM).

    They differ where the relay touches Apache: under mod_cgid the script's
    stdin is a socket from the cgid daemon, under mod_cgi a pipe from the
    worker; and mod_cgi's scripts are children of the serving process.
    """
    python = public_bridge_python()
    root = public_tmpdir("bw-site-")
    cgi_bin = root / "cgi-bin"
    cgi_bin.mkdir(mode=0o755)
    warm = private_dir_for(root / "warm")
    relay_dir = private_dir_for(root / "cf")
    (root / "ro").mkdir(mode=0o755)            # root's: www-data cannot make its directory there
    for name, module, warm_dir, idle in (
            ("first", "probe", warm, 60), ("many", "probe", warm, 60), ("idle", "probe", warm, 1),
            ("edit", "editable", warm, 60), ("kill", "probe", warm, 60),
            ("nowarm", "probe", root / "ro" / "w", 60)):
        (cgi_bin / f"{name}.cgi").write_text(SCRIPT.format(python=python, module=module,
                                                           warm=str(warm_dir), idle=idle))
    (cgi_bin / "probe.py").write_text(PROBE_APP)
    (cgi_bin / "editable.py").write_text(PROBE_APP)
    (root / "fcgi-app.py").write_text(PLAIN.format(python=python))
    (cgi_bin / "cf.fcgi").write_text(CGI_FCGI.format(cgi_fcgi=require_binary("cgi-fcgi"), sock=relay_dir / "app.sock", script=root / "fcgi-app.py"))
    for path in [*cgi_bin.iterdir(), root / "fcgi-app.py"]:
        path.chmod(0o755)
    # the fd-0 script finds the probe app beside the cgi-bin scripts
    (root / "probe.py").write_text(PROBE_APP)
    (root / "probe.py").chmod(0o644)
    mpm = "event" if request.param == "cgid" else "prefork"
    server = start_apache(CONF.format(root=root), modules=(request.param,), mpm=mpm)
    server.root = root
    server.warm = warm
    try:
        yield server
    finally:
        server.stop()
        stop_daemons(warm)
        remove_spare_markers(str(root))
        for pid in _pids_with(str(root / "fcgi-app.py")):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(server.dir, ignore_errors=True)


def _pids_with(text: str) -> list:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def get(server, target, timeout=60) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def probe(server, target) -> dict:
    status, body = get(server, target)
    assert status == 200, body
    return json.loads(body)


def test_the_first_request_starts_one_detached_daemon_and_later_requests_reuse_it(site):
    first = probe(site, "/cgi-bin/first.cgi/a")
    assert first["run_once"] is False and first["path"] == "/a"
    pids = {probe(site, f"/cgi-bin/first.cgi/{i}")["pid"] for i in range(5)}
    assert pids == {first["pid"]}
    assert first["pid"] in daemon_pids(site.warm)
    # www-data's, and outside Apache's session (a CGI timeout kills the script's group).
    assert first["uid"] == 33
    assert os.getsid(first["pid"]) not in (os.getsid(site.pid), site.pid)


def test_twenty_concurrent_first_requests_start_exactly_one_daemon(site):
    before = set(daemon_pids(site.warm))
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: probe(site, f"/cgi-bin/many.cgi/{i}"), range(20)))
    assert len({a["pid"] for a in answers}) == 1
    assert all(a["run_once"] is False for a in answers)
    assert set(daemon_pids(site.warm)) - before == {answers[0]["pid"]}


def test_an_idle_daemon_exits_and_the_next_request_starts_a_new_one(site):
    old = probe(site, "/cgi-bin/idle.cgi")["pid"]
    deadline = time.monotonic() + 15
    while old in daemon_pids(site.warm):
        assert time.monotonic() < deadline, "the idle daemon did not exit"
        time.sleep(0.2)
    new = probe(site, "/cgi-bin/idle.cgi")["pid"]
    assert new != old


def test_editing_the_app_file_is_picked_up_by_the_next_requests(site):
    assert probe(site, "/cgi-bin/edit.cgi")["version"] == 1
    module = site.root / "cgi-bin" / "editable.py"
    module.write_text(PROBE_APP.replace("VERSION = 1", "VERSION = 2"))
    deadline = time.monotonic() + 15
    while probe(site, "/cgi-bin/edit.cgi")["version"] != 2:       # every answer a 200 meanwhile
        assert time.monotonic() < deadline, "the edit was not picked up"
        time.sleep(0.2)


def test_another_uid_cannot_connect_to_the_daemon(site):
    probe(site, "/cgi-bin/first.cgi")
    sockets = [p for p in site.warm.iterdir() if p.suffix == ".sock"]
    assert sockets
    client = ("import os, socket, sys\n"
              "os.setgid(65534); os.setuid(65534)\n"
              "s = socket.socket(socket.AF_UNIX)\n"
              "try:\n"
              "    s.connect(sys.argv[1])\n"
              "except OSError as exc:\n"
              "    print(type(exc).__name__)\n"
              "else:\n"
              "    print('connected')\n")
    for sock in sockets:
        out = subprocess.run([sys.executable, "-c", client, str(sock)], capture_output=True, text=True,
                             timeout=30)
        assert out.stdout.strip() == "PermissionError", out


def test_a_daemon_killed_mid_request_gives_one_502_then_the_next_request_recovers(site):
    old = probe(site, "/cgi-bin/kill.cgi")["pid"]
    result = {}
    slow = threading.Thread(target=lambda: result.update(answer=get(site, "/cgi-bin/kill.cgi/sleep")))
    slow.start()
    time.sleep(1.5)                      # the request is in the app's sleep
    os.kill(old, signal.SIGKILL)
    slow.join(30)
    status, body = result["answer"]
    assert status == 502 and b"Traceback" not in body
    again = probe(site, "/cgi-bin/kill.cgi")
    assert again["pid"] != old and again["run_once"] is False


def test_when_the_daemon_cannot_start_every_request_is_served_as_plain_cgi(site):
    for i in range(4):
        answer = probe(site, f"/cgi-bin/nowarm.cgi/{i}")
        assert answer["run_once"] is True            # the plain gateway, in the script's process
    log = site.error_log()
    assert log.count("serving as plain CGI") == 1, log[-3000:]
    assert "cannot create" in log


def test_cgi_fcgi_as_the_interpreter_starts_the_script_on_fd_0_and_reuses_it(site):
    first = probe(site, "/cgi-bin/cf.fcgi/x")
    second = probe(site, "/cgi-bin/cf.fcgi/y")
    assert first["pid"] == second["pid"] and second["path"] == "/y"
    assert first["run_once"] is False                   # FastCGI, not a CGI run
    assert first["uid"] == 33


def test_the_docs_show_the_warm_one_line_change():
    doc = (ROOT / "docs" / "cgi.md").read_text()
    assert "run(APP, pythonpath=PYTHONPATH, warm=True)" in doc
    assert "#!/usr/bin/cgi-fcgi -f" in doc
