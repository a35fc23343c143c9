"""CGI: the gateway (``bridge cgi``, ``bridge.run``) and CGIApp (running CGI scripts).

Nothing is imported here eagerly: the gateway's start-up cost is every request's.
"""


def __getattr__(name):
    if name == "CGIApp":
        from bridge.cgi.app import CGIApp
        return CGIApp
    raise AttributeError(name)
