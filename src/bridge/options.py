"""Settings every command shares: which app, where to find it, logging."""
from bridge.config import COMMANDS, setting

ALL = COMMANDS

setting("app", metavar="APP", positional=True, commands=ALL, section="app", restart="preload",
        help="the WSGI application: module:callable, module:factory() or module (means module:application)")
setting("config", "--config", "-c", metavar="FILE", commands=ALL, section="app", in_file=False,
        help="read settings from this TOML file (keys are the setting names: workers = 4; a "
             "[COMMAND] table for one command's); the command line and BRIDGE_* win over it")
setting("check_config", "--check-config", type=bool, default=False, commands=ALL, section="app",
        flag_only=True,
        help="check the settings and load the app, print every setting in force and where it came "
             "from (flag, env, file, default), then exit: 0 when all is well, else 2 with the problem "
             "(for deploy scripts and systemd ExecStartPre=)")
setting("pythonpath", "--pythonpath", multiple=True, default=[], metavar="DIR", commands=ALL,
        section="app", restart="preload", help="add DIR to sys.path before loading the app (repeatable)")
setting("chdir", "--chdir", metavar="DIR", commands=ALL, section="app", restart="preload",
        help="change to DIR before loading the app (it is also put on sys.path)")
setting("script_name", "--script-name", metavar="PREFIX", commands=ALL, section="app",
        help="mount prefix: moved from PATH_INFO to SCRIPT_NAME when the web server gets it wrong")
setting("log_level", "--log-level", default="info", metavar="LEVEL", commands=ALL, section="logging",
        choices=("debug", "info", "warning", "error", "critical"),
        help="error log level")
setting("error_log", "--error-log", "--error-logfile", "--log-file", default="-", metavar="FILE", commands=("fcgi", "http"),
        section="logging", help="where the error log goes: - for stderr, or a file (reopened on SIGUSR1)")

# -- bridge check (bridge.check): the request to try, as curl takes it ----------
# Validators import lazily: this module is imported on the CGI path.

CHECK = ("check",)


def _origin_form(value: str) -> None:
    """RFC 9112 §3.2.1 origin-form: an absolute path and an optional query, no spaces or controls."""
    if not value.startswith("/") or any(c <= " " or c == "\x7f" for c in value) or "#" in value:
        raise ValueError(f"{value!r} is not a path and query as a client sends it (e.g. /items?page=2)")


def _method(value: str) -> None:
    from bridge.http.abnf import METHOD
    if not METHOD.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP method (RFC 9110 §9.1: a token, e.g. GET)")


def header_line(raw: str) -> tuple:
    """``'Name: value'`` -> ``('Name', 'value')``, as RFC 9110 §5 allows it in a request."""
    from bridge.http.abnf import FIELD_NAME
    name, colon, value = str(raw).partition(":")
    value = value.strip(" \t")
    if not colon or not FIELD_NAME.fullmatch(name):
        raise ValueError("expected 'Name: value' with a field name of token characters (RFC 9110 §5.1)")
    if any(c in "\r\n\0" or (c < " " and c != "\t") or c == "\x7f" for c in value):
        raise ValueError("control characters (CR, LF, NUL...) are not allowed in a field value (RFC 9110 §5.5)")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("a field value must be latin-1 (PEP 3333 bytes as str)") from None
    return name, value


setting("check_path", "--path", default="/", metavar="PATH", commands=CHECK, section="check",
        validate=_origin_form,
        help="the request's path and query, as a client sends it (percent-encoded; e.g. /api/items?page=2)")
setting("check_method", "--method", "-X", metavar="METHOD", commands=CHECK, section="check", validate=_method,
        help="the request method (default GET, or POST with --data)")
setting("check_data", "--data", "-d", metavar="BODY", commands=CHECK, section="check",
        help="the request body, or @FILE to send a file's bytes (as curl); CONTENT_LENGTH is its size")
setting("check_headers", "--header", "-H", multiple=True, default=[], type=header_line, metavar="'NAME: VALUE'",
        commands=CHECK, section="check",
        help="a request header (repeatable): Host, Content-Type, Cookie, Authorization...")
