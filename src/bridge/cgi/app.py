"""Running CGI scripts as a WSGI app (RFC 3875, the server's side).

``CGIApp("/usr/lib/cgi-bin/report.pl")`` is a WSGI app that runs the script
once per request; ``CGIApp("/usr/lib/cgi-bin")`` serves a whole directory
the way Apache's ``ScriptAlias`` does (the first path segments name the
script, the rest is its PATH_INFO).  So an old cgi-bin keeps working next to
a Python app while it is replaced one path at a time.

What the RFC asks of the server, and where it is done here:

- §4.1 meta-variables: :func:`~bridge.cgi.rfc3875.cgi_variables` (also used by the FastCGI
  client, which sends the same variables as PARAMS).  The client's
  ``Proxy:`` header never becomes ``HTTP_PROXY`` (httpoxy, CVE-2016-5385),
  and nothing else of this process's environment leaks in except ``PATH``.
- §4.2 the body on stdin, exactly CONTENT_LENGTH bytes; §7.2 the working
  directory is the script's.  No command-line arguments from the query
  string (§4.4 leaves it to the server; it was CVE-2012-1823).
- §6 the response: :mod:`bridge.cgi.rfc3875` (``find_head_end``, ``parse_head``, also used
  by the FastCGI client for STDOUT); ``Status:``, ``Location:`` (§6.2.2 local
  redirects are served again by the whole stack, §6.2.3 client redirects get a
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
import sys

from bridge.logtext import escape
from bridge.cgi.rfc3875 import (MAX_HEAD, BadResponse, CGIHead, cgi_variables, find_head_end, split_log_lines,
                                head_search_resume, parse_head)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

__all__ = ["CGIApp", "cgi_variables", "find_head_end", "parse_head", "BadResponse", "CGIHead",
           "request_body", "local_redirect", "UpstreamError"]

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

    Under bridge's gateways, by raising :class:`bridge.wsgi.InternalRedirect`:
    the whole stack -- status paths, Static, Gzip, every mount -- serves the
    new path from the top, as Apache's internal redirect does.  Under
    another WSGI server, from the top of the outermost :func:`bridge.mount`
    if there is one, else through ``app`` itself.  A path outside all of
    it becomes a 302 the client follows.  More than ``max_redirects`` in a
    row (a loop): 500, and a log line naming the last location.
    """
    depth = environ.get("bridge.cgi.redirects", 0) + 1
    if depth > max_redirects:
        _log(environ, f"bridge: more than {max_redirects} CGI local redirects "
                      f"(last to {escape(location)}); giving up (500)")
        return _plain(start_response, "500 Internal Server Error")
    from bridge.middleware.mount import ROOT_KEY
    from bridge.wsgi import INTERNAL_REDIRECT_ROOT, AmbiguousPath, InternalRedirect, decode_path, remove_dot_segments
    import io
    uri = location.partition("#")[0]
    raw_path, _, query = uri.partition("?")
    try:
        path = remove_dot_segments(decode_path(raw_path.encode("latin-1")))
    except AmbiguousPath:
        _log(environ, f"bridge: CGI local redirect to {escape(location)} has '..' after '//'; refused (502)")
        return _plain(start_response, "502 Bad Gateway")
    whole_stack = environ.get(INTERNAL_REDIRECT_ROOT)
    mount_root = environ.get(ROOT_KEY)
    if whole_stack is not None:
        base = whole_stack
    elif mount_root is not None:
        app, base = mount_root
    else:
        base = environ.get("SCRIPT_NAME", "")
    if base and not (path == base or path.startswith(base + "/")):
        # Outside anything this process serves: let the client follow it.
        _log(environ, f"bridge: CGI local redirect to {escape(location)} is outside {escape(base) or '/'}; "
                      f"sent as a 302 instead")
        start_response("302 Found", [("Location", location), ("Content-Length", "0")])
        return [b""]
    new = dict(environ)
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE", "wsgi.input_terminated", ROOT_KEY):
        new.pop(key, None)
    new["REQUEST_METHOD"] = "GET"
    new["wsgi.input"] = io.BytesIO(b"")
    new["SCRIPT_NAME"] = base
    new["PATH_INFO"] = path[len(base):]
    new["QUERY_STRING"] = query
    new["REQUEST_URI"] = uri
    new["bridge.cgi.redirects"] = depth
    if whole_stack is not None:
        raise InternalRedirect(new)
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


#: Each script runs in its own process group, so a timeout kills its children
#: too; and in the worker's session (Python 3.11's ``process_group``), so a
#: worker killed by the master takes them along (bridge.server.process.kill_session).
#: Python 3.10 has only ``start_new_session``: the group, not the session.
_OWN_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}


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
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_OWN_GROUP)
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
        lines, self.err_buf = split_log_lines(self.err_buf, data, end)
        name = os.path.basename(self.script)
        for line in lines:
            if line or not end:
                _log(self.environ, f"[cgi {name}] " + escape(line))

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
        # Still running, or gone but its pipes still held by what it started
        # (``sleep 300 &`` keeps stdout open): past its time, the group goes.
        if not self._exited_by(deadline) or self.sel.get_map():
            self.kill()
        self.proc.wait()
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

    def _exited_by(self, deadline: float) -> bool:
        """Whether the script has ended by ``deadline``, *without* reaping it.

        Unreaped, its pid stays reserved as its process group's id, so a
        later ``killpg`` cannot hit another process that took the number.
        """
        import time
        delay = 0.0005
        while True:
            try:
                if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                return True          # reaped already
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)

    def kill(self) -> None:
        """SIGKILL the script's process group: the script and whatever it started in it."""
        import signal
        if self.proc.returncode is None:     # not reaped: the group id is still its
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
