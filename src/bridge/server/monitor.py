"""The monitor: one more pool thread for each one blocked in a request.

Two threads that both have Python to run fight over the GIL: every syscall
one of them makes hands the GIL to the other, a context switch each way
(30-40 % of a fast app's throughput with four threads).  So one thread runs
and the others are parked (see :mod:`bridge.server.pool`).  The worker's
loop thread calls :meth:`Monitor.step` every ``MONITOR_INTERVAL`` while
requests are coming in: a thread still inside the same request as at the
previous look is taken to be blocked (in the app's I/O, a sleep, a slow
client), and one more parked thread is let in to poll and serve.  A
CPU-bound or blocking app therefore still gets all ``threads`` at once,
within a few milliseconds; a fast app runs on one thread without GIL
ping-pong.

"Blocked" means off the CPU.  A thread still in the same request at two
looks may just be running a page that takes longer than a look's interval
(a Flask page is 0.2-0.4 ms of Python; a look every 1 ms sees one in two
looks now and then): letting another thread in then only starts a GIL
fight -- with four threads the Flask page cost 325 us of CPU per request
against 280 us on one thread, and 15 % fewer requests/s.  So each look also
reads the thread's CPU clock (``pthread_getcpuclockid``: about 0.7 us): a
thread that used at least ``ON_CPU_SHARE`` of the time since the previous
look is computing, and is left alone -- unless its request has been running
for ``MONITOR_LONG`` already, when one more thread is let in anyway, so that
short requests are not held up behind a long one (latency over throughput,
as the GIL's own switch interval does).
"""
from __future__ import annotations

import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

    from bridge.server.pool import Pool

__all__ = ["MONITOR_INTERVAL", "MONITOR_LINGER", "MONITOR_LONG", "MONITOR_MAX", "MONITOR_QUIET",
           "ON_CPU_SHARE", "Monitor", "thread_cpu_clock"]

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
#: A thread that used at least this share of the wall time between two
#: looks on the CPU is computing, not blocked (see the module doc).
ON_CPU_SHARE = 0.5
#: Seconds a request may compute before one more thread is let in anyway.
MONITOR_LONG = 0.02


def thread_cpu_clock() -> Optional[int]:
    """The calling thread's CPU clock id, or None where there is none (the
    monitor then takes a thread in the same request at two looks as blocked)."""
    try:
        return time.pthread_getcpuclockid(threading.get_ident())
    except (AttributeError, OSError):
        return None


def _cpu_seconds(clock: Optional[int]) -> Optional[float]:
    if clock is None:
        return None
    try:
        return time.clock_gettime(clock)
    except OSError:     # the thread is gone (shutdown)
        return None


class Monitor:
    """Looks at the pool's running threads; lets a parked one in for each blocked one.

    ``asleep`` is true while the loop thread is not looking often: a pool
    thread that starts a request then clears it and wakes the loop.
    """

    def __init__(self, pool: Pool, cpu: Optional[Callable[[int], Optional[float]]] = None) -> None:
        self.pool = pool
        #: ``cpu(index)``: CPU seconds so far of pool thread ``index`` (None: unknown).
        self.cpu = cpu or (lambda index: _cpu_seconds(pool.clocks[index]))
        self.cpu_seen: list = [None] * pool.size   # at the previous look
        self.first_seen: list = [0.0] * pool.size  # when the current tag was first seen
        self.looked_at = 0.0
        self.asleep = True
        self.last: list = [0] * pool.size     # the tags seen at the previous look
        self.interval = MONITOR_INTERVAL
        self.quiet = 0                  # looks in a row that found no thread blocked
        self.until = 0.0                # keep looking until then (the linger)
        self.next_look = 0.0
        self.seen_finished = -1

    def step(self, now: float, finished: int) -> Optional[float]:
        """Look if it is time; seconds until the next look, or None to sleep until woken.

        ``finished`` counts the requests finished so far: activity -- a
        request finished since the last step, or one running now -- renews
        the linger; the monitor's own looks do not (they did, and an idle
        worker woke every 5 ms forever).
        """
        serving = self.pool.serving
        if finished != self.seen_finished or any(serving):
            if now >= self.until + self.interval:
                self.interval = MONITOR_INTERVAL     # busy again after a quiet spell
            self.seen_finished = finished
            self.until = now + MONITOR_LINGER
        if now >= self.next_look:
            self._pace(self.look(now))
            self.next_look = now + self.interval
        if now < self.until:
            self.asleep = False
            return self.next_look - now
        # Set before looking: a thread that starts a request after the look
        # sees the flag and wakes the loop.
        self.asleep = True
        if any(serving):
            self.asleep = False
            return self.next_look - now
        return None

    def _pace(self, blocked: bool) -> None:
        if blocked:
            self.interval, self.quiet = MONITOR_INTERVAL, 0
            return
        self.quiet += 1
        if self.quiet >= MONITOR_QUIET and self.interval < MONITOR_MAX:
            self.interval, self.quiet = min(MONITOR_MAX, self.interval * 2), 0

    def look(self, now: Optional[float] = None) -> bool:
        """Let one more thread in for each running thread blocked in a request.

        Blocked means in the same request as at the previous look and off
        the CPU for more than ``1 - ON_CPU_SHARE`` of the time between the
        two looks, or in it for ``MONITOR_LONG`` whatever it did; each
        request lets one thread in at most.  True if a thread was blocked.
        """
        if now is None:
            now = time.monotonic()
        pool = self.pool
        serving = pool.serving
        last = self.last
        granted = pool.granted
        cpu_seen = self.cpu_seen
        first_seen = self.first_seen
        span = now - self.looked_at
        self.looked_at = now
        blocked = False
        for i, tag in enumerate(serving):
            if not tag:
                last[i] = 0
                continue
            cpu = self.cpu(i)
            if tag == last[i]:
                before = cpu_seen[i]
                computing = (cpu is not None and before is not None
                             and cpu - before >= ON_CPU_SHARE * span
                             and now - first_seen[i] < MONITOR_LONG)
                if not computing:
                    blocked = True
                    if granted[i] != tag:
                        pool.let_in(i, tag)
            else:
                last[i] = tag
                first_seen[i] = now
            cpu_seen[i] = cpu
        return blocked
