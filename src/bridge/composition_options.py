"""``--mount PREFIX=APP``: several apps, FastCGI backends and CGI scripts in one server.

Declared once here (the CLI flag, ``BRIDGE_MOUNT``, the docs' table), and
applied by an :data:`bridge.config.APP_WRAPPERS` hook that builds a
:func:`bridge.mount` map: the positional APP, if given, is mounted at
``/``; each ``--mount`` adds a prefix.  Repeating a prefix with ``fcgi://``
backends balances requests across them.
"""
from __future__ import annotations

from bridge.config import APP_WRAPPERS, setting


def mount_spec(raw: str) -> tuple:
    """``"/api=pkg.api:app"`` → ``("/api", "pkg.api:app")`` (checked, not loaded yet)."""
    prefix, eq, app = str(raw).partition("=")
    prefix = prefix.strip()
    app = app.strip()
    if not eq or not prefix or not app:
        raise ValueError(f"expected PREFIX=APP (e.g. /api=pkg.api:app), got {raw!r}")
    from bridge.middleware.mount import normalize_prefix
    normalize_prefix(prefix)   # raises ValueError with the reason
    return prefix, app


setting("mount", "--mount", multiple=True, mapping=True, default=[], type=mount_spec, metavar="PREFIX=APP",
        commands=("cgi", "fcgi", "http"), section="composition", restart="preload",
        help="serve APP under URL PREFIX (repeatable; longest prefix wins, no match is 404). "
             "APP is module:callable, fcgi://HOST:PORT, fcgi://unix:/PATH (repeat the prefix to "
             "balance several backends) or cgi:/path/to/script-or-cgi-bin")


def build_mounts(app, config):
    """APP_WRAPPERS hook: the positional APP at ``/`` plus every ``--mount``."""
    mounts = getattr(config, "mount", None)
    if not mounts:
        return app
    from bridge.loader import AppLoadError
    from bridge.middleware.mount import Mount, normalize_prefix, resolve
    grouped: dict = {}
    order = []
    for prefix, spec in mounts:
        key = normalize_prefix(prefix)
        if key not in grouped:
            grouped[key] = []
            order.append(key)
        grouped[key].append(spec)
    table = {}
    if app is not None:
        if "" in grouped:
            raise AppLoadError("both APP and --mount /=... want the root: give only one")
        table[""] = app
    for key in order:
        specs = grouped[key]
        if len(specs) > 1 and not all(s.startswith("fcgi://") for s in specs):
            raise AppLoadError(f"--mount {key or '/'} given {len(specs)} times: only fcgi:// "
                               f"backends can share a prefix (they are load balanced)")
        table[key] = resolve(specs[0], pythonpath=config.pythonpath, chdir=config.chdir,
                             extra=specs[1:])
    try:
        return Mount(table)
    except (TypeError, ValueError) as exc:
        raise AppLoadError(f"--mount: {exc}") from None


APP_WRAPPERS.append(build_mounts)
