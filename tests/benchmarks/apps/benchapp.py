"""The one WSGI app every server of the benchmark runs.

``/hello``  the 14-byte ``Hello, world!\\n`` (per-request overhead)
``/64k``    a 64 KiB body (response path, FastCGI record splitting)
``/echo``   the request body, byte-exact (uploads of 1 MiB and 10 MiB)

It answers with a Content-Length everywhere so that no server has to fall
back to chunking or closing, and it reads ``wsgi.input`` in 64 KiB pieces
as a real app would rather than asking for everything at once.
"""

HELLO = b"Hello, world!\n"
BIG = bytes(range(256)) * 256  # 65536 bytes
NOT_FOUND = b"Not Found\n"


def app(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "14")])
        return [HELLO]
    if path == "/64k":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", "65536")])
        return [BIG]
    if path == "/echo":
        stream = environ["wsgi.input"]
        try:
            remaining = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            remaining = 0
        parts = []
        while remaining > 0:
            chunk = stream.read(min(remaining, 65536))
            if not chunk:
                break
            parts.append(chunk)
            remaining -= len(chunk)
        body = b"".join(parts)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(NOT_FOUND)))])
    return [NOT_FOUND]
