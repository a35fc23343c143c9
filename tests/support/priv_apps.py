"""An app for tests/integration/test_master_privileges.py: who imported it, and a slow import.

``/`` answers ``PID IMPORT_EUID EUID``: the effective uid the module was
imported with (``--preload`` imports in the master) and the one serving;
``/err`` also writes a line to ``wsgi.errors`` (the error log).
``BRIDGE_TEST_IMPORT_MARKER=DIR`` writes ``DIR/importing.PID`` when the
import starts, then the import sleeps ``BRIDGE_TEST_IMPORT_DELAY`` seconds:
a test sends its signal between the two.
"""
import os
import time

IMPORT_EUID = os.geteuid()

_marker = os.environ.get("BRIDGE_TEST_IMPORT_MARKER")
if _marker:
    with open(os.path.join(_marker, f"importing.{os.getpid()}"), "w"):
        pass
time.sleep(float(os.environ.get("BRIDGE_TEST_IMPORT_DELAY", "0")))


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/err":
        environ["wsgi.errors"].write(f"app line from {os.getpid()}\n")
    body = f"{os.getpid()} {IMPORT_EUID} {os.geteuid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
