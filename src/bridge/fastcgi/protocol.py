"""FastCGI 1.0, the application side of a connection, sans-I/O: bytes in, events out.

This module never touches a socket (no ``socket``, ``select`` or
``threading`` import): the caller reads and writes, this code only parses
and frames.  Everything here can be tested with byte strings.

:class:`ServerConnection` is the connection state machine; records and
name-value pairs are framed and parsed by :mod:`bridge.fastcgi.records`,
whose names this module re-exports (``protocol.encode_record`` etc.), so a
caller imports one module for both.

Section numbers refer to the FastCGI Specification 1.0 (Open Market, 1996).
"""
from __future__ import annotations

import io

from bridge.fastcgi import records
from bridge.fastcgi.records import *  # noqa: F401,F403 -- the codec, re-exported (its __all__)
from bridge.fastcgi.records import (
    ABORT_REQUEST, AUTHORIZER, BEGIN_REQUEST, CANT_MPX_CONN, DATA, END_REQUEST, FILTER, GET_VALUES,
    GET_VALUES_RESULT, KEEP_CONN, MAX_CONNS, MAX_CONTENT, MAX_REQS, MPXS_CONNS, NULL_REQUEST_ID,
    OVERLOADED, PARAMS, REQUEST_COMPLETE, RESPONDER, STDERR, STDIN, STDOUT, UNKNOWN_ROLE,
    UNKNOWN_TYPE, ProtocolError, RecordReader, decode_begin_request, decode_pairs, decode_params,
    encode_end_request, encode_pairs, encode_record, encode_unknown_type, frame_buffers,
    record_header, record_name, record_padding, single_record)

__all__ = [*records.__all__,
           "PARAMS_STATE", "INPUT_STATE", "RUNNING_STATE", "ROLE_NAMES", "LocalProtocolError",
           "Request", "RequestReady", "RequestAborted", "RequestRejected", "RecordIgnored",
           "ServerConnection"]

# The application (server) side of a transport connection.
#
# One Request object per in-flight request, kept in a dict keyed by request
# id (§3.3: "the application keeps track of the state of each request ID on
# a given transport connection"), so multiplexing needs no special case.
# Records are dispatched through a table by type.  PARAMS are buffered until
# the empty PARAMS record and parsed once: a pair, or even a length prefix,
# may straddle two records.

#: Request states.  A request is *ready* when everything the app needs has
#: arrived: PARAMS and STDIN for a Responder (§6.2), PARAMS only for an
#: Authorizer (§6.3: it gets no request body), PARAMS, STDIN and DATA for a
#: Filter (§6.4).
PARAMS_STATE = "PARAMS"
INPUT_STATE = "INPUT"
RUNNING_STATE = "RUNNING"

ROLE_NAMES = {RESPONDER: "RESPONDER", AUTHORIZER: "AUTHORIZER", FILTER: "FILTER"}

_REASONS = {
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}


class LocalProtocolError(Exception):
    """This side misused the connection (output for a request that has ended)."""


class Request:
    """One request in flight on a connection.

    ``params`` is a dict of str (latin-1 "bytes as str", PEP 3333) once
    PARAMS ended; ``stdin`` and ``data`` are binary file objects positioned
    at 0 once the request is ready (``io.BytesIO``, or a temporary file
    when the body passed the spool threshold).
    """

    __slots__ = ("id", "role", "keep_conn", "state", "params", "stdin", "data",
                 "stdin_length", "data_length", "aborted", "stderr_used", "input_terminated",
                 "_params_parts", "_params_size", "_stdin_parts", "_data_parts",
                 "_stdin_done", "_data_done")

    def __init__(self, request_id: int, role: int, keep_conn: bool) -> None:
        self.id = request_id
        self.role = role
        self.keep_conn = keep_conn
        self.state = PARAMS_STATE
        self.params: dict = {}
        self.stdin = None
        self.data = None
        self.stdin_length = 0
        self.data_length = 0
        self.aborted = False
        self.stderr_used = False
        #: True when the web server sent no CONTENT_LENGTH: the body was
        #: ended by the empty STDIN record (PEP 3333 ``wsgi.input_terminated``).
        self.input_terminated = False
        self._params_parts: list = []
        self._params_size = 0
        self._stdin_parts: list = []
        self._data_parts: list = []
        self._stdin_done = role == AUTHORIZER
        self._data_done = role != FILTER

    def close_input(self) -> None:
        """Drop what arrived of the request's input: buffered PARAMS, STDIN, DATA.

        Called when the request ends or is refused, and by the caller for a
        request it drops before running it (the connection closes under it):
        a spooled body's temporary file is closed now, not at garbage collection.
        """
        self._params_parts = self._stdin_parts = self._data_parts = []
        for f in (self.stdin, self.data):
            if f is not None:
                try:
                    f.close()
                except Exception:
                    pass

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, str(self.role))

    def __repr__(self) -> str:
        return f"<fastcgi.Request {self.id} {self.role_name} {self.state}>"


# Events returned by ServerConnection.receive_data().

class RequestReady:
    """Everything the app needs has arrived: run it, then call ``end_request``."""
    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def __repr__(self) -> str:
        return f"RequestReady({self.request!r})"


class RequestAborted:
    """ABORT_REQUEST (§5.4).

    ``running`` false: the request was still arriving; it is dropped and its
    END_REQUEST is already queued.  ``running`` true: the app has it; the
    caller stops the response and calls ``end_request``.
    """
    __slots__ = ("request_id", "running")

    def __init__(self, request_id: int, running: bool) -> None:
        self.request_id = request_id
        self.running = running

    def __repr__(self) -> str:
        return f"RequestAborted({self.request_id}, running={self.running})"


class RequestRejected:
    """The request broke a limit or the stream rules; an error response and
    END_REQUEST are already queued.  ``reason`` is for the log."""
    __slots__ = ("request_id", "status", "reason")

    def __init__(self, request_id: int, status: int, reason: str) -> None:
        self.request_id = request_id
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"RequestRejected({self.request_id}, {self.status}, {self.reason!r})"


class RecordIgnored:
    """A record the spec says to ignore (unknown request id), or a refused
    BEGIN_REQUEST (unknown role, overloaded): worth a log line, nothing more."""
    __slots__ = ("rtype", "request_id", "reason")

    def __init__(self, rtype: int, request_id: int, reason: str) -> None:
        self.rtype = rtype
        self.request_id = request_id
        self.reason = reason

    def __repr__(self) -> str:
        return f"RecordIgnored({record_name(self.rtype)}, {self.request_id}, {self.reason!r})"


def _error_response(status: int, message: str) -> bytes:
    """A CGI response (§6.2: the Responder writes a CGI/1.1 response to STDOUT)."""
    body = f"{status} {_REASONS.get(status, 'Error')}: {message}\n".encode("latin-1", "replace")
    return (f"Status: {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1") + body


def _is_decimal(text: str) -> bool:
    """ASCII digits only: ``str.isdigit()`` is also true for "\xb2" (superscript
    two) and other characters ``int()`` refuses (RFC 3875 §4.1.2: 1*digit)."""
    return text.isdigit() and text.isascii()


def _default_spool():
    import tempfile
    return tempfile.TemporaryFile()


class ServerConnection:
    """The application's side of one FastCGI transport connection, without I/O.

    Feed received bytes to :meth:`receive_data`; it returns events
    (:class:`RequestReady`, :class:`RequestAborted`, :class:`RequestRejected`,
    :class:`RecordIgnored`) and queues replies it can give by itself
    (GET_VALUES_RESULT, UNKNOWN_TYPE, END_REQUEST for a refused role, error
    responses) for :meth:`data_to_send`.  Frame the app's output with
    :meth:`stdout` / :meth:`stderr` and finish with :meth:`end_request`
    (or :meth:`respond` for a complete response in one buffer).

    Garbage raises :class:`ProtocolError` and nothing else; the caller then
    closes the connection.  Faults of one request (oversized PARAMS, a
    short body) end that request only.
    """

    def __init__(self, *, max_conns: int = 1, max_reqs: int = 1, multiplex: bool = True,
                 max_params: int = 128 << 10, max_body: int = 0,
                 spool_threshold: int = 1 << 20, max_in_flight: int = 64,
                 spool=_default_spool) -> None:
        self.requests: dict = {}
        self.must_close = False       # KEEP_CONN was 0 and its request ended
        self.requests_seen = 0
        self._reader = RecordReader()
        self._out: list = []
        self._ended: set = set()      # ids whose late records are dropped silently
        self._max_params = max_params
        self._max_body = max_body
        self._threshold = spool_threshold
        self._max_in_flight = max(1, max_in_flight)
        self._multiplex = multiplex
        self._spool = spool
        self._limits = (max_conns, max_reqs, multiplex)   # GET_VALUES answers

    # ---- input -------------------------------------------------------------

    def receive_data(self, data: bytes) -> list:
        """Feed bytes from the peer; return the events they complete."""
        events: list = []
        dispatch = _DISPATCH
        for rtype, request_id, content in self._reader.feed(data):
            handler = dispatch.get(rtype)
            if handler is None or (request_id == NULL_REQUEST_ID) != (rtype == GET_VALUES):
                self._on_unknown(rtype, request_id, content, events)
            else:
                handler(self, request_id, content, events)
        return events

    def receive_eof(self) -> None:
        """The peer closed its side: :class:`ProtocolError` if it stopped inside a record."""
        self._reader.check_complete()

    def data_to_send(self) -> bytes:
        """Replies queued by :meth:`receive_data` (management answers, refusals)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # ---- record handlers (one per record type) ----------------------------

    def _on_unknown(self, rtype: int, request_id: int, content: bytes, events: list) -> None:
        # §4.2: a management record of a type we do not understand gets
        # FCGI_UNKNOWN_TYPE; so does any record type this side never
        # receives (STDOUT, END_REQUEST...) or an application record on the
        # management id, as Go's net/http/fcgi does.
        self._out.append(single_record(UNKNOWN_TYPE, NULL_REQUEST_ID, encode_unknown_type(rtype)))
        events.append(RecordIgnored(rtype, request_id, "unknown record type: answered UNKNOWN_TYPE"))

    def _on_get_values(self, request_id: int, content: bytes, events: list) -> None:
        # §4.1: answer the variables we know, omit the others.
        wanted = decode_pairs(content)
        max_conns, max_reqs, multiplex = self._limits
        values = {
            MAX_CONNS: str(max_conns).encode(),
            MAX_REQS: str(max_reqs).encode(),
            MPXS_CONNS: b"1" if multiplex else b"0",
        }
        answer = [(name, values[name]) for name, _ in wanted if name in values]
        self._out.append(encode_record(GET_VALUES_RESULT, NULL_REQUEST_ID, encode_pairs(answer)))

    def _on_begin(self, request_id: int, content: bytes, events: list) -> None:
        role, flags = decode_begin_request(content)
        if request_id in self.requests:
            raise ProtocolError(f"BEGIN_REQUEST for request {request_id}, which is already in flight")
        self._ended.discard(request_id)
        refusal = None
        if role not in ROLE_NAMES:
            refusal = UNKNOWN_ROLE, f"unknown role {role}"                      # §5.5
        elif self.requests and not self._multiplex:
            refusal = CANT_MPX_CONN, "a request is already in flight on this connection"
        elif len(self.requests) >= self._max_in_flight:
            refusal = OVERLOADED, f"{len(self.requests)} requests already in flight on this connection"
        if refusal is not None:
            self._ended.add(request_id)
            self._out.append(single_record(END_REQUEST, request_id, encode_end_request(0, refusal[0])))
            if not flags & KEEP_CONN and not self.requests:
                self.must_close = True
            events.append(RecordIgnored(BEGIN_REQUEST, request_id, f"refused: {refusal[1]}"))
            return
        self.requests[request_id] = Request(request_id, role, bool(flags & KEEP_CONN))
        self.requests_seen += 1

    def _live(self, rtype: int, request_id: int, events: list):
        request = self.requests.get(request_id)
        if request is None and request_id not in self._ended:
            # §3.3: records for inactive request ids are ignored.
            events.append(RecordIgnored(rtype, request_id, "no such request in flight: ignored"))
        return request

    def _on_abort(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(ABORT_REQUEST, request_id, events)
        if request is None:
            return
        request.aborted = True
        if request.state == RUNNING_STATE:
            events.append(RequestAborted(request_id, True))
            return
        # Still arriving: drop it and answer at once (§5.4).
        request.close_input()
        self._out.append(self._end_bytes(request, 0, REQUEST_COMPLETE))
        events.append(RequestAborted(request_id, False))

    def _on_params(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(PARAMS, request_id, events)
        if request is None or request.state != PARAMS_STATE:
            return   # late or repeated PARAMS of a running request: nothing to do
        if content:
            request._params_size += len(content)
            if request._params_size > self._max_params:
                self._reject(request, 431, f"PARAMS larger than {self._max_params} bytes", events)
                return
            request._params_parts.append(content)
            return
        parts = request._params_parts
        try:
            request.params = decode_params(parts[0] if len(parts) == 1 else b"".join(parts))
        except ProtocolError as exc:
            self._reject(request, 400, f"malformed PARAMS: {exc}", events)
            return
        request._params_parts = []
        if self._max_body:
            length = request.params.get("CONTENT_LENGTH", "")
            if _is_decimal(length) and int(length) > self._max_body:
                self._reject(request, 413, f"CONTENT_LENGTH {length} is over the limit of {self._max_body} bytes", events)
                return
        request.state = INPUT_STATE
        self._maybe_ready(request, events)

    def _on_stdin(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(STDIN, request_id, events)
        if request is None or request._stdin_done:
            return   # an Authorizer's STDIN, or records after the end: ignored
        if request.state == PARAMS_STATE:
            self._reject(request, 400, "STDIN before the end of PARAMS", events)
            return
        if content:
            request.stdin_length += len(content)
            if self._max_body and request.stdin_length > self._max_body:
                self._reject(request, 413, f"request body over the limit of {self._max_body} bytes", events)
                return
            request.stdin = self._store(request.stdin, request._stdin_parts, request.stdin_length, content)
            return
        request._stdin_done = True
        request.stdin = self._rewind(request.stdin, request._stdin_parts)
        request._stdin_parts = []
        length = request.params.get("CONTENT_LENGTH", "")
        if length:
            if not _is_decimal(length):
                self._reject(request, 400, f"invalid CONTENT_LENGTH {length!r}", events)
                return
            if int(length) != request.stdin_length:
                self._reject(request, 400, f"request body of {request.stdin_length} bytes for a "
                                           f"CONTENT_LENGTH of {length}", events)
                return
        else:
            # No length (a chunked body forwarded unbuffered): the empty STDIN
            # record ended it.  It is complete now, so the app is also told
            # its size, as CGI would (RFC 3875 §4.1.2), for apps that only
            # look at CONTENT_LENGTH.
            request.input_terminated = True
            if request.stdin_length:
                request.params["CONTENT_LENGTH"] = str(request.stdin_length)
        self._maybe_ready(request, events)

    def _on_data(self, request_id: int, content: bytes, events: list) -> None:
        request = self._live(DATA, request_id, events)
        if request is None or request._data_done:
            return
        if request.state == PARAMS_STATE:
            self._reject(request, 400, "DATA before the end of PARAMS", events)
            return
        if content:
            request.data_length += len(content)
            request.data = self._store(request.data, request._data_parts, request.data_length, content)
            return
        request._data_done = True
        request.data = self._rewind(request.data, request._data_parts)
        request._data_parts = []
        self._maybe_ready(request, events)

    # ---- helpers -----------------------------------------------------------

    def _maybe_ready(self, request: Request, events: list) -> None:
        if request.state == INPUT_STATE and request._stdin_done and request._data_done:
            if request.stdin is None:
                request.stdin = self._rewind(None, request._stdin_parts)
            if request.role == FILTER and request.data is None:
                request.data = self._rewind(None, request._data_parts)
            request.state = RUNNING_STATE
            events.append(RequestReady(request))

    def _store(self, spool, parts: list, total: int, content: bytes):
        """Keep body bytes in memory up to the threshold, then in a temporary file."""
        if spool is not None:
            spool.write(content)
            return spool
        parts.append(content)
        if total <= self._threshold:
            return None
        spool = self._spool()
        spool.writelines(parts)
        parts.clear()
        return spool

    @staticmethod
    def _rewind(spool, parts: list):
        if spool is not None:
            spool.flush()
            spool.seek(0)
            return spool
        return io.BytesIO(parts[0] if len(parts) == 1 else b"".join(parts))

    def _reject(self, request: Request, status: int, reason: str, events: list) -> None:
        request.close_input()
        self._out.append(self.respond(request.id, _error_response(status, reason), 0))
        events.append(RequestRejected(request.id, status, reason))

    def _end_bytes(self, request: Request, app_status: int, protocol_status: int) -> bytes:
        del self.requests[request.id]
        self._ended.add(request.id)
        if not request.keep_conn:
            self.must_close = True
        return single_record(END_REQUEST, request.id, encode_end_request(app_status, protocol_status))

    # ---- output ------------------------------------------------------------

    def _get(self, request_id: int) -> Request:
        request = self.requests.get(request_id)
        if request is None:
            raise LocalProtocolError(f"request {request_id} is not in flight")
        return request

    def stdout(self, request_id: int, data: bytes) -> bytes:
        """FCGI_STDOUT records for ``data`` (never the empty end-of-stream record)."""
        self._get(request_id)
        return encode_record(STDOUT, request_id, data) if data else b""

    def stdout_buffers(self, request_id: int, pieces) -> list:
        """:meth:`stdout` for ``pieces`` back to back, as buffers for ``os.writev`` (no copy)."""
        self._get(request_id)
        return frame_buffers(STDOUT, request_id, pieces)

    def stderr(self, request_id: int, data: bytes) -> bytes:
        """FCGI_STDERR records for ``data`` (the web server writes them to its error log)."""
        self._get(request_id).stderr_used = True
        return encode_record(STDERR, request_id, data) if data else b""

    def end_request(self, request_id: int, app_status: int = 0,
                    protocol_status: int = REQUEST_COMPLETE) -> bytes:
        """Close the output streams and send END_REQUEST (§5.5); forget the request."""
        request = self._get(request_id)
        tail = single_record(STDOUT, request_id, b"")
        if request.stderr_used:
            tail += single_record(STDERR, request_id, b"")
        request.close_input()
        return tail + self._end_bytes(request, app_status, protocol_status)

    def respond(self, request_id: int, data: bytes, app_status: int = 0) -> bytes:
        """A whole response: STDOUT records, end of STDOUT and END_REQUEST in one buffer.

        A response up to 65535 bytes is a single STDOUT record, so the web
        server gets it, and the end of the request, in one read.
        """
        if len(data) > MAX_CONTENT:
            return b"".join(self.respond_buffers(request_id, (data,), app_status))
        request = self._get(request_id)
        out = [record_header(STDOUT, request_id, len(data)), data, record_padding(len(data))] if data else []
        return b"".join(self._end_streams(request, out, app_status))

    def respond_buffers(self, request_id: int, pieces, app_status: int = 0) -> list:
        """:meth:`respond` for ``pieces`` back to back, as buffers for ``os.writev`` (no copy)."""
        request = self._get(request_id)
        return self._end_streams(request, frame_buffers(STDOUT, request_id, pieces), app_status)

    def _end_streams(self, request: Request, out: list, app_status: int) -> list:
        """Append the end of STDOUT (and STDERR if used) and END_REQUEST to ``out``."""
        out.append(record_header(STDOUT, request.id, 0))
        if request.stderr_used:
            out.append(record_header(STDERR, request.id, 0))
        request.close_input()
        out.append(self._end_bytes(request, app_status, REQUEST_COMPLETE))
        return out


#: Record type -> ServerConnection method handling it: built once, not per
#: connection (a dict of bound methods per connection cost ~6 % of a
#: one-request connection's time in the profile).
_DISPATCH = {
    BEGIN_REQUEST: ServerConnection._on_begin,
    ABORT_REQUEST: ServerConnection._on_abort,
    PARAMS: ServerConnection._on_params,
    STDIN: ServerConnection._on_stdin,
    DATA: ServerConnection._on_data,
    GET_VALUES: ServerConnection._on_get_values,
}
