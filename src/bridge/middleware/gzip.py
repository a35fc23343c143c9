"""``bridge.middleware.Gzip``: compress responses the client accepts compressed.

A response is compressed when all of these hold:

* the request's ``Accept-Encoding`` accepts ``gzip`` (q-values honoured:
  ``gzip;q=0`` is a refusal; no header means identity);
* the status carries content and is not a partial one (not 1xx, 204, 206,
  304), and the response has no ``Content-Encoding`` (other than identity),
  no ``Content-Range`` and no ``Cache-Control: no-transform`` (RFC 9111 §5.2.2.6);
* its media type matches one of ``types`` (``text/*``, JSON, JavaScript,
  XML, SVG... by default; ``type/*`` and ``type/*+suffix`` patterns work);
* its size is at least ``min_size``: known from ``Content-Length`` or from
  a list body; a streamed body of unknown length counts as large.

Such a response also gets ``Vary: Accept-Encoding`` (merged with an existing
``Vary``), whether or not this client gets it compressed, so caches keep the
two apart.  Compressing drops ``Content-Length`` (a list body gets a new one
from the gateway), drops ``Accept-Ranges`` and makes a strong ``ETag`` weak
(RFC 9110 §8.8.1: the bytes changed, the meaning did not).

One representation, whatever the method and status (RFC 9110 §9.3.2,
§15.4.5):

* HEAD is decided exactly as GET and gets the same ``Content-Encoding``,
  ``Vary`` and ``ETag``; its ``Content-Length`` is the compressed one when
  the app hands over the body (the gateway drops it), absent when the app
  skipped the body (nobody knows the compressed size then).
* A 304 carries the validators the 200 would have.  A 304 usually has no
  ``Content-Type`` or size to decide from, so the evidence is: its own
  ``Content-Type`` when present, or a client that revalidates with the weak
  form ``W/"x"`` of the 304's ``"x"`` (only this middleware makes that weak
  tag: the copy the client holds was compressed).  Then the 304 gets
  ``Vary: Accept-Encoding`` and, for a client that accepts gzip, the weak
  ``ETag``; without evidence it is left alone (a missing field on a 304
  keeps the stored one, a wrong one would overwrite it: RFC 9111 §4.3.4).

Streaming stays responsive without bloating small chunks.  Each
``Z_SYNC_FLUSH`` (what makes the bytes so far decodable by the client) costs
at least 5 bytes and ends the block, so flushing every chunk turned 10,000
one-byte chunks into 70 KB.  The output is flushed instead when one of
these holds (nginx's gzip does the same with its buffers, flushing when
they fill or when the upstream read pauses):

* ``flush_size`` bytes (16 KiB by default) came in since the last flush;
* the app took ``pause`` seconds (10 ms by default) or more to produce the
  chunk: a stream that waits between chunks (progress, a log tail) gets
  each one flushed on arrival;
* the app yields an empty bytestring: "send what you have" (PEP 3333 lets
  an app yield ``b""`` at any time);
* the response is ``text/event-stream``: every chunk is an event;
* the body ends.

What this costs: the last chunks of a quick burst wait in the compressor
until the next flush.  An app that yields a chunk quickly and then blocks on
the client's reaction to it must yield ``b""`` after it (or send
``text/event-stream``).  While data is held, an empty bytestring is yielded
in its place, as PEP 3333 asks of middleware.  ``write()`` (the legacy
callable, which PEP 3333 says sends before it returns) flushes on every
call.  A response left alone is returned as the app's own iterable,
untouched, so ``wsgi.file_wrapper`` (sendfile) still works.
"""
from __future__ import annotations

import time
import zlib

from bridge import httputil
from bridge.wsgi import status_has_body

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Optional

__all__ = ["Gzip", "DEFAULT_TYPES"]

DEFAULT_TYPES = (
    "text/*", "application/json", "application/*+json", "application/javascript",
    "application/x-javascript", "application/xml", "application/*+xml", "image/svg+xml",
    "application/wasm",
)

# wbits 16 + 15: a gzip member (RFC 1952) with the largest window.
_GZIP_WBITS = 31

#: Media types whose every chunk is a message the client waits for.
STREAM_TYPES = ("text/event-stream",)

# The clock that measures the app's pauses (a name the tests can replace).
_clock = time.monotonic


def _type_matcher(types: Iterable[str]) -> Callable[[str], bool]:
    exact, prefixes, suffixed = set(), [], []
    for pattern in types:
        pattern = pattern.strip().lower()
        if not pattern:
            continue
        major, slash, minor = pattern.partition("/")
        if not slash or not major or not minor:
            raise ValueError(f"gzip type {pattern!r} is not type/subtype (type/* and type/*+suffix allowed)")
        if minor == "*":
            prefixes.append(major + "/")
        elif minor.startswith("*+"):
            suffixed.append((major + "/", minor[1:]))
        else:
            exact.add(pattern)

    def match(media_type: str) -> bool:
        if media_type in exact:
            return True
        for prefix in prefixes:
            if media_type.startswith(prefix):
                return True
        for prefix, suffix in suffixed:
            if media_type.startswith(prefix) and media_type.endswith(suffix):
                return True
        return False
    return match


class Gzip:
    """Compress ``app``'s responses with gzip when the client accepts it (see module doc)."""

    def __init__(self, app: Callable, *, min_size: int = 256, types: Iterable[str] = DEFAULT_TYPES,
                 level: int = 6, flush_size: int = 16384, pause: float = 0.01) -> None:
        if min_size < 0:
            raise ValueError(f"min_size must not be negative, got {min_size}")
        if not 1 <= level <= 9:
            raise ValueError(f"level must be 1..9, got {level}")
        if flush_size < 1:
            raise ValueError(f"flush_size must be positive, got {flush_size}")
        if pause < 0:
            raise ValueError(f"pause must not be negative, got {pause}")
        self.app = app
        self.min_size = min_size
        self.level = level
        self.flush_size = flush_size
        self.pause = pause
        self.types = tuple(types)
        self._matches = _type_matcher(self.types)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable:
        exchange = _Exchange(self, environ, start_response)
        result = self.app(environ, exchange.start_response)
        try:
            return exchange.respond(result)
        except BaseException:
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise

    def eligible(self, status: str, headers: list, size: Optional[int]) -> bool:
        """Would this response be compressed for a client that accepts gzip?"""
        code = status[:3]
        if code == "206" or not status_has_body(status, "GET"):
            return False
        if size is not None and size < self.min_size:
            return False
        ctype = httputil.get_header(headers, "Content-Type")
        return ctype is not None and _transformable(headers) and self._matches(_media_type(ctype))

    def not_modified_varies(self, headers: list, if_none_match: Optional[str]) -> bool:
        """Was the 200 behind this 304 one this middleware compresses (module doc)?"""
        ctype = httputil.get_header(headers, "Content-Type")
        if not _transformable(headers):
            return False
        if ctype is not None:
            return self._matches(_media_type(ctype))
        # No Content-Type is usual on a 304 (§15.4.5): the client's weak copy
        # of the tag only this middleware weakens says what the 200 was.
        return _holds_weakened(if_none_match, httputil.get_header(headers, "ETag"))


def _transformable(headers: list) -> bool:
    """No coding already, no partial content, no ``no-transform`` (RFC 9111 §5.2.2.6)."""
    coding = httputil.get_header(headers, "Content-Encoding")
    if coding is not None and coding.strip(" \t").lower() not in ("", "identity"):
        return False
    if httputil.get_header(headers, "Content-Range") is not None:
        return False
    return not httputil.has_directive(headers, "Cache-Control", "no-transform")


def _media_type(ctype: str) -> str:
    return ctype.partition(";")[0].strip(" \t").lower()


def _holds_weakened(if_none_match: Optional[str], etag: Optional[str]) -> bool:
    """Does the client revalidate with ``W/"x"`` for the app's strong ``"x"``?"""
    mine = httputil.parse_etag(etag)
    if mine is None or mine[0]:
        return False
    tags = httputil.parse_etag_list(if_none_match)
    if not isinstance(tags, list):
        return False
    return any(weak and opaque == mine[1] for weak, opaque in tags)


class _Exchange:
    """One request through the middleware: holds the app's head until we decide."""

    __slots__ = ("gzip", "accepts", "is_head", "if_none_match", "real_start", "status", "headers",
                 "exc_info", "started", "deflater", "real_write")

    def __init__(self, gzip: Gzip, environ: dict, start_response: Callable) -> None:
        self.gzip = gzip
        # HEAD is decided as GET would be (RFC 9110 §9.3.2): same representation.
        self.accepts = httputil.accepts_encoding(environ.get("HTTP_ACCEPT_ENCODING"), "gzip")
        self.is_head = environ.get("REQUEST_METHOD") == "HEAD"
        self.if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        self.real_start = start_response
        self.status: Optional[str] = None
        self.headers: Optional[list] = None
        self.exc_info: Any = None
        self.started = False
        self.deflater: Optional[_Deflater] = None
        self.real_write: Any = None

    def start_response(self, status: str, headers: list, exc_info: Any = None) -> Callable:
        if self.started:
            # Already passed on: the server re-raises exc_info, or refuses a
            # second call, as PEP 3333 says.
            return self.real_start(status, headers, exc_info)
        self.status, self.headers, self.exc_info = status, headers, exc_info
        return self.write

    def decide(self, size: Optional[int]) -> None:
        """Choose identity or gzip for the head the app gave, and pass the head on."""
        status, headers = self.status, self.headers
        if type(status) is str and type(headers) is list:
            if status[:3] == "304":
                if self.gzip.not_modified_varies(headers, self.if_none_match):
                    headers = httputil.add_vary(list(headers), "Accept-Encoding")
                    if self.accepts:
                        _weaken_etag(headers)
            elif self.gzip.eligible(status, headers, size):
                headers = httputil.add_vary(list(headers), "Accept-Encoding")
                if self.accepts:
                    httputil.remove_headers(headers, "Content-Length", "Accept-Ranges")
                    headers.append(("Content-Encoding", "gzip"))
                    _weaken_etag(headers)
                    ctype = _media_type(httputil.get_header(headers, "Content-Type") or "")
                    self.deflater = _Deflater(self.gzip, every_chunk=ctype in STREAM_TYPES)
        exc_info, self.exc_info = self.exc_info, None
        self.real_write = self.real_start(status, headers, exc_info)
        self.started = True

    def content_length(self) -> Optional[int]:
        value = httputil.get_header(self.headers or [], "Content-Length")
        if value is not None and value.isdigit() and value.isascii():
            return int(value)
        return None

    def write(self, data: bytes) -> None:
        """The app's ``write()``: the body streams, so its size is unknown unless declared.

        PEP 3333 says ``write()`` sends before it returns: flushed every call.
        """
        if not self.started:
            self.decide(self.content_length())
        if self.deflater is not None:
            data = self.deflater.feed(data, flush=True)
            if not data:
                return
        self.real_write(data)

    def respond(self, result: Iterable) -> Iterable:
        if self.status is None:
            # A generator app: start_response runs on the first next().
            return _Compressing(self, result, lazy=True)
        if not self.started:
            rtype = type(result)
            if (rtype is list or rtype is tuple) and all(type(c) is bytes for c in result):
                size = self.content_length()
                whole = b"".join(result)
                self.decide(len(whole) if size is None else size)
                if self.deflater is None:
                    return result
                if self.is_head and not whole:
                    # The app skipped HEAD's body: the compressed size is
                    # unknown, so no Content-Length (not the gateway's 0).
                    return _Compressing(self, result, lazy=False)
                # The whole body at once: one deflate stream, best ratio, and the
                # gateway sets the new Content-Length from the one-element list.
                data = self.deflater.feed(whole) + self.deflater.finish()
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                return [data]
            self.decide(self.content_length())
        if self.deflater is None:
            return result    # untouched: a FileWrapper keeps its sendfile path
        return _Compressing(self, result, lazy=False)


def _weaken_etag(headers: list) -> None:
    for i, (name, value) in enumerate(headers):
        if name.lower() == "etag":
            headers[i] = (name, httputil.make_weak(value))


class _Deflater:
    """The gzip stream of one response and when to flush it (module doc)."""

    __slots__ = ("compressor", "flush_size", "every_chunk", "held")

    def __init__(self, gzip: Gzip, every_chunk: bool) -> None:
        self.compressor = zlib.compressobj(gzip.level, zlib.DEFLATED, _GZIP_WBITS)
        self.flush_size = gzip.flush_size
        self.every_chunk = every_chunk
        self.held = 0        # input bytes since the last flush

    def feed(self, chunk: Any, flush: bool = False) -> bytes:
        """Compress ``chunk``; flush if asked, if it is empty (the app's "send now"),
        for a stream of messages, or once ``flush_size`` bytes are held."""
        if type(chunk) is not bytes and not isinstance(chunk, (bytearray, memoryview)):
            raise TypeError(f"response body must be bytes, got {type(chunk).__name__}")
        if not chunk:
            return self.sync() if self.held else b""
        data = self.compressor.compress(chunk)
        self.held += len(chunk)
        if flush or self.every_chunk or self.held >= self.flush_size:
            return data + self.sync()
        return data

    def sync(self) -> bytes:
        """Z_SYNC_FLUSH: everything so far is decodable by the client now."""
        self.held = 0
        return self.compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self.compressor.flush()


_NOTHING = object()


class _Compressing:
    """The app's iterable, compressed as it streams; ``close()`` reaches the app's."""

    __slots__ = ("exchange", "result", "lazy")

    def __init__(self, exchange: _Exchange, result: Iterable, lazy: bool) -> None:
        self.exchange = exchange
        self.result = result
        self.lazy = lazy

    def __iter__(self):
        exchange = self.exchange
        chunks = iter(self.result)
        asked = _clock()
        if self.lazy:
            first = _NOTHING
            for chunk in chunks:
                if exchange.status is None:
                    yield chunk    # body before start_response: let the gateway object
                    asked = _clock()
                    continue
                first = chunk
                break
            if not exchange.started:
                if exchange.status is None:
                    return         # never started: the gateway reports it
                exchange.decide(exchange.content_length())
            if first is not _NOTHING:
                if exchange.deflater is None:
                    yield first
                else:
                    yield exchange.deflater.feed(first, flush=_clock() - asked >= exchange.gzip.pause)
        deflater = exchange.deflater
        if deflater is None:
            yield from chunks
            return
        pause = exchange.gzip.pause
        while True:
            asked = _clock()
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            # A chunk the app was slow to make is flushed on arrival: the
            # client has been waiting for it.  b"" while data is held keeps
            # PEP 3333's one-yield-per-app-yield rule.
            yield deflater.feed(chunk, flush=_clock() - asked >= pause)
        yield deflater.finish()

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()
