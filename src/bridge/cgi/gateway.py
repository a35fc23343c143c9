"""The CGI gateway (RFC 3875): one request per process.

The environ comes from the CGI meta-variables (``os.environb``, decoded as
latin-1 so every byte the server sent reaches the app), the body from stdin
(never read past CONTENT_LENGTH, §4.2), the response goes to stdout as a CGI
response (§6: ``Status:`` line, header fields, blank line, body), flushed
per chunk so a streaming app streams.

Start-up is every request's cost, so this module imports only ``os`` and
``sys`` (already loaded by the interpreter) and ``bridge.wsgi``.
"""
from __future__ import annotations

import os
import sys

from bridge.wsgi import BoundedInput, call_app, encode_headers, make_environ

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional


class CGITransport:
    """Writes the CGI response to stdout (binary, unbuffered beyond one write per chunk)."""

    __slots__ = ("out",)

    def __init__(self, out) -> None:
        self.out = out

    def send_head(self, status: str, headers: list, body: bytes, end: bool) -> None:
        # RFC 3875 §6.3.3: the Status header field carries the status line.
        head = b"Status: " + status.encode("latin-1") + b"\r\n" + encode_headers(headers) + b"\r\n"
        self.out.write(head + body)
        self.out.flush()

    def send_body(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def finish(self) -> None:
        self.out.flush()

    def abort(self) -> None:
        # CGI has no way to say "incomplete" but to stop; the web server
        # closes the connection when the script exits.
        self.out.flush()


def cgi_environ(source: Optional[dict] = None) -> dict:
    """CGI meta-variables as latin-1 "bytes as str" (PEP 3333), from ``os.environb``."""
    if source is None:
        source = os.environb
        environ = {k.decode("latin-1"): v.decode("latin-1") for k, v in source.items()}
    else:
        environ = dict(source)
    # httpoxy: a Proxy: request header must not become a proxy setting for
    # the app or anything it starts.
    environ.pop("HTTP_PROXY", None)
    os.environ.pop("HTTP_PROXY", None)
    return environ


def run_cgi(app: Callable, *, stdin=None, stdout=None, stderr=None, environ: Optional[dict] = None,
            script_name: Optional[str] = None) -> int:
    """Handle the one request of this CGI process.  Returns 0 (the response was written)."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    errors = stderr if stderr is not None else sys.stderr
    env = cgi_environ(environ)
    try:
        length = int(env.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    env = make_environ(env, input=BoundedInput(stdin, max(length, 0)), errors=errors,
                       multithread=False, multiprocess=True, run_once=True)
    if script_name:
        from bridge.wsgi import apply_script_name
        apply_script_name(env, script_name)
    call_app(app, env, CGITransport(stdout))
    return 0


def write_error_response(out, message: str) -> None:
    """A valid 500 when the app could not even be loaded (the reason goes to stderr)."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    body = b"Internal Server Error\n"
    out.write(b"Status: 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    out.flush()


def main(config) -> int:
    """``bridge cgi APP``: load the app and serve this process's one request.

    If the app cannot be loaded the web server still gets a valid 500, and
    the reason goes to stderr (Apache's error log).
    """
    from bridge.loader import AppLoadError, load_app
    if "GATEWAY_INTERFACE" not in os.environ:
        sys.stderr.write("bridge cgi: GATEWAY_INTERFACE is not set, so this is not a CGI request.\n"
                         "  Run it from a web server (ScriptAlias), or try one request by hand:\n"
                         "  GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET PATH_INFO=/ bridge cgi APP\n")
        return 2
    try:
        app = load_app(config.app, config.pythonpath, config.chdir)
        import bridge.config as _config
        for hook in _config.APP_WRAPPERS:
            app = hook(app, config)
    except AppLoadError as exc:
        write_error_response(sys.stdout.buffer, f"bridge cgi: {exc}")
        return 0
    except Exception as exc:
        import traceback
        write_error_response(sys.stdout.buffer, f"bridge cgi: loading the app failed: {exc}\n{traceback.format_exc()}")
        return 0
    return run_cgi(app, script_name=config.script_name)
