"""``bridge.middleware.Gzip``: compress responses the client accepts compressed.

A response is compressed when all of these hold:

* the request is not HEAD and its ``Accept-Encoding`` accepts ``gzip``
  (q-values honoured: ``gzip;q=0`` is a refusal; no header means identity);
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

Streaming stays streaming: each chunk the app yields is compressed and
flushed with ``Z_SYNC_FLUSH``, so a server-sent-events response reaches the
client chunk by chunk.  A response left alone is returned as the app's own
iterable, untouched, so ``wsgi.file_wrapper`` (sendfile) still works.
"""
from __future__ import annotations

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
                 level: int = 6) -> None:
        if min_size < 0:
            raise ValueError(f"min_size must not be negative, got {min_size}")
        if not 1 <= level <= 9:
            raise ValueError(f"level must be 1..9, got {level}")
        self.app = app
        self.min_size = min_size
        self.level = level
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
        coding = httputil.get_header(headers, "Content-Encoding")
        if coding is not None and coding.strip(" \t").lower() not in ("", "identity"):
            return False
        if httputil.get_header(headers, "Content-Range") is not None:
            return False
        if httputil.has_directive(headers, "Cache-Control", "no-transform"):
            return False
        ctype = httputil.get_header(headers, "Content-Type")
        if ctype is None:
            return False
        return self._matches(ctype.partition(";")[0].strip(" \t").lower())


class _Exchange:
    """One request through the middleware: holds the app's head until we decide."""

    __slots__ = ("gzip", "accepts", "real_start", "status", "headers", "exc_info",
                 "started", "compressor", "real_write")

    def __init__(self, gzip: Gzip, environ: dict, start_response: Callable) -> None:
        self.gzip = gzip
        self.accepts = (environ.get("REQUEST_METHOD") != "HEAD"
                        and httputil.accepts_encoding(environ.get("HTTP_ACCEPT_ENCODING"), "gzip"))
        self.real_start = start_response
        self.status: Optional[str] = None
        self.headers: Optional[list] = None
        self.exc_info: Any = None
        self.started = False
        self.compressor: Any = None
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
        if type(status) is str and type(headers) is list and self.gzip.eligible(status, headers, size):
            headers = httputil.add_vary(list(headers), "Accept-Encoding")
            if self.accepts:
                httputil.remove_headers(headers, "Content-Length", "Accept-Ranges")
                headers.append(("Content-Encoding", "gzip"))
                for i, (name, value) in enumerate(headers):
                    if name.lower() == "etag":
                        headers[i] = (name, httputil.make_weak(value))
                self.compressor = zlib.compressobj(self.gzip.level, zlib.DEFLATED, _GZIP_WBITS)
        exc_info, self.exc_info = self.exc_info, None
        self.real_write = self.real_start(status, headers, exc_info)
        self.started = True

    def content_length(self) -> Optional[int]:
        value = httputil.get_header(self.headers or [], "Content-Length")
        if value is not None and value.isdigit() and value.isascii():
            return int(value)
        return None

    def write(self, data: bytes) -> None:
        """The app's ``write()``: the body streams, so its size is unknown unless declared."""
        if not self.started:
            self.decide(self.content_length())
        if self.compressor is not None:
            data = _compress_chunk(self.compressor, data)
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
                self.decide(sum(map(len, result)) if size is None else size)
                if self.compressor is None:
                    return result
                # The whole body at once: one deflate stream, best ratio, and the
                # gateway sets the new Content-Length from the one-element list.
                data = self.compressor.compress(b"".join(result)) + self.compressor.flush()
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                return [data]
            self.decide(self.content_length())
        if self.compressor is None:
            return result    # untouched: a FileWrapper keeps its sendfile path
        return _Compressing(self, result, lazy=False)


def _compress_chunk(compressor: Any, chunk: Any) -> bytes:
    if type(chunk) is not bytes and not isinstance(chunk, (bytearray, memoryview)):
        raise TypeError(f"response body must be bytes, got {type(chunk).__name__}")
    if not chunk:
        return b""
    # Z_SYNC_FLUSH: everything so far is decodable by the client now.
    return compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)


_NOTHING = object()


class _Compressing:
    """The app's iterable, compressed chunk by chunk; ``close()`` reaches the app's."""

    __slots__ = ("exchange", "result", "lazy")

    def __init__(self, exchange: _Exchange, result: Iterable, lazy: bool) -> None:
        self.exchange = exchange
        self.result = result
        self.lazy = lazy

    def __iter__(self):
        exchange = self.exchange
        chunks = iter(self.result)
        if self.lazy:
            first = _NOTHING
            for chunk in chunks:
                if exchange.status is None:
                    yield chunk    # body before start_response: let the gateway object
                    continue
                first = chunk
                break
            if not exchange.started:
                if exchange.status is None:
                    return         # never started: the gateway reports it
                exchange.decide(exchange.content_length())
            if first is not _NOTHING:
                if exchange.compressor is None:
                    yield first
                else:
                    data = _compress_chunk(exchange.compressor, first)
                    if data:
                        yield data
        compressor = exchange.compressor
        if compressor is None:
            yield from chunks
            return
        for chunk in chunks:
            data = _compress_chunk(compressor, chunk)
            if data:
                yield data
        yield compressor.flush()

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()
