"""WSGI apps the middleware integration tests serve (``support.middleware_apps:app``).

``/text``     20 KB of text/plain, with a strong ETag and a Content-Length
``/json``     a JSON document of unknown length (a generator)
``/png``      incompressible bytes labelled image/png
``/events``   a server-sent-events stream: event N+1 is produced only once the
              file ``GATE_DIR/gate-N`` exists (``?gate=DIR``), so a test can
              prove event N reached it before event N+1 was even made
``/broken/*`` apps that break the WSGI contract, for ``--lint``
"""
import os
import time

TEXT = b"".join(b"line %05d: the quick brown fox jumps over the lazy dog\n" % i for i in range(360))
PNG = bytes(range(256)) * 16


def _wait_for(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def events(environ, start_response):
    query = dict(p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p)
    gate = query.get("gate")
    count = int(query.get("n", "4"))
    start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
    for i in range(count):
        if i and gate:
            _wait_for(os.path.join(gate, f"gate-{i - 1}"))
        yield b"id: %d\ndata: event number %d %s\n\n" % (i, i, b"x" * 40)


def broken(environ, start_response):
    what = environ["PATH_INFO"].rsplit("/", 1)[-1]
    if what == "status":
        start_response(200, [("Content-Type", "text/plain")])      # int, not "200 OK"
        return [b"bad status"]
    if what == "str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]
    if what == "late-headers":
        def body():
            yield b"first chunk"
            start_response("200 OK", [("Content-Type", "text/plain")])   # a second call, after output
            yield b"second chunk"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()
    if what == "header-type":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Count", 3)])
        return [b"bad header value"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fine"]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/text":
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("ETag", '"text-v1"'),
                                  ("Content-Length", str(len(TEXT)))])
        return [TEXT]
    if path == "/json":
        start_response("200 OK", [("Content-Type", "application/json")])
        return (b'{"n": %d}\n' % i for i in range(2000))
    if path == "/png":
        start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(len(PNG)))])
        return [PNG]
    if path == "/events":
        return events(environ, start_response)
    if path.startswith("/broken/"):
        return broken(environ, start_response)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such page\n"]
