"""``bridge http``: the HTTP/1.1 connection handler the shared Worker runs, and ``main()``.

One :class:`HTTPConnection` per accepted socket.  The worker's loop hands it
to a pool thread when bytes arrive; :meth:`HTTPConnection.on_readable` reads
what is there (one ``readv`` into the thread's reused buffer), feeds the
sans-I/O :class:`~bridge.http.protocol.Connection`, builds the environ
(:mod:`bridge.http.environ`), runs every complete
request through :func:`bridge.wsgi.call_app` (the connection is the
transport), and returns True to be woken for the next bytes.

A request body is received the same way, a readable event at a time, into a
:class:`~bridge.http.environ.ReceivedBody` (memory, then an unlinked
temporary file), and the app runs when it is complete: a client trickling
its body never holds a pool thread (with ``--io-timeout`` per read only,
one byte every 2 s held one forever).  ``--body-timeout`` bounds the whole
body; the Worker's sweep enforces it through ``idle_deadline``.
``--stream-request-body`` keeps the older way for apps that stream uploads:
``wsgi.input`` reads from the socket in the app's thread.  A small
response leaves in one ``writev`` (head and body together); a file from
``wsgi.file_wrapper`` with ``os.sendfile``.

With ``--proxy-protocol`` the first bytes of a connection are a PROXY
protocol header (:mod:`bridge.http.proxyproto`), taken off the raw socket
before TLS and HTTP see anything; a peer not in ``--proxy-allow-ips`` gets a
:class:`Refused` handler and is closed at once.

Sends and blocking body reads go straight to the descriptor first (it is
O_NONBLOCK, see bridge.server.worker) and only fall back to the socket's
timed methods when the kernel buffer is full or empty: CPython polls before
every call on a socket with a timeout, which would double the system calls
of every request.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time

from bridge.abnf import http_date
from bridge.http.accesslog import Record, compile_format
from bridge.http.prepared import prepare
from bridge.http.environ import HTTPInput, ReceivedBody, ServerContext, request_environ
from bridge.http.forwarded import TrustedProxies
from bridge.http.proxyproto import NEED_DATA as PROXY_NEED_DATA, ProxyProtocolError, parse as parse_proxy_header
from bridge.http.reload import run_with_reloader
from bridge.http.tls import TLSSession, make_context
from bridge.http.protocol import (
    DONE, DRAIN_LIMIT, ERROR, NEED_DATA, SEND_BODY, SEND_RESPONSE, Connection, Data, EndOfMessage,
    REASONS, RemoteProtocolError, Request,
)
from bridge.logtext import escape
from bridge.server import serve
from bridge.server.listeners import fd0_is_listening_socket
from bridge.wsgi import AmbiguousPath, FileShrank, WSGIError, call_app, status_has_body

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

log = logging.getLogger("bridge.http")

_readv = os.readv
_writev = os.writev
_monotonic = time.monotonic
_time = time.time

#: Bytes a response may total and still be joined into one buffer (TLS only;
#: plain sockets use writev for any size).
_JOIN_LIMIT = 65536

#: Bytes of a request body read in one wake-up before the thread lets other
#: connections have their turn.
BODY_READ_BUDGET = 1 << 20

#: Seconds a connection closed after an error or an unread body keeps reading
#: (and dropping) what the client still sends (at most --io-timeout).
LINGER = 2.0


# --------------------------------------------------------------------------
# Date and Server headers: formatted once a second, not once a request.

_date_cache: list = [0, b"", b""]   # second, "Date: ...\r\n", "Date: ...\r\nServer: ...\r\n"
SERVER_LINE = b"Server: wsgi-bridge\r\n"


def date_lines(with_server: bool) -> bytes:
    now = int(_time())
    cache = _date_cache
    if cache[0] != now:
        date = b"Date: " + http_date(now).encode("ascii") + b"\r\n"
        cache[1], cache[2], cache[0] = date, date + SERVER_LINE, now
    return cache[2] if with_server else cache[1]


class ClientGone(OSError):
    """The client cannot be written to any more (reset, timeout)."""
    client_gone = True


class BodyError(OSError):
    """The request body is bad or did not arrive: the gateway answers ``status`` and closes."""
    client_gone = True

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_local = threading.local()


def _thread_buffer() -> bytearray:
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(65536)
    return buf


# --------------------------------------------------------------------------
# The connection handler (and the WSGI transport of its requests)


class HTTPConnection:
    """Handler of one connection for :class:`bridge.server.worker.Worker`."""

    __slots__ = ("ctx", "sock", "fd", "state", "conn", "base", "trusted", "unix", "tls",
                 "idle_deadline", "head_started", "body_error", "aborted", "closed", "timeout_set",
                 "body", "body_request", "body_deadline", "lingering", "proxy_pending", "__weakref__")

    def __init__(self, ctx: ServerContext, sock: socket.socket, addr, listener, state) -> None:
        self.ctx = ctx
        self.sock = sock
        self.fd = sock.fileno()
        self.state = state
        self.conn = Connection(ctx.limits)
        self.base, self.trusted, self.unix = ctx.connection_environ(sock, addr, listener)
        self.tls = None
        self.idle_deadline: Optional[float] = None
        self.head_started: Optional[float] = None
        self.body_error: Optional[BodyError] = None
        self.aborted = False
        self.closed = False
        self.timeout_set = False
        self.body: Optional[ReceivedBody] = None      # a body being received before the app runs
        self.body_request: Optional[Request] = None   # ... and its request
        self.body_deadline: Optional[float] = None    # when the body must be complete (--body-timeout)
        self.lingering = False                        # closing gently: input is read and dropped
        # --proxy-protocol: the bytes of the PROXY header received so far;
        # None once it is read (or when the option is off).
        self.proxy_pending: Optional[bytearray] = bytearray() if ctx.proxy_protocol else None
        if ctx.header_timeout:
            # From the connect on, the request (and the TLS handshake) must come promptly.
            self.idle_deadline = _monotonic() + ctx.header_timeout
        if ctx.tls_context is not None:
            self.tls = TLSSession(ctx.tls_context)

    # ---- raw I/O

    def _read_now(self):
        """Plaintext available now: bytes-like, b"" at EOF, None if nothing yet."""
        buf = _thread_buffer()
        try:
            n = _readv(self.fd, (buf,))
        except BlockingIOError:
            return None
        except OSError:
            return b""
        if self.tls is None:
            return memoryview(buf)[:n] if n else b""
        return self._tls_feed(bytes(buf[:n]) if n else b"")

    def _tls_feed(self, raw: bytes):
        tls = self.tls
        try:
            data = tls.feed(raw)
        except ssl.SSLError as exc:
            log.debug("TLS error from %s: %s", self.base.get("REMOTE_ADDR"), exc)
            try:
                self._send_raw(tls.pending_output())   # the alert, if any
            except OSError:
                pass
            return b""
        out = tls.pending_output()
        if out:
            self._send_raw(out)
        if data:
            return data
        if not raw or tls.closed:
            return b""
        return None

    def _read_wait(self) -> bytes:
        """Block (up to --io-timeout, and not past the body's deadline) until body
        bytes arrive; b"" at EOF."""
        while True:
            data = self._read_now()
            if data is not None:
                return data
            timeout = self.ctx.io_timeout
            deadline = self.body_deadline
            if deadline is not None:
                left = max(0.0, deadline - _monotonic())
                if timeout is None or left < timeout:
                    timeout = left
            try:
                ready = _wait(self.fd, False, timeout)
            except OSError:
                return b""
            if not ready:
                raise socket.timeout("timed out waiting for the request body")

    def _send_raw(self, data) -> None:
        """Write all of ``data`` to the socket (waits up to --io-timeout when the buffer is full)."""
        if not data:
            return
        try:
            n = os.write(self.fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            raise ClientGone(exc.errno, f"client gone: {exc.strerror}") from None
        if n < len(data):
            self._send_blocking([memoryview(data)[n:]])

    def _send(self, parts: list) -> None:
        """Send buffers in order: one writev on a plain socket."""
        if self.tls is not None:
            total = 0
            for p in parts:
                total += len(p)
            if total <= _JOIN_LIMIT:
                self._send_raw(self.tls.encrypt(b"".join(parts)))
                return
            for p in parts:
                for i in range(0, len(p), 1 << 20):
                    self._send_raw(self.tls.encrypt(p[i:i + (1 << 20)]))
            return
        try:
            n = _writev(self.fd, parts)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            raise ClientGone(exc.errno, f"client gone: {exc.strerror}") from None
        rest = None
        for p in parts:
            size = len(p)
            if rest is None:
                if n >= size:
                    n -= size
                    continue
                rest = [memoryview(p)[n:] if n else p]
            else:
                rest.append(p)
        if rest:
            self._send_blocking(rest)

    def _send_blocking(self, parts: list) -> None:
        """The kernel's buffer is full: finish with blocking writes.

        A blocking write of a big buffer is one system call that returns when
        it is all sent; polling for room and writing a third of the buffer at
        a time costs dozens.  SO_SNDTIMEO bounds each write by --io-timeout.
        """
        fd = self.fd
        self._send_timeout()
        os.set_blocking(fd, True)
        try:
            for p in parts:
                view = memoryview(p)
                while view:
                    try:
                        n = os.write(fd, view)
                    except InterruptedError:
                        continue
                    except BlockingIOError:
                        raise ClientGone("timed out sending the response (--io-timeout)") from None
                    except OSError as exc:
                        raise ClientGone(exc.errno, f"client gone: {exc.strerror}") from None
                    view = view[n:]
        finally:
            os.set_blocking(fd, False)

    def _send_timeout(self) -> None:
        if not self.timeout_set:
            self.timeout_set = True
            timeout = self.ctx.io_timeout
            if timeout:
                sec = int(timeout)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                     struct.pack("ll", sec, int((timeout - sec) * 1e6)))

    # ---- the Worker's interface

    @property
    def holds_request(self) -> bool:
        """A request head has arrived and its body is being received: closing
        the connection to make room would drop it (see Worker._make_room)."""
        return self.body is not None

    def on_readable(self) -> bool:
        if self.closed:
            return False
        if self.lingering:
            return self._discard()
        if self.proxy_pending is not None:
            return self._read_proxy_header()
        try:
            data = self._read_now()
        except OSError:
            return False
        if data is None:
            return True
        self.conn.receive_data(data)    # b"": the client closed its side
        return self._serve()

    def _read_proxy_header(self) -> bool:
        """--proxy-protocol: take the PROXY header off the raw socket, before TLS and HTTP.

        False (close) when the peer closed, or sent anything but a valid
        header (logged, escaped, on one line).  What follows the header in
        the same read is the client's: it goes on to TLS or the HTTP parser.
        The deadline set at the connect (--header-timeout) covers the header.
        """
        buf = _thread_buffer()
        try:
            n = _readv(self.fd, (buf,))
        except BlockingIOError:
            return True
        except OSError:
            return False
        pending = self.proxy_pending
        peer = self.base.get("REMOTE_ADDR") if not self.unix else "a unix socket peer"
        if not n:
            if pending:
                pending.clear()     # logged here, not again by close()
                log.warning("connection from %s closed inside its PROXY protocol header", peer)
            return False
        pending += memoryview(buf)[:n]
        try:
            header: Any = parse_proxy_header(pending)     # a ProxyHeader once not PROXY_NEED_DATA
        except ProxyProtocolError as exc:
            pending.clear()
            said = f' (it starts with "{escape(exc.received.decode("latin-1"))}")' if exc.received else ""
            log.warning("closed a connection from %s (--proxy-protocol): %s%s", peer, escape(str(exc)), said)
            return False
        if header is PROXY_NEED_DATA:
            return True
        rest = bytes(pending[header.length:])
        self.proxy_pending = None
        self.trusted = self.ctx.apply_proxy_header(self.base, header, self.unix)
        if not rest:
            return True
        if self.tls is not None:
            data = self._tls_feed(rest)
            if data is None:
                return True
        else:
            data = rest
        self.conn.receive_data(data)
        return self._serve()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.proxy_pending:
            # The sweep closes it: the header began and never ended (--header-timeout).
            log.warning("closed a connection from %s (--proxy-protocol): PROXY protocol header "
                        "incomplete after %d bytes", self.base.get("REMOTE_ADDR"), len(self.proxy_pending))
        body = self.body
        if body is not None:
            self.body = None
            body.close()
            deadline = self.idle_deadline
            if deadline is not None and _monotonic() >= deadline:
                self._body_timed_out()
        if self.tls is not None and self.tls.handshaken and not self.lingering:
            try:
                os.write(self.fd, self.tls.close_notify())
            except (OSError, ValueError):
                pass

    def _body_timed_out(self) -> None:
        """The sweep closes a connection whose body stopped coming: say 408 if the
        socket takes it now (never wait: this is the worker's loop thread)."""
        log.info("408 from %s: request body not complete in time (--io-timeout/--body-timeout)",
                 self.base.get("REMOTE_ADDR"))
        page = self.conn.error_response(408, date_lines(True))
        if not page:
            return
        try:
            if self.tls is not None:
                page = self.tls.encrypt(page)
            os.write(self.fd, page)
        except (OSError, ValueError):
            pass

    # ---- requests

    def _serve(self) -> bool:
        """Answer what has arrived; True to be woken for more (also while lingering)."""
        conn = self.conn
        while True:
            body = self.body
            if body is not None:
                got = self._receive_body(body)
                if got is NEED_DATA:
                    return True
                request = self.body_request
                self.body = self.body_request = self.body_deadline = None
                if got is not EndOfMessage:
                    body.close()
                    return self.lingering      # refused, answered
                try:
                    keep = self._respond(request, body)
                finally:
                    body.close()
                if not keep:
                    return self.lingering
                continue
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._reject(exc)
                return self.lingering
            if type(event) is Request:
                self.head_started = None
                if (event.chunked or event.content_length) and not self.ctx.stream_body:
                    # Received here, between readable events, before the app
                    # runs: a slow client never holds a pool thread.
                    self.body = ReceivedBody(self.ctx.spool_threshold, self.ctx.body_memory)
                    self.body_request = event
                    timeout = self.ctx.body_timeout
                    self.body_deadline = _monotonic() + timeout if timeout else None
                    continue
                if not self._respond(event, None):
                    return self.lingering
                continue
            if event is NEED_DATA:
                if conn.head_in_progress and self.ctx.header_timeout:
                    if self.head_started is None:
                        self.head_started = _monotonic()
                    self.idle_deadline = self.head_started + self.ctx.header_timeout
                elif self.tls is not None and not self.tls.handshaken:
                    pass    # keep the handshake deadline
                elif self.ctx.keepalive:
                    self.idle_deadline = _monotonic() + self.ctx.keepalive
                else:
                    self.idle_deadline = None
                return True
            return False    # ConnectionClosed (or PAUSED, which cannot happen here)

    def _receive_body(self, body: ReceivedBody) -> object:
        """Move what has arrived of the request body into ``body``.

        EndOfMessage: it is complete.  NEED_DATA: wait for more (the
        deadline the Worker's sweep enforces is set: the overall
        --body-timeout, or --io-timeout without progress, whichever is
        first).  None: refused (413, a bad chunk, the deadline: answered).
        """
        conn = self.conn
        add = body.add
        budget = BODY_READ_BUDGET
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self._reject(exc)
                return None
            kind = type(event)
            if kind is Data:
                try:
                    add(event.data)
                except OSError as exc:      # the spool file: disk full, /tmp not writable
                    log.error("cannot keep a request body from %s: %s", self.base.get("REMOTE_ADDR"), exc)
                    self._reject(RemoteProtocolError("the request body could not be stored", 500))
                    return None
            elif kind is EndOfMessage:
                return EndOfMessage
            elif budget > 0:
                # Read on while the bytes are there: a fast upload is taken a
                # megabyte per wake-up, not one 64 KiB read per round of epoll.
                data = self._read_now()
                if data is None:
                    break
                budget -= len(data)
                conn.receive_data(data)     # b"": EOF, which next_event reports
            else:
                break
        now = _monotonic()
        deadline = self.body_deadline
        if deadline is not None and now >= deadline:
            self._reject(RemoteProtocolError(
                f"request body not complete after --body-timeout ({self.ctx.body_timeout:g} s)", 408))
            return None
        if conn.client_waiting_for_100 and conn.our_state is SEND_RESPONSE:
            # RFC 9110 §10.1.1: the server is reading the body now, so it says so.
            try:
                self._send([conn.send_continue()])
            except OSError:
                return None
        stall = self.ctx.io_timeout
        if stall:
            stall += now
            self.idle_deadline = stall if deadline is None or stall < deadline else deadline
        else:
            self.idle_deadline = deadline
        return NEED_DATA

    def _environ(self, request: Request) -> dict:
        return request_environ(self.base, request, self.ctx, self.trusted, self.unix)

    def _respond(self, request: Request, body: Optional[ReceivedBody]) -> bool:
        """Run the app for one request; True to keep the connection.

        ``body`` is the request body already received (the default), or None:
        no body, or --stream-request-body (the app reads it from the socket).
        """
        conn = self.conn
        ctx = self.ctx
        state = self.state
        if state is not None and not state.accepting:
            conn.close_after_response()     # the worker is stopping
        try:
            env = self._environ(request)
        except AmbiguousPath as exc:
            # Routed on neither reading (see remove_dot_segments): refused.
            self._reject(RemoteProtocolError(str(exc), 400))
            return False
        if self.tls is not None:
            env.update(self.tls.environ())
        if body is not None:
            env["wsgi.input"] = body.stream()
            if request.chunked:
                # Complete now, so its size is known: tell apps that only
                # look at CONTENT_LENGTH, as CGI would (RFC 3875 §4.1.2).
                env["CONTENT_LENGTH"] = str(body.size)
        elif request.chunked or request.content_length:
            env["wsgi.input"] = HTTPInput(self)
            timeout = ctx.body_timeout
            self.body_deadline = _monotonic() + timeout if timeout else None
        else:
            conn.next_event()               # the EndOfMessage of a request without a body
        env["wsgi.input_terminated"] = True
        self.body_error = None
        self.aborted = False
        if ctx.access_log is not None:
            started, t0 = _time(), _monotonic()
        if state is not None:
            state.request_started(env)
        try:
            response = call_app(ctx.app, env, self)
        finally:
            if state is not None:
                state.request_finished()
        error = self.body_error
        if error is not None:
            log.info("%s %s from %s: %s", error.status, request.method, env.get("REMOTE_ADDR"), escape(str(error)))
            if not conn.response_started:
                page = conn.error_response(error.status, date_lines(True))
                if page:
                    try:
                        self._send([page])
                    except OSError:
                        pass
                    response.status = f"{error.status} {REASONS.get(error.status, 'Error')}"
                    response.bytes_sent = 0
            if ctx.access_log is not None:
                self._log_access(env, request, response, started, t0)
            self._linger()
            return False
        if ctx.access_log is not None:
            self._log_access(env, request, response, started, t0)
        self.body_deadline = None
        if response.disconnected or self.aborted:
            return False
        if conn.our_state is not DONE:
            if conn.their_state is SEND_BODY or conn.their_state is ERROR:
                self._linger()
            return False
        if conn.their_state is SEND_BODY and not self._drain():
            return False
        if conn.their_state is not DONE:
            return False
        conn.start_next_cycle()
        return True

    def _log_access(self, env: dict, request: Request, response, started: float, t0: float) -> None:
        line = f"{request.method} {request.target} HTTP/{request.http_version}"
        try:
            self.ctx.access_log.log(Record(env, response.status, response.headers, response.bytes_sent,
                                           started, _monotonic() - t0, line))
        except Exception:
            log.exception("writing the access log failed")

    def read_body(self) -> bytes:
        """The next piece of the request body for ``wsgi.input`` (b"" at its end)."""
        conn = self.conn
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                self.body_error = BodyError(str(exc), exc.status)
                raise self.body_error from None
            kind = type(event)
            if kind is Data:
                return event.data
            if kind is EndOfMessage:
                return b""
            if event is not NEED_DATA:
                return b""
            if conn.client_waiting_for_100 and conn.our_state is SEND_RESPONSE:
                # RFC 9110 §10.1.1: the app wants the body, so say so now.
                self._send([conn.send_continue()])
            try:
                data = self._read_wait()
            except socket.timeout:
                self.body_error = BodyError(
                    "timed out reading the request body (--io-timeout or --body-timeout)", 408)
                conn.state.error()
                raise self.body_error from None
            conn.receive_data(data)

    def _drain(self) -> bool:
        """Read and drop the body the app left unread, so the next request can follow.

        The protocol kept the connection only when at most DRAIN_LIMIT bytes
        of that body were still to come, so that is what may be read here
        (what was already buffered does not count).  Giving up (more than
        that, a bad chunk, a stalled client) closes with a lingering close:
        the client may still be sending, and closing with unread input would
        reset the connection under the response it has not read yet.
        """
        conn = self.conn
        received = 0
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                self._linger()
                return False
            kind = type(event)
            if kind is EndOfMessage:
                return True
            if kind is Data:
                continue
            if event is not NEED_DATA:
                return False
            if received > DRAIN_LIMIT:
                self._linger()
                return False
            try:
                data = self._read_wait()
            except OSError:
                self._linger()
                return False
            if not data:
                return False
            received += len(data)
            conn.receive_data(data)

    def _reject(self, exc: RemoteProtocolError) -> None:
        """A request the parser refused: answer its status (if possible), then close."""
        status = exc.status
        peer = self.base.get("REMOTE_ADDR")
        log.info("%d from %s: %s", status, peer, escape(str(exc)))   # it may quote the request
        page = self.conn.error_response(status, date_lines(True))
        if page is None:
            return
        try:
            self._send([page])
        except OSError:
            return
        if self.ctx.access_log is not None:
            now = _time()
            self.ctx.access_log.log(Record(self.base, f"{status} x", [], 0, now, 0.0, "-"))
        self._linger()

    def _linger(self) -> None:
        """Close gently: stop sending, then read and drop what the client still sends.

        Closing a socket with unread input makes the kernel send RST, and the
        client may lose the response it has not read yet.  So the write side
        is shut down and the connection stays with the Worker, ``lingering``,
        for up to LINGER seconds (its sweep enforces ``idle_deadline``):
        :meth:`on_readable` drops input as it comes, no thread waits for it.
        The caller returns ``self.lingering`` as "keep the connection".
        """
        try:
            if self.tls is not None and self.tls.handshaken:
                os.write(self.fd, self.tls.close_notify())
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        self.lingering = True
        self.idle_deadline = _monotonic() + min(LINGER, self.ctx.io_timeout or LINGER)

    def _discard(self) -> bool:
        """Lingering: drop what arrived; False (close) at EOF or past the deadline."""
        deadline = self.idle_deadline
        if deadline is not None and _monotonic() >= deadline:
            return False
        buf = _thread_buffer()
        budget = BODY_READ_BUDGET     # a client sending flat out gets no thread to itself
        while budget > 0:
            try:
                n = _readv(self.fd, (buf,))
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not n:
                return False
            budget -= n
        return True

    # ---- bridge.wsgi transport

    def send_head(self, status: str, headers: list, body: bytes, end: bool) -> None:
        conn = self.conn
        if conn.their_state is ERROR:
            # The body was refused while the app ran: our 4xx replaces its answer.
            raise ClientGone("the request failed while the application ran")
        parts: list = []
        append = parts.append
        length = None
        has_date = has_server = False
        for name, value in headers:
            append(f"{name}: {value}\r\n")
            n = len(name)
            if n == 14 or n == 4 or n == 6:
                low = name.lower()
                if low == "content-length":
                    if length is not None:
                        # The WSGI core leaves one; framing by either of two
                        # is response splitting: never send them.
                        raise WSGIError("two Content-Length fields in one response")
                    length = int(value)
                elif low == "date":
                    has_date = True
                elif low == "server":
                    has_server = True
        try:
            block = "".join(parts).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise WSGIError(f"response header not encodable as latin-1: {exc}") from None
        request = conn.request
        body_allowed = status_has_body(status, request.method if request is not None else "GET")
        if end and length is None and body_allowed:
            length = len(body)
            block += b"Content-Length: %d\r\n" % length
        if not has_date:
            block += date_lines(not has_server)
        elif not has_server:
            block += SERVER_LINE
        head = conn.response_head(status, block, length, body_allowed)
        if body and body_allowed:
            out = [head, *conn.chunk_parts(body)]
        else:
            out = [head]
        if end:
            tail = conn.end_response()
            if tail:
                out.append(tail)
        self._send(out)

    def send_body(self, data: bytes) -> None:
        self._send(list(self.conn.chunk_parts(data)))

    def finish(self) -> None:
        conn = self.conn
        if conn.our_state is SEND_BODY:
            tail = conn.end_response()
            if tail:
                self._send([tail])

    def abort(self) -> None:
        self.aborted = True
        conn = self.conn
        if not conn.response_started:
            page = conn.error_response(500, date_lines(True))
            if page:
                try:
                    self._send([page])
                except OSError:
                    pass

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """``wsgi.file_wrapper`` over a real file: ``os.sendfile``, no copy through Python.

        The head announced ``count`` bytes.  A file that shrinks meanwhile
        (truncated, rewritten) cannot keep that promise: returning short would
        leave the client counting the next response as the rest of this body.
        :class:`FileShrank` makes ``call_app`` log it and :meth:`abort`, which
        cuts the connection off.
        """
        conn = self.conn
        if self.tls is not None or not conn.raw_body(count):
            while count > 0:
                data = os.pread(fd, min(count, 1 << 20), offset)
                if not data:
                    raise FileShrank(count)
                self.send_body(data)
                offset += len(data)
                count -= len(data)
            return
        fd_out = self.fd
        self._send_timeout()
        os.set_blocking(fd_out, True)     # one blocking sendfile instead of poll-and-send rounds
        try:
            while count > 0:
                try:
                    sent = os.sendfile(fd_out, fd, offset, count)
                except InterruptedError:
                    continue
                except BlockingIOError:
                    raise ClientGone("timed out sending a file (--io-timeout)") from None
                except OSError as exc:
                    raise ClientGone(exc.errno, f"client gone: {exc.strerror}") from None
                if sent == 0:
                    raise FileShrank(count)
                offset += sent
                count -= sent
        finally:
            os.set_blocking(fd_out, False)


def _wait(fd: int, write: bool, timeout: Optional[float]) -> bool:
    """Wait until ``fd`` is writable/readable; False on timeout."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, timeout) * 1000))


# --------------------------------------------------------------------------
# Entry points


def factory_builder(app: Callable, config, prepared=None) -> Callable:
    """``bridge.server.serve``'s hook: one ServerContext per worker, one handler per connection.

    ``prepared``: the TLS context and access log the master opened before the
    workers switched users (``factory_builder.prepare``, see bridge.http.prepared).
    """
    ctx = ServerContext(app, config, prepared)

    def factory(sock: socket.socket, addr, listener, state):
        if ctx.proxy_protocol and not _proxy_allowed(ctx, addr, listener):
            log.warning("closed a connection from %s: not in --proxy-allow-ips (--proxy-protocol)",
                        escape(str(addr[0])))
            return Refused()
        return HTTPConnection(ctx, sock, addr, listener, state)
    setattr(factory, "context", ctx)     # read by the status page and reload
    return factory


setattr(factory_builder, "prepare", prepare)    # what the master calls before switching users


def _proxy_allowed(ctx: ServerContext, addr, listener) -> bool:
    """May this peer send a PROXY header?  A unix socket peer always may (as for X-Forwarded-*)."""
    if getattr(listener, "kind", "tcp") == "unix" or not isinstance(addr, tuple) or not addr:
        return True
    return ctx.proxy_allowed.trusts(addr[0])


class Refused:
    """The handler of a connection refused on accept: the Worker's sweep closes it at once."""

    def __init__(self) -> None:
        self.idle_deadline = _monotonic()

    def on_readable(self) -> bool:
        return False

    def close(self) -> None:
        pass


def check_config(config) -> Optional[str]:
    """One line saying what is wrong with the HTTP settings, or None."""
    try:
        TrustedProxies(getattr(config, "forwarded_allow_ips", "") or "")
        TrustedProxies(getattr(config, "proxy_allow_ips", "") or "", "--proxy-allow-ips")
        if getattr(config, "access_log_format", None):
            compile_format(config.access_log_format)
        if getattr(config, "certfile", None):
            make_context(config.certfile, getattr(config, "keyfile", None), getattr(config, "ca_certs", None))
        elif getattr(config, "keyfile", None) or getattr(config, "ca_certs", None):
            return "--keyfile and --ca-certs need --certfile"
    except ValueError as exc:
        return str(exc)
    return None


setattr(factory_builder, "check_config", check_config)     # the master checks a file read again on SIGHUP


#: Where ``bridge http APP`` listens without --bind (and without a socket
#: from systemd or on fd 0): local only, the README's quick start.
DEFAULT_BIND = "127.0.0.1:8000"


def default_bind(config) -> None:
    """Without --bind, and with no socket from systemd or on fd 0: DEFAULT_BIND.

    Also what ``--check-config`` reports, so it shows where bridge will listen."""
    if not getattr(config, "bind", None):
        systemd = os.environ.get("LISTEN_FDS") and os.environ.get("LISTEN_PID") == str(os.getpid())
        if not systemd and not fd0_is_listening_socket():
            config.bind = [DEFAULT_BIND]


def main(config) -> int:
    """``bridge http APP``."""
    problem = check_config(config)
    if problem:
        sys.stderr.write(f"bridge http: {problem}\n")
        return 2
    default_bind(config)
    if getattr(config, "reload", False):
        return run_with_reloader(config, factory_builder)
    return serve(config, factory_builder)
