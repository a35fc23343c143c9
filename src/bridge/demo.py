"""The demo app: the README's quick start and the integration tests' app.

``/``        a page that greets and lists the environ it received (PEP 333's simple_app)
``/echo``    the request body, byte-exact (``application/octet-stream``)
``/stream``  a few chunks with small pauses (``?n=5&delay=0.2``), to see streaming work
``/hello``   the 14-byte ``Hello, world!\\n`` (benchmarks)
``/error``   raises, to see a 500 that leaks nothing
any other   the environ page with status 404 (shows the SCRIPT_NAME/PATH_INFO a mount produced)
"""

def app(environ, start_response):
    path = environ.get("PATH_INFO", "") or "/"
    handler = ROUTES.get(path.rstrip("/") or "/")
    if handler is None:
        return index(environ, start_response, "404 Not Found")
    return handler(environ, start_response)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!\n"]


def index(environ, start_response, status="200 OK"):
    import html   # lazily: html imports re, which a CGI /hello request should not pay for
    rows = []
    for key in sorted(environ):
        value = environ[key]
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(repr(value) if not isinstance(value, str) else value)}</td></tr>")
    page = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>wsgi-bridge</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "td,th{vertical-align:top;font-size:90%;border-bottom:1px solid #eee}</style></head><body>"
        "<h1>Hello from wsgi-bridge</h1>"
        "<p>This page is the demo app. It lists the WSGI environ this request produced. "
        "Try <a href=\"stream\">stream</a> or POST something to <code>echo</code>.</p>"
        f"<table>{''.join(rows)}</table></body></html>\n"
    )
    # PEP 3333 "bytes as str": environ strings are latin-1 decoded bytes; the
    # page shows them as the app received them, in UTF-8.
    body = page.encode("utf-8", "surrogateescape")
    start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def echo(environ, start_response):
    # read(CONTENT_LENGTH): the body is exactly that long (PEP 3333: an app
    # should not read past it; bare read() is allowed but reads to the end).
    # Without CONTENT_LENGTH a gateway that delimits the body itself says so
    # with wsgi.input_terminated (chunked uploads): then read to the end.
    stream = environ["wsgi.input"]
    if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        try:
            length = max(int(environ.get("CONTENT_LENGTH") or 0), 0)
        except ValueError:
            length = 0
        body = stream.read(length)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def stream(environ, start_response):
    query = dict(p.partition("=")[::2] for p in environ.get("QUERY_STRING", "").split("&") if p)
    try:
        count = min(int(query.get("n", 5)), 1000)
        delay = min(float(query.get("delay", 0.2)), 5.0)
    except ValueError:
        count, delay = 5, 0.2
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                              ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])

    def chunks():
        import time
        for i in range(count):
            if i:
                time.sleep(delay)
            yield f"chunk {i}\n".encode()
    return chunks()


def error(environ, start_response):
    raise RuntimeError("the demo app failed on purpose (secret: do-not-leak)")


ROUTES = {"/": index, "/echo": echo, "/stream": stream, "/hello": hello, "/error": error}
