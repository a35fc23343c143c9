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
* Accepted sockets stay in blocking mode with a timeout (``io_timeout``);
  handlers read what is available *now* with :func:`recv_available` (see
  :mod:`bridge.server.sockio` for why not ``MSG_DONTWAIT``).  A handler must
  accept a wake-up with nothing to read (return ``True``).

Where each part lives: this module holds :class:`Worker` -- the shared
books (connections, requests in hand), the pool threads' turn and the loop
thread's steps.  The parts it drives are each a
module of their own: :mod:`~bridge.server.pool` (threads, parking, the
ready queue), :mod:`~bridge.server.accepter` (listeners, accept, pausing),
:mod:`~bridge.server.sweeper` (idle deadlines), :mod:`~bridge.server.monitor`
(blocked threads), :mod:`~bridge.server.sockio` (reads without waiting) and
:mod:`~bridge.server.state` (:class:`WorkerState`, what the worker is doing).
"""
from __future__ import annotations

import logging
import os
import resource
import select
import socket
import threading
import time

from bridge.logtext import counted
from bridge.server.accepter import ACCEPT_BATCH, Accepter
from bridge.server.monitor import Monitor, thread_cpu_clock
from bridge.server.pool import Connection, Pool, Task, Turn
from bridge.server.sockio import NO_TIMEOUT, recv_available, recv_available_into
from bridge.server.state import WorkerState
from bridge.server.sweeper import Sweeper, idle_expired, longest_idle, with_input

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

__all__ = ["Worker", "WorkerState", "Connection", "default_max_connections", "idle_expired",
           "recv_available", "recv_available_into", "NO_TIMEOUT", "Turn"]

_EPOLLIN = select.EPOLLIN
_ARM = select.EPOLLIN | select.EPOLLONESHOT
_monotonic = time.monotonic

#: Events taken per ``epoll_wait``.  Under load most connections are ready
#: at once; one event per call made the call a syscall per request.  The
#: rest wait, in the order the kernel reported them, in a queue that every
#: running pool thread takes from before it polls again, so one blocked
#: request does not hold up the events polled with it.
POLL_BATCH = 64

#: A pre-fork worker that holds more than ``SHARE_SLACK`` connections (plus
#: a quarter, ``1/SHARE_RATIO``) more than its least-loaded sibling leaves a
#: new connection to the siblings for ``ACCEPT_DEFER`` seconds, and ends its
#: accept batch (see :meth:`Worker._leave_to_siblings`).  The proportional
#: part lets two busy workers take a burst of 256 connections in a few
#: rounds each (with a slack of one connection they took turns a connection
#: or two at a time, and the last first request waited 1.3 s); a quarter
#: more connections is a quarter more wait for them, well inside the 3x
#: between p50 and p99 the benchmark holds the server to.  A sibling whose
#: listeners have been paused for ``PAUSED_TOO_LONG`` (its threads all in
#: slow requests) does not count: it would take none of them, and a burst
#: would drain at one connection per deferral.
SHARE_SLACK = 1
SHARE_RATIO = 4
ACCEPT_DEFER = 0.002


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
                 max_connections: Optional[int] = None,
                 share: Any = None, slot: Any = None) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.listeners = list(listeners)
        self.factory = factory
        self.threads = threads
        #: Requests in hand (running, in the backlog, or accepted in a batch and
        #: not started) at which accepting pauses; None: never pause for
        #: this (a worker without siblings).
        self.accept_limit = accept_limit
        #: Pre-fork: where the worker publishes its open connections and reads
        #: its siblings' (``publish_open(n)``, ``fewest_open_elsewhere()``;
        #: the scoreboard slot); None: no balancing.
        self.share = share
        #: Where the open-connection count is published (the status page's
        #: open_connections): the scoreboard slot, with or without siblings.
        self.slot = slot if slot is not None else share
        self._deferred = False        # the last listener event was left to the siblings
        self._nudge_fd = -1           # readable: a sibling left connections in the queue for us
        self._fewest_sibling = -1     # slot of the least-loaded sibling at the last share check
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
        self._lock = threading.Lock()
        self.pool = Pool(threads, self._lock)
        self.monitor = Monitor(self.pool)
        self.accepter = Accepter(self.listeners, lone=accept_limit is None, lock=self._lock, log=self.log)
        if share is not None:
            # Siblings over their share defer only to a worker that accepts.
            self.accepter.on_change = getattr(share, "publish_accepting", None)
        self._epoll: Optional[select.epoll] = None        # connections + listeners, polled by the pool threads
        self._loop_epoll: Optional[select.epoll] = None   # the loop thread's: wake pipe (+ listeners when the pool is full)
        self._conns: dict = {}
        # Connections running, in the backlog, or accepted in a batch and not
        # started yet (under _lock): what the accept limit counts.
        self._in_hand = 0
        self._open = 0                # connections accepted and not closed yet (under _lock)
        self._pending = 0             # of _in_hand: accepted in a batch, not taken by a thread yet
        self._finished = 0            # handler calls finished (under _lock): progress
        self._finished_at_sweep = -1  # _finished at the previous sweep
        self._room_logged = False     # idle connections closed at the cap: said once
        self._stop: Optional[str] = None    # None, "graceful" or "now"
        self._stopping_since: Optional[float] = None
        self._wake_r = self._wake_w = -1    # wakes the loop thread
        self._stop_r = self._stop_w = -1    # readable at shutdown: every pool thread leaves
        self._task_r = self._task_w = -1    # a byte per task: wakes a pool thread idle in epoll
        self._wake_pending = False
        self._calls: list = []        # call_soon() callbacks, run by the loop thread
        self._next_tick = 0.0
        #: Passes of the loop thread (each one wake-up): an idle worker makes a few a second.
        self.wakeups = 0

    # What the tests and the status code look at, kept under their old names.
    @property
    def _paused(self) -> bool:
        return self.accepter.paused

    @property
    def _resume_at(self) -> float:
        return self.accepter.resume_at

    @_resume_at.setter
    def _resume_at(self, value: float) -> None:
        self.accepter.resume_at = value

    @property
    def _serving(self) -> list:
        return self.pool.serving

    @property
    def _extra(self) -> int:
        return self.pool.extra

    @property
    def _slots(self) -> threading.Semaphore:
        return self.pool.slots

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
            self.pool.tasks.append(Task(fn))
            self._in_hand += 1
            wake = self.pool.idle > 0
        if wake:
            try:
                os.write(self._task_w, b"x")
            except OSError:     # pipe full: threads are being woken anyway
                pass

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
        nudge = getattr(self.share, "nudge_fd", None)
        if nudge is not None:
            self._nudge_fd = nudge
            self._epoll.register(nudge, _ARM)
        self.accepter.open(self._epoll, self._loop_epoll)
        with self._lock:
            self._arm_listeners()
        self.pool.start(self._pool_thread)
        try:
            self._loop()
        finally:
            self._shutdown()

    def _arm_listeners(self) -> None:
        """Let idle pool threads accept again (caller holds ``_lock``)."""
        self.accepter.arm()
        self.state.accepting = self._stop is None

    def _may_resume(self) -> None:
        """Re-arm paused listeners once there is room again (caller holds ``_lock``)."""
        accepter = self.accepter
        if accepter.paused and self._stop is None \
                and (self.accept_limit is None or self._running() < self.accept_limit) \
                and self._open < self.max_connections \
                and _monotonic() >= accepter.resume_at:
            self._arm_listeners()

    # -- the loop thread: housekeeping, never the hot path ----------------

    def _loop(self) -> None:
        """Housekeeping until stopped: each pass is a wake-up, then the steps in order."""
        sweeper = Sweeper(self.idle_timeout, _monotonic())
        while True:
            if self._stop is not None and self._stopped():
                return
            self.wakeups += 1
            self._wait(self._timeout(sweeper))
            self._run_callbacks()
            self._rebalance()
            now = _monotonic()
            if sweeper.due(now):
                self._sweep(now)
                self._accept_in_loop_if_stuck()
                self._tick(now)

    def _stopped(self) -> bool:
        """Stopping: True once the loop may return (now, or the graceful stop is done)."""
        return self._stop == "now" or self._graceful_step()

    def _timeout(self, sweeper: Sweeper) -> float:
        """Seconds the loop may sleep: until the next sweep, or the monitor's next look."""
        now = _monotonic()
        timeout = sweeper.next_at - now
        accepter = self.accepter
        if accepter.paused and accepter.resume_at > now:
            timeout = min(timeout, accepter.resume_at - now)
        if self.threads > 1:
            look = self.monitor.step(_monotonic(), self._finished)
            if look is not None:
                timeout = min(timeout, look)
        return timeout

    def _wait(self, timeout: float) -> None:
        """Sleep in the loop's epoll: wake-ups, and listeners when the loop accepts."""
        wake_r = self._wake_r
        try:
            events = self._loop_epoll.poll(timeout if timeout > 0 else 0)
        except InterruptedError:    # pragma: no cover - PEP 475 retries
            return
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
                continue
            listener = self.accepter.by_fd.get(fd)
            if listener is not None and self.accepter.loop_accepting:
                self._accept_to_backlog(listener)

    def _run_callbacks(self) -> None:
        while self._calls:
            fn = self._calls.pop(0)
            try:
                fn()
            except Exception:
                self.log.exception("callback %r failed", fn)

    def _rebalance(self) -> None:
        """Resume accepting if there is room; the loop stops accepting once a thread is free."""
        accepter = self.accepter
        with self._lock:
            self._may_resume()
            if accepter.lone and accepter.loop_accepting and (self.pool.idle or accepter.paused):
                accepter.loop_listen(False)

    def _accept_in_loop_if_stuck(self) -> None:
        """A lone worker never leaves connections in the kernel's queue for long.

        When every pool thread has been busy with the same requests for a
        whole sweep (a slow app, not a busy one), the loop accepts them into
        the backlog, served first by the next free thread.
        """
        accepter = self.accepter
        with self._lock:
            if accepter.lone and not self.pool.idle and not accepter.paused and self._stop is None \
                    and self._finished == self._finished_at_sweep:
                accepter.loop_listen(True)
            self._finished_at_sweep = self._finished

    def _tick(self, now: float) -> None:
        """The heartbeat (``on_tick``), about once a second."""
        if self.on_tick is not None and now >= self._next_tick:
            self._next_tick = now + 1.0
            try:
                self.on_tick()
            except Exception:
                self.log.exception("worker tick failed")

    def _sweep(self, now: float) -> None:
        """Close idle connections past their deadline (keep-alive end, slow loris).

        The candidates are picked without the lock (the pool threads keep
        serving meanwhile); each is closed under it only if still idle.
        """
        self._close_idle(idle_expired(list(self._conns.values()), now, self.idle_timeout))
        if self._open >= self.max_connections and self._stop is None and self.accepter.queued():
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

    def _make_room(self) -> None:
        """At the connection cap: close idle connections, idle the longest first."""
        closed = self._close_idle(longest_idle(list(self._conns.values())))
        if closed and not self._room_logged:
            self._room_logged = True
            self.log.warning("%d connections open (--worker-connections): closing the longest idle "
                             "ones to accept new connections", self.max_connections)

    def _graceful_step(self) -> bool:
        """One step of a graceful stop; True when it is finished."""
        if self._stopping_since is None:
            self._stopping_since = _monotonic()
            with self._lock:
                self.accepter.pause()
            self.accepter.close()
            self.state.accepting = False
        # An idle connection whose next request has arrived, but which no pool
        # thread has picked up yet, is served (and then closed), not dropped.
        with self._lock:
            idle = [conn for conn in self._conns.values() if not conn.busy and not conn.closed]
        waiting = with_input(idle)
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
        thread; the other events of the same poll wait in the pool's ready
        queue for the next running thread.  Usually one thread runs (see the
        module doc).
        """
        self.state.register_thread(index)
        pool = self.pool
        pool.clocks[index] = thread_cpu_clock()
        while pool.wait_for_turn():     # parked until the monitor lets this thread in
            if self._run_turn(index) is Turn.LEAVE:
                return

    def _run_turn(self, index: int) -> Turn:
        """Take work and serve it until this thread is to park or to leave.

        The hot path: the attributes used per request are bound to locals
        once per turn (each saves a dictionary lookup per request).
        """
        lock = self._lock
        pool = self.pool
        take = pool.take
        claim = self._claim
        serving = pool.serving
        tags = pool.tags
        monitor = self.monitor
        item: Any
        tag = 0     # of the request this thread served last; 0 once accounted for
        while True:
            with lock:
                if tag:
                    if pool.finish(index, tag):
                        return Turn.PARK
                    tag = 0
                item = take(claim)
            if item is None:
                item = self._poll()
                if item is None:
                    continue
            kind = item.__class__
            if kind is not Connection and kind is not Task:
                if item is Turn.LEAVE or item == self._stop_r:
                    return Turn.LEAVE
                item = self._on_descriptor(item)
                if item is None:
                    continue
                kind = Connection
            tag = serving[index] = next(tags)
            if monitor.asleep:      # a request starts: the monitor looks again
                monitor.asleep = False
                self._wake()
            if kind is Connection:
                self._serve(item)
            else:
                self._run_task(item)

    def _poll(self) -> Any:
        """Wait in the shared epoll for one event: what to serve, None, or ``Turn.LEAVE``.

        The other events of the same poll go to the ready queue.  At
        shutdown the epoll may be closed under us: the thread leaves.
        """
        pool = self.pool
        try:
            events = self._epoll.poll(-1, POLL_BATCH)
        except InterruptedError:    # pragma: no cover - PEP 475 retries
            events = []
        except (OSError, ValueError):   # epoll closed under us at shutdown
            with self._lock:
                pool.idle -= 1
            return Turn.LEAVE
        conns = self._conns
        with self._lock:
            pool.idle -= 1
            if not events:
                return None
            ready = pool.ready
            for fd, _ in events[1:]:
                # The Connection as it is now: if the sweep closes it before
                # its turn, the stale event is dropped.
                ready.append(conns.get(fd, fd))
            fd = events[0][0]
            return self._claim(conns.get(fd, fd))

    def _on_descriptor(self, fd: int) -> Optional[Connection]:
        """A pool-epoll event that is not a connection: the task pipe or a listener.

        A listener's event is served by accepting: the new connection (to
        serve in this thread) and those queued behind it.
        """
        if fd == self._task_r:
            try:
                os.read(fd, 1)      # one task's byte; the task itself is in the pool's queue
                self._epoll.modify(fd, _ARM)
            except (OSError, ValueError):
                pass
            return None
        if fd == self._nudge_fd:
            try:
                os.eventfd_read(fd)
            except OSError:
                pass
            try:
                self._epoll.modify(fd, _ARM)
            except (OSError, ValueError):
                pass
            if self.accepter.paused or self._stop is not None:
                return None
            for listener in self.accepter.listeners:    # whichever has the queue
                conn = self._accept(listener)
                if conn is not None:
                    self._accept_more(listener)
                    return conn
            return None
        listener = self.accepter.by_fd.get(fd)
        if listener is None or self._stop is not None:
            return None
        if self.share is not None and self._leave_to_siblings():
            return None
        conn = self._accept(listener)
        if conn is not None:
            self._accept_more(listener)
        self.accepter.rearm(fd)     # next connection: next idle thread
        return conn

    def _leave_to_siblings(self) -> bool:
        """Leave the waiting connection to a sibling holding fewer (pre-fork).

        The kernel wakes the first idle process on the listener's wait
        queue, so the same worker wins every race: 16 keep-alive
        connections opened at once ended up 12 and 4, one process saturated
        while the other idled.  A worker over its share (holding more than
        ``SHARE_SLACK`` plus a quarter connections more than its
        least-loaded sibling, from the scoreboard) stops listening for
        ``ACCEPT_DEFER`` seconds and nudges that sibling (its eventfd), which
        takes the queue; the next connection to arrive wakes a sibling too,
        this worker having left the listener's wait queue.  The
        listener event after a deferral is always taken, so no connection
        waits more than ``ACCEPT_DEFER`` longer for this (a sibling whose
        threads are all stuck publishes few connections but accepts none).
        """
        if self._deferred:
            self._deferred = False
            return False
        with self._lock:
            if not self._over_share():
                return False
            self._deferred = True
            self.accepter.pause()
            self.accepter.resume_at = _monotonic() + ACCEPT_DEFER
        self.share.nudge(self._fewest_sibling)
        self._wake()    # the loop re-arms the listeners when the deferral ends
        return True

    def _over_share(self) -> bool:
        """Holding more connections than threads, and more than the least-loaded
        ready sibling by more than the slack: ``SHARE_SLACK`` connections plus
        ``1/SHARE_RATIO`` of the sibling's."""
        mine = self._open
        if mine <= self.threads:
            # No more connections than threads: nothing waits behind another
            # here, and behind nginx's default (a connection per request)
            # this is every accept -- no scoreboard read, no deferral (they
            # cost 10 % of the requests/s there).
            return False
        found = self.share.fewest_open_elsewhere()
        if found is None:
            return False
        fewest, self._fewest_sibling = found
        return mine > fewest + SHARE_SLACK + fewest // SHARE_RATIO

    def _running(self) -> int:
        """What the accept limit counts: requests a thread has taken and not finished.

        The batch's pending connections count too unless the share rule
        bounds the batch (a worker without a scoreboard slot): unbounded, a
        busy worker would take a whole burst.
        """
        if self.share is None:
            return self._in_hand
        return self._in_hand - self._pending

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
            self._pending -= 1
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
                self._idle_again(conn)
            else:
                self._close(conn)
            if self.accepter.paused:
                self._may_resume()
            wake = self._stop is not None and not self._wake_pending
        if wake:
            self._wake()

    def _idle_again(self, conn: Connection) -> None:
        """A served connection waits for its next request (caller holds ``_lock``)."""
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

    def _run_task(self, task: Task) -> None:
        try:
            task.fn()
        except BaseException:       # the task's own failure: keep the thread
            self.log.exception("a submitted task failed")
        with self._lock:
            self._in_hand -= 1
            self._finished += 1
            if self.accepter.paused:
                self._may_resume()
            wake = self._stop is not None and not self._wake_pending
        if wake:
            self._wake()

    # -- accepting: in hand from accept() on ---------------------------------

    def _accept(self, listener) -> Optional[Connection]:
        """Accept one connection and make its handler; None when there is none now.

        The connection counts as in hand (``_in_hand``) when returned, and
        accepting pauses when that reaches ``accept_limit``.
        """
        while True:
            accepted = self.accepter.accept(listener, self._open_count)
            if accepted is None:
                return None
            conn = self._connection(listener, *accepted)
            if conn is not None:
                break
        with self._lock:
            self._in_hand += 1
            self._open += 1
            if self.slot is not None:
                self.slot.publish_open(self._open)
            limit = self.accept_limit
            if not self.accepter.paused and (self._open >= self.max_connections
                                             or (limit is not None and self._running() >= limit)):
                # Pool full: leave further connections to sibling workers.
                # Too many open: leave them in the kernel's queue, and the
                # descriptors to the requests being served.
                self.accepter.pause()
        return conn

    def _open_count(self) -> int:
        return self._open

    def _connection(self, listener, sock: socket.socket, addr) -> Optional[Connection]:
        """A new connection with its handler; None (socket closed) if it cannot be set up."""
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
            return None
        return Connection(sock, handler)

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
        accepter = self.accepter
        # Bounded: while connections keep arriving, an endless batch would
        # keep this thread accepting and its own connection waiting (p99 of
        # 50-100 ms at 16 connections); a batch of `threads` drains a full
        # queue too slowly (p99 350 ms with keep-conn at 256).
        for _ in range(ACCEPT_BATCH):
            if accepter.paused or self._stop is not None:
                return
            if limit is not None and self._running() >= limit:
                return
            if self.share is not None and self._over_share():
                self.share.nudge(self._fewest_sibling)  # the rest of the queue is for the siblings
                return
            # In hand from now on (pending: they count as in hand, not as
            # running).  With sibling workers the batch stops at this
            # worker's share (above) and when its threads are all taken:
            # connections it cannot start soon stay in the kernel's queue
            # for a sibling (unbounded, a busy worker took a whole burst: 8/0
            # at 2 x 1).
            conn = self._accept(listener)
            if conn is None:
                return
            with self._lock:
                conn.busy = False
                conn.pending = True
                self._pending += 1
                conn.idle_since = _monotonic()
                self._conns[conn.fd] = conn
                conn.registered = True
                try:
                    self._epoll.register(conn.fd, _ARM)
                except (OSError, ValueError):
                    self._close(conn)

    def _accept_to_backlog(self, listener) -> None:
        accepter = self.accepter
        while accepter.loop_accepting and not accepter.paused:
            conn = self._accept(listener)
            if conn is None:
                return
            with self._lock:
                self.pool.backlog.append(conn)

    # -- closing -------------------------------------------------------------

    def _close(self, conn: Connection) -> None:
        """Forget and close a connection (caller holds ``_lock``)."""
        if conn.closed:
            return
        conn.closed = True
        self._open -= 1
        if self.slot is not None:
            self.slot.publish_open(self._open)
        if conn.pending:
            conn.pending = False
            self._pending -= 1
            self._in_hand -= 1
        if conn.registered:
            self._conns.pop(conn.fd, None)
            if not conn.busy:
                # Armed: take it out.  A busy connection's one-shot event has
                # fired and it was not re-armed, so it can report nothing
                # more; closing the descriptor removes it from the epoll (a
                # syscall saved per connection: behind nginx's default, per
                # request), or, while a FastCGI task still holds a duplicate,
                # leaves it disarmed until that closes too.
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
            self.accepter.pause()
            for conn in list(self._conns.values()):
                if not conn.busy:
                    self._close(conn)
        try:
            os.write(self._stop_w, b"x")     # every pool thread in epoll wakes and leaves
        except OSError:
            pass
        self.pool.exit()
        self.accepter.close()
        # Pool threads finish their current request if it ends soon; they are
        # daemon threads, so one stuck in the app does not keep the process alive.
        if not self.pool.join(1.0 if graceful else 0.0, _monotonic):
            # A thread still in the app may call _wake() or epoll later: keep
            # the descriptors open rather than let it use reused ones.
            return
        self._close_descriptors()

    def _close_descriptors(self) -> None:
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
