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


#: How the ``bridge`` command puts a directory on ``sys.path``; named when a module is not found.
COMMAND_PATH_SETTINGS = "use --chdir or --pythonpath"

#: The same for a cgi-bin script, which has no command line: its own ``run()`` call.
SCRIPT_PATH_SETTINGS = ("list its directory in the script: run(APP, pythonpath=[\"/srv/myproject\"]), "
                        "or run(APP, chdir=...)")


def load_app(spec: str, pythonpath: "Iterable[str]" = (), chdir: "Optional[str]" = None,
             path_settings: str = COMMAND_PATH_SETTINGS) -> "Callable":
    """The WSGI callable ``spec`` names; :class:`AppLoadError` with one line if it cannot be had.

    ``path_settings`` says how the caller's user sets the path: flags for
    the command, ``run()``'s arguments for a script (a flag named to
    someone who never typed a command line would send them looking for it).
    """
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
                f"{path_settings})") from None
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
        kind = type(obj).__name__
        raise AppLoadError(f"{spec} is {'an' if kind[:1] in 'aeiou' else 'a'} {kind}, "
                           f"not a callable WSGI application")
    return obj


def _with_traceback(message: str) -> str:
    import traceback
    return message + "\n" + traceback.format_exc().rstrip()


def load_from_config(config) -> "Callable":
    """The app a command serves: ``config.app`` wrapped by what the settings ask for.

    Exits with status 2 and one line on stderr, ``bridge COMMAND: ...``,
    when it cannot be loaded or a hook finds a setting that cannot work.
    """
    from bridge.config import ConfigError
    try:
        app = load_app(config.app, config.pythonpath, config.chdir) if config.app else None
        import bridge.config as _config
        for hook in _config.app_wrappers():
            app = hook(app, config)
        if app is None:
            raise AppLoadError("no application given: pass APP as module:callable")
        return app
    except (AppLoadError, ConfigError) as exc:
        sys.stderr.write(f"bridge {getattr(config, 'command', 'serve')}: {exc}\n")
        raise SystemExit(2)
