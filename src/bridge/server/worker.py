"""One worker process: an epoll loop and a pool of threads (gthread's shape, done lean).

The loop thread owns the listening sockets and every *idle* connection; it
never runs application code.  A connection with bytes to read (or one just
accepted) is put on a :class:`queue.SimpleQueue`; a pool thread takes it and
calls ``handler.on_readable()``, which reads what is there, runs any complete
request(s) -- the app runs in that pool thread -- and returns ``True`` ("wake
me when readable again") or ``False`` ("close it").  So a thread is never tied
to an idle keep-alive connection, and a slow client costs a thread only while
it is actually sending a request body or receiving a response.

Why each detail:

* ``EPOLLONESHOT`` on connections: once an event is reported the fd is
  disarmed until the pool thread re-arms it with ``epoll.modify`` (from the pool
  thread itself: no hand-back through the loop, no wake-up write per request).
  Two threads can never serve one connection at once.
* ``EPOLLEXCLUSIVE`` on listening sockets: with N worker processes sharing a
  socket, a new connection wakes one of them, not all N (thundering herd).
  epoll cannot ``modify`` an exclusive registration, so pausing unregisters.
* With sibling worker processes (pre-fork), stop accepting while the pool
  has ``accept_limit`` connections in hand (running or queued), so a
  saturated worker leaves new connections in the kernel's queue for an idle
  sibling instead of hoarding them.  A worker alone never pauses: nobody
  else would take the connection, and a connection left in the kernel's
  accept queue waits far longer (until a pool thread frees up *and* the loop
  re-arms) than one queued behind a few requests in the pool.
* A just-accepted connection goes straight to the pool: with
  ``TCP_DEFER_ACCEPT`` on the listener its request is usually already there,
  which saves an epoll round trip on every new connection.
* The loop sweeps idle connections against ``handler.idle_deadline`` (or the
  worker's ``idle_timeout`` counted from when the connection went idle): the
  keep-alive timeout, and the slow-loris cut-off when a handler sets its
  deadline to a header timeout.
* Accepted sockets stay in blocking mode with a timeout (``io_timeout``) for
  the app's sends and body reads.  Handlers read what is available *now* with
  :func:`recv_available` / :func:`recv_available_into`, not with
  ``sock.recv(n, MSG_DONTWAIT)``: on a socket with a timeout CPython polls
  for readability *before* calling recv(), so that call waits for the whole
  timeout when nothing has arrived.  A socket with a timeout is O_NONBLOCK
  at the OS level, so a plain read(2) on its descriptor returns at once.

Nothing is allocated per request here: one small :class:`Connection` per
connection, a fixed pool of threads, one queue.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["Worker", "WorkerState", "Connection", "recv_available", "recv_available_into"]

_EPOLLIN = select.EPOLLIN
_EPOLLONESHOT = select.EPOLLONESHOT
_EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
_ARM = _EPOLLIN | _EPOLLONESHOT
_monotonic = time.monotonic
_get_ident = threading.get_ident
_os_read = os.read
_os_readv = os.readv

#: Stands for "no limit" on sockets: the descriptor must stay O_NONBLOCK (see
#: recv_available), which settimeout(None) would undo.
NO_TIMEOUT = 365 * 24 * 3600.0

#: accept() errors that mean "out of descriptors or memory": pause, do not spin.
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def recv_available(sock: socket.socket, bufsize: int = 65536) -> Optional[bytes]:
    """What the peer has sent, without waiting: data, ``b""`` at EOF, ``None`` if nothing yet.

    Raises ``OSError`` (e.g. ``ConnectionResetError``) when the connection broke.
    """
    if _is_tls(sock):
        return _tls_recv(sock, bufsize)
    try:
        return _os_read(sock.fileno(), bufsize)
    except BlockingIOError:
        return None


def recv_available_into(sock: socket.socket, buffer) -> Optional[int]:
    """Like :func:`recv_available` into a writable buffer: bytes read, 0 at EOF, ``None`` if nothing."""
    if _is_tls(sock):
        data = _tls_recv(sock, len(buffer))
        if data is None:
            return None
        buffer[:len(data)] = data
        return len(data)
    try:
        return _os_readv(sock.fileno(), (buffer,))
    except BlockingIOError:
        return None


def _is_tls(sock) -> bool:
    return type(sock) is not socket.socket and hasattr(sock, "pending")


def _tls_recv(sock, bufsize: int) -> Optional[bytes]:
    import ssl
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(bufsize)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return None
    finally:
        sock.settimeout(timeout)


class WorkerState:
    """What a worker is doing, for the handlers, the master and the status page.

    Handlers call :meth:`request_started` / :meth:`request_finished` around
    each app call.  Per-thread slots (indexed by pool thread) hold the current
    request and a request count, written only by their own thread: no lock on
    the hot path, and the totals are exact.  ``slot`` is an optional
    scoreboard slot (shared memory the master reads); ``accepting`` is false
    once the worker stops taking connections (a handler can then answer with
    ``Connection: close``).
    """

    def __init__(self, threads: int = 1, *, max_requests: int = 0, slot=None) -> None:
        self.accepting = True
        self.stopping = False
        self.max_requests = max_requests
        self.slot = slot
        self.accepted = 0              # written by the loop thread only
        self.slow = 0                  # requests reported by --slowlog
        self.current: list = [None] * threads   # (start, environ) per pool thread
        self.counts = [0] * (threads + 1)        # last entry: non-pool threads
        self._index: dict = {}
        self._other_lock = threading.Lock()
        self.on_max_requests: Optional[Callable[[], None]] = None
        self.started = time.time()

    def register_thread(self, index: int) -> None:
        self._index[_get_ident()] = index

    @property
    def requests(self) -> int:
        return sum(self.counts)

    @property
    def busy_threads(self) -> int:
        return sum(1 for c in self.current if c is not None)

    def request_started(self, environ: dict) -> None:
        i = self._index.get(_get_ident())
        now = _monotonic()
        if i is not None:
            self.current[i] = (now, environ)
            if self.slot is not None:
                self.slot.request_started(i, now, environ)

    def request_finished(self) -> None:
        i = self._index.get(_get_ident())
        if i is None:
            with self._other_lock:
                self.counts[-1] += 1
        else:
            self.current[i] = None
            self.counts[i] += 1
            if self.slot is not None:
                self.slot.request_finished(i)
        if self.max_requests and self.on_max_requests is not None \
                and sum(self.counts) >= self.max_requests:
            callback, self.on_max_requests = self.on_max_requests, None
            callback()

    def in_flight(self) -> list:
        """``[(seconds running, environ), ...]`` for the requests running now."""
        now = _monotonic()
        return [(now - c[0], c[1]) for c in list(self.current) if c is not None]


class Connection:
    """One accepted connection: its socket, its handler, where it is."""

    __slots__ = ("sock", "fd", "handler", "registered", "busy", "closed", "idle_since")

    def __init__(self, sock: socket.socket, handler) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.handler = handler
        self.registered = False
        self.busy = True
        self.closed = False
        self.idle_since = 0.0


class Worker:
    """Serve ``listeners`` with ``factory``-made handlers until stopped.

    ``factory(sock, addr, listener, state) -> handler``; the handler has
    ``on_readable() -> bool``, ``close()`` and ``idle_deadline`` (a
    ``time.monotonic()`` value, or ``None`` for "idle_timeout after going
    idle").  ``idle_timeout`` ``None``/0 means no limit.
    """

    def __init__(self, listeners: list, factory: Callable, *, threads: int = 4,
                 graceful_timeout: float = 30.0, max_requests: int = 0,
                 idle_timeout: Optional[float] = 5.0, io_timeout: Optional[float] = 30.0,
                 log: Optional[logging.Logger] = None, state: Optional[WorkerState] = None,
                 on_tick: Optional[Callable[[], None]] = None,
                 accept_limit: Optional[int] = None) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.listeners = list(listeners)
        self.factory = factory
        self.threads = threads
        #: Connections in hand (running or queued) at which accepting pauses;
        #: None: never pause (a worker without siblings).
        self.accept_limit = accept_limit
        self.graceful_timeout = graceful_timeout
        self.idle_timeout = idle_timeout or None
        self.io_timeout = io_timeout or None
        self.log = log or logging.getLogger("bridge.server")
        self.state = state or WorkerState(threads, max_requests=max_requests)
        if state is not None and max_requests:
            self.state.max_requests = max_requests
        self.state.on_max_requests = self._max_requests_reached
        self.on_tick = on_tick        # called by the loop about once a second (heartbeat)
        self._queue = None
        self._epoll = None
        self._lock = threading.Lock()
        self._conns: dict = {}
        self._dispatched = 0          # loop thread only
        self._done = 0                # under _lock
        self._paused = False          # listeners unregistered (pool full or stopping)
        self._resume_at = 0.0         # after EMFILE: do not accept before this
        self._stop = None             # None, "graceful" or "now"
        self._wake_r = self._wake_w = -1
        self._wake_pending = False
        self._calls: list = []        # call_soon() callbacks, run by the loop thread
        self._threads: list = []
        self._by_fd: dict = {}

    # -- control ---------------------------------------------------------

    def stop(self, graceful: bool = True) -> None:
        """Ask the loop to stop (safe from a signal handler or any thread)."""
        if self._stop != "now":
            self._stop = "graceful" if graceful else "now"
        self.state.accepting = False
        self.state.stopping = True
        self._wake()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop thread (from a signal handler: never log or lock there)."""
        self._calls.append(fn)
        self._wake()

    def _max_requests_reached(self) -> None:
        self.log.info("worker %d served %d requests (--max-requests): restarting",
                      os.getpid(), self.state.requests)
        self.stop(graceful=True)

    def _wake(self) -> None:
        if self._wake_w >= 0:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:             # pipe full (a wake is pending anyway) or closed
                pass

    # -- the loop ----------------------------------------------------------

    def run(self) -> None:
        """Serve until :meth:`stop`; returns once the in-flight requests are done."""
        import queue
        self._queue = queue.SimpleQueue()
        self._epoll = epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        epoll.register(self._wake_r, _EPOLLIN)
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._by_fd[listener.sock.fileno()] = listener
        self._arm_listeners()
        for i in range(self.threads):
            t = threading.Thread(target=self._pool_thread, args=(i,), daemon=True,
                                 name=f"bridge-pool-{i}")
            t.start()
            self._threads.append(t)
        try:
            self._loop()
        finally:
            self._shutdown()

    def _arm_listeners(self) -> None:
        for fd in self._by_fd:
            try:
                self._epoll.register(fd, _EPOLLIN | _EPOLLEXCLUSIVE)
            except OSError:     # a kernel before 4.5 refuses EPOLLEXCLUSIVE (EINVAL)
                self._epoll.register(fd, _EPOLLIN)
        self._paused = False
        self.state.accepting = self._stop is None

    def _pause_listeners(self) -> None:
        for fd in self._by_fd:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        self._paused = True

    def _loop(self) -> None:
        epoll = self._epoll
        poll = epoll.poll
        by_fd = self._by_fd
        conns = self._conns
        put = self._queue.put
        wake_r = self._wake_r
        # Deadlines are checked 4 times a second (finer for short idle timeouts):
        # cheap even with thousands of idle connections, and precise enough.
        sweep_every = 0.25
        if self.idle_timeout:
            sweep_every = max(0.02, min(sweep_every, self.idle_timeout / 4))
        next_sweep = _monotonic() + sweep_every
        tick = self.on_tick
        next_tick = 0.0
        while True:
            if self._stop is not None:
                if self._stop == "now" or self._graceful_step():
                    return
            timeout = next_sweep - _monotonic()
            try:
                events = poll(timeout if timeout > 0 else 0)
            except InterruptedError:    # pragma: no cover - PEP 475 retries
                continue
            for fd, _ in events:
                conn = conns.get(fd)
                if conn is not None:
                    conn.busy = True
                    self._dispatched += 1
                    put(conn)
                elif fd == wake_r:
                    # Drain first, then clear: a pool thread that sets the flag
                    # and writes between a clear and the drain would otherwise
                    # lose its wake-up forever (the flag stays set, nobody
                    # writes again, and the paused loop only resumes on its
                    # 250 ms sweep).
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self._wake_pending = False
                else:
                    listener = by_fd.get(fd)
                    if listener is not None and not self._paused:
                        self._accept(listener)
            while self._calls:
                fn = self._calls.pop(0)
                try:
                    fn()
                except Exception:
                    self.log.exception("callback %r failed", fn)
            busy = self._dispatched - self._done
            if self._paused and self._stop is None \
                    and (self.accept_limit is None or busy < self.accept_limit) \
                    and _monotonic() >= self._resume_at:
                self._arm_listeners()
            now = _monotonic()
            if now >= next_sweep:
                next_sweep = now + sweep_every
                self._sweep(now)
                if tick is not None and now >= next_tick:
                    next_tick = now + 1.0
                    try:
                        tick()
                    except Exception:
                        self.log.exception("worker tick failed")

    def _accept(self, listener) -> None:
        lsock = listener.sock
        accept = lsock.accept
        factory = self.factory
        state = self.state
        put = self._queue.put
        limit = self.accept_limit
        nodelay = listener.kind == "tcp"
        timeout = self.io_timeout or NO_TIMEOUT
        while True:
            if limit is not None and self._dispatched - self._done >= limit:
                # Pool full: leave further connections to sibling workers.
                self._pause_listeners()
                return
            try:
                sock, addr = accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self.log.error("accept on %s failed: %s; pausing accepts for 0.5 s",
                                   listener.name, exc.strerror)
                    self._pause_listeners()
                    self._resume_at = _monotonic() + 0.5
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                self.log.error("accept on %s failed: %s", listener.name, exc)
                return
            state.accepted += 1
            try:
                sock.settimeout(timeout)
                if nodelay:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handler = factory(sock, addr, listener, state)
            except Exception:
                self.log.exception("cannot set up a connection from %s", addr or listener.name)
                sock.close()
                continue
            conn = Connection(sock, handler)
            self._dispatched += 1
            put(conn)

    def _sweep(self, now: float) -> None:
        """Close idle connections past their deadline (keep-alive end, slow loris)."""
        default = self.idle_timeout
        expired = []
        for conn in list(self._conns.values()):
            if conn.busy:
                continue
            deadline = conn.handler.idle_deadline
            if deadline is None and default is not None:
                deadline = conn.idle_since + default
            if deadline is not None and now >= deadline:
                expired.append(conn)
        for conn in expired:
            with self._lock:
                if conn.busy or conn.closed:
                    continue
                self._close(conn)

    def _graceful_step(self) -> bool:
        """One step of a graceful stop; True when it is finished."""
        if not getattr(self, "_stopping_since", None):
            self._stopping_since = _monotonic()
            self._pause_listeners()
            for listener in self.listeners:
                # Only our descriptor: the master (or serve()) owns the file.
                listener.sock.close()
            self.state.accepting = False
        with self._lock:
            for conn in list(self._conns.values()):
                if not conn.busy and not conn.closed:
                    self._close(conn)
        if self._dispatched - self._done <= 0:
            return True
        if self.graceful_timeout is not None and \
                _monotonic() - self._stopping_since >= self.graceful_timeout:
            self.log.warning("graceful timeout (%ss): abandoning %d request(s) in flight",
                             self.graceful_timeout, self._dispatched - self._done)
            return True
        return False

    # -- pool threads ----------------------------------------------------

    def _pool_thread(self, index: int) -> None:
        self.state.register_thread(index)
        get = self._queue.get
        lock = self._lock
        log = self.log
        epoll = self._epoll
        while True:
            conn = get()
            if conn is None:
                return
            try:
                keep = conn.handler.on_readable()
            except Exception:
                log.exception("connection handler failed; closing the connection")
                keep = False
            except BaseException:       # SystemExit from a misbehaving app: keep the thread
                log.exception("connection handler raised; closing the connection")
                keep = False
            with lock:
                self._done += 1
                if conn.closed:
                    pass
                elif keep and self._stop is None:
                    conn.busy = False
                    conn.idle_since = _monotonic()
                    try:
                        if conn.registered:
                            epoll.modify(conn.fd, _ARM)
                        else:
                            # In the table before epoll can report it: the loop
                            # drops events for fds it does not know.
                            self._conns[conn.fd] = conn
                            conn.registered = True
                            epoll.register(conn.fd, _ARM)
                    except (OSError, ValueError):
                        self._close(conn)
                else:
                    self._close(conn)
                wake = (self._paused or self._stop is not None) and not self._wake_pending
            if wake:
                self._wake()

    def _close(self, conn: Connection) -> None:
        """Forget and close a connection (caller holds ``_lock``)."""
        conn.closed = True
        if conn.registered:
            self._conns.pop(conn.fd, None)
            try:
                self._epoll.unregister(conn.fd)
            except (OSError, ValueError):
                pass
        try:
            conn.handler.close()
        except Exception:
            self.log.exception("closing a connection handler failed")
        try:
            conn.sock.close()
        except OSError:
            pass

    def _shutdown(self) -> None:
        graceful = self._stop != "now"
        for _ in self._threads:
            self._queue.put(None)
        with self._lock:
            self._stop = self._stop or "now"
            for conn in list(self._conns.values()):
                if not conn.busy:
                    self._close(conn)
        for listener in self.listeners:
            try:
                listener.sock.close()
            except OSError:
                pass
        # Pool threads finish their current request if it ends soon; they are
        # daemon threads, so one stuck in the app does not keep the process alive.
        deadline = _monotonic() + (1.0 if graceful else 0.0)
        for t in self._threads:
            t.join(max(0.0, deadline - _monotonic()))
        try:
            self._epoll.close()
        except OSError:
            pass
        if any(t.is_alive() for t in self._threads):
            # A thread still in the app may call _wake() later: keep the pipe
            # open rather than let it write into a reused descriptor.
            return
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1
