"""``bridge check APP``: load the app, send it one request, say what is wrong.

``bridge check APP --path /api/items?page=2 --method POST --data @body.json
--header 'Content-Type: application/json'`` tries a real route (curl's
``-X``/``-d``/``-H`` work too); without options it is ``GET /``.  The
report goes to stdout either way: the response's status and headers, then
"no problems found" or the list of problems.  A problem is a fault the
checker saw, what the core refused, an exception the app raised, or a 5xx
answer (a route that fails on a deploy is what the check is for).

Like ``gunicorn --check-config``, but for the application: it is loaded the
way ``bridge cgi/fcgi/http`` would load it, then one synthetic ``GET`` goes
through bridge's own WSGI core with bridge's checker around the app::

    core (bridge.wsgi.call_app)
      -> bridge.lint.Linter   (reports every fault it sees, stops nothing)
        -> the app

One checker, one verdict: ``--lint`` (``bridge.middleware.Lint``) runs the
same :class:`bridge.lint.Linter`, so an app that passes here logs nothing
there and the other way round.  ``wsgiref.validate`` is not stacked on top
any more: it is PEP 333's checker and stops at the first fault with an
``AssertionError``, some without a message (``read()`` without a size,
which PEP 3333 allows, came out as "- wsgiref.validate: " with nothing
after it while ``--lint`` accepted the same app).  What it checks that
PEP 3333 still asks for, ``bridge.lint`` checks too.  On top of the
linter's findings, ``bridge check`` reports what the core refused and an
exception the app raised.  Exit status 0 when nothing is wrong, 1 when
something is, 2 when the app cannot be loaded.
"""
from __future__ import annotations

import io
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

__all__ = ["CheckResult", "check_app", "main"]


class CheckResult:
    """What one checked request showed: the response and every problem found."""

    def __init__(self) -> None:
        self.problems: list = []          # one line each
        self.status: Optional[str] = None
        self.headers: list = []
        self.body = b""
        self.log = ""                     # what was written to wsgi.errors (tracebacks)
        self.show_log = False             # the log explains a problem (the app raised)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Capture:
    """A transport that keeps the response instead of sending it."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        self.parts: list = []

    def send_head(self, status: str, headers: list, body: bytes, end: bool) -> None:
        self.result.status = status
        self.result.headers = list(headers)
        self.parts.append(body)

    def send_body(self, data: bytes) -> None:
        self.parts.append(data)

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Recorder:
    """Outermost wrapper: remembers the exception that ended the request."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.exc: Optional[BaseException] = None

    def __call__(self, environ: dict, start_response: Callable) -> Iterable:
        try:
            result = self.app(environ, start_response)
        except Exception as exc:
            self.exc = exc
            raise
        return _RecordedIterable(result, self)


class _RecordedIterable:
    def __init__(self, result: Any, recorder: _Recorder) -> None:
        self.result = result
        self.recorder = recorder
        self.it = None

    def __iter__(self) -> "_RecordedIterable":
        return self

    def __next__(self) -> Any:
        try:
            if self.it is None:
                self.it = iter(self.result)
            return next(self.it)
        except StopIteration:
            raise
        except Exception as exc:
            self.recorder.exc = exc
            raise

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is None:
            return
        try:
            close()
        except Exception as exc:
            if self.recorder.exc is None:
                self.recorder.exc = exc
            raise


def synthetic_environ(path: str = "/", script_name: str = "", errors: Any = None, *,
                      method: str = "GET", headers: Iterable = (), body: bytes = b"") -> dict:
    """The environ of ``method path`` as a web server would build it.

    ``path`` is the request target as sent (percent-encoded): PATH_INFO is
    decoded and its dot segments removed as ``bridge http`` does, and
    REQUEST_URI keeps it raw.  ``headers`` are ``(name, value)`` pairs; a
    body gets its CONTENT_LENGTH.
    """
    from bridge import __version__
    from bridge.wsgi import decode_path, make_environ, remove_dot_segments
    raw_path, _, query = path.partition("?")
    path_info = decode_path(raw_path.encode("latin-1")) if "%" in raw_path else raw_path
    if "/." in path_info:
        path_info = remove_dot_segments(path_info)
    cgi = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name.rstrip("/"),
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "REQUEST_URI": path,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": f"wsgi-bridge/{__version__} (check)",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "localhost",
        "HTTP_USER_AGENT": f"bridge-check/{__version__}",
        "HTTP_ACCEPT": "*/*",
    }
    given: dict = {}
    for name, value in headers:
        key = _environ_key(name)
        if key in given:
            # RFC 9110 §5.3: repeated fields combine (a Cookie list with "; ").
            given[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            given[key] = value
    cgi.update(given)
    if body or "CONTENT_LENGTH" in given:
        cgi["CONTENT_LENGTH"] = str(len(body))
    return make_environ(cgi, input=io.BytesIO(body), errors=errors if errors is not None else io.StringIO(),
                        multithread=False, multiprocess=False)


def _environ_key(name: str) -> str:
    low = name.lower()
    if low == "content-type":
        return "CONTENT_TYPE"
    if low == "content-length":
        return "CONTENT_LENGTH"
    return "HTTP_" + name.upper().replace("-", "_")


def check_app(app: Callable, path: str = "/", script_name: str = "", *, method: str = "GET",
              headers: Iterable = (), body: bytes = b"") -> CheckResult:
    """Send ``method path`` to ``app`` under the checker; never raises for the app's faults."""
    from bridge.lint import Linter
    from bridge.wsgi import WSGIError, call_app

    result = CheckResult()
    errors = io.StringIO()
    environ = synthetic_environ(path, script_name, errors, method=method, headers=headers, body=body)
    recorder = _Recorder(Linter(app, lambda message, env: result.problems.append(message)))
    transport = _Capture(result)
    response = call_app(recorder, environ, transport)
    result.body = b"".join(transport.parts)
    result.log = errors.getvalue()
    exc = recorder.exc
    if exc is not None:
        if isinstance(exc, WSGIError):
            result.problems.append(f"bridge's WSGI core rejected the response: {exc}")
        else:
            result.problems.append(_raised(exc))
            result.show_log = True
    elif response.failed:
        result.problems.append("the request failed (see the log below)")
        result.show_log = True
    if result.ok and (result.status or "").startswith("5"):
        result.problems.append(f"the app answered {result.status}: a server error")
        result.show_log = True
    return result


def _raised(exc: BaseException) -> str:
    """``app: raised KeyError: 'boom'``; never a message that ends in nothing."""
    text = str(exc)
    return f"app: raised {type(exc).__name__}: {text}" if text else f"app: raised {type(exc).__name__}"


def report(spec: str, path: str, result: CheckResult, out: Any = None, method: str = "GET") -> int:
    """Write the report to ``out`` (stdout), problems or not; 0 when none, 1 otherwise."""
    from bridge.logtext import escape
    out = out if out is not None else sys.stdout
    body = result.body
    status = result.status or "(no response)"
    lines = [f"bridge check {spec}: {method} {escape(path)} -> {status}, {len(body)} body bytes"]
    for name, value in result.headers:
        lines.append(f"    {escape(str(name))}: {escape(str(value))}")    # the app's, possibly with a CR LF
    if result.ok:
        lines.append("no problems found")
        out.write("\n".join(lines) + "\n")
        return 0
    count = len(result.problems)
    lines.append(f"{count} problem{'s' if count != 1 else ''}:")
    lines.extend(f"  - {p}" for p in result.problems)
    if result.show_log and result.log.strip():
        lines.append("log (wsgi.errors):")
        lines.extend("    " + line for line in result.log.rstrip("\n").splitlines())
    out.write("\n".join(lines) + "\n")
    return 1


def request_body(data: Optional[str]) -> bytes:
    """``--data``: the text itself (UTF-8), or ``@FILE``'s bytes as curl reads them."""
    if not data:
        return b""
    if data.startswith("@"):
        with open(data[1:], "rb") as f:
            return f.read()
    return data.encode("utf-8")


def main(config) -> int:
    """``bridge check APP [--path P] [--method M] [--data BODY] [--header 'Name: value']...``."""
    from bridge.loader import load_from_config
    path = getattr(config, "check_path", None) or "/"
    data = getattr(config, "check_data", None)
    try:
        body = request_body(data)
    except OSError as exc:
        sys.stderr.write(f"bridge check: --data {data}: {exc.strerror or exc}\n")
        return 2
    method = getattr(config, "check_method", None) or ("POST" if data is not None else "GET")
    headers = list(getattr(config, "check_headers", None) or [])
    app = load_from_config(config)   # exits 2 with one clear line if it cannot
    script_name = getattr(config, "script_name", None) or ""
    result = check_app(app, path, script_name, method=method, headers=headers, body=body)
    return report(config.app or "APP", path, result, method=method)
