"""A WSGI app that forwards each request to FastCGI backends (php-fpm, bridge fcgi...).

``FastCGIApp(["unix:/run/php/php8.2-fpm.sock"], document_root="/srv/legacy")``
is what nginx's ``fastcgi_pass`` does, as a WSGI app: mount it next to a
Python app (``bridge.mount`` or ``--mount /legacy=fcgi://unix:/...``) and
a PHP site moves to Python one path at a time.

The FastCGI side uses the record layer of :mod:`bridge.fastcgi.protocol`
(no second codec here); the CGI side (meta-variables in, ``Status:`` /
``Location:`` / header block out) is :mod:`bridge.cgi.app`'s, the same one
CGIApp uses, so a PHP script answers the same whether it runs as CGI or
behind php-fpm.

- One request per connection at a time, request id 1, ``KEEP_CONN`` set
  (§5.1), so the connection goes back to a per-backend pool after
  END_REQUEST.  A pooled connection the backend has closed meanwhile is
  noticed before use (a peek sees the FIN) and replaced.
- The body is streamed as STDIN records (§5.3) while STDOUT/STDERR are read
  on the same socket (``selectors``), so neither side can fill its buffers
  and wait for the other.  Only one record of the body is in memory at a time.
- Backends are picked round robin or least busy.  A backend that refuses a
  connection is taken out for ``retry_after`` seconds (one log line when it
  goes, one when it comes back), and the request moves on to the next one.
  If none can take it: 502 with a log line naming each backend and why.
- A request is moved to another backend only if it cannot have run twice,
  nginx's ``fastcgi_next_upstream error`` without ``non_idempotent``: the
  connection failed before the backend had the whole request (PARAMS ended,
  the point where php-fpm starts the script), or the method is idempotent
  (RFC 9110 §9.2.2) and no byte of the response or of the body was used.
  A POST whose backend read the request and then closed (a php-fpm child
  killed mid-request) is a 502, not a second run; and that backend is not
  taken out, since it was reachable: the script died, not the server.
  A backend silent for ``timeout`` seconds: 504 (or the response is cut
  off if its head was already sent).
"""
from __future__ import annotations

import socket
import threading
import time

from bridge.cgi.app import UpstreamError, _log, _plain, local_redirect, request_body
from bridge.logtext import describe_request, escape
from bridge.cgi.rfc3875 import (MAX_HEAD, BadResponse, cgi_variables, find_head_end, split_log_lines,
                                head_search_resume, parse_head)
from bridge.fastcgi.protocol import (BEGIN_REQUEST, END_REQUEST, KEEP_CONN, OVERLOADED, PARAMS,
                                     REQUEST_COMPLETE, RESPONDER, STDERR, STDIN, STDOUT,
                                     ProtocolError, RecordReader, decode_end_request,
                                     encode_begin_request, encode_pairs, encode_record)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional, Union

__all__ = ["FastCGIApp", "Backend", "parse_address"]

REQUEST_ID = 1
#: Body bytes per STDIN record: a multiple of 8 below 65535 (§3.3), so no padding.
STDIN_CHUNK = 65528

_EMPTY_STDIN = encode_record(STDIN, REQUEST_ID, b"")

_PROTOCOL_STATUS = {1: "CANT_MPX_CONN", 2: "OVERLOADED", 3: "UNKNOWN_ROLE"}


def parse_address(address: Union[str, tuple]) -> tuple:
    """``"unix:/run/x.sock"``, ``"HOST:PORT"``, ``"[::1]:9000"`` (an optional
    ``fcgi://`` in front) → ``(family, sockaddr, printable name)``."""
    if isinstance(address, tuple):
        host, port = address
        return socket.AF_UNSPEC, (host, int(port)), f"{host}:{port}"
    text = str(address).strip()
    if text.startswith("fcgi://"):
        text = text[len("fcgi://"):]
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError(f"FastCGI backend {address!r}: empty unix socket path")
        return socket.AF_UNIX, path, f"unix:{path}"
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ValueError(f"FastCGI backend {address!r} is not HOST:PORT or unix:/PATH")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not 0 < int(port) < 65536:
        raise ValueError(f"FastCGI backend {address!r}: port out of range")
    return socket.AF_UNSPEC, (host, int(port)), text


class Backend:
    """One backend: its address, pooled idle connections, busy count, health."""

    def __init__(self, address: Union[str, tuple]) -> None:
        self.family, self.sockaddr, self.name = parse_address(address)
        self.idle: list = []        # LIFO: the warmest connection first
        self.busy = 0
        self.down_until = 0.0       # time.monotonic() before which it is skipped
        self.last_error = ""

    def connect(self, timeout: float) -> socket.socket:
        if self.family == socket.AF_UNIX:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.sockaddr)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(self.sockaddr, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def __repr__(self) -> str:
        return f"Backend({self.name!r}, busy={self.busy}, idle={len(self.idle)})"


def _alive(sock: socket.socket) -> bool:
    """A pooled connection is usable if the backend has not closed it (nor sent anything)."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return False   # b"" (closed) or stray bytes: either way not a clean idle connection


#: RFC 9110 §9.2.2: methods whose repetition has the effect of one request.
#: Unknown methods count as not idempotent (nginx retries only what it knows is safe).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class _Retry(Exception):
    """The connection died where resending cannot run the request twice: try another.

    ``delivered``: the backend had the whole request (so it was reachable; a
    retry of an idempotent request must not take it out of the rotation)."""

    def __init__(self, reason: str, delivered: bool) -> None:
        super().__init__(reason)
        self.delivered = delivered


class _Timeout(Exception):
    pass


class _BackendLost(Exception):
    """The backend connection broke after something that cannot be resent went out."""


class FastCGIApp:
    """Forward WSGI requests to FastCGI responders.

    ``backends``: addresses (``"unix:/path"``, ``"host:port"``), balanced.
    ``script_filename``: a fixed SCRIPT_FILENAME (a front controller such as
    ``/srv/app/index.php``); else, with ``document_root``, the script is the
    first PATH_INFO segment ending in ``script_suffix`` (``/a.php/x`` →
    SCRIPT_FILENAME ``DOCROOT/a.php``, PATH_INFO ``/x``, as nginx's
    ``fastcgi_split_path_info``), or ``index`` for a path ending in ``/``.
    Neither: SCRIPT_NAME and PATH_INFO are sent as they are (right for a
    Python backend such as ``bridge fcgi``).
    ``params``: extra or overriding FastCGI params (a ``None`` value removes one).
    """

    def __init__(self, backends: Union[str, Iterable], *, script_filename: Optional[str] = None,
                 document_root: Optional[str] = None, params: Optional[dict] = None,
                 index: str = "index.php", script_suffix: Optional[str] = ".php",
                 timeout: float = 60.0, connect_timeout: float = 5.0, retry_after: float = 10.0,
                 max_idle: int = 16, balance: str = "round_robin", max_redirects: int = 10) -> None:
        if isinstance(backends, (str, tuple)):
            backends = [backends]
        self.backends = [b if isinstance(b, Backend) else Backend(b) for b in backends]
        if not self.backends:
            raise ValueError("FastCGIApp needs at least one backend")
        if balance not in ("round_robin", "least_busy"):
            raise ValueError(f"balance must be round_robin or least_busy, not {balance!r}")
        for name, value in (("timeout", timeout), ("connect_timeout", connect_timeout)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.script_filename = script_filename
        self.document_root = document_root.rstrip("/") if document_root else document_root
        self.params = dict(params or {})
        self.index = index
        self.script_suffix = script_suffix
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retry_after = float(retry_after)
        self.max_idle = max_idle
        self.balance = balance
        self.max_redirects = max_redirects
        self._lock = threading.Lock()
        self._next = 0

    def __repr__(self) -> str:
        return f"FastCGIApp({[b.name for b in self.backends]!r})"

    # -- which script -------------------------------------------------------

    def _script(self, environ: dict) -> Optional[tuple]:
        """``(script_name, path_info, script_filename)``, or ``None`` for a 404."""
        sn = environ.get("SCRIPT_NAME", "")
        pi = environ.get("PATH_INFO", "")
        if self.script_filename or not self.document_root:
            return sn, pi, self.script_filename
        segments = pi.split("/")
        if ".." in segments or "\0" in pi:
            return None
        if self.script_suffix:
            for i, seg in enumerate(segments):
                if seg.endswith(self.script_suffix) and i > 0:
                    head = "/".join(segments[:i + 1])
                    return sn + head, pi[len(head):], self.document_root + head
        if pi == "" or pi.endswith("/"):
            head = (pi or "/") + self.index
            return sn + head, "", self.document_root + head
        return sn + pi, "", self.document_root + pi

    # -- choosing a backend -------------------------------------------------

    def _candidates(self) -> list:
        """Healthy backends in balancing order, then those taken out (soonest back first)."""
        now = time.monotonic()
        with self._lock:
            n = len(self.backends)
            start = self._next % n
            self._next += 1
            ring = self.backends[start:] + self.backends[:start]
            healthy = [b for b in ring if b.down_until <= now]
            down = sorted((b for b in ring if b.down_until > now), key=lambda b: b.down_until)
            if self.balance == "least_busy":
                healthy.sort(key=lambda b: b.busy)   # stable: ties keep round-robin order
        return healthy + down

    def _acquire(self, backend: Backend) -> tuple:
        """``(sock, reused)``: a pooled connection if one is still good, else a new one."""
        while True:
            with self._lock:
                sock = backend.idle.pop() if backend.idle else None
                if sock is None:
                    backend.busy += 1
                    break
            if _alive(sock):
                with self._lock:
                    backend.busy += 1
                return sock, True
            sock.close()
        try:
            return backend.connect(self.connect_timeout), False
        except BaseException:
            with self._lock:
                backend.busy -= 1
            raise

    def _release(self, backend: Backend, sock: socket.socket, reusable: bool) -> None:
        with self._lock:
            backend.busy -= 1
            if reusable and len(backend.idle) < self.max_idle:
                backend.idle.append(sock)
                return
        sock.close()

    def _mark_down(self, backend: Backend, reason: str, environ: dict) -> None:
        with self._lock:
            was_up = backend.down_until <= time.monotonic()
            backend.down_until = time.monotonic() + self.retry_after
            backend.last_error = reason
            idle, backend.idle = backend.idle, []
        for sock in idle:
            sock.close()
        if was_up:
            _log(environ, f"bridge: FastCGI backend {backend.name} taken out for "
                          f"{self.retry_after:g}s: {reason}")

    def _mark_up(self, backend: Backend, environ: dict) -> None:
        if backend.down_until:
            with self._lock:
                backend.down_until = 0.0
            _log(environ, f"bridge: FastCGI backend {backend.name} is back")

    # -- one request --------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        found = self._script(environ)
        if found is None:
            return _plain(start_response, "404 Not Found")
        script_name, path_info, script_filename = found
        body, length = request_body(environ)
        params = cgi_variables(environ, script_name=script_name, path_info=path_info,
                               script_filename=script_filename, document_root=self.document_root,
                               content_length=length if body is not None else 0)
        for key, value in self.params.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = value
        # §5.1 BEGIN_REQUEST (keep the connection), §5.2 PARAMS ended by an empty record.
        head = (encode_record(BEGIN_REQUEST, REQUEST_ID, encode_begin_request(RESPONDER, KEEP_CONN))
                + encode_record(PARAMS, REQUEST_ID, encode_pairs(params))
                + encode_record(PARAMS, REQUEST_ID, b""))
        if body is None:
            head += _EMPTY_STDIN
        failures = []
        describe = describe_request(environ)   # escaped: the decoded path may hold a LF or ESC
        for backend in self._candidates():
            attempts = 0
            while True:
                attempts += 1
                try:
                    sock, reused = self._acquire(backend)
                except OSError as exc:
                    reason = _why(exc)
                    failures.append(f"{backend.name} ({reason})")
                    self._mark_down(backend, reason, environ)
                    break
                self._mark_up(backend, environ)
                ex = _Exchange(self, backend, sock, environ, head, body, length or 0)
                try:
                    cgi_head = ex.read_head()
                except _Retry as exc:
                    ex.release(False)
                    if reused and attempts < 3:
                        continue   # a stale pooled connection: open a fresh one
                    failures.append(f"{backend.name} ({exc})")
                    if not exc.delivered:
                        self._mark_down(backend, str(exc), environ)
                    break
                except _Timeout:
                    ex.release(False)
                    _log(environ, f"bridge: FastCGI backend {backend.name} did not answer {describe} "
                                  f"within {self.timeout:g}s (504)")
                    return _plain(start_response, "504 Gateway Timeout")
                except _Failed as exc:
                    ex.release(False)
                    if exc.overloaded and ex.consumed == 0:
                        # §5.5 FCGI_OVERLOADED: this one is full; nothing of the body
                        # is gone yet, so another backend can have the request.
                        failures.append(f"{backend.name} (OVERLOADED)")
                        break
                    status = "503 Service Unavailable" if exc.overloaded else "502 Bad Gateway"
                    _log(environ, f"bridge: FastCGI backend {backend.name} failed {describe}: {exc} "
                                  f"({status[:3]})")
                    return _plain(start_response, status)
                except (BadResponse, ProtocolError) as exc:
                    ex.release(False)
                    _log(environ, f"bridge: FastCGI backend {backend.name} failed {describe}: {exc} (502)")
                    return _plain(start_response, "502 Bad Gateway")
                except BaseException:
                    ex.release(False)
                    raise
                if cgi_head.is_local_redirect:
                    ex.release(False)
                    return local_redirect(self, environ, cgi_head.location, start_response,
                                          self.max_redirects)
                start_response(cgi_head.final_status(), cgi_head.headers)
                return ex
        status = "503 Service Unavailable" if failures and all(f.endswith("(OVERLOADED)") for f in failures) \
            else "502 Bad Gateway"
        _log(environ, f"bridge: no FastCGI backend could take {describe}: {'; '.join(failures)} ({status[:3]})")
        return _plain(start_response, status)


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "connect timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _Failed(Exception):
    """END_REQUEST with a protocol status other than REQUEST_COMPLETE (§5.5)."""

    def __init__(self, message: str, overloaded: bool = False) -> None:
        super().__init__(message)
        self.overloaded = overloaded


class _Exchange:
    """One request on one connection; after :meth:`read_head`, the response iterable."""

    def __init__(self, app: FastCGIApp, backend: Backend, sock: socket.socket, environ: dict,
                 head: bytes, body: Any, length: int) -> None:
        import selectors
        self.app = app
        self.backend = backend
        self.sock = sock
        self.environ = environ
        self.timeout = app.timeout
        self.out = memoryview(head)
        # Bytes of ``head`` up to the end of PARAMS: once they are out, the
        # backend may have started the script (php-fpm does, before STDIN).
        self.unsent_params = len(head) - (len(_EMPTY_STDIN) if body is None else 0)
        self.idempotent = environ.get("REQUEST_METHOD", "GET") in IDEMPOTENT_METHODS
        self.body = body
        self.left = length if body is not None else 0
        self.stdin_done = body is None
        self.consumed = 0             # body bytes taken from wsgi.input (cannot be resent)
        self.received = 0             # bytes from the backend
        self.reader = RecordReader()
        self.head_buf = b""
        self.search_from = 0
        self.head_done = False
        self.chunks: list = []        # STDOUT body bytes not yet handed out
        self.ended = False
        self.eof = False
        self.err_buf = b""
        self.released = False
        sock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        self._events = selectors.EVENT_READ | selectors.EVENT_WRITE

    # -- the pump -----------------------------------------------------------

    def _want(self) -> int:
        import selectors
        events = selectors.EVENT_READ
        if len(self.out) or not self.stdin_done:
            events |= selectors.EVENT_WRITE
        return events

    def _step(self) -> None:
        events = self._want()
        if events != self._events:
            self.sel.modify(self.sock, events)
            self._events = events
        ready = self.sel.select(self.timeout)
        if not ready:
            raise _Timeout()
        mask = ready[0][1]
        import selectors
        if mask & selectors.EVENT_WRITE:
            self._send()
        if mask & selectors.EVENT_READ:
            self._recv()

    def _send(self) -> None:
        if not len(self.out) and not self.stdin_done:
            self._next_body_record()
        try:
            while len(self.out):
                n = self.sock.send(self.out)
                self.out = self.out[n:]
                self.unsent_params = max(0, self.unsent_params - n)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"sending failed: {_why(exc)}")

    def _next_body_record(self) -> None:
        """§5.3 STDIN: the next piece of the body, or the empty record that ends it."""
        chunk = self.body.read(min(self.left, STDIN_CHUNK)) if self.left else b""
        if chunk:
            self.left -= len(chunk)
            self.consumed += len(chunk)
            self.out = memoryview(encode_record(STDIN, REQUEST_ID, chunk))
        else:
            # The end (or the client left early and the body is short: the
            # backend then sees less than CONTENT_LENGTH, as from a closed client).
            self.left = 0
            self.out = memoryview(encode_record(STDIN, REQUEST_ID, b""))
            self.stdin_done = True

    def _recv(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"receiving failed: {_why(exc)}")
            return
        if not data:
            self.eof = True
            if not self.ended:
                self._lost("closed the connection before END_REQUEST")
            return
        self.received += len(data)
        for rtype, rid, content in self.reader.feed(data):
            if rid != REQUEST_ID:
                continue   # management records (id 0) and strays: ignored (§3.3)
            if rtype == STDOUT:
                if content:
                    self._stdout(content)
            elif rtype == STDERR:
                if content:
                    self._stderr(content)
            elif rtype == END_REQUEST:
                app_status, protocol_status = decode_end_request(content)
                self.ended = True
                self._stderr(b"", end=True)
                if protocol_status != REQUEST_COMPLETE and not self.head_done:
                    name = _PROTOCOL_STATUS.get(protocol_status, str(protocol_status))
                    raise _Failed(f"END_REQUEST with protocol status {name}",
                                  overloaded=protocol_status == OVERLOADED)

    def _lost(self, reason: str) -> None:
        """The connection broke: resend elsewhere only if that cannot run the request twice."""
        self.eof = True
        delivered = self.unsent_params == 0
        if self.received == 0 and self.consumed == 0 and (self.idempotent or not delivered):
            raise _Retry(reason, delivered)
        if delivered and not self.idempotent and self.received == 0:
            reason += " (after the whole request was sent: not retried, the method is not idempotent)"
        raise _BackendLost(reason)

    def _stdout(self, data: bytes) -> None:
        if self.head_done:
            self.chunks.append(data)
            return
        self.head_buf += data
        found = find_head_end(self.head_buf, self.search_from)
        if found is None:
            if len(self.head_buf) > MAX_HEAD:
                raise BadResponse(f"no end of the header block in the first {MAX_HEAD} bytes")
            self.search_from = head_search_resume(self.head_buf)
            return
        end, body_start = found
        self.head = parse_head(self.head_buf[:end])
        rest = self.head_buf[body_start:]
        self.head_buf = b""
        self.head_done = True
        if rest:
            self.chunks.append(rest)

    def _stderr(self, data: bytes, end: bool = False) -> None:
        lines, self.err_buf = split_log_lines(self.err_buf, data, end)
        for line in lines:
            if line:
                _log(self.environ, f"[fcgi {self.backend.name}] " + escape(line))

    def read_head(self):
        try:
            while not self.head_done:
                if self.ended:
                    raise BadResponse("END_REQUEST before the end of the header block"
                                      if self.head_buf else "no output on STDOUT")
                self._step()
        except _BackendLost as exc:
            raise BadResponse(f"connection lost: {exc}") from None
        return self.head

    # -- the response body --------------------------------------------------

    def __iter__(self):
        while True:
            if self.chunks:
                chunks, self.chunks = self.chunks, []
                yield from chunks
                continue
            if self.ended:
                # Complete.  If END_REQUEST came before all of STDIN went (the
                # backend did not want the rest), close() will not pool the
                # connection: the stream state is unknown.
                return
            try:
                self._step()
            except _Timeout:
                _log(self.environ, f"bridge: FastCGI backend {self.backend.name} silent for "
                                   f"{self.timeout:g}s in the middle of a response; cut it off")
                raise UpstreamError("FastCGI backend timed out") from None
            except (_BackendLost, ProtocolError, _Retry) as exc:
                _log(self.environ, f"bridge: FastCGI backend {self.backend.name} broke off a "
                                   f"response: {exc}")
                raise UpstreamError(str(exc)) from None

    def close(self) -> None:
        clean = (self.ended and self.stdin_done and not len(self.out) and not self.eof
                 and not self.reader.buffered and not self.chunks)
        self.release(clean)

    def release(self, reusable: bool) -> None:
        if self.released:
            return
        self.released = True
        if self.err_buf:
            self._stderr(b"", end=True)
        self.sel.close()
        if reusable:
            self.sock.setblocking(True)
        self.app._release(self.backend, self.sock, reusable)
