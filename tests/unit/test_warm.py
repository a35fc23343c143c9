"""Warm CGI (bridge.warm): the relay's framing, its private directory, and the daemon it starts.

The framing tests are byte strings.  The others run a cgi-bin script the
way a web server does (a fresh process, the request in its environment) with
``run(APP, warm=True, warm_dir=...)`` in a private temporary directory, and
stop the daemons they started by process id (tests/support/warm.py).
The real-Apache behaviour is in tests/integration/test_cgi_warm.py.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from support import SRC, public_tmpdir
from support.warm import daemon_pids, remove_spare_markers, stop_daemons, wait_for_daemons

from bridge import warm
from bridge.fastcgi import protocol


# ---- framing: the relay's own encoder is protocol.py's, byte for byte ------------

@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 65535, 65536, 65543, 200000])
@pytest.mark.parametrize("rtype", [protocol.PARAMS, protocol.STDIN, protocol.BEGIN_REQUEST])
def test_relay_records_are_the_bytes_protocol_py_frames(rtype, size):
    content = bytes(i * 7 & 0xFF for i in range(size))
    assert warm.encode_record(rtype, content) == protocol.encode_record(rtype, 1, content)


def test_relay_name_value_pairs_are_the_bytes_protocol_py_encodes():
    pairs = [(b"A", b""), (b"N" * 127, b"v" * 128), (b"HTTP_X", b"\xff" * 70000), (b"", b"x")]
    assert warm.encode_pairs(pairs) == protocol.encode_pairs(pairs)


def test_the_request_head_decodes_to_a_responder_request_with_every_variable():
    environ = {b"REQUEST_METHOD": b"GET", b"QUERY_STRING": b"a=\xc3\xa4", b"HTTP_X": b"y" * 300}
    records = protocol.RecordReader().feed(warm.request_head(warm.cgi_params(environ)))
    assert records[0][:2] == (protocol.BEGIN_REQUEST, 1)
    assert protocol.decode_begin_request(records[0][2]) == (protocol.RESPONDER, 0)   # no KEEP_CONN
    assert [r[0] for r in records[1:]] == [protocol.PARAMS, protocol.PARAMS] and records[-1][2] == b""
    # An absent PATH_INFO is sent empty (RFC 3875: the same thing), so the
    # daemon does not derive it from REQUEST_URI.
    assert dict(protocol.decode_pairs(records[1][2])) == {**environ, b"PATH_INFO": b""}


# ---- the private directory ---------------------------------------------------------

def test_the_private_directory_is_made_mode_700(tmp_path):
    path = str(tmp_path / "w")
    assert warm.private_dir(path) == path
    assert os.stat(path).st_mode & 0o777 == 0o700


@pytest.mark.parametrize("kind", ["open to others", "a symlink", "another user's"])
def test_a_directory_others_could_enter_or_swap_is_refused_not_repaired(tmp_path, kind):
    path = tmp_path / "w"
    if kind == "a symlink":
        (tmp_path / "real").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "real")
    else:
        path.mkdir(mode=0o700)
        if kind == "open to others":
            path.chmod(0o755)
        else:
            os.chown(path, 65534, 65534)     # nobody (the tests run as root)
    with pytest.raises(warm.WarmUnavailable):
        warm.private_dir(str(path))
    if kind == "open to others":
        assert path.stat().st_mode & 0o777 == 0o755


def test_a_marker_hard_linked_to_another_file_is_neither_written_nor_trusted(tmp_path):
    """The spare marker lives in /tmp at a predictable name: a hard link planted there
    (fs.protected_hardlinks=0) must not make the script truncate the file it points to,
    nor silence the log by looking like a fresh failure."""
    from bridge import warm_start
    target = tmp_path / "precious"
    target.write_text("PRECIOUS\n")
    marker = tmp_path / "x.failed"
    os.link(target, marker)
    warm_start.touch(str(marker), "reason\n")
    assert target.read_text() == "PRECIOUS\n"
    assert not warm_start.recently_failed(str(marker))
    assert warm_start.note_failure(str(marker), "reason")
    assert target.read_text() == "PRECIOUS\n"


def test_two_apps_two_scripts_two_interpreters_never_share_a_daemon():
    keys = {warm.app_key("/cgi-bin/a.cgi", "app:a"), warm.app_key("/cgi-bin/a.cgi", "app:b"),
            warm.app_key("/cgi-bin/b.cgi", "app:a"), warm.app_key("/cgi-bin/a.cgi", "app:a", ["/x"])}
    assert len(keys) == 4
    assert warm.app_key("/cgi-bin/a.cgi", "app:a") == warm.app_key("/cgi-bin/a.cgi", "app:a")


# ---- a warm cgi-bin script, run the way a web server runs it ------------------------

PROBE_APP = '''\
import os, sys, time

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(30)
    info = {"pid": os.getpid(), "path": path, "query": environ["QUERY_STRING"],
            "script_name": environ["SCRIPT_NAME"], "run_once": environ["wsgi.run_once"],
            "env_keys": sorted(os.environ), "body": environ["wsgi.input"].read().decode("latin-1"),
            "modules": sorted(sys.modules) if path == "/modules" else [],
            "environ": {k: v for k, v in environ.items() if isinstance(v, str)},
            "umask": [int(line.split()[1], 8) for line in open("/proc/self/status") if line.startswith("Umask:")][0]}
    environ["wsgi.errors"].write("probe says hello on wsgi.errors\\n")
    body = __import__("json").dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''

SCRIPT = '''\
from bridge import run
run("probe:application", warm=True, warm_dir={dir!r}, warm_idle={idle})
'''


@pytest.fixture()
def site(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE_APP)
    warm_dir = tmp_path / "run"
    script = tmp_path / "app.cgi"
    script.write_text(SCRIPT.format(dir=str(warm_dir), idle=60))
    yield tmp_path
    stop_daemons(warm_dir)


def env_for(site, path=b"/", method=b"GET", **extra) -> dict:
    env = {b"PATH": os.environb.get(b"PATH", b"/usr/bin:/bin"),
           b"PYTHONPATH": b"%s:%s" % (str(SRC).encode(), str(site).encode()),
           b"GATEWAY_INTERFACE": b"CGI/1.1", b"SERVER_PROTOCOL": b"HTTP/1.1",
           b"SERVER_NAME": b"example.org", b"SERVER_PORT": b"80", b"REMOTE_ADDR": b"192.0.2.1",
           b"REQUEST_METHOD": method, b"SCRIPT_NAME": b"/cgi-bin/app.cgi", b"PATH_INFO": path,
           b"QUERY_STRING": b"", b"SCRIPT_FILENAME": str(site / "app.cgi").encode()}
    env.update({k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in extra.items()})
    return env


def cgi(site, path=b"/", body=b"", args=None, **extra) -> tuple:
    """Run the warm script once: (status line, headers+body bytes, stderr)."""
    env = env_for(site, path, **extra)
    if body:
        env[b"CONTENT_LENGTH"] = str(len(body)).encode()
        env[b"REQUEST_METHOD"] = b"POST"
    proc = subprocess.run(args or [sys.executable, str(site / "app.cgi")], env=env, input=body,
                          capture_output=True, cwd=site, timeout=60)
    assert proc.returncode == 0, proc.stderr
    head, _, payload = proc.stdout.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), payload, proc.stderr.decode(errors="replace")


def test_the_first_request_starts_the_daemon_and_later_ones_reuse_it(site):
    status, body, _ = cgi(site, b"/first")
    assert status == "Status: 200 OK"
    first = json.loads(body)
    assert first["run_once"] is False and first["path"] == "/first"
    assert wait_for_daemons(site / "run", 1) == [first["pid"]]
    status, body, err = cgi(site, b"/x", body=b"a=1&b=2")
    again = json.loads(body)
    assert (again["pid"], again["body"], again["path"]) == (first["pid"], "a=1&b=2", "/x")
    assert "probe says hello on wsgi.errors" in err       # STDERR -> the script's stderr
    assert os.stat(site / "run").st_mode & 0o777 == 0o700


def test_the_daemon_does_not_keep_the_first_requests_variables(site):
    _, body, _ = cgi(site, HTTP_X_SECRET="s3cret", HTTP_PROXY="http://evil", REMOTE_USER="alice",
                     SOME_SETENV="kept")
    keys = json.loads(body)["env_keys"]
    assert "SOME_SETENV" in keys
    assert not {"HTTP_X_SECRET", "HTTP_PROXY", "REMOTE_USER", "GATEWAY_INTERFACE", "QUERY_STRING"} & set(keys)


# What a warm request imports is every request's cost: the relay only.
RELAY_FORBIDDEN = {"re", "typing", "socket", "struct", "__future__", "fcntl", "select", "enum",
                   "bridge.wsgi", "bridge.cgi.gateway", "bridge.loader", "bridge.fastcgi.protocol",
                   "bridge.config", "bridge.warm_start", "probe"}


def test_a_warm_request_imports_only_the_relay(site):
    cgi(site)       # starts the daemon
    env = env_for(site)
    bare = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], env=env,
                          capture_output=True, text=True, timeout=30)
    proc = subprocess.run([sys.executable, "-X", "importtime", str(site / "app.cgi")], env=env,
                          capture_output=True, text=True, timeout=30)
    def imported(err):
        return {m.strip() for m in re.findall(r"^import time:.*\|(.*)$", err, re.M)}
    loaded = imported(proc.stderr) - imported(bare.stderr)
    assert '"pid"' in proc.stdout                     # answered by the daemon
    assert {"bridge", "bridge.warm"} <= loaded
    assert not loaded & RELAY_FORBIDDEN, sorted(loaded & RELAY_FORBIDDEN)


def test_bridge_cgi_warm_serves_through_the_daemon_with_and_without_the_full_command_line(site):
    fast = [sys.executable, "-m", "bridge", "cgi", "--warm", "probe:application"]
    full = [sys.executable, "-m", "bridge", "cgi", "--warm", "--warm-dir", str(site / "run2"),
            "--warm-idle", "30", "probe:application"]
    # sun_path is 108 bytes: pytest's tmp_path is too deep for xdg/bridge-warm/KEY.sock
    xdg = Path(tempfile.mkdtemp(prefix="bw-xdg-"))
    try:
        status, body, _ = cgi(site, args=full)
        assert status == "Status: 200 OK"
        assert daemon_pids(site / "run2") == [json.loads(body)["pid"]]
        # The plain form (no parser) takes the default directory: the user's
        # runtime directory when there is one.
        status, body, _ = cgi(site, args=fast, XDG_RUNTIME_DIR=str(xdg))
        assert status == "Status: 200 OK"
        assert daemon_pids(xdg / "bridge-warm") == [json.loads(body)["pid"]]
    finally:
        stop_daemons(site / "run2")
        stop_daemons(xdg / "bridge-warm")
        shutil.rmtree(xdg, ignore_errors=True)


def test_without_a_usable_directory_requests_are_plain_cgi_and_the_reason_is_logged_once(site):
    (site / "run").mkdir(mode=0o755)       # open to others: refused
    first = cgi(site, b"/a")
    second = cgi(site, b"/b")
    try:
        for status, body, _ in (first, second):
            assert status == "Status: 200 OK"
            assert json.loads(body)["run_once"] is True        # the plain CGI gateway
        assert "serving as plain CGI" in first[2] and "others may enter it" in first[2]
        assert "serving as plain CGI" not in second[2]
        assert daemon_pids(site / "run") == []
    finally:
        remove_spare_markers(str(site))


def test_an_app_that_cannot_be_loaded_is_answered_by_plain_cgi_with_a_500(site):
    (site / "app.cgi").write_text(SCRIPT.replace("probe:application", "nosuchmodule:app")
                                  .format(dir=str(site / "run"), idle=60))
    status, body, err = cgi(site)
    assert status == "Status: 500 Internal Server Error"
    assert "the daemon did not start" in err and "nosuchmodule" in err
    status, _, err = cgi(site)
    assert status == "Status: 500 Internal Server Error"
    assert "the daemon did not start" not in err           # logged once, not per request
    # The daemon said why on its ready pipe and is exiting: gone within moments
    # (CI on 3.12 once looked while its interpreter was still shutting down).
    deadline = time.monotonic() + 5
    while daemon_pids(site / "run") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert daemon_pids(site / "run") == []


def test_a_daemon_killed_mid_request_gives_one_502_and_the_next_request_a_new_daemon(site):
    _, body, _ = cgi(site)
    old = json.loads(body)["pid"]
    env = env_for(site, b"/sleep")
    slow = subprocess.Popen([sys.executable, str(site / "app.cgi")], env=env, cwd=site,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)                # the request is in the app
    os.kill(old, signal.SIGKILL)
    out, err = slow.communicate(timeout=30)
    assert out.startswith(b"Status: 502 Bad Gateway\r\n")
    assert b"502" in err
    status, body, _ = cgi(site)
    assert status == "Status: 200 OK"
    assert json.loads(body)["pid"] != old


def test_the_daemon_refuses_a_connection_from_another_uid():
    """SO_PEERCRED, on top of the private directory: here the socket is reachable by all."""
    tmp_path = public_tmpdir("bw-peer-")
    (tmp_path / "probe.py").write_text(PROBE_APP)
    tmp_path.chmod(0o755)
    sock_path = str(tmp_path / "d.sock")
    env = dict(os.environ, PYTHONPATH=f"{SRC}:{tmp_path}")
    daemon = subprocess.Popen([sys.executable, "-m", "bridge.warm_daemon", "--app", "probe:application",
                               "--socket", sock_path, "--lock", str(tmp_path / "d.lock"), "--idle", "60"],
                              env=env, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock_path):
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.05)
        os.chmod(sock_path, 0o777)
        request = warm.request_head(warm.cgi_params({b"REQUEST_METHOD": b"GET", b"SCRIPT_NAME": b"",
                                                     b"QUERY_STRING": b"", b"SERVER_NAME": b"x",
                                                     b"SERVER_PORT": b"80", b"SERVER_PROTOCOL": b"HTTP/1.0"}))
        request += warm.encode_record(warm.STDIN)
        client = ("import os, socket, sys\n"
                  "uid = int(sys.argv[2])\n"
                  "if uid: os.setgid(uid); os.setuid(uid)\n"
                  "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
                  "got = b''\n"
                  "try:\n"
                  "    s.sendall(bytes.fromhex(sys.argv[3]))\n"
                  "    while True:\n"
                  "        d = s.recv(65536)\n"
                  "        if not d: break\n"
                  "        got += d\n"
                  "except ConnectionError:\n"
                  "    pass\n"
                  "sys.stdout.write(got.hex())\n")
        def exchange(uid):
            return bytes.fromhex(subprocess.run([sys.executable, "-c", client, sock_path, str(uid), request.hex()],
                                                capture_output=True, text=True, timeout=30, check=True).stdout)
        assert b"Status: 200 OK" in exchange(0)
        assert exchange(65534) == b""            # nobody: closed without a byte
    finally:
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert "refused a connection from uid 65534" in err.decode()


def test_the_docs_option_table_is_the_generated_one():
    from bridge.config import option_table
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cgi.md").read_text()
    start = doc.index("<!-- generated from src/bridge/warm_options.py")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end generated -->", start)]
    generated = option_table().splitlines()
    assert table.splitlines() == generated[:2] + [row for row in generated if row.startswith("| `--warm")]


def _killed_during_a_request(site) -> tuple:
    """Start a /sleep request, SIGKILL the daemon serving it: (stdout, stderr) of the script."""
    _, body, _ = cgi(site)
    pid = json.loads(body)["pid"]
    slow = subprocess.Popen([sys.executable, str(site / "app.cgi")], env=env_for(site, b"/sleep"), cwd=site,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.0)
    os.kill(pid, signal.SIGKILL)
    return slow.communicate(timeout=30)


def test_a_daemon_dying_during_two_requests_in_a_row_is_a_crash_loop_served_as_plain_cgi(site):
    out, err = _killed_during_a_request(site)
    assert out.startswith(b"Status: 502 ") and b"crash loop" not in err
    out, err = _killed_during_a_request(site)
    assert out.startswith(b"Status: 502 ") and b"crash loop" in err
    status, body, err = cgi(site)
    assert status == "Status: 200 OK" and json.loads(body)["run_once"] is True
    assert "serving as plain CGI" not in err          # said once, by the request that saw it


def test_the_daemon_is_one_process_whatever_bridge_settings_the_environment_has(site):
    """Idleness is counted in the serving process: a master with workers would count nothing."""
    _, body, _ = cgi(site, BRIDGE_WORKERS="3", BRIDGE_MAX_REQUESTS="100", BRIDGE_PRELOAD="1")
    pid = json.loads(body)["pid"]
    _, body, _ = cgi(site, b"/again")
    assert json.loads(body)["pid"] == pid
    assert daemon_pids(site / "run") == [pid]


def test_the_environ_through_the_relay_is_the_plain_gateways(site):
    """HTTPS, REMOTE_ADDR, Authorization, a non-ASCII (and non-UTF-8) path, a query: byte for byte."""
    request = dict(path=b"/p\xc3\xa4th/\xff", QUERY_STRING=b"a=1&b=%C3%A4", HTTPS="on", REMOTE_ADDR="2001:db8::7",
                   HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz", CONTENT_TYPE="text/plain")
    plain = site / "plain.cgi"
    plain.write_text('from bridge import run\nrun("probe:application")\n')
    _, warm_body, _ = cgi(site, body=b"x=1", **request)
    _, plain_body, _ = cgi(site, body=b"x=1", args=[sys.executable, str(plain)], **request)
    warm_env, plain_env = json.loads(warm_body)["environ"], json.loads(plain_body)["environ"]
    assert warm_env["wsgi.url_scheme"] == "https"
    assert warm_env["PATH_INFO"].encode("latin-1") == b"/p\xc3\xa4th/\xff"
    for key in ("wsgi.url_scheme", "PATH_INFO", "SCRIPT_NAME", "QUERY_STRING", "REMOTE_ADDR",
                "HTTP_AUTHORIZATION", "HTTPS", "CONTENT_TYPE", "CONTENT_LENGTH", "REQUEST_METHOD",
                "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"):
        assert warm_env.get(key) == plain_env.get(key), key


def test_the_daemon_keeps_the_scripts_umask_for_the_files_the_app_makes(site):
    env = env_for(site)
    proc = subprocess.run([sys.executable, str(site / "app.cgi")], env=env, capture_output=True, cwd=site,
                          timeout=60, preexec_fn=lambda: os.umask(0o027))
    assert json.loads(proc.stdout.partition(b"\r\n\r\n")[2])["umask"] == 0o027


def test_editing_the_cgi_bin_script_retires_the_daemon_and_the_next_request_starts_a_new_one(site):
    _, body, _ = cgi(site)
    old = json.loads(body)["pid"]
    script = site / "app.cgi"
    script.write_text(script.read_text() + "# edited\n")
    assert wait_for_daemons(site / "run", 0) == []          # it left by itself
    _, body, _ = cgi(site)
    assert json.loads(body)["pid"] != old
