"""Logging for the servers: stdlib ``logging`` to ``--error-log``, reopened on SIGUSR1.

The error log is the ``bridge`` logger (``bridge.server``, ``bridge.fastcgi``,
``bridge.http`` are its children).  ``-`` means stderr.  A file is opened in
append mode and reopened by :func:`reopen_logs` after logrotate has moved it;
other logs (the HTTP access log) register their own reopen with
:func:`on_reopen` so one SIGUSR1 reopens them all.

With ``--user`` the master stays root and the workers do not (see
:mod:`bridge.server.privileges`).  After logrotate has made a new root-owned
file, a worker alone could not open it; so the master reopens first, as
root, and hands each new file to the workers' user (:func:`open_log`,
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
_guarded: list = [False]     # root runs bridge with --user/--group: open logs warily


def set_workers_user(uid: Optional[int]) -> None:
    """The master: the uid the workers run as, to whom reopened log files are handed."""
    _owner[0] = uid
    if uid is not None and os.geteuid() == 0:
        _guarded[0] = True


def open_log(path: str) -> int:
    """An ``O_APPEND`` descriptor on the log file ``path``, created 0644 if needed.

    When root runs bridge with ``--user``, the log directory may be writable
    by that user, and a worker that was broken into could plant a link there
    for root to append to (or, worse, to hand over): the CVE-2016-1247 of
    Debian's nginx.  So then the last component must not be a link
    (``O_NOFOLLOW``; use ``-`` rather than ``/dev/stdout``), no FIFO may
    block the master (``O_NONBLOCK``), and the result must be a regular file
    with a single name, before it is given to the workers' user through the
    descriptor (``fchown``/``fchmod``, u+rw), so that each worker can reopen
    it after logrotate has made it root's.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    guarded = _guarded[0]
    if guarded:
        flags |= os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, 0o644)
    try:
        if guarded:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise OSError(f"{path} is not a regular file with a single name; not opened as "
                              f"root with --user")
            os.set_blocking(fd, True)
            uid = _owner[0]
            if uid is not None and os.geteuid() == 0:
                if st.st_uid != uid:
                    os.fchown(fd, uid, -1)
                if st.st_mode & 0o600 != 0o600:
                    os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


class ReopenableFileHandler(logging.StreamHandler):
    """Appends to a file; :meth:`reopen` starts a new file at the same path."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        super().__init__(self._open())

    def _open(self):
        return open(open_log(self.path), "a", encoding="utf-8", errors="backslashreplace",
                    buffering=1)

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
    """Configure the ``bridge`` logger from ``config.error_log`` / ``config.log_level``.

    Raises ``OSError`` whose message names ``--error-log`` when the file cannot be opened.
    """
    logger = logging.getLogger("bridge")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    target = getattr(config, "error_log", "-") or "-"
    if os.geteuid() == 0 and (getattr(config, "user", None) or getattr(config, "group", None)):
        _guarded[0] = True       # from the first open: see open_log
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            handler = ReopenableFileHandler(target)
        except OSError as exc:      # one line for the user, not a traceback (issue 17)
            raise OSError(f"--error-log {target}: {exc.strerror or exc}") from None
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
