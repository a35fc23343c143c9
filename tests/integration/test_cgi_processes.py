"""CGI scripts never outlive what ran them: real ``bridge http`` masters, real scripts.

Each script exports a unique marker, so every process it starts (however
deep, even reparented to init) is found in ``/proc`` afterwards.
"""
from __future__ import annotations

import http.client
import textwrap

import pytest

from support import public_tmpdir
from support.prefork import get, wait_for
from support.procs import kill_marked, new_marker, wait_gone


def hanging_script(marker: str, *, head: bool, leave: bool = False) -> str:
    """A script that starts ``sleep 300`` in the background, then hangs (after its head or not).

    ``leave``: the script itself exits at once; the ``sleep 300`` it left
    holds its stdout, so the response never ends either."""
    d = public_tmpdir("bridge-cgi-procs-")
    path = d / "hang.sh"
    first = "printf 'Content-Type: text/plain\\n\\nworking'" if head else ":"
    path.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        export MARK={marker}
        {first}
        sleep 300 &
        {"exit 0" if leave else "while :; do sleep 1; done"}
        """))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def marker():
    mark = new_marker()
    yield mark
    kill_marked(mark)


@pytest.mark.parametrize("head", [False, True], ids=["before-its-head", "in-its-body"])
def test_a_worker_killed_by_timeout_takes_its_cgi_scripts_and_their_children_along(
        masters, marker, head):
    script = hanging_script(marker, head=head)
    m = masters("--timeout", "2", "--mount", f"/cgi=cgi:{script}", workers=1)
    (victim,) = m.children()
    try:
        get(m.port, "/cgi", timeout=15)
    except (OSError, http.client.HTTPException):
        pass       # the worker died with the request: a reset or an empty reply
    wait_for(lambda: victim not in m.children(), what="worker killed by --timeout")
    # The shell, its `sleep 300 &` and its `sleep 1`: none left, none reparented to init.
    assert wait_gone(marker, 10) == [], m.output()
    wait_for(lambda: "left" in m.output() and "behind" in m.output(), what="leftovers logged")
    assert get(m.port, "/")[0] == 200


@pytest.mark.parametrize("leave", [False, True], ids=["script-hangs", "script-left-a-child"])
def test_a_script_past_the_cgi_timeout_is_killed_with_its_children(masters, marker, leave):
    script = hanging_script(marker, head=False, leave=leave)
    m = masters("--mount", f"/cgi=cgi:{script}?timeout=1", workers=1)
    status, _ = get(m.port, "/cgi", timeout=15)
    assert status == 504
    assert wait_gone(marker, 5) == []
    assert victim_alive(m)


def victim_alive(m) -> bool:
    """The worker itself is untouched by a CGI timeout: still the same one, still serving."""
    return len(m.children()) == 1 and get(m.port, "/")[0] == 200
