"""Settings of the server machinery shared by ``bridge fcgi`` and ``bridge http``.

Protocol-specific settings live in ``bridge.fastcgi.options`` and
``bridge.http.options``; these are the ones both servers read through
:func:`bridge.server.serve`.
"""
from bridge.config import APP_WRAPPERS, SERVERS, non_negative, octal, positive_int, setting

S = SERVERS

setting("bind", "--bind", "-b", multiple=True, default=[], metavar="ADDRESS", commands=S,
        section="server", restart=True,
        help="where to listen (repeatable): unix:/run/app.sock, 127.0.0.1:8000, [::1]:8000, "
             "0.0.0.0:8000, fd://3; without it, a socket inherited from systemd or on fd 0")
setting("socket_mode", "--socket-mode", type=octal, metavar="MODE", commands=S, section="server",
        restart=True,
        help="permissions of a unix socket made by --bind, in octal (e.g. 0660; default: from the umask)")
setting("backlog", "--backlog", type=int, default=2048, metavar="N", commands=S, section="server",
        restart=True,
        validate=positive_int, help="listen queue length (the kernel caps it at net.core.somaxconn)")
setting("threads", "--threads", type=int, default=4, metavar="N", commands=S, section="server",
        validate=positive_int,
        help="threads per worker process running requests (idle keep-alive connections hold none)")
setting("workers", "--workers", "-w", type=int, default=1, metavar="N", commands=S, section="server",
        validate=positive_int, help="worker processes")
setting("graceful_timeout", "--graceful-timeout", type=float, default=30.0, metavar="SECONDS",
        commands=S, section="server", validate=non_negative,
        help="on SIGTERM/SIGINT/SIGHUP, how long requests in flight may take to finish")
setting("idle_timeout", "--idle-timeout", type=float, default=60.0, metavar="SECONDS",
        commands=S, section="server", validate=non_negative,
        help="how long an idle connection is kept open when the protocol sets no limit of its own "
             "(HTTP uses --keep-alive; 0: no limit)")
setting("io_timeout", "--io-timeout", type=float, default=30.0, metavar="SECONDS", commands=S,
        section="server", validate=non_negative,
        help="how long one send or body read may block before the connection is dropped (0: no limit)")
setting("worker_connections", "--worker-connections", type=int, default=0, metavar="N", commands=S,
        section="server", validate=non_negative,
        help="most connections one worker process holds open, idle keep-alive ones included; the rest "
             "wait in the listen queue (0: half the open-files limit, ulimit -n, leaving the other half "
             "to the app)")
setting("max_requests", "--max-requests", type=int, default=0, metavar="N", commands=S,
        section="server", validate=non_negative,
        help="restart a worker after it has served N requests (0: never); limits slow leaks")

# -- the process manager (bridge.server.master) ---------------------------------

setting("preload", "--preload", type=bool, default=False, commands=S, section="processes",
        restart=True,
        help="import the app once in the master before forking the workers (copy-on-write memory; "
             "SIGHUP then restarts workers on the code loaded at start); with --user, imported "
             "with that user's effective ids")
setting("workers_min", "--workers-min", type=int, metavar="N", commands=S, section="processes",
        validate=positive_int, help="dynamic pool: never fewer worker processes than this (default: --workers)")
setting("workers_max", "--workers-max", type=int, metavar="N", commands=S, section="processes",
        validate=positive_int,
        help="dynamic pool: start workers up to N while every thread is busy, retire idle ones "
             "(default: --workers, a fixed pool)")
setting("workers_idle_timeout", "--workers-idle-timeout", type=float, default=10.0, metavar="SECONDS",
        commands=S, section="processes", validate=non_negative,
        help="dynamic pool: retire a worker once a whole worker's worth of threads has been idle this long")
setting("max_requests_jitter", "--max-requests-jitter", type=int, default=0, metavar="N", commands=S,
        section="processes", validate=non_negative,
        help="add a random 0..N to --max-requests per worker, so workers do not all restart at once")
setting("timeout", "--timeout", type=float, default=0.0, metavar="SECONDS", commands=S,
        section="processes", validate=non_negative,
        help="kill and replace a worker whose request has run longer than this, or whose loop stopped "
             "answering (0: never); the log names the request")
setting("slowlog", "--slowlog", type=float, default=0.0, metavar="SECONDS", commands=S,
        section="processes", validate=non_negative,
        help="log the Python stack of a request running longer than this, without stopping it (0: off)")
setting("pid", "--pid", metavar="FILE", commands=S, section="processes", restart=True,
        help="write the master's process id to FILE (removed on exit)")
setting("user", "--user", metavar="USER", commands=S, section="processes", restart=True,
        help="the workers run as this user (name or uid, even one with no passwd entry; needs "
             "root); the master keeps its own to reopen logs and remove --pid")
setting("group", "--group", metavar="GROUP", commands=S, section="processes", restart=True,
        help="the workers run as this group (default: the user's group, or the gid equal to a "
             "numeric --user with no passwd entry); a unix socket made by --bind is given to it")

# -- status page (bridge.server.status) -------------------------------------------

setting("status_path", "--status-path", metavar="PATH", commands=S, section="status", restart="preload",
        help="answer the pool's status at this path (e.g. /bridge-status), as JSON, HTML or "
             "OpenMetrics/Prometheus text (?format=openmetrics); off by default")
setting("status_allow", "--status-allow", multiple=True, default=["127.0.0.1", "::1"], metavar="ADDRESS",
        commands=S, section="status", restart="preload",
        help="addresses or networks (CIDR) allowed to read --status-path (repeatable; REMOTE_ADDR is checked)")
setting("ping_path", "--ping-path", metavar="PATH", commands=S, section="status", restart="preload",
        help="answer 'pong' at this path, from any address, for load balancer health checks")


def _status_hook(app, config):
    """APP_WRAPPERS hook: the status and ping paths answered before everything (lazy import).

    Outermost, so they answer whatever serves the rest: a positional APP,
    only ``--mount`` options (the mount map is built by then), ``--static``.
    No app at all is left for the loader to refuse.
    """
    if app is None or not (getattr(config, "status_path", None) or getattr(config, "ping_path", None)):
        return app
    from bridge.server.status import wrap
    return wrap(app, config)


_status_hook.outermost = True
APP_WRAPPERS.append(_status_hook)
