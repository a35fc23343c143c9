"""One request byte stream through three HTTP/1.1 request parsers, same shape out.

Used by the differential tests (tests/unit/test_fuzz_http.py): bridge's
sans-I/O :class:`bridge.http.protocol.Connection`, h11 in the server role
(pure Python, strict) and llhttp through httptools (the parser of Node.js
and uvicorn).  Each run gives a :class:`Parsed`: the complete requests, in
order, as plain tuples, and how the stream ended:

``"clean"``   every byte belonged to a complete request (or the connection
              stops being read after a request that does not keep it alive),
``"partial"`` the stream stops inside a request (the parser waits for more),
``"error"``   the parser refused the stream after ``requests``.

A parser stops after a request that ends the connection (HTTP/1.0, or
``Connection: close``), as a server would: what follows is never read.
Header names are lower-cased, values stripped of OWS, so that only real
differences remain.
"""
from __future__ import annotations

import h11
import httptools

from bridge.http import protocol as bridge_http

CLEAN, PARTIAL, ERROR = "clean", "partial", "error"


class Parsed:
    __slots__ = ("requests", "end", "error")

    def __init__(self) -> None:
        self.requests: list = []   # (method, target, version, headers, body, trailers)
        self.end = CLEAN
        self.error = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Parsed) and (self.requests, self.end) == (other.requests, other.end)

    def __repr__(self) -> str:
        return f"Parsed({self.end}{' ' + self.error if self.error else ''}, {self.requests!r})"


def _ows(value: bytes) -> bytes:
    return value.strip(b" \t")


def ends_connection(version: bytes, headers: list) -> bool:
    """HTTP/1.0 (h11 never keeps a 1.0 connection), or ``close`` in Connection."""
    if version != b"1.1":
        return True
    for name, value in headers:
        if name == b"connection" and b"close" in [v.strip(b" \t").lower() for v in value.split(b",")]:
            return True
    return False


# --------------------------------------------------------------------------
# bridge


def run_bridge(data: bytes, pieces: list = None) -> Parsed:
    """``pieces``: feed these (joined, they are ``data``) one after another."""
    out = Parsed()
    conn = bridge_http.Connection()
    feeds = list(pieces) if pieces is not None else [data]
    current = None
    try:
        while True:
            event = conn.next_event()
            if event is bridge_http.NEED_DATA:
                if not feeds:
                    break
                conn.receive_data(feeds.pop(0))
                continue
            if isinstance(event, bridge_http.Request):
                headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in event.headers]
                current = [event.method.encode("latin-1"), event.target.encode("latin-1"),
                           event.http_version.encode("latin-1"), headers, b"", []]
            elif isinstance(event, bridge_http.Data):
                current[4] += event.data
            elif isinstance(event, bridge_http.EndOfMessage):
                current[5] = [(n.encode("latin-1"), _ows(v.encode("latin-1"))) for n, v in event.trailers]
                out.requests.append(tuple(current))
                stop = ends_connection(current[2], current[3])
                current = None
                if stop:
                    return out
                conn.response_head("200 OK", b"", 0, True)
                conn.end_response()
                conn.start_next_cycle()
    except bridge_http.RemoteProtocolError as exc:
        out.end, out.error = ERROR, f"{exc.args[0]} ({exc.status})"
        return out
    if current is not None or conn.trailing_data[0]:
        out.end = PARTIAL
    return out


# --------------------------------------------------------------------------
# h11, server role


def run_h11(data: bytes) -> Parsed:
    out = Parsed()
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    current = None
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Request):
                headers = [(n, _ows(v)) for n, v in event.headers]
                current = [event.method, event.target, event.http_version, headers, b"", []]
            elif isinstance(event, h11.Data):
                current[4] += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                current[5] = [(n, _ows(v)) for n, v in event.headers]
                out.requests.append(tuple(current))
                stop = ends_connection(current[2], current[3])
                current = None
                if stop:
                    return out
                # Not 2xx: a 2xx to CONNECT or 101 would switch protocols.
                conn.send(h11.Response(status_code=404, headers=[("Content-Length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif event is h11.PAUSED:
                break
    except h11.RemoteProtocolError as exc:
        out.end, out.error = ERROR, str(exc)
        return out
    if current is not None or conn.trailing_data[0]:
        out.end = PARTIAL
    return out


# --------------------------------------------------------------------------
# llhttp (httptools)


class _Collector:
    def __init__(self, parser_ref: list) -> None:
        self.parser_ref = parser_ref
        self.requests: list = []
        self.current = None
        self.in_headers = False
        self.stopped = False
        self.name = None

    def on_message_begin(self) -> None:
        if self.stopped:
            raise _Stop
        self.current = [None, b"", None, [], b"", []]
        self.in_headers = True

    def on_url(self, url: bytes) -> None:
        self.current[1] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        where = 3 if self.in_headers else 5
        self.current[where].append((name.lower(), _ows(value)))

    def on_headers_complete(self) -> None:
        parser = self.parser_ref[0]
        self.current[0] = parser.get_method()
        self.current[2] = parser.get_http_version().encode()
        self.in_headers = False

    def on_body(self, body: bytes) -> None:
        self.current[4] += body

    def on_message_complete(self) -> None:
        request = tuple(self.current)
        self.requests.append(request)
        self.current = None
        if ends_connection(request[2], request[3]):
            self.stopped = True


class _Stop(Exception):
    pass


def run_llhttp(data: bytes) -> Parsed:
    out = Parsed()
    ref: list = []
    collector = _Collector(ref)
    parser = httptools.HttpRequestParser(collector)
    ref.append(parser)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        # CONNECT or Upgrade: llhttp hands the rest of the stream to the caller.
        out.requests = collector.requests
        out.end, out.error = ERROR, "upgrade"
        return out
    except httptools.HttpParserCallbackError as exc:
        if not isinstance(exc.__context__, _Stop) and not collector.stopped:
            raise
    except httptools.HttpParserError as exc:
        if not collector.stopped:
            out.requests = collector.requests
            out.end, out.error = ERROR, str(exc)
            return out
    out.requests = collector.requests
    if collector.current is not None and not collector.stopped:
        out.end = PARTIAL
    return out
