"""WSGI apps for the process manager tests (tests/integration/test_process_manager.py).

``app``: ``/`` answers the worker's pid; ``/sleep?s=N`` sleeps N seconds
first (``&pid=P``: only in the worker whose pid is P); ``/hang`` never ends (for --timeout); ``/status-probe`` echoes REMOTE_ADDR.
``crashing_app``: imports fine, then its worker dies a moment later (a crash loop).
"""
import os
import threading
import time


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/sleep":
        from urllib.parse import parse_qs
        query = parse_qs(environ.get("QUERY_STRING", ""))
        seconds = float(query.get("s", ["1"])[0])
        if int(query.get("pid", [os.getpid()])[0]) == os.getpid():
            time.sleep(seconds)
    elif path == "/hang":
        while True:
            time.sleep(0.5)
    body = f"{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def crashing_app_factory():
    threading.Timer(0.2, os._exit, args=(1,)).start()
    return app
