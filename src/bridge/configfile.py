"""``--config FILE``: the settings in a TOML file, and ``--check-config``'s report of them in TOML.

The keys are the names the settings are declared with (``workers = 4``,
``bind = ["unix:/run/app/app.sock"]``, ``static = {"/static" = "/srv/static"}``);
a table per command (``[http]``, ``[fcgi]``...) holds what only that command
has, and wins over the same key at the top.  A top-level key that another
command declares is left for that command, so one file can serve
``bridge fcgi`` and ``bridge http`` alike.  The command line and ``BRIDGE_*``
variables still win over the file (:meth:`bridge.config.Config.build`).

Values are taken in their natural TOML form and checked as strictly as the
command line: a string where a number is expected is an error, not a guess,
and every error is one line naming the file, the key and what is wrong, with
the nearest valid name for a typo.  Relative paths in the file are taken
from the directory bridge is started in, as on the command line.

Imported only when a config file is given (or ``--check-config``, whose
runner, :mod:`bridge.checkconfig`, loads the app besides): the
plain ``bridge cgi APP`` of every CGI request never pays for ``tomllib``.
``difflib`` and ``json`` (11 and 2 ms) are imported only for an error or the
report, so a CGI request that does read a file pays for the parser alone.

It imports nothing of bridge but :mod:`bridge.configbase`: :mod:`bridge.config`
imports it, so importing :mod:`bridge.config` (or what imports that: the
loader, the privileges) back would make one module of the two.
"""
from __future__ import annotations

from bridge.configbase import COMMANDS, WORKER_MODEL, ConfigError, octal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["read_config_file", "load_toml", "report", "others_can_write"]

#: gunicorn's names for settings bridge has under another name, for the "did you mean".
GUNICORN_NAMES = {"accesslog": "access_log", "errorlog": "error_log", "loglevel": "log_level",
                  "access_log_file": "access_log", "error_log_file": "error_log",
                  "keep_alive": "keepalive", "pidfile": "pid", "preload_app": "preload",
                  "access_logformat": "access_log_format", "raw_env": None}


def load_toml(path: str) -> dict:
    """The TOML document at ``path``; :class:`ConfigError` (one line) when it cannot be had."""
    try:
        import tomllib
    except ImportError:             # Python 3.10: tomllib is 3.11's; tomli is the same parser
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError(f"{path}: reading a config file needs Python 3.11 or later, or "
                              f"the tomli package on this Python (pip install tomli)") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def others_can_write(path: str, euid: "Any" = None) -> "Any":
    """Why a user other than root and the server's own could change the file at ``path``, or None.

    The file chooses the app, the user the workers run as, the pid file and
    the log files the master opens: whoever can rewrite it (or its
    directory, or replace a symlink on the way) runs code as the server at
    the next start or SIGHUP.  gunicorn and nginx do not look; sshd's
    StrictModes and sudo do, and so does this, as a warning: an operator
    may have a reason, and a refusal at HUP would be worse than the warning.
    Only the owners and the ``w`` bits are judged (no ACLs).
    """
    import os
    import stat
    euid = os.geteuid() if euid is None else euid
    trusted = {0, euid}
    seen = []
    real = os.path.realpath(path)
    for name in dict.fromkeys((path, real, os.path.dirname(os.path.abspath(path)) or "/",
                               os.path.dirname(real) or "/")):
        try:
            st = os.stat(name)
        except OSError:
            continue
        sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
        if st.st_uid not in trusted:
            seen.append(f"{name} is owned by uid {st.st_uid}")
        elif st.st_mode & stat.S_IWOTH and not sticky:
            seen.append(f"{name} is writable by every user")
        elif st.st_mode & stat.S_IWGRP and st.st_gid != 0 and not sticky:
            seen.append(f"{name} is writable by group {st.st_gid}")
    return "; ".join(seen) or None


def read_config_file(path: str, command: str, declarations: dict) -> dict:
    """``{setting name: value}`` that the file at ``path`` gives ``command``, converted and checked."""
    data = load_toml(path)
    chosen: dict = {}
    for key, value in data.items():
        if key in COMMANDS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key}: expected a table of settings for 'bridge {key}' "
                                  f"([{key}]), got {describe(value)}")
            continue
        s = known_setting(path, key, None, declarations)
        if command in s.commands:
            chosen[key] = value
    for table in COMMANDS:
        for key, value in data.get(table, {}).items():
            known_setting(path, key, table, declarations)
            if table == command:
                chosen[key] = value
    where = {key: f"[{command}] {key}" if key in data.get(command, {}) else key for key in chosen}
    return {key: from_toml(declarations[key], value, f"{path}: {where[key]}")
            for key, value in chosen.items()}


def known_setting(path: str, key: str, table: "Any", declarations: dict):
    """The declaration of ``key`` (in ``[table]``, or at the top); else the error, with a suggestion."""
    s = declarations.get(key)
    place = f"[{table}] {printable(key)}" if table else printable(key)
    if s is not None and not s.in_file:
        flag = s.flags[0] if s.flags else key
        raise ConfigError(f"{path}: {place}: {flag} is given on the command line, not in the file")
    if s is not None and table and table not in s.commands:
        raise ConfigError(f"{path}: {place}: not a setting of 'bridge {table}' (it is one of "
                          f"'bridge {', '.join(sorted(s.commands))}')")
    if s is None:
        raise ConfigError(f"{path}: {place}: unknown setting{suggestion(key, table, declarations)}")
    return s


def printable(key: str) -> str:
    """A key as it goes in a message: quoted when it holds what a terminal would act on."""
    return key if key.isprintable() and key.strip() == key and key else repr(key)


def suggestion(key: str, table: "Any", declarations: dict) -> str:
    """``; did you mean 'workers'?`` for a typo, a dash for an underscore, a gunicorn name."""
    if key in ("worker_class", "k"):
        return f"; {WORKER_MODEL}"
    names = [n for n, s in declarations.items() if s.in_file and (not table or table in s.commands)]
    if not table:
        names += list(COMMANDS)
    alias = GUNICORN_NAMES.get(key.lower().replace("-", "_"))
    if alias in names:
        return f"; did you mean {alias!r}?"
    import difflib        # only for a mistake: a CGI request that reads a file never pays for it
    close = difflib.get_close_matches(key.lower().replace("-", "_"), names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe(value: Any) -> str:
    """How a TOML value is named in a message: ``the string 'four'``, ``a table``..."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"a date/time ({value})"


def expected(s) -> str:
    if s.type is bool:
        return "true or false"
    if s.type is int:
        return "a whole number"
    if s.type is float:
        return "a number"
    if s.type is octal:
        return 'a file mode such as 0o660 or "0660"'
    return "a string"


def from_toml(s, value: Any, where: str) -> Any:
    """A TOML value as the setting ``s`` holds it; ``where`` is ``FILE: key`` for the message."""
    if s.multiple:
        return [s.convert(scalar(s, item, where), where, assigned=True) for item in items_of(s, value, where)]
    return s.convert(scalar(s, value, where), where, assigned=True) if s.type is not bool else scalar(s, value, where)


def items_of(s, value: Any, where: str) -> list:
    """The items of a multiple setting: a list, one string, or for a mapping a table."""
    if s.mapping and isinstance(value, dict):
        items = []
        for prefix, target in value.items():
            for one in target if isinstance(target, list) else [target]:
                if not isinstance(one, str):
                    raise ConfigError(f"{where}: {prefix!r}: expected a string, got {describe(one)}")
                items.append(f"{prefix}={one}")
        return items
    if isinstance(value, list):
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [value]
    shape = (f'a table such as {{"/static" = "/srv/app/static"}} or a list of "{s.metavar}" strings'
             if s.mapping else "a list of strings")
    raise ConfigError(f"{where}: expected {shape}, got {describe(value)}")


def scalar(s, value: Any, where: str) -> Any:
    """One value checked against the setting's type; what ``Setting.convert`` then takes."""
    kind = s.type
    if kind is bool:
        ok = isinstance(value, bool)
    elif isinstance(value, bool) or isinstance(value, (dict, list)):
        ok = False
    elif kind is int:
        ok = isinstance(value, int)
    elif kind is float:
        ok = isinstance(value, (int, float)) and value - value == 0     # not inf, not nan
    elif kind is octal:
        if isinstance(value, int):
            if not 0 <= value <= 0o777:
                raise ConfigError(f"{where}: {value} is not a file mode (0o{value:o} in octal); "
                                  f'write 0o660 or "0660"')
            return format(value, "o")
        ok = isinstance(value, str)
    elif kind is str:
        ok = isinstance(value, (str, int))       # user = 33: a uid
        value = str(value) if ok else value
    else:                                        # sizes, modes of their own: strings or numbers
        ok = isinstance(value, (str, int, float))
    if not ok:
        raise ConfigError(f"{where}: expected {expected(s)}, got {describe(value)}")
    return value


# -- --check-config ----------------------------------------------------------------

def render(s, value: Any) -> str:
    """``value`` in TOML, as the file would say it (the report can be pasted into one)."""
    if value is None:
        return ""
    if s.mapping:
        table: dict = {}
        for prefix, target in value:
            table.setdefault(prefix, []).append(target)
        inner = ", ".join(f"{toml_str(k)} = {toml_str(v[0]) if len(v) == 1 else toml_list(v)}"
                          for k, v in table.items())
        return "{" + inner + "}"
    if s.multiple:
        return toml_list(value)
    if s.type is octal:
        return f"0o{value:o}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return toml_str(value)


def toml_str(value: Any) -> str:
    import json
    return json.dumps(str(value))      # a JSON string is a TOML basic string


def toml_list(values: list) -> str:
    return "[" + ", ".join(toml_str(v) if not isinstance(v, (int, float)) else repr(v)
                           for v in values) + "]"


def report(config, declarations: dict) -> str:
    """Every setting of ``config.command`` with its value in force and where it came from."""
    path = getattr(config, "config", None)
    lines = [f"# bridge {config.command}: the settings in force"
             + (f" (config file {path})" if path else "")]
    rows = []
    for s in declarations.values():
        if config.command not in s.commands or s.flag_only:
            continue
        origin = config.origins.get(s.name, "default")
        origin = {"env": f"env {s.env}", "file": f"file {path}"}.get(origin, origin)
        value = getattr(config, s.name, None)
        text = render(s, value)
        if not text:
            left = f"# {s.name} is not set"
        elif not s.in_file:             # pasted into a file, the line must not be an error
            left = f"# {s.name} = {text}"
        else:
            left = f"{s.name} = {text}"
        rows.append((left, origin))
    width = min(40, max(len(left) for left, _ in rows))
    lines += [f"{left.ljust(width)}  # {origin}" for left, origin in rows]
    return "\n".join(lines) + "\n"
