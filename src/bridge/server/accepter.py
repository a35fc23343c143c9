"""The accepter: the worker's listening sockets, when they are armed, and accept() itself.

A thread accepts only while it is idle, so a worker process takes new
connections only when it has a free thread: with sibling processes
(pre-fork) a busy worker leaves them to an idle one.  Listeners are
``EPOLLEXCLUSIVE`` there (a new connection wakes one process, not all); the
worker's ``accept_limit`` (the thread count) pauses accepting when that many
requests are in hand.  A lone worker registers its listeners one-shot (a
connection wakes one thread, re-armed right after the accept) and never
pauses for long: if every thread has been stuck in the same requests for a
whole sweep, the loop thread accepts into a small backlog
(:meth:`Accepter.loop_listen`) that the next free thread serves first.

An accept that fails for lack of descriptors or memory pauses accepting for
``RESOURCE_PAUSE`` seconds and is logged once per episode.
"""
from __future__ import annotations

import errno
import logging
import select
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Callable, Optional

__all__ = ["ACCEPT_BATCH", "RESOURCE_LOG_EVERY", "RESOURCE_PAUSE", "Accepter"]

_EPOLLIN = select.EPOLLIN
_EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)
_ARM = select.EPOLLIN | select.EPOLLONESHOT

#: At most this many connections accepted after the one a thread serves itself.
ACCEPT_BATCH = 64

#: accept() errors that mean "out of descriptors or memory": pause, do not spin.
_RESOURCE_ERRORS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

#: After an accept failed for lack of descriptors or memory: pause this long,
#: and say so again in the log at most once per ``RESOURCE_LOG_EVERY`` seconds.
RESOURCE_PAUSE = 0.5
RESOURCE_LOG_EVERY = 60.0


class Accepter:
    """The listeners of one worker: arming, pausing, accepting.

    ``lone`` is a worker without sibling processes (no accept limit).
    ``arm``, ``pause`` and ``loop_listen`` are called with ``lock`` held.
    """

    def __init__(self, listeners: list, *, lone: bool, lock: threading.Lock,
                 log: logging.Logger) -> None:
        self.listeners = list(listeners)
        self.lone = lone
        self.lock = lock
        self.log = log
        self.by_fd: dict = {}
        self.epoll: Optional[select.epoll] = None       # the pool threads' epoll
        self.loop_epoll: Optional[select.epoll] = None  # the loop thread's, for a lone worker whose pool is full
        self.paused = False             # listeners unregistered (pool full or stopping)
        self.loop_accepting = False     # listeners also in the loop's epoll
        self.resume_at = 0.0            # after EMFILE: do not accept before this
        self._resource_logged: Optional[float] = None   # when such a failure was last logged
        self._resource_failures = 0     # such failures not logged since
        #: ``on_change(accepting)``: called (lock held) when the listeners are armed or paused
        self.on_change: Optional[Callable[[bool], None]] = None

    def open(self, epoll: select.epoll, loop_epoll: select.epoll) -> None:
        """Take the listeners into the two epolls' reach (not armed yet)."""
        self.epoll = epoll
        self.loop_epoll = loop_epoll
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self.by_fd[listener.sock.fileno()] = listener

    def arm(self) -> None:
        """Let idle pool threads accept again (caller holds the lock)."""
        for fd in self.by_fd:
            if self.lone:
                # Alone: one-shot, re-armed by the thread that accepted, so a
                # new connection wakes exactly one idle pool thread.
                self.epoll.register(fd, _ARM)
                continue
            try:
                self.epoll.register(fd, _EPOLLIN | _EPOLLEXCLUSIVE)
            except OSError:     # a kernel before 4.5 refuses EPOLLEXCLUSIVE (EINVAL)
                self.epoll.register(fd, _EPOLLIN)
        self.paused = False
        if self.on_change is not None:
            self.on_change(True)

    def rearm(self, fd: int) -> None:
        """After an accept on a lone worker's one-shot listener: the next
        connection wakes the next idle thread."""
        if self.lone and not self.paused:
            try:
                self.epoll.modify(fd, _ARM)
            except (OSError, ValueError):
                pass

    def pause(self) -> None:
        """Stop accepting (caller holds the lock)."""
        for fd in self.by_fd:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        self.paused = True
        self.loop_listen(False)
        if self.on_change is not None:
            self.on_change(False)

    def loop_listen(self, on: bool) -> None:
        """The loop thread's own accepting, for a lone worker whose pool is full."""
        if on == self.loop_accepting:
            return
        self.loop_accepting = on
        for fd in self.by_fd:
            try:
                if on:
                    self.loop_epoll.register(fd, _EPOLLIN)
                else:
                    self.loop_epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def queued(self) -> bool:
        """A new connection waits in a listener's queue."""
        poller = select.poll()
        for fd in self.by_fd:
            poller.register(fd, select.POLLIN)
        try:
            return bool(poller.poll(0))
        except OSError:
            return False

    def close(self) -> None:
        """Close our descriptors of the listeners (the master, or serve(), owns the files)."""
        for listener in self.listeners:
            try:
                listener.sock.close()
            except OSError:
                pass

    def accept(self, listener, open_count: Callable[[], int]) -> Optional[tuple[socket.socket, object]]:
        """``(sock, addr)`` of one new connection; None when there is none now (or accept failed).

        ``open_count()`` (called under the lock) gives the connections open,
        for the log line when descriptors ran out.
        """
        lsock = listener.sock
        while True:
            try:
                return lsock.accept()
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self.resource_exhausted(listener, exc, open_count)
                    return None
                if exc.errno == errno.ECONNABORTED:
                    continue
                self.log.error("accept on %s failed: %s", listener.name, exc)
                return None

    def resource_exhausted(self, listener, exc: OSError, open_count: Callable[[], int]) -> None:
        """An accept failed for lack of descriptors (or memory): pause, say so once.

        The pause keeps the loop from spinning on a queue it cannot take
        from; the requests in hand go on.  One log line per episode (then at
        most one a minute, with the count), not one per connection: under a
        flood a line per failed accept would fill the disk too.
        """
        now = time.monotonic()
        with self.lock:
            self.pause()
            self.resume_at = now + RESOURCE_PAUSE
            self._resource_failures += 1
            last = self._resource_logged
            if last is not None and now - last < RESOURCE_LOG_EVERY:
                return
            failures, self._resource_failures = self._resource_failures, 0
            self._resource_logged = now
            open_now = open_count()
        self.log.error("accept on %s failed: %s (%d failure%s); %d connections open, accepting paused "
                       "for %g s at a time: raise the open-files limit (ulimit -n) or lower "
                       "--worker-connections", listener.name, exc.strerror, failures,
                       "" if failures == 1 else "s", open_now, RESOURCE_PAUSE)
