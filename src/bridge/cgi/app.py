"""Running CGI scripts as a WSGI app (RFC 3875, the server's side).

``CGIApp("/usr/lib/cgi-bin/report.pl")`` is a WSGI app that runs the script
once per request; ``CGIApp("/usr/lib/cgi-bin")`` serves a whole directory
the way Apache's ``ScriptAlias`` does (the first path segments name the
script, the rest is its PATH_INFO).  So an old cgi-bin keeps working next to
a Python app while it is replaced one path at a time.

What the RFC asks of the server, and where it is done here:

- §4.1 meta-variables: :func:`cgi_variables` (also used by the FastCGI
  client, which sends the same variables as PARAMS).  The client's
  ``Proxy:`` header never becomes ``HTTP_PROXY`` (httpoxy, CVE-2016-5385),
  and nothing else of this process's environment leaks in except ``PATH``.
- §4.2 the body on stdin, exactly CONTENT_LENGTH bytes; §7.2 the working
  directory is the script's.  No command-line arguments from the query
  string (§4.4 leaves it to the server; it was CVE-2012-1823).
- §6 the response: :func:`find_head_end` / :func:`parse_head` (also used
  by the FastCGI client for STDOUT); ``Status:``, ``Location:`` (§6.2.2 local
  redirects are served again from the top, §6.2.3 client redirects get a
  302), everything else passed on, hop-by-hop fields dropped.

Streams are pumped with ``selectors`` in the calling thread: the body goes
to stdin only when the pipe can take it and stdout/stderr are drained all
along, so a script that writes before it reads cannot deadlock us.  A script
silent for ``timeout`` seconds is killed (504 if it had not answered yet);
one that dies or prints garbage before its header block ends is a 502.  The
reason goes to ``wsgi.errors``; the client only sees the status.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

__all__ = ["CGIApp", "cgi_variables", "find_head_end", "parse_head", "BadResponse", "CGIHead",
           "request_body", "local_redirect", "UpstreamError"]

#: A header block larger than this is garbage, not a CGI response.
MAX_HEAD = 64 * 1024

#: RFC 9110 §7.6.1: connection-specific fields; the gateway owns the connection.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
))

# RFC 9110 §5.6.2:  token = 1*tchar
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

#: Variables a web server commonly adds beyond RFC 3875 §4.1 (Apache, nginx's
#: fastcgi_params) that scripts rely on; passed through from the environ.
PASS_THROUGH = frozenset((
    "AUTH_TYPE", "REMOTE_USER", "REMOTE_IDENT", "REMOTE_PORT", "SERVER_ADDR", "HTTPS",
    "REQUEST_URI", "DOCUMENT_URI", "CONTEXT_PREFIX", "CONTEXT_DOCUMENT_ROOT", "UNIQUE_ID",
))


# --------------------------------------------------------------------------
# RFC 3875 §4.1: request meta-variables


def _quote_path(path: str) -> str:
    from urllib.parse import quote
    return quote(path.encode("latin-1"), safe="/;=,@:!$&'()*+~")


def cgi_variables(environ: dict, *, script_name: Optional[str] = None, path_info: Optional[str] = None,
                  script_filename: Optional[str] = None, document_root: Optional[str] = None,
                  content_length: Optional[int] = None) -> dict:
    """The CGI meta-variables (str → latin-1 str) for a WSGI request.

    RFC 3875 §4.1 variables, every ``HTTP_*`` header except ``HTTP_PROXY``,
    ``SSL_*`` and the usual server extras (``REQUEST_URI``, ``HTTPS``,
    ``REQUEST_SCHEME``, ``SCRIPT_FILENAME``, ``DOCUMENT_ROOT``...).
    ``content_length`` is the body's real length (``None`` = no body).
    """
    env = {}
    for key, value in environ.items():
        if type(value) is not str:
            continue
        if key.startswith("HTTP_") or key.startswith("SSL_") or key in PASS_THROUGH:
            env[key] = value
    env.pop("HTTP_PROXY", None)
    # §4.1.18: Content-Length/Type travel as CONTENT_*; a client cannot forge them as headers.
    env.pop("HTTP_CONTENT_LENGTH", None)
    env.pop("HTTP_CONTENT_TYPE", None)
    sn = environ.get("SCRIPT_NAME", "") if script_name is None else script_name
    pi = environ.get("PATH_INFO", "") if path_info is None else path_info
    scheme = environ.get("wsgi.url_scheme", "http")
    from bridge import __version__
    env["GATEWAY_INTERFACE"] = "CGI/1.1"                                     # §4.1.4
    env["SERVER_SOFTWARE"] = environ.get("SERVER_SOFTWARE") or f"wsgi-bridge/{__version__}"  # §4.1.17
    env["SERVER_NAME"] = environ.get("SERVER_NAME", "localhost")             # §4.1.14
    env["SERVER_PORT"] = str(environ.get("SERVER_PORT", "80"))               # §4.1.15
    env["SERVER_PROTOCOL"] = environ.get("SERVER_PROTOCOL", "HTTP/1.0")      # §4.1.16
    env["REQUEST_METHOD"] = environ.get("REQUEST_METHOD", "GET")             # §4.1.12
    env["SCRIPT_NAME"] = sn                                                  # §4.1.13
    env["PATH_INFO"] = pi                                                    # §4.1.5
    env["QUERY_STRING"] = environ.get("QUERY_STRING", "")                    # §4.1.7
    addr = environ.get("REMOTE_ADDR", "")
    env["REMOTE_ADDR"] = addr                                                # §4.1.8
    env["REMOTE_HOST"] = environ.get("REMOTE_HOST") or addr                  # §4.1.9: address if no name
    if content_length is not None:                                           # §4.1.2
        env["CONTENT_LENGTH"] = str(content_length)
    ctype = environ.get("CONTENT_TYPE")
    if ctype:                                                                # §4.1.3
        env["CONTENT_TYPE"] = ctype
    if document_root:
        env["DOCUMENT_ROOT"] = document_root
        if pi:                                                               # §4.1.6
            env["PATH_TRANSLATED"] = document_root.rstrip("/") + pi
    if script_filename:
        env["SCRIPT_FILENAME"] = script_filename
    env["REQUEST_SCHEME"] = scheme
    if scheme == "https":
        env["HTTPS"] = "on"
    if "REQUEST_URI" not in env:
        uri = _quote_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        env["REQUEST_URI"] = uri + ("?" + env["QUERY_STRING"] if env["QUERY_STRING"] else "")
    return env


# --------------------------------------------------------------------------
# RFC 3875 §6: the script's response
#
#   CGI-Response   = document-response | local-redir-response |
#                    client-redir-response | client-redirdoc-response
#   header-field   = CGI-field | other-field
#   CGI-field      = Content-Type | Location | Status
#   Status         = "Status:" status-code SP reason-phrase NL
#   NL             = CR LF | LF   (§2.2: "the response ... MAY use LF alone")


class BadResponse(Exception):
    """The script's (or FastCGI backend's) output is not a CGI response: answer 502."""


class CGIHead:
    """A parsed header block: ``status`` (``None`` if not given), ``headers``, ``location``."""

    __slots__ = ("status", "headers", "location")

    def __init__(self, status: Optional[str], headers: list, location: Optional[str]) -> None:
        self.status = status
        self.headers = headers
        self.location = location

    @property
    def is_local_redirect(self) -> bool:
        """§6.2.2: a ``Location`` that is a local path and no ``Status``."""
        return self.status is None and self.location is not None and self.location.startswith("/") \
            and not self.location.startswith("//")

    def final_status(self) -> str:
        if self.status is not None:
            return self.status
        if self.location is not None:
            return "302 Found"   # §6.2.3/§6.2.4: client redirect
        return "200 OK"          # §6.3.3: "200 OK" when Status is omitted

    def __repr__(self) -> str:
        return f"CGIHead({self.status!r}, {self.headers!r}, {self.location!r})"


def find_head_end(buf: bytes, start: int = 0) -> Optional[tuple]:
    """``(head_length, body_start)`` once ``buf`` holds the blank line ending the header block.

    Lines end in LF or CRLF (§6.1, §2.2).  ``start`` lets a caller resume the
    search where the previous one stopped (pass the returned value of
    :func:`head_search_resume`).  ``None`` while the blank line has not come.
    """
    if buf.startswith(b"\n"):
        return 0, 1
    if buf.startswith(b"\r\n"):
        return 0, 2
    i = max(start, 0)
    while True:
        i = buf.find(b"\n", i)
        if i < 0:
            return None
        j = i + 1
        if buf[j:j + 1] == b"\n":
            return i + 1, j + 1
        if buf[j:j + 2] == b"\r\n":
            return i + 1, j + 2
        if j >= len(buf) - 1:
            return None   # maybe "\n\r" then "\n" next time: look again from here
        i = j


def head_search_resume(buf: bytes) -> int:
    """Where :func:`find_head_end` may resume after ``buf`` grows (a LF may be split off)."""
    return max(0, len(buf) - 3)


def _reason(code: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def parse_head(head: bytes) -> CGIHead:
    """Parse the header block (everything before the blank line) of a CGI response.

    Raises :class:`BadResponse` with the reason when it is not one: a line
    without a colon, a bad field name, a bad ``Status``, a control
    character, or no CGI field at all (§6.2: a response has at least one of
    Content-Type, Location, Status).
    """
    status = None
    location = None
    headers: list = []
    has_type = False
    for raw in head.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            # obs-fold (RFC 9112 §5.2): a continuation joins the previous field.
            if not headers:
                raise BadResponse(f"header block starts with a continuation line: {raw[:80]!r}")
            name, value = headers[-1]
            headers[-1] = (name, value + " " + raw.strip().decode("latin-1"))
            continue
        name, colon, value = raw.partition(b":")
        if not colon:
            raise BadResponse(f"header line without a colon: {raw[:80]!r}")
        try:
            name_s = name.decode("ascii")
        except UnicodeDecodeError:
            raise BadResponse(f"header name is not ASCII: {name[:80]!r}") from None
        if not name_s or not all(c in TCHAR for c in name_s):
            raise BadResponse(f"invalid header name {name[:80]!r}")
        value_s = value.strip(b" \t").decode("latin-1")
        if any(c < " " and c != "\t" or c == "\x7f" for c in value_s):
            raise BadResponse(f"control character in the {name_s} header: {value[:80]!r}")
        lower = name_s.lower()
        if lower == "status":
            if status is not None:
                raise BadResponse("two Status header fields")
            code = value_s[:3]
            if len(code) != 3 or not code.isdigit() or not code.isascii() or not 200 <= int(code) <= 599 \
                    or (len(value_s) > 3 and value_s[3] != " "):
                raise BadResponse(f"invalid Status {value_s[:80]!r}")
            reason = value_s[4:].strip() or _reason(int(code))
            status = f"{code} {reason}"
        elif lower == "location":
            if location is not None:
                raise BadResponse("two Location header fields")
            if not value_s:
                raise BadResponse("empty Location header")
            location = value_s
            headers.append(("Location", value_s))
        elif lower in HOP_BY_HOP:
            continue
        else:
            if lower == "content-type":
                has_type = True
            elif lower == "content-length" and not (value_s.isdigit() and value_s.isascii()):
                raise BadResponse(f"invalid Content-Length {value_s[:80]!r}")
            headers.append((name_s, value_s))
    if status is None and location is None and not has_type:
        raise BadResponse("no Status, Location or Content-Type header: not a CGI response")
    return CGIHead(status, headers, location)


# --------------------------------------------------------------------------
# the WSGI app


def _log(environ: dict, message: str) -> None:
    errors = environ.get("wsgi.errors")
    if errors is None:
        import sys
        errors = sys.stderr
    try:
        errors.write(message.rstrip("\n") + "\n")
        errors.flush()
    except Exception:
        pass


def _plain(start_response: Callable, status: str, body: Optional[bytes] = None) -> list:
    body = (status[4:] + "\n").encode("latin-1") if body is None else body
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


class _Timeout(Exception):
    pass


class UpstreamError(Exception):
    """The script or backend failed after the response head was sent: the response is cut off."""


def request_body(environ: dict) -> tuple:
    """``(stream, length)`` of the request body; ``(None, None)`` when there is none.

    RFC 3875 §4.1.2 wants CONTENT_LENGTH whenever there is a body, so a
    body of unknown length (HTTP/1.1 chunked, ``wsgi.input_terminated``)
    is spooled first (to disk past 1 MiB, never whole in memory).
    """
    stream = environ.get("wsgi.input")
    raw = environ.get("CONTENT_LENGTH", "")
    if raw:
        try:
            length = int(raw)
        except ValueError:
            length = 0
        return (stream, length) if length > 0 else (None, None)
    if stream is not None and environ.get("wsgi.input_terminated"):
        import tempfile
        spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        length = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            spool.write(chunk)
            length += len(chunk)
        spool.seek(0)
        return (spool, length) if length else (None, None)
    return None, None


def local_redirect(app: Callable, environ: dict, location: str, start_response: Callable,
                   max_redirects: int = 10) -> Iterable[bytes]:
    """§6.2.2: serve ``location`` as if the client had asked for it, with GET and no body.

    From the top of the outermost :func:`bridge.mount` if there is one (the
    new path may belong to another app), else through ``app`` itself when
    the path is under its SCRIPT_NAME, else as a 302 the client follows.
    """
    depth = environ.get("bridge.cgi.redirects", 0) + 1
    if depth > max_redirects:
        _log(environ, f"bridge: more than {max_redirects} CGI local redirects "
                      f"(last to {location}); giving up (500)")
        return _plain(start_response, "500 Internal Server Error")
    from bridge.middleware.mount import ROOT_KEY
    from bridge.wsgi import decode_path
    import io
    uri = location.partition("#")[0]
    raw_path, _, query = uri.partition("?")
    path = decode_path(raw_path.encode("latin-1"))
    root = environ.get(ROOT_KEY)
    if root is not None:
        app, base = root
    else:
        base = environ.get("SCRIPT_NAME", "")
    if base and not (path == base or path.startswith(base + "/")):
        # Outside anything this process serves: let the client follow it.
        _log(environ, f"bridge: CGI local redirect to {location} is outside {base or '/'}; "
                      f"sent as a 302 instead")
        start_response("302 Found", [("Location", location), ("Content-Length", "0")])
        return [b""]
    new = dict(environ)
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE", "wsgi.input_terminated"):
        new.pop(key, None)
    new["REQUEST_METHOD"] = "GET"
    new["wsgi.input"] = io.BytesIO(b"")
    new["SCRIPT_NAME"] = base
    new["PATH_INFO"] = path[len(base):]
    new["QUERY_STRING"] = query
    new["REQUEST_URI"] = uri
    new["bridge.cgi.redirects"] = depth
    return app(new, start_response)


class CGIApp:
    """Run a CGI script (or any script of a cgi-bin directory) per request.

    ``script``: an executable file, or a directory whose executable files
    are served the way Apache's ``ScriptAlias`` serves a cgi-bin.
    ``timeout``: seconds the script may stay silent (no output, no input
    taken) before it is killed.  ``document_root``: sets DOCUMENT_ROOT and
    PATH_TRANSLATED.  ``env``: extra environment variables for the script.
    ``max_redirects``: local redirects (§6.2.2) followed for one request.
    """

    def __init__(self, script: str, *, timeout: float = 60.0, document_root: Optional[str] = None,
                 env: Optional[dict] = None, max_redirects: int = 10) -> None:
        path = os.path.abspath(os.fspath(script))
        if not os.path.exists(path):
            raise FileNotFoundError(f"CGI script {path} does not exist")
        self.is_directory = os.path.isdir(path)
        if not self.is_directory and not os.access(path, os.X_OK):
            raise PermissionError(f"CGI script {path} is not executable (chmod +x it)")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.script = path
        self.timeout = float(timeout)
        self.document_root = document_root
        self.max_redirects = max_redirects
        base = {"PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin"}
        base.update(env or {})
        self._base_env = {k.encode("latin-1"): v.encode("latin-1") for k, v in base.items()}

    def __repr__(self) -> str:
        return f"CGIApp({self.script!r})"

    # -- which script -------------------------------------------------------

    def _locate(self, script_name: str, path_info: str) -> tuple:
        """``(status, file, script_name, path_info)``; status is None when a script was found.

        In directory mode, walk PATH_INFO's segments down the tree until one
        names a file (Apache's ScriptAlias): ``/sub/run.sh/x`` → script
        ``sub/run.sh``, PATH_INFO ``/x``.  Hidden names, ``.`` and ``..``
        are never served.
        """
        if not self.is_directory:
            return None, self.script, script_name, path_info
        current = self.script
        consumed = ""
        rest = path_info
        while True:
            if not rest.startswith("/") or rest == "/":
                return "404 Not Found", None, None, None
            seg, slash, tail = rest[1:].partition("/")
            if not seg or seg.startswith(".") or "\0" in seg:
                return "404 Not Found", None, None, None
            current = os.path.join(current, seg)
            consumed += "/" + seg
            rest = slash + tail
            try:
                st = os.stat(current)
            except (OSError, ValueError):
                return "404 Not Found", None, None, None
            if os.path.isdir(current):
                continue
            if not (st.st_mode & 0o170000 == 0o100000):
                return "404 Not Found", None, None, None
            if not os.access(current, os.X_OK):
                return "403 Forbidden", current, None, None
            return None, current, script_name + consumed, rest

    # -- one request --------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        status, script, script_name, path_info = self._locate(
            environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
        if status is not None:
            if script is not None:
                _log(environ, f"bridge: CGI script {script} is not executable")
            return _plain(start_response, status)
        body, length = request_body(environ)
        variables = cgi_variables(environ, script_name=script_name, path_info=path_info,
                                  script_filename=script, document_root=self.document_root,
                                  content_length=length)
        env = dict(self._base_env)
        for key, value in variables.items():
            if "\0" not in value:
                env[key.encode("latin-1")] = value.encode("latin-1")
        try:
            run = _Run(script, env, body, length or 0, self.timeout, environ)
        except OSError as exc:
            _log(environ, f"bridge: cannot run CGI script {script}: {exc.strerror or exc}")
            return _plain(start_response, "502 Bad Gateway")
        try:
            head = run.read_head()
        except _Timeout:
            run.shutdown(0)
            _log(environ, f"bridge: CGI script {script} sent no response header within "
                          f"{self.timeout:g}s; killed it (504)")
            return _plain(start_response, "504 Gateway Timeout")
        except BadResponse as exc:
            run.shutdown(1.0)
            _log(environ, f"bridge: CGI script {script} did not answer a valid CGI response "
                          f"({exc}){run.exit_note()} (502)")
            return _plain(start_response, "502 Bad Gateway")
        except BaseException:
            run.shutdown(0)
            raise
        if head.is_local_redirect:
            run.shutdown(1.0)
            return local_redirect(self, environ, head.location, start_response, self.max_redirects)
        start_response(head.final_status(), head.headers)
        return run


class _Run:
    """One running script: feeds stdin, drains stderr, hands out stdout; the response iterable."""

    def __init__(self, script: str, env: dict, body: Any, length: int, timeout: float, environ: dict) -> None:
        import selectors
        import subprocess
        self.script = script
        self.environ = environ
        self.timeout = timeout
        self.body = body
        self.left = length if body is not None else 0
        self.pending = b""
        self.proc = subprocess.Popen(
            [script], executable=script, env=env, cwd=os.path.dirname(script),
            stdin=subprocess.PIPE if self.left else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)   # its own process group: a timeout kills its children too
        self.sel = selectors.DefaultSelector()
        self.out_fd = self.proc.stdout.fileno()
        self.err_fd = self.proc.stderr.fileno()
        self.in_fd = self.proc.stdin.fileno() if self.left else -1
        for fd in (self.out_fd, self.err_fd, self.in_fd):
            if fd >= 0:
                os.set_blocking(fd, False)
        self.sel.register(self.out_fd, selectors.EVENT_READ)
        self.sel.register(self.err_fd, selectors.EVENT_READ)
        if self.in_fd >= 0:
            self.sel.register(self.in_fd, selectors.EVENT_WRITE)
        self.err_buf = b""
        self.out_eof = False
        self.rest = b""       # body bytes read along with the header block
        self.closed = False
        self.killed = False

    # The selector loop: one round, returning what stdout gave (b"" = EOF, None = nothing).
    def _step(self, deadline: float) -> Optional[bytes]:
        import time
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise _Timeout()
        events = self.sel.select(wait)
        if not events:
            raise _Timeout()
        out = None
        for key, _mask in events:
            fd = key.fd
            if fd == self.out_fd:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    self.sel.unregister(fd)
                    self.out_eof = True
                out = data
            elif fd == self.err_fd:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    self._stderr(data)
                else:
                    self.sel.unregister(fd)
                    self._stderr(b"", end=True)
            elif fd == self.in_fd:
                self._feed()
        return out

    def _feed(self) -> None:
        """Write what the stdin pipe takes now; read more of the body only when it is empty."""
        if not self.pending and self.left:
            chunk = self.body.read(min(self.left, 65536))
            if not chunk:
                # The body ended early: the client went away.  Let the script see EOF.
                self.left = 0
            self.left -= len(chunk)
            self.pending = chunk
        try:
            while self.pending:
                n = os.write(self.in_fd, self.pending)
                self.pending = self.pending[n:]
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            # The script closed stdin without reading it all: its choice (§4.2 lets it).
            self.pending = b""
            self.left = 0
        if not self.pending and not self.left:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.in_fd >= 0:
            self.sel.unregister(self.in_fd)
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            self.in_fd = -1

    def _stderr(self, data: bytes, end: bool = False) -> None:
        buf = self.err_buf + data
        lines = buf.split(b"\n")
        self.err_buf = b"" if end else lines.pop()
        if len(self.err_buf) > 8192:
            lines.append(self.err_buf)
            self.err_buf = b""
        name = os.path.basename(self.script)
        for line in lines:
            if line or not end:
                _log(self.environ, f"[cgi {name}] " + line.rstrip(b"\r").decode("utf-8", "replace"))

    def read_head(self) -> CGIHead:
        import time
        buf = b""
        start = 0
        while True:
            data = self._step(time.monotonic() + self.timeout)
            if data is None:
                continue
            if not data:
                if not buf:
                    raise BadResponse("no output at all")
                raise BadResponse(f"output ended inside the header block after {len(buf)} bytes")
            buf += data
            found = find_head_end(buf, start)
            if found is not None:
                end, body_start = found
                self.rest = buf[body_start:]
                return parse_head(buf[:end])
            if len(buf) > MAX_HEAD:
                raise BadResponse(f"no end of the header block in the first {MAX_HEAD} bytes")
            start = head_search_resume(buf)

    def exit_note(self) -> str:
        """``"; exit status 3"`` / ``"; killed by signal 9"`` once :meth:`shutdown` ran."""
        code = self.proc.returncode
        if code is None:
            return ""
        if self.killed:
            return "; still running, killed"
        if code < 0:
            return f"; killed by signal {-code}"
        return f"; exit status {code}"

    def shutdown(self, wait: float) -> None:
        """Let the script end by itself for up to ``wait`` seconds, then kill its process group.

        Whatever it still writes to stderr is logged; stdout is dropped.
        """
        import time
        if self.closed:
            return
        self.closed = True
        if self.in_fd >= 0:
            self._close_stdin()
        deadline = time.monotonic() + wait
        try:
            while self.sel.get_map() and time.monotonic() < deadline:
                self._step(deadline)
        except (_Timeout, OSError):
            pass
        import subprocess
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
        if self.sel.get_map():
            # Killed (or it closed stdout but kept stderr): collect its last words.
            end = time.monotonic() + 1.0
            try:
                while self.sel.get_map() and time.monotonic() < end:
                    self._step(end)
            except (_Timeout, OSError):
                pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self.err_buf:
            self._stderr(b"", end=True)
        self.sel.close()

    def kill(self) -> None:
        """SIGKILL the script's process group (it runs in its own session)."""
        import signal
        if self.proc.poll() is None:
            self.killed = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()

    # -- the response body --------------------------------------------------

    def __iter__(self):
        import time
        if self.rest:
            rest, self.rest = self.rest, b""
            yield rest
        while not self.out_eof:
            try:
                data = self._step(time.monotonic() + self.timeout)
            except _Timeout:
                _log(self.environ, f"bridge: CGI script {self.script} silent for {self.timeout:g}s "
                                   f"in the middle of its body; killed it")
                self.shutdown(0)
                raise UpstreamError(f"CGI script {self.script} timed out") from None
            if data:
                yield data

    def close(self) -> None:
        """End of the response (or the client left): reap the script, kill it if it lingers."""
        if self.closed:
            return
        if self.out_eof:
            self.shutdown(min(self.timeout, 5.0))
            code = self.proc.returncode
            if code and not self.killed:
                _log(self.environ, f"bridge: CGI script {self.script} exited with status {code}")
        else:
            self.shutdown(0)
