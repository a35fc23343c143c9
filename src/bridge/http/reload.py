"""``--reload``: serve the new code as soon as a file changes, standard library only.

For local development.  A small supervisor process opens the listening
sockets once and forks a child that loads the app and serves; the child
tells the supervisor which files it imported.  The supervisor polls their
modification times (``os.stat``, twice a second: no inotify, no
dependency).  When one changes it forks a *new* child; only once that child
has loaded the app does the old one get SIGTERM (it finishes its requests).
A syntax error or any import failure in the new code is printed, the new
child exits, and the old app keeps serving until the next change.

The sockets stay open in the supervisor the whole time, so a browser never
sees "connection refused" during a reload.

Signals to the supervisor: INT/TERM stop everything gracefully (a second
INT, or QUIT: at once), HUP reloads now, USR1 reopens its log and is passed
on, as are TTIN and TTOU (a master's number of workers).  Handlers only set
flags; the loop acts.  A child whose supervisor is gone (SIGKILL) stops by
itself: it would otherwise serve on, holding the port, with nobody to stop
it.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
import threading
import time
import traceback

from bridge.loader import load_from_config
from bridge.server import serve
from bridge.server.listeners import BindError, open_config_listeners
from bridge.server.logs import reopen_logs, setup_logging
from bridge.server.jobcontrol import stopped_by_the_terminal
from bridge.server.process import defer_signals, take_deferred

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

log = logging.getLogger("bridge.http.reload")

POLL_INTERVAL = 0.5
#: The supervisor's own signals.  They stay blocked across ``fork()``: a new
#: child starts with the supervisor's handlers, which only set a flag in the
#: child's copy of the supervisor, so a SIGTERM reaching it before it put the
#: default actions back would be lost and the child would serve on.
SUPERVISOR_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                      signal.SIGTTIN, signal.SIGTTOU)
#: Passed on to the serving child (and to the one about to take over).
PASSED_ON = (signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU)
#: How long a new child may take to import the app before it counts as failed.
LOAD_TIMEOUT = 60.0


def _stdlib_dirs() -> tuple:
    paths = {sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib")}
    return tuple(os.path.join(p, "") for p in paths if p)


def module_files() -> set:
    """Source files of the imported modules, without the standard library's."""
    skip = _stdlib_dirs()
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or path.startswith(skip):
            continue
        if path.endswith((".pyc", ".pyo")):
            path = path[:-1]
        files.add(os.path.abspath(path))
    return files


def _mtime(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Child:
    """One forked server process and the pipe it reports on."""

    def __init__(self, pid: int, rfd: int) -> None:
        self.pid = pid
        self.rfd = rfd
        self.buffer = b""
        self.ready = False
        self.exited: Optional[int] = None
        self.files: dict = {}     # path -> mtime when the child imported it
        self.started = time.monotonic()

    def poll(self) -> None:
        """Read what the child reported: ``F mtime path`` lines, then ``READY``."""
        while True:
            try:
                data = os.read(self.rfd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                break
            self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line == b"READY":
                self.ready = True
            elif line.startswith(b"F "):
                mtime, _, path = line[2:].partition(b" ")
                self.files[os.fsdecode(path)] = int(mtime) if mtime.isdigit() else None

    def reap(self) -> bool:
        if self.exited is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.exited = os.waitstatus_to_exitcode(status)
                self.poll()
                os.close(self.rfd)
        return self.exited is not None

    def signal(self, signum: int) -> None:
        if self.exited is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


def _child_main(config, factory_builder: Callable, listeners: list, wfd: int, old_mask,
                supervisor: int) -> int:
    """In the forked child: load the app, report files and readiness, serve."""
    for signum in SUPERVISOR_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    # TERM, INT and QUIT now end the child (what was sent since the fork,
    # too) until the server's handlers are in place; HUP and USR1 are
    # recorded for those handlers (USR1's default action would end it).
    take_deferred()
    defer_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    for listener in listeners:
        listener.owned = False        # the supervisor removes a unix socket file, not us
    app = load_from_config(config)   # prints the error and exits 2 when the new code is broken
    report = _Reporter(wfd, supervisor)
    report.send_files()
    try:
        if os.getppid() != supervisor:
            raise BrokenPipeError
        os.write(wfd, b"READY\n")
    except OSError:
        log.warning("the --reload supervisor (pid %d) is gone: not serving", supervisor)
        return 0
    report.start()
    return serve(config, factory_builder, app=app, listeners=listeners)


class _Reporter(threading.Thread):
    """Tells the supervisor about modules the app imports later (lazily),
    and stops the child (gracefully) once the supervisor is gone."""

    def __init__(self, wfd: int, supervisor: int) -> None:
        super().__init__(daemon=True, name="bridge-reload-report")
        self.wfd = wfd
        self.supervisor = supervisor
        self.sent: set = set()
        self.modules = 0

    def send_files(self) -> None:
        self.modules = len(sys.modules)
        files = module_files() - self.sent
        if files:
            self.sent |= files
            # The mtime now, before serving: an edit after a client saw this
            # code is newer than what the supervisor compares against.
            data = b"".join(b"F %d " % (_mtime(f) or 0) + os.fsencode(f) + b"\n" for f in sorted(files))
            try:
                os.write(self.wfd, data)
            except OSError:
                pass

    def run(self) -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != self.supervisor:
                log.warning("the --reload supervisor (pid %d) is gone: stopping", self.supervisor)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if len(sys.modules) != self.modules:
                self.send_files()


class Supervisor:
    def __init__(self, config, factory_builder: Callable, listeners: list) -> None:
        self.config = config
        self.factory_builder = factory_builder
        self.listeners = listeners
        self.extra = [os.path.abspath(p) for p in (getattr(config, "reload_extra_files", None) or [])]
        self.current: Optional[Child] = None
        self.pending: Optional[Child] = None
        self.old: list = []
        self.mtimes: dict = {}
        self.stop_requested = False
        self.stop_now = False
        self.reload_requested = False
        self.pass_on: list = []     # signals to hand to the children, in order

    def spawn(self) -> Child:
        rfd, wfd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = os.getpid()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.close(rfd)
            os.close(wfd)
            raise
        if pid == 0:
            os.close(rfd)
            code = 1
            try:
                code = _child_main(self.config, self.factory_builder, self.listeners, wfd, old_mask,
                                   supervisor)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code or 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(wfd)
        os.set_blocking(rfd, False)
        return Child(pid, rfd)

    def watch(self, files: dict) -> None:
        for path, mtime in files.items():
            if path not in self.mtimes:
                self.mtimes[path] = mtime or None
        for path in self.extra:
            if path not in self.mtimes:
                self.mtimes[path] = _mtime(path)

    def changed(self) -> Optional[str]:
        found = None
        for path, old in self.mtimes.items():
            new = _mtime(path)
            if new != old:
                self.mtimes[path] = new
                found = found or path
        return found

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGQUIT or (signum == signal.SIGINT and self.stop_requested):
            self.stop_requested = self.stop_now = True
        elif signum in (signal.SIGINT, signal.SIGTERM):
            self.stop_requested = True
        elif signum == signal.SIGHUP:
            self.reload_requested = True
        elif stopped_by_the_terminal(signum, reads_stdin=False):
            pass
        elif signum in PASSED_ON and signum not in self.pass_on:
            self.pass_on.append(signum)

    def run(self) -> int:
        for signum in SUPERVISOR_SIGNALS:
            signal.signal(signum, self._on_signal)
        # Started with them blocked, it would never see them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
        for path in self.extra:
            self.mtimes[path] = _mtime(path)
        first = self.spawn()
        # The first load: a broken app stops here with status 2, as without --reload.
        while not first.ready:
            first.poll()
            if first.reap() and not first.ready:
                code = first.exited or 0
                # Killed by a signal: the status a shell shows for one (143 for TERM).
                return code if code > 0 else (128 - code if code else 2)
            if self.stop_requested:
                first.signal(signal.SIGTERM)
                self._wait_all([first])
                return 0
            time.sleep(0.05)
        self.current = first
        self.watch(first.files)
        log.info("Reloading on change: watching %d files", len(self.mtimes))
        while not self.stop_requested:
            time.sleep(POLL_INTERVAL)
            # A stop that came during the sleep wins over a change or a HUP
            # that came with it: no new child is started only to be stopped.
            if not self.stop_requested:
                self.step()
        children = [c for c in (self.current, self.pending, *self.old) if c is not None]
        for child in children:
            child.signal(signal.SIGTERM)
        self._wait_all(children)
        return 0

    def step(self) -> None:
        while self.pass_on:
            signum = self.pass_on.pop(0)
            if signum == signal.SIGUSR1:
                reopen_logs()
            # The pending child too: it may be the one serving by the next step.
            for child in (self.current, self.pending):
                if child is not None:
                    child.signal(signum)
        self.old = [c for c in self.old if not c.reap()]
        current = self.current
        if current is not None:
            current.poll()
            self.watch(current.files)
            if current.reap():
                log.warning("the server process exited (status %s); waiting for a change to restart",
                            current.exited)
                self.current = None
        pending = self.pending
        if pending is not None:
            pending.poll()
            if pending.ready:
                log.info("reloaded: serving the new code (pid %d)", pending.pid)
                if self.current is not None:
                    self.current.signal(signal.SIGTERM)
                    self.old.append(self.current)
                self.current, self.pending = pending, None
                self.watch(pending.files)
            elif pending.reap():
                log.error("reload failed (the error is above); still serving the previous code")
                self.pending = None
            elif time.monotonic() - pending.started > LOAD_TIMEOUT:
                log.error("reload: the new code took over %ds to load; still serving the previous code",
                          LOAD_TIMEOUT)
                pending.signal(signal.SIGKILL)
                self.old.append(pending)
                self.pending = None
            return
        path = self.changed()
        if path is not None or self.reload_requested:
            self.reload_requested = False
            log.info("%s: reloading", f"{path} changed" if path else "SIGHUP")
            self.pending = self.spawn()

    def _wait_all(self, children: list) -> None:
        """Wait for the children to end; a second INT (or QUIT) meanwhile ends them at once.

        Their graceful stop takes up to --graceful-timeout; 5 s more, then SIGKILL."""
        deadline = time.monotonic() + (getattr(self.config, "graceful_timeout", None) or 30.0) + 5.0
        quit_sent = False
        while time.monotonic() < deadline:
            if all(c.reap() for c in children):
                return
            if self.stop_now and not quit_sent:
                quit_sent = True
                for child in children:
                    child.signal(signal.SIGQUIT)
            time.sleep(0.05)
        for child in children:
            child.signal(signal.SIGKILL)
            child.reap()


def run_with_reloader(config, factory_builder: Callable) -> int:
    """``bridge http --reload``: the supervisor around :func:`bridge.server.serve`."""
    try:
        setup_logging(config)
        listeners = open_config_listeners(config)
    except (BindError, OSError) as exc:
        sys.stderr.write(f"bridge http: {exc}\n")
        return 2
    try:
        return Supervisor(config, factory_builder, listeners).run()
    finally:
        for listener in listeners:
            listener.close()
