"""The upstream side: WSGI apps that hand a request to another program.

Where :mod:`bridge.cgi`, :mod:`bridge.fastcgi` and :mod:`bridge.http` *serve*
an app (the child side of Go's ``net/http/cgi``), this package *runs* other
programs as apps (the host side), so an old cgi-bin or a PHP site keeps
working next to a Python app while it is replaced one path at a time:

- :mod:`bridge.upstream.cgi`: :class:`CGIApp`, a CGI script or a whole
  cgi-bin run per request (RFC 3875, the server's side).
- :mod:`bridge.upstream.fastcgi`: :class:`FastCGIApp`, a client of FastCGI
  backends (php-fpm, ``bridge fcgi``), pooled and load balanced.
- :mod:`bridge.upstream.mount`: :func:`mount`, several apps under URL
  prefixes, and the app names of ``--mount`` (``fcgi://``, ``cgi:``...).
- :mod:`bridge.upstream.common`: what the two clients share (the request
  body, RFC 3875 §6.2.2 local redirects, :class:`UpstreamError`).
- :mod:`bridge.upstream.options`: the ``--mount`` setting and the
  :data:`bridge.config.APP_WRAPPERS` hook that applies it.

It depends on the protocol modules (:mod:`bridge.cgi.rfc3875`,
:mod:`bridge.fastcgi.records`) and the WSGI core; the serving side never
imports it, except through the settings' app-wrapper hook.  The names below
are imported on first use (PEP 562).
"""

__all__ = ["CGIApp", "FastCGIApp", "Mount", "mount"]

_WHERE = {"CGIApp": "cgi", "FastCGIApp": "fastcgi", "Mount": "mount", "mount": "mount"}


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge.upstream' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"bridge.upstream.{module}"), name)
    globals()[name] = value
    return value
