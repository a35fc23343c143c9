"""CGI, the serving side: the gateway (``bridge cgi``, ``bridge.run``) and the RFC 3875 rules.

:mod:`bridge.cgi.gateway` serves one request from a CGI environment;
:mod:`bridge.cgi.rfc3875` holds the protocol's rules (meta-variables, the
response's header block), shared with the upstream clients.  Running CGI
scripts (the other direction) is :class:`bridge.upstream.CGIApp`.

Nothing is imported here eagerly: the gateway's start-up cost is every request's.
"""


def __getattr__(name):
    if name == "CGIApp":
        # Kept for code written against 0.1's docs (``from bridge.cgi import CGIApp``);
        # the class lives in bridge.upstream.cgi.
        from bridge.upstream.cgi import CGIApp
        return CGIApp
    raise AttributeError(name)
