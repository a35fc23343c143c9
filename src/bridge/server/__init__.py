"""The server machinery ``bridge fcgi`` and ``bridge http`` share.

``serve(config, factory_builder)`` is all a protocol's ``main()`` calls: it
sets up logging, opens the listening sockets (``--bind`` or inherited ones),
loads the app, builds the protocol's connection factory and runs one
:class:`~bridge.server.worker.Worker` -- or, with several worker processes,
the pre-fork master (:mod:`bridge.server.master`).

Signals (single process): TERM and INT stop gracefully (a second INT stops
at once), QUIT stops at once, USR1 reopens the log files.  The master's
signals are described in :mod:`bridge.server.master`.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["serve", "setup_logging", "reopen_logs", "on_reopen", "BindError", "Listener",
           "open_config_listeners", "describe_listeners"]

# Imported on first use: every command (``bridge cgi`` too) loads
# bridge.server.options to build its CLI, and logging + socket cost ~9 ms.
_LAZY = {
    "BindError": "bridge.server.listeners", "Listener": "bridge.server.listeners",
    "listeners_for": "bridge.server.listeners", "on_reopen": "bridge.server.logs",
    "open_config_listeners": "bridge.server.listeners", "describe_listeners": "bridge.server.listeners",
    "make_worker": "bridge.server.process", "log_socket_access": "bridge.server.listeners",
    "reopen_logs": "bridge.server.logs", "setup_logging": "bridge.server.logs",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        if name == "log":
            import logging
            return logging.getLogger("bridge.server")
        raise AttributeError(f"module 'bridge.server' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)


def default_scheme(config) -> str:
    if getattr(config, "command", "") == "fcgi":
        return "fcgi"
    return "https" if getattr(config, "certfile", None) else "http"


def check_pool(config) -> Optional[str]:
    """One line saying what is wrong with the pool sizes, or None (a silent clamp hides a typo)."""
    low = getattr(config, "workers_min", None)
    high = getattr(config, "workers_max", None)
    if low is not None and high is not None and low > high:
        return f"--workers-min {low} is more than --workers-max {high}"
    return None


def serve(config, factory_builder: Callable, *, app: Optional[Callable] = None,
          scheme: Optional[str] = None, listeners: Optional[list] = None) -> int:
    """Serve the app of ``config`` until a signal stops it; returns the exit status.

    ``factory_builder(app, config) -> factory`` (see :class:`Worker`).  ``app``
    skips loading (already loaded); ``listeners`` skips opening sockets.
    """
    # Imported here, not at the top: this package is loaded to build every
    # command's CLI (bridge.server.options), ``bridge cgi`` too (see _LAZY).
    from bridge.server.logs import setup_logging
    command = getattr(config, "command", "serve")
    problem = check_pool(config)
    if problem:
        sys.stderr.write(f"bridge {command}: {problem}\n")
        return 2
    try:
        setup_logging(config)
    except OSError as exc:
        sys.stderr.write(f"bridge {command}: {exc}\n")
        return 2
    from bridge.server import malloc
    malloc.tune()       # before forking: the workers inherit it
    scheme = scheme or default_scheme(config)
    # --config: SIGHUP reads the file again, which only the master does; not
    # under mod_fcgid (sockets given, it restarts the processes itself).
    file_reload = bool(getattr(config, "config", None)) and listeners is None
    if getattr(config, "workers", 1) > 1 or _needs_master(config) or file_reload:
        from bridge.server.master import Master
        return Master(config, factory_builder, app=app, scheme=scheme, listeners=listeners).run()
    return _serve_alone(config, factory_builder, app=app, scheme=scheme, listeners=listeners)


def _serve_alone(config, factory_builder: Callable, *, app: Optional[Callable], scheme: str,
                 listeners: Optional[list]) -> int:
    """:func:`serve` without a master: this process is the one worker."""
    import logging  # lazy like serve()'s: see the comment there
    from bridge.server.listeners import BindError, describe_listeners, log_socket_access, open_config_listeners
    log = logging.getLogger("bridge.server")
    command = getattr(config, "command", "serve")
    # Before anything slow (the import, a client connecting early): HUP,
    # TTIN, TTOU and USR1 would kill or stop the process until the worker's
    # handlers are in place, so they wait, blocked, and reach those handlers.
    from bridge.server.process import defer_signals
    defer_signals()
    if app is None:
        from bridge.loader import load_from_config
        app = load_from_config(config)       # exits 2 with one line when it cannot
    if listeners is None:
        try:
            listeners = open_config_listeners(config)
        except BindError as exc:
            sys.stderr.write(f"bridge {command}: {exc}\n")
            return 2
    log_socket_access(listeners, config)
    try:
        prepare = getattr(factory_builder, "prepare", None)
        if prepare is not None:
            # The files the protocol opens (TLS key, access log), as the
            # master does: a bad path is one line here, not a traceback from
            # inside the worker.
            try:
                prepared = prepare(config)
            except (OSError, ValueError) as exc:
                sys.stderr.write(f"bridge {command}: {exc}\n")
                return 2
            import functools
            factory_builder = functools.partial(factory_builder, prepared=prepared)
        from bridge.server.process import run_worker
        from bridge.server.scoreboard import Scoreboard
        threads = getattr(config, "threads", 4)
        board = Scoreboard(1, threads)
        board.write_header(master_pid=0, target=1, generation=1)
        slot_index = board.claim(os.getpid(), 1)
        def ready() -> None:
            log.info("Listening on %s (%d thread%s, pid %d)", describe_listeners(listeners, scheme),
                     threads, "" if threads == 1 else "s", os.getpid())
        worker = run_worker(listeners, app, factory_builder, config, board=board,
                            slot_index=slot_index, max_requests=0, on_ready=ready)
        from bridge.logtext import counted
        log.info("Stopped (%s served)", counted(worker.state.requests, "request"))
        return 0
    finally:
        for listener in listeners:
            listener.close()


def _needs_master(config) -> bool:
    """Features only the master provides, even with one worker.

    ``--max-requests`` ends a worker, so someone must start the next one.
    """
    return any(getattr(config, name, None) for name in
               ("workers_max", "timeout", "pid", "user", "group", "max_requests", "preload"))
