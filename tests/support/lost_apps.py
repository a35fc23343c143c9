"""The app of tests/integration/test_no_request_lost.py: every answer names the request.

Each answer is ``"<pid> <id> <body length>\\n"`` (``id`` from the query), so
the test matches responses to requests and sees which worker served each.
A POST records that it ran: one line appended to ``$LOST_DIR/<id>`` (a
non-idempotent request that ran twice leaves two lines).  ``s=`` sleeps that
long first; ``files=N`` then opens N files at once (needs descriptors late in
the request, as an app that opens a template or a database connection does).
"""
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    rid = query.get("id", "-")
    stream = environ["wsgi.input"]
    body = b""
    while True:
        data = stream.read(65536)
        if not data:
            break
        body += data
    if environ["REQUEST_METHOD"] == "POST":
        record(rid)
    if "s" in query:
        time.sleep(float(query["s"]))
    held = []
    try:
        for _ in range(int(query.get("files", 0))):
            held.append(open(os.devnull, "rb"))
    finally:
        for f in held:
            f.close()
    out = f"{os.getpid()} {rid} {len(body)}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def record(rid: str) -> None:
    if not rid.isalnum():
        raise ValueError("a POST's id must be alphanumeric")
    fd = os.open(os.path.join(os.environ["LOST_DIR"], rid), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
