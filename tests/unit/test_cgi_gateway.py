"""The CGI gateway (RFC 3875) as a real subprocess with a crafted environment.

Each test runs a CGI program the way a web server does: a fresh process,
the request in its environment (as bytes: os.environb), the body on stdin,
the response read from stdout, stderr kept apart as the server's error log.
The programs are the shipped cgi-bin/demo.cgi, ``bridge cgi APP`` and small
``from bridge import run; run(...)`` scripts.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from support import ROOT, SRC

DEMO_CGI = ROOT / "cgi-bin" / "demo.cgi"

# A test app: the environ (and os.environ's proxy) as JSON; a few misbehaviours.
PROBE_APP = '''\
import json, os, sys

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/raise":
        raise ValueError("probe failed (secret: do-not-leak)")
    if path == "/print":
        print("stray print from the app")
        sys.stdout.write("stray write\\n")
    info = {k: v for k, v in environ.items() if isinstance(v, str)}
    info["PATH_INFO_HEX"] = path.encode("latin-1").hex()
    info["os.environ:HTTP_PROXY"] = os.environ.get("HTTP_PROXY")
    info["input_terminated"] = environ.get("wsgi.input_terminated", False)
    info["run_once"] = environ["wsgi.run_once"]
    info["body"] = environ["wsgi.input"].read().decode("latin-1")
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''

BROKEN_IMPORT = 'raise ImportError("cannot import this (secret: do-not-leak)")\n'


@pytest.fixture()
def apps(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE_APP)
    (tmp_path / "broken.py").write_text(BROKEN_IMPORT)
    return tmp_path


class CGIResult:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr.decode("utf-8", "replace")
        head, sep, self.body = proc.stdout.partition(b"\r\n\r\n")
        assert sep, f"no blank line after the CGI headers: {proc.stdout[:300]!r}\nstderr: {self.stderr}"
        lines = head.split(b"\r\n")
        self.headers = {}
        for line in lines:
            name, colon, value = line.partition(b": ")
            assert colon, f"malformed CGI header line {line!r}"
            self.headers[name.decode("latin-1")] = value.decode("latin-1")
        self.status = self.headers.get("Status")

    def json(self) -> dict:
        return json.loads(self.body)


def cgi_env(method="GET", path=b"/", query=b"", **extra) -> dict:
    env = {
        b"PATH": os.environb.get(b"PATH", b"/usr/bin:/bin"),
        b"PYTHONPATH": str(SRC).encode(),
        b"GATEWAY_INTERFACE": b"CGI/1.1",
        b"SERVER_PROTOCOL": b"HTTP/1.1",
        b"SERVER_SOFTWARE": b"test",
        b"SERVER_NAME": b"example.org",
        b"SERVER_PORT": b"8080",
        b"REMOTE_ADDR": b"192.0.2.1",
        b"REQUEST_METHOD": method.encode(),
        b"SCRIPT_NAME": b"/cgi-bin/app.cgi",
        b"PATH_INFO": path,
        b"QUERY_STRING": query,
    }
    for key, value in extra.items():
        env[key.encode()] = value if isinstance(value, bytes) else str(value).encode()
    return env


def run_cgi(args, env, stdin=b"", cwd=None, timeout=30) -> CGIResult:
    proc = subprocess.run(args, env=env, input=stdin, capture_output=True, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return CGIResult(proc)


def script(app_spec: str, **options) -> list:
    """A cgi-bin script as users write it: ``from bridge import run; run(APP)``."""
    opts = "".join(f", {k}={v!r}" for k, v in options.items())
    return [sys.executable, "-c", f"from bridge import run; run({app_spec!r}{opts})"]


def demo(env, stdin=b"") -> CGIResult:
    return run_cgi([sys.executable, str(DEMO_CGI)], env, stdin)


# --------------------------------------------------------------------------
# the response: Status line, headers, blank line, body

def test_demo_cgi_answers_a_get_with_a_cgi_response():
    r = demo(cgi_env(path=b"/hello"))
    assert r.stdout == (b"Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n"
                        b"Hello, world!\n")


def test_head_gets_the_headers_of_get_and_no_body():
    r = demo(cgi_env("HEAD", b"/hello"))
    assert r.status == "200 OK"
    assert r.headers["Content-Length"] == "14"
    assert r.body == b""


def test_head_of_a_streamed_response_has_no_body():
    r = demo(cgi_env("HEAD", b"/stream", b"n=3&delay=0"))
    assert r.status == "200 OK" and r.body == b""


def test_post_body_is_read_up_to_content_length_and_never_past_it():
    body = os.urandom(200_000)
    r = demo(cgi_env("POST", b"/echo", CONTENT_LENGTH=len(body), CONTENT_TYPE="application/octet-stream"),
             body + b"GARBAGE AFTER THE BODY")
    assert r.status == "200 OK"
    assert r.body == body


def test_empty_post_echoes_nothing():
    r = demo(cgi_env("POST", b"/echo", CONTENT_LENGTH=0), b"")
    assert r.status == "200 OK" and r.headers["Content-Length"] == "0" and r.body == b""


def test_a_chunked_body_without_content_length_is_read_to_eof(apps):
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]),
                cgi_env("POST", b"/", HTTP_TRANSFER_ENCODING="chunked"), b"de-chunked by the server")
    info = r.json()
    assert info["body"] == "de-chunked by the server"
    assert info["input_terminated"] is True


def test_no_content_length_and_no_chunked_means_no_body(apps):
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]), cgi_env("POST", b"/"), b"not a body")
    assert r.json()["body"] == ""


def test_streamed_chunks_are_flushed_one_by_one():
    proc = subprocess.Popen([sys.executable, str(DEMO_CGI)], env=cgi_env(path=b"/stream", query=b"n=3&delay=1"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        received = b""
        while b"chunk 0\n" not in received:
            data = os.read(proc.stdout.fileno(), 65536)
            assert data, f"stdout closed early: {received!r}"
            received += data
        # The first chunk is out while the app still sleeps before the next ones.
        assert b"chunk 1" not in received and proc.poll() is None
        received += proc.stdout.read()
    finally:
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
    assert received.startswith(b"Status: 200 OK\r\n")
    assert received.endswith(b"chunk 0\nchunk 1\nchunk 2\n")


# --------------------------------------------------------------------------
# the environ from os.environb

def test_environ_comes_from_the_cgi_meta_variables(apps):
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]),
                cgi_env(path=b"/x/y", query=b"a=1&b=%C3%A4", HTTPS="on", HTTP_AUTHORIZATION="Bearer t",
                        HTTP_X_CUSTOM="v"))
    info = r.json()
    assert info["SCRIPT_NAME"] == "/cgi-bin/app.cgi" and info["PATH_INFO"] == "/x/y"
    assert info["QUERY_STRING"] == "a=1&b=%C3%A4"
    assert info["wsgi.url_scheme"] == "https"
    assert info["HTTP_AUTHORIZATION"] == "Bearer t" and info["HTTP_X_CUSTOM"] == "v"
    assert info["SERVER_NAME"] == "example.org" and info["SERVER_PORT"] == "8080"
    assert info["run_once"] is True


def test_an_invalid_utf8_path_info_reaches_the_app_byte_for_byte(apps):
    raw = b"/caf\xc3\xa9/\xff\xfe\x80"
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]), cgi_env(path=raw))
    assert bytes.fromhex(r.json()["PATH_INFO_HEX"]) == raw


def test_httpoxy_proxy_header_is_dropped_from_environ_and_os_environ(apps):
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]),
                cgi_env(HTTP_PROXY="http://attacker.example:3128"))
    info = r.json()
    assert "HTTP_PROXY" not in info
    assert info["os.environ:HTTP_PROXY"] is None


def test_script_name_option_moves_a_prefix_from_path_info(apps):
    r = run_cgi(script("bridge.demo:app", script_name="/app"), cgi_env(path=b"/app/hello", SCRIPT_NAME=""))
    assert r.body == b"Hello, world!\n"


# --------------------------------------------------------------------------
# failures: always a valid 500, the traceback on stderr only

def test_an_app_that_raises_gives_a_500_with_the_traceback_on_stderr_only(apps):
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]), cgi_env(path=b"/raise"))
    assert r.status == "500 Internal Server Error"
    assert r.body == b"Internal Server Error\n"
    assert b"do-not-leak" not in r.stdout and b"Traceback" not in r.stdout
    assert "Traceback" in r.stderr and "ValueError: probe failed" in r.stderr


def test_an_app_module_that_fails_to_import_gives_a_500_with_the_traceback_on_stderr(apps):
    r = run_cgi(script("broken:application", pythonpath=[str(apps)]), cgi_env())
    assert r.stdout == (b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        b"Content-Length: 22\r\n\r\nInternal Server Error\n")
    assert "ImportError: cannot import this" in r.stderr and "Traceback" in r.stderr


@pytest.mark.parametrize("spec, message", [("no_such_module:app", "not found"),
                                           ("probe:nothing", "has no attribute"),
                                           ("probe:json", "not a callable")])
def test_an_app_that_cannot_be_loaded_gives_a_500_and_one_line_on_stderr(apps, spec, message):
    r = run_cgi(script(spec, pythonpath=[str(apps)]), cgi_env())
    assert r.status == "500 Internal Server Error" and r.body == b"Internal Server Error\n"
    assert message in r.stderr


def test_a_script_whose_app_is_not_found_is_told_of_its_own_settings_not_of_flags(apps):
    # A cgi-bin script has no command line: "--chdir" would send its author
    # looking for a flag that does not exist (issue 17).
    r = run_cgi(script("no_such_module:app", pythonpath=[str(apps)]), cgi_env())
    assert r.status == "500 Internal Server Error"
    line = r.stderr.strip()
    assert line.startswith("bridge cgi: module 'no_such_module' not found"), line
    assert "run(APP, pythonpath=" in line and "--chdir" not in line and "--pythonpath" not in line


def test_the_bridge_cgi_command_whose_app_is_not_found_is_told_of_its_flags():
    r = run_cgi([sys.executable, "-m", "bridge", "cgi", "no_such_module:app"], cgi_env())
    assert "use --chdir or --pythonpath" in r.stderr and "run(APP" not in r.stderr


def test_a_script_under_fastcgi_whose_app_is_not_found_is_told_of_its_own_settings():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        proc = subprocess.run(script("no_such_module:app"), env={"PYTHONPATH": str(SRC)},
                              stdin=listener, capture_output=True, text=True, timeout=30)
    finally:
        listener.close()
    assert proc.returncode == 2
    assert proc.stderr.startswith("bridge fcgi: module 'no_such_module' not found"), proc.stderr
    assert "run(APP, pythonpath=" in proc.stderr and "--chdir" not in proc.stderr


def test_a_script_under_fastcgi_with_a_bad_run_keyword_is_told_of_that_keyword():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        proc = subprocess.run(script("bridge.demo:app", threads=0), env={"PYTHONPATH": str(SRC)},
                              stdin=listener, capture_output=True, text=True, timeout=30)
    finally:
        listener.close()
    assert (proc.returncode, proc.stderr) == (2, "bridge fcgi: run(): threads=0: must be at least 1\n")


def test_a_script_with_fastcgi_settings_in_run_still_answers_under_cgi():
    # The same script serves mod_fcgid: run(app, threads=8) was a TypeError
    # under CGI, before any output (Apache: End of script output before headers).
    r = run_cgi(script("bridge.demo:app", threads=8, fcgi_max_params="64k"), cgi_env(path=b"/hello"))
    assert r.status == "200 OK" and r.body == b"Hello, world!\n"


def test_a_script_with_a_run_keyword_that_is_no_setting_answers_500_and_names_it():
    r = run_cgi(script("bridge.demo:app", thread=8), cgi_env(path=b"/hello"))
    assert r.status == "500 Internal Server Error"
    assert r.stderr == "bridge cgi: run(): no setting named 'thread' (did you mean threads?)\n"


def test_a_script_under_fastcgi_with_a_run_keyword_that_is_no_setting_exits_2():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        proc = subprocess.run(script("bridge.demo:app", thread=8), env={"PYTHONPATH": str(SRC)},
                              stdin=listener, capture_output=True, text=True, timeout=30)
    finally:
        listener.close()
    assert (proc.returncode, proc.stderr) == (
        2, "bridge fcgi: run(): no setting named 'thread' (did you mean threads?)\n")


def test_a_stray_print_goes_to_stderr_not_into_the_response(apps):
    r = run_cgi(script("probe:application", pythonpath=[str(apps)]), cgi_env(path=b"/print"))
    assert r.status == "200 OK" and r.json()["PATH_INFO"] == "/print"
    assert "stray print from the app" in r.stderr and "stray write" in r.stderr


# --------------------------------------------------------------------------
# bridge cgi APP, and run() outside a web server

def test_bridge_cgi_command_serves_one_request():
    r = run_cgi([sys.executable, "-m", "bridge", "cgi", "bridge.demo:app"], cgi_env(path=b"/hello"))
    assert r.status == "200 OK" and r.body == b"Hello, world!\n"


def test_bridge_cgi_command_with_a_bad_app_still_answers_500():
    r = run_cgi([sys.executable, "-m", "bridge", "cgi", "no_such_module:app"], cgi_env())
    assert r.status == "500 Internal Server Error"
    assert "no_such_module" in r.stderr


def test_bridge_cgi_with_a_bad_setting_found_by_a_hook_answers_500_and_one_line():
    r = run_cgi([sys.executable, "-m", "bridge", "cgi", "--gzip", "--gzip-types", "bad type",
                 "bridge.demo:app"], cgi_env())
    assert r.status == "500 Internal Server Error"
    assert r.stderr == "bridge cgi: --gzip-types: gzip type 'bad type' is not type/subtype (type/* and type/*+suffix allowed)\n"


def test_bridge_cgi_outside_a_web_server_explains_and_exits_2():
    env = {k: v for k, v in cgi_env().items() if k != b"GATEWAY_INTERFACE"}
    proc = subprocess.run([sys.executable, "-m", "bridge", "cgi", "bridge.demo:app"], env=env,
                          capture_output=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"GATEWAY_INTERFACE is not set" in proc.stderr


def test_run_started_by_hand_explains_how_to_run_the_script():
    env = {b"PATH": os.environb[b"PATH"], b"PYTHONPATH": str(SRC).encode()}
    proc = subprocess.run([sys.executable, str(DEMO_CGI)], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == b""
    assert b"started from neither" in proc.stderr and b"ScriptAlias" in proc.stderr


def fd0_probe(stdin) -> str:
    proc = subprocess.run([sys.executable, "-c", "import bridge; print(bridge._fd0_is_listening_socket())"],
                          env={"PYTHONPATH": str(SRC)}, stdin=stdin, capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


def test_run_tells_a_listening_socket_on_fd0_from_cgi_stdin():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    a, b = socket.socketpair()            # mod_cgid gives a CGI script a connected socket
    try:
        assert fd0_probe(listener) == "True"
        assert fd0_probe(b) == "False"
        assert fd0_probe(subprocess.DEVNULL) == "False"
    finally:
        for s in (listener, a, b):
            s.close()


def test_run_under_cgi_with_a_connected_socket_on_stdin_serves_cgi():
    a, b = socket.socketpair()
    try:
        proc = subprocess.run([sys.executable, str(DEMO_CGI)], env=cgi_env(path=b"/hello"), stdin=b,
                              capture_output=True, timeout=30)
    finally:
        a.close()
        b.close()
    assert proc.stdout.endswith(b"\r\n\r\nHello, world!\n")


# What the plain `bridge cgi APP` imports is paid by every request: the app
# below answers with the modules loaded by then, minus those of a bare
# interpreter (`python -c pass` under the same environment).
MODULES_APP = '''\
import sys

def application(environ, start_response):
    body = "\\n".join(sorted(sys.modules)).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''

COLD_START_FORBIDDEN = {"re", "typing", "argparse", "enum", "socket", "__future__",
                        "bridge.cli", "bridge.config", "bridge.options"}


@pytest.mark.parametrize("entry", [["-m", "bridge"], [str(ROOT / "scripts" / "bridge")]],
                         ids=["python -m bridge", "scripts/bridge"])
def test_plain_bridge_cgi_imports_no_parser_settings_or_typing(tmp_path, entry):
    (tmp_path / "modules_app.py").write_text(MODULES_APP)
    env = cgi_env(path=b"/")
    env[b"PYTHONPATH"] = b"%s:%s" % (str(SRC).encode(), str(tmp_path).encode())
    bare = subprocess.run([sys.executable, "-c", "import sys; print('\\n'.join(sys.modules))"],
                          env=env, capture_output=True, text=True, timeout=30, check=True)
    r = run_cgi([sys.executable, *entry, "cgi", "modules_app:application"], env)
    assert r.status == "200 OK"
    loaded = set(r.body.decode().split()) - set(bare.stdout.split())
    assert {"bridge", "bridge.cgi.gateway", "bridge.wsgi", "modules_app"} <= loaded
    assert not loaded & COLD_START_FORBIDDEN, sorted(loaded & COLD_START_FORBIDDEN)


def test_bridge_cgi_with_a_setting_takes_the_full_command_line_and_answers_the_same(tmp_path):
    plain = run_cgi([sys.executable, "-m", "bridge", "cgi", "bridge.demo:app"], cgi_env(path=b"/hello"))
    env = cgi_env(path=b"/hello")
    env[b"BRIDGE_CHDIR"] = str(tmp_path).encode()      # any BRIDGE_* setting: the general path
    full = run_cgi([sys.executable, "-m", "bridge", "cgi", "bridge.demo:app"], env)
    assert plain.status == full.status == "200 OK"
    assert plain.stdout == full.stdout
