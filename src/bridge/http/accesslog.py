"""The access log: Apache ``LogFormat`` directives, one write per request, reopened on SIGUSR1.

The default is Apache's "combined" format, so the usual log tools read it::

    %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"

The format is compiled once into a list of small functions; a request costs
one ``"".join`` and one ``os.write`` on an ``O_APPEND`` descriptor (atomic
for a line, so threads and processes never interleave inside one).  Reopening
(after logrotate moved the file) swaps the descriptor in place with ``dup2``,
so writers in other threads never see a closed descriptor.
"""
from __future__ import annotations

import os
import time

from bridge.logtext import escape   # the one escaping every log line uses
from bridge.server.logs import open_log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

COMBINED = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'


class Record:
    """What one finished request leaves for the log."""

    __slots__ = ("environ", "status", "headers", "bytes_sent", "start", "duration", "request_line")

    def __init__(self, environ: dict, status: str, headers: list, bytes_sent: int,
                 start: float, duration: float, request_line: str) -> None:
        self.environ = environ
        self.status = status
        self.headers = headers
        self.bytes_sent = bytes_sent
        self.start = start            # time.time() at the start of the request
        self.duration = duration      # seconds
        self.request_line = request_line


_month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_time_cache = [0, ""]


def _clf_time(t: float) -> str:
    sec = int(t)
    if _time_cache[0] != sec:
        lt = time.localtime(sec)
        off = lt.tm_gmtoff or 0
        sign = "+" if off >= 0 else "-"
        off = abs(off) // 60
        _time_cache[1] = (f"[{lt.tm_mday:02d}/{_month[lt.tm_mon - 1]}/{lt.tm_year}:"
                          f"{lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d} {sign}{off // 60:02d}{off % 60:02d}]")
        _time_cache[0] = sec
    return _time_cache[1]


def _request_header(name: str) -> Callable:
    low = name.lower()
    if low == "content-type":
        key = "CONTENT_TYPE"
    elif low == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")

    def get(r: Record) -> str:
        value = r.environ.get(key)
        return escape(value) if value else "-"
    return get


def _response_header(name: str) -> Callable:
    low = name.lower()

    def get(r: Record) -> str:
        for k, v in r.headers or ():
            if k.lower() == low:
                return escape(v)
        return "-"
    return get


DIRECTIVES = {
    "h": lambda r: r.environ.get("REMOTE_ADDR") or "-",
    "a": lambda r: r.environ.get("REMOTE_ADDR") or "-",
    "l": lambda r: "-",
    "u": lambda r: escape(r.environ.get("REMOTE_USER") or "-"),
    "t": lambda r: _clf_time(r.start),
    "r": lambda r: escape(r.request_line),
    "m": lambda r: r.environ.get("REQUEST_METHOD", "-"),
    "U": lambda r: escape(r.environ.get("SCRIPT_NAME", "") + r.environ.get("PATH_INFO", "")),
    "q": lambda r: ("?" + escape(r.environ["QUERY_STRING"])) if r.environ.get("QUERY_STRING") else "",
    "H": lambda r: r.environ.get("SERVER_PROTOCOL", "-"),
    "s": lambda r: (r.status or "-")[:3],
    ">s": lambda r: (r.status or "-")[:3],
    "b": lambda r: str(r.bytes_sent) if r.bytes_sent else "-",
    "B": lambda r: str(r.bytes_sent),
    "D": lambda r: str(int(r.duration * 1_000_000)),
    "T": lambda r: str(int(r.duration)),
    "p": lambda r: r.environ.get("SERVER_PORT", "-"),
    "v": lambda r: r.environ.get("SERVER_NAME", "-"),
    "P": lambda r: str(os.getpid()),
    "%": lambda r: "%",
}


def compile_format(fmt: str) -> list:
    """A LogFormat string → list of str literals and functions of a :class:`Record`."""
    parts: list = []
    literal = []
    i = 0
    n = len(fmt)
    while i < n:
        ch = fmt[i]
        if ch != "%":
            literal.append(ch)
            i += 1
            continue
        i += 1
        if i >= n:
            raise ValueError(f"access log format ends with a lone %: {fmt!r}")
        if fmt[i] == "{":
            end = fmt.find("}", i)
            if end < 0 or end + 1 >= n:
                raise ValueError(f"unterminated %{{...}} in access log format {fmt!r}")
            name = fmt[i + 1:end]
            kind = fmt[end + 1]
            if kind == "i":
                fn = _request_header(name)
            elif kind == "o":
                fn = _response_header(name)
            elif kind == "e":
                fn = (lambda key: lambda r: escape(str(r.environ.get(key) or "-")))(name)
            else:
                raise ValueError(f"unknown directive %{{{name}}}{kind} in access log format")
            i = end + 2
        else:
            code = fmt[i]
            if code == ">" and i + 1 < n:
                code = fmt[i:i + 2]
            if code == "%":
                literal.append("%")
                i += 1
                continue
            fn = DIRECTIVES.get(code)
            if fn is None:
                raise ValueError(f"unknown directive %{code} in access log format {fmt!r}")
            i += len(code)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(fn)
    if literal:
        parts.append("".join(literal))
    return parts


class AccessLog:
    """``--access-log -|FILE`` with ``--access-log-format``."""

    def __init__(self, target: str, fmt: Optional[str] = None) -> None:
        self.target = target
        self.parts = compile_format(fmt or COMBINED)
        if target == "-":
            self.fd = 1
            self.owned = False
        else:
            self.path = os.path.abspath(target)
            self.fd = self._open()
            self.owned = True

    def _open(self) -> int:
        return open_log(self.path)     # as root with --user: no link, handed to that user

    def format(self, record: Record) -> str:
        return "".join([p if type(p) is str else p(record) for p in self.parts])

    def log(self, record: Record) -> None:
        line = self.format(record) + "\n"
        try:
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass   # a full disk must not fail the request

    def reopen(self) -> None:
        """After logrotate: write to a new file at the same path (SIGUSR1)."""
        if not self.owned:
            return
        new = self._open()
        try:
            os.dup2(new, self.fd, inheritable=False)
        finally:
            os.close(new)

    def close(self) -> None:
        if self.owned:
            self.owned = False
            try:
                os.close(self.fd)
            except OSError:
                pass
