"""CGIApp and the CGI response grammar (RFC 3875 §4, §6), with small real scripts."""
import io
import os
import textwrap

import pytest

from bridge.cgi.app import CGIApp
from bridge.cgi.rfc3875 import BadResponse, cgi_variables, find_head_end, head_search_resume, parse_head
from bridge.middleware.mount import mount
from bridge.wsgi import call_app
from support.procs import kill_marked, new_marker, wait_gone


# -- the response grammar (byte strings) --------------------------------------


def test_status_field_sets_the_status_and_is_not_passed_on():
    head = parse_head(b"Status: 404 Nope\nContent-Type: text/plain")
    assert head.final_status() == "404 Nope"
    assert head.headers == [("Content-Type", "text/plain")]


def test_status_without_reason_gets_the_standard_phrase():
    assert parse_head(b"Status: 201").final_status() == "201 Created"


def test_no_status_means_200():
    assert parse_head(b"Content-Type: text/html").final_status() == "200 OK"


def test_absolute_location_without_status_is_a_302_client_redirect():
    head = parse_head(b"Location: https://example.org/x")
    assert not head.is_local_redirect
    assert head.final_status() == "302 Found"
    assert head.headers == [("Location", "https://example.org/x")]


def test_local_path_location_without_status_is_a_local_redirect():
    assert parse_head(b"Location: /other?x=1").is_local_redirect
    assert not parse_head(b"Location: //evil.example/").is_local_redirect
    assert not parse_head(b"Status: 301 Moved\r\nLocation: /new").is_local_redirect


def test_hop_by_hop_fields_from_the_script_are_dropped():
    head = parse_head(b"Content-Type: a/b\nConnection: close\nTransfer-Encoding: chunked\nX-A: 1")
    assert head.headers == [("Content-Type", "a/b"), ("X-A", "1")]


@pytest.mark.parametrize("block", [
    b"Content-Type: a/b\nContent-Length: 3\nContent-Length: 30",
    b"Content-Type: a/b\ncontent-length: 5\nContent-Length: 5\nCONTENT-LENGTH: 6",
    b"Content-Type: a/b\nContent-Length: 3\nX-A: 1\nContent-Length: 03x",
    b"Content-Type: a/b\nContent-Length: 5, 5",
])
def test_differing_or_malformed_content_lengths_from_a_script_are_refused(block):
    with pytest.raises(BadResponse):
        parse_head(block)


def test_identical_content_lengths_from_a_script_count_as_one():
    head = parse_head(b"Content-Type: a/b\r\nContent-Length: 5\r\nX-A: 1\r\ncontent-length: 5\r\n")
    assert head.headers == [("Content-Type", "a/b"), ("Content-Length", "5"), ("X-A", "1")]


def test_folded_header_lines_are_joined():
    head = parse_head(b"Content-Type: a/b\nX-Long: one\n  two")
    assert head.headers[-1] == ("X-Long", "one two")


CONTROLS = [("ESC", b"\x1b[2J"), ("BEL", b"\x07"), ("NUL", b"\x00"), ("DEL", b"\x7f"),
            ("CR_alone", b"\rX-Evil: 1"), ("VT", b"\x0b"), ("FF", b"\x0c")]


@pytest.mark.parametrize("ctl", [c[1] for c in CONTROLS], ids=[c[0] for c in CONTROLS])
@pytest.mark.parametrize("shape", [
    b"Content-Type: a/b\nX-A: one%s two",               # plain line
    b"Content-Type: a/b\nX-A: one\n  two%s",            # in a folded continuation
    b"Content-Type: a/b\nX-A: one\n\t%s two",          # tab fold, control first
    b"Content-Type: a/b\r\nX-A: one\r\n %s\r\n",     # CRLF lines, folded
    b"Content-Type: a/b\nX%s-A: one",                   # in a name
])
def test_a_control_character_anywhere_in_the_header_block_is_refused(ctl, shape):
    with pytest.raises(BadResponse):
        parse_head(shape % ctl)


def test_obs_fold_becomes_one_space_and_keeps_the_rest_as_it_was():
    head = parse_head(b"Content-Type: a/b\r\nX-A: one\r\n \t two\t\r\n\tthree")
    assert head.headers[-1] == ("X-A", "one two three")


@pytest.mark.parametrize("garbage", [
    b"hello world",
    b"<html><body>oops</body></html>",
    b"X-Only: header",
    b"Status: abc",
    b"Status: 2000 Too Big",
    b"Status: 102 Processing",
    b"Content-Type: a/b\nBad Name: x",
    b"Content-Type: a/b\nX-Ctl: a\x01b",
    b"Content-Type: a/b\nContent-Length: -1",
    b"Status: 200 OK\nStatus: 404 Not Found",
    b" folded-first: x",
    b"HTTP/1.1 200 OK\nContent-Type: text/plain",
])
def test_output_that_is_not_a_cgi_response_is_refused(garbage):
    with pytest.raises(BadResponse):
        parse_head(garbage)


@pytest.mark.parametrize("data, expected", [
    (b"A: b\n\nbody", (5, 6)),
    (b"A: b\r\n\r\nbody", (6, 8)),
    (b"A: b\n\r\nbody", (5, 7)),
    (b"\nbody", (0, 1)),
    (b"A: b\nC: d\n", None),
    (b"A: b\r\n", None),
])
def test_head_end_is_a_blank_line_with_lf_or_crlf(data, expected):
    assert find_head_end(data) == expected


def test_head_end_is_found_at_every_split_point():
    data = b"Content-Type: text/plain\r\nX-A: 1\n\r\nbody"
    for cut in range(len(data) + 1):
        buf = data[:cut]
        found = find_head_end(buf)
        start = head_search_resume(buf) if found is None else 0
        if found is None:
            buf = data
            found = find_head_end(buf, start)
        assert found == (len(b"Content-Type: text/plain\r\nX-A: 1\n"), len(data) - 4), cut


# -- meta-variables -----------------------------------------------------------


def test_meta_variables_follow_rfc_3875():
    environ = {"REQUEST_METHOD": "POST", "SCRIPT_NAME": "/cgi", "PATH_INFO": "/a b",
               "QUERY_STRING": "q=1", "SERVER_NAME": "example.org", "SERVER_PORT": "8080",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1", "CONTENT_TYPE": "text/plain",
               "HTTP_PROXY": "http://evil:1", "HTTP_X_TOKEN": "t", "wsgi.url_scheme": "https",
               "wsgi.input": io.BytesIO(), "PATH": "/secret", "SECRET_KEY": "s3"}
    env = cgi_variables(environ, document_root="/srv/www", script_filename="/srv/cgi/x",
                        content_length=12)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["CONTENT_LENGTH"] == "12"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["REMOTE_HOST"] == "10.0.0.1"
    assert env["PATH_TRANSLATED"] == "/srv/www/a b"
    assert env["REQUEST_URI"] == "/cgi/a%20b?q=1"
    assert env["HTTPS"] == "on" and env["REQUEST_SCHEME"] == "https"
    assert env["SCRIPT_FILENAME"] == "/srv/cgi/x"
    assert env["HTTP_X_TOKEN"] == "t"
    assert "HTTP_PROXY" not in env
    assert "PATH" not in env and "SECRET_KEY" not in env
    assert all(type(v) is str for v in env.values())


def test_no_body_means_no_content_length():
    env = cgi_variables({"REQUEST_METHOD": "GET"})
    assert "CONTENT_LENGTH" not in env and env["QUERY_STRING"] == ""


# -- running scripts ----------------------------------------------------------


class Collect:
    def __init__(self):
        self.status = None
        self.headers = None
        self.body = b""
        self.finished = False
        self.aborted = False

    def send_head(self, status, headers, body, end):
        self.status, self.headers, self.body = status, headers, body

    def send_body(self, data):
        self.body += data

    def finish(self):
        self.finished = True

    def abort(self):
        self.aborted = True


def run(app, path="/", method="GET", body=b"", headers=None, script_name="", chunked=False, **extra):
    errors = io.StringIO()
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": script_name, "PATH_INFO": path,
               "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
               "wsgi.input": io.BytesIO(body), "wsgi.errors": errors, "wsgi.url_scheme": "http"}
    if body and not chunked:
        environ["CONTENT_LENGTH"] = str(len(body))
    if chunked:
        environ["wsgi.input_terminated"] = True
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()})
    environ.update(extra)
    out = Collect()
    response = call_app(app, environ, out)
    out.errors = errors.getvalue()
    out.response = response
    return out


@pytest.fixture
def script(tmp_path):
    def make(text, name="run.sh"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        path.chmod(0o755)
        return str(path)
    return make


def test_script_gets_the_body_on_stdin_and_its_output_is_the_response(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Status: 201 Made\\r\\nContent-Type: text/plain\\r\\nX-Len: %s\\r\\n\\r\\n' "$CONTENT_LENGTH"
        cat
    """))
    out = run(app, method="POST", body=b"hello body")
    assert out.status == "201 Made"
    assert ("X-Len", "10") in out.headers
    assert out.body == b"hello body"


def test_a_script_writing_a_lot_before_reading_a_large_body_does_not_deadlock(script):
    # Both sides exceed a pipe buffer (64 KiB): only a pump that reads while it writes finishes.
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: application/octet-stream\\n\\n'
        head -c 300000 /dev/zero
        cat | wc -c
    """), timeout=20)
    body = os.urandom(500_000)
    out = run(app, method="POST", body=body)
    assert out.status == "200 OK"
    assert len(out.body) == 300000 + len(b"500000\n")
    assert out.body.endswith(b"500000\n")


def test_a_body_of_unknown_length_is_spooled_and_gets_a_content_length(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n%s:' "$CONTENT_LENGTH"
        cat
    """))
    out = run(app, method="POST", body=b"x" * 5000, chunked=True)
    assert out.body == b"5000:" + b"x" * 5000


def test_the_proxy_header_never_reaches_the_script(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n[%s][%s]' "${HTTP_PROXY-unset}" "${http_proxy-unset}"
    """))
    out = run(app, headers={"Proxy": "http://evil.example:3128"})
    assert out.body == b"[unset][unset]"


def test_the_script_does_not_inherit_this_process_environment(script, monkeypatch):
    monkeypatch.setenv("BRIDGE_TEST_SECRET", "s3cret")
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n%s|%s' "${BRIDGE_TEST_SECRET-unset}" "$GATEWAY_INTERFACE"
    """))
    assert run(app).body == b"unset|CGI/1.1"


def test_the_script_runs_in_its_own_directory(script, tmp_path):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n'
        pwd
    """))
    assert run(app).body.decode().strip() == str(tmp_path)


def test_stderr_goes_to_wsgi_errors_with_the_script_name(script):
    app = CGIApp(script("""
        #!/bin/sh
        echo "first complaint" >&2
        printf 'Content-Type: text/plain\\n\\nok'
        echo "second complaint" >&2
    """, name="noisy.sh"))
    out = run(app)
    assert out.body == b"ok"
    assert "[cgi noisy.sh] first complaint" in out.errors
    assert "[cgi noisy.sh] second complaint" in out.errors


def test_a_script_that_dies_without_output_is_a_502_with_its_exit_status_logged(script):
    app = CGIApp(script("""
        #!/bin/sh
        echo "fatal: no database" >&2
        exit 3
    """))
    out = run(app)
    assert out.status == "502 Bad Gateway"
    assert "no output at all" in out.errors and "exit status 3" in out.errors
    assert "fatal: no database" in out.errors
    assert b"fatal" not in out.body


def test_a_script_printing_garbage_is_a_502(script):
    app = CGIApp(script("""
        #!/bin/sh
        echo "<h1>Hello</h1>"
        echo
    """))
    out = run(app)
    assert out.status == "502 Bad Gateway"
    assert "header line without a colon" in out.errors


def test_a_script_dying_inside_its_header_block_is_a_502(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n'
        kill -9 $$
    """))
    out = run(app)
    assert out.status == "502 Bad Gateway"
    assert "inside the header block" in out.errors and "signal 9" in out.errors


def test_a_silent_script_is_killed_and_answered_504(script, tmp_path):
    marker = tmp_path / "survived"
    app = CGIApp(script(f"""
        #!/bin/sh
        sleep 30 && touch {marker} &
        sleep 30
    """), timeout=0.5)
    out = run(app)
    assert out.status == "504 Gateway Timeout"
    assert "killed it" in out.errors
    # the whole process group went, not only the shell
    import subprocess
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(marker) not in ps


@pytest.mark.parametrize("after_head", [False, True], ids=["before-its-head", "in-its-body"])
def test_a_script_gone_but_its_children_holding_the_pipes_are_killed_at_the_timeout(
        script, after_head):
    # The script itself exits; what it started in the background keeps stdout
    # open, so the response never ends.  At the CGI timeout its group goes too.
    marker = new_marker()
    head = "printf 'Content-Type: text/plain\\n\\nstart'" if after_head else ":"
    app = CGIApp(script(f"""
        #!/bin/sh
        export MARK={marker}
        {head}
        sleep 300 &
        exit 0
    """), timeout=0.5)
    try:
        out = run(app)
        if after_head:
            assert out.status == "200 OK" and out.aborted
        else:
            assert out.status == "504 Gateway Timeout"
        assert wait_gone(marker, 5) == []
    finally:
        kill_marked(marker)


def test_a_script_that_is_not_executable_is_refused_at_start(tmp_path):
    path = tmp_path / "x.sh"
    path.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError, match="chmod"):
        CGIApp(str(path))
    with pytest.raises(FileNotFoundError):
        CGIApp(str(tmp_path / "missing"))


def test_an_interpreter_that_does_not_exist_is_a_502(script):
    app = CGIApp(script("#!/no/such/interpreter\n"))
    out = run(app)
    assert out.status == "502 Bad Gateway"
    assert "cannot run" in out.errors


def test_a_client_redirect_keeps_the_scripts_other_headers(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Location: http://example.org/new\\nSet-Cookie: a=1\\n\\n'
    """))
    out = run(app)
    assert out.status == "302 Found"
    assert ("Location", "http://example.org/new") in out.headers
    assert ("Set-Cookie", "a=1") in out.headers


def test_a_local_redirect_is_served_from_the_top_of_the_mount(script):
    redirector = CGIApp(script("""
        #!/bin/sh
        printf 'Location: /py/target?from=cgi\\n\\n'
    """, name="redir.sh"))

    def target(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['REQUEST_METHOD']} {environ['SCRIPT_NAME']} {environ['PATH_INFO']} "
                f"{environ['QUERY_STRING']} {environ['wsgi.input'].read()!r}".encode()]
    site = mount({"/cgi": redirector, "/py": target})
    out = run(site, "/cgi", method="POST", body=b"dropped")
    assert out.status == "200 OK"
    assert out.body == b"GET /py /target from=cgi b''"


def test_a_local_redirect_loop_stops(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Location: /again\\n\\n'
    """), max_redirects=3)
    out = run(app, "/again")
    assert out.status == "500 Internal Server Error"
    assert "more than 3" in out.errors


def whole_stack(tmp_path, script_path, **extra):
    """The app ``bridge http`` builds: status paths, Static, Gzip, the mounts."""
    from bridge.config import Config
    from bridge.loader import load_from_config
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    (static / "a.txt").write_text("the static file " * 40)
    values = {"app": "support.mount_apps:public", "mount": [f"/cgi=cgi:{script_path}"],
              "static": [f"/s={static}"], "gzip": True, "ping_path": "/ping", **extra}
    return load_from_config(Config.build("http", values, environ={}))


@pytest.mark.parametrize("location, served", [
    ("/s/a.txt", b"the static file " * 40),         # by Static, in front of the mounts
    ("/ping", b"pong\n"),                           # by the status wrapper, outermost
    ("/cgi/../s/./a.txt", b"the static file " * 40),  # normalised like any request path
])
def test_a_local_redirect_reenters_the_whole_stack(script, tmp_path, location, served):
    app = whole_stack(tmp_path, script(f"""
        #!/bin/sh
        printf 'Location: {location}\\n\\n'
    """))
    out = run(app, "/cgi", method="POST", body=b"dropped")
    assert out.status == "200 OK", out.errors
    assert out.body == served


def test_a_local_redirect_is_compressed_once_not_by_each_pass(script, tmp_path):
    import gzip
    import json
    app = whole_stack(tmp_path, script("""
        #!/bin/sh
        printf 'Location: /page?x=1\\n\\n'
    """), gzip_min_size=0)
    out = run(app, "/cgi", headers={"Accept-Encoding": "gzip"})
    assert ("Content-Encoding", "gzip") in out.headers
    seen = json.loads(gzip.decompress(out.body))
    assert (seen["app"], seen["path_info"], seen["request_uri"]) == ("public", "/page", "/page?x=1")


def test_a_local_redirect_of_a_head_request_sends_no_body(script, tmp_path):
    app = whole_stack(tmp_path, script("""
        #!/bin/sh
        printf 'Location: /s/a.txt\\n\\n'
    """))
    out = run(app, "/cgi", method="HEAD")
    assert out.status == "200 OK" and out.body == b""


def test_a_local_redirect_loop_through_the_whole_stack_ends_in_a_500(script, tmp_path):
    app = whole_stack(tmp_path, script("""
        #!/bin/sh
        printf 'Location: /cgi/again\\n\\n'
    """))
    out = run(app, "/cgi")
    assert out.status == "500 Internal Server Error"
    assert out.errors.count("more than 10 CGI local redirects (last to /cgi/again)") == 1


def test_under_another_server_a_local_redirect_starts_from_the_mount(script):
    # No bridge gateway (no call_app): the outermost mount serves it, as before.
    redirector = CGIApp(script("""
        #!/bin/sh
        printf 'Location: /py/x\\n\\n'
    """, name="redir.sh"))

    def target(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [(environ["SCRIPT_NAME"] + "|" + environ["PATH_INFO"]).encode()]
    site = mount({"/cgi": redirector, "/py": target})
    got = {}
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/cgi", "QUERY_STRING": "",
               "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()}
    body = b"".join(site(environ, lambda status, headers, exc_info=None: got.setdefault("s", status)))
    assert got["s"] == "200 OK" and body == b"/py|/x"


def test_head_request_gets_the_headers_and_the_script_is_reaped(script):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n'
        echo "body for $REQUEST_METHOD"
    """))
    out = run(app, method="HEAD")
    assert out.status == "200 OK"
    assert out.body == b""


def test_a_cgi_bin_directory_serves_each_script_with_its_own_path_info(tmp_path, script):
    script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n%s|%s|%s' "$SCRIPT_NAME" "$PATH_INFO" "$(basename $SCRIPT_FILENAME)"
    """, name="hello.sh")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.sh").write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\ndeep'\n")
    (tmp_path / "sub" / "deep.sh").chmod(0o755)
    (tmp_path / "data.txt").write_text("not a script")
    (tmp_path / ".hidden").write_text("#!/bin/sh\n")
    (tmp_path / ".hidden").chmod(0o755)
    site = mount({"/cgi-bin": CGIApp(str(tmp_path))})
    assert run(site, "/cgi-bin/hello.sh/extra/path").body == b"/cgi-bin/hello.sh|/extra/path|hello.sh"
    assert run(site, "/cgi-bin/sub/deep.sh").body == b"deep"
    assert run(site, "/cgi-bin/missing.sh").status == "404 Not Found"
    assert run(site, "/cgi-bin/").status == "404 Not Found"
    assert run(site, "/cgi-bin/.hidden").status == "404 Not Found"
    assert run(site, "/cgi-bin/../etc/passwd").status == "404 Not Found"
    assert run(site, "/cgi-bin/data.txt").status == "403 Forbidden"


def test_a_client_that_leaves_mid_body_gets_the_script_killed(script, tmp_path):
    app = CGIApp(script("""
        #!/bin/sh
        printf 'Content-Type: text/plain\\n\\n'
        while true; do echo line; sleep 0.01; done
    """))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
               "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()}
    result = app(environ, lambda status, headers, exc_info=None: None)
    it = iter(result)
    assert next(it).startswith(b"line")
    pid = result.proc.pid
    result.close()
    assert result.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
