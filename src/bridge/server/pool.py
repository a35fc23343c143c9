"""The worker's pool: its threads, their parking, and the queues they take work from.

Only one pool thread runs at a time unless one blocks (Go's sysmon, done
for the GIL): the others are *parked* on a semaphore with one slot.  The
:class:`~bridge.server.monitor.Monitor` lets one more in (:meth:`Pool.let_in`)
for each running thread it finds blocked in a request; a thread let in for
a request parks again when that request ends (:meth:`Pool.finish`).

A running thread takes work in this order (:meth:`Pool.take`): connections
the loop thread accepted while every thread was busy (the backlog), tasks
handed over with ``Worker.submit``, then events polled together with one
another thread served (the ready queue, in the order the kernel reported
them, so one blocked request does not hold up the events polled with it).
Only when all three are empty does it wait in ``epoll_wait`` itself.

Everything here is guarded by the worker's lock, which the pool shares.
"""
from __future__ import annotations

import collections
import enum
import itertools
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, Callable

__all__ = ["Connection", "Pool", "Task", "Turn"]


class Turn(enum.Enum):
    """How a pool thread's turn ended: what the thread does next."""

    #: One thread too many runs (the monitor let it in for a request that
    #: has ended): wait on the semaphore for the next grant.
    PARK = "park"
    #: The worker is stopping: leave the thread.
    LEAVE = "leave"


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
    """A function ``Worker.submit`` queued for a pool thread."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn


class Pool:
    """The pool threads' shared state: parking, tags, the three queues.

    ``serving[i]`` is a tag of the request thread ``i`` is in (0: none),
    written by that thread only; the monitor compares it between two looks.
    ``granted[i]`` is the tag of the request for which the monitor let one
    more thread in; ``extra`` counts those threads until they park again.
    """

    def __init__(self, threads: int, lock: threading.Lock) -> None:
        self.size = threads
        self.lock = lock
        # One pool thread runs (polls and serves) at a time; the monitor
        # lets another in for each one blocked in a request.
        self.slots = threading.Semaphore(1)
        self.extra = 0                  # threads let in, not yet parked again
        self.serving: list = [0] * threads
        self.granted: list = [0] * threads
        #: Each thread's CPU clock id (``Monitor`` reads it), set by the thread.
        self.clocks: list = [None] * threads
        self.tags = itertools.count(1)
        self.backlog: list = []         # accepted by the loop thread while every pool thread was busy
        self.tasks: collections.deque = collections.deque()   # submit()ted Tasks
        self.ready: collections.deque = collections.deque()   # polled events not served yet
        self.idle = 0                   # pool threads waiting in epoll
        self.exiting = False            # parked threads leave
        self.threads: list = []

    def start(self, target: Callable[[int], None]) -> None:
        """Start the threads; ``target(index)`` runs in each."""
        for i in range(self.size):
            t = threading.Thread(target=target, args=(i,), daemon=True, name=f"bridge-pool-{i}")
            t.start()
            self.threads.append(t)

    def wait_for_turn(self) -> bool:
        """Park until let in; False when the pool is exiting (the thread leaves)."""
        self.slots.acquire()
        if self.exiting:
            self.slots.release()        # each parked thread passes it on and leaves
            return False
        return True

    def take(self, claim: Callable) -> Any:
        """The next queued item, or None (counted idle: the caller polls) (caller holds the lock).

        ``claim(event)`` turns a ready event into what to serve, or None when
        it is stale (its connection closed or busy meanwhile): skipped.
        """
        if self.backlog:
            return self.backlog.pop(0)
        if self.tasks:
            return self.tasks.popleft()
        ready = self.ready
        while ready:
            item = claim(ready.popleft())
            if item is not None:
                return item
        self.idle += 1
        return None

    def finish(self, index: int, tag: int) -> bool:
        """Thread ``index`` ended request ``tag``; True if it must park now (caller holds the lock).

        The monitor let a thread in while this one was blocked in that
        request: one too many run now, and this one steps back.
        """
        self.serving[index] = 0
        if self.granted[index] == tag:
            self.granted[index] = 0
            self.extra -= 1
            return True
        return False

    def let_in(self, index: int, tag: int) -> bool:
        """Let one parked thread in for thread ``index`` blocked in request ``tag``.

        Under the lock: the thread clears its tag (and looks at ``granted``)
        under it too, so a grant never comes late.  At most ``size - 1``
        extra threads; True if one was let in.
        """
        with self.lock:
            if self.serving[index] != tag or self.extra >= self.size - 1 or self.exiting:
                return False
            self.granted[index] = tag
            self.extra += 1
            self.slots.release()
            return True

    def exit(self) -> None:
        """Make every parked thread leave (each passes the slot on)."""
        self.exiting = True
        self.slots.release()

    def join(self, timeout: float, clock: Callable[[], float]) -> bool:
        """Wait up to ``timeout`` seconds for the threads; True if all have ended."""
        deadline = clock() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - clock()))
        return not any(t.is_alive() for t in self.threads)
