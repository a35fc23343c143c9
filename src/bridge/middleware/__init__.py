"""Post-processing WSGI middleware: static files, compression, a contract checker.

``from bridge.middleware import Static, Gzip, Lint``.  Each is a plain WSGI
middleware usable with any server, and a flag on ``bridge cgi|fcgi|http``
(``--static``, ``--gzip``, ``--lint``; see :mod:`bridge.middleware.options`).
The classes are imported on first use (PEP 562), so importing this package
costs a CGI request nothing.
"""

__all__ = ["Static", "Gzip", "Lint"]

_WHERE = {"Static": "static", "Gzip": "gzip", "Lint": "lint"}


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bridge.middleware' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f"bridge.middleware.{module}"), name)
    globals()[name] = value
    return value
