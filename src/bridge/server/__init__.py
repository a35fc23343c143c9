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


def open_config_listeners(config) -> list:
    """The listeners ``config`` asks for (``--bind``) or was started with; raises BindError."""
    from bridge.server.listeners import listeners_for
    return listeners_for(getattr(config, "bind", None) or [],
                         socket_mode=getattr(config, "socket_mode", None),
                         backlog=getattr(config, "backlog", 2048) or 2048)


def log_socket_access(listeners: list, config) -> None:
    """At start-up, once the sockets are final: who may connect to each unix socket.

    See :func:`bridge.server.listeners.access_report` (nginx's EACCES is
    invisible to bridge, so this line is the tool for a 502).
    """
    import logging
    from bridge.server.listeners import access_report
    log = logging.getLogger("bridge.server")
    for level, text in access_report(listeners, user=getattr(config, "user", None)):
        log.log(logging.WARNING if level == "warning" else logging.INFO, "%s", text)


def describe_listeners(listeners: list, scheme: str) -> str:
    return ", ".join(listener.url(scheme) for listener in listeners)


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
    import logging
    from bridge.server.listeners import BindError
    from bridge.server.logs import setup_logging
    log = logging.getLogger("bridge.server")
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


def make_worker(listeners: list, factory: Callable, config, *, state=None, max_requests=None,
                on_tick=None, siblings: bool = False):
    """A Worker configured from ``config``.

    ``siblings``: other worker processes share the listeners (pre-fork), so
    a worker pauses accepting once it has as many requests in hand (running,
    or accepted and not started) as threads, and leaves the connections it
    could not start to an idle sibling.
    """
    from bridge.server.worker import Worker
    threads = getattr(config, "threads", 4)
    return Worker(listeners, factory,
                  threads=threads,
                  accept_limit=threads if siblings else None,
                  max_connections=getattr(config, "worker_connections", 0) or None,
                  graceful_timeout=getattr(config, "graceful_timeout", 30.0),
                  max_requests=getattr(config, "max_requests", 0) if max_requests is None else max_requests,
                  idle_timeout=getattr(config, "idle_timeout", 60.0),
                  io_timeout=getattr(config, "io_timeout", 30.0),
                  state=state, on_tick=on_tick)


def _needs_master(config) -> bool:
    """Features only the master provides, even with one worker.

    ``--max-requests`` ends a worker, so someone must start the next one.
    """
    return any(getattr(config, name, None) for name in
               ("workers_max", "timeout", "pid", "user", "group", "max_requests", "preload"))
