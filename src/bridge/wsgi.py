"""The one WSGI core every gateway uses (PEP 3333).

CGI, FastCGI and HTTP differ only in how bytes arrive and leave.  Everything
PEP 3333 says about the environ, ``start_response``, ``write``, iteration,
``close`` and errors lives here, once, so the three gateways cannot disagree.

A gateway supplies a *transport* (see :class:`Transport`) with four methods
and calls :func:`call_app`.  That is the whole contract, in the spirit of
``wsgiref.handlers.BaseHandler`` but without its faults: headers are never
sent for an empty first chunk, validation raises real exceptions (never
``assert``), and this module imports nothing beyond ``sys`` and ``io`` at
start-up, because a CGI request pays for every import.
"""
import io
import sys

# Annotations that name typing's types are strings, and there is no
# `from __future__ import annotations`: that line imports the __future__
# module, one more import every CGI request would pay (bridge cgi's path).
TYPE_CHECKING = False
if TYPE_CHECKING:   # typing costs ~7 ms (it imports re): never at run time on the CGI path
    from typing import Any, Callable, Optional

__all__ = [
    "Transport", "Response", "call_app", "make_environ", "FileWrapper",
    "InputStream", "BoundedInput", "encode_headers", "WSGIError",
    "status_has_body", "decode_path", "merge_content_length", "single_content_length",
    "remove_dot_segments", "AmbiguousPath", "refuse_ambiguous_path",
    "InternalRedirect", "INTERNAL_REDIRECT_ROOT",
]

WSGI_VERSION = (1, 0)

#: RFC 9110 §7.6.1: connection-specific fields an application must not set;
#: the gateway owns the connection (PEP 3333 "hop-by-hop" rule).
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
))

# RFC 9110 §5.6.2:  token = 1*tchar
#   tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#           "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
TCHAR = frozenset(
    "!#$%&'*+-.^_`|~0123456789"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

ERROR_STATUS = "500 Internal Server Error"
ERROR_BODY = b"Internal Server Error\n"
ERROR_HEADERS = [
    ("Content-Type", "text/plain; charset=utf-8"),
    ("Content-Length", str(len(ERROR_BODY))),
]

#: Header names already checked (a token, not hop-by-hop): they repeat a lot.
_valid_names: set = set()
#: Whole (name, value) headers already checked -> their Content-Length or
#: None: an app's constant headers are checked once, not per response.  Both
#: caches are consulted only once the pair is known to be a tuple of two
#: exact ``str``: a subclass may compare equal to a checked pair while
#: encoding to something else, and a cache answers only for what it checked.
_checked: dict = {}
_UNCHECKED = object()


class WSGIError(Exception):
    """The application broke the WSGI contract (bad status, header, call order)."""


class FileShrank(WSGIError):
    """The file behind ``wsgi.file_wrapper`` ended before the length already announced.

    Raised by a gateway's ``send_file``: ``call_app`` logs it and calls the
    transport's ``abort()``, which cuts the connection off (the client must
    not take what follows for the rest of the body).
    """

    def __init__(self, missing: int) -> None:
        super().__init__(f"the file shrank while being sent: {missing} announced bytes missing; "
                         "connection cut off")


class Transport:
    """What a gateway provides to send one response.

    Methods raise ``OSError`` when the client is gone; :func:`call_app`
    treats that as a disconnect, closes the app's result and stops.
    """

    def send_head(self, status: str, headers: list, body: bytes, end: bool) -> None:
        """Send the status and headers, with the first body bytes.

        ``headers`` is the validated list of ``(name, value)`` str pairs (use
        :func:`encode_headers`).  ``end`` is true when ``body`` is the whole
        response body, so a gateway can send everything in one write.
        """

    def send_body(self, data: bytes) -> None:
        """Send more body bytes (never empty)."""

    def finish(self) -> None:
        """The response is complete (chunked terminator, END_REQUEST...)."""

    def abort(self) -> None:
        """The response cannot be completed: cut it off (close, no terminator)."""


def status_has_body(status: str, method: str) -> bool:
    """RFC 9110 §6.4.1/§15: HEAD, 1xx, 204 and 304 responses have no content."""
    if method == "HEAD":
        return False
    code = status[:3]
    return not (code[0] == "1" or code == "204" or code == "304")


def _check_status(status: "Any") -> None:
    if type(status) is not str:
        raise WSGIError(f"status must be a str, not {type(status).__name__}: {status!r}")
    # PEP 3333: "999 Message here": three digits, a space, a reason phrase.
    if len(status) < 4 or status[3] != " " or not status[:3].isdigit() or not status[:3].isascii():
        raise WSGIError(f"status must look like '200 OK', got {status!r}")
    # RFC 9110 §15: codes are 100-599, and a 1xx is interim, never the final
    # answer (§15.2): sent as one, the client takes the *next* response on the
    # connection for the answer to this request (a pipelined one, or another
    # client's behind a proxy that reuses connections).  The same range as a
    # CGI script's Status (bridge.cgi.rfc3875).
    if not "200" <= status[:3] <= "599":
        raise WSGIError(f"status code out of range (a final response is 200-599): {status!r}")
    if "\r" in status or "\n" in status or "\0" in status:
        raise WSGIError(f"status contains a control character: {status!r}")
    if not status.isascii() and max(status) > "\xff":
        raise WSGIError(f"status is not latin-1 encodable (PEP 3333 bytes as str): {status!r}")


def merge_content_length(length: "Optional[int]", value: "Any") -> int:
    """One more ``Content-Length`` field of a response, checked against those before it.

    RFC 9110 §8.6: ``Content-Length = 1*DIGIT``; a message whose fields
    disagree has no length a recipient can trust.  A response with two
    differing values framed by the last one is response splitting for any
    proxy that reads the first, so differing values are refused (ValueError:
    a 500 for an app, a 502 for a CGI script or a FastCGI backend), and
    identical ones count as one field (the caller keeps only the first).
    ``length`` is the value of the fields seen so far (None: none yet).
    """
    if type(value) is int:
        new = value
    elif type(value) is str and value.isdigit() and value.isascii():
        new = int(value)
    else:
        raise ValueError(f"invalid Content-Length {value!r}")
    if length is not None and new != length:
        raise ValueError(f"two Content-Length fields that differ: {length} and {new}")
    return new


def single_content_length(headers: list) -> list:
    """A copy of ``headers`` with only the first ``Content-Length`` field (the others identical)."""
    out = []
    seen = False
    for name, value in headers:
        if len(name) == 14 and name.lower() == "content-length":
            if seen:
                continue
            seen = True
        out.append((name, value))
    return out


def _check_headers(headers: "Any") -> "tuple":
    """Validate the app's header list: ``(Content-Length or None, whether it came twice)``."""
    if type(headers) is not list:
        raise WSGIError(f"headers must be a list, not {type(headers).__name__}")
    length = None
    repeated = False
    for item in headers:
        if type(item) is not tuple or len(item) != 2:
            raise WSGIError(f"each header must be a (name, value) tuple, got {item!r}")
        name, value = item
        if type(name) is not str or type(value) is not str:
            if type(name) is not str:
                raise WSGIError(f"invalid header name {name!r}")
            raise WSGIError(f"header {name!r} value must be a str, got {value!r}")
        known = _checked.get(item, _UNCHECKED)
        if known is None:
            continue
        if known is not _UNCHECKED:   # a Content-Length checked before
            if length is not None:
                if known != length:
                    raise WSGIError(f"two Content-Length fields that differ: {length} and {known}")
                repeated = True
            length = known
            continue
        if name not in _valid_names:
            if not name or not all(c in TCHAR for c in name):
                raise WSGIError(f"invalid header name {name!r}")
            if name.lower() in HOP_BY_HOP:
                raise WSGIError(f"hop-by-hop header {name!r} is the gateway's to set, not the application's")
            if len(name) == 6 and name.lower() == "status":
                # RFC 3875 §6.3.3: under CGI/FastCGI this field *is* the status;
                # the app's own would be a second one on the wire.
                raise WSGIError(f"header {name!r} is the gateway's (the CGI Status line); "
                                "give the status to start_response")
            if len(_valid_names) < 512:
                _valid_names.add(name)
        if "\n" in value or "\r" in value or "\0" in value:
            raise WSGIError(f"header {name!r} value contains CR, LF or NUL: {value!r}")
        if not value.isascii() and max(value) > "\xff":
            raise WSGIError(f"header {name!r} value is not latin-1 encodable (PEP 3333 bytes as str): {value!r}")
        if len(name) == 14 and name.lower() == "content-length":
            repeated = length is not None
            try:
                length = merge_content_length(length, value)
            except ValueError as exc:
                raise WSGIError(str(exc)) from None
            if len(_checked) < 1024:
                _checked[item] = length
        elif len(_checked) < 1024:
            _checked[item] = None
    return length, repeated


def encode_headers(headers: list) -> bytes:
    """``Name: value\\r\\n`` lines as latin-1 bytes (PEP 3333 "bytes as str")."""
    try:
        return "".join([f"{k}: {v}\r\n" for k, v in headers]).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise WSGIError(f"header not encodable as latin-1: {exc}") from None


class Response:
    """State of one response: what ``start_response`` set and what was sent."""

    __slots__ = ("environ", "transport", "status", "headers", "headers_sent",
                 "content_length", "bytes_sent", "body_allowed", "disconnected",
                 "failed", "is_head")

    def __init__(self, environ: dict, transport: "Transport") -> None:
        self.environ = environ
        self.transport = transport
        self.status: Optional[str] = None
        self.headers: Optional[list] = None
        self.headers_sent = False
        self.content_length: Optional[int] = None
        self.bytes_sent = 0
        self.body_allowed = True
        self.is_head = environ.get("REQUEST_METHOD") == "HEAD"
        self.disconnected = False   # the client went away
        self.failed = False         # the app raised or broke the contract

    def start_response(self, status: str, headers: list, exc_info: "Any" = None) -> "Callable[[bytes], None]":
        if exc_info is not None:
            try:
                if self.headers_sent:
                    # PEP 3333: re-raise the app's own exception, with its traceback.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None   # avoid a reference cycle through the frame
        elif self.status is not None:
            raise WSGIError("start_response called a second time without exc_info")
        _check_status(status)
        self.content_length, repeated = _check_headers(headers)
        if repeated:
            headers = single_content_length(headers)   # never two on the wire; the app's list unchanged
        if self.content_length is not None and status[:3] == "204":
            # RFC 9110 §8.6: "A server MUST NOT send a Content-Length header
            # field in any response with a status code of ... 204"; a
            # recipient that framed by it would take the next response's
            # bytes for this one's body.
            headers = [h for h in headers if not (len(h[0]) == 14 and h[0].lower() == "content-length")]
            self.content_length = None
        self.status = status
        self.headers = headers
        self.body_allowed = status_has_body(status, self.environ.get("REQUEST_METHOD", "GET"))
        return self.write

    def write(self, data: bytes) -> None:
        """The ``write`` callable of PEP 3333 (and the iteration path)."""
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise WSGIError(f"response body must be bytes, got {type(data).__name__}")
        if self.status is None:
            raise WSGIError("write() or body before start_response()")
        if not self.headers_sent:
            if not data:
                return   # never send headers for an empty chunk: the app may still fail
            self._send_head(data, False)
            return
        if not data or not self.body_allowed:
            return
        self._count(data)
        try:
            self.transport.send_body(data)
        except OSError:
            self.disconnected = True
            raise

    def _count(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        if self.content_length is not None and self.bytes_sent > self.content_length:
            raise WSGIError(
                f"application sent more than its Content-Length of {self.content_length} bytes")

    def _send_head(self, body: bytes, end: bool) -> None:
        if not self.body_allowed:
            body = b""
            end = True
        else:
            self._count(body)
        self.headers_sent = True
        try:
            self.transport.send_head(self.status, self.headers, body, end)
        except OSError:
            self.disconnected = True
            raise

    def send_complete(self, body: bytes) -> None:
        """Send a whole response whose body is known (one-element list, error page)."""
        if self.content_length is None and (self.body_allowed or (self.is_head and status_has_body(self.status, "GET"))):
            # HEAD carries the Content-Length GET would (RFC 9110 §9.3.2); a
            # 304/204 to HEAD none (§8.6: 0 is not the 200's length).
            self.headers = [*self.headers, ("Content-Length", str(len(body)))]   # never the app's list
            self.content_length = len(body)
        elif self.content_length is not None and self.body_allowed and len(body) != self.content_length:
            if len(body) > self.content_length:
                raise WSGIError(
                    f"application sent {len(body)} bytes for a Content-Length of {self.content_length}")
        self._send_head(body, self.content_length == len(body) or not self.body_allowed)

    def finish(self) -> None:
        if self.status is None:
            raise WSGIError("the application returned without calling start_response()")
        if not self.headers_sent:
            self.send_complete(b"")
        if (self.body_allowed and self.content_length is not None
                and self.bytes_sent < self.content_length):
            raise WSGIError(
                f"application sent {self.bytes_sent} bytes for a Content-Length of {self.content_length}")
        try:
            self.transport.finish()
        except OSError:
            self.disconnected = True
            raise


def _log_error(environ: dict, message: str, with_traceback: bool = True) -> None:
    errors = environ.get("wsgi.errors") or sys.stderr
    try:
        if with_traceback:
            import traceback   # only when something went wrong: keep CGI start-up lean
            message = message + "\n" + "".join(traceback.format_exception(*sys.exc_info()))
        errors.write(message.rstrip("\n") + "\n")
        errors.flush()
    except Exception:
        pass


def _describe(environ: dict) -> str:
    # Only on the error path: the import costs a CGI request nothing otherwise.
    from bridge.logtext import describe_request   # the decoded path may hold a LF or ESC
    return describe_request(environ)


#: environ key set by :func:`call_app`: the SCRIPT_NAME the gateway gave,
#: before any mount moved a prefix into it.  Its presence says that raising
#: :class:`InternalRedirect` is served (elsewhere an app falls back to a
#: redirect of its own, see ``bridge.cgi.app.local_redirect``).
INTERNAL_REDIRECT_ROOT = "bridge.internal_redirect_root"
#: A bound for apps that raise InternalRedirect without counting (CGIApp and
#: FastCGIApp count, and stop at their ``max_redirects``).
MAX_INTERNAL_REDIRECTS = 20


class InternalRedirect(Exception):
    """Raised by an app *before* it starts a response: serve ``environ`` instead.

    RFC 3875 §6.2.2 (a CGI local redirect) wants the server to serve the new
    path "as if the client had asked for it": :func:`call_app` runs its whole
    app again -- status paths, Static, Gzip, every mount -- with ``environ``,
    as Apache's internal redirect does, and the response goes to the client
    without passing through the first pass's middleware.  The access log
    keeps the request the client sent.
    """

    def __init__(self, environ: dict) -> None:
        super().__init__(environ.get("REQUEST_URI", ""))
        self.environ = environ


def _follow_internal_redirects(app: "Callable", redirect: InternalRedirect,
                               response: "Response") -> "Any":
    for _ in range(MAX_INTERNAL_REDIRECTS):
        if response.status is not None:
            raise RuntimeError("InternalRedirect raised after start_response")
        try:
            return app(redirect.environ, response.start_response)
        except InternalRedirect as again:
            redirect = again
    raise RuntimeError(f"more than {MAX_INTERNAL_REDIRECTS} internal redirects "
                       f"(last to {redirect.environ.get('REQUEST_URI', '')})")


def call_app(app: "Callable", environ: dict, transport: "Transport") -> "Response":
    """Run ``app`` for one request and send its response through ``transport``.

    Never raises for the application's faults: an error before any output
    becomes a 500 with a generic body, an error after it cuts the response
    off; either way the traceback goes to ``wsgi.errors`` only.  A transport
    ``OSError`` means the client left.  ``close()`` on the result is always
    called.  The returned :class:`Response` tells the gateway what happened.
    """
    response = Response(environ, transport)
    result = None
    environ[INTERNAL_REDIRECT_ROOT] = environ.get("SCRIPT_NAME", "")
    try:
        try:
            result = app(environ, response.start_response)
        except InternalRedirect as redirect:
            result = _follow_internal_redirects(app, redirect, response)
        rtype = type(result)
        if (rtype is list or rtype is tuple) and len(result) == 1 and response.status is not None and not response.headers_sent:
            body = result[0]
            if type(body) is not bytes:
                if not isinstance(body, (bytearray, memoryview)):
                    response.write(body)   # raises the type error with a clear message
                body = bytes(body)
            response.send_complete(body)
            response.finish()
        elif (rtype is FileWrapper and response.status is not None and not response.headers_sent
              and hasattr(transport, "send_file")):
            _send_file_wrapper(response, result)
        else:
            write = response.write
            for chunk in result:
                write(chunk)
                if response.headers_sent and not response.body_allowed:
                    break   # HEAD/204/304: the head is out, the body is not wanted
            response.finish()
    except OSError as exc:
        if response.disconnected or _is_disconnect(exc):
            response.disconnected = True
            _log_error(environ, f"client disconnected during {_describe(environ)}: {exc}", False)
        else:
            _fail(response, environ)
    except Exception:
        _fail(response, environ)
    finally:
        if result is not None and hasattr(result, "close"):
            try:
                result.close()
            except Exception:
                _log_error(environ, f"error in close() of the response to {_describe(environ)}")
                response.failed = True
    return response


def _is_disconnect(exc: OSError) -> bool:
    """An OSError the transport did not raise is the client's only if the
    input stream says so (``client_gone``): an app's own ConnectionRefusedError
    (its database is down) is an app error and gets a 500."""
    return getattr(exc, "client_gone", False)


def _fail(response: "Response", environ: dict) -> None:
    response.failed = True
    _log_error(environ, f"error while serving {_describe(environ)}")
    try:
        if response.headers_sent:
            response.transport.abort()
            return
        response.status = ERROR_STATUS
        response.headers = list(ERROR_HEADERS)
        response.content_length = len(ERROR_BODY)
        response.body_allowed = status_has_body(ERROR_STATUS, environ.get("REQUEST_METHOD", "GET"))
        response.bytes_sent = 0
        response._send_head(ERROR_BODY, True)
        response.transport.finish()
    except OSError:
        response.disconnected = True
    except Exception:
        _log_error(environ, "error while sending the error response")


def _send_file_wrapper(response: "Response", wrapper: "FileWrapper") -> None:
    """Let the gateway use ``os.sendfile`` for a real file (PEP 3333 optional extension)."""
    import os
    filelike = wrapper.filelike
    try:
        fd = filelike.fileno()
        st = os.fstat(fd)
        offset = filelike.tell()
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        fd = None
    if fd is None or not (st.st_mode & 0o170000 == 0o100000):   # not a regular file
        for chunk in wrapper:
            response.write(chunk)
        response.finish()
        return
    count = max(0, st.st_size - offset)
    if response.content_length is not None:
        count = min(count, response.content_length)
    else:
        response.headers = [*response.headers, ("Content-Length", str(count))]
        response.content_length = count
    response._send_head(b"", count == 0 or not response.body_allowed)
    try:
        if count and response.body_allowed:
            response.transport.send_file(fd, offset, count)
            response.bytes_sent += count
        response.transport.finish()
    except OSError:
        response.disconnected = True
        raise


class FileWrapper:
    """``wsgi.file_wrapper``: iterates a file in blocks; gateways may sendfile it."""

    __slots__ = ("filelike", "blksize")

    def __init__(self, filelike: "Any", blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        read = self.filelike.read
        size = self.blksize
        while True:
            data = read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------
# wsgi.input


class InputStream:
    """Base of ``wsgi.input`` streams: PEP 3333's read/readline/readlines/iter.

    Subclasses implement :meth:`_fill` (return some bytes, ideally up to
    ``n``, ``b""`` at the end of the body); buffering and line splitting live
    here once.

    Every path is linear in the body size (issue 15 item 8: ``buf += data``
    made iterating a 16 MiB body without a newline take 1.9 s, 32 MiB 7.2 s,
    holding the GIL).  The rules that keep it so:

    * what is read ahead stays in one ``bytes`` with a read offset
      (``_pos``): handing out a line slices only that line, never copies
      the rest of the buffer (``read(1)`` over a 1 MiB piece would copy
      it a million times);
    * a line or a read that spans pieces collects them in a list and joins
      once, searching each new piece only for the newline.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        self._eof = False

    def _fill(self, n: int) -> bytes:   # pragma: no cover - abstract
        raise NotImplementedError

    def _more(self, n: int) -> bytes:
        if self._eof:
            return b""
        data = self._fill(max(n, 1))
        if not data:
            self._eof = True
        return data

    def _rest(self) -> bytes:
        """What is buffered and not handed out yet; the buffer is emptied."""
        rest = self._buf[self._pos:] if self._pos else self._buf
        self._buf = b""
        self._pos = 0
        return rest

    def _keep(self, data: bytes, pos: int) -> None:
        """Buffer ``data``, of which the first ``pos`` bytes were handed out."""
        if pos < len(data):
            self._buf = data
            self._pos = pos

    def read(self, size: "Optional[int]" = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._rest()]
            while True:
                data = self._more(65536)
                if not data:
                    return b"".join(parts)
                parts.append(data)
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= size:
            self._pos = pos + size
            return buf[pos:pos + size]
        parts = [self._rest()]
        have = len(parts[0])
        while have < size:
            data = self._more(size - have)
            if not data:
                break
            take = size - have
            if len(data) > take:        # a source that gives more than asked
                self._keep(data, take)
                data = data[:take]
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def readline(self, size: "Optional[int]" = -1) -> bytes:
        limit = -1 if size is None else size
        buf, pos = self._buf, self._pos
        end = len(buf) if limit < 0 else min(len(buf), pos + limit)
        i = buf.find(b"\n", pos, end)
        if i >= 0:
            end = i + 1
        if i >= 0 or end - pos == limit:
            self._pos = end
            return buf[pos:end]
        # The line goes on past what is buffered: collect the pieces.
        parts = [self._rest()]
        have = len(parts[0])
        while True:
            data = self._more(8192 if limit < 0 else limit - have)
            if not data:
                break
            stop = len(data) if limit < 0 else min(len(data), limit - have)
            i = data.find(b"\n", 0, stop)
            cut = i + 1 if i >= 0 else stop
            if cut < len(data) or i >= 0 or have + cut == limit:
                self._keep(data, cut)
                parts.append(data[:cut] if cut < len(data) else data)
                break
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def readlines(self, hint: int = -1) -> list:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        pass


class BoundedInput(InputStream):
    """A body of known length read from a raw binary stream (CGI stdin, a socket file).

    Never reads past ``length``: RFC 3875 §4.2 says the script must not read
    more than CONTENT_LENGTH, and a keep-alive connection carries the next
    request right behind it.
    """

    def __init__(self, raw: "Any", length: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = length

    def _fill(self, n: int) -> bytes:
        if self._left <= 0:
            return b""
        data = self._raw.read(min(n, self._left, 1 << 20))
        if not data:
            raise EOFError_(f"client closed the connection with {self._left} bytes of the body unsent")
        self._left -= len(data)
        return data


class EOFError_(OSError):
    """The body ended before CONTENT_LENGTH: the app sees an error, not a short read."""
    client_gone = True


# --------------------------------------------------------------------------
# environ


def decode_path(raw: bytes) -> str:
    """Percent-decode a URL path to a latin-1 "bytes as str" (PEP 3333, RFC 3986 §2.1).

    ``%2F`` becomes ``/`` like every CGI server does; undecodable escapes are
    kept as they are.
    """
    if b"%" not in raw:
        return raw.decode("latin-1")
    parts = raw.split(b"%")
    out = [parts[0]]
    for part in parts[1:]:
        try:
            out.append(bytes((int(part[:2], 16),)) + part[2:] if len(part) >= 2 and part[:2].isalnum() else b"%" + part)
        except ValueError:
            out.append(b"%" + part)
    return b"".join(out).decode("latin-1")


class AmbiguousPath(ValueError):
    """A path whose ``..`` follows an empty segment: front servers resolve it two ways.

    See :func:`remove_dot_segments`; a gateway answers it with
    :func:`refuse_ambiguous_path` (400), never routes it.
    """

    def __init__(self, path: str) -> None:
        super().__init__(f"'..' after an empty path segment (resolved differently with and "
                         f"without merging '//'): {path[:200]!r}")


AMBIGUOUS_PATH_BODY = b"Bad Request: '..' after '//' in the path\n"


def refuse_ambiguous_path(environ: dict, start_response: "Callable") -> list:
    """The WSGI answer to an :class:`AmbiguousPath`: 400, in place of the app."""
    start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"),
                                       ("Content-Length", str(len(AMBIGUOUS_PATH_BODY)))])
    return [AMBIGUOUS_PATH_BODY]


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on a *decoded* path: ``/admin/../public`` → ``/public``.

    Applied after the whole path was percent-decoded (``%2e%2e`` and
    ``..%2F`` are dot segments too, as nginx sees them) and before any
    routing, by every gateway and by :class:`bridge.mount`, so that a prefix
    matched here is the one a front proxy's ``location`` matched: without
    it ``/admin/%2e%2e/public`` passes nginx's ``location /admin/ { deny
    all; }`` as ``/public`` and reaches the app mounted at ``/admin``.
    ``..`` above the root is dropped (``/../x`` → ``/x``), as the RFC says.
    ``..;``, ``...`` and backslashes are ordinary characters, as for nginx
    on POSIX.  A path not starting with ``/`` is left alone.

    An empty segment is kept, but a ``..`` that would remove one raises
    :class:`AmbiguousPath` (the gateways answer 400): nginx and Apache merge
    ``//`` before they resolve ``..`` by default (``merge_slashes``,
    ``MergeSlashes``), so ``/admin//../x`` is ``/x`` to them, ``/admin/x``
    without merging; either choice here lets one of the two configurations
    route past a front proxy's ``location /admin/ { deny all; }``.
    """
    if "/." not in path or path[:1] != "/":
        return path
    segments = path.split("/")
    out: list = []
    for segment in segments[1:]:
        if segment == "..":
            if out:
                if not out[-1]:
                    raise AmbiguousPath(path)
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")      # "/a/b/.." is the directory "/a/", not "/a"
    return "/" + "/".join(out)


def make_environ(
    cgi_vars: dict,
    *,
    input: "Any",
    errors: "Any",
    multithread: bool,
    multiprocess: bool,
    run_once: bool = False,
    input_terminated: bool = False,
    url_scheme: "Optional[str]" = None,
) -> dict:
    """Complete a dict of CGI meta-variables (str → latin-1 str) into a WSGI environ.

    Fills what PEP 3333 requires when a web server left it out, works out
    ``wsgi.url_scheme`` from ``HTTPS``/``REQUEST_SCHEME`` (RFC 3875 leaves
    it to the server), and drops ``HTTP_PROXY`` (httpoxy, CVE-2016-5385):
    a client's ``Proxy:`` header must never look like a proxy setting.
    """
    environ = cgi_vars
    environ.pop("HTTP_PROXY", None)
    if "REQUEST_METHOD" not in environ:
        environ["REQUEST_METHOD"] = "GET"
    if "SCRIPT_NAME" not in environ:
        environ["SCRIPT_NAME"] = ""
    if "PATH_INFO" not in environ:
        environ["PATH_INFO"] = ""
    if "QUERY_STRING" not in environ:
        environ["QUERY_STRING"] = ""
    if "SERVER_NAME" not in environ:
        environ["SERVER_NAME"] = environ.get("HTTP_HOST", "localhost").rpartition(":")[0] or environ.get("HTTP_HOST", "localhost")
    if "SERVER_PORT" not in environ:
        environ["SERVER_PORT"] = "80"
    if "SERVER_PROTOCOL" not in environ:
        environ["SERVER_PROTOCOL"] = "HTTP/1.0"
    if url_scheme is None:
        url_scheme = environ.get("REQUEST_SCHEME", "").lower()
        if url_scheme not in ("http", "https"):
            https = environ.get("HTTPS", "").lower()
            url_scheme = "https" if https in ("on", "1", "yes") else "http"
    environ["wsgi.version"] = WSGI_VERSION
    environ["wsgi.url_scheme"] = url_scheme
    environ["wsgi.input"] = input
    environ["wsgi.errors"] = errors
    environ["wsgi.multithread"] = multithread
    environ["wsgi.multiprocess"] = multiprocess
    environ["wsgi.run_once"] = run_once
    environ["wsgi.file_wrapper"] = FileWrapper
    if input_terminated:
        environ["wsgi.input_terminated"] = True
    return environ


def apply_script_name(environ: dict, prefix: str) -> None:
    """``--script-name PREFIX``: move PREFIX from PATH_INFO to SCRIPT_NAME.

    For a web server that mounts the app at a prefix but sends the whole
    path as PATH_INFO (or an app at ``/`` that gets the script's name).
    """
    prefix = prefix.rstrip("/")
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if path == prefix or path.startswith(prefix + "/"):
        environ["SCRIPT_NAME"] = prefix
        environ["PATH_INFO"] = path[len(prefix):]


def empty_input() -> "io.BytesIO":
    return io.BytesIO(b"")
