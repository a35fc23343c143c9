"""Find the WSGI application named on the command line.

``module:callable``, ``module:factory()`` (called to get the app), or
``module`` alone (meaning ``module:application``, as mod_wsgi does).  Every
failure is an :class:`AppLoadError` whose message is one line a user can act
on; the CLI prints it and exits with status 2.
"""
import os
import sys

# Annotations that name typing's types are strings, and there is no
# `from __future__ import annotations`: that line imports the __future__
# module, one more import every CGI request would pay (bridge cgi's path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional


class AppLoadError(Exception):
    """The app could not be loaded; ``str(exc)`` is the one line to show."""


def prepare_path(pythonpath: "Iterable[str]" = (), chdir: "Optional[str]" = None) -> None:
    """Working directory first on ``sys.path`` (like ``python -m``), then ``--pythonpath``."""
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise AppLoadError(f"cannot change to directory {chdir!r}: {exc.strerror}") from None
    for entry in reversed([os.getcwd(), *[os.path.abspath(p) for p in pythonpath]]):
        if entry in sys.path:
            sys.path.remove(entry)
        sys.path.insert(0, entry)


def load_app(spec: str, pythonpath: "Iterable[str]" = (), chdir: "Optional[str]" = None) -> "Callable":
    if not spec or not isinstance(spec, str):
        raise AppLoadError("no application given: pass APP as module:callable")
    prepare_path(pythonpath, chdir)
    module_name, _, attr = spec.partition(":")
    attr = attr.strip() or "application"
    call_factory = attr.endswith("()")
    if call_factory:
        attr = attr[:-2]
    if not module_name or not all(part.isidentifier() for part in module_name.split(".")):
        raise AppLoadError(f"{spec!r} is not module:callable (bad module name {module_name!r})")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise AppLoadError(f"{spec!r} is not module:callable (bad attribute name {attr!r})")
    try:
        module = __import__(module_name)
        for part in module_name.split(".")[1:]:
            module = getattr(module, part)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppLoadError(
                f"module {module_name!r} not found (sys.path starts with {sys.path[0]!r}; "
                f"use --chdir or --pythonpath)") from None
        raise AppLoadError(_with_traceback(f"importing {module_name!r} failed: {exc}")) from None
    except Exception as exc:
        raise AppLoadError(_with_traceback(f"importing {module_name!r} raised {type(exc).__name__}: {exc}")) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if call_factory:
        if not callable(obj):
            raise AppLoadError(f"{module_name}:{attr} is not callable, so it cannot be a factory")
        try:
            obj = obj()
        except Exception as exc:
            raise AppLoadError(_with_traceback(f"factory {module_name}:{attr}() raised {type(exc).__name__}: {exc}")) from None
    if not callable(obj):
        raise AppLoadError(f"{spec} is a {type(obj).__name__}, not a callable WSGI application")
    return obj


def _with_traceback(message: str) -> str:
    import traceback   # lazy, CGI path: only when the app failed to load
    return message + "\n" + traceback.format_exc().rstrip()


def load_from_config(config) -> "Callable":
    """The app a command serves: ``config.app`` wrapped by what the settings ask for.

    Exits with status 2 and one line on stderr when it cannot be loaded.
    """
    try:
        app = load_app(config.app, config.pythonpath, config.chdir) if config.app else None
        import bridge.config as _config   # lazy: the plain CGI path never loads the settings
        for hook in _config.app_wrappers():
            app = hook(app, config)
        if app is None:
            raise AppLoadError("no application given: pass APP as module:callable")
        return app
    except AppLoadError as exc:
        sys.stderr.write(f"bridge: {exc}\n")
        raise SystemExit(2)
