"""Tokens and hop-by-hop field names (RFC 9110): the part of the grammar every response needs.

The rest of the grammar is :mod:`bridge.abnf`, which names these too.  They
live apart because the WSGI core checks every response's field names with
them, on the plain CGI path too, where each import is paid by each request:
this module is a few lines, imports nothing, and compiles no regular
expression.
"""

__all__ = ["TCHAR", "is_token", "HOP_BY_HOP"]

# RFC 9110 §5.6.2:
#   token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def is_token(text: str) -> bool:
    """``text`` is a token: a method, a field name, a coding (no regex: the CGI path uses it)."""
    return bool(text) and all(c in TCHAR for c in text)


# RFC 9110 §7.6.1:  Connection = #connection-option
# "Intermediaries MUST parse a received Connection header field before a
# message is forwarded and ... remove ... any header or trailer field(s) ...
# known to be ... connection-specific."  These are the gateway's, never the
# application's (PEP 3333 "Other HTTP Features": an app must not set them),
# and a CGI script's or FastCGI backend's are dropped.
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
))
