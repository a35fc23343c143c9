"""One worker process: a pool of threads sharing one epoll (gthread's contract, done lean).

Every running pool thread waits in ``epoll_wait`` on the worker's epoll, which
holds the listening sockets and every *idle* connection.  The kernel hands
each event to exactly one waiting thread, and that thread serves it itself
(it takes up to ``POLL_BATCH`` events per call; those it does not serve at
once wait in a queue that every running thread takes from first):
it accepts (a new connection) or calls ``handler.on_readable()``, which reads
what is there, runs any complete request(s) -- the app runs in that thread --
and returns ``True`` ("wake me when readable again") or ``False`` ("close
it").  So a thread is never tied to an idle keep-alive connection, and no
request pays for a hand-off between threads: an earlier design had a loop
thread accept and poll, then pass each connection through a queue to a pool
thread -- two wake-ups and a GIL hand-over per request, and, with two worker
processes and ``fastcgi_keep_conn``, a p99 of 0.25-0.9 s (see
docs/performance.md).  The loop thread that
remains does housekeeping only: idle sweeps, ``call_soon`` callbacks, the
tick, graceful stop.

Only one pool thread runs at a time unless one blocks (Go's sysmon, done
for the GIL).  Two threads that both have Python to run fight over the
GIL: every syscall one of them makes (a read, a write, an accept) hands
the GIL to the other, a context switch each way.  With four threads
serving a 14-byte app through nginx that came to six context switches per
request and cost 30-40 % of the throughput of a single thread.  So the
other threads are parked; one thread polls and serves.  The loop thread
looks every ``MONITOR_INTERVAL`` (while requests are coming in): a thread
still inside the same request as at the previous look is taken to be
blocked (in the app's I/O, a sleep, a slow client), and one more parked
thread is let in to poll and serve.  When a thread finishes a request and
more threads are running than that rule allows, it parks again.  A
CPU-bound or blocking app therefore still gets all ``threads`` at once,
within a few milliseconds; a fast app runs on one thread without GIL
ping-pong.

Why each detail:

* ``EPOLLONESHOT`` on connections: an event disarms the descriptor until the
  thread that served it re-arms it with ``epoll.modify``.  Two threads can
  never serve one connection at once; a stale event (the sweep closed the
  connection meanwhile, its descriptor reused) finds the connection busy or
  closed and is dropped.
* A thread accepts only while it is idle, so a worker process takes new
  connections only when it has a free thread: with sibling processes
  (pre-fork) a busy worker leaves them to an idle one.  Listeners are
  ``EPOLLEXCLUSIVE`` there (a new connection wakes one process, not all);
  ``accept_limit`` (the thread count) pauses accepting when that many
  requests are in hand.  A lone worker registers its listeners one-shot (a
  connection wakes one thread, re-armed right after the accept).
* The thread that accepted also takes the connections queued behind it in
  the kernel and registers them like idle ones (their requests are usually
  there already): one accept per event would drain a full accept queue one
  connection per round of the ready list.  Each counts as in hand until a
  thread takes it, so the batch stops at the accept limit.
* A lone worker never pauses: if every thread has been stuck in the same
  requests for a whole sweep, the loop thread accepts into a small backlog
  that the next free thread serves first.
* The loop sweeps idle connections against ``handler.idle_deadline`` (or the
  worker's ``idle_timeout`` counted from when the connection went idle): the
  keep-alive timeout, and the slow-loris cut-off when a handler sets its
  deadline to a header timeout.  Neither the sweep nor a graceful stop
  closes a connection whose next request has already arrived (waiting in
  the socket while every thread was busy): that request is served.
* Accepted sockets stay in blocking mode with a timeout (``io_timeout``) for
  the app's sends and body reads.  Handlers read what is available *now* with
  :func:`recv_available` / :func:`recv_available_into`, not with
  ``sock.recv(n, MSG_DONTWAIT)``: on a socket with a timeout CPython polls
  for readability *before* calling recv(), so that call waits for the whole
  timeout when nothing has arrived.  A socket with a timeout is O_NONBLOCK
  at the OS level, so a plain read(2) on its descriptor returns at once.
  A handler must accept a wake-up with nothing to read (return ``True``).
"""
from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import resource
import select
import socket
import threading
import time

from bridge.logtext import counted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["Worker", "WorkerState", "Connection", "default_max_connections", "idle_expired",
           "recv_available", "recv_available_into"]

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

#: At most this many connections accepted after the one a thread serves itself.
ACCEPT_BATCH = 64

#: Seconds between the loop thread's looks at the running threads while
#: requests are coming in: a thread in the same request at two looks in a
#: row lets one more parked thread in.  After ``MONITOR_QUIET`` looks in a
#: row that find no thread blocked the interval doubles, up to
#: ``MONITOR_MAX`` (each look costs a wake-up and a GIL hand-over: about
#: 7 % of a core at 1 ms); a look that finds one sets it back.  So a blocked
#: request is noticed within 1-2 ms while requests block often, 5-10 ms at
#: worst.  The loop keeps looking for ``MONITOR_LINGER`` seconds after the
#: last request, then sleeps until a thread starts one.
MONITOR_INTERVAL = 0.001
MONITOR_MAX = 0.005
MONITOR_QUIET = 50
MONITOR_LINGER = 0.1

#: Events taken per ``epoll_wait``.  Under load most connections are ready
#: at once; one event per call made the call a syscall per request.  The
#: rest wait, in the order the kernel reported them, in a queue that every
#: running pool thread takes from before it polls again, so one blocked
#: request does not hold up the events polled with it.
POLL_BATCH = 64

#: accept() errors that mean "out of descriptors or memory": pause, do not spin.
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

#: After an accept failed for lack of descriptors or memory: pause this long,
#: and say so again in the log at most once per ``RESOURCE_LOG_EVERY`` seconds.
RESOURCE_PAUSE = 0.5
RESOURCE_LOG_EVERY = 60.0

#: At ``max_connections`` with connections waiting in the listen queue, each
#: sweep closes up to this many idle connections, idle the longest first, to
#: make room (nginx reuses its keep-alive connections the same way): idle
#: clients must not lock new ones out for a whole keep-alive or idle timeout.
REUSE_BATCH = 16


def default_max_connections() -> int:
    """Connections a worker holds at most by default: half the open-files limit.

    Every connection is a descriptor, and so is every file, pipe or socket
    the app opens: a worker that accepts until ``EMFILE`` makes the request
    it is running fail on its next ``open()`` (a 500 for a client that did
    nothing wrong).  Half for connections leaves the other half to the app
    and to the worker's own descriptors (listeners, logs, epoll).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 20
    return max(1, soft // 2)


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


def _with_input(conns: list) -> set:
    """The descriptors among ``conns`` with something to read (or EOF) right now."""
    if not conns:
        return set()
    poller = select.poll()
    for conn in conns:
        poller.register(conn.fd, select.POLLIN)
    try:
        return {fd for fd, _ in poller.poll(0)}
    except OSError:
        return set()


def idle_expired(conns: list, now: float, idle_timeout: Optional[float]) -> list:
    """The idle connections among ``conns`` that may be closed at ``now``.

    Past its deadline -- ``handler.idle_deadline``, or ``idle_timeout`` after
    it went idle -- *and* with nothing waiting in its socket.  A connection
    whose next request has arrived while every pool thread was busy is not
    idle, whatever its clock says: closing it would drop a request the
    client has sent (and, for a POST, cannot safely send again).  The same
    holds for a keep-alive timeout, a FastCGI idle timeout and a new
    connection's header timeout; a pool thread serves it as soon as one is
    free.  (EOF counts as input: the thread that reads it closes the
    connection.)  A handler that is ``lingering`` -- closing gently, reading
    only to drop what still comes -- has no request left to lose: its
    deadline holds whatever waits, or a client that never stops sending
    would keep it open for ever.
    """
    expired = []
    for conn in conns:
        if conn.busy or conn.closed:
            continue
        deadline = conn.handler.idle_deadline
        if deadline is None and idle_timeout is not None:
            deadline = conn.idle_since + idle_timeout
        if deadline is not None and now >= deadline:
            expired.append(conn)
    if not expired:
        return expired
    waiting = _with_input([conn for conn in expired if not getattr(conn.handler, "lingering", False)])
    return [conn for conn in expired if conn.fd not in waiting]


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
        #: Set by the Worker: ``submit(fn)`` runs ``fn()`` on a pool thread (a
        #: handler's extra work, e.g. FastCGI requests multiplexed on one
        #: connection); None where there is no pool (handlers then work inline).
        self.submit: Optional[Callable[[Callable[[], None]], None]] = None
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

    __slots__ = ("sock", "fd", "handler", "registered", "busy", "closed", "idle_since", "pending")

    def __init__(self, sock: socket.socket, handler) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.handler = handler
        self.registered = False
        self.busy = True
        self.closed = False
        self.idle_since = 0.0
        #: Accepted in a batch, its first request not started yet: it counts
        #: as in hand until a thread takes it (or it is closed).
        self.pending = False


class Task:
    """A function :meth:`Worker.submit` queued for a pool thread."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn


class Worker:
    """Serve ``listeners`` with ``factory``-made handlers until stopped.

    ``factory(sock, addr, listener, state) -> handler``; the handler has
    ``on_readable() -> bool``, ``close()`` and ``idle_deadline`` (a
    ``time.monotonic()`` value, or ``None`` for "idle_timeout after going
    idle"), and may have ``lingering`` (true while it only drops what
    arrives: its deadline then holds even with input waiting).  ``idle_timeout`` ``None``/0 means no limit.  ``max_connections``
    (default: :func:`default_max_connections`) bounds the connections held
    open at once, idle ones included; beyond it accepting pauses and new
    connections wait in the kernel's listen queue.
    """

    def __init__(self, listeners: list, factory: Callable, *, threads: int = 4,
                 graceful_timeout: float = 30.0, max_requests: int = 0,
                 idle_timeout: Optional[float] = 5.0, io_timeout: Optional[float] = 30.0,
                 log: Optional[logging.Logger] = None, state: Optional[WorkerState] = None,
                 on_tick: Optional[Callable[[], None]] = None,
                 accept_limit: Optional[int] = None,
                 max_connections: Optional[int] = None) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.listeners = list(listeners)
        self.factory = factory
        self.threads = threads
        #: Requests in hand (running, in the backlog, or accepted in a batch and
        #: not started) at which accepting pauses; None: never pause for
        #: this (a worker without siblings).
        self.accept_limit = accept_limit
        self.max_connections = max_connections or default_max_connections()
        self.graceful_timeout = graceful_timeout
        self.idle_timeout = idle_timeout or None
        self.io_timeout = io_timeout or None
        self.log = log or logging.getLogger("bridge.server")
        self.state = state or WorkerState(threads, max_requests=max_requests)
        if state is not None and max_requests:
            self.state.max_requests = max_requests
        self.state.on_max_requests = self._max_requests_reached
        self.state.submit = self.submit
        self.on_tick = on_tick        # called by the loop about once a second (heartbeat)
        self._epoll = None            # connections + listeners, polled by the pool threads
        self._loop_epoll = None       # the loop thread's: wake pipe (+ listeners when the pool is full)
        self._lock = threading.Lock()
        self._conns: dict = {}
        self._backlog: list = []      # accepted by the loop thread while every pool thread was busy
        self._ready = collections.deque()   # polled events not served yet (under _lock)
        # Connections running, in the backlog, or accepted in a batch and not
        # started yet (under _lock): what the accept limit counts.
        self._in_hand = 0
        self._idle = 0                # pool threads waiting in epoll (under _lock)
        self._open = 0                # connections accepted and not closed yet (under _lock)
        self._resource_logged = None  # when an accept failure for lack of descriptors was last logged
        self._resource_failures = 0   # such failures not logged since
        self._room_logged = False     # idle connections closed at the cap: said once
        # One pool thread runs (polls and serves) at a time; the loop's monitor
        # lets another in for each one blocked in a request (see the module doc).
        self._slots = threading.Semaphore(1)
        self._extra = 0               # threads let in by the monitor, not yet parked (under _lock)
        self._serving: list = [0] * threads   # per pool thread: a tag of the request it is in, or 0
        self._tags = itertools.count(1)
        self._tasks = collections.deque()   # submit()ted Tasks, taken before events (under _lock)
        self._task_r = self._task_w = -1    # a byte per task: wakes a pool thread idle in epoll
        self._monitor_asleep = True   # the loop is not looking often: wake it when a request starts
        self._exiting = False         # parked threads leave
        self._monitor_last: list = [0] * threads
        self._monitor_granted: list = [0] * threads
        self._finished = 0            # handler calls finished (under _lock): progress
        self._paused = False          # listeners unregistered (pool full or stopping)
        self._loop_accepting = False  # listeners also in the loop's epoll (lone worker, pool full)
        self._resume_at = 0.0         # after EMFILE: do not accept before this
        self._stop = None             # None, "graceful" or "now"
        self._wake_r = self._wake_w = -1
        self._stop_r = self._stop_w = -1
        self._wake_pending = False
        self._calls: list = []        # call_soon() callbacks, run by the loop thread
        #: Passes of the loop thread (each one wake-up): an idle worker makes a few a second.
        self.wakeups = 0
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

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on a pool thread: the next one to look for work, or
        an idle one woken for it.  It counts as in hand (the accept limit and
        a graceful stop wait for it) and as a request for the monitor (if it
        blocks, another parked thread is let in).  A thread that submits and
        then returns from its handler takes the task itself: no hand-off."""
        with self._lock:
            self._tasks.append(Task(fn))
            self._in_hand += 1
            wake = self._idle > 0
        if wake:
            try:
                os.write(self._task_w, b"x")
            except OSError:     # pipe full: threads are being woken anyway
                pass

    def _run_task(self, task: Task) -> None:
        try:
            task.fn()
        except BaseException:       # the task's own failure: keep the thread
            self.log.exception("a submitted task failed")
        with self._lock:
            self._in_hand -= 1
            self._finished += 1
            if self._paused:
                self._may_resume()
            wake = self._stop is not None and not self._wake_pending
        if wake:
            self._wake()

    def _max_requests_reached(self) -> None:
        self.log.info("worker %d served %s (--max-requests): restarting",
                      os.getpid(), counted(self.state.requests, "request"))
        self.stop(graceful=True)

    def _wake(self) -> None:
        if self._wake_w >= 0:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:             # pipe full (a wake is pending anyway) or closed
                pass

    # -- set-up ------------------------------------------------------------

    def run(self) -> None:
        """Serve until :meth:`stop`; returns once the in-flight requests are done."""
        self._epoll = select.epoll()
        self._loop_epoll = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._loop_epoll.register(self._wake_r, _EPOLLIN)
        # Readable only at shutdown; level-triggered, so it wakes every pool thread.
        self._stop_r, self._stop_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._stop_r, _EPOLLIN)
        # One-shot: a byte wakes one idle pool thread, which re-arms it.
        self._task_r, self._task_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._task_r, _ARM)
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._by_fd[listener.sock.fileno()] = listener
        with self._lock:
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
        """Let idle pool threads accept again (caller holds ``_lock``)."""
        for fd in self._by_fd:
            if self.accept_limit is None:
                # Alone: one-shot, re-armed by the thread that accepted, so a
                # new connection wakes exactly one idle pool thread.
                self._epoll.register(fd, _ARM)
                continue
            try:
                self._epoll.register(fd, _EPOLLIN | _EPOLLEXCLUSIVE)
            except OSError:     # a kernel before 4.5 refuses EPOLLEXCLUSIVE (EINVAL)
                self._epoll.register(fd, _EPOLLIN)
        self._paused = False
        self.state.accepting = self._stop is None

    def _pause_listeners(self) -> None:
        """Stop accepting (caller holds ``_lock``)."""
        for fd in self._by_fd:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        self._paused = True
        self._loop_listen(False)

    def _may_resume(self) -> None:
        """Re-arm paused listeners once there is room again (caller holds ``_lock``)."""
        if self._paused and self._stop is None \
                and (self.accept_limit is None or self._in_hand < self.accept_limit) \
                and self._open < self.max_connections \
                and _monotonic() >= self._resume_at:
            self._arm_listeners()

    def _loop_listen(self, on: bool) -> None:
        """The loop thread's own accepting, for a lone worker whose pool is full."""
        if on == self._loop_accepting:
            return
        self._loop_accepting = on
        for fd in self._by_fd:
            try:
                if on:
                    self._loop_epoll.register(fd, _EPOLLIN)
                else:
                    self._loop_epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    # -- the loop thread: housekeeping, never the hot path ----------------

    def _loop(self) -> None:
        poll = self._loop_epoll.poll
        by_fd = self._by_fd
        wake_r = self._wake_r
        lock = self._lock
        lone = self.accept_limit is None
        # Deadlines are checked 4 times a second (finer for short idle timeouts):
        # cheap even with thousands of idle connections, and precise enough.
        sweep_every = 0.25
        if self.idle_timeout:
            sweep_every = max(0.02, min(sweep_every, self.idle_timeout / 4))
        next_sweep = _monotonic() + sweep_every
        tick = self.on_tick
        next_tick = 0.0
        finished = -1
        monitor = self.threads > 1
        monitor_until = next_look = 0.0
        interval = MONITOR_INTERVAL
        quiet = 0
        seen_finished = -1
        while True:
            if self._stop is not None:
                if self._stop == "now" or self._graceful_step():
                    return
            timeout = next_sweep - _monotonic()
            self.wakeups += 1
            if monitor:
                now = _monotonic()
                # Activity -- a request finished since the last pass, or one
                # running now -- renews the linger; the loop's own looks do
                # not (they did, and an idle worker woke every 5 ms forever).
                if self._finished != seen_finished or any(self._serving):
                    if now >= monitor_until + interval:
                        interval = MONITOR_INTERVAL     # busy again after a quiet spell
                    seen_finished = self._finished
                    monitor_until = now + MONITOR_LINGER
                if now >= next_look:
                    if self._monitor():
                        interval, quiet = MONITOR_INTERVAL, 0
                    else:
                        quiet += 1
                        if quiet >= MONITOR_QUIET and interval < MONITOR_MAX:
                            interval, quiet = min(MONITOR_MAX, interval * 2), 0
                    next_look = now + interval
                if now < monitor_until:
                    timeout = min(timeout, next_look - now)
                    self._monitor_asleep = False
                else:
                    # Set before looking: a thread that starts a request after
                    # the look sees the flag and wakes the loop (see serve()).
                    self._monitor_asleep = True
                    if any(self._serving):
                        self._monitor_asleep = False
                        timeout = min(timeout, next_look - now)
            try:
                events = poll(timeout if timeout > 0 else 0)
            except InterruptedError:    # pragma: no cover - PEP 475 retries
                continue
            for fd, _ in events:
                if fd == wake_r:
                    # Drain first, then clear: a pool thread that sets the flag
                    # and writes between a clear and the drain would otherwise
                    # lose its wake-up.
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self._wake_pending = False
                else:
                    listener = by_fd.get(fd)
                    if listener is not None and self._loop_accepting:
                        self._accept_to_backlog(listener)
            while self._calls:
                fn = self._calls.pop(0)
                try:
                    fn()
                except Exception:
                    self.log.exception("callback %r failed", fn)
            now = _monotonic()
            with lock:
                self._may_resume()
                if lone and self._loop_accepting and (self._idle or self._paused):
                    self._loop_listen(False)
            if now >= next_sweep:
                next_sweep = now + sweep_every
                self._sweep(now)
                with lock:
                    # A lone worker never leaves connections in the kernel's
                    # queue for long: when every pool thread has been busy
                    # with the same requests for a whole sweep (a slow app,
                    # not a busy one), the loop accepts them into the
                    # backlog, served first by the next free thread.
                    if lone and not self._idle and not self._paused and self._stop is None \
                            and self._finished == finished:
                        self._loop_listen(True)
                    finished = self._finished
                if tick is not None and now >= next_tick:
                    next_tick = now + 1.0
                    try:
                        tick()
                    except Exception:
                        self.log.exception("worker tick failed")

    def _monitor(self) -> bool:
        """Let one more parked thread in for each running thread blocked in a request.

        Blocked means in the same request as at the previous look; each
        request lets one thread in at most.  True if a thread was blocked.
        """
        serving = self._serving
        last = self._monitor_last
        granted = self._monitor_granted
        blocked = False
        for i, tag in enumerate(serving):
            if tag and tag == last[i]:
                blocked = True
                if granted[i] != tag:
                    with self._lock:
                        # Under the lock: the thread clears its tag (and looks
                        # at granted) under it too, so a grant never comes late.
                        if serving[i] == tag and self._extra < self.threads - 1 and not self._exiting:
                            granted[i] = tag
                            self._extra += 1
                            self._slots.release()
            last[i] = tag
        return blocked

    def _accept_to_backlog(self, listener) -> None:
        while self._loop_accepting and not self._paused:
            conn = self._accept(listener)
            if conn is None:
                return
            with self._lock:
                self._backlog.append(conn)

    def _accept(self, listener) -> Optional[Connection]:
        """Accept one connection and make its handler; None when there is none now.

        The connection counts as in hand (``_in_hand``) when returned, and
        accepting pauses when that reaches ``accept_limit``.
        """
        lsock = listener.sock
        while True:
            try:
                sock, addr = lsock.accept()
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._resource_exhausted(listener, exc)
                    return None
                if exc.errno == errno.ECONNABORTED:
                    continue
                self.log.error("accept on %s failed: %s", listener.name, exc)
                return None
            state = self.state
            state.accepted += 1
            try:
                sock.settimeout(self.io_timeout or NO_TIMEOUT)
                if listener.kind == "tcp":
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handler = self.factory(sock, addr, listener, state)
            except Exception:
                self.log.exception("cannot set up a connection from %s", addr or listener.name)
                sock.close()
                continue
            conn = Connection(sock, handler)
            with self._lock:
                self._in_hand += 1
                self._open += 1
                limit = self.accept_limit
                if not self._paused and (self._open >= self.max_connections
                                         or (limit is not None and self._in_hand >= limit)):
                    # Pool full: leave further connections to sibling workers.
                    # Too many open: leave them in the kernel's queue, and the
                    # descriptors to the requests being served.
                    self._pause_listeners()
            return conn

    def _resource_exhausted(self, listener, exc: OSError) -> None:
        """An accept failed for lack of descriptors (or memory): pause, say so once.

        The pause keeps the loop from spinning on a queue it cannot take
        from; the requests in hand go on.  One log line per episode (then at
        most one a minute, with the count), not one per connection: under a
        flood a line per failed accept would fill the disk too.
        """
        now = _monotonic()
        with self._lock:
            self._pause_listeners()
            self._resume_at = now + RESOURCE_PAUSE
            self._resource_failures += 1
            last = self._resource_logged
            if last is not None and now - last < RESOURCE_LOG_EVERY:
                return
            failures, self._resource_failures = self._resource_failures, 0
            self._resource_logged = now
            open_now = self._open
        self.log.error("accept on %s failed: %s (%d failure%s); %d connections open, accepting paused "
                       "for %g s at a time: raise the open-files limit (ulimit -n) or lower "
                       "--worker-connections", listener.name, exc.strerror, failures,
                       "" if failures == 1 else "s", open_now, RESOURCE_PAUSE)

    def _accept_more(self, listener) -> None:
        """Take the connections waiting behind the one just accepted.

        One accept per listener event would drain the kernel's queue one
        connection per round of the ready list (behind every readable
        keep-alive connection): under load, new connections would wait there
        for hundreds of milliseconds.  Each is registered like an idle
        connection; its request is usually there already, so epoll hands it
        straight to the next free pool thread, in arrival order.
        """
        limit = self.accept_limit
        # Bounded: while connections keep arriving, an endless batch would
        # keep this thread accepting and its own connection waiting (p99 of
        # 50-100 ms at 16 connections); a batch of `threads` drains a full
        # queue too slowly (p99 350 ms with keep-conn at 256).
        for _ in range(ACCEPT_BATCH):
            if self._paused or self._stop is not None:
                return
            if limit is not None and self._in_hand >= limit:
                return
            # In hand from now on: with sibling workers, connections this one
            # cannot start soon stay in the kernel's queue for an idle sibling
            # (uncounted, a busy worker took a whole burst: 8/0 at 2 x 1).
            conn = self._accept(listener)
            if conn is None:
                return
            with self._lock:
                conn.busy = False
                conn.pending = True
                conn.idle_since = _monotonic()
                self._conns[conn.fd] = conn
                conn.registered = True
                try:
                    self._epoll.register(conn.fd, _ARM)
                except (OSError, ValueError):
                    self._close(conn)

    def _sweep(self, now: float) -> None:
        """Close idle connections past their deadline (keep-alive end, slow loris).

        The candidates are picked without the lock (the pool threads keep
        serving meanwhile); each is closed under it only if still idle.
        """
        self._close_idle(idle_expired(list(self._conns.values()), now, self.idle_timeout))
        if self._open >= self.max_connections and self._stop is None and self._connections_queued():
            self._make_room()
        with self._lock:
            self._may_resume()

    def _close_idle(self, conns: list) -> int:
        """Close those of ``conns`` still idle; how many were closed."""
        closed = 0
        with self._lock:
            for conn in conns:
                if not conn.busy and not conn.closed:
                    self._close(conn)
                    closed += 1
        return closed

    def _connections_queued(self) -> bool:
        """A new connection waits in a listener's queue."""
        poller = select.poll()
        for fd in self._by_fd:
            poller.register(fd, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return False

    def _make_room(self) -> None:
        """At the connection cap: close idle connections, idle the longest first.

        Only those with nothing waiting in the socket, and none whose handler
        ``holds_request`` (a request body being received, a FastCGI request
        begun or running, with no pool thread on the connection): a request
        that has arrived is served, never dropped (see :func:`idle_expired`).
        Without that, a flood of empty connects closed uploads in progress
        without an answer.  Their own deadlines (--body-timeout,
        --io-timeout) still bound them.
        """
        idle = sorted((conn for conn in list(self._conns.values())
                       if not conn.busy and not conn.closed
                       and not getattr(conn.handler, "holds_request", False)),
                      key=lambda conn: conn.idle_since)[:REUSE_BATCH]
        waiting = _with_input(idle)
        closed = self._close_idle([conn for conn in idle if conn.fd not in waiting])
        if closed and not self._room_logged:
            self._room_logged = True
            self.log.warning("%d connections open (--worker-connections): closing the longest idle "
                             "ones to accept new connections", self.max_connections)

    def _graceful_step(self) -> bool:
        """One step of a graceful stop; True when it is finished."""
        if not getattr(self, "_stopping_since", None):
            self._stopping_since = _monotonic()
            with self._lock:
                self._pause_listeners()
            for listener in self.listeners:
                # Only our descriptor: the master (or serve()) owns the file.
                listener.sock.close()
            self.state.accepting = False
        # An idle connection whose next request has arrived, but which no pool
        # thread has picked up yet, is served (and then closed), not dropped.
        with self._lock:
            idle = [conn for conn in self._conns.values() if not conn.busy and not conn.closed]
        waiting = _with_input(idle)
        with self._lock:
            for conn in idle:
                if conn.fd not in waiting and not conn.busy and not conn.closed:
                    self._close(conn)
            in_hand = self._in_hand
        if in_hand <= 0 and not waiting:
            return True
        if self.graceful_timeout is not None and \
                _monotonic() - self._stopping_since >= self.graceful_timeout:
            self.log.warning("graceful timeout (%ss): abandoning %s in flight",
                             self.graceful_timeout, counted(in_hand, "request"))
            return True
        return False

    # -- pool threads: each waits in epoll itself and serves what it gets --

    def _pool_thread(self, index: int) -> None:
        """Wait for a turn, then poll and serve in this thread until parked again.

        Every running pool thread waits in ``epoll_wait`` on the same epoll;
        the kernel hands each (one-shot) event to exactly one of them.  The
        thread that got it serves it: no hand-off, no wake-up of a second
        thread; the other events of the same poll wait in ``_ready`` for the
        next running thread.  Usually one thread runs (see the module doc).
        """
        self.state.register_thread(index)
        slots = self._slots
        while True:
            slots.acquire()     # parked until the monitor lets this thread in
            if self._exiting:
                slots.release()
                return
            if not self._run_turn(index):
                return

    def _run_turn(self, index: int) -> bool:
        """Poll and serve until told to park (True) or to leave (False)."""
        lock = self._lock
        poll = self._epoll.poll
        conns = self._conns
        by_fd = self._by_fd
        backlog = self._backlog
        ready = self._ready
        tasks = self._tasks
        claim = self._claim
        stop_r = self._stop_r
        task_r = self._task_r
        serving = self._serving
        tags = self._tags

        granted = self._monitor_granted
        current = [0]       # the tag of the request this thread served last

        def serve(conn: Connection) -> None:
            tag = current[0] = next(tags)
            serving[index] = tag
            if self._monitor_asleep:
                self._monitor_asleep = False
                self._wake()
            self._serve(conn)

        while True:
            with lock:
                if current[0]:
                    serving[index] = 0
                    if granted[index] == current[0]:
                        # The monitor let a thread in while this one was
                        # blocked in that request: one too many run now.
                        granted[index] = 0
                        self._extra -= 1
                        return True
                    current[0] = 0
                if backlog:
                    item = backlog.pop(0)
                elif tasks:
                    item = tasks.popleft()
                elif ready:
                    item = claim(ready.popleft())
                else:
                    item = None
                    self._idle += 1
            if item is None:
                try:
                    events = poll(-1, POLL_BATCH)
                except InterruptedError:    # pragma: no cover - PEP 475 retries
                    events = ()
                except (OSError, ValueError):   # epoll closed under us at shutdown
                    with lock:
                        self._idle -= 1
                    return False
                with lock:
                    self._idle -= 1
                    if not events:
                        continue
                    for fd, _ in events[1:]:
                        # The Connection as it is now: if the sweep closes it
                        # before its turn, the stale event is dropped.
                        ready.append(conns.get(fd, fd))
                    fd = events[0][0]
                    item = claim(conns.get(fd, fd))
                if item is None:
                    continue
            if item.__class__ is Connection:
                serve(item)
                continue
            if item.__class__ is Task:
                current[0] = next(tags)
                serving[index] = current[0]
                if self._monitor_asleep:
                    self._monitor_asleep = False
                    self._wake()
                self._run_task(item)
                continue
            if item == stop_r:
                return False
            if item == task_r:
                try:
                    os.read(task_r, 1)      # one task's byte; the task itself is in _tasks
                    self._epoll.modify(task_r, _ARM)
                except (OSError, ValueError):
                    pass
                continue
            listener = by_fd.get(item)
            if listener is None or self._stop is not None:
                continue
            conn = self._accept(listener)
            if conn is not None:
                self._accept_more(listener)
            if self.accept_limit is None and not self._paused:
                try:
                    self._epoll.modify(item, _ARM)   # next connection: next idle thread
                except (OSError, ValueError):
                    pass
            if conn is not None:
                serve(conn)

    def _claim(self, item):
        """An event's Connection, marked busy, or its descriptor (a listener,
        the stop pipe); None for a stale event (caller holds ``_lock``).

        A connection closed meanwhile, or busy (a reused descriptor's old
        event; its owner re-arms it), is dropped.
        """
        if item.__class__ is not Connection:
            return item
        if item.closed or item.busy:
            return None
        item.busy = True
        if item.pending:
            item.pending = False    # counted when it was accepted
        else:
            self._in_hand += 1
        return item

    def _serve(self, conn: Connection) -> None:
        try:
            keep = conn.handler.on_readable()
        except Exception:
            self.log.exception("connection handler failed; closing the connection")
            keep = False
        except BaseException:       # SystemExit from a misbehaving app: keep the thread
            self.log.exception("connection handler raised; closing the connection")
            keep = False
        with self._lock:
            self._in_hand -= 1
            self._finished += 1
            if conn.closed:
                pass
            elif keep and self._stop is None:
                conn.busy = False
                conn.idle_since = _monotonic()
                try:
                    if conn.registered:
                        self._epoll.modify(conn.fd, _ARM)
                    else:
                        # In the table before epoll can report it: events for
                        # unknown descriptors are dropped.
                        self._conns[conn.fd] = conn
                        conn.registered = True
                        self._epoll.register(conn.fd, _ARM)
                except (OSError, ValueError):
                    self._close(conn)
            else:
                self._close(conn)
            if self._paused:
                self._may_resume()
            wake = self._stop is not None and not self._wake_pending
        if wake:
            self._wake()

    def _close(self, conn: Connection) -> None:
        """Forget and close a connection (caller holds ``_lock``)."""
        if conn.closed:
            return
        conn.closed = True
        self._open -= 1
        if conn.pending:
            conn.pending = False
            self._in_hand -= 1
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
        with self._lock:
            self._stop = self._stop or "now"
            self._pause_listeners()
            for conn in list(self._conns.values()):
                if not conn.busy:
                    self._close(conn)
        try:
            os.write(self._stop_w, b"x")     # every pool thread in epoll wakes and leaves
        except OSError:
            pass
        self._exiting = True
        self._slots.release()                # each parked thread passes it on and leaves
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
        if any(t.is_alive() for t in self._threads):
            # A thread still in the app may call _wake() or epoll later: keep
            # the descriptors open rather than let it use reused ones.
            return
        for ep in (self._epoll, self._loop_epoll):
            try:
                ep.close()
            except OSError:
                pass
        for fd in (self._wake_r, self._wake_w, self._stop_r, self._stop_w, self._task_r, self._task_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = self._stop_r = self._stop_w = self._task_r = self._task_w = -1
