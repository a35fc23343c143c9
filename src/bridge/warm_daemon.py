"""The daemon behind a warm cgi-bin script (:mod:`bridge.warm`): ``bridge fcgi`` that minds itself.

Started by the first request that finds nobody listening, detached, as
``python -m bridge.warm_daemon --app APP --socket PATH ...`` (everything on
the command line: suexec strips the environment).  It loads the app once,
binds the private unix socket, says "ready" on the pipe the starter waits
on, and serves FastCGI through the ordinary server (one process, a few
threads), with three additions for a CGI host where nobody manages daemons:

* only this uid may talk to it (SO_PEERCRED on every connection), on top of
  the 0700 directory;
* it exits after ``--idle`` seconds without a connection;
* it exits when a watched file changes: the cgi-bin script and every
  module the app has imported (so deploying stays "edit the file"; the
  next request starts a new daemon with the new code).

Leaving is race-free: under the starters' lock it unlinks its socket (only
if the path is still its own socket: a new daemon may have replaced it), so
no new request can reach it, then serves for ``DRAIN`` seconds more what
had already connected, then stops gracefully (SIGTERM to itself).
"""
from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time

from bridge.config import Config
from bridge.fastcgi.server import FastCGIServer
from bridge.http.reload import module_files
from bridge.loader import AppLoadError, load_app
from bridge.server import serve
from bridge.server.listeners import Listener
from bridge.server.process import defer_signals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

log = logging.getLogger("bridge.warm")

#: Seconds between checks of idleness and of the watched files.
POLL = 1.0
#: Seconds a daemon keeps serving connections made before it unlinked its socket.
DRAIN = 1.0
#: Seconds to wait for the starters' lock before leaving anyway.
LOCK_TIMEOUT = 10.0


def parse_args(argv: "Optional[list]" = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bridge.warm_daemon",
                                description="the FastCGI daemon of a warm cgi-bin script (started by bridge.warm)")
    p.add_argument("--app", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--lock", required=True)
    p.add_argument("--watch", action="append", default=[])
    p.add_argument("--ready-fd", type=int)
    p.add_argument("--idle", type=float, default=300.0)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--pythonpath", action="append", default=[])
    p.add_argument("--chdir")
    p.add_argument("--script-name")
    return p.parse_args(argv)


class Activity:
    """Open connections and when the last one closed: what "idle" means."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.since = time.monotonic()

    def enter(self) -> None:
        with self.lock:
            self.open += 1

    def leave(self) -> None:
        with self.lock:
            self.open -= 1
            self.since = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return 0.0 if self.open else time.monotonic() - self.since


class Watched:
    """Modification times of the files whose change ends the daemon.

    The app's modules are listed again at each check: a module imported
    lazily (Django imports most of itself on the first request) is watched
    from then on.
    """

    def __init__(self, extra: "Iterable[str]") -> None:
        self.extra = [os.path.abspath(p) for p in extra]
        self.mtimes: dict = {}
        self.refresh()

    def refresh(self) -> None:
        for path in (*self.extra, *module_files()):
            if path not in self.mtimes:
                self.mtimes[path] = _mtime(path)

    def changed(self) -> "Optional[str]":
        self.refresh()
        for path, mtime in self.mtimes.items():
            if _mtime(path) != mtime:
                return path
        return None


def _mtime(path: str) -> "Optional[int]":
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Refused:
    """A connection from another uid: closed at once (the Worker's handler interface)."""
    idle_deadline = None

    def on_readable(self) -> bool:
        return False

    def close(self) -> None:
        pass


class Counted:
    """A FastCGI connection handler whose close() is counted in :class:`Activity`."""

    __slots__ = ("handler", "activity", "closed")

    def __init__(self, handler: "Any", activity: Activity) -> None:
        self.handler = handler
        self.activity = activity
        self.closed = False

    @property
    def idle_deadline(self) -> "Optional[float]":
        return self.handler.idle_deadline

    def on_readable(self) -> bool:
        return self.handler.on_readable()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.handler.close()
            finally:
                self.activity.leave()


def peer_uid(sock: socket.socket) -> int:
    """The uid of the connecting process (``struct ucred``: pid, uid, gid)."""
    cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder)


def guarded_factory_builder(activity: Activity, uid: int) -> "Callable":
    """The FastCGI server's factory, refusing other uids and counting connections."""
    def build(app: "Callable", config: "Any") -> "Callable":
        handler = FastCGIServer.from_config(app, config).handler

        def factory(sock: socket.socket, addr: "Any", listener: "Any", state: "Any") -> "Any":
            try:
                peer = peer_uid(sock)
            except OSError:
                peer = -1
            if peer != uid:
                log.warning("refused a connection from uid %d: this daemon serves uid %d only", peer, uid)
                return Refused()
            activity.enter()
            try:
                return Counted(handler(sock, addr, listener, state), activity)
            except BaseException:
                activity.leave()
                raise
        return factory
    return build


class Keeper:
    """The thread that decides when the daemon leaves: idle, a file changed, its socket gone."""

    def __init__(self, path: str, lock: str, identity: tuple, idle: float, watched: Watched,
                 activity: Activity) -> None:
        self.path = path
        self.lock = lock
        self.identity = identity      # see file_identity()
        self.idle = idle
        self.watched = watched
        self.activity = activity
        self.unlinked = False

    def reason(self) -> "Optional[str]":
        """Why to leave now, or None."""
        try:
            if file_identity(self.path) != self.identity:
                return f"{self.path} is another daemon's now"
        except FileNotFoundError:
            return f"{self.path} was removed"
        except OSError:
            pass
        changed = self.watched.changed()
        if changed:
            return f"{changed} changed"
        idle = self.activity.idle_for()
        if self.idle and idle >= self.idle:
            return f"idle for {idle:.0f} s"
        return None

    def run(self) -> None:
        while True:
            time.sleep(POLL)
            reason = self.reason()
            if reason:
                log.info("leaving: %s", reason)
                self.unlink()
                time.sleep(DRAIN)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    def start(self) -> None:
        threading.Thread(target=self.run, name="warm-keeper", daemon=True).start()

    def unlink(self) -> None:
        """Remove the socket path if it is still this daemon's, under the starters' lock."""
        if self.unlinked:
            return
        self.unlinked = True
        fd = None
        try:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        log.warning("could not take %s; leaving %s in place", self.lock, self.path)
                        return
                    time.sleep(0.05)
            if file_identity(self.path) == self.identity:
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            if fd is not None:
                os.close(fd)


def file_identity(path: str) -> tuple:
    """Which file ``path`` is: device, inode and change time (an inode number alone is reused).

    A daemon must never take another daemon's socket for its own: after it
    left, the path may hold a new daemon's socket, with the same inode
    number on some file systems.
    """
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def bind(path: str) -> socket.socket:
    """The listening socket at ``path`` (the starter removed any stale one under the lock)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _report(fd: "Optional[int]", message: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, message.encode("utf-8", "replace") + b"\n")
        os.close(fd)
    except OSError:
        pass


def main(argv: "Optional[list]" = None) -> int:
    args = parse_args(argv)
    # stdout is the log file: a stray print() of the app lands there, a line
    # at a time (block buffering would hold it until the daemon exits).
    stdout: Any = sys.stdout     # a TextIOWrapper: the file the daemon was started with
    stdout.reconfigure(line_buffering=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(message)s")
    log.info("starting for %s (socket %s)", args.app, args.socket)
    # HUP/USR1/TTIN/TTOU wait for the server's handlers (their default ends the daemon).
    defer_signals()
    try:
        app = load_app(args.app, args.pythonpath, args.chdir)
    except AppLoadError as exc:
        log.error("the app could not be loaded: %s", exc)
        _report(args.ready_fd, f"error: the app could not be loaded: {str(exc).splitlines()[0]}")
        return 1
    try:
        sock = bind(args.socket)
    except OSError as exc:
        log.error("cannot listen on %s: %s", args.socket, exc)
        _report(args.ready_fd, f"error: cannot listen on {args.socket}: {exc.strerror}")
        return 1
    uid = os.getuid()
    activity = Activity()
    keeper = Keeper(args.socket, args.lock, file_identity(args.socket), args.idle,
                    Watched(args.watch), activity)
    config = Config.build("fcgi", {"threads": args.threads, "script_name": args.script_name,
                                   "error_log": "-"})
    # One process whatever BRIDGE_* the script's environment has: idleness is
    # counted here, and a master would count nothing.
    config.workers, config.workers_max, config.max_requests, config.preload = 1, None, 0, False
    config.timeout, config.pid, config.user, config.group = 0.0, None, None, None
    listener = Listener(sock, "unix", f"unix:{args.socket}", path=args.socket)
    keeper.start()
    _report(args.ready_fd, f"ready {os.getpid()}")
    try:
        return serve(config, guarded_factory_builder(activity, uid), app=app, listeners=[listener])
    finally:
        keeper.unlink()
        log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
