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
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

    from bridge.server.pool import Pool

__all__ = ["MONITOR_INTERVAL", "MONITOR_LINGER", "MONITOR_MAX", "MONITOR_QUIET", "Monitor"]

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


class Monitor:
    """Looks at the pool's running threads; lets a parked one in for each blocked one.

    ``asleep`` is true while the loop thread is not looking often: a pool
    thread that starts a request then clears it and wakes the loop.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
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
            self._pace(self.look())
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

    def look(self) -> bool:
        """Let one more thread in for each running thread blocked in a request.

        Blocked means in the same request as at the previous look; each
        request lets one thread in at most.  True if a thread was blocked.
        """
        pool = self.pool
        serving = pool.serving
        last = self.last
        granted = pool.granted
        blocked = False
        for i, tag in enumerate(serving):
            if tag and tag == last[i]:
                blocked = True
                if granted[i] != tag:
                    pool.let_in(i, tag)
            last[i] = tag
        return blocked
