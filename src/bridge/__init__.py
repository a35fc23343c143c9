"""wsgi-bridge: one WSGI app, served as CGI, FastCGI or HTTP/1.1.

``from bridge import run; run(app)`` is all a cgi-bin script needs.  This
module imports nothing: a CGI request pays for every import.
"""

__version__ = "0.1.0"


def run(app, **options):
    """Serve ``app`` the way this process was started.

    A listening socket on fd 0 (mod_fcgid, spawn-fcgi) means FastCGI; a
    ``GATEWAY_INTERFACE`` in the environment means CGI; anything else gets a
    message saying how to run the script.  ``app`` is the WSGI callable or
    its name (``"module:callable"``): by name, a failure to import it still
    answers 500 under CGI instead of killing the script before any output.

    ``warm=True`` (CGI only, the app by name): relay each request to a
    FastCGI daemon that keeps the app loaded, started by the first request
    (:mod:`bridge.warm`; ``warm_dir``, ``warm_idle``, ``warm_threads``).
    Started with a listening socket on fd 0 the script serves FastCGI as
    always, so it also runs under mod_fcgid and ``cgi-fcgi``.
    """
    import os
    if _fd0_is_listening_socket():
        for key in ("warm", "warm_dir", "warm_idle", "warm_threads"):
            options.pop(key, None)
        from bridge.fastcgi.server import serve_inherited
        if isinstance(app, str):   # by name: load it now; a failure exits 2 with one line
            from bridge.loader import SCRIPT_PATH_SETTINGS, AppLoadError, load_app
            try:
                app = load_app(app, options.get("pythonpath", ()), options.get("chdir"),
                               path_settings=SCRIPT_PATH_SETTINGS)
            except AppLoadError as exc:
                import sys
                sys.stderr.write(f"bridge fcgi: {exc}\n")
                raise SystemExit(2)
        code = serve_inherited(app, **options)
        if code:    # a setting that cannot work: the process says so too (mod_fcgid logs it)
            raise SystemExit(code)
        return code
    if "GATEWAY_INTERFACE" in os.environ:
        if options.get("warm"):
            from bridge.warm import serve
            return serve(app, **options)
        from bridge.cgi.gateway import run_script
        return run_script(app, **options)
    import sys
    sys.stderr.write(
        "bridge.run(): this script is a CGI/FastCGI program and was started from neither.\n"
        "  - under a web server: put it in a ScriptAlias directory (CGI), or run it with\n"
        "    mod_fcgid or spawn-fcgi (FastCGI on fd 0);\n"
        "  - by hand: 'bridge http module:app' serves the app over HTTP, or set\n"
        "    GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=GET to try one CGI request.\n")
    raise SystemExit(2)


def main(argv=None) -> int:
    """The ``bridge`` command (``scripts/bridge``, ``python -m bridge``).

    ``bridge cgi APP`` with no other setting -- how a web server runs bridge,
    once per request -- goes straight to the CGI gateway: the command line
    (argparse imports ``re``), the settings declarations (every component's
    options) and even ``bridge.cli`` and ``bridge.config`` are never
    imported: about 5 % of a request's cold start (callgrind: 34.95 M ->
    33.21 M instructions; ``python -c pass`` is 28.96 M).  Anything else,
    including any ``BRIDGE_*`` variable in the environment, takes
    :func:`bridge.cli.main`; both give the same result for the plain form.
    ``bridge cgi --warm APP``, alone, goes as directly to the warm relay
    (:mod:`bridge.warm`).
    """
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) == 2 and args[0] == "cgi" and not args[1].startswith("-"):
        import os
        if not any(key.startswith("BRIDGE_") for key in os.environ):
            from bridge.cgi.gateway import serve_one
            return serve_one(args[1])
    if len(args) == 3 and args[:2] == ["cgi", "--warm"] and not args[2].startswith("-"):
        import os
        if not any(key.startswith("BRIDGE_") for key in os.environ):
            from bridge.warm import serve
            return serve(args[2], warm=True)
    from bridge.cli import main as cli_main
    return cli_main(args)


def mount(apps):
    """One WSGI app routing URL prefixes to apps (see :mod:`bridge.middleware.mount`)."""
    from bridge.middleware.mount import mount as _mount
    return _mount(apps)


def _fd0_is_listening_socket() -> bool:
    """True when fd 0 is a listening socket (the FastCGI convention, spec §2.2)."""
    import os
    import stat
    try:
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            return False
    except OSError:
        return False
    # _socket, not socket: under mod_cgid fd 0 of every CGI request is a
    # (connected) socket, and socket.py costs ~5 ms (enum, selectors).
    import _socket
    try:
        s = _socket.socket(fileno=os.dup(0))
    except OSError:
        return False
    try:
        return s.type == _socket.SOCK_STREAM and bool(s.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        s.close()
