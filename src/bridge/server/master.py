"""The pre-fork master: binds once, forks workers, supervises them (gunicorn's arbiter shape).

Signal handlers only put the signal on a queue and wake the loop; the loop
takes them off in order and acts, then reaps dead workers, enforces
``--timeout``, finishes reloads and sizes the pool.  Everything runs in
plain code in one thread, never inside a handler.

Signals to the master:

* TERM, INT -- graceful: workers stop accepting, finish what is in flight
  within ``--graceful-timeout``, the master exits 0.  A second INT (two
  Ctrl-C) or a QUIT: stop at once.
* HUP -- zero-downtime reload: a new generation of workers is started
  (without ``--preload`` each imports the app afresh, so new code is
  loaded); once all of them are serving, the old generation is stopped
  gracefully.  If the new code cannot be imported, the old workers keep
  serving and the log says why.  With ``--config FILE`` the file is read
  again first: what the new workers read (workers, threads, timeouts,
  logs, limits, middleware) takes effect in them; what was set up once
  for the whole server (the sockets, the users, the pid file: a setting
  declared ``restart=True``) keeps its value, with one log line each
  saying a restart is needed.  A file that has become wrong is logged and
  the settings in force are kept.
* USR1 -- reopen the log files, in the master and every worker.
* TTIN / TTOU -- one worker more / less.
* CHLD -- a worker died: it is replaced.  A worker that dies within
  seconds of starting, again and again, is replaced after a growing pause
  (a crash loop does not fork hundreds of processes a second); an app that
  no worker could ever import stops the master with status 2.

With ``--user``/``--group`` the master keeps the user it was started as and
opens, before any worker exists, what the workers could not open themselves
(the TLS key, the logs: the protocol's ``factory_builder.prepare``); each
worker switches users right after ``fork``, before importing the app
(:mod:`bridge.server.privileges` says why).  A worker that cannot start at
all -- the switch fails, the app cannot be imported, its factory cannot be
built -- exits with :data:`APP_LOAD_FAILED`, and a generation in which no
worker ever started stops the master with status 2 instead of a crash loop.

Workers share a :class:`~bridge.server.scoreboard.Scoreboard` with the master:
their state (booting, ready, stopping), heartbeat and requests in flight.
"""
from __future__ import annotations

import functools
import logging
import os
import random
import select
import signal
import socket
import sys
import threading
import time

from bridge.config import ConfigError, load_declarations
from bridge.loader import load_from_config
from bridge.logtext import counted
from bridge.server.jobcontrol import stopped_by_the_terminal
from bridge.server.listeners import (BindError, describe_listeners, log_socket_access, open_config_listeners,
                                     set_socket_file)
from bridge.server.logs import reopen_logs, set_workers_user, setup_logging
from bridge.server.pidfile import PidFile
from bridge.server.privileges import Identity, effective, resolve, switch_to
from bridge.server.process import (become_session_leader, defer_signals, deferred_to_handle, kill_session,
                                   restart_calls, run_worker, take_deferred)
from bridge.server.scoreboard import READY, STOPPING, Scoreboard

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["Master", "APP_LOAD_FAILED", "sd_notify"]

log = logging.getLogger("bridge.server")

#: A worker's exit status when the app could not be imported.
APP_LOAD_FAILED = 3
#: A worker dying sooner than this after its start counts towards a crash loop.
QUICK_DEATH = 5.0
MAX_BACKOFF = 10.0

SIGNALS = ("SIGHUP", "SIGTERM", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGTTIN", "SIGTTOU", "SIGCHLD")
#: Queued by the master from its first instant (their default would kill or stop it).
EARLY_SIGNALS = ("SIGHUP", "SIGUSR1", "SIGTTIN", "SIGTTOU", "SIGCHLD")


class WorkerProc:
    __slots__ = ("pid", "slot", "board", "generation", "started", "booted", "retiring", "kill_at",
                 "stopping", "killed")

    def __init__(self, pid: int, slot: int, generation: int, board: Scoreboard) -> None:
        self.pid = pid
        self.slot = slot
        self.board = board          # its generation's (a HUP that changes --threads makes a new one)
        self.generation = generation
        self.started = time.monotonic()
        self.booted = False
        self.retiring = False       # the master asked it to stop
        self.stopping = False       # it is draining on its own (--max-requests, master gone)
        self.kill_at: Optional[float] = None
        self.killed = False


def sd_notify(message: str) -> None:
    """Tell systemd (``Type=notify``) about READY/RELOADING/STOPPING, if it listens."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)


def set_proc_title(title: str) -> None:
    """``bridge master: ...`` / ``bridge worker: ...`` in ps, if setproctitle is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)



def _worker_signals(old_mask) -> None:
    """A new worker leaves the master's signal handling for its own (set up by the Worker).

    HUP, USR1, TTIN and TTOU are recorded while the app is imported (the
    master may forward a USR1 at any time, and its default action ends the
    process); the worker's handlers replay them (WorkerSignals).  Then the
    mask the master had before the fork: nothing stays blocked for the
    processes the app starts.
    """
    for name in SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    take_deferred()                 # the master's memory, not this worker's
    defer_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


class Master:
    def __init__(self, config, factory_builder: Callable, *, app: Optional[Callable] = None,
                 scheme: str = "http", listeners: Optional[list] = None) -> None:
        self.config = config
        self.factory_builder = factory_builder
        self.app = app
        self.scheme = scheme
        self.listeners = listeners
        self._take_pool_size(config)
        self._take_limits(config)
        self.workers: dict = {}
        self.generation = 1
        self.booted_generations: set = set()
        self.sig_queue: list = []
        self.wake_r = self.wake_w = -1
        self.stopping: Optional[str] = None
        self.stop_deadline = 0.0
        self.exit_code = 0
        self.quick_deaths = 0
        self.spawn_after = 0.0
        self.reloading_from: Optional[int] = None    # the generation being replaced
        self.ready_notified = False
        self.idle_since: Optional[float] = None
        self.grow_after = 0.0
        self.pidfile: Optional[PidFile] = None
        self.identity: Optional[Identity] = None   # --user/--group: what the workers switch to
        self.prepared = None            # files the master opened for the workers
        self.pid = os.getpid()
        self.board: Optional[Scoreboard] = None
        self.app_name = getattr(config, "app", None) or "app"
        self.config_before = None       # the settings a reload in progress replaced

    def _take_pool_size(self, config) -> None:
        """Threads, workers and the dynamic pool's bounds: at start, and on a HUP that changes them."""
        self.threads = getattr(config, "threads", 4)
        workers = getattr(config, "workers", 1)
        self.workers_min = getattr(config, "workers_min", None) or min(workers, getattr(config, "workers_max", None) or workers)
        self.workers_max = max(getattr(config, "workers_max", None) or workers, self.workers_min)
        self.target = min(max(workers, self.workers_min), self.workers_max)
        self.dynamic = self.workers_max > self.workers_min

    def _take_limits(self, config) -> None:
        """What the master enforces on its workers (timeouts, request counts): at start and on HUP."""
        self.graceful_timeout = getattr(config, "graceful_timeout", 30.0)
        self.timeout = getattr(config, "timeout", 0.0) or 0.0
        self.max_requests = getattr(config, "max_requests", 0) or 0
        self.jitter = getattr(config, "max_requests_jitter", 0) or 0
        self.idle_period = getattr(config, "workers_idle_timeout", 10.0) or 10.0

    # -- start and stop ------------------------------------------------------

    def run(self) -> int:
        command = getattr(self.config, "command", "serve")
        try:
            self.identity = resolve(getattr(self.config, "user", None),
                                    getattr(self.config, "group", None))
        except (OSError, LookupError) as exc:
            sys.stderr.write(f"bridge {command}: {exc}\n")
            return 2
        if self.identity is not None and self.identity.uid is not None:
            set_workers_user(self.identity.uid)
        # Queued from the first instant: a HUP or USR1 during the --preload
        # import (or the TLS load) would otherwise kill the master (item 6).
        # TERM, INT and QUIT keep their default until the import is done:
        # nothing needs cleaning up yet, and a stuck import must still stop.
        self._install_signals(EARLY_SIGNALS)
        if getattr(self.config, "preload", False) and self.app is None:
            threads = threading.active_count()
            with effective(self.identity):       # never imported as root (item 7)
                self.app = load_from_config(self.config)   # exits 2 with one line
            if threading.active_count() > threads and self.identity is not None \
                    and self.identity.changes_anything:
                log.warning("--preload: the app started threads during its import; they stay "
                            "in the master, which keeps uid %d (only the forking thread "
                            "reaches the workers)", os.getuid())
        self._install_signals(SIGNALS)
        if self.listeners is None:
            try:
                self.listeners = open_config_listeners(self.config)
            except BindError as exc:
                sys.stderr.write(f"bridge {command}: {exc}\n")
                return 2
        try:
            try:
                self._write_pidfile()
                self._give_sockets()
                self.prepared = self._prepare()
            except (OSError, LookupError, ValueError) as exc:
                sys.stderr.write(f"bridge {command}: {exc}\n")
                return 2
            self.board = Scoreboard(self._slots_needed(), self.threads)
            self.board.write_header(master_pid=self.pid, generation=self.generation,
                                    target=self.target, started=time.time())
            set_proc_title(f"bridge master: {self.app_name} [{command}] "
                           f"{describe_listeners(self.listeners, self.scheme)}")
            log_socket_access(self.listeners, self.config)    # after the sockets got their owner
            pool = (f"{self.workers_min}-{self.workers_max} workers" if self.dynamic
                    else f"{self.target} worker{'s' if self.target != 1 else ''}")
            log.info("Listening on %s (master pid %d, %s x %d thread%s%s)",
                     describe_listeners(self.listeners, self.scheme), self.pid, pool, self.threads,
                     "" if self.threads == 1 else "s", ", preloaded" if self.app else "")
            if self.identity is not None and self.identity.changes_anything:
                log.info("workers run as uid %s, gid %s (the master keeps uid %d)",
                         self.identity.uid, self.identity.gid, os.getuid())
            self._warn_if_others_can_write(getattr(self.config, "config", None))
            self._loop()
            return self.exit_code
        finally:
            self._cleanup()

    def _slots_needed(self) -> int:
        return max(2 * self.workers_max + 8, 16)

    def _cleanup(self) -> None:
        for listener in self.listeners or ():
            listener.close()
        if self.pidfile is not None:
            self.pidfile.release()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)

    def _write_pidfile(self) -> None:
        path = getattr(self.config, "pid", None)
        if not path:
            return
        pidfile = PidFile(path)
        pidfile.acquire(self.pid)       # PidFileError (an OSError): one line, exit 2
        self.pidfile = pidfile

    def _give_sockets(self) -> None:
        """A unix socket made by --bind belongs to --user/--group (PHP-FPM's listen.owner)."""
        ident = self.identity
        if ident is None or not ident.changes_anything:
            return
        for listener in self.listeners:
            if listener.kind == "unix" and listener.owned and listener.path:
                set_socket_file(listener.path, uid=-1 if ident.uid is None else ident.uid,
                                gid=-1 if ident.gid is None else ident.gid)

    def _prepare(self):
        """What the workers need opened by the master, before they switch users.

        A protocol's factory builder may have a ``prepare(config)``: it opens the
        TLS key and the access log here, once, as the starting user; the workers
        get them through ``fork`` (bridge.http.prepared says why).
        """
        prepare = getattr(self.factory_builder, "prepare", None)
        return prepare(self.config) if prepare is not None else None

    def _worker_builder(self) -> Callable:
        if self.prepared is None:
            return self.factory_builder
        return functools.partial(self.factory_builder, prepared=self.prepared)

    def _install_signals(self, names: tuple) -> None:
        if self.wake_r < 0:
            self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        replaced = {getattr(signal, name): signal.signal(getattr(signal, name), self._on_signal)
                    for name in names}
        # A signal must not interrupt a system call with EINTR in odd places.
        for signum in replaced:
            restart_calls(signum)
        # A master started with these blocked would never see them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, list(replaced))
        # Started by --reload's supervisor, which recorded HUP and USR1
        # while the app was imported (defer_signals): handled now.
        for signum in deferred_to_handle(replaced, self._on_signal):
            self._on_signal(signum, None)

    def _on_signal(self, signum, frame) -> None:
        """Only record and wake the loop: no logging, no locks (gunicorn's rule)."""
        if stopped_by_the_terminal(signum, reads_stdin=False):
            return
        self.sig_queue.append(signum)
        try:
            os.write(self.wake_w, b".")
        except OSError:
            pass

    # -- the loop --------------------------------------------------------------

    def _loop(self) -> None:
        first = True
        while True:
            # Signals queued during the start (a TERM, a HUP) act before any fork.
            if not first:
                self._sleep(0.25)
            first = False
            while self.sig_queue:
                signum = self.sig_queue.pop(0)
                handler = getattr(self, "handle_" + signal.Signals(signum).name[3:].lower(), None)
                if handler is not None:
                    handler()
            self._reap()
            now = time.monotonic()
            if self.stopping:
                self._enforce_kill_deadlines(now)
                if not self.workers:
                    log.info("master %d stopped", self.pid)
                    return
                if now > self.stop_deadline:
                    for w in self.workers.values():
                        self._kill(w, signal.SIGKILL)
                continue
            self._watch(now)
            self._manage(now)

    def _sleep(self, seconds: float) -> None:
        if self.sig_queue:
            return
        try:
            ready, _, _ = select.select([self.wake_r], [], [], seconds)
        except InterruptedError:
            return
        if ready:
            try:
                while os.read(self.wake_r, 256):
                    pass
            except BlockingIOError:
                pass

    # -- signals ---------------------------------------------------------------

    def handle_term(self) -> None:
        self._stop(graceful=True, reason="SIGTERM")

    def handle_int(self) -> None:
        if self.stopping:
            self._stop(graceful=False, reason="second SIGINT")
        else:
            self._stop(graceful=True, reason="SIGINT")

    def handle_quit(self) -> None:
        self._stop(graceful=False, reason="SIGQUIT")

    def handle_chld(self) -> None:
        pass        # reaped right after the signals

    def handle_usr1(self) -> None:
        # First here, as root: a file logrotate created is handed to --user,
        # so that each worker can then reopen it (bridge.server.logs).
        if reopen_logs():
            log.info("SIGUSR1: log files reopened; asking the workers to do the same")
        else:
            log.warning("SIGUSR1: asking the workers to reopen their logs anyway")
        for w in self.workers.values():
            self._kill(w, signal.SIGUSR1)

    def handle_ttin(self) -> None:
        self.target += 1
        if self.target > self.workers_max:
            self.workers_max = self.target
        if self.board.slots < 2 * self.workers_max:
            self.target -= 1
            self.workers_max = max(self.target, self.workers_min)
            log.warning("SIGTTIN: the scoreboard has no room for more workers (%d)", self.target)
            return
        log.info("SIGTTIN: %d worker%s", self.target, "s" if self.target != 1 else "")
        self.board.write_header(target=self.target)

    def handle_ttou(self) -> None:
        if self.target <= 1:
            log.info("SIGTTOU: already down to one worker")
            return
        self.target -= 1
        self.workers_min = min(self.workers_min, self.target)
        log.info("SIGTTOU: %d worker%s", self.target, "s" if self.target != 1 else "")
        self.board.write_header(target=self.target)

    def handle_hup(self) -> None:
        if self.reloading_from is not None:
            log.info("SIGHUP: a reload is already in progress; starting over with newer workers")
            self._retire_generation(self.generation, reason="superseded reload")
        else:
            self.reloading_from = self.generation
        self.generation += 1
        self._reread_settings()
        self._reprepare()
        header = self.board.header()
        self.board.write_header(generation=self.generation, reloads=header["reloads"] + 1)
        note = " (with --preload they run the code loaded at start)" if self.app else ""
        log.info("SIGHUP: reloading: starting %d new worker%s%s, then stopping the old ones",
                 self.target, "s" if self.target != 1 else "", note)
        sd_notify("RELOADING=1")
        self.ready_notified = False
        self.spawn_after = 0.0
        self.quick_deaths = 0

    def _warn_if_others_can_write(self, path: Optional[str]) -> None:
        """A config file that another user can change is a way into the server: say so (at start, at HUP)."""
        if not path:
            return
        from bridge.configfile import others_can_write
        why = others_can_write(path)
        if why:
            log.warning("the config file %s can be changed by other users (%s): they choose what this "
                        "server runs and as whom; make it and its directory writable by root only",
                        path, why)

    def _reread_settings(self) -> None:
        """HUP with ``--config``: the file again; the new workers get what may change.

        The listening sockets, the pid file and the users were set up once
        for the whole server: a change to them (a setting declared
        ``restart=True``, or with ``--preload`` one loaded with the app) is
        logged as needing a restart, one line each, and the value in force
        is kept.  A file that has become unreadable or wrong changes
        nothing: the server keeps serving with the settings in force.
        """
        old = self.config
        path = getattr(old, "config", None)
        if not path or not hasattr(old, "reread"):
            return
        self._warn_if_others_can_write(path)
        try:
            new = old.reread()
            check = getattr(self.factory_builder, "check_config", None)
            problem = check(new) if check is not None else None
            if problem:
                raise ConfigError(f"{path}: {problem}")
        except ConfigError as exc:
            log.error("SIGHUP: %s; the settings in force are kept", exc)
            return
        except Exception as exc:           # whatever it is, a HUP must not stop the server
            log.error("SIGHUP: %s: %s; the settings in force are kept", path, exc)
            log.debug("reading the config file again", exc_info=True)
            return
        preloaded = self.app is not None
        declarations = load_declarations()
        applied = []
        for name in old.changed(new):
            s = declarations[name]
            if s.restart is True or (s.restart == "preload" and preloaded):
                why = " (loaded with the app by --preload)" if s.restart == "preload" else ""
                log.warning("SIGHUP: %s changed in %s but needs a restart to take effect%s; "
                            "still %r", name, path, why, getattr(old, name, None))
            else:
                applied.append(name)
        for name, s in declarations.items():
            if hasattr(old, name) and (s.restart is True or (s.restart == "preload" and preloaded)):
                setattr(new, name, getattr(old, name))     # in force: kept, adjusted as at start
        if not applied:
            log.info("SIGHUP: %s read again: no change the new workers can take", path)
            return
        log.info("SIGHUP: %s read again: %s", path,
                 ", ".join(f"{name} = {getattr(new, name)!r}" for name in applied))
        if self.config_before is None:         # a HUP during a reload: the first one's stays
            self.config_before = old
        self.config = new
        if {"error_log", "log_level"} & set(applied):
            self._take_logging(old, new)
        if {"threads", "workers", "workers_min", "workers_max"} & set(applied):
            self._take_pool_size(new)
            if self.threads != self.board.threads or self._slots_needed() > self.board.slots:
                self._new_board()
            self.board.write_header(target=self.target)
        self._take_limits(new)

    def _restore_settings(self) -> None:
        """A reload whose workers could not start: the old workers' settings are the ones in force again."""
        old, new, self.config_before = self.config_before, self.config, None
        if old is None or old is new:
            return
        log.error("reload failed: the settings before the SIGHUP are in force again")
        self.config = old
        if (old.error_log, old.log_level) != (new.error_log, new.log_level):
            self._take_logging(old, old)
        self._take_pool_size(old)
        self._take_limits(old)
        if self.threads != self.board.threads or self._slots_needed() > self.board.slots:
            self._new_board()
        self.board.write_header(target=self.target)

    def _take_logging(self, old, new) -> None:
        """A new ``--error-log``/``--log-level``; the old log stays if the new file cannot be opened."""
        try:
            setup_logging(new)
        except OSError as exc:
            setup_logging(old)
            new.error_log, new.log_level = old.error_log, old.log_level
            log.error("SIGHUP: cannot open --error-log %r: %s; still logging here",
                      getattr(new, "error_log", None), exc.strerror or exc)

    def _new_board(self) -> None:
        """A scoreboard for a new thread count: the old workers keep theirs until they are gone."""
        board = Scoreboard(self._slots_needed(), self.threads)
        board.carry_over(self.board)
        previous, self.board = self.board, board
        self._close_board_if_unused(previous)

    def _release(self, w: WorkerProc) -> None:
        """Free a gone worker's slot; its counts go to the pool's totals (the current board's)."""
        w.board.release(w.slot, into=self.board)
        self._close_board_if_unused(w.board)

    def _close_board_if_unused(self, board: Scoreboard) -> None:
        """An old board's nudge descriptors (one per slot) are closed with its
        last worker: kept, every later HUP that changes --threads added as many
        to the master and to every worker forked after it."""
        if board is not self.board and not any(w.board is board for w in self.workers.values()):
            board.close()

    def _reprepare(self) -> None:
        """HUP: reopen the workers' files (a renewed certificate), or keep the old ones."""
        if self.prepared is None:
            return
        try:
            prepared = self._prepare()
        except (OSError, ValueError) as exc:
            log.error("SIGHUP: %s; the new workers keep the files opened before", exc)
            return
        self.prepared.close()
        self.prepared = prepared

    def _stop(self, *, graceful: bool, reason: str) -> None:
        if self.stopping == "now" or (self.stopping and graceful):
            return
        sd_notify("STOPPING=1")
        now = time.monotonic()
        if graceful:
            log.info("%s: stopping gracefully (up to %gs for requests in flight)", reason,
                     self.graceful_timeout)
            self.stopping = "graceful"
            self.stop_deadline = now + self.graceful_timeout + 5.0
            for w in self.workers.values():
                self._kill(w, signal.SIGTERM)
        else:
            log.info("%s: stopping now", reason)
            self.stopping = "now"
            self.stop_deadline = now + 2.0
            for w in self.workers.values():
                self._kill(w, signal.SIGQUIT)

    # -- workers -----------------------------------------------------------------

    def _spawn(self) -> None:
        slot = self.board.claim(0, self.generation)
        if slot is None:
            log.error("no free scoreboard slot for a new worker")
            self.spawn_after = time.monotonic() + 1.0
            return
        max_requests = self.max_requests
        if max_requests and self.jitter:
            max_requests += random.randint(0, self.jitter)
        for handler in logging.getLogger("bridge").handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        # Signals stay blocked across fork so that the child never runs the
        # master's handlers; it installs its own, then unblocks.
        blocked = {getattr(signal, name) for name in SIGNALS}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self.board.release(slot)
            log.error("cannot fork a worker: %s", exc)
            self.spawn_after = time.monotonic() + 1.0
            return
        if pid == 0:
            self._child(slot, self.generation, max_requests, old_mask)     # never returns
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.board.set_pid(slot, pid)
        self.workers[pid] = WorkerProc(pid, slot, self.generation, self.board)
        log.debug("started worker %d (generation %d)", pid, self.generation)

    def _close_older_boards(self) -> None:
        """In a new worker: the boards that older workers still use (after a
        HUP that changed --threads) are not its own, nor are their nudge
        descriptors, which it would otherwise hold for life."""
        for board in {id(w.board): w.board for w in self.workers.values()}.values():
            if board is not self.board:
                board.close()

    def _child(self, slot: int, generation: int, max_requests: int, old_mask) -> None:
        code = 1
        try:
            become_session_leader()     # what it starts can be found when it dies
            _worker_signals(old_mask)
            os.close(self.wake_r)
            os.close(self.wake_w)
            if self.pidfile is not None:
                self.pidfile.close()     # only the master holds the pid file's lock
            self._close_older_boards()
            self.board.set_pid(slot, os.getpid())
            set_proc_title(f"bridge worker: {self.app_name} [{getattr(self.config, 'command', '')}]")
            try:
                switch_to(self.identity)
            except OSError as exc:
                log.error("worker %d cannot switch to --user/--group: %s", os.getpid(), exc)
                code = APP_LOAD_FAILED
                return
            app = self.app
            if app is None:
                try:
                    app = load_from_config(self.config)
                except SystemExit:
                    code = APP_LOAD_FAILED      # load_from_config said why on stderr
                    return
            booted: list = []
            try:
                worker = run_worker(self.listeners, app, self._worker_builder(), self.config,
                                    board=self.board, slot_index=slot, max_requests=max_requests,
                                    master_pid=self.pid, on_ready=lambda: booted.append(True))
            except Exception as exc:
                if booted:
                    raise
                # Before serving: every worker would fail the same way, so say it
                # once and let the master stop with status 2 (no crash loop).
                log.error("worker %d cannot start: %s", os.getpid(), exc)
                log.debug("worker start failure", exc_info=True)
                code = APP_LOAD_FAILED
                return
            log.debug("worker %d exiting after %s", os.getpid(), counted(worker.state.requests, "request"))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            try:
                for handler in logging.getLogger("bridge").handlers:
                    handler.flush()
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _kill(self, w: WorkerProc, signum: int) -> None:
        try:
            os.kill(w.pid, signum)
        except ProcessLookupError:
            pass
        if signum in (signal.SIGTERM, signal.SIGQUIT) and w.kill_at is None:
            grace = self.graceful_timeout + 5.0 if signum == signal.SIGTERM else 2.0
            w.kill_at = time.monotonic() + grace

    def _retire(self, w: WorkerProc, reason: str) -> None:
        if w.retiring:
            return
        w.retiring = True
        log.info("stopping worker %d gracefully (%s)", w.pid, reason)
        self._kill(w, signal.SIGTERM)

    def _retire_generation(self, generation: int, reason: str) -> None:
        for w in list(self.workers.values()):
            if w.generation == generation:
                self._retire(w, reason)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            self._release(w)
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                self._kill_leftovers(w)
            self._worker_exited(w, code)

    def _kill_leftovers(self, w: WorkerProc) -> None:
        """A killed or crashed worker's CGI scripts and subprocesses die with it.

        Else a hung script (and its ``sleep 300 &``) outlives the worker
        that ``--timeout`` killed, reparented to init.  A clean exit has
        finished its requests: what they left detached is theirs."""
        count = kill_session(w.pid)
        if count:
            log.warning("worker %d left %d process%s behind (CGI scripts, subprocesses): killed",
                        w.pid, count, "" if count == 1 else "es")

    def _worker_exited(self, w: WorkerProc, code: int) -> None:
        now = time.monotonic()
        lived = now - w.started
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        if code == APP_LOAD_FAILED and not w.booted:
            if w.generation not in self.booted_generations:
                self._app_load_failed(w)
                return
            log.error("worker %d could not load the app (see above)", w.pid)
        elif w.retiring or self.stopping or w.killed:
            log.info("worker %d stopped (%s)", w.pid, how if code else "exit 0")
            return
        elif code == 0:
            log.info("worker %d exited (restarting it: --max-requests reached or its master "
                     "changed)", w.pid)
            return
        else:
            log.warning("worker %d %s after %.1fs; starting another", w.pid, how, lived)
        if lived < QUICK_DEATH and w.generation == self.generation:
            self.quick_deaths += 1
            if self.quick_deaths >= 2:
                delay = min(MAX_BACKOFF, 0.25 * 2 ** (self.quick_deaths - 2))
                self.spawn_after = now + delay
                log.warning("crash loop: %d workers died within %gs of starting; waiting %.1fs "
                            "before starting the next one", self.quick_deaths, QUICK_DEATH, delay)

    def _app_load_failed(self, w: WorkerProc) -> None:
        if self.reloading_from is not None and w.generation == self.generation:
            log.error("reload failed: the new workers cannot load the app (see the error above); "
                      "the old workers keep serving")
            self._retire_generation(self.generation, reason="failed reload")
            self.generation = self.reloading_from
            self.reloading_from = None
            self._restore_settings()
            self.board.write_header(generation=self.generation)
            sd_notify("READY=1")
            self.ready_notified = True
            return
        if w.generation != self.generation:
            return
        log.error("the application cannot be loaded (see the error above): stopping")
        self.exit_code = 2
        self._stop(graceful=False, reason="app load failure")

    def _enforce_kill_deadlines(self, now: float) -> None:
        for w in self.workers.values():
            if w.kill_at is not None and now > w.kill_at and not w.killed:
                log.warning("worker %d did not stop in time: killing it", w.pid)
                w.killed = True
                self._kill(w, signal.SIGKILL)

    def _watch(self, now: float) -> None:
        """Boot detection, --timeout, reload completion, pool statistics."""
        board = self.board
        busy_total = 0
        threads_total = 0
        for w in list(self.workers.values()):
            info = w.board.read_slot(w.slot, now)
            state = info["state"]
            if state == READY and not w.booted:
                w.booted = True
                self.booted_generations.add(w.generation)
            elif state == STOPPING and not w.stopping and not w.retiring:
                w.stopping = True          # draining on its own (--max-requests)
            if w.booted and w.generation == self.generation and now - w.started > QUICK_DEATH:
                self.quick_deaths = 0
            if state == READY:
                busy_total += len(info["running"])
                threads_total += w.board.threads
            if self.timeout and not w.killed and w.booted:
                for r in info["running"]:
                    if r["duration"] > self.timeout:
                        log.error("worker %d killed: request %r has run %.1fs (--timeout %g); "
                                  "its other requests in flight are lost too",
                                  w.pid, r["request"], r["duration"], self.timeout)
                        w.killed = True
                        self._kill(w, signal.SIGKILL)
                        break
                else:
                    silent = now - info["heartbeat"]
                    if state == READY and silent > max(self.timeout, 2.0):
                        log.error("worker %d killed: no heartbeat for %.1fs (--timeout %g)",
                                  w.pid, silent, self.timeout)
                        w.killed = True
                        self._kill(w, signal.SIGKILL)
        self._enforce_kill_deadlines(now)
        board.note_pool_full(threads_total > 0 and busy_total >= threads_total
                             and self.target >= self.workers_max)
        header = board.header()
        if busy_total > header["max_active"]:
            board.write_header(max_active=busy_total)
        current = [w for w in self.workers.values()
                   if w.generation == self.generation and not w.retiring and not w.stopping]
        booted = sum(1 for w in current if w.booted)
        if booted >= self.target or (booted and booted == len(current) and len(current) >= self.target):
            if self.reloading_from is not None:
                log.info("reload complete: %d new worker%s serving; stopping the old ones",
                         booted, "s" if booted != 1 else "")
                for w in list(self.workers.values()):
                    if w.generation != self.generation:
                        self._retire(w, "reloaded")
                self.reloading_from = None
                self.config_before = None
            if not self.ready_notified:
                sd_notify(f"READY=1\nMAINPID={self.pid}\nSTATUS=serving with {booted} workers")
                self.ready_notified = True
        if self.dynamic:
            self._size_pool(now, current, busy_total, threads_total)

    def _size_pool(self, now: float, current: list, busy: int, capacity: int) -> None:
        """PHP-FPM's dynamic pool: grow while every thread is busy, shrink when idle."""
        if capacity and busy >= capacity and self.target < self.workers_max and now >= self.grow_after:
            self.target += 1
            self.grow_after = now + 1.0
            self.idle_since = None
            log.info("every thread busy (%d): growing the pool to %s", busy, counted(self.target, "worker"))
            self.board.write_header(target=self.target)
            return
        if capacity - busy >= self.threads and self.target > self.workers_min:
            if self.idle_since is None:
                self.idle_since = now
            elif now - self.idle_since >= self.idle_period:
                self.target -= 1
                self.idle_since = now
                log.info("a worker's worth of threads idle for %gs: shrinking the pool to %s",
                         self.idle_period, counted(self.target, "worker"))
                self.board.write_header(target=self.target)
        else:
            self.idle_since = None

    def _manage(self, now: float) -> None:
        current = [w for w in self.workers.values()
                   if w.generation == self.generation and not w.retiring and not w.stopping]
        missing = self.target - len(current)
        if missing > 0:
            if now < self.spawn_after:
                return
            # A crash loop: one at a time, after the pause; otherwise all at once.
            for _ in range(1 if self.quick_deaths >= 2 else missing):
                self._spawn()
        elif missing < 0:
            # Retire the idlest (fewest requests in flight), newest first.
            def busy(w):
                return len(w.board.read_slot(w.slot, now)["running"])
            for w in sorted(current, key=lambda w: (busy(w), -w.started))[:-missing]:
                self._retire(w, "pool shrinking")
