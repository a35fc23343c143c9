"""Settings, declared once: name, flags, environment variable, default, help.

Each part of bridge declares the settings it reads in its own ``options``
module (next to the code they configure, unlike gunicorn's single 3,300-line
``config.py``).  The command line, the ``BRIDGE_*`` environment variables and
the option table in the docs are all generated from these declarations, so
they cannot disagree.  Precedence: command line, then environment, then the
``--config`` file (:mod:`bridge.configfile`, read only when one is given), then
default.
"""
from __future__ import annotations

import os

from bridge.configbase import COMMANDS as COMMANDS, WORKER_MODEL as WORKER_MODEL
from bridge.configbase import ConfigError as ConfigError, octal as octal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

#: Modules whose import declares settings (each calls :func:`setting`).
OPTION_MODULES = [
    "bridge.options",
    "bridge.fastcgi.options",
    "bridge.http.options",
    "bridge.server.options",
    "bridge.upstream.options",
    "bridge.middleware.options",
    "bridge.warm_options",
]

#: Functions ``hook(app, config) -> app`` applied, in order, to the loaded app
#: (mounts, static files, gzip...).  Options modules append to it.  A hook
#: marked ``outermost = True`` is applied after all the others, whatever the
#: import order: bridge's own paths (status, ping) are answered before any
#: mount or middleware sees the request.  :func:`app_wrappers` gives the order.
APP_WRAPPERS: list = []


def app_wrappers() -> list:
    """The APP_WRAPPERS hooks in the order they apply: inner first, ``outermost`` ones last."""
    return sorted(APP_WRAPPERS, key=lambda hook: bool(getattr(hook, "outermost", False)))


SERVERS = ("fcgi", "http")


class Setting:
    """One setting.  ``multiple`` settings are repeatable flags (lists).

    ``mapping``: a multiple setting of ``PREFIX=VALUE`` items (``--static``,
    ``--mount``), written as a TOML table in a config file.  ``restart``: what
    a SIGHUP cannot change in a running server -- ``True`` (the listening
    sockets, the users, the pid file) or ``"preload"`` (what is loaded with
    the app, fixed when ``--preload`` loaded it in the master).  ``in_file``:
    False for what only makes sense per invocation (``--config`` itself);
    ``flag_only``: no ``BRIDGE_*`` variable either (``--check-config``).
    """

    __slots__ = ("name", "flags", "default", "type", "help", "commands", "section",
                 "multiple", "flag_only", "metavar", "choices", "validate", "positional",
                 "mapping", "restart", "in_file")

    def __init__(self, name: str, flags: tuple, *, default: Any, type: Callable, help: str,
                 commands: Iterable[str], section: str, multiple: bool = False,
                 metavar: Optional[str] = None, choices: Optional[tuple] = None,
                 validate: Optional[Callable] = None, positional: bool = False,
                 mapping: bool = False, restart: Any = False, in_file: bool = True,
                 flag_only: bool = False) -> None:
        self.name = name
        self.flags = flags
        self.default = default
        self.type = type
        self.help = help
        self.commands = frozenset(commands)
        self.section = section
        self.multiple = multiple
        self.metavar = metavar
        self.choices = choices
        self.validate = validate
        self.positional = positional
        self.mapping = mapping
        self.restart = restart
        self.in_file = in_file and not flag_only
        self.flag_only = flag_only

    @property
    def env(self) -> str:
        return "BRIDGE_" + self.name.upper()

    @property
    def option(self) -> str:
        """How the command line names it: its first flag, or APP for a positional."""
        return self.flags[0] if self.flags else (self.metavar or self.name.upper())

    @property
    def is_flag(self) -> bool:
        return self.type is bool

    def convert(self, raw: Any, origin: str, *, assigned: bool = False) -> Any:
        """``raw`` as this setting's type, or a :class:`ConfigError` naming ``origin`` and ``raw``.

        ``origin`` is where the value came from, as the user wrote it: the
        flag (``--threads``), the variable (``BRIDGE_THREADS``) or a keyword
        of a script's ``run()``; ``assigned``: the user wrote ``NAME=value``
        (a variable, a keyword), so the message does too.  The
        message is in the user's words, never Python's ("invalid literal for
        int() with base 10" tells nobody which option was wrong).
        """
        try:
            if self.type is bool and isinstance(raw, str):
                value = yes_or_no(raw)
            else:
                value = self.type(raw)
            if isinstance(value, float) and not -INFINITY < value < INFINITY:
                raise ValueError("not a finite number")     # nan would pass every "< 0" check
        except (TypeError, ValueError, OverflowError) as exc:
            expected = expected_value(self.type)
            if expected is None:        # a type of its own: its message is already the user's
                raise ConfigError(f"{origin}: {exc}") from None
            raise ConfigError(f"{origin}: {raw!r} is not {expected}") from None
        if self.choices and value not in self.choices:
            raise ConfigError(f"{origin}: {raw!r} is not one of {', '.join(map(str, self.choices))}")
        if self.validate is not None:
            try:
                self.validate(value)
            except ValueError as exc:
                given = f"{origin}={shown(raw)}" if assigned else f"{origin} {shown(raw)}"
                raise ConfigError(f"{given}: {exc}") from None
        return value


INFINITY = float("inf")


def shown(value: Any) -> str:
    """``value`` as it goes in a message: bare when it reads unambiguously, else quoted.

    Quoted (``repr``) when it is empty, has spaces, quotes or anything not
    printable, so a value can neither hide in the message nor put a
    terminal escape on the user's screen.
    """
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in " '\"\\"):
        return text
    return repr(text)


def yes_or_no(raw: str) -> bool:
    """A switch from the environment: ``BRIDGE_GZIP=1``, ``yes``, ``on``, ``true`` (or their opposites)."""
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


def expected_value(kind: Callable) -> Optional[str]:
    """What a value of type ``kind`` looks like, said to a user ("a whole number"); None if unknown.

    A converter of bridge's own says it with an ``expected`` attribute.
    """
    return EXPECTED.get(kind) or getattr(kind, "expected", None)  # type: ignore[call-overload]


EXPECTED = {int: "a whole number", float: "a number", bool: "yes or no (1/0, true/false, on/off)"}


SETTINGS: dict = {}


def setting(name: str, *flags: str, default: Any = None, type: Callable = str, help: str,
            commands: Iterable[str] = SERVERS, section: str = "general", **kw: Any) -> Setting:
    """Declare a setting (call at import time of an ``options`` module)."""
    if name in SETTINGS:
        raise ValueError(f"setting {name!r} declared twice")
    s = Setting(name, flags, default=default, type=type, help=help, commands=commands,
                section=section, **kw)
    SETTINGS[name] = s
    return s


def load_declarations() -> dict:
    import importlib
    for module in OPTION_MODULES:
        importlib.import_module(module)
    return SETTINGS


def unknown_keywords(names: Iterable[str], command: Optional[str] = None) -> Optional[str]:
    """One line for the first of a script's ``run()`` keywords that is no setting, or None.

    ``command``: only that command's settings count (None: any command's).
    A typo named with the nearest setting, as ``threads`` for ``thread``.
    """
    settings = load_declarations()
    declared = [s.name for s in settings.values() if command is None or command in s.commands]
    for name in names:
        if name in declared:
            continue
        if name in settings:
            return f"run(): {name} is not a setting of bridge {command}"
        import difflib
        close = difflib.get_close_matches(name, declared, n=1)
        return f"run(): no setting named {name!r}{f' (did you mean {close[0]}?)' if close else ''}"
    return None


# Validators and types shared by several options modules (``octal`` is
# :mod:`bridge.configbase`'s: the file reader tells a mode by it).

def positive_int(value: int) -> None:
    if value < 1:
        raise ValueError("must be at least 1")


def non_negative(value: float) -> None:
    if value < 0:
        raise ValueError("must not be negative")


def size(raw: str) -> int:
    """``1048576``, ``64k``, ``10M``, ``1G`` → bytes."""
    raw = str(raw).strip()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(raw[-1:].lower(), 1)
    if mult != 1:
        raw = raw[:-1]
    return int(raw) * mult


setattr(size, "expected", "a size in bytes such as 65536, 64k, 10M or 1G")   # read by expected_value()


#: Where a value in force came from, as ``--check-config`` says it.
ORIGINS = ("flag", "env", "file", "default")


class Config:
    """The values in force for one command: ``config.threads``, ``config.bind``...

    Besides the values: ``origins`` (setting name -> one of :data:`ORIGINS`),
    ``read_values`` (the values as built, before a command adjusts any) and
    what they were built from, so that :meth:`reread` can read the file again.
    """

    def __init__(self, command: str, values: dict, origins: Optional[dict] = None,
                 sources: tuple = ({}, {}, False)) -> None:
        self.command = command
        self.__dict__.update(values)
        self.origins = dict(origins or {})
        self.read_values = dict(values)
        self.sources = sources

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in sorted(self.read_values.items()))
        return f"Config({items})"

    if TYPE_CHECKING:
        # For the type checker: the settings are attributes made from the
        # declarations at run time (``config.threads``), read and set freely.
        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...

    @classmethod
    def build(cls, command: str, cli_values: Optional[dict] = None,
              environ: Optional[dict] = None, *, keywords: bool = False) -> "Config":
        """Merge command line values (``None`` = not given), environment, config file and defaults.

        ``keywords``: the values are a script's ``run(app, threads=8, ...)``
        arguments, not flags, and errors name them so.
        """
        cli_values = dict(cli_values or {})
        environ = dict(os.environ if environ is None else environ)
        declarations = load_declarations()
        from_file = config_file_values(command, cli_values, environ, declarations)
        values = {}
        origins = {}
        for s in declarations.values():
            if command not in s.commands:
                continue
            given = cli_values.get(s.name)
            option = f"run(): {s.name}" if keywords else s.option
            env_value = None if s.flag_only else environ.get(s.env)
            if s.multiple:
                if given:
                    values[s.name] = [s.convert(v, option, assigned=keywords) for v in given]
                    origins[s.name] = "flag"
                elif env_value:
                    values[s.name] = [s.convert(v, s.env, assigned=True)
                                      for v in env_value.split(",") if v.strip()]
                    origins[s.name] = "env"
                elif s.name in from_file:
                    values[s.name], origins[s.name] = from_file[s.name], "file"
                else:
                    values[s.name], origins[s.name] = list(s.default or []), "default"
            elif given is not None:
                values[s.name] = given if s.is_flag else s.convert(given, option, assigned=keywords)
                origins[s.name] = "flag"
            elif env_value not in (None, ""):
                values[s.name] = s.convert(env_value, s.env, assigned=True)
                origins[s.name] = "env"
            elif s.name in from_file:
                values[s.name], origins[s.name] = from_file[s.name], "file"
            else:
                values[s.name], origins[s.name] = s.default, "default"
        if keywords:
            problem = unknown_keywords(cli_values, command)
            if problem:
                raise ConfigError(problem)
        return cls(command, values, origins, (cli_values, environ, keywords))

    def reread(self) -> "Config":
        """The same command line and environment over the config file as it is now (SIGHUP).

        Raises :class:`ConfigError` when the file has become unreadable or wrong.
        """
        cli_values, environ, keywords = self.sources
        return Config.build(self.command, cli_values, environ, keywords=keywords)

    def changed(self, new: "Config") -> list:
        """The names of the settings whose value as read differs in ``new`` (a :meth:`reread`)."""
        return [name for name, value in new.read_values.items()
                if self.read_values.get(name) != value]


def config_file_values(command: str, cli_values: dict, environ: dict, declarations: dict) -> dict:
    """The values the ``--config`` file (or ``BRIDGE_CONFIG``) gives ``command``; {} without one.

    Only here is :mod:`bridge.configfile` imported (and with it ``tomllib``):
    a command without a config file pays nothing for the feature.
    """
    path = cli_values.get("config") or environ.get("BRIDGE_CONFIG")
    if not path or "config" not in declarations or command not in declarations["config"].commands:
        return {}
    from bridge.configfile import read_config_file
    return read_config_file(path, command, declarations)


def option_table(command: Optional[str] = None) -> str:
    """The Markdown table of settings for the docs (generated, never hand-written)."""
    rows = ["| flag | environment | default | commands | meaning |", "|---|---|---|---|---|"]
    for s in load_declarations().values():
        if command and command not in s.commands:
            continue
        flag = ", ".join(f"`{f}`" for f in s.flags) or f"`{s.name.upper()}`"
        default = "" if s.default in (None, [], "") else f"`{s.default}`"
        env = "" if s.flag_only else f"`{s.env}`"
        rows.append(f"| {flag} | {env} | {default} | {', '.join(sorted(s.commands))} | {s.help} |")
    return "\n".join(rows) + "\n"
