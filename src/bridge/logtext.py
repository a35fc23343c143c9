"""Client data made safe for a log line: one escaping, used by every log.

A request path, a header or a script's output may hold anything once
percent-decoded: a LF or CR starts what looks like a new, forged log entry
(``/x%0a[2026-01-01 ...] [INFO] admin password reset``), ESC drives the
terminal of whoever runs ``tail -f``.  Every log line that carries such data
passes it through :func:`escape`, Apache's escaping for its logs (``mod_log_config``
and the error log): ``"`` and ``\\`` get a backslash, every byte outside
printable ASCII becomes ``\\xhh``.  The result is one printable ASCII line that
still shows what was sent, and a reader can tell an escaped byte from the
same four characters typed by the client (those arrive as ``\\\\x0a``).

No imports: the CGI path and the WSGI core's error path can afford it.
"""

__all__ = ["escape", "describe_request", "counted"]


def escape(value: str) -> str:
    """``value`` as one printable ASCII line (Apache's log escaping)."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    out = []
    for ch in value:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif 0x20 <= o < 0x7f:
            out.append(ch)
        elif o <= 0xff:
            out.append(f"\\x{o:02x}")   # a byte (PEP 3333 "bytes as str")
        else:
            out.append(f"\\u{o:04x}" if o <= 0xffff else f"\\U{o:08x}")
    return "".join(out)


def describe_request(environ: dict, query: bool = False) -> str:
    """``METHOD /script/path`` (``?query`` too if asked) of a request, escaped, for a log line.

    The query is left out unless asked for: it is in the access log already,
    and it is where tokens travel.
    """
    target = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if query and environ.get("QUERY_STRING"):
        target += "?" + environ["QUERY_STRING"]
    return f"{escape(str(environ.get('REQUEST_METHOD', '?')))} {escape(target) or '/'}"


def counted(n: int, noun: str, plural: str = "") -> str:
    """``1 request``, ``2 requests``, ``0 requests``: a count a person reads in a log line."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
