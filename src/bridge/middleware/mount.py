"""Several WSGI apps in one process, each under its own URL prefix.

``bridge.mount({"/": site, "/api": api, "/legacy": "cgi:/srv/cgi-bin"})``
returns one WSGI app.  A request goes to the app with the longest prefix
that matches the path *on a segment boundary* (``/api`` takes ``/api`` and
``/api/users`` but not ``/apiary``), and the prefix moves from PATH_INFO to
SCRIPT_NAME as PEP 3333 says ("the initial portion of the request URL's path
that corresponds to the application object").  So the mounted app builds
its own URLs from ``SCRIPT_NAME`` and never needs to know where it lives.
A path no prefix matches gets a 404.

An app may also be given by name, as on the command line (``--mount``):
``module:callable``, ``fcgi://HOST:PORT``, ``fcgi://unix:/PATH`` or
``cgi:/path/to/script``; see :func:`resolve`.
"""
from __future__ import annotations

from bridge.wsgi import AmbiguousPath, refuse_ambiguous_path, remove_dot_segments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional, Union

__all__ = ["mount", "Mount", "resolve", "normalize_prefix"]

NOT_FOUND_BODY = b"Not Found\n"

#: The environ key under which the outermost :class:`Mount` leaves a way to
#: run a request again from the top: ``(mount, script_name)``.  CGIApp uses
#: it for RFC 3875 §6.2.2 local redirects, which the *server* must serve
#: "as if the client had asked for that URL", whichever app owns it.
ROOT_KEY = "bridge.mount.root"


def normalize_prefix(prefix: str) -> str:
    """``"/"`` and ``""`` → ``""`` (the root); ``"/api/"`` → ``"/api"``.

    A prefix is a decoded path (like PATH_INFO): it must start with ``/``
    and may not contain ``.``/``..`` segments or empty segments, which no
    request path can match after a web server normalised it.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"mount prefix must be a str, not {type(prefix).__name__}: {prefix!r}")
    if prefix in ("", "/"):
        return ""
    if not prefix.startswith("/"):
        raise ValueError(f"mount prefix {prefix!r} must start with '/'")
    stripped = prefix.rstrip("/")
    segments = stripped.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"mount prefix {prefix!r} has an empty, '.' or '..' segment")
    if any(c in stripped for c in "?#\r\n\0"):
        raise ValueError(f"mount prefix {prefix!r} contains '?', '#' or a control character")
    return stripped


class Mount:
    """The WSGI app :func:`mount` returns.  ``.apps`` maps prefix → app."""

    __slots__ = ("apps", "_ordered")

    def __init__(self, apps: Union[dict, Iterable]) -> None:
        items = apps.items() if isinstance(apps, dict) else apps
        table: dict = {}
        for prefix, app in items:
            key = normalize_prefix(prefix)
            if key in table:
                raise ValueError(f"mount prefix {prefix!r} given twice")
            if isinstance(app, str):
                app = resolve(app)
            if not callable(app):
                raise TypeError(f"the app mounted at {prefix!r} is not callable: {app!r}")
            table[key] = app
        if not table:
            raise ValueError("mount() needs at least one prefix → app")
        self.apps = table
        # Longest first: the first match is the most specific one.
        self._ordered = sorted(table.items(), key=lambda item: len(item[0]), reverse=True)

    def match(self, path: str) -> Optional[tuple]:
        """``(prefix, app)`` for ``path`` (a PATH_INFO), or ``None``."""
        for prefix, app in self._ordered:
            if not prefix:
                return prefix, app
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return prefix, app
        return None

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if "/." in path:
            # bridge's gateways already did this; a server that does not
            # (or an app calling a mount directly) must not route
            # "/admin/../public" to the app at "/admin" (RFC 3986 §5.2.4).
            try:
                path = environ["PATH_INFO"] = remove_dot_segments(path)
            except AmbiguousPath:
                return refuse_ambiguous_path(environ, start_response)
        found = self.match(path)
        if found is None:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(NOT_FOUND_BODY)))])
            return [NOT_FOUND_BODY]
        if ROOT_KEY not in environ:
            environ[ROOT_KEY] = (self, environ.get("SCRIPT_NAME", ""))
        prefix, app = found
        if prefix:
            # PEP 3333: SCRIPT_NAME + PATH_INFO stays the whole path; only
            # the boundary between them moves.
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            environ["PATH_INFO"] = path[len(prefix):]
        return app(environ, start_response)

    def __repr__(self) -> str:
        inner = ", ".join(f"{p or '/'!r}: {a!r}" for p, a in self.apps.items())
        return f"Mount({{{inner}}})"


def mount(apps: Union[dict, Iterable]) -> Mount:
    """One WSGI app routing by URL prefix: longest match on segment boundaries, else 404.

    ``apps`` maps prefixes (``"/"``, ``"/api"``...) to WSGI apps or app
    names (see :func:`resolve`).
    """
    return Mount(apps)


def resolve(spec: str, *, pythonpath: Iterable[str] = (), chdir: Optional[str] = None,
            extra: Iterable[str] = ()) -> Callable:
    """The app a name stands for (the APP of ``--mount PREFIX=APP``).

    - ``fcgi://HOST:PORT`` or ``fcgi://unix:/PATH``: a :class:`~bridge.fastcgi.client.FastCGIApp`;
      ``extra`` lists more backends for the same prefix (load balanced), and a
      query string sets options: ``?document_root=/srv/php``,
      ``?script_filename=/srv/php/index.php``, ``?timeout=30``, ``?balance=least_busy``.
    - ``cgi:/path/to/script`` (or a directory, like a cgi-bin): a
      :class:`~bridge.cgi.app.CGIApp`; ``?timeout=30``, ``?document_root=/srv``.
    - ``module:callable`` (or ``module``): the app the loader finds.

    Raises :class:`bridge.loader.AppLoadError` with a one-line message.
    """
    from bridge.loader import AppLoadError
    spec = spec.strip()
    try:
        if spec.startswith("fcgi://"):
            from bridge.fastcgi.client import FastCGIApp
            backends = []
            options: dict = {}
            for one in (spec, *extra):
                address, opts = _split_query(one)
                if not address.startswith("fcgi://"):
                    raise ValueError(f"{one!r}: every backend of a FastCGI mount must be fcgi://...")
                backends.append(address[len("fcgi://"):])
                options.update(opts)
            return FastCGIApp(backends, **_fcgi_options(options))
        if extra:
            raise ValueError(f"only fcgi:// mounts can have several backends, not {spec!r}")
        if spec.startswith("cgi:"):
            from bridge.cgi.app import CGIApp
            path, opts = _split_query(spec[len("cgi:"):])
            return CGIApp(path, **_cgi_options(opts))
    except (ValueError, TypeError, OSError) as exc:
        raise AppLoadError(f"cannot mount {spec!r}: {exc}") from None
    from bridge.loader import load_app
    return load_app(spec, pythonpath, chdir)


def _split_query(spec: str) -> tuple:
    address, _, query = spec.partition("?")
    options = {}
    if query:
        from urllib.parse import parse_qsl
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=True):
            options[key] = value
    return address, options


def _fcgi_options(options: dict) -> dict:
    out: dict = {}
    for key, value in options.items():
        if key in ("document_root", "script_filename", "balance", "index"):
            out[key] = value
        elif key in ("timeout", "connect_timeout", "retry_after"):
            out[key] = float(value)
        elif key == "max_idle":
            out[key] = int(value)
        else:
            raise ValueError(f"unknown FastCGI mount option {key!r} (document_root, script_filename, "
                             f"index, balance, timeout, connect_timeout, retry_after, max_idle)")
    return out


def _cgi_options(options: dict) -> dict:
    out: dict = {}
    for key, value in options.items():
        if key == "document_root":
            out[key] = value
        elif key == "timeout":
            out[key] = float(value)
        else:
            raise ValueError(f"unknown CGI mount option {key!r} (timeout, document_root)")
    return out
