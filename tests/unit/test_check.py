"""``bridge check APP`` and the checker under it (bridge.lint).

The linter must report every violation as one message, name whose fault it
is (``app:`` or ``gateway:``), and never change or stop the request.
``bridge check`` runs one GET through the core under the same linter as
``--lint`` (one checker, one verdict), prints what it saw and exits 0
(fine) or 1 (problems).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest

from bridge.check import check_app, synthetic_environ
from bridge.lint import Linter, lint
from bridge.wsgi import FileWrapper, Transport, call_app, make_environ
from support import bridge_command, bridge_env


# --------------------------------------------------------------------------
# the linter, driven by a lenient stand-in server that never raises

def lenient_call(app, environ=None):
    """Run ``app`` like a server that accepts anything: returns (status, headers, body chunks)."""
    environ = environ if environ is not None else synthetic_environ()
    seen = {"status": None, "headers": None, "chunks": []}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers
        return seen["chunks"].append
    result = app(environ, start_response)
    try:
        for chunk in result:
            seen["chunks"].append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()
    return seen


def linted(app, environ=None):
    problems = []
    seen = lenient_call(Linter(app, lambda message, env: problems.append(message)), environ)
    return problems, seen


def make(status="200 OK", headers=(("Content-Type", "text/plain"),), body=(b"ok",)):
    def app(environ, start_response):
        start_response(status, list(headers))
        return list(body)
    return app


def test_a_correct_app_has_no_problems_and_passes_unchanged():
    problems, seen = linted(make(body=[b"a", b"b"]))
    assert problems == []
    assert (seen["status"], seen["headers"], seen["chunks"]) == ("200 OK", [("Content-Type", "text/plain")], [b"a", b"b"])


def test_every_violation_of_one_call_is_reported_not_just_the_first():
    problems, seen = linted(make(status="200", headers=[("Bad Name", "x\r\ny"), ("Connection", "close")]))
    assert problems == [
        "app: status must be a three-digit code, a space and a reason phrase ('200 OK'), got '200'",
        "app: header name 'Bad Name' is not a token (RFC 9110 §5.6.2)",
        "app: header 'Bad Name' value contains a control character (CR, LF, NUL...): 'x\\r\\ny'",
        "app: hop-by-hop header 'Connection' is the gateway's to set (PEP 3333), not the app's",
        "app: no Content-Type header (RFC 9110 §8.3: a response with content should have one)",
    ]
    assert seen["status"] == "200"          # the request went on, unchanged


@pytest.mark.parametrize("status, fragment", [
    (200, "status must be a str"),
    ("abc OK", "three-digit code"),
    ("200 ", "three-digit code"),
    ("700 Beyond", "outside 100-599"),
    ("103 Early Hints", "informational (1xx)"),
    ("200 \u20ac", "not latin-1"),
])
def test_status_problems(status, fragment):
    problems, _ = linted(make(status=status))
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize("headers, fragment", [
    ((("Status", "200"),), "'Status' is not a header"),
    ((("Content-Type", "text/plain"), ("X-Euro", "\u20ac")), "not latin-1"),
    ((("Content-Type", "text/plain"), ("X-Pad", " v ")), "leading or trailing whitespace"),
    ((("Content-Type", "text/plain"), ("Content-Length", "abc")), "Content-Length must be digits"),
    ((("Content-Type", "text/plain"), ("Content-Length", "2"), ("Content-Length", "2")), "more than one Content-Length"),
    ((("Content-Type", b"text/plain"),), "must be str"),
    ((["Content-Type", "text/plain"],), "(name, value) tuple"),
])
def test_header_problems(headers, fragment):
    problems, _ = linted(make(headers=headers, body=[b"ok"]))
    assert any(fragment in p for p in problems), problems


def test_headers_given_as_a_tuple_are_reported():
    def app(environ, start_response):
        start_response("200 OK", (("Content-Type", "text/plain"),))
        return [b"x"]
    problems, _ = linted(app)
    assert problems == ["app: response headers must be a list (PEP 3333), got tuple"]


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_content_type_needed_without_content(status):
    assert linted(make(status=status, headers=(), body=()))[0] == []


def test_second_start_response_without_exc_info_is_reported_with_exc_info_not():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("201 Created", [("Content-Type", "text/plain")])
        try:
            raise KeyError
        except KeyError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"x"]
    problems, _ = linted(app)
    assert problems == ["app: start_response called a second time without exc_info (PEP 3333 allows "
                        "that only to replace the headers after an error)"]


def test_a_bad_exc_info_is_reported():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")], "oops")
        return [b"x"]
    assert any("exc_info must be None" in p for p in linted(app)[0])


def test_body_problems_are_reported_and_the_chunks_still_pass():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        write("text")
        yield b"abc"
        yield 5
    problems, seen = linted(app)
    assert "app: write() must give bytes, got str: 'text'" in problems
    assert "app: the result iterable must give bytes, got int: 5" in problems
    assert "app: sent 3 body bytes for a Content-Length of 10" in problems
    assert seen["chunks"] == ["text", b"abc", 5]


def test_body_before_start_response_is_reported():
    def app(environ, start_response):
        yield b"too early"
        start_response("200 OK", [("Content-Type", "text/plain")])
    assert "app: body data from the result iterable before start_response() was called" in linted(app)[0]


@pytest.mark.parametrize("result, fragment", [(b"bytes", "returned bytes instead of an iterable"),
                                              ("str", "returned str instead"), (None, "not iterable")])
def test_a_result_that_is_not_an_iterable_of_bytes_is_reported(result, fragment):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result
    problems = []
    checked = Linter(app, lambda m, e: problems.append(m))
    assert checked(synthetic_environ(), lambda *a: None) is result     # passed through as is
    assert any(fragment in p for p in problems), problems


def test_lists_and_file_wrappers_pass_through_so_the_core_keeps_its_fast_paths():
    body = [b"hello"]
    wrapper = FileWrapper(io.BytesIO(b"data"))
    for result in (body, wrapper):
        def app(environ, start_response, result=result):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return result
        assert Linter(app, lambda m, e: None)(synthetic_environ(), lambda *a: None) is result


def test_through_the_core_a_linted_list_still_gets_content_length():
    class T(Transport):
        def send_head(self, status, headers, body, end):
            self.headers = headers
    t = T()
    call_app(lint(make(body=[b"hello"]), lambda m, e: None), synthetic_environ(), t)
    assert ("Content-Length", "5") in t.headers


def test_each_distinct_problem_is_reported_once_per_request():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter(["a", "a", "a"])
    problems, _ = linted(app)
    assert problems == ["app: the result iterable must give bytes, got str: 'a'"]


def test_gateway_problems_in_the_environ_are_reported():
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/", "PATH_INFO": "x", "HTTP_CONTENT_LENGTH": "1",
               "SERVER_NAME": "h", "SERVER_PORT": 80, "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.version": [1, 0],
               "wsgi.url_scheme": "ftp", "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(),
               "wsgi.multithread": 0, "wsgi.multiprocess": False, "QUERY_STRING": "\u20ac"}
    problems, _ = linted(make(), environ)
    for fragment in ("lacks the required key 'wsgi.run_once'", "environ['SERVER_PORT'] must be a native str",
                     "wsgi.version must be the tuple (1, 0)", "wsgi.url_scheme must be 'http' or 'https'",
                     "wsgi.multithread must be a bool", "HTTP_CONTENT_LENGTH", "SCRIPT_NAME must not be '/'",
                     "PATH_INFO must be empty or start with '/'", "beyond latin-1"):
        assert any(fragment in p and p.startswith("gateway: ") for p in problems), (fragment, problems)


def test_the_core_environ_has_no_gateway_problems():
    env = make_environ({"REQUEST_METHOD": "POST", "PATH_INFO": "/p\xc3\xa4", "CONTENT_LENGTH": "0"},
                       input=io.BytesIO(), errors=io.StringIO(), multithread=True, multiprocess=False)
    assert linted(make(), env)[0] == []


def test_stream_misuse_by_the_app_is_reported():
    def app(environ, start_response):
        with pytest.raises(TypeError):       # reported, then the stream's own error
            environ["wsgi.input"].read("10")
        environ["wsgi.errors"].write(b"bytes to a text stream")
        environ["wsgi.errors"].writelines([b"x"])
        environ["wsgi.input"].close()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]
    class AnyErrors(io.StringIO):
        def write(self, text):
            return 0

        def writelines(self, lines):
            pass
    env = synthetic_environ(errors=AnyErrors())
    problems, _ = linted(app, env)
    assert "app: wsgi.input.read() size must be an int, got '10'" in problems
    assert "app: wsgi.errors.write() takes str, got bytes" in problems
    assert "app: wsgi.errors.writelines() takes str lines, got bytes" in problems
    assert any("wsgi.input.close()" in p for p in problems)


def test_a_gateway_input_returning_str_is_reported():
    env = synthetic_environ()
    env["wsgi.input"] = io.StringIO("text")

    def app(environ, start_response):
        environ["wsgi.input"].read(4)
        environ["wsgi.input"].readline()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]
    problems, _ = linted(app, env)
    assert "gateway: wsgi.input.read() returned str, not bytes" in problems


def test_input_reads_pass_the_data_through():
    env = synthetic_environ()
    env["wsgi.input"] = io.BytesIO(b"line1\nline2\nrest")
    got = {}

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        got["data"] = [stream.readline(), stream.readlines(1), list(stream)]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]
    problems, _ = linted(app, env)
    assert problems == [] and got["data"] == [b"line1\n", [b"line2\n"], [b"rest"]]


def test_gateway_misuse_of_the_result_is_reported():
    def gen():
        yield b"x"

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    problems = []
    result = Linter(app, lambda m, e: problems.append(m))(synthetic_environ(), lambda *a: None)
    next(iter(result))
    result.close()
    result.close()
    with pytest.raises(StopIteration):
        next(result)
    assert "gateway: called close() on the app's result twice" in problems
    assert "gateway: iterated the app's result after calling its close()" in problems


def test_the_default_report_writes_to_wsgi_errors():
    env = synthetic_environ()
    lenient_call(Linter(make(status="200")), env)
    assert env["wsgi.errors"].getvalue().startswith("wsgi lint: app: status must be")


def test_a_failing_report_callback_never_breaks_the_request():
    def report(message, environ):
        raise RuntimeError("report broke")
    seen = lenient_call(Linter(make(status="200"), report))
    assert seen["chunks"] == [b"ok"]


def test_app_exceptions_pass_through_unchanged():
    class Boom(Exception):
        pass

    def app(environ, start_response):
        raise Boom()
    with pytest.raises(Boom):
        lenient_call(Linter(app, lambda m, e: None))


# --------------------------------------------------------------------------
# check_app and the command

def test_check_app_of_the_demo_finds_nothing():
    from bridge.demo import app
    result = check_app(app)
    assert result.ok and result.status == "200 OK"
    assert b"Hello from wsgi-bridge" in result.body


def test_check_app_reports_the_linters_problems_and_the_cores_refusal():
    result = check_app(make(headers=[("X Bad", "v")]))
    assert result.problems[:2] == [
        "app: header name 'X Bad' is not a token (RFC 9110 §5.6.2)",
        "app: no Content-Type header (RFC 9110 §8.3: a response with content should have one)",
    ]
    assert len(result.problems) == 3
    assert result.problems[2].startswith("bridge's WSGI core rejected the response: ")
    assert result.status == "500 Internal Server Error"


def test_check_app_reports_what_only_the_core_rejects():
    # Non-latin-1 header values pass wsgiref.validate; bridge's core rejects them.
    result = check_app(make(headers=[("Content-Type", "text/plain"), ("X-Euro", "\u20ac")]))
    assert "bridge's WSGI core rejected the response: header 'X-Euro' value is not latin-1 encodable " \
           "(PEP 3333 bytes as str): '€'" in result.problems


def test_check_app_reports_an_app_exception_with_its_traceback():
    def app(environ, start_response):
        raise KeyError("boom")
    result = check_app(app)
    assert result.problems == ["app: raised KeyError: 'boom'"]
    assert result.show_log and "Traceback" in result.log


def test_check_app_does_not_blame_wsgiref_for_the_apps_own_warnings():
    import warnings

    def app(environ, start_response):
        warnings.warn("old API", DeprecationWarning)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x"]
    with pytest.warns(DeprecationWarning, match="old API"):    # shown as usual
        result = check_app(app)
    assert result.ok


BAD_APPS = textwrap.dedent('''\
    def good(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    def bad(environ, start_response):
        start_response("200 OK", [("X Bad", "v")])
        return [b"hi"]

    def raises(environ, start_response):
        raise ZeroDivisionError("divided")

    def routes(environ, start_response):
        import json
        path = environ["PATH_INFO"]
        if path == "/broken":
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"down"]
        if path == "/missing":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no"]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        seen = {k: v for k, v in environ.items() if isinstance(v, str)}
        seen["body"] = body.decode("latin-1")
        out = json.dumps(seen, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [out]
''')


def run_check(spec, tmp_path, *options):
    (tmp_path / "checkapps.py").write_text(BAD_APPS)
    return subprocess.run(bridge_command("check", spec, *options), cwd=tmp_path, env=bridge_env(),
                          capture_output=True, text=True, timeout=60)


def test_bridge_check_of_a_good_app_exits_0(tmp_path):
    proc = run_check("checkapps:good", tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == ["bridge check checkapps:good: GET / -> 200 OK, 4 body bytes",
                                        "    Content-Type: text/plain", "no problems found"]


def test_bridge_check_of_a_bad_app_lists_its_problems_and_exits_1(tmp_path):
    proc = run_check("checkapps:bad", tmp_path)
    assert proc.returncode == 1
    assert "3 problems:" in proc.stdout
    assert "  - app: header name 'X Bad' is not a token (RFC 9110 §5.6.2)" in proc.stdout
    assert "wsgiref" not in proc.stdout and proc.stderr == ""


def test_bridge_check_of_a_raising_app_shows_the_traceback_and_exits_1(tmp_path):
    proc = run_check("checkapps:raises", tmp_path)
    assert proc.returncode == 1
    assert "  - app: raised ZeroDivisionError: divided" in proc.stdout
    assert "Traceback" in proc.stdout


def test_bridge_check_of_an_app_that_cannot_load_exits_2(tmp_path):
    proc = run_check("checkapps:missing", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "bridge check: module 'checkapps' has no attribute 'missing'"


# --------------------------------------------------------------------------
# one checker, one verdict: bridge check and --lint agree

def _app(body=None, status="200 OK", headers=(("Content-Type", "text/plain"),), read=None):
    def app(environ, start_response):
        if read is not None:
            read(environ["wsgi.input"])
        start_response(status, list(headers))
        return [b"ok"] if body is None else body
    return app


# PEP 3333 ("Input and Error Streams"): "A server should allow read() to be
# called without an argument, and return the entire remainder of the
# client's input stream": every one of these reads is allowed.
ALLOWED_READS = {
    "read()": lambda s: s.read(),
    "read(None)": lambda s: s.read(None),
    "read(-1)": lambda s: s.read(-1),
    "read(10)": lambda s: s.read(10),
    "readline()": lambda s: s.readline(),
    "readline(5)": lambda s: s.readline(5),
    "readlines()": lambda s: s.readlines(),
    "readlines(5)": lambda s: s.readlines(5),
    "iteration": lambda s: list(s),
}

VERDICT_APPS = {
    **{f"reads with {name}": _app(read=read) for name, read in ALLOWED_READS.items()},
    "good": _app(),
    "read with a str size": _app(read=lambda s: s.read("10")),
    "read with two arguments": _app(read=lambda s: s.read(1, 2)),
    "closes wsgi.input": _app(read=lambda s: s.close()),
    "no Content-Type": _app(headers=()),
    "bad header name": _app(headers=(("Content-Type", "text/plain"), ("X Bad", "v"))),
    "hop-by-hop header": _app(headers=(("Content-Type", "text/plain"), ("Connection", "close"))),
    "status without reason": _app(status="200"),
    "str body": _app(body=["text"]),
    "short of its Content-Length": _app(headers=(("Content-Type", "text/plain"), ("Content-Length", "10"))),
}


def lint_verdict(app):
    """What ``--lint`` logs for one GET of ``app`` through the core."""
    from bridge.middleware.lint import PREFIX, Lint
    lines = []
    environ = synthetic_environ()
    call_app(Lint(app, log=lambda env, line: lines.append(line)), environ, Discard())
    return [line[len(PREFIX):].partition(": ")[2] for line in lines]


class Discard(Transport):
    def send_head(self, status, headers, body, end):
        pass

    def send_body(self, data):
        pass

    def finish(self):
        pass

    def abort(self):
        pass


@pytest.mark.parametrize("name", list(VERDICT_APPS))
def test_bridge_check_and_lint_give_one_verdict(name):
    app = VERDICT_APPS[name]
    checked = check_app(app)
    logged = lint_verdict(app)
    found = [p for p in checked.problems if p.startswith(("app:", "gateway:")) and not p.startswith("app: raised")]
    assert found == logged, name
    assert checked.ok == (not logged), (name, checked.problems)
    assert all(not p.rstrip().endswith(":") for p in checked.problems), checked.problems   # never an empty message
    if name.startswith("reads with") or name == "good":
        assert checked.ok, checked.problems


def test_bridge_check_accepts_read_without_a_size(tmp_path):
    (tmp_path / "readall.py").write_text(textwrap.dedent('''\
        def app(environ, start_response):
            environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"read it all"]
    '''))
    proc = subprocess.run(bridge_command("check", "readall:app"), cwd=tmp_path, env=bridge_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "no problems found"


# --------------------------------------------------------------------------
# bridge check's request options: real routes, not only GET /


def test_check_app_sends_the_method_path_headers_and_body_given():
    import json
    captured = {}

    def app(environ, start_response):
        captured.update(environ)
        captured["body"] = environ["wsgi.input"].read()
        start_response("204 No Content", [])
        return []
    result = check_app(app, "/api/a%20b/../items?page=2&q=%2F", method="PUT",
                       headers=[("Content-Type", "application/json"), ("X-Token", "t"), ("X-Token", "u"),
                                ("Host", "api.example:8443"), ("Cookie", "a=1"), ("Cookie", "b=2")],
                       body=b'{"n": 1}')
    assert result.ok, result.problems
    assert captured["REQUEST_METHOD"] == "PUT"
    assert captured["PATH_INFO"] == "/api/items" and captured["QUERY_STRING"] == "page=2&q=%2F"
    assert captured["REQUEST_URI"] == "/api/a%20b/../items?page=2&q=%2F"
    assert captured["CONTENT_TYPE"] == "application/json" and captured["CONTENT_LENGTH"] == "8"
    assert captured["HTTP_X_TOKEN"] == "t, u" and captured["HTTP_COOKIE"] == "a=1; b=2"
    assert captured["HTTP_HOST"] == "api.example:8443"
    assert captured["body"] == b'{"n": 1}'
    assert "HTTP_CONTENT_TYPE" not in captured and json.dumps(result.status) == '"204 No Content"'


def test_percent_encoded_path_is_decoded_into_path_info_like_the_server_does():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x"]
    check_app(app, "/caf%C3%A9/%2e%2e/x")
    assert seen["PATH_INFO"] == "/x"
    check_app(app, "/caf%C3%A9")
    assert seen["PATH_INFO"] == "/caf\xc3\xa9"


def test_a_server_error_answer_is_a_problem_a_client_error_is_not():
    assert not check_app(make(status="500 Internal Server Error")).ok
    assert "the app answered 503 Service Unavailable: a server error" in check_app(
        make(status="503 Service Unavailable")).problems
    assert check_app(make(status="404 Not Found")).ok


def test_bridge_check_path_method_data_and_headers_reach_the_app(tmp_path):
    import json
    (tmp_path / "body.bin").write_bytes(b"from a file\x00\xff")
    proc = run_check("checkapps:routes", tmp_path, "--path", "/api/items?page=2", "-X", "PATCH",
                     "--data", "@body.bin", "-H", "Content-Type: application/octet-stream",
                     "--header", "X-Request-Id:  abc ")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("bridge check checkapps:routes: PATCH /api/items?page=2 -> 200 OK, ")
    assert lines[-1] == "no problems found"
    proc = run_check("checkapps:routes", tmp_path, "--path", "/echo", "--data", "a=1&b=2")
    assert proc.returncode == 0 and " POST /echo -> 200 OK" in proc.stdout.splitlines()[0]


@pytest.mark.parametrize("path,status", [("/broken", "503 Service Unavailable"), ("/missing", "404 Not Found")])
def test_bridge_check_reports_on_stdout_and_exits_1_only_for_problems(tmp_path, path, status):
    proc = run_check("checkapps:routes", tmp_path, "--path", path)
    assert proc.stderr == ""
    assert proc.stdout.splitlines()[0].endswith(f"GET {path} -> {status}, {4 if path == '/broken' else 2} body bytes")
    if status.startswith("5"):
        assert proc.returncode == 1 and "a server error" in proc.stdout
    else:
        assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "no problems found"


@pytest.mark.parametrize("options,message", [
    (["--path", "api/items"], "bridge check: --path api/items: 'api/items' is not a path and query"),
    (["--path", "/a b"], "is not a path and query"),
    (["--method", "GE T"], "is not an HTTP method"),
    (["-H", "NoColon"], "expected 'Name: value'"),
    (["-H", "Bad Name: v"], "expected 'Name: value'"),
    (["-H", "X-A: a\rb"], "control characters"),
    (["--data", "@/nonexistent/body"], "--data @/nonexistent/body: No such file or directory"),
])
def test_bridge_check_bad_request_options_are_one_line_and_exit_2(tmp_path, options, message):
    proc = run_check("checkapps:good", tmp_path, *options)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_documented_route_check_passes_on_the_demo():
    from support.doc_commands import doc_command
    proc = subprocess.run(doc_command("docs/cgi.md", "check-route"), env=bridge_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == "bridge check bridge.demo:app: POST /echo -> 200 OK, 11 body bytes"
    assert proc.stdout.splitlines()[-1] == "no problems found"


def test_report_escapes_what_the_app_put_in_its_headers():
    from bridge.check import CheckResult, report
    result = CheckResult()
    result.status = "200 OK"
    result.headers = [("X-Evil", "a\r\nSet-Cookie: forged"), ("Content-Type", "text/plain")]
    out = io.StringIO()
    report("app:x", "/", result, out=out)
    lines = out.getvalue().splitlines()
    assert lines[1] == "    X-Evil: a\\x0d\\x0aSet-Cookie: forged"
    assert not any(line.startswith("Set-Cookie") for line in lines)
