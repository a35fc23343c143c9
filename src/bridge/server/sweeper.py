"""The idle sweep: which idle connections may be closed, and when to look.

The worker's loop thread sweeps idle connections against
``handler.idle_deadline`` (or the worker's ``idle_timeout`` counted from
when the connection went idle): the keep-alive timeout, and the slow-loris
cut-off when a handler sets its deadline to a header timeout.  Neither the
sweep nor a graceful stop closes a connection whose next request has
already arrived (waiting in the socket while every thread was busy): that
request is served.  This module decides; the worker closes (under its lock,
and only what is still idle by then).
"""
from __future__ import annotations

import select

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Optional

__all__ = ["REUSE_BATCH", "Sweeper", "idle_expired", "longest_idle", "with_input"]

#: At ``max_connections`` with connections waiting in the listen queue, each
#: sweep closes up to this many idle connections, idle the longest first, to
#: make room (nginx reuses its keep-alive connections the same way): idle
#: clients must not lock new ones out for a whole keep-alive or idle timeout.
REUSE_BATCH = 16


class Sweeper:
    """When the next sweep is due.

    Deadlines are checked 4 times a second (finer for short idle timeouts):
    cheap even with thousands of idle connections, and precise enough.
    """

    __slots__ = ("every", "next_at")

    def __init__(self, idle_timeout: Optional[float], now: float) -> None:
        every = 0.25
        if idle_timeout:
            every = max(0.02, min(every, idle_timeout / 4))
        self.every = every
        self.next_at = now + every

    def due(self, now: float) -> bool:
        """True (and the next sweep scheduled) when a sweep is due at ``now``."""
        if now < self.next_at:
            return False
        self.next_at = now + self.every
        return True


def with_input(conns: list) -> set:
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
    waiting = with_input([conn for conn in expired if not getattr(conn.handler, "lingering", False)])
    return [conn for conn in expired if conn.fd not in waiting]


def longest_idle(conns: Iterable, limit: int = REUSE_BATCH) -> list:
    """Up to ``limit`` idle connections to close for room, idle the longest first.

    Only those with nothing waiting in the socket, and none whose handler
    ``holds_request`` (a request body being received, a FastCGI request
    begun or running, with no pool thread on the connection): a request
    that has arrived is served, never dropped (see :func:`idle_expired`).
    Without that, a flood of empty connects closed uploads in progress
    without an answer.  Their own deadlines (--body-timeout, --io-timeout)
    still bound them.
    """
    idle = sorted((conn for conn in conns
                   if not conn.busy and not conn.closed
                   and not getattr(conn.handler, "holds_request", False)),
                  key=lambda conn: conn.idle_since)[:limit]
    waiting = with_input(idle)
    return [conn for conn in idle if conn.fd not in waiting]
