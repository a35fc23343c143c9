"""``bridge COMMAND --check-config``: the settings in force, then what starting would check.

The report is :mod:`bridge.configfile`'s (the settings as a TOML file
would say them); the checks need the loader and the ``--user`` lookup,
which import :mod:`bridge.config`.  So they live here, imported by the
command line only (:mod:`bridge.cli`), and the file reader stays a leaf
that :mod:`bridge.config` can import.
"""
from __future__ import annotations

import sys

from bridge.config import load_declarations
from bridge.configfile import report

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def check(config, runner_module: Any) -> "Any":
    """``--check-config``: what starting would check, without listening; a one-line problem or None.

    The command's own check (``check_config`` of its runner module: TLS files,
    trusted proxies, log format), the ``--user``/``--group`` lookup, then the
    app itself, loaded as the workers would load it (with the workers' ids).
    """
    own = getattr(runner_module, "check_config", None)
    problem = own(config) if own is not None else None
    if problem:
        return problem
    identity = None
    if getattr(config, "user", None) or getattr(config, "group", None):
        from bridge.server.privileges import resolve
        try:
            identity = resolve(config.user, getattr(config, "group", None))
        except (OSError, LookupError) as exc:
            return str(exc)
    from bridge.loader import load_from_config
    if identity is not None:
        from bridge.server.privileges import effective
        with effective(identity):
            load_from_config(config)         # exits 2 with one line when it cannot
    else:
        load_from_config(config)
    return None


def check_command(config, runner_module: str) -> int:
    """``bridge COMMAND --check-config``: the report on stdout, then 0 or 2 and the problem."""
    import importlib
    runner = importlib.import_module(runner_module)
    default_bind = getattr(runner, "default_bind", None)
    if default_bind is not None:        # where it will listen, not an empty list
        default_bind(config)
    sys.stdout.write(report(config, load_declarations()))
    sys.stdout.flush()
    problem = check(config, runner)
    if problem:
        sys.stderr.write(f"bridge {config.command}: {problem}\n")
        return 2
    sys.stdout.write(f"# bridge {config.command}: the settings are valid and the app loads\n")
    return 0
