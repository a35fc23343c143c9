"""The CGI gateway (RFC 3875): one request per process.

The environ comes from the CGI meta-variables (``os.environb``, decoded as
latin-1 so every byte the server sent reaches the app), the body from stdin
(never read past CONTENT_LENGTH, §4.2), the response goes to stdout as a CGI
response (§6: ``Status:`` line, header fields, blank line, body), flushed
per chunk so a streaming app streams.

Whatever goes wrong (the app cannot be imported, it raises, it breaks the
WSGI contract) the web server still gets a valid ``500`` response, and the
traceback goes to stderr, which Apache writes to its error log.  The client
never sees a traceback.

Start-up is every request's cost, so this module imports only ``os`` and
``sys`` (already loaded by the interpreter) and ``bridge.wsgi``; the loader
only when the app is given by name, ``traceback`` only on failure.
"""
import os
import sys

from bridge.wsgi import (AmbiguousPath, BoundedInput, InputStream, call_app, encode_headers, make_environ,
                         refuse_ambiguous_path, remove_dot_segments)

# Annotations that name typing's types are strings, and there is no
# `from __future__ import annotations`: that line imports the __future__
# module, one more import every CGI request would pay (bridge cgi's path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Callable, Iterable, Optional, TextIO, Union

ERROR_RESPONSE = (b"Status: 500 Internal Server Error\r\n"
                  b"Content-Type: text/plain; charset=utf-8\r\n"
                  b"Content-Length: 22\r\n\r\n"
                  b"Internal Server Error\n")


class CGITransport:
    """Writes the CGI response to stdout: one write and one flush per chunk."""

    __slots__ = ("out", "started")

    def __init__(self, out: "BinaryIO") -> None:
        self.out = out
        self.started = False

    def send_head(self, status: str, headers: list, body: bytes, end: bool) -> None:
        # RFC 3875 §6.3.3: the Status header field carries the status line;
        # the web server turns it into the HTTP status line.
        self.started = True
        head = b"Status: " + status.encode("latin-1") + b"\r\n" + encode_headers(headers) + b"\r\n"
        self.out.write(head + body)
        self.out.flush()

    def send_body(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def finish(self) -> None:
        self.out.flush()

    def abort(self) -> None:
        # CGI has no way to say "incomplete" but to stop early: the response
        # is short of its Content-Length (or, chunked, lacks the last chunk),
        # which is how the web server and the client learn it was cut off.
        self.out.flush()


class InputToEOF(InputStream):
    """A body without CONTENT_LENGTH, delimited by the end of stdin.

    Apache (mod_cgi and mod_cgid) passes a chunked request body de-chunked,
    with ``HTTP_TRANSFER_ENCODING: chunked`` and no CONTENT_LENGTH, then
    closes the script's stdin: RFC 3875 §4.2 has no word for that, so the
    app gets the body up to EOF and ``wsgi.input_terminated`` (the
    convention for such bodies) instead of losing it.
    """

    def __init__(self, raw: "BinaryIO") -> None:
        super().__init__()
        self._raw = raw

    def _fill(self, n: int) -> bytes:
        return self._raw.read(min(n, 1 << 20))


def cgi_environ(source: "Optional[dict]" = None) -> dict:
    """CGI meta-variables as latin-1 "bytes as str" (PEP 3333), from ``os.environb``.

    httpoxy (CVE-2016-5385): a ``Proxy:`` request header arrives as
    ``HTTP_PROXY``, which HTTP libraries take as a proxy setting.  It is
    dropped from the environ *and* from ``os.environ``, so neither the app
    nor a program it starts can be pointed at the attacker's proxy.
    """
    if source is None:
        environ = {k.decode("latin-1"): v.decode("latin-1") for k, v in os.environb.items()}
    else:
        environ = dict(source)
    environ.pop("HTTP_PROXY", None)
    os.environ.pop("HTTP_PROXY", None)
    return environ


def write_error_response(out: "BinaryIO", message: str, errors: "Optional[TextIO]" = None) -> None:
    """A valid 500 when the app could not even be loaded; the reason goes to stderr."""
    errors = errors if errors is not None else sys.stderr
    try:
        errors.write(message.rstrip("\n") + "\n")
        errors.flush()
    except Exception:
        pass
    out.write(ERROR_RESPONSE)
    out.flush()


def _load(app: "Union[str, Callable, None]", pythonpath: "Iterable[str]", chdir: "Optional[str]",
          config: object = None, in_script: bool = False) -> "Callable":
    if isinstance(app, str):
        from bridge.loader import COMMAND_PATH_SETTINGS, SCRIPT_PATH_SETTINGS, load_app
        app = load_app(app, pythonpath, chdir,
                       path_settings=SCRIPT_PATH_SETTINGS if in_script else COMMAND_PATH_SETTINGS)
    elif pythonpath or chdir:
        from bridge.loader import prepare_path
        prepare_path(pythonpath, chdir)
    if config is not None:
        # --mount, middleware flags...: hooks(app, config) -> app
        import bridge.config as _config
        for hook in _config.app_wrappers():
            app = hook(app, config)
    if not callable(app):
        from bridge.loader import AppLoadError
        raise AppLoadError(f"{app!r} is not a callable WSGI application")
    return app


def run_cgi(app: "Union[str, Callable]", *, stdin: "Optional[BinaryIO]" = None,
            stdout: "Optional[BinaryIO]" = None, stderr: "Optional[TextIO]" = None,
            environ: "Optional[dict]" = None, script_name: "Optional[str]" = None,
            pythonpath: "Iterable[str]" = (), chdir: "Optional[str]" = None,
            config: object = None, in_script: bool = False) -> int:
    """Handle the one request of this CGI process; returns 0 (a response was written).

    ``app`` is a WSGI callable or its name (``"module:callable"``,
    ``"module:factory()"``, ``"module"``): given by name, a failure to import
    it still answers ``500`` (a cgi-bin script that does ``from myapp import
    app`` itself dies before bridge can answer, and Apache says only
    "End of script output before headers").  ``config`` (from ``bridge cgi``)
    applies the ``bridge.config.APP_WRAPPERS`` hooks.  ``in_script``: called
    by a cgi-bin script's ``run()``, so a failure to load names the script's
    ``run()`` arguments, not the command's flags.
    """
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    errors = stderr if stderr is not None else sys.stderr
    # stdout *is* the response: a stray print() in the app would corrupt the
    # headers.  Send it to the error log instead, as mod_wsgi does.
    saved_stdout = sys.stdout
    sys.stdout = errors
    transport = CGITransport(stdout)
    try:
        try:
            wsgi_app = _load(app, pythonpath, chdir, config, in_script)
        except Exception as exc:
            from bridge.config import ConfigError    # the error path only: no cost per request
            from bridge.loader import AppLoadError
            if isinstance(exc, (AppLoadError, ConfigError)):
                message = f"bridge cgi: {exc}"
            else:
                import traceback
                message = f"bridge cgi: loading the app failed:\n{traceback.format_exc()}"
            write_error_response(stdout, message, errors)
            return 0
        env = cgi_environ(environ)
        length = env.get("CONTENT_LENGTH")
        if not length and "chunked" in env.get("HTTP_TRANSFER_ENCODING", "").lower():
            body, terminated = InputToEOF(stdin), True
        else:
            try:
                body, terminated = BoundedInput(stdin, max(int(length or 0), 0)), False
            except ValueError:
                body, terminated = BoundedInput(stdin, 0), False
        env = make_environ(env, input=body, errors=errors, multithread=False,
                           multiprocess=True, run_once=True, input_terminated=terminated)
        if "/." in env["PATH_INFO"]:
            # Apache and nginx normalise before they route; a server that
            # did not must not let a mount route differently (RFC 3986 §5.2.4).
            try:
                env["PATH_INFO"] = remove_dot_segments(env["PATH_INFO"])
            except AmbiguousPath:
                wsgi_app = refuse_ambiguous_path
        if script_name:
            from bridge.wsgi import apply_script_name
            apply_script_name(env, script_name)
        call_app(wsgi_app, env, transport)
    except Exception:
        # A fault of the gateway itself (call_app never raises for the app's):
        # still a valid response if nothing was sent, the traceback in the log.
        import traceback
        message = f"bridge cgi: internal error:\n{traceback.format_exc()}"
        try:
            if transport.started:
                errors.write(message)
            else:
                write_error_response(stdout, message, errors)
        except Exception:
            pass
    finally:
        sys.stdout = saved_stdout
    return 0


#: The keywords of ``run()`` the CGI gateway itself takes (see :func:`run_script`).
CGI_KEYWORDS = frozenset(("stdin", "stdout", "stderr", "environ", "script_name", "pythonpath",
                          "chdir", "config"))


def run_script(app: "Union[str, Callable]", **options) -> int:
    """``bridge.run(app, ...)`` in a cgi-bin script started as CGI.

    The same script serves FastCGI under mod_fcgid, so its ``run()`` may
    carry settings of the server (``threads=8``): they mean nothing for one
    request and are left out, instead of a TypeError before any output
    (Apache's bare "End of script output before headers").  A keyword that
    is no setting at all gets a 500 and one line naming it, with the nearest
    setting for a typo.
    """
    extra = [name for name in options if name not in CGI_KEYWORDS]
    if extra:
        from bridge.config import unknown_keywords
        problem = unknown_keywords(extra)
        if problem:
            out = options.get("stdout") or sys.stdout.buffer
            write_error_response(out, f"bridge cgi: {problem}", options.get("stderr"))
            return 0
        options = {name: value for name, value in options.items() if name in CGI_KEYWORDS}
    return run_cgi(app, in_script=True, **options)


NOT_CGI = (
    "bridge cgi: GATEWAY_INTERFACE is not set, so this is not a CGI request.\n"
    "  Run it from a web server (Apache ScriptAlias, see docs/cgi.md), or try one request by hand:\n"
    "  GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET PATH_INFO=/ bridge cgi APP\n")


def main(config) -> int:
    """``bridge cgi APP [options]``: :func:`serve_one` with the command line's settings."""
    return serve_one(config.app, script_name=config.script_name, pythonpath=config.pythonpath,
                     chdir=config.chdir, config=config)


def serve_one(app: str, **options) -> int:
    """Load the app and serve this process's one request; 2 if it is not a CGI request.

    If the app cannot be loaded the web server still gets a valid 500, and
    the reason goes to stderr (Apache's error log).  Called directly (no
    ``config``) by :func:`bridge.main` for the plain ``bridge cgi APP``: no
    settings module is loaded then, so there is no ``APP_WRAPPERS`` hook to
    apply.
    """
    if "GATEWAY_INTERFACE" not in os.environ:
        sys.stderr.write(NOT_CGI)
        return 2
    return run_cgi(app, **options)
