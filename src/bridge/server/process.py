"""One worker process's life: boot, signals, heartbeat, slow-request log.

Used the same way whether the worker is the whole server (one process) or
one of the pre-fork master's children, so both behave alike: the status
page, ``--slowlog`` and the heartbeat work in either.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback

from bridge import logtext
from bridge.server import status
from bridge.server.jobcontrol import JOB_CONTROL, stopped_by_the_terminal
from bridge.server.logs import reopen_logs
from bridge.server.scoreboard import READY, STOPPING
from bridge.server.state import WorkerState
from bridge.server.worker import Worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

log = logging.getLogger("bridge.server")


#: Signals whose default action would end (or stop) a process that is still
#: importing the app: recorded by :func:`defer_signals` before anything slow
#: runs, replayed to the server's handlers once they are in place.
DEFERRED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)

_deferred: list = []


def restart_calls(signum: int) -> None:
    """A system call this signal interrupts is restarted (SA_RESTART), not failed with EINTR:
    the app's blocking calls in C (a database driver's read) go on.  Not for TTIN/TTOU."""
    if signum not in JOB_CONTROL:
        signal.siginterrupt(signum, False)


def _record(signum: int, frame) -> None:
    if stopped_by_the_terminal(signum):
        return
    if signum not in _deferred:
        _deferred.append(signum)


def defer_signals() -> None:
    """Record HUP/USR1/TTIN/TTOU until the server's handlers exist (issue 21, item 6).

    A handler that records, not a blocked mask: a blocked mask is inherited
    by every thread and process the app starts while it is imported, and
    survives ``exec``, so a helper it launched would never see a HUP or a
    USR1.  A Python handler is process-wide (no thread takes the default
    action) and goes back to the default in an exec'd program.  Once a
    worker's or master's handlers are installed they replay what came
    (:func:`take_deferred`): one of each, all a reopen or a warning needs.
    """
    if threading.current_thread() is threading.main_thread():
        for signum in DEFERRED_SIGNALS:
            current = signal.getsignal(signum)
            if callable(current) and current is not _record and current is not signal.default_int_handler:
                continue        # the app's own (bridge.run after its import): the server's handlers say so
            signal.signal(signum, _record)
            restart_calls(signum)


def take_deferred() -> list:
    """The signals recorded since :func:`defer_signals`, oldest first; forgets them."""
    taken = list(_deferred)
    del _deferred[:]
    return taken


def deferred_to_handle(replaced: dict, ours) -> list:
    """What came while the app was imported, for the server's handlers just installed.

    ``replaced``: signal -> the handler that ``ours`` replaced.  One that is
    neither :func:`_record` nor ``ours`` was set by the app during its
    import, and may have taken a USR1 meant for bridge: the logs are
    reopened once anyway (harmless), and the log says whose handler wins.
    """
    taken = take_deferred()
    for signum, handler in replaced.items():
        if signum in DEFERRED_SIGNALS and callable(handler) and handler is not _record \
                and handler != ours and handler is not signal.default_int_handler:
            log.warning("the app set its own %s handler while it was imported: bridge's replaces it",
                        signal.Signals(signum).name)
            if signum == signal.SIGUSR1 and signum not in taken:
                taken.append(signum)
    return taken


class WorkerSignals:
    """TERM/INT: graceful stop (a second INT: at once); QUIT: at once; USR1: reopen logs.

    The handlers only ask the worker's loop to act: nothing that can take a
    lock -- logging included -- runs inside a handler (gunicorn's rule).
    ``prefork``: HUP, TTIN and TTOU are the master's business (and TTIN's
    default action would stop the process), so a worker ignores them.
    """

    def __init__(self, worker, *, prefork: bool) -> None:
        self.worker = worker
        self.prefork = prefork
        self.saved: dict = {}
        self.interrupted = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self          # tests run a Worker in a thread: no signals there
        handled = ["SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGHUP", "SIGTTIN", "SIGTTOU"]
        for name in handled:
            signum = getattr(signal, name)
            self.saved[signum] = signal.signal(signum, self._handle)
            restart_calls(signum)
        if self.prefork:
            self.saved.setdefault(signal.SIGCHLD, signal.signal(signal.SIGCHLD, signal.SIG_DFL))
        # A process started with these blocked would never see them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [getattr(signal, name) for name in handled])
        # What came during the import (defer_signals) is handled now.
        for signum in deferred_to_handle(self.saved, self._handle):
            self._handle(signum, None)
        return self

    def _handle(self, signum, frame) -> None:
        worker = self.worker
        if signum == signal.SIGUSR1:
            worker.call_soon(reopen_logs)
        elif signum in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            if not self.prefork and not stopped_by_the_terminal(signum):
                name = signal.Signals(signum).name
                worker.call_soon(lambda: log.warning(
                    "%s ignored: reloading and resizing need the process manager "
                    "(run with --workers N, --pid or --timeout)", name))
        elif signum == signal.SIGQUIT or (signum == signal.SIGINT and self.interrupted):
            worker.stop(graceful=False)
        else:
            self.interrupted = True
            worker.stop(graceful=True)

    def __exit__(self, *exc) -> None:
        if self.saved:
            # A late USR1 or HUP while the process winds down must not kill it.
            signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)


class Watchdog:
    """The worker loop's tick (about once a second): heartbeat, slow requests, orphan check."""

    def __init__(self, worker, state, slot, *, slowlog: float = 0.0,
                 master_pid: Optional[int] = None) -> None:
        self.worker = worker
        self.state = state
        self.slot = slot
        self.slowlog = slowlog
        self.master_pid = master_pid
        self.logged: dict = {}      # pool thread index -> start time already reported

    def __call__(self) -> None:
        state = self.state
        if self.slot is not None:
            self.slot.beat(state.accepted, state.busy_threads)
        if self.master_pid is not None and os.getppid() != self.master_pid:
            log.warning("worker %d: the master (pid %d) is gone; stopping", os.getpid(), self.master_pid)
            self.master_pid = None
            self.worker.stop(graceful=True)
        if self.slowlog:
            self.check_slow()

    def check_slow(self) -> None:
        now = time.monotonic()
        threads = None
        for index, current in enumerate(list(self.state.current)):
            if current is None:
                continue
            started, environ = current
            if now - started < self.slowlog or self.logged.get(index) == started:
                continue
            self.logged[index] = started
            if threads is None:
                threads = {i: ident for ident, i in self.state._index.items()}
            frame = sys._current_frames().get(threads.get(index))
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)\n"
            log.warning("slow request (%.1f s > --slowlog %g s) in worker %d thread %d: %s\n%s",
                        now - started, self.slowlog, os.getpid(), index,
                        describe_request(environ), stack.rstrip())
            state_slow = getattr(self.state, "slow", 0)
            self.state.slow = state_slow + 1
            if self.slot is not None:
                self.slot.add_slow()


def become_session_leader() -> None:
    """A pre-fork worker starts its own session, so that whatever it starts stays marked as its.

    CGI scripts (each in its own process group, for the CGI timeout) and
    the app's own subprocesses inherit the session; only a deliberate
    ``setsid`` leaves it.  When the master has to kill the worker, or it
    crashes, :func:`kill_session` finds and kills them all, however deep
    (a script's ``sleep 300 &`` included): PR_SET_PDEATHSIG would only
    reach direct children, and only when the forking *thread* exits.
    Terminal signals then reach the master alone, which passes TERM/QUIT on.
    """
    try:
        os.setsid()
    except OSError:
        pass   # already a group leader (not forked by the master): nothing to mark


def session_members(sid: int) -> dict:
    """``{pid: pgid}`` of the live processes in session ``sid`` (Linux ``/proc``; empty elsewhere).

    Zombies are left out: they are dead already, their parent reaps them."""
    found: dict = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue           # gone meanwhile, or not ours to read
        # "pid (comm) state ppid pgrp session ...": comm may hold spaces and ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            found[int(name)] = int(fields[2])
    return found


def kill_session(sid: int) -> int:
    """SIGKILL every process left in session ``sid`` (a dead worker's); how many there were.

    By process group first (a group is killed at once, so a script that
    forks meanwhile loses the race), then by pid; a few rounds catch
    what was forked during a scan.  Never this process itself.
    """
    me = os.getpid()
    killed: set = set()
    if sid <= 1 or sid == os.getsid(0):
        return 0           # never our own session (the shell's, for a foreground master)
    for _ in range(5):
        members = {pid: pgid for pid, pgid in session_members(sid).items() if pid != me}
        if not members:
            break
        for pgid in set(members.values()):
            if pgid != os.getpgrp():
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except OSError:
                    pass
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        killed.update(members)
    return len(killed)


def describe_request(environ: dict) -> str:
    """``METHOD /path?query from ADDRESS`` for the slow-request log, escaped like every log line."""
    return f"{logtext.describe_request(environ, query=True)} from {logtext.escape(str(environ.get('REMOTE_ADDR', '?')))}"


def make_worker(listeners: list, factory: Callable, config, *, state=None, max_requests=None,
                on_tick=None, siblings: bool = False, share=None):
    """A Worker configured from ``config``.

    ``siblings``: other worker processes share the listeners (pre-fork), so
    a worker pauses accepting once it has as many requests in hand (running,
    or accepted and not started) as threads, and leaves the connections it
    could not start to an idle sibling.  ``share`` (its scoreboard slot)
    balances the connections held between siblings.
    """
    threads = getattr(config, "threads", 4)
    return Worker(listeners, factory,
                  threads=threads,
                  accept_limit=threads if siblings else None,
                  max_connections=getattr(config, "worker_connections", 0) or None,
                  graceful_timeout=getattr(config, "graceful_timeout", 30.0),
                  max_requests=getattr(config, "max_requests", 0) if max_requests is None else max_requests,
                  idle_timeout=getattr(config, "idle_timeout", 60.0),
                  io_timeout=getattr(config, "io_timeout", 30.0),
                  state=state, on_tick=on_tick, share=share if siblings else None, slot=share)


def run_worker(listeners: list, app: Callable, factory_builder: Callable, config, *,
               board, slot_index: int, max_requests: int = 0, master_pid: Optional[int] = None,
               on_ready: Optional[Callable[[], None]] = None) -> "Worker":
    """Build the factory and serve until stopped; returns the Worker (for its counts)."""
    slot = board.slot(slot_index)
    factory = factory_builder(app, config)
    threads = getattr(config, "threads", 4)
    state = WorkerState(threads, max_requests=max_requests, slot=slot)
    state.slow = 0
    siblings = master_pid is not None and (getattr(config, "workers", 1) > 1
                                           or bool(getattr(config, "workers_max", 0)))
    worker = make_worker(listeners, factory, config, state=state, max_requests=max_requests,
                         siblings=siblings, share=slot)
    worker.on_tick = Watchdog(worker, state, slot, slowlog=getattr(config, "slowlog", 0.0) or 0.0,
                              master_pid=master_pid)
    status.set_context(board, listeners, config, "prefork" if master_pid else "single")
    stop = worker.stop

    def stop_and_say(graceful: bool = True) -> None:
        slot.set_state(STOPPING)
        stop(graceful)
    worker.stop = stop_and_say
    slot.set_state(READY)
    with WorkerSignals(worker, prefork=master_pid is not None):
        # Only now say so: a USR1 or TERM sent on seeing it must find the
        # handlers in place (SIGUSR1's default action ends the process).
        if on_ready is not None:
            on_ready()
        worker.run()
    slot.set_state(STOPPING)
    slot.beat(state.accepted, 0)    # the last count: the pool's totals keep it after exit
    return worker
