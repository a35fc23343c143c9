"""Shared by tests/integration/test_composition_*.py: fixture paths and starting bridge."""
from __future__ import annotations

from pathlib import Path

from support import ROOT, Process, bridge_env, wait_for_path, wait_for_port

FIXTURES = ROOT / "tests" / "integration" / "fixtures"
SITE = FIXTURES / "wsgi"          # newsite:app, the "new" Python site
CGI_BIN = FIXTURES / "cgi-bin"    # shell, Python and Perl CGI scripts
PHP = FIXTURES / "php"            # the "old" PHP site
DOC = "docs/composition.md"


def start_bridge(argv: list, *, port: int | None = None, socket: str | Path | None = None) -> Process:
    """Start a bridge command and wait until it listens (TCP ``port`` or unix ``socket``)."""
    process = Process(argv, env=bridge_env())
    try:
        if port is not None:
            wait_for_port(port, proc=process.proc)
        else:
            wait_for_path(str(socket), proc=process.proc)
    except Exception:
        process.stop()
        raise RuntimeError(f"{' '.join(map(str, argv))} did not start:\n{process.output()}") from None
    return process
