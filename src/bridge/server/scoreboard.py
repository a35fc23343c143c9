"""The scoreboard: what every worker is doing, in shared memory the master reads.

One anonymous ``MAP_SHARED`` mmap made by the master before it forks, so
every worker inherits it (PHP-FPM's scoreboard, gunicorn's heartbeat file
without the file).  A header for the pool, one slot per worker process, and
in each slot one record per pool thread: when its current request started
and what it is (``GET /path``).  Each field has a single writer -- the
master for the header and a slot's identity, a worker's loop thread for its
heartbeat, each pool thread for its own record -- so no lock is needed; a
reader may see a record mid-update, which a status page can live with.

The master uses it to kill a worker stuck past ``--timeout`` (and name the
request), to size a dynamic pool, and to know a new worker has booted; any
worker reads it to answer the status page for the whole pool.

Each thread record also holds its own request-duration histogram (a sum and
a count per bucket of :data:`DURATION_BUCKETS`), written by that thread when
a request finishes: the metrics page adds them up over every worker, and a
dead worker's totals move to the header with its request count, so the
histogram is the pool's since start, not one process's.
"""
from __future__ import annotations

import mmap
import os
import struct
import time
import weakref
from bisect import bisect_left

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["Scoreboard", "Slot", "FREE", "BOOTING", "READY", "STOPPING", "STATE_NAMES", "DURATION_BUCKETS"]

FREE, BOOTING, READY, STOPPING = 0, 1, 2, 3
STATE_NAMES = {FREE: "free", BOOTING: "booting", READY: "ready", STOPPING: "stopping"}

#: master pid, started (wall), generation, target workers, reloads, max active threads,
#: requests / accepted / slow requests of workers already gone, slot count, threads per slot
_HEADER = struct.Struct("<qdIIIIQQQII")
#: then: worker processes gone (exited or killed) while the master ran, times
#: the pool was full (every thread busy and no room to start a worker)
_COUNTERS = struct.Struct("<QQ")
_COUNTERS_OFFSET = 64
_HEADER_HIST_OFFSET = 96
_HEADER_SIZE = 256

#: Upper bounds (seconds) of the request-duration histogram's buckets, the
#: Prometheus client libraries' defaults; a last bucket takes the rest (+Inf).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: sum of the durations, then the count of each bucket (not cumulative)
_HIST = struct.Struct("<d%dQ" % (len(DURATION_BUCKETS) + 1))
#: pid, generation, state, started (wall), heartbeat (monotonic), accepted, slow requests,
#: max busy threads
_SLOT = struct.Struct("<qIIddQQI")
#: then: connections the worker holds open now (its share of the clients: see
#: :meth:`Slot.publish_open` and :meth:`Scoreboard.fewest_open`)
_OPEN = struct.Struct("<I")
_OPEN_OFFSET = 52
#: then: since when (monotonic; 0: it accepts) the worker's listeners have
#: been paused -- its threads all taken, out of descriptors, stopping
_PAUSED = struct.Struct("<d")
_PAUSED_OFFSET = 56
#: A sibling paused this long is left out of the share rule: deferring to it
#: only delays each connection by ACCEPT_DEFER (one accept per deferral).  A
#: pause inside a burst (a pool full for a moment) is shorter.
PAUSED_TOO_LONG = 0.05
_SLOT_HEAD_SIZE = 64
#: started (monotonic, 0 = idle), started (wall), requests served by this thread, text length
_THREAD = struct.Struct("<ddQH")
_THREAD_HIST_OFFSET = 256     # the histogram follows the request text
_THREAD_SIZE = _THREAD_HIST_OFFSET + 128
_TEXT_MAX = _THREAD_HIST_OFFSET - _THREAD.size
_START = struct.Struct("<dd")
_STATE = struct.Struct("<I")
_LEN = struct.Struct("<H")
_COUNT = struct.Struct("<Q")
_FINISHED = struct.Struct("<ddQ")   # idle again: both starts zeroed, the count
_pack_f64 = struct.Struct("<d").pack_into
_pack_count = _COUNT.pack_into
_monotonic = time.monotonic
_bisect = bisect_left


def _close_all(fds: list) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _eventfds(count: int) -> list:
    try:
        return [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(count)]
    except (AttributeError, OSError):   # no eventfd here: no nudges, only the 2 ms deferral
        return []


class Scoreboard:
    def __init__(self, slots: int, threads: int) -> None:
        self.slots = slots
        self.threads = threads
        self.slot_size = _SLOT_HEAD_SIZE + threads * _THREAD_SIZE
        self.mem = mmap.mmap(-1, _HEADER_SIZE + slots * self.slot_size)   # MAP_SHARED|ANON
        #: One eventfd per slot, made before the fork so every worker has them
        #: all: a worker leaving new connections to a sibling wakes it with one
        #: (see :meth:`Slot.nudge`).  Empty where there is no eventfd.
        self.nudges: list = _eventfds(slots) if slots > 1 else []
        # A board dropped without close() (tests, a serve() that returns)
        # still gives its descriptors back.
        self._finalizer = weakref.finalize(self, _close_all, list(self.nudges))
        self.view = memoryview(self.mem)
        self._pool_was_full = False     # the master's, for note_pool_full()
        self.write_header(master_pid=0, started=time.time(), generation=0, target=0, reloads=0,
                          max_active=0, gone_requests=0, gone_accepted=0, gone_slow=0)

    # -- header (master) -------------------------------------------------

    def header(self) -> dict:
        (pid, started, gen, target, reloads, max_active, req, acc, slow, slots, threads
         ) = _HEADER.unpack_from(self.mem, 0)
        worker_exits, pool_full = _COUNTERS.unpack_from(self.mem, _COUNTERS_OFFSET)
        return {"master_pid": pid, "started": started, "generation": gen, "target": target,
                "reloads": reloads, "max_active": max_active, "gone_requests": req,
                "gone_accepted": acc, "gone_slow": slow, "worker_exits": worker_exits,
                "pool_full": pool_full}

    def write_header(self, **values) -> None:
        h = self.header()
        h.update(values)
        _HEADER.pack_into(self.mem, 0, h["master_pid"], h["started"], h["generation"], h["target"],
                          h["reloads"], h["max_active"], h["gone_requests"], h["gone_accepted"],
                          h["gone_slow"], self.slots, self.threads)
        _COUNTERS.pack_into(self.mem, _COUNTERS_OFFSET, h["worker_exits"], h["pool_full"])

    def note_pool_full(self, full: bool) -> None:
        """Master: count each time the pool becomes full (every thread busy, no room to grow).

        PHP-FPM's "max children reached": how often requests had to queue
        because the pool could not grow, counted once per episode rather
        than once per master tick, so the number does not depend on the
        tick rate.
        """
        if full and not self._pool_was_full:
            self.write_header(pool_full=self.header()["pool_full"] + 1)
        self._pool_was_full = full

    def histogram(self) -> tuple:
        """The pool's request durations since start: ``(sum, [count per bucket])``.

        Buckets follow :data:`DURATION_BUCKETS`, the last one past the
        largest bound; counts are per bucket, not cumulative.  Workers gone
        are in the header, live ones in their threads' records.
        """
        total, *counts = _HIST.unpack_from(self.mem, _HEADER_HIST_OFFSET)
        for i in range(self.slots):
            off = self.offset(i)
            if _SLOT.unpack_from(self.mem, off)[2] == FREE:
                continue
            t_total, t_counts = self._slot_histogram(off)
            total += t_total
            counts = [a + b for a, b in zip(counts, t_counts)]
        return total, counts

    def _slot_histogram(self, off: int) -> tuple:
        total = 0.0
        counts = [0] * (len(DURATION_BUCKETS) + 1)
        base = off + _SLOT_HEAD_SIZE + _THREAD_HIST_OFFSET
        for t in range(self.threads):
            t_total, *t_counts = _HIST.unpack_from(self.mem, base + t * _THREAD_SIZE)
            total += t_total
            counts = [a + b for a, b in zip(counts, t_counts)]
        return total, counts

    # -- slots ------------------------------------------------------------

    def offset(self, index: int) -> int:
        return _HEADER_SIZE + index * self.slot_size

    def slot(self, index: int) -> "Slot":
        return Slot(self, index)

    def claim(self, pid: int, generation: int) -> Optional[int]:
        """A free slot for a new worker (master, before fork); None when full."""
        for i in range(self.slots):
            if _SLOT.unpack_from(self.mem, self.offset(i))[2] == FREE:
                self.reset(i, pid, generation)
                return i
        return None

    def reset(self, index: int, pid: int, generation: int, state: int = BOOTING) -> None:
        off = self.offset(index)
        self.mem[off:off + self.slot_size] = bytes(self.slot_size)
        _SLOT.pack_into(self.mem, off, pid, generation, state, time.time(), time.monotonic(), 0, 0, 0)

    def release(self, index: int, into: Optional["Scoreboard"] = None) -> dict:
        """Free a dead worker's slot; its totals move to the header.

        ``into``: the board that replaced this one (a SIGHUP that changed
        ``--threads``), whose header holds the pool's totals from then on.
        """
        pool = self if into is None else into
        info = self.read_slot(index)
        h = pool.header()
        pool.write_header(gone_requests=h["gone_requests"] + info["requests"],
                          gone_accepted=h["gone_accepted"] + info["accepted"],
                          gone_slow=h["gone_slow"] + info["slow"],
                          worker_exits=h["worker_exits"] + 1)
        off = self.offset(index)
        total, *counts = _HIST.unpack_from(pool.mem, _HEADER_HIST_OFFSET)
        t_total, t_counts = self._slot_histogram(off)
        _HIST.pack_into(pool.mem, _HEADER_HIST_OFFSET, total + t_total,
                        *(a + b for a, b in zip(counts, t_counts)))
        self.mem[off:off + self.slot_size] = bytes(self.slot_size)
        return info

    def carry_over(self, old: "Scoreboard") -> None:
        """Take the pool's header -- totals, counters, histogram -- from the board this one replaces."""
        self.write_header(**old.header())
        _HIST.pack_into(self.mem, _HEADER_HIST_OFFSET, *_HIST.unpack_from(old.mem, _HEADER_HIST_OFFSET))

    def set_pid(self, index: int, pid: int) -> None:
        struct.pack_into("<q", self.mem, self.offset(index), pid)

    def read_slot(self, index: int, now: Optional[float] = None) -> dict:
        off = self.offset(index)
        pid, gen, state, started, heartbeat, accepted, slow, max_busy = _SLOT.unpack_from(self.mem, off)
        now = time.monotonic() if now is None else now
        requests = 0
        running = []
        base = off + _SLOT_HEAD_SIZE
        for t in range(self.threads):
            toff = base + t * _THREAD_SIZE
            start, start_wall, count, length = _THREAD.unpack_from(self.mem, toff)
            requests += count
            if start:
                text_off = toff + _THREAD.size
                text = bytes(self.mem[text_off:text_off + min(length, _TEXT_MAX)])
                running.append({"thread": t, "request": text.decode("latin-1"),
                                "started": start_wall, "duration": max(0.0, now - start)})
        return {"index": index, "pid": pid, "generation": gen, "state": state,
                "started": started, "heartbeat": heartbeat, "accepted": accepted,
                "open": _OPEN.unpack_from(self.mem, off + _OPEN_OFFSET)[0],
                "requests": requests, "slow": slow, "max_busy": max_busy, "running": running}

    def fewest_open(self, but: int) -> Optional[tuple]:
        """``(connections, slot)`` of the ready worker other than slot ``but``
        that holds the fewest; None if there is none.

        Read on a pre-fork worker's accept path (a few slots), so it reads
        two fields per slot and builds nothing.
        """
        fewest = None
        at = -1
        mem = self.mem
        too_long = _monotonic() - PAUSED_TOO_LONG
        for i in range(self.slots):
            if i == but:
                continue
            off = _HEADER_SIZE + i * self.slot_size
            if _STATE.unpack_from(mem, off + 12)[0] != READY:
                continue
            paused = _PAUSED.unpack_from(mem, off + _PAUSED_OFFSET)[0]
            if paused and paused < too_long:
                continue    # not taking connections for a while: no use deferring to it
            n = _OPEN.unpack_from(mem, off + _OPEN_OFFSET)[0]
            if fewest is None or n < fewest:
                fewest, at = n, i
        return None if fewest is None else (fewest, at)

    def close(self) -> None:
        """Close the nudge descriptors (the board is no longer any worker's)."""
        self._finalizer()
        self.nudges = []

    def workers(self) -> list:
        now = time.monotonic()
        return [self.read_slot(i, now) for i in range(self.slots)
                if _SLOT.unpack_from(self.mem, self.offset(i))[2] != FREE]


class Slot:
    """A worker's view of its own slot (the writer side, on the request path)."""

    __slots__ = ("board", "index", "off", "mem", "_thread_off", "_text", "_counts", "_hist", "_start")

    def __init__(self, board: Scoreboard, index: int) -> None:
        self.board = board
        self.index = index
        self.off = board.offset(index)
        self.mem = board.mem
        base = self.off + _SLOT_HEAD_SIZE
        self._thread_off = [base + t * _THREAD_SIZE for t in range(board.threads)]
        # Per thread: the (method, uri) whose text is in the record, and the
        # request count (each written only by its own thread).
        self._text: list = [None] * board.threads
        self._counts = [_COUNT.unpack_from(self.mem, off + 16)[0] for off in self._thread_off]
        # Per thread: [sum, count per bucket], the Python copy of its histogram.
        self._hist = [list(_HIST.unpack_from(self.mem, off + _THREAD_HIST_OFFSET)) for off in self._thread_off]
        self._start = [0.0] * board.threads     # monotonic start of each thread's request, 0 = idle

    def set_state(self, state: int) -> None:
        struct.pack_into("<I", self.mem, self.off + 12, state)

    def publish_open(self, count: int) -> None:
        """The connections this worker holds now (written by the worker under its lock)."""
        _OPEN.pack_into(self.mem, self.off + _OPEN_OFFSET, count)

    def publish_accepting(self, on: bool) -> None:
        """The worker's listeners were armed (``on``) or paused (under the worker's lock).
        A pause keeps the time it began until the listeners are armed again."""
        off = self.off + _PAUSED_OFFSET
        if on:
            _PAUSED.pack_into(self.mem, off, 0.0)
        elif not _PAUSED.unpack_from(self.mem, off)[0]:
            _PAUSED.pack_into(self.mem, off, _monotonic())

    def fewest_open_elsewhere(self) -> Optional[tuple]:
        """``(connections, slot)`` of the ready sibling holding the fewest (None: no ready sibling)."""
        return self.board.fewest_open(self.index)

    @property
    def nudge_fd(self) -> Optional[int]:
        """This worker's nudge eventfd (readable: a sibling left connections to it)."""
        nudges = self.board.nudges
        return nudges[self.index] if nudges else None

    def nudge(self, index: int) -> None:
        """Wake the worker of slot ``index``: connections wait in the listen queue for it.

        Needed because the kernel wakes the first idle worker on the
        listener's wait queue; a worker that leaves a connection there for
        a sibling must wake that sibling itself.
        """
        nudges = self.board.nudges
        if nudges:
            try:
                os.eventfd_write(nudges[index], 1)
            except OSError:     # the counter is full: it is readable anyway
                pass

    def beat(self, accepted: int, busy: int) -> None:
        """Heartbeat from the worker's loop thread (about once a second)."""
        off = self.off
        struct.pack_into("<dQ", self.mem, off + 24, time.monotonic(), accepted)
        if busy > struct.unpack_from("<I", self.mem, off + 48)[0]:
            struct.pack_into("<I", self.mem, off + 48, busy)

    def add_slow(self) -> None:
        off = self.off + 40
        struct.pack_into("<Q", self.mem, off, struct.unpack_from("<Q", self.mem, off)[0] + 1)

    def request_started(self, thread: int, now: float, environ: dict) -> None:
        if thread >= len(self._thread_off):
            return
        toff = self._thread_off[thread]
        method = environ.get("REQUEST_METHOD", "")
        uri = environ.get("REQUEST_URI")
        if uri is None:
            uri = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            qs = environ.get("QUERY_STRING")
            if qs:
                uri += "?" + qs
        mem = self.mem
        key = (method, uri)
        if key != self._text[thread]:   # the same request line as last time: already there
            self._text[thread] = key
            text = f"{method} {uri}".encode("latin-1", "replace")[:_TEXT_MAX]
            text_off = toff + _THREAD.size
            mem[text_off:text_off + len(text)] = text
            _LEN.pack_into(mem, toff + 24, len(text))
        _START.pack_into(mem, toff, now, time.time())
        self._start[thread] = now

    def request_finished(self, thread: int) -> None:
        offs = self._thread_off
        if thread >= len(offs):
            return
        toff = offs[thread]
        counts = self._counts
        n = counts[thread] = counts[thread] + 1
        mem = self.mem
        _FINISHED.pack_into(mem, toff, 0.0, 0.0, n)
        starts = self._start
        start = starts[thread]
        if start:
            # One bucket and the sum change: two small writes, one writer (this thread).
            starts[thread] = 0.0
            duration = _monotonic() - start
            hist = self._hist[thread]
            bucket = _bisect(DURATION_BUCKETS, duration) + 1
            total = hist[0] = hist[0] + duration
            count = hist[bucket] = hist[bucket] + 1
            hoff = toff + _THREAD_HIST_OFFSET
            _pack_f64(mem, hoff, total)
            _pack_count(mem, hoff + 8 * bucket, count)
