"""Logging for the servers: stdlib ``logging`` to ``--error-log``, reopened on SIGUSR1.

The error log is the ``bridge`` logger (``bridge.server``, ``bridge.fastcgi``,
``bridge.http`` are its children).  ``-`` means stderr.  A file is opened in
append mode and reopened by :func:`reopen_logs` after logrotate has moved it;
other logs (the HTTP access log) register their own reopen with
:func:`on_reopen` so one SIGUSR1 reopens them all.
"""
from __future__ import annotations

import logging
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"

_reopeners: list = []


class ReopenableFileHandler(logging.StreamHandler):
    """Appends to a file; :meth:`reopen` starts a new file at the same path."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        super().__init__(self._open())

    def _open(self):
        return open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1)

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


def reopen_logs() -> None:
    """Reopen every log file (SIGUSR1).  Call from the loop, never inside a signal handler."""
    for handler in logging.getLogger("bridge").handlers:
        reopen = getattr(handler, "reopen", None)
        if reopen is not None:
            reopen()
    for fn in list(_reopeners):
        try:
            fn()
        except Exception:
            logging.getLogger("bridge").exception("reopening a log failed")
