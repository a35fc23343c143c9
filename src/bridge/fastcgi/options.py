"""Settings of ``bridge fcgi`` (declared once; the CLI, BRIDGE_* variables and docs come from here).

The listening sockets, threads, workers and the idle timeout (``--idle-timeout``)
are the server's settings (:mod:`bridge.server.options`); these are the
FastCGI protocol's own limits and switches.
"""
from bridge.config import non_negative, positive_int, setting, size

F = ("fcgi",)

setting("fcgi_max_params", "--fcgi-max-params", type=size, default=128 << 10, metavar="BYTES",
        commands=F, section="fastcgi", validate=positive_int,
        help="largest FCGI_PARAMS stream (all CGI variables and headers of one request); "
             "a larger one is answered 431 (accepts 64k, 1M)")
setting("fcgi_spool_threshold", "--fcgi-spool-threshold", type=size, default=1 << 20,
        metavar="BYTES", commands=F, section="fastcgi", validate=non_negative,
        help="request bodies larger than this are kept in a temporary file, not in memory")
setting("fcgi_max_body", "--fcgi-max-body", type=size, default=0, metavar="BYTES", commands=F,
        section="fastcgi", validate=non_negative,
        help="largest request body; a larger one is answered 413 (0: no limit of bridge's own, "
             "the web server's client_max_body_size / LimitRequestBody applies)")
setting("fcgi_errors_to_log", "--fcgi-errors-to-log", type=bool, default=False, commands=F,
        section="fastcgi",
        help="send wsgi.errors to bridge's --error-log instead of FCGI_STDERR (the web server's error log)")
setting("fcgi_max_conn_requests", "--fcgi-max-conn-requests", type=int, default=0, metavar="N",
        commands=F, section="fastcgi", validate=non_negative,
        help="close a kept-alive connection (fastcgi_keep_conn) after N requests (0: no limit)")
setting("fcgi_web_server_addrs", "--fcgi-web-server-addrs", multiple=True, default=[],
        metavar="ADDR", commands=F, section="fastcgi",
        help="IP addresses (or networks, e.g. 10.0.0.0/8) allowed to connect over TCP (repeatable); "
             "the FastCGI FCGI_WEB_SERVER_ADDRS variable (comma-separated) is read too")
