"""Settings of the server machinery shared by ``bridge fcgi`` and ``bridge http``.

Protocol-specific settings live in ``bridge.fastcgi.options`` and
``bridge.http.options``; these are the ones both servers read through
:func:`bridge.server.serve`.
"""
from bridge.config import SERVERS, non_negative, octal, positive_int, setting

S = SERVERS

setting("bind", "--bind", "-b", multiple=True, default=[], metavar="ADDRESS", commands=S,
        section="server",
        help="where to listen (repeatable): unix:/run/app.sock, 127.0.0.1:8000, [::1]:8000, "
             "0.0.0.0:8000, fd://3; without it, a socket inherited from systemd or on fd 0")
setting("socket_mode", "--socket-mode", type=octal, metavar="MODE", commands=S, section="server",
        help="permissions of a unix socket made by --bind, in octal (e.g. 0660; default: from the umask)")
setting("backlog", "--backlog", type=int, default=2048, metavar="N", commands=S, section="server",
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
setting("max_requests", "--max-requests", type=int, default=0, metavar="N", commands=S,
        section="server", validate=non_negative,
        help="restart a worker after it has served N requests (0: never); limits slow leaks")
