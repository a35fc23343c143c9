"""What :mod:`bridge.config` and :mod:`bridge.configfile` both need: the error, the commands, ``octal``.

A leaf (it imports nothing of bridge): :mod:`bridge.config` imports the
file reader only when a ``--config`` file is given, so the reader cannot
import :mod:`bridge.config` back without making the two one module.  The
names are re-exported by :mod:`bridge.config`, where everything else
imports them from.
"""

COMMANDS = ("cgi", "fcgi", "http", "check")

#: The answer to gunicorn's ``-k``/``--worker-class`` (on the command line and in a file).
WORKER_MODEL = ("bridge has one worker model, no worker class to choose: --workers processes, "
                "each with --threads threads for requests and an event loop for idle connections")


class ConfigError(Exception):
    """A setting has a value that cannot work; the message says which and why."""


def octal(raw: str) -> int:
    """``0660`` → a file mode; more than the permission and sticky bits is refused."""
    value = int(str(raw).strip(), 8)
    if not 0 <= value <= 0o7777:
        raise ValueError(raw)
    return value


setattr(octal, "expected", "an octal file mode such as 0660")   # read by config.expected_value()
