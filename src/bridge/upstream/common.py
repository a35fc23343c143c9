"""What the upstream apps share: the request body, local redirects, the cut-off error.

:class:`~bridge.upstream.cgi.CGIApp` and
:class:`~bridge.upstream.fastcgi.FastCGIApp` hand a request to another
program and read a CGI response back (RFC 3875 §6), so they stream the body
the same way (§4.1.2: a known CONTENT_LENGTH), serve a local redirect the
same way (§6.2.2) and fail the same way once the head is sent.  Their short
error responses and log lines are :func:`bridge.wsgi.plain_response` and
:func:`bridge.wsgi.log_line`, which the middleware uses too.
"""
from __future__ import annotations

import io

from bridge.logtext import escape
from bridge.wsgi import (INTERNAL_REDIRECT_ROOT, AmbiguousPath, InternalRedirect, decode_path, log_line,
                         plain_response, remove_dot_segments)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable

__all__ = ["UpstreamError", "request_body", "local_redirect", "ROOT_KEY"]

#: The environ key under which the outermost :class:`~bridge.upstream.mount.Mount`
#: leaves a way to run a request again from the top: ``(mount, script_name)``.
#: :func:`local_redirect` uses it for RFC 3875 §6.2.2 local redirects, which
#: the *server* must serve "as if the client had asked for that URL",
#: whichever app owns it.
ROOT_KEY = "bridge.mount.root"


class UpstreamError(Exception):
    """The script or backend failed after the response head was sent: the response is cut off."""


def request_body(environ: dict) -> tuple:
    """``(stream, length)`` of the request body; ``(None, None)`` when there is none.

    RFC 3875 §4.1.2 wants CONTENT_LENGTH whenever there is a body, so a
    body of unknown length (HTTP/1.1 chunked, ``wsgi.input_terminated``)
    is spooled first (to disk past 1 MiB, never whole in memory).
    """
    stream = environ.get("wsgi.input")
    raw = environ.get("CONTENT_LENGTH", "")
    if raw:
        try:
            length = int(raw)
        except ValueError:
            length = 0
        return (stream, length) if length > 0 else (None, None)
    if stream is not None and environ.get("wsgi.input_terminated"):
        # Lazy: only a body of unknown length needs it (tempfile pulls in
        # random, shutil...), and under ``bridge cgi --mount`` every import
        # is paid by every request.
        import tempfile
        spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
        length = 0
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            spool.write(chunk)
            length += len(chunk)
        spool.seek(0)
        return (spool, length) if length else (None, None)
    return None, None


def local_redirect(app: Callable, environ: dict, location: str, start_response: Callable,
                   max_redirects: int = 10) -> Iterable[bytes]:
    """§6.2.2: serve ``location`` as if the client had asked for it, with GET and no body.

    Under bridge's gateways, by raising :class:`bridge.wsgi.InternalRedirect`:
    the whole stack -- status paths, Static, Gzip, every mount -- serves the
    new path from the top, as Apache's internal redirect does.  Under
    another WSGI server, from the top of the outermost :func:`bridge.mount`
    if there is one, else through ``app`` itself.  A path outside all of
    it becomes a 302 the client follows.  More than ``max_redirects`` in a
    row (a loop): 500, and a log line naming the last location.
    """
    depth = environ.get("bridge.cgi.redirects", 0) + 1
    if depth > max_redirects:
        log_line(environ, f"bridge: more than {max_redirects} CGI local redirects "
                          f"(last to {escape(location)}); giving up (500)")
        return plain_response(start_response, "500 Internal Server Error")
    uri = location.partition("#")[0]
    raw_path, _, query = uri.partition("?")
    try:
        path = remove_dot_segments(decode_path(raw_path.encode("latin-1")))
    except AmbiguousPath:
        log_line(environ, f"bridge: CGI local redirect to {escape(location)} has '..' after '//'; refused (502)")
        return plain_response(start_response, "502 Bad Gateway")
    whole_stack = environ.get(INTERNAL_REDIRECT_ROOT)
    mount_root = environ.get(ROOT_KEY)
    if whole_stack is not None:
        base = whole_stack
    elif mount_root is not None:
        app, base = mount_root
    else:
        base = environ.get("SCRIPT_NAME", "")
    if base and not (path == base or path.startswith(base + "/")):
        # Outside anything this process serves: let the client follow it.
        log_line(environ, f"bridge: CGI local redirect to {escape(location)} is outside {escape(base) or '/'}; "
                          f"sent as a 302 instead")
        start_response("302 Found", [("Location", location), ("Content-Length", "0")])
        return [b""]
    new = dict(environ)
    for key in ("CONTENT_LENGTH", "CONTENT_TYPE", "wsgi.input_terminated", ROOT_KEY):
        new.pop(key, None)
    new["REQUEST_METHOD"] = "GET"
    new["wsgi.input"] = io.BytesIO(b"")
    new["SCRIPT_NAME"] = base
    new["PATH_INFO"] = path[len(base):]
    new["QUERY_STRING"] = query
    new["REQUEST_URI"] = uri
    new["bridge.cgi.redirects"] = depth
    if whole_stack is not None:
        raise InternalRedirect(new)
    return app(new, start_response)
