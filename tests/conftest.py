"""Test-wide setup: tests/ on sys.path (for ``support``), src/ ahead of any installed copy,
and the Hypothesis profiles the property and fuzz tests run under.

Profiles (the fuzz tests set no ``max_examples`` of their own, so these decide):

- ``dev`` (default): 100 examples per test, a few seconds for the fuzz layer.
- ``ci`` (``CI=true``): 600 examples per test, the fuzz layer well under
  3 minutes on 2 cores.
- ``long`` (``BRIDGE_FUZZ=long``): 30,000 examples per test, about an hour,
  for a developer before a release (README.md, "Fuzzing").
- ``BRIDGE_FUZZ_EXAMPLES=N`` sets the examples per test over any of them.

None is derandomized: every run tries new inputs.  A failure prints the
reproduction blob (``@reproduce_failure``) and the shrunk example, which is
then committed as a regular test case once the defect is fixed.
"""
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

HERE = Path(__file__).resolve().parent
for entry in (str(HERE.parent / "src"), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

_COMMON = dict(deadline=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=100, **_COMMON)
settings.register_profile("ci", max_examples=600, **_COMMON)
settings.register_profile("long", max_examples=30_000, **_COMMON)


def _profile() -> str:
    if os.environ.get("BRIDGE_FUZZ") == "long":
        return "long"
    if os.environ.get("CI", "").lower() == "true":
        return "ci"
    return "dev"


settings.load_profile(_profile())
if os.environ.get("BRIDGE_FUZZ_EXAMPLES", "").isdigit():
    # For a run of a chosen length: examples per test, over any profile.
    settings.register_profile("chosen", parent=settings.get_profile(_profile()),
                              max_examples=int(os.environ["BRIDGE_FUZZ_EXAMPLES"]))
    settings.load_profile("chosen")


# --------------------------------------------------------------------------
# Every HTTP response a test receives is checked by a strict client (h11).
# The autouse fixture records the connections the test's own process opens
# (tests/support/strict_client.py says what that covers: requests,
# http.client, raw sockets, TLS) and, after the test, fails it if a response
# bridge, nginx or Apache sent was not valid HTTP/1.1: framing, header
# grammar, no body on HEAD/204/304, one response per request.

from support import strict_client  # noqa: E402  (needs tests/ on sys.path)

strict_client.install()


@pytest.fixture(autouse=True)
def strict_http_client():
    strict_client.take_captures()
    yield
    found = strict_client.problems(strict_client.take_captures())
    if found:
        pytest.fail("responses h11 does not accept as a client:\n" + "\n".join(found[:10]), pytrace=False)


def pytest_terminal_summary(terminalreporter):
    stats = strict_client.stats
    if stats["connections"]:
        terminalreporter.write_line(f"strict HTTP client (h11): {stats['responses']} responses on "
                                    f"{stats['connections']} connections checked")


@pytest.fixture(autouse=True)
def signal_state_is_restored():
    """A test that calls server code in-process (serve(), defer_signals()) may block
    HUP/USR1/TTIN/TTOU or install handlers: every server a later test spawns would
    inherit the mask and ignore SIGHUP.  Each test leaves the process as it found it."""
    import signal
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                                                  signal.SIGTTIN, signal.SIGTTOU, signal.SIGTERM,
                                                  signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD)}
    yield
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for signum, handler in handlers.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
