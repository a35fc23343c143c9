"""Events and errors of the HTTP/1.1 protocol (what :mod:`bridge.http.protocol` hands out).

As in h11's ``_events.py``: plain classes with slots, sentinels for "read
more" and "answer first", and errors that carry the status to answer with.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

REASONS = {
    100: "Continue", 400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


class RemoteProtocolError(Exception):
    """The client sent something HTTP/1.1 does not allow; answer ``status`` and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(Exception):
    """The server side used the connection out of order (a bug in the caller)."""


# --------------------------------------------------------------------------
# Events


class Request:
    """A complete request head.  All strings are latin-1 "bytes as str"."""

    __slots__ = ("method", "target", "path", "query", "http_version", "headers", "host",
                 "keep_alive", "expect_continue", "content_length", "chunked")

    def __init__(self, method: str, target: str, path: str, query: str, http_version: str,
                 headers: list, host: Optional[str], keep_alive: bool, expect_continue: bool,
                 content_length: Optional[int], chunked: bool) -> None:
        self.method = method
        self.target = target             # as sent, for the access log
        self.path = path                 # still percent-encoded
        self.query = query               # raw, without "?"
        self.http_version = http_version  # "1.1", "1.0"
        self.headers = headers           # [(lower-case name, value)], in order received
        self.host = host                 # Host, or the authority of an absolute-form target
        self.keep_alive = keep_alive     # what the client asked for
        self.expect_continue = expect_continue
        self.content_length = content_length
        self.chunked = chunked

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} HTTP/{self.http_version}>"


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<Data {len(self.data)} bytes>"


class EndOfMessage:
    __slots__ = ("trailers",)

    def __init__(self, trailers: Optional[list] = None) -> None:
        self.trailers = trailers or []

    def __repr__(self) -> str:
        return "<EndOfMessage>"


class ConnectionClosed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<ConnectionClosed>"


class Sentinel:
    """A named state or marker (``NEED_DATA``, ``IDLE``...): compared by identity, printed by name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = Sentinel("NEED_DATA")
PAUSED = Sentinel("PAUSED")

# Response-side event kinds (the server "sends" these through the methods below).
RESPONSE = Sentinel("Response")
INFORMATIONAL = Sentinel("InformationalResponse")
