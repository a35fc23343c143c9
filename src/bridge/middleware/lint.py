"""``bridge.middleware.Lint``: the WSGI contract checker of ``bridge check``, per request.

Like ``wsgiref.validate``, but a violation never becomes an
``AssertionError`` in the app and never cuts the response: each one is one
line in the error log (``wsgi.errors``, the server's error log) naming the
request that caused it::

    bridge lint: GET /broken?x=1: app: status must be a str, got int: 200

The checking itself is not done here: it is :mod:`bridge.lint`, the same
checker ``bridge check APP`` runs, so the two cannot disagree.  This module
only turns its reports into log lines.  The interface it relies on::

    bridge.lint.lint(app, report) -> app
        ``report(message: str, environ)`` is called once per distinct
        violation of a request; the returned app passes the request, the
        response and the app's own exceptions through unchanged.
"""
from __future__ import annotations

from bridge import logtext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional

__all__ = ["Lint", "describe_request"]

PREFIX = "bridge lint: "


def describe_request(environ: dict) -> str:
    """``GET /script/path?query`` as the app saw it, escaped as every log line is."""
    return logtext.describe_request(environ, query=True)


def _checker() -> Callable:
    try:
        from bridge.lint import lint
    except ImportError as exc:
        raise RuntimeError(
            "--lint needs bridge.lint.lint(app, report), the checker of 'bridge check', "
            f"which this installation does not provide ({exc})") from None
    return lint


class Lint:
    """Check ``app`` against PEP 3333 on every request; log each violation, change nothing.

    ``log``: where lines go, ``log(environ, line)``; default: the request's
    ``wsgi.errors`` (sys.stderr when missing).  ``checker``: the
    ``checker(app, report)`` function; default :func:`bridge.lint.lint`.
    """

    def __init__(self, app: Callable, *, log: Optional[Callable] = None,
                 checker: Optional[Callable] = None) -> None:
        self.app = app
        self.log = log or _write_error
        self.checked = (checker or _checker())(app, self.report)

    def report(self, message: str, environ: dict) -> None:
        """One violation → one log line.  Never raises: logging must not break a response."""
        try:
            text = " ".join(str(message).split())   # one line, whatever the checker wrote
            self.log(environ, f"{PREFIX}{describe_request(environ)}: {text}")
        except Exception:
            pass

    def __call__(self, environ: dict, start_response: Callable) -> Iterable:
        return self.checked(environ, start_response)


def _write_error(environ: dict, line: str) -> None:
    errors = environ.get("wsgi.errors")
    if errors is None:
        import sys
        errors = sys.stderr
    errors.write(line + "\n")
    flush = getattr(errors, "flush", None)
    if flush is not None:
        flush()
