"""Commands written in the docs, run by the tests exactly as written.

A doc marks a shell block with ``<!-- command: NAME -->`` on the line
before it; :func:`doc_command` finds it, joins ``\\``-continued lines, fills
the ``{placeholders}`` and splits it like a shell would.  A leading
``bridge`` (or the README's ``.venv/bin/bridge`` under any directory) becomes
``python -m bridge`` with the test interpreter.  So the
commands a reader copies are the ones the suite proves.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from support import ROOT, bridge_command


def doc_commands(doc: str | Path, name: str) -> list:
    """Every command of the block called ``name`` in ``doc`` (relative to the repo root)."""
    text = (ROOT / doc).read_text()
    marker = f"<!-- command: {name} -->"
    start = text.find(marker)
    if start < 0:
        raise LookupError(f"{doc} has no block marked {marker}")
    fence = text.index("```", start)
    body_start = text.index("\n", fence) + 1
    body_end = text.index("```", body_start)
    joined = text[body_start:body_end].replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def doc_command(doc: str | Path, name: str, index: int = 0, *, literal: dict | None = None,
                **values) -> list:
    """The ``index``-th command of block ``name``, placeholders filled, as an argv list.

    ``literal`` replaces text the guide writes out for the reader
    (``/run/myproject``, ``myproject.wsgi:application``) with what the test
    can use (a private directory, a test app); every replacement must match.
    """
    line = doc_commands(doc, name)[index]
    for old, new in (literal or {}).items():
        if old not in line:
            raise KeyError(f"{doc} command {name!r} #{index} has no {old!r} to replace")
        line = line.replace(old, str(new))
    for key, value in values.items():
        line = line.replace("{" + key + "}", str(value))
    if "{" in line:
        missing = line[line.index("{"):].split("}")[0] + "}"
        raise KeyError(f"{doc} command {name!r} needs a value for {missing}")
    return shlex_bridge_argv(line)


def shlex_bridge_argv(line: str) -> list:
    """``line`` split as a shell would; ``bridge`` or ``.../.venv/bin/bridge`` is the one under test."""
    argv = shlex.split(line)
    if argv[0] == "bridge" or argv[0].endswith("/.venv/bin/bridge"):
        argv = bridge_command(*argv[1:])
    return argv
