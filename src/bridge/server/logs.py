"""Logging for the servers: stdlib ``logging`` to ``--error-log``, reopened on SIGUSR1.

The error log is the ``bridge`` logger (``bridge.server``, ``bridge.fastcgi``,
``bridge.http`` are its children).  ``-`` means stderr.  A file is opened in
append mode and reopened by :func:`reopen_logs` after logrotate has moved it;
other logs (the HTTP access log) register their own reopen with
:func:`on_reopen` so one SIGUSR1 reopens them all.

With ``--user`` the master stays root and the workers do not (see
:mod:`bridge.server.privileges`).  After logrotate has made a new root-owned
file, a worker alone could not open it; so the master reopens first, as
root, and hands each new file to the workers' user (:func:`hand_to_workers`,
what nginx does to its logs), then signals the workers, which reopen the
path they now own.  A reopen that fails anyway (a directory gone, a disk
full) is logged to the file still open and the process carries on: losing a
rotation must never stop the server (issue 21, item 5).
"""
from __future__ import annotations

import logging
import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

_reopeners: list = []
_owner: list = [None]        # the workers' uid, set by the master when it keeps root


def set_workers_user(uid: Optional[int]) -> None:
    """The master: the uid the workers run as, to whom reopened log files are handed."""
    _owner[0] = uid


def hand_to_workers(fd: int) -> None:
    """Give a log file the master just (re)opened to the workers' user, readable-writable by it.

    Through the descriptor (``fchown``/``fchmod``), so a link swapped in at the
    path cannot redirect it.  Nothing to do in a worker or without ``--user``.
    """
    uid = _owner[0]
    if uid is None or os.geteuid() != 0:
        return
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return
    if st.st_uid != uid:
        os.fchown(fd, uid, -1)
    if st.st_mode & 0o600 != 0o600:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o600)


class ReopenableFileHandler(logging.StreamHandler):
    """Appends to a file; :meth:`reopen` starts a new file at the same path."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        super().__init__(self._open())

    def _open(self):
        stream = open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
        try:
            hand_to_workers(stream.fileno())
        except OSError:
            stream.close()
            raise
        return stream

    def reopen(self) -> None:
        new = self._open()
        self.acquire()
        try:
            old, self.stream = self.stream, new
        finally:
            self.release()
        old.close()

    def close(self) -> None:
        self.acquire()
        try:
            try:
                self.stream.close()
            finally:
                super().close()
        finally:
            self.release()


def setup_logging(config) -> logging.Logger:
    """Configure the ``bridge`` logger from ``config.error_log`` / ``config.log_level``."""
    logger = logging.getLogger("bridge")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    target = getattr(config, "error_log", "-") or "-"
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        handler = ReopenableFileHandler(target)
    handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, str(getattr(config, "log_level", "info")).upper(), logging.INFO))
    logger.propagate = False
    return logger


def on_reopen(fn: Callable[[], None]) -> None:
    """Have ``fn`` called by :func:`reopen_logs` (e.g. the access log's reopen)."""
    if fn not in _reopeners:
        _reopeners.append(fn)


def forget_reopen(fn: Callable[[], None]) -> None:
    """Undo :func:`on_reopen` (the log was closed)."""
    if fn in _reopeners:
        _reopeners.remove(fn)


def reopen_logs() -> bool:
    """Reopen every log file (SIGUSR1); False if one failed (it says why, in the log still open).

    Call from the loop, never inside a signal handler.  Never raises: the
    old file stays in use, which is better than a dead server.
    """
    logger = logging.getLogger("bridge")
    ok = True
    for reopen in [getattr(h, "reopen", None) for h in logger.handlers] + list(_reopeners):
        if reopen is None:
            continue
        try:
            reopen()
        except Exception as exc:        # OSError mostly; whatever it is, keep serving
            ok = False
            target = getattr(getattr(reopen, "__self__", None), "path", "a log file")
            logger.error("cannot reopen %s (pid %d): %s; still writing to the file open "
                         "before", target, os.getpid(), exc)
    return ok
