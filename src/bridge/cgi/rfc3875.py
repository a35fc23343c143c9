"""RFC 3875 (CGI/1.1), the server's side, sans-I/O: meta-variables out, a response head in.

Shared by :class:`bridge.cgi.app.CGIApp` (a script's stdout) and
:class:`bridge.fastcgi.client.FastCGIApp` (a backend's STDOUT, which §6 of
the same RFC describes), so a script answers the same whichever way it runs.
Nothing here does I/O; the tests feed it byte strings.
"""
from __future__ import annotations

from bridge.http.abnf import HEAD_ALLOWED_BYTES
from bridge.wsgi import HOP_BY_HOP, TCHAR, merge_content_length

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["cgi_variables", "find_head_end", "head_search_resume", "parse_head", "BadResponse",
           "CGIHead", "MAX_HEAD"]

#: A header block larger than this is garbage, not a CGI response.
MAX_HEAD = 64 * 1024

#: Variables a web server commonly adds beyond RFC 3875 §4.1 (Apache, nginx's
#: fastcgi_params) that scripts rely on; passed through from the environ.
PASS_THROUGH = frozenset((
    "AUTH_TYPE", "REMOTE_USER", "REMOTE_IDENT", "REMOTE_PORT", "SERVER_ADDR", "HTTPS",
    "REQUEST_URI", "DOCUMENT_URI", "CONTEXT_PREFIX", "CONTEXT_DOCUMENT_ROOT", "UNIQUE_ID",
))


# --------------------------------------------------------------------------
# RFC 3875 §4.1: request meta-variables


def _quote_path(path: str) -> str:
    from urllib.parse import quote
    return quote(path.encode("latin-1"), safe="/;=,@:!$&'()*+~")


def cgi_variables(environ: dict, *, script_name: Optional[str] = None, path_info: Optional[str] = None,
                  script_filename: Optional[str] = None, document_root: Optional[str] = None,
                  content_length: Optional[int] = None) -> dict:
    """The CGI meta-variables (str → latin-1 str) for a WSGI request.

    RFC 3875 §4.1 variables, every ``HTTP_*`` header except ``HTTP_PROXY``,
    ``SSL_*`` and the usual server extras (``REQUEST_URI``, ``HTTPS``,
    ``REQUEST_SCHEME``, ``SCRIPT_FILENAME``, ``DOCUMENT_ROOT``...).
    ``content_length`` is the body's real length (``None`` = no body).
    """
    env = {}
    for key, value in environ.items():
        if type(value) is not str:
            continue
        if key.startswith("HTTP_") or key.startswith("SSL_") or key in PASS_THROUGH:
            env[key] = value
    env.pop("HTTP_PROXY", None)
    # §4.1.18: Content-Length/Type travel as CONTENT_*; a client cannot forge them as headers.
    env.pop("HTTP_CONTENT_LENGTH", None)
    env.pop("HTTP_CONTENT_TYPE", None)
    sn = environ.get("SCRIPT_NAME", "") if script_name is None else script_name
    pi = environ.get("PATH_INFO", "") if path_info is None else path_info
    scheme = environ.get("wsgi.url_scheme", "http")
    from bridge import __version__
    env["GATEWAY_INTERFACE"] = "CGI/1.1"                                     # §4.1.4
    env["SERVER_SOFTWARE"] = environ.get("SERVER_SOFTWARE") or f"wsgi-bridge/{__version__}"  # §4.1.17
    env["SERVER_NAME"] = environ.get("SERVER_NAME", "localhost")             # §4.1.14
    env["SERVER_PORT"] = str(environ.get("SERVER_PORT", "80"))               # §4.1.15
    env["SERVER_PROTOCOL"] = environ.get("SERVER_PROTOCOL", "HTTP/1.0")      # §4.1.16
    env["REQUEST_METHOD"] = environ.get("REQUEST_METHOD", "GET")             # §4.1.12
    env["SCRIPT_NAME"] = sn                                                  # §4.1.13
    env["PATH_INFO"] = pi                                                    # §4.1.5
    env["QUERY_STRING"] = environ.get("QUERY_STRING", "")                    # §4.1.7
    addr = environ.get("REMOTE_ADDR", "")
    env["REMOTE_ADDR"] = addr                                                # §4.1.8
    env["REMOTE_HOST"] = environ.get("REMOTE_HOST") or addr                  # §4.1.9: address if no name
    if content_length is not None:                                           # §4.1.2
        env["CONTENT_LENGTH"] = str(content_length)
    ctype = environ.get("CONTENT_TYPE")
    if ctype:                                                                # §4.1.3
        env["CONTENT_TYPE"] = ctype
    if document_root:
        env["DOCUMENT_ROOT"] = document_root
        if pi:                                                               # §4.1.6
            env["PATH_TRANSLATED"] = document_root.rstrip("/") + pi
    if script_filename:
        env["SCRIPT_FILENAME"] = script_filename
    env["REQUEST_SCHEME"] = scheme
    if scheme == "https":
        env["HTTPS"] = "on"
    if "REQUEST_URI" not in env:
        uri = _quote_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        env["REQUEST_URI"] = uri + ("?" + env["QUERY_STRING"] if env["QUERY_STRING"] else "")
    return env


# --------------------------------------------------------------------------
# RFC 3875 §6: the script's response
#
#   CGI-Response   = document-response | local-redir-response |
#                    client-redir-response | client-redirdoc-response
#   header-field   = CGI-field | other-field
#   CGI-field      = Content-Type | Location | Status
#   Status         = "Status:" status-code SP reason-phrase NL
#   NL             = CR LF | LF   (§2.2: "the response ... MAY use LF alone")


class BadResponse(Exception):
    """The script's (or FastCGI backend's) output is not a CGI response: answer 502."""


class CGIHead:
    """A parsed header block: ``status`` (``None`` if not given), ``headers``, ``location``."""

    __slots__ = ("status", "headers", "location")

    def __init__(self, status: Optional[str], headers: list, location: Optional[str]) -> None:
        self.status = status
        self.headers = headers
        self.location = location

    @property
    def is_local_redirect(self) -> bool:
        """§6.2.2: a ``Location`` that is a local path and no ``Status``."""
        return self.status is None and self.location is not None and self.location.startswith("/") \
            and not self.location.startswith("//")

    def final_status(self) -> str:
        if self.status is not None:
            return self.status
        if self.location is not None:
            return "302 Found"   # §6.2.3/§6.2.4: client redirect
        return "200 OK"          # §6.3.3: "200 OK" when Status is omitted

    def __repr__(self) -> str:
        return f"CGIHead({self.status!r}, {self.headers!r}, {self.location!r})"


def split_log_lines(pending: bytes, data: bytes, end: bool = False) -> tuple:
    """A script's stderr, cut into whole lines for the log: ``(lines, pending)``.

    The last partial line waits for more (unless ``end``), but never past
    8 KiB, so a script that writes without newlines still reaches the log.
    Shared by CGIApp (stderr pipe) and FastCGIApp (FCGI_STDERR).
    """
    lines = (pending + data).split(b"\n")
    pending = b"" if end else lines.pop()
    if len(pending) > 8192:
        lines.append(pending)
        pending = b""
    return [line.rstrip(b"\r").decode("utf-8", "replace") for line in lines], pending


def find_head_end(buf: bytes, start: int = 0) -> Optional[tuple]:
    """``(head_length, body_start)`` once ``buf`` holds the blank line ending the header block.

    Lines end in LF or CRLF (§6.1, §2.2).  ``start`` lets a caller resume the
    search where the previous one stopped (pass the returned value of
    :func:`head_search_resume`).  ``None`` while the blank line has not come.
    """
    if buf.startswith(b"\n"):
        return 0, 1
    if buf.startswith(b"\r\n"):
        return 0, 2
    i = max(start, 0)
    while True:
        i = buf.find(b"\n", i)
        if i < 0:
            return None
        j = i + 1
        if buf[j:j + 1] == b"\n":
            return i + 1, j + 1
        if buf[j:j + 2] == b"\r\n":
            return i + 1, j + 2
        if j >= len(buf) - 1:
            return None   # maybe "\n\r" then "\n" next time: look again from here
        i = j


def head_search_resume(buf: bytes) -> int:
    """Where :func:`find_head_end` may resume after ``buf`` grows (a LF may be split off)."""
    return max(0, len(buf) - 3)


def _reason(code: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def parse_head(head: bytes) -> CGIHead:
    """Parse the header block (everything before the blank line) of a CGI response.

    Raises :class:`BadResponse` with the reason when it is not one: a line
    without a colon, a bad field name, a bad ``Status``, a control
    character, or no CGI field at all (§6.2: a response has at least one of
    Content-Type, Location, Status).
    """
    status = None
    location = None
    headers: list = []
    has_type = False
    length = None
    # RFC 9110 §5.5: CR, LF, NUL and the other CTLs (HTAB aside) are invalid
    # in a field.  One check over every byte of the block, before any line
    # is looked at, so no kind of line (folded or not) can carry one past it.
    bad = head.translate(None, HEAD_ALLOWED_BYTES)
    if bad:
        raise BadResponse(f"control character {bad[:1]!r} in the header block")
    for raw in head.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\r" in raw:
            raise BadResponse(f"bare CR in a header line: {raw[:80]!r}")
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            # obs-fold (RFC 9112 §5.2): a continuation joins the previous
            # field, the fold replaced by one space.
            if not headers:
                raise BadResponse(f"header block starts with a continuation line: {raw[:80]!r}")
            name, value = headers[-1]
            headers[-1] = (name, value + " " + raw.strip(b" \t").decode("latin-1"))
            continue
        name, colon, value = raw.partition(b":")
        if not colon:
            raise BadResponse(f"header line without a colon: {raw[:80]!r}")
        try:
            name_s = name.decode("ascii")
        except UnicodeDecodeError:
            raise BadResponse(f"header name is not ASCII: {name[:80]!r}") from None
        if not name_s or not all(c in TCHAR for c in name_s):
            raise BadResponse(f"invalid header name {name[:80]!r}")
        value_s = value.strip(b" \t").decode("latin-1")
        lower = name_s.lower()
        if lower == "status":
            if status is not None:
                raise BadResponse("two Status header fields")
            code = value_s[:3]
            if len(code) != 3 or not code.isdigit() or not code.isascii() or not 200 <= int(code) <= 599 \
                    or (len(value_s) > 3 and value_s[3] != " "):
                raise BadResponse(f"invalid Status {value_s[:80]!r}")
            reason = value_s[4:].strip() or _reason(int(code))
            status = f"{code} {reason}"
        elif lower == "location":
            if location is not None:
                raise BadResponse("two Location header fields")
            if not value_s:
                raise BadResponse("empty Location header")
            location = value_s
            headers.append(("Location", value_s))
        elif lower in HOP_BY_HOP:
            continue
        else:
            if lower == "content-type":
                has_type = True
            elif lower == "content-length":
                # The WSGI core's rule: differing values are refused (502 here),
                # identical ones count as one field.
                seen = length is not None
                try:
                    length = merge_content_length(length, value_s)
                except ValueError as exc:
                    raise BadResponse(str(exc)[:120]) from None
                if seen:
                    continue
            headers.append((name_s, value_s))
    if status is None and location is None and not has_type:
        raise BadResponse("no Status, Location or Content-Type header: not a CGI response")
    return CGIHead(status, headers, location)
