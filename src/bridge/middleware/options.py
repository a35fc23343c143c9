"""Flags of the post-processing middleware: ``--static``, ``--gzip``, ``--lint``.

Declared once here (CLI flag, ``BRIDGE_*`` variable, docs table) and applied
by an :data:`bridge.config.APP_WRAPPERS` hook.  Wrapping order, inside out::

    Static( Gzip( Lint( app ) ) )

Lint sees exactly what the app does; Gzip compresses the app's responses;
Static answers its prefixes before anything else, so files go out by
sendfile untouched (precompress them: ``app.css.gz`` is served as is).

Only ``bridge.config`` is imported here: the middleware modules load when a
flag asks for them, so a plain ``bridge cgi`` pays nothing.
"""
from __future__ import annotations

import os

from bridge.config import APP_WRAPPERS, non_negative, setting, size

COMMANDS = ("cgi", "fcgi", "http")


def static_spec(raw: str) -> tuple:
    """``"/static=./public"`` → ``("/static", "/abs/public")``, checked now, not at the first request."""
    prefix, eq, directory = str(raw).partition("=")
    prefix, directory = prefix.strip(), directory.strip()
    if not eq or not prefix or not directory:
        raise ValueError(f"expected PREFIX=DIR (e.g. /static=./public), got {raw!r}")
    if not prefix.startswith("/"):
        raise ValueError(f"the prefix must start with '/', got {prefix!r}")
    if not os.path.isdir(directory):
        raise ValueError(f"{directory!r} is not a directory")
    return prefix, os.path.abspath(directory)


def gzip_level(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 9:
        raise ValueError(raw)
    return value


gzip_level.expected = "a compression level from 1 to 9"


setting("static", "--static", restart="preload", multiple=True, mapping=True, default=[], type=static_spec, metavar="PREFIX=DIR",
        commands=COMMANDS, section="static files",
        help="serve the files under DIR at URL PREFIX, with ETag/Last-Modified, 304, ranges, "
             "precompressed .br/.gz siblings and sendfile (repeatable)")
setting("static_max_age", "--static-max-age", restart="preload", default=0, type=int, validate=non_negative,
        metavar="SECONDS", commands=COMMANDS, section="static files",
        help="Cache-Control: public, max-age=SECONDS for static files (0: no-cache, revalidate each time)")
setting("static_index", "--static-index", restart="preload", default=False, type=bool, commands=COMMANDS,
        section="static files", help="serve index.html for a directory (never a listing)")
setting("static_hidden", "--static-hidden", restart="preload", default=False, type=bool, commands=COMMANDS,
        section="static files", help="serve dot-files (.well-known, ...); hidden by default")
setting("gzip", "--gzip", restart="preload", default=False, type=bool, commands=COMMANDS, section="compression",
        help="compress responses with gzip for clients that accept it")
setting("gzip_min_size", "--gzip-min-size", restart="preload", default=256, type=size, validate=non_negative,
        metavar="BYTES", commands=COMMANDS, section="compression",
        help="do not compress responses known to be smaller (streams of unknown size are compressed)")
setting("gzip_types", "--gzip-types", restart="preload", default="", metavar="TYPES", commands=COMMANDS,
        section="compression",
        help="comma-separated media types to compress (type/* and type/*+suffix allowed); "
             "default: text/*, JSON, JavaScript, XML, SVG, wasm")
setting("gzip_level", "--gzip-level", restart="preload", default=6, type=gzip_level, metavar="1-9", commands=COMMANDS,
        section="compression", help="gzip compression level")
setting("lint", "--lint", restart="preload", default=False, type=bool, commands=COMMANDS, section="development",
        help="check every request against the WSGI contract (PEP 3333) and log each violation "
             "(the checker of 'bridge check'); responses are not altered")


def wrap_app(app, config):
    """APP_WRAPPERS hook: ``Static(Gzip(Lint(app)))`` as far as the flags ask."""
    if app is not None and getattr(config, "lint", False):
        from bridge.middleware.lint import Lint
        try:
            app = Lint(app)
        except RuntimeError as exc:
            from bridge.loader import AppLoadError
            raise AppLoadError(str(exc)) from None
    if app is not None and getattr(config, "gzip", False):
        from bridge.middleware.gzip import DEFAULT_TYPES, Gzip
        types = [t.strip() for t in (getattr(config, "gzip_types", "") or "").split(",") if t.strip()]
        try:
            app = Gzip(app, min_size=getattr(config, "gzip_min_size", 256), types=types or DEFAULT_TYPES,
                       level=getattr(config, "gzip_level", 6))
        except ValueError as exc:
            from bridge.config import ConfigError
            raise ConfigError(f"--gzip-types: {exc}") from None
    mounts = getattr(config, "static", None)
    if mounts:
        from bridge.middleware.static import Static
        # Without an app, Static alone serves the files and 404s the rest.
        app = Static(app, mounts, max_age=getattr(config, "static_max_age", 0),
                     index=getattr(config, "static_index", False),
                     hidden=getattr(config, "static_hidden", False))
    return app


APP_WRAPPERS.append(wrap_app)
