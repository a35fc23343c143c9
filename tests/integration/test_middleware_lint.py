"""``--lint``: a deliberately broken app served by ``bridge http`` logs what it does wrong."""
import time

import pytest
import requests

from support.middleware import front_door


@pytest.fixture(scope="module")
def door():
    front = front_door("http", "support.middleware_apps:app", "--lint")
    yield front
    front.stop()


def lint_lines(door, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in door.log().splitlines() if "bridge lint: " in line and needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.parametrize("path, words", [
    ("/broken/status", ("status",)),
    ("/broken/str-body", ("bytes",)),
    ("/broken/late-headers", ("start_response",)),
    ("/broken/header-type", ("X-Count",)),
])
def test_each_violation_is_logged_with_its_request(door, path, words):
    try:
        requests.get(door.url + path + "?from=test", timeout=10)
    except requests.exceptions.ChunkedEncodingError:
        pass   # late-headers: the core cuts a response it cannot finish; Lint only reports
    lines = lint_lines(door, f"GET {path}?from=test: ")
    assert lines, f"no lint line for {path}:\n{door.log()}"
    assert any(all(w.lower() in line.lower() for w in words) for line in lines), lines


def test_a_correct_request_logs_nothing_and_the_server_keeps_serving(door):
    r = requests.get(door.url + "/text?from=fine", timeout=10)
    assert r.status_code == 200 and len(r.content) > 1000
    assert lint_lines(door, "/text?from=fine", timeout=0.5) == []
