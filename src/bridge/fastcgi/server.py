"""``bridge fcgi``: the FastCGI connection handler for the shared Worker.

The protocol itself lives in :mod:`bridge.fastcgi.protocol` (no I/O); the
accept loop and threads in :mod:`bridge.server`.  This module is the glue:
read what the web server sent, feed it to a :class:`ServerConnection`, turn
each ready request into a WSGI environ, run the app through
:func:`bridge.wsgi.call_app`, and write the framed response.

Per request, the common case costs one read and one write: a request's
records usually arrive in one segment, and a small response goes out as
one STDOUT record, the end of STDOUT and END_REQUEST in a single write.

The request body is complete before the app runs (nginx and Apache buffer
it by default; an unbuffered chunked body is collected here, spooled to a
temporary file past ``--fcgi-spool-threshold``).  So an app never blocks
on ``wsgi.input``, and an ABORT_REQUEST during the upload simply drops the
request.  While a response streams, incoming records are checked between
chunks: an ABORT_REQUEST, or the web server closing the connection, stops
the app's iteration (its ``close()`` is called) instead of streaming on.

Requests multiplexed on one connection run concurrently, on pool threads
(:class:`Handler` explains when and how their records share the socket).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time

from bridge.fastcgi import protocol as fcgi
from bridge.logtext import counted
from bridge.wsgi import (AmbiguousPath, FileShrank, apply_script_name, call_app, decode_path, encode_headers,
                         make_environ, refuse_ambiguous_path, remove_dot_segments)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

__all__ = ["main", "serve_inherited", "factory_builder", "FastCGIServer", "Handler", "Exchange"]

log = logging.getLogger("bridge.fastcgi")
app_log = logging.getLogger("bridge.app")

#: Bytes read per recv: large enough for a whole request head plus a good
#: part of a body, so big uploads take few round trips through the loop.
RECV_SIZE = 256 << 10

#: Seconds a connection is read and drained after a refusal before it is closed.
LINGER = 2.0

#: ``idle_deadline`` while a request runs on a pool thread: never idle.
_FOREVER = float("inf")

_local = threading.local()
_monotonic = time.monotonic
_readv = os.readv
_write = os.write
_writev = os.writev

#: Output up to this size is joined and written with one write(); larger
#: output goes out with writev() from the buffers as they are.
SMALL_WRITE = 32 << 10
#: Buffers per writev() (the kernel's IOV_MAX is 1024).
IOV_MAX = 1024


def _buffer() -> tuple:
    """The calling pool thread's receive buffer (reused for every read it makes)."""
    try:
        return _local.buf
    except AttributeError:
        buf = bytearray(RECV_SIZE)
        _local.buf = (buf, memoryview(buf))
        return _local.buf


class ClientGone(OSError):
    """The web server aborted the request (ABORT_REQUEST) or closed the connection.

    ``call_app`` treats it as a disconnect: it stops iterating and calls the
    result's ``close()``.
    """
    client_gone = True


# --------------------------------------------------------------------------
# environ


def _path_from_uri(uri: str) -> str:
    """The decoded, dot-segment-free path of REQUEST_URI (origin-form or absolute-form), no query.

    nginx's ``$request_uri`` is the raw target: nginx routed on its own
    normalised ``$uri``, so the same normalisation is done here (RFC 3986
    §5.2.4 after decoding) or a mount would see a path nginx never matched.
    """
    path = uri.partition("?")[0].partition("#")[0]
    if path[:1] == "/" and "%" not in path:
        # the common case: nothing to decode (str is already latin-1)
        return remove_dot_segments(path) if "/." in path else path
    if not path.startswith("/"):
        scheme, sep, rest = path.partition("://")
        if sep and scheme.isalpha():
            path = "/" + rest.partition("/")[2]   # absolute-form: drop scheme://authority
    return remove_dot_segments(decode_path(path.encode("latin-1")))


def fix_script_name_and_path_info(environ: dict, script_name: Optional[str]) -> None:
    """SCRIPT_NAME / PATH_INFO as PEP 3333 wants them.

    * PATH_INFO sent by the web server (nginx ``fastcgi_split_path_info``,
      Apache with a real path): both are taken as they are.
    * No PATH_INFO (nginx's stock ``fastcgi_params``, Apache ``ProxyPass``):
      the path is decoded from REQUEST_URI.  A SCRIPT_NAME that is a proper
      prefix of it (at a ``/``) stays the mount point; one that is the whole
      path (what both servers send) only repeats it, so the app is taken to
      be mounted at the root.
    * ``--script-name PREFIX`` then moves PREFIX from PATH_INFO to
      SCRIPT_NAME, for mounts the web server cannot describe.

    Either way PATH_INFO has no dot segments (RFC 3986 §5.2.4), so bridge
    routes on the path the web server routed on; a path whose ``..``
    follows ``//`` raises :class:`bridge.wsgi.AmbiguousPath` (the web
    server may have merged the slashes or not: answered 400).
    """
    path_info = environ.get("PATH_INFO")
    if path_info is not None and "/." in path_info:
        environ["PATH_INFO"] = remove_dot_segments(path_info)
    if "PATH_INFO" not in environ:
        uri = environ.get("REQUEST_URI")
        if uri:
            path = _path_from_uri(uri)
            script = environ.get("SCRIPT_NAME", "")
            mount = script.rstrip("/")
            if mount and script != path and path.startswith(mount + "/"):
                environ["SCRIPT_NAME"] = mount
                environ["PATH_INFO"] = path[len(mount):]
            else:
                environ["SCRIPT_NAME"] = ""
                environ["PATH_INFO"] = path
    if script_name:
        apply_script_name(environ, script_name)


# --------------------------------------------------------------------------
# the server: what every connection shares


class FastCGIServer:
    """The app and the settings, prepared once; ``handler`` is the Worker's factory."""

    def __init__(self, app: Callable, *, threads: int = 4, workers: int = 1,
                 max_params: int = 128 << 10, spool_threshold: int = 1 << 20,
                 max_body: int = 0, errors_to_log: bool = False,
                 max_conn_requests: int = 0, web_server_addrs: Any = (),
                 script_name: Optional[str] = None, idle_timeout: Optional[float] = 60.0) -> None:
        self.app = app
        self.multithread = threads > 1
        self.multiprocess = workers > 1
        self.errors_to_log = errors_to_log
        self.max_conn_requests = max_conn_requests
        self.idle_timeout = idle_timeout or None   # the Worker's, counted again after a task
        self.script_name = (script_name or "").rstrip("/") or None
        concurrency = threads * workers
        # §4.1: FCGI_MAX_CONNS / FCGI_MAX_REQS are what this process group
        # can serve at once: one request per pool thread.  Requests
        # multiplexed on one connection run at the same time, each on a
        # pool thread (MPXS_CONNS=1; see Handler).
        self.conn_options: dict[str, Any] = dict(
            max_conns=concurrency, max_reqs=concurrency, multiplex=True, max_params=max_params,
            max_body=max_body, spool_threshold=spool_threshold)
        self.allowed = _AddressList(web_server_addrs)

    @classmethod
    def from_config(cls, app: Callable, config: Any) -> "FastCGIServer":
        addrs = list(getattr(config, "fcgi_web_server_addrs", None) or []) + environ_web_server_addrs()
        return cls(app,
                   threads=getattr(config, "threads", 4),
                   workers=max(getattr(config, "workers", 1) or 1, getattr(config, "workers_max", 0) or 0),
                   max_params=getattr(config, "fcgi_max_params", 128 << 10),
                   spool_threshold=getattr(config, "fcgi_spool_threshold", 1 << 20),
                   max_body=getattr(config, "fcgi_max_body", 0),
                   errors_to_log=getattr(config, "fcgi_errors_to_log", False),
                   max_conn_requests=getattr(config, "fcgi_max_conn_requests", 0),
                   idle_timeout=getattr(config, "idle_timeout", 60.0),
                   web_server_addrs=addrs,
                   script_name=getattr(config, "script_name", None))

    def handler(self, sock: socket.socket, addr: Any, listener: Any, state: Any):
        """The Worker's connection factory."""
        if self.allowed and getattr(listener, "kind", "tcp") == "tcp" and addr:
            if not self.allowed.allows(addr[0]):
                log.warning("refused a FastCGI connection from %s: not in FCGI_WEB_SERVER_ADDRS", addr[0])
                return _Refused()
        return Handler(self, sock, addr, state)


def environ_web_server_addrs() -> list:
    """FastCGI 1.0 §2.3: the web server may pass FCGI_WEB_SERVER_ADDRS (comma or space separated)."""
    env_addrs = os.environ.get("FCGI_WEB_SERVER_ADDRS", "")
    return [a for a in env_addrs.replace(" ", ",").split(",") if a.strip()]


def web_server_addrs_problem(config: Any) -> Optional[str]:
    """One line naming the flag or variable whose entry is no address, or None.

    Checked before serving: found later, in the worker, it was a traceback.
    """
    for origin, entries in (("--fcgi-web-server-addrs", getattr(config, "fcgi_web_server_addrs", None)),
                            ("FCGI_WEB_SERVER_ADDRS", environ_web_server_addrs())):
        try:
            _AddressList(entries)
        except ValueError as exc:
            return f"{origin}: {exc}"
    return None


class _AddressList:
    """FCGI_WEB_SERVER_ADDRS: exact IPv4/IPv6 addresses, or networks."""

    def __init__(self, entries: Any) -> None:
        self.exact: set = set()
        self.networks: list = []
        if not entries:
            return
        import ipaddress
        for entry in entries:
            entry = entry.strip()
            if not entry:
                continue
            try:
                if "/" in entry:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                else:
                    self.exact.add(ipaddress.ip_address(entry.strip("[]")))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None

    def __bool__(self) -> bool:
        return bool(self.exact or self.networks)

    def allows(self, host: str) -> bool:
        import ipaddress
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        candidates = (ip, mapped) if mapped else (ip,)
        return any(c in self.exact or any(c in net for net in self.networks) for c in candidates)


class _Refused:
    """A connection from an address FCGI_WEB_SERVER_ADDRS does not list: closed at once."""
    idle_deadline = None

    def on_readable(self) -> bool:
        return False

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------
# one connection


class Handler:
    """One FastCGI transport connection: reads records, runs the requests they complete.

    A request whose web server keeps the connection (FCGI_KEEP_CONN) runs
    as a task on a pool thread (``state.submit``), and the connection goes
    back to the Worker at once: records of other requests are read, and
    their requests run, while it runs -- what FCGI_MPXS_CONNS=1 promises
    (HAProxy's ``mpxs-conns``).  The thread that read the request takes the
    task itself as soon as it returns, so one request at a time (nginx's
    ``fastcgi_keep_conn``) costs no hand-off.  A request after which the
    connection closes (KEEP_CONN=0, nginx's default) runs inline, as does
    everything where there is no pool to submit to.

    Concurrent requests share the socket: each batch of records is framed
    and written under ``lock``, so records never interleave.  Once a task
    has run, the handler writes through its own duplicate of the socket:
    the Worker closing its descriptor (the web server closed, a graceful
    stop) cannot make a running request write into a reused descriptor,
    and the last task closes the duplicate.  Each request's transport and
    ``wsgi.errors`` is an :class:`Exchange`.
    """

    idle_deadline = None   # the Worker's --idle-timeout applies between requests

    def __init__(self, server: FastCGIServer, sock: socket.socket, addr: Any, state: Any) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.state = state
        self.submit = getattr(state, "submit", None)
        self.peer = _peer_name(addr)
        self.conn = fcgi.ServerConnection(**server.conn_options)
        self.lock = threading.Lock()    # the ServerConnection and every write to the socket
        self.pending: list = []     # ready requests to run inline, in order
        self.dead = False           # the socket broke or the protocol failed: close
        self.served = 0
        self.tasks = 0              # requests running (or queued) on pool threads (under lock)
        self.own_sock = False       # self.sock is the handler's duplicate (see the class doc)
        self.released = False       # the Worker has closed the connection
        self.refused = False        # a request was refused: the web server may still be sending
        self.lingering = False
        self.exchange = Exchange(self, True)   # the transport of inline requests, reused

    # ---- the Worker's interface ----------------------------------------

    @property
    def holds_request(self) -> bool:
        """A request has begun (records of it arrived) or runs: closing the
        connection to make room would drop it (see Worker._make_room)."""
        return bool(self.conn.requests) or bool(self.pending) or self.tasks > 0

    def on_readable(self) -> bool:
        try:
            return self._readable()
        except OSError as exc:
            # A write to the web server failed outside a response (a
            # management reply, an END_REQUEST after ABORT): it is gone.
            log.info("FastCGI connection from %s broke: %s", self.peer, exc)
            return False

    def _readable(self) -> bool:
        buf, view = _buffer()
        if self.lingering:
            return self._discard(buf)
        if not self.tasks:
            self.idle_deadline = None
        events = None
        while True:
            try:
                n = _readv(self.fd, (buf,))
            except BlockingIOError:
                break
            except OSError as exc:
                log.info("FastCGI connection from %s broke: %s", self.peer, exc)
                self._abort_running()
                return False
            if n == 0:
                if events is not None:
                    break       # serve what arrived; EOF shows on the next read
                with self.lock:
                    try:
                        self.conn.receive_eof()
                    except fcgi.ProtocolError as exc:
                        log.warning("FastCGI connection from %s: %s", self.peer, exc)
                    else:
                        if self.conn.requests:
                            log.info("FastCGI connection from %s closed with %s unanswered",
                                     self.peer, counted(len(self.conn.requests), "request"))
                self._abort_running()
                return False
            try:
                # A small read is copied once (records are then slices of
                # it); a large one is parsed from the buffer itself.
                with self.lock:
                    new = self.conn.receive_data(view[:n] if n > SMALL_WRITE else bytes(view[:n]))
            except fcgi.ProtocolError as exc:
                log.warning("closing the FastCGI connection from %s: %s", self.peer, exc)
                self._abort_running()
                return False
            events = new if events is None else events + new
            if n < RECV_SIZE:
                break   # most likely all there is: save the read that would say EAGAIN
        if events:
            self._events(events)
        else:
            self._send_replies()   # management replies make no event
        return self._serve()

    def _abort_running(self) -> None:
        """The web server closed or broke the connection: that aborts every
        request on it (§3.5); running ones stop at their next write."""
        if self.tasks:
            with self.lock:
                for request in self.conn.requests.values():
                    request.aborted = True

    def _linger(self) -> bool:
        """Close after a refusal without cutting off a web server still sending.

        A request refused early (PARAMS over the limit, an overloaded
        BEGIN_REQUEST) is answered before the web server has sent all of it.
        Closing at once would make its remaining writes fail (EPIPE, or a TCP
        reset that can discard the answer before it is read).  So: stop
        writing, read and drop what still comes until it closes its side, for
        at most LINGER seconds (the Worker's sweep enforces ``idle_deadline``).
        """
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.lingering = True
        self.idle_deadline = _monotonic() + LINGER
        return True

    def _discard(self, buf) -> bool:
        if _monotonic() >= self.idle_deadline:
            return False
        for _ in range(16):     # a peer sending flat out gets no thread to itself
            try:
                n = _readv(self.fd, (buf,))
            except BlockingIOError:
                return True
            except OSError:
                return False
            if n == 0:
                return False
        return True

    def close(self) -> None:
        """The Worker closed the connection: close the bodies of the requests
        it leaves behind (a spooled body is a temporary file); running tasks
        finish through the handler's own socket, and the last one closes it.

        Never waits: the Worker may call this holding its own lock, and a
        task may hold ``lock`` for as long as a write takes (--io-timeout).
        ``released`` is published first; a task checks it after letting go
        of the lock (see :meth:`_task_done`), so one of the two closes.
        """
        self.released = True
        if not self.lock.acquire(blocking=False):
            return      # a task is writing: it (or the last task) closes the socket
        try:
            left = [*self.pending, *(r for r in self.conn.requests.values()
                                     if r.state != fcgi.RUNNING_STATE)]
            for request in left:
                request.close_input()
            self.pending = []
            close = self.own_sock and not self.tasks
            # The inline Exchange points back at the handler: left in place,
            # every connection (one per request behind nginx's default) is a
            # cycle of a dozen objects for the cyclic collector -- 13 % of
            # the instructions per request.  No inline request runs now: they
            # run inside on_readable, and the Worker closes outside it.
            self.exchange = None
        finally:
            self.lock.release()
        if close:
            self.sock.close()

    # ---- requests --------------------------------------------------------

    def _events(self, events: list) -> None:
        """Start ready requests, log the rest (the protocol already answered them)."""
        for event in events:
            kind = type(event)
            if kind is fcgi.RequestReady:
                self._dispatch(event.request)
            elif kind is fcgi.RequestAborted:
                if not event.running:
                    log.info("FastCGI request %d from %s aborted by the web server before it "
                             "was complete", event.request_id, self.peer)
                # running: its Exchange sees request.aborted at its next write
            elif kind is fcgi.RequestRejected:
                self.refused = True
                log.warning("FastCGI request %d from %s refused with %d: %s",
                            event.request_id, self.peer, event.status, event.reason)
            else:
                if event.rtype == fcgi.BEGIN_REQUEST:
                    self.refused = True
                log.info("FastCGI connection from %s: %s record for request %d: %s",
                         self.peer, fcgi.record_name(event.rtype), event.request_id, event.reason)
        self._send_replies()

    def _send_replies(self) -> None:
        """What the protocol answered by itself (management replies, refusals)."""
        with self.lock:
            out = self.conn.data_to_send()
            if out:
                self._send(out)

    def _dispatch(self, request: fcgi.Request) -> None:
        """A ready request: a task if the connection outlives it, else inline, in turn."""
        if self.submit is None or not request.keep_conn or self.dead:
            self.pending.append(request)
            return
        with self.lock:
            if not self.own_sock:
                try:
                    sock = self.sock.dup()
                except OSError as exc:     # out of descriptors: serve it inline, in turn
                    log.warning("FastCGI connection from %s: cannot run requests concurrently: %s",
                                self.peer, exc)
                    self.pending.append(request)
                    return
                self.sock, self.fd, self.own_sock = sock, sock.fileno(), True
            self.tasks += 1
            self.idle_deadline = _FOREVER   # the sweep must not close it under a running request
        self.submit(lambda: self._task(request))

    def _serve(self) -> bool:
        """Run the inline requests; True to keep the connection."""
        while self.pending and not self.dead:
            request = self.pending.pop(0)
            if request.aborted:
                with self.lock:
                    self._send(self.conn.end_request(request.id, 1))
                log.info("FastCGI request %d from %s aborted before it ran", request.id, self.peer)
            else:
                self._run(request, self.exchange)
            with self.lock:
                self.served += 1
        if self.dead:
            return False
        if self.conn.must_close:
            return self._linger() if self.refused and not self.tasks else False
        limit = self.server.max_conn_requests
        if limit and self.served >= limit and not self.conn.requests:
            return False
        return True

    def _task(self, request: fcgi.Request) -> None:
        """A request on a pool thread (see the class doc)."""
        try:
            if request.aborted:
                with self.lock:
                    if not self.dead and request.id in self.conn.requests:
                        self._send(self.conn.end_request(request.id, 1))
                log.info("FastCGI request %d from %s aborted before it ran", request.id, self.peer)
            else:
                self._run(request, Exchange(self, False))
        except OSError as exc:
            log.info("FastCGI connection from %s broke: %s", self.peer, exc)
            self.dead = True
        finally:
            self._task_done()

    def _task_done(self) -> None:
        """The last task of a connection the Worker has closed closes the
        handler's socket; one that leaves a connection that must end (KEEP_CONN
        was 0, --fcgi-max-conn-requests, broken) shuts it down, and the Worker,
        woken by that, closes it."""
        idle = self.server.idle_timeout
        limit = self.server.max_conn_requests
        with self.lock:
            self.tasks -= 1
            self.served += 1
            if self.tasks:
                return
            self.idle_deadline = _monotonic() + idle if idle else None
            end = self.dead or self.conn.must_close or (
                limit and self.served >= limit and not self.conn.requests)
        if self.released:       # read after the lock: see close()
            self.sock.close()
        elif end:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self, request: fcgi.Request, exchange: "Exchange") -> None:
        server = self.server
        exchange.start(request)
        params = request.params
        app = server.app
        try:
            fix_script_name_and_path_info(params, server.script_name)
        except AmbiguousPath:
            app = refuse_ambiguous_path
            params.setdefault("PATH_INFO", "")
        errors = _LogErrors() if server.errors_to_log else exchange
        environ = make_environ(
            params,
            input=request.stdin,
            errors=errors,
            multithread=server.multithread,
            multiprocess=server.multiprocess,
            # The whole body is in hand (memory or spool file): reading to
            # its end is always safe, with or without CONTENT_LENGTH.
            input_terminated=True,
        )
        environ["fastcgi.role"] = request.role_name
        if request.data is not None:
            environ["fastcgi.data"] = request.data
        state = self.state
        state.request_started(environ)
        try:
            call_app(app, environ, exchange)
        finally:
            state.request_finished()
            exchange.request = None
            if errors is not exchange:
                errors.flush()      # a last line without its newline
        if not exchange.ended and not self.dead:
            # The app was stopped by ABORT_REQUEST: the request still gets
            # its END_REQUEST (§5.4), and the connection lives on.
            with self.lock:
                err = exchange._flush_err()
                exchange.ended = True
                self._send(err + self.conn.end_request(request.id, 1))
        exchange.err = []

    # ---- socket (callers hold ``lock``) ------------------------------------

    def _send(self, data: bytes) -> None:
        """Write all of ``data``: os.write on the (O_NONBLOCK) descriptor first,
        which is one syscall when the socket buffer has room -- ``sock.sendall``
        on a socket with a timeout always polls before it writes."""
        if not data:
            return
        try:
            n = _write(self.fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self.dead = True
            raise
        if n < len(data):
            try:
                self.sock.sendall(memoryview(data)[n:])
            except OSError:
                self.dead = True
                raise

    def _send_buffers(self, buffers: list) -> None:
        """Write all of ``buffers``: joined when small (one write), else with
        ``os.writev`` straight from the app's bytes -- no copy of a large body."""
        size = 0
        for b in buffers:
            size += len(b)
        if size <= SMALL_WRITE:
            self._send(b"".join(buffers))
            return
        fd = self.fd
        start = 0
        while start < len(buffers):
            batch = buffers[start:start + IOV_MAX]
            try:
                n = _writev(fd, batch)
            except BlockingIOError:
                self._wait_writable()
                continue
            except OSError:
                self.dead = True
                raise
            # Drop what was written: whole buffers, then the front of a
            # partial one (the next writev then usually waits for room).
            for b in batch:
                k = len(b)
                if n < k:
                    if n:
                        buffers[start] = memoryview(b)[n:]
                    break
                n -= k
                start += 1

    def _wait_writable(self) -> None:
        import select
        timeout = self.sock.gettimeout()
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        if not poller.poll(None if timeout is None else timeout * 1000):
            self.dead = True
            raise TimeoutError("timed out writing to the web server")

    def _cut_off(self) -> None:
        """Stop all output on this connection at once (the stream is mid-record)."""
        self.dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Exchange:
    """One request's side of a connection: its WSGI transport and ``wsgi.errors``.

    ``inline``: run by the thread that owns the connection's reading, which
    may then read incoming records between chunks of a streaming response;
    a task leaves reading to the Worker and only looks at the flags it sets
    (``request.aborted``, ``handler.dead``).
    """

    __slots__ = ("handler", "conn", "inline", "rid", "request", "ended", "err")

    def __init__(self, handler: Handler, inline: bool) -> None:
        self.handler = handler
        self.conn = handler.conn
        self.inline = inline
        self.rid = 0
        self.request: Optional[fcgi.Request] = None
        self.ended = True
        self.err: list = []

    def start(self, request: fcgi.Request) -> None:
        self.rid = request.id
        self.request = request
        self.ended = False
        self.err = []

    # ---- transport (bridge.wsgi.Transport) -------------------------------

    def send_head(self, status: str, headers: list, body: bytes, end: bool) -> None:
        head = b"Status: " + status.encode("latin-1") + b"\r\n" + encode_headers(headers) + b"\r\n"
        h = self.handler
        if not end:
            self._check_incoming()
        if len(body) <= SMALL_WRITE:
            # The common case: one buffer, one write.
            data = head + body if body else head
            with h.lock:
                err = self._flush_err() if self.err else b""
                if end:
                    self.ended = True
                    out = self.conn.respond(self.rid, data)
                else:
                    out = self.conn.stdout(self.rid, data)
                h._send(err + out if err else out)
            return
        with h.lock:
            err = self._flush_err() if self.err else b""
            if end:
                self.ended = True
                buffers = self.conn.respond_buffers(self.rid, (head, body))
            else:
                buffers = self.conn.stdout_buffers(self.rid, (head, body))
            if err:
                buffers.insert(0, err)
            h._send_buffers(buffers)

    def send_body(self, data: bytes) -> None:
        self._check_incoming()
        h = self.handler
        with h.lock:
            out = self.conn.stdout_buffers(self.rid, (data,))
            if self.err:
                out.insert(0, self._flush_err())
            h._send_buffers(out)

    def finish(self) -> None:
        if not self.ended:
            h = self.handler
            with h.lock:
                err = self._flush_err()
                self.ended = True
                h._send(err + self.conn.end_request(self.rid))

    def abort(self) -> None:
        """The app failed after its head went out: there is no way to say so in
        FastCGI but to close the connection without END_REQUEST, so that the web
        server reports an upstream error instead of passing on a truncated body
        as if it were complete (requests multiplexed with it fail too)."""
        self.ended = True
        h = self.handler
        with h.lock:
            h.dead = True
            try:
                h._send(self._flush_err())
                h.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send_file(self, fd: int, offset: int, count: int) -> None:
        """``wsgi.file_wrapper`` on a regular file: os.sendfile between record headers.

        Each record header announces its length before the data is sent, so
        a failure inside a record (the file shrank, the write failed) leaves
        the stream in the middle of it: nothing more may be written on this
        connection, not even END_REQUEST, or the web server would read it as
        STDOUT data.  The connection is marked dead and shut down;
        :class:`~bridge.wsgi.FileShrank` makes ``call_app`` log it.  The lock
        is held for a whole record: another request's records wait.
        """
        self._check_incoming()
        h = self.handler
        if self.err:
            with h.lock:
                h._send(self._flush_err())
        rid = self.rid
        chunk = 65528   # a multiple of 8: no padding between header and data
        while count > 0:
            n = min(chunk, count)
            with h.lock:
                if h.dead:
                    raise ClientGone("the connection to the web server is gone")
                h._send(fcgi.record_header(fcgi.STDOUT, rid, n))
                sent = 0
                try:
                    while sent < n:
                        try:
                            k = os.sendfile(h.fd, fd, offset + sent, n - sent)
                        except BlockingIOError:
                            h._wait_writable()
                            continue
                        if k == 0:
                            raise FileShrank(count - sent)
                        sent += k
                except BaseException:
                    h._cut_off()
                    raise
                if -n & 7:
                    h._send(bytes(-n & 7))
            offset += n
            count -= n

    # ---- wsgi.errors ----------------------------------------------------------

    def write(self, text: str) -> int:
        if isinstance(text, (bytes, bytearray)):
            data = bytes(text)
        else:
            data = str(text).encode("utf-8", "backslashreplace")
        if self.request is None or self.ended or self.handler.dead:
            # written after the response ended (a kept reference), or with
            # the web server gone: bridge's own log, so it is not lost
            app_log.error("%s", data.decode("utf-8", "replace").rstrip("\n"))
        else:
            self.err.append(data)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        h = self.handler
        if self.err and not self.ended and not h.dead:
            try:
                with h.lock:
                    h._send(self._flush_err())
            except OSError:
                pass

    def _flush_err(self) -> bytes:
        """STDERR records for what the app wrote (caller holds the handler's lock)."""
        if not self.err:
            return b""
        data = b"".join(self.err)
        self.err = []
        if self.rid not in self.conn.requests:
            return b""
        return self.conn.stderr(self.rid, data)

    def _check_incoming(self) -> None:
        """Between chunks of a streaming response: did the web server abort or leave?"""
        h = self.handler
        if self.inline:
            buf, view = _buffer()
            try:
                n = _readv(h.fd, (buf,))
            except BlockingIOError:
                n = None
            except OSError as exc:
                h.dead = True
                raise ClientGone(f"connection broke: {exc}") from None
            if n == 0:
                h.dead = True
                h._abort_running()
                raise ClientGone("the web server closed the connection")
            if n:
                try:
                    with h.lock:
                        events = self.conn.receive_data(view[:n])
                except fcgi.ProtocolError as exc:
                    h.dead = True
                    raise ClientGone(f"protocol error: {exc}") from None
                h._events(events)
        elif h.dead:
            raise ClientGone("the connection to the web server is gone")
        request = self.request
        if request is not None and request.aborted:
            raise ClientGone(f"request {request.id} aborted by the web server (ABORT_REQUEST)")


class _LogErrors:
    """``wsgi.errors`` with --fcgi-errors-to-log: whole lines to bridge's error log."""

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial = ""

    def write(self, text: str) -> int:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        data = self.partial + text
        lines = data.split("\n")
        self.partial = lines.pop()
        if lines:
            app_log.error("%s", "\n".join(lines))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.partial:
            app_log.error("%s", self.partial)
            self.partial = ""


def _peer_name(addr: Any) -> str:
    if isinstance(addr, tuple) and addr:
        return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
    return "unix socket"


# --------------------------------------------------------------------------
# entry points


def factory_builder(app: Callable, config: Any) -> Callable:
    """``bridge.server.serve``'s hook: the connection factory for ``app``."""
    return FastCGIServer.from_config(app, config).handler


def main(config: Any) -> int:
    """``bridge fcgi APP``."""
    from bridge.server import serve
    problem = web_server_addrs_problem(config)
    if problem:
        sys.stderr.write(f"bridge fcgi: {problem}\n")
        return 2
    return serve(config, factory_builder)


def serve_inherited(app: Callable, **options: Any) -> int:
    """``bridge.run(app)`` when fd 0 is a listening socket (mod_fcgid, spawn-fcgi).

    ``options`` are settings by name (``threads=1``, ``fcgi_max_params=...``);
    ``BRIDGE_*`` environment variables apply too.
    """
    from bridge.config import Config, ConfigError
    from bridge.server import serve
    from bridge.server.listeners import BindError, inherited_listeners
    try:
        config = Config.build("fcgi", options, keywords=True)
        problem = web_server_addrs_problem(config)
        if problem:
            raise ConfigError(problem)
        listeners = inherited_listeners()
    except (ConfigError, BindError) as exc:
        sys.stderr.write(f"bridge fcgi: {exc}\n")
        return 2
    return serve(config, factory_builder, app=app, listeners=listeners)
