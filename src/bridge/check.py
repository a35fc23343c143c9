"""``bridge check APP``: load the app, send it one GET, say what is wrong.

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


def synthetic_environ(path: str = "/", script_name: str = "", errors: Any = None) -> dict:
    """The environ of ``GET path`` as a web server would build it."""
    from bridge import __version__
    from bridge.wsgi import make_environ
    path_info, _, query = path.partition("?")
    cgi = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": script_name.rstrip("/"),
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
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
    return make_environ(cgi, input=io.BytesIO(b""), errors=errors if errors is not None else io.StringIO(),
                        multithread=False, multiprocess=False)


def check_app(app: Callable, path: str = "/", script_name: str = "") -> CheckResult:
    """Send ``GET path`` to ``app`` under the checker; never raises for the app's faults."""
    from bridge.lint import Linter
    from bridge.wsgi import WSGIError, call_app

    result = CheckResult()
    errors = io.StringIO()
    environ = synthetic_environ(path, script_name, errors)
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
    return result


def _raised(exc: BaseException) -> str:
    """``app: raised KeyError: 'boom'``; never a message that ends in nothing."""
    text = str(exc)
    return f"app: raised {type(exc).__name__}: {text}" if text else f"app: raised {type(exc).__name__}"


def report(spec: str, path: str, result: CheckResult, out: Any = None, err: Any = None) -> int:
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    body = result.body
    status = result.status or "(no response)"
    lines = [f"bridge check {spec}: GET {path} -> {status}, {len(body)} body bytes"]
    for name, value in result.headers:
        lines.append(f"    {name}: {value}")
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
    err.write("\n".join(lines) + "\n")
    return 1


def main(config) -> int:
    """``bridge check APP``."""
    from bridge.loader import load_from_config
    app = load_from_config(config)   # exits 2 with one clear line if it cannot
    path = "/"
    script_name = getattr(config, "script_name", None) or ""
    return report(config.app or "APP", path, check_app(app, path, script_name))
