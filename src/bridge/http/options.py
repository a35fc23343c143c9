"""Settings of ``bridge http`` (declared once; the CLI and docs are generated)."""
from bridge.config import non_negative, positive_int, setting, size

HTTP = ("http",)

# Timeouts: a slow client must never hold a worker thread for long.
setting("keepalive", "--keep-alive", "--keepalive", default=5.0, type=float, validate=non_negative,
        commands=HTTP, section="http", metavar="SECONDS",
        help="close a kept-alive connection idle this long (0: no limit); behind nginx keep the "
             "upstream's keepalive_timeout below it")
setting("header_timeout", "--header-timeout", default=10.0, type=float, validate=non_negative, commands=HTTP,
        section="http", metavar="SECONDS",
        help="close a connection whose request head (or TLS handshake) is not complete this long after it "
             "began: a slow-loris client cannot hold the server (for the body see --body-timeout)")

# Request bodies: received by the event loop, not by a pool thread.
setting("body_timeout", "--body-timeout", default=60.0, type=float, validate=non_negative, commands=HTTP,
        section="http", metavar="SECONDS",
        help="a request body must arrive completely within this long after its head (0: no limit); "
             "past it, or stalled for --io-timeout, the client gets 408 and the connection is closed")
setting("body_spool_threshold", "--body-spool-threshold", default=1 << 20, type=size, validate=non_negative,
        commands=HTTP, section="http", metavar="BYTES",
        help="a request body is received before the app runs: up to this size in memory, a bigger one in "
             "an unlinked temporary file (k/M/G suffixes)")
setting("body_memory", "--body-memory", default=64 << 20, type=size, validate=non_negative,
        commands=HTTP, section="http", metavar="BYTES",
        help="request bodies one worker process keeps in memory, all connections together; past it a "
             "body goes to its temporary file even below --body-spool-threshold (k/M/G suffixes)")
setting("stream_request_body", "--stream-request-body", default=False, type=bool, commands=HTTP,
        section="http",
        help="let the app read request bodies from the socket as they arrive instead (large uploads "
             "handled as a stream, upload progress); a pool thread then waits on a slow client, for up to "
             "--body-timeout")

# Limits (RFC 9110 §15.5.14/.15, RFC 6585 §5).
setting("limit_request_line", "--limit-request-line", default=8190, type=int, validate=positive_int,
        commands=HTTP, section="http", metavar="BYTES",
        help="longest request line; longer gets 414 URI Too Long")
setting("limit_request_fields", "--limit-request-fields", default=100, type=int, validate=positive_int,
        commands=HTTP, section="http", metavar="N",
        help="most header fields in a request; more gets 431")
setting("limit_request_field_size", "--limit-request-field-size", default=8190, type=int,
        validate=positive_int, commands=HTTP, section="http", metavar="BYTES",
        help="longest header field line; longer gets 431")
setting("limit_request_header_size", "--limit-request-header-size", default=64 * 1024, type=size,
        validate=positive_int, commands=HTTP, section="http", metavar="BYTES",
        help="largest request head (request line and header fields together; also the trailer section "
             "of a chunked body; k/M suffixes); larger gets 431")
setting("limit_request_body", "--limit-request-body", default=1 << 30, type=size, validate=non_negative,
        commands=HTTP, section="http", metavar="BYTES",
        help="largest request body (k/M/G suffixes; 0 = no limit); larger gets 413")

# TLS with the standard library's ssl.
setting("certfile", "--certfile", metavar="FILE", commands=HTTP, section="tls",
        help="serve HTTPS with this certificate (PEM, may hold the key and the chain)")
setting("keyfile", "--keyfile", metavar="FILE", commands=HTTP, section="tls",
        help="private key of --certfile, when it is not in the same file")
setting("ca_certs", "--ca-certs", metavar="FILE", commands=HTTP, section="tls",
        help="require client certificates signed by these CAs (mutual TLS)")

# Behind a proxy.
setting("forwarded_allow_ips", "--forwarded-allow-ips", default="127.0.0.1,::1", metavar="IPS",
        commands=HTTP, section="proxy",
        help="peers (comma separated addresses or networks, * for all) whose X-Forwarded-For/-Proto "
             "(and, with --forwarded-host, -Host) or Forwarded headers are applied; unix socket peers "
             "are always trusted")
# Off by default, as werkzeug's ProxyFix (x_host=0) and gunicorn: a proxy that
# does not set X-Forwarded-Host passes the client's own value on.
setting("forwarded_host", "--forwarded-host", default=False, type=bool, commands=HTTP, section="proxy",
        help="let a trusted peer's X-Forwarded-Host (or Forwarded host=) set HTTP_HOST, when it is a "
             "valid host[:port]; only for a proxy that sets or clears that header on every request")

# Behind a TCP load balancer (bridge.http.proxyproto).  Off by default: on a
# port where it is on, the header is required (a client could otherwise send
# its own and choose its address), so it cannot be guessed per connection.
setting("proxy_protocol", "--proxy-protocol", default=False, type=bool, commands=HTTP, section="proxy",
        help="every connection starts with a PROXY protocol header (v1 or v2, as HAProxy send-proxy/"
             "send-proxy-v2 and AWS NLB write it) giving the client's address for REMOTE_ADDR/REMOTE_PORT; "
             "a connection without a valid header, or from a peer not in --proxy-allow-ips, is closed")
setting("proxy_allow_ips", "--proxy-allow-ips", default="127.0.0.1,::1", metavar="IPS", commands=HTTP,
        section="proxy",
        help="with --proxy-protocol: peers (comma separated addresses or networks, * for all) that may "
             "send the header; unix socket peers are always allowed")

# Logs.
setting("access_log", "--access-log", "--access-logfile", metavar="FILE", commands=HTTP, section="logging",
        help="access log: - for stdout, or a file (reopened on SIGUSR1); off when not given")
setting("access_log_format", "--access-log-format", metavar="FORMAT", commands=HTTP, section="logging",
        default='%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
        help="Apache LogFormat directives: %h %l %u %t %r %m %U %q %H %s %>s %b %B %D %T %{Header}i %{Header}o")

# Development.
setting("reload", "--reload", default=False, type=bool, commands=HTTP, section="development",
        restart=True,
        help="restart the app when one of its Python files (or a --reload-extra-file) changes")
setting("reload_extra_files", "--reload-extra-file", multiple=True, default=[], metavar="PATH",
        commands=HTTP, section="development", help="another file to watch with --reload (repeatable)")
