"""A WSGI contract checker (PEP 3333) that reports every violation and stops nothing.

``wsgiref.validate`` raises ``AssertionError`` at the first fault it sees,
which kills the request and hides every later fault.  :class:`Linter` wraps
an application the same way (environ, ``start_response``, ``write``,
``wsgi.input``, ``wsgi.errors``, the result iterable and its ``close``) but
hands each violation, as one clear message, to a callback and lets the
request go on unchanged: the gateway's own checks still decide what the
client gets.

Each message starts with whose fault it is: ``app:`` (the application broke
the contract) or ``gateway:`` (the server that built the environ did).

The contract is PEP 3333, not PEP 333: ``wsgi.input.read()`` without a size
is allowed ("A server should allow read() to be called without an
argument, and return the entire remainder of the client's input stream"),
where ``wsgiref.validate`` asserts exactly one argument.

Used by ``bridge check`` (:mod:`bridge.check`) and by the ``Lint``
middleware.  Standard library only; nothing heavy imported.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Iterator, Optional

__all__ = ["Linter", "lint", "REQUIRED_KEYS"]

#: PEP 3333 "environ Variables": keys every environ must have (QUERY_STRING,
#: CONTENT_TYPE and CONTENT_LENGTH "may be empty or absent").
REQUIRED_KEYS = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "wsgi.version", "wsgi.url_scheme", "wsgi.input", "wsgi.errors",
    "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
)

# RFC 9110 §5.6.2: token = 1*tchar
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# RFC 9110 §7.6.1 and PEP 3333 "Other HTTP Features": the gateway's, never the app's.
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"))


def _is_token(text: str) -> bool:
    return bool(text) and all(c in TCHAR for c in text)


def _control_chars(text: str) -> bool:
    # RFC 9110 §5.5: field values are VCHAR, obs-text, SP and HTAB.
    return any((c < " " and c != "\t") or c == "\x7f" for c in text)


def _not_latin1(text: str) -> bool:
    return not text.isascii() and max(text) > "\xff"


def _default_report(message: str, environ: dict) -> None:
    errors = environ.get("wsgi.errors") if isinstance(environ, dict) else None
    try:
        if errors is None:
            import sys
            errors = sys.stderr
        errors.write(f"wsgi lint: {message}\n")
        errors.flush()
    except Exception:
        pass


class Linter:
    """WSGI middleware: check every call between a gateway and ``app``.

    ``report(message, environ)`` is called once per distinct violation of a
    request (default: a ``wsgi lint:`` line on ``wsgi.errors``).  The
    request itself is passed through untouched, except that a result
    iterable is wrapped to watch it (a list or a ``wsgi.file_wrapper``
    object is checked at once and passed through as it is, so the gateway
    still sets Content-Length or uses sendfile).
    """

    def __init__(self, app: Callable, report: Optional[Callable[[str, dict], None]] = None) -> None:
        self.app = app
        self.report = report or _default_report

    def __call__(self, environ: dict, start_response: Callable) -> Iterable:
        request = _Request(self.report, environ)
        request.check_environ()
        if isinstance(environ, dict):
            inp = environ.get("wsgi.input")
            if inp is not None:
                environ["wsgi.input"] = _Input(inp, request)
            err = environ.get("wsgi.errors")
            if err is not None:
                environ["wsgi.errors"] = _Errors(err, request)
        result = self.app(environ, request.wrap_start_response(start_response))
        return request.wrap_result(result)


def lint(app: Callable, report: Optional[Callable[[str, dict], None]] = None) -> Linter:
    """``lint(app, report)`` is ``Linter(app, report)``."""
    return Linter(app, report)


class _Request:
    """What one request has done so far, and the checks on it."""

    def __init__(self, report: Callable, environ: Any) -> None:
        self._report = report
        self.environ = environ
        self.seen: set = set()
        self.status: Optional[str] = None
        self.headers_sent = False
        self.content_length: Optional[int] = None
        self.body_bytes = 0
        self.method = environ.get("REQUEST_METHOD", "GET") if isinstance(environ, dict) else "GET"

    def problem(self, message: str) -> None:
        if message in self.seen:
            return
        self.seen.add(message)
        try:
            self._report(message, self.environ)
        except Exception:
            pass

    # -- the environ (the gateway's side) ----------------------------------

    def check_environ(self) -> None:
        env = self.environ
        p = self.problem
        if type(env) is not dict:
            p(f"gateway: environ must be a dict (PEP 3333), got {type(env).__name__}")
            return
        for key in REQUIRED_KEYS:
            if key not in env:
                p(f"gateway: environ lacks the required key {key!r}")
        for key, value in env.items():
            if type(key) is not str:
                p(f"gateway: environ key {key!r} is not a str")
            elif "." not in key:
                if type(value) is not str:
                    p(f"gateway: environ[{key!r}] must be a native str, got {type(value).__name__}")
                elif _not_latin1(value):
                    p(f"gateway: environ[{key!r}] has characters beyond latin-1; PEP 3333 wants bytes "
                      f"decoded as latin-1 ('bytes as str'): {value!r}")
        if env.get("wsgi.version", (1, 0)) != (1, 0) or type(env.get("wsgi.version", ())) is not tuple:
            p(f"gateway: wsgi.version must be the tuple (1, 0), got {env.get('wsgi.version')!r}")
        if "wsgi.url_scheme" in env and env["wsgi.url_scheme"] not in ("http", "https"):
            p(f"gateway: wsgi.url_scheme must be 'http' or 'https', got {env['wsgi.url_scheme']!r}")
        for key in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"):
            if key in env and type(env[key]) is not bool:
                p(f"gateway: {key} must be a bool, got {env[key]!r}")
        inp = env.get("wsgi.input")
        if inp is not None:
            missing = [m for m in ("read", "readline", "readlines", "__iter__") if not hasattr(inp, m)]
            if missing:
                p(f"gateway: wsgi.input lacks {', '.join(missing)}")
        err = env.get("wsgi.errors")
        if err is not None:
            missing = [m for m in ("write", "writelines", "flush") if not hasattr(err, m)]
            if missing:
                p(f"gateway: wsgi.errors lacks {', '.join(missing)}")
        for key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            if key in env:
                p(f"gateway: environ has {key}; it must be {key[5:]} (RFC 3875 §4.1.18)")
        script, path = env.get("SCRIPT_NAME", ""), env.get("PATH_INFO", "")
        if isinstance(script, str) and script and not script.startswith("/"):
            p(f"gateway: SCRIPT_NAME must be empty or start with '/', got {script!r}")
        if script == "/":
            p("gateway: SCRIPT_NAME must not be '/': an app at the root has SCRIPT_NAME '' and PATH_INFO '/...'")
        if isinstance(path, str) and path and not path.startswith("/"):
            p(f"gateway: PATH_INFO must be empty or start with '/', got {path!r}")
        method = env.get("REQUEST_METHOD")
        if isinstance(method, str) and not _is_token(method):
            p(f"gateway: REQUEST_METHOD {method!r} is not an HTTP token")
        for key in ("CONTENT_LENGTH", "SERVER_PORT"):
            value = env.get(key)
            if isinstance(value, str) and value and not (value.isdigit() and value.isascii()):
                p(f"gateway: {key} must be digits, got {value!r}")

    # -- start_response and write (the app's side) -------------------------

    def wrap_start_response(self, start_response: Callable) -> Callable:
        def checked_start_response(*args: Any, **kwargs: Any) -> Callable:
            self.check_start_response(args, kwargs)
            write = start_response(*args, **kwargs)
            return self.wrap_write(write)
        return checked_start_response

    def check_start_response(self, args: tuple, kwargs: dict) -> None:
        p = self.problem
        if kwargs:
            p(f"app: start_response takes positional arguments (status, headers[, exc_info]), got "
              f"keywords {sorted(kwargs)}")
        args = args + tuple(kwargs.values())
        if not 2 <= len(args) <= 3:
            p(f"app: start_response takes 2 or 3 arguments, got {len(args)}")
            return
        status, headers = args[0], args[1]
        exc_info = args[2] if len(args) == 3 else None
        if exc_info is not None:
            if not (type(exc_info) is tuple and len(exc_info) == 3 and isinstance(exc_info[1], BaseException)):
                p(f"app: exc_info must be None or the sys.exc_info() triple, got {exc_info!r}")
        elif self.status is not None:
            p("app: start_response called a second time without exc_info (PEP 3333 allows that only "
              "to replace the headers after an error)")
        self.check_status(status)
        self.check_headers(headers, status if isinstance(status, str) else "")
        if isinstance(status, str):
            self.status = status

    def check_status(self, status: Any) -> None:
        p = self.problem
        if type(status) is not str:
            p(f"app: status must be a str, got {type(status).__name__}: {status!r}")
            return
        code = status[:3]
        if not (len(status) >= 5 and code.isdigit() and code.isascii() and status[3] == " " and status[4:].strip()):
            p(f"app: status must be a three-digit code, a space and a reason phrase ('200 OK'), got {status!r}")
        elif not 200 <= int(code) <= 599:
            p(f"app: status code {code} is outside 100-599" if not 100 <= int(code) <= 599 else
              f"app: status code {code} is informational (1xx): a final response is 200-599")
        if _control_chars(status):
            p(f"app: status contains a control character: {status!r}")
        if _not_latin1(status):
            p(f"app: status is not latin-1 encodable: {status!r}")

    def check_headers(self, headers: Any, status: str) -> None:
        p = self.problem
        if type(headers) is not list:
            p(f"app: response headers must be a list (PEP 3333), got {type(headers).__name__}")
            if not isinstance(headers, (tuple, list)):
                return
        self.content_length = None
        names = set()
        for item in headers:
            if type(item) is not tuple or len(item) != 2:
                p(f"app: each header must be a (name, value) tuple, got {item!r}")
                continue
            name, value = item
            if type(name) is not str or type(value) is not str:
                p(f"app: header name and value must be str, got ({type(name).__name__}, "
                  f"{type(value).__name__}): {item!r}")
                continue
            lower = name.lower()
            if not _is_token(name):
                p(f"app: header name {name!r} is not a token (RFC 9110 §5.6.2)")
            elif lower == "status":
                p("app: 'Status' is not a header: the status goes in start_response's first argument")
            elif lower in HOP_BY_HOP:
                p(f"app: hop-by-hop header {name!r} is the gateway's to set (PEP 3333), not the app's")
            if _control_chars(value):
                p(f"app: header {name!r} value contains a control character (CR, LF, NUL...): {value!r}")
            if _not_latin1(value):
                p(f"app: header {name!r} value is not latin-1 encodable: {value!r}")
            if value != value.strip(" \t"):
                p(f"app: header {name!r} value has leading or trailing whitespace: {value!r}")
            if lower == "content-length":
                if "content-length" in names:
                    p("app: more than one Content-Length header")
                if value.isdigit() and value.isascii():
                    self.content_length = int(value)
                else:
                    p(f"app: Content-Length must be digits, got {value!r}")
            names.add(lower)
        code = status[:3]
        if "content-type" not in names and code not in ("204", "304") and not code.startswith("1"):
            # wsgiref.validate insists; RFC 9110 §8.3 says SHOULD.
            p("app: no Content-Type header (RFC 9110 §8.3: a response with content should have one)")

    def wrap_write(self, write: Callable) -> Callable:
        def checked_write(data: Any) -> None:
            self.check_chunk(data, "write()")
            return write(data)
        return checked_write

    def check_chunk(self, data: Any, where: str) -> None:
        if type(data) is not bytes:
            self.problem(f"app: {where} must give bytes, got {type(data).__name__}: {data!r:.60}")
            return
        if self.status is None:
            self.problem(f"app: body data from {where} before start_response() was called")
        if data:
            self.headers_sent = True
            self.body_bytes += len(data)

    # -- the result ----------------------------------------------------------

    def wrap_result(self, result: Any) -> Any:
        p = self.problem
        if isinstance(result, (str, bytes, bytearray)):
            p(f"app: returned {type(result).__name__} instead of an iterable of bytes "
              f"(wrap it in a list: [body])")
            return result
        try:
            iter(result)
        except TypeError:
            p(f"app: returned {type(result).__name__}, which is not iterable")
            return result
        if type(result) in (list, tuple):
            for chunk in result:
                self.check_chunk(chunk, "the returned list")
            self.check_length()
            return result
        file_wrapper = self.environ.get("wsgi.file_wrapper") if isinstance(self.environ, dict) else None
        if file_wrapper is not None and isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            if self.status is None:
                p("app: returned wsgi.file_wrapper(...) before calling start_response()")
            return result
        return _Result(result, self)

    def check_length(self) -> None:
        code = (self.status or "")[:3]
        if (self.content_length is None or self.method == "HEAD"
                or code in ("204", "304") or code.startswith("1")):
            return
        if self.body_bytes != self.content_length:
            self.problem(f"app: sent {self.body_bytes} body bytes for a Content-Length of {self.content_length}")


class _Result:
    """The app's iterable, watched: items are bytes, start_response came first, close()."""

    def __init__(self, result: Any, request: _Request) -> None:
        self._result = result
        self._iter: Optional[Iterator] = None
        self._request = request
        self._closed = False
        self._done = False

    def __iter__(self) -> "_Result":
        return self

    def __next__(self) -> Any:
        if self._closed:
            self._request.problem("gateway: iterated the app's result after calling its close()")
        if self._iter is None:
            self._iter = iter(self._result)
        try:
            chunk = next(self._iter)
        except StopIteration:
            if not self._done:
                self._done = True
                if self._request.status is None:
                    self._request.problem("app: the result ended without start_response() being called")
                self._request.check_length()
            raise
        self._request.check_chunk(chunk, "the result iterable")
        return chunk

    def close(self) -> None:
        if self._closed:
            self._request.problem("gateway: called close() on the app's result twice")
        self._closed = True
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class _Input:
    """wsgi.input, watched: the gateway returns bytes, the app passes sane sizes."""

    def __init__(self, stream: Any, request: _Request) -> None:
        self._stream = stream
        self._request = request

    def _check_size(self, method: str, size: Any) -> None:
        if size is not None and type(size) is not int:
            self._request.problem(f"app: wsgi.input.{method}() size must be an int, got {size!r}")

    def _check_data(self, method: str, data: Any) -> Any:
        if type(data) is not bytes:
            self._request.problem(f"gateway: wsgi.input.{method}() returned {type(data).__name__}, not bytes")
        return data

    def read(self, *args: Any) -> bytes:
        if len(args) > 1:
            self._request.problem(f"app: wsgi.input.read() takes at most one argument, got {len(args)}")
        if args:
            self._check_size("read", args[0])
        data = self._check_data("read", self._stream.read(*args))
        if args and isinstance(args[0], int) and args[0] >= 0 and isinstance(data, bytes) and len(data) > args[0]:
            self._request.problem(f"gateway: wsgi.input.read({args[0]}) returned {len(data)} bytes")
        return data

    def readline(self, *args: Any) -> bytes:
        if len(args) > 1:
            self._request.problem(f"app: wsgi.input.readline() takes at most one argument, got {len(args)}")
        if args:
            self._check_size("readline", args[0])
        return self._check_data("readline", self._stream.readline(*args))

    def readlines(self, *args: Any) -> list:
        if len(args) > 1:
            self._request.problem(f"app: wsgi.input.readlines() takes at most one argument, got {len(args)}")
        lines = self._stream.readlines(*args)
        if type(lines) is not list:
            self._request.problem(f"gateway: wsgi.input.readlines() returned {type(lines).__name__}, not a list")
        for line in lines:
            self._check_data("readlines", line)
        return lines

    def __iter__(self) -> Iterator:
        for line in self._stream:
            yield self._check_data("__iter__", line)

    def close(self) -> None:
        self._request.problem("app: called wsgi.input.close(); the input stream is the gateway's to close")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Errors:
    """wsgi.errors, watched: the app writes str (a text stream, PEP 3333)."""

    def __init__(self, stream: Any, request: _Request) -> None:
        self._stream = stream
        self._request = request

    def write(self, text: Any) -> Any:
        if type(text) is not str:
            self._request.problem(f"app: wsgi.errors.write() takes str, got {type(text).__name__}")
        return self._stream.write(text)

    def writelines(self, lines: Iterable) -> Any:
        lines = list(lines)
        for line in lines:
            if type(line) is not str:
                self._request.problem(f"app: wsgi.errors.writelines() takes str lines, got {type(line).__name__}")
                break
        return self._stream.writelines(lines)

    def flush(self) -> Any:
        return self._stream.flush()

    def close(self) -> None:
        self._request.problem("app: called wsgi.errors.close(); the error stream is the gateway's")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
