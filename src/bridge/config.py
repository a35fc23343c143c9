"""Settings, declared once: name, flags, environment variable, default, help.

Each part of bridge declares the settings it reads in its own ``options``
module (next to the code they configure, unlike gunicorn's single 3,300-line
``config.py``).  The command line, the ``BRIDGE_*`` environment variables and
the option table in the docs are all generated from these declarations, so
they cannot disagree.  Precedence: command line, then environment, then default.
"""
from __future__ import annotations

import os

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

COMMANDS = ("cgi", "fcgi", "http", "check")
SERVERS = ("fcgi", "http")


class ConfigError(Exception):
    """A setting has a value that cannot work; the message says which and why."""


class Setting:
    """One setting.  ``multiple`` settings are repeatable flags (lists)."""

    __slots__ = ("name", "flags", "default", "type", "help", "commands", "section",
                 "multiple", "flag_only", "metavar", "choices", "validate", "positional")

    def __init__(self, name: str, flags: tuple, *, default: Any, type: Callable, help: str,
                 commands: Iterable[str], section: str, multiple: bool = False,
                 metavar: Optional[str] = None, choices: Optional[tuple] = None,
                 validate: Optional[Callable] = None, positional: bool = False) -> None:
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

    @property
    def env(self) -> str:
        return "BRIDGE_" + self.name.upper()

    @property
    def is_flag(self) -> bool:
        return self.type is bool

    def convert(self, raw: Any, origin: str) -> Any:
        try:
            if self.type is bool and isinstance(raw, str):
                low = raw.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(f"expected yes/no, got {raw!r}")
            value = self.type(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        if self.choices and value not in self.choices:
            raise ConfigError(f"{origin}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.validate is not None:
            try:
                self.validate(value)
            except ValueError as exc:
                raise ConfigError(f"{origin}: {exc}") from None
        return value


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


# Validators and types shared by several options modules.

def positive_int(value: int) -> None:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")


def non_negative(value: float) -> None:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")


def octal(raw: str) -> int:
    return int(raw, 8)


def size(raw: str) -> int:
    """``1048576``, ``64k``, ``10M``, ``1G`` → bytes."""
    raw = str(raw).strip()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(raw[-1:].lower(), 1)
    if mult != 1:
        raw = raw[:-1]
    return int(raw) * mult


class Config:
    """The values in force for one command: ``config.threads``, ``config.bind``..."""

    def __init__(self, command: str, values: dict) -> None:
        self.command = command
        self.__dict__.update(values)

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in sorted(self.__dict__.items()))
        return f"Config({items})"

    @classmethod
    def build(cls, command: str, cli_values: Optional[dict] = None,
              environ: Optional[dict] = None) -> "Config":
        """Merge command line values (``None`` = not given), environment and defaults."""
        cli_values = cli_values or {}
        environ = os.environ if environ is None else environ
        values = {}
        for s in load_declarations().values():
            if command not in s.commands:
                continue
            given = cli_values.get(s.name)
            if s.multiple:
                if given:
                    values[s.name] = [s.convert(v, f"{s.flags[0] if s.flags else s.name} {v!r}") for v in given]
                elif environ.get(s.env):
                    values[s.name] = [s.convert(v, f"{s.env}={v!r}") for v in environ[s.env].split(",") if v.strip()]
                else:
                    values[s.name] = list(s.default or [])
            elif given is not None:
                values[s.name] = given if s.is_flag else s.convert(given, f"{s.flags[0] if s.flags else s.name} {given!r}")
            elif environ.get(s.env) not in (None, ""):
                values[s.name] = s.convert(environ[s.env], f"{s.env}={environ[s.env]!r}")
            else:
                values[s.name] = s.default
        return cls(command, values)


def option_table(command: Optional[str] = None) -> str:
    """The Markdown table of settings for the docs (generated, never hand-written)."""
    rows = ["| flag | environment | default | commands | meaning |", "|---|---|---|---|---|"]
    for s in load_declarations().values():
        if command and command not in s.commands:
            continue
        flag = ", ".join(f"`{f}`" for f in s.flags) or f"`{s.name.upper()}`"
        default = "" if s.default in (None, [], "") else f"`{s.default}`"
        rows.append(f"| {flag} | `{s.env}` | {default} | {', '.join(sorted(s.commands))} | {s.help} |")
    return "\n".join(rows) + "\n"
