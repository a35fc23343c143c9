"""What a worker is doing: its counts and current requests, for handlers, master and status page.

:class:`WorkerState` is written on the hot path (each request's start and
end) by the pool threads, and read by the status page, the scoreboard's
reader in the master and ``--max-requests``.  It knows nothing of sockets or
threads beyond the thread index each pool thread registers.
"""
from __future__ import annotations

import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["WorkerState"]

_monotonic = time.monotonic
_get_ident = threading.get_ident


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
