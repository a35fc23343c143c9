"""A Hypothesis state machine over the FastCGI application side (fastcgi/protocol.py).

A web server (the rules) interleaves BEGIN_REQUEST / PARAMS / STDIN / DATA /
ABORT_REQUEST records of several request ids on one connection, with padding
of any length, unknown record types and roles, GET_VALUES at any point and
now and then garbage; the bytes reach the connection in pieces cut at any
byte.  The app (other rules) answers the requests that became ready.

Invariants, checked on every byte the connection writes:

- every record is well formed: version 1, content at most 65535 bytes,
  content + padding a multiple of 8;
- nothing is written for a request id that is not in flight (so nothing after
  its END_REQUEST, and one END_REQUEST per BEGIN_REQUEST);
- at the end, once the web server aborts what is left, every request that
  began has had its END_REQUEST;
- ``receive_data`` raises nothing but :class:`ProtocolError` (after which
  the connection is closed and the machine stops sending).
"""
from __future__ import annotations

import struct

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridge.fastcgi import protocol as p

IDS = st.sampled_from([1, 1, 2, 3, 4, 0, 65535])
PADDING = st.one_of(st.just(0), st.integers(0, 7), st.integers(0, 255))
_header = struct.Struct(">BBHHBB")


def record(rtype: int, request_id: int, content: bytes, padding: int, pad_byte: int = 0) -> bytes:
    return _header.pack(1, rtype, request_id, len(content), padding, 0) + content + bytes([pad_byte]) * padding


def pair(name: bytes, value: bytes) -> bytes:
    def length(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


CONTENT_LENGTHS = st.sampled_from([b"0", b"1", b"5", b"12", b"", b"\xb2", b"-1", b" 3", b"0x5",
                                   b"99999999999999999999", b"\xb9\xb2"])
PARAM_NAMES = st.sampled_from([b"CONTENT_LENGTH", b"REQUEST_METHOD", b"SCRIPT_NAME", b"PATH_INFO",
                               b"QUERY_STRING", b"HTTP_HOST", b"", b"X" * 130])

params_streams = st.one_of(
    st.tuples(st.just(b"CONTENT_LENGTH"), CONTENT_LENGTHS).map(lambda nv: pair(*nv)),
    st.lists(st.one_of(
        st.tuples(st.just(b"CONTENT_LENGTH"), CONTENT_LENGTHS),
        st.tuples(PARAM_NAMES, st.binary(max_size=20)),
    ), max_size=5).map(lambda pairs: b"".join(pair(n, v) for n, v in pairs)),
    st.binary(max_size=30),   # any bytes: a length may run past the end
)


def cut(data: bytes, pieces: int, draw_sizes: list) -> list:
    out = []
    pos = 0
    for size in draw_sizes[:pieces]:
        if pos >= len(data):
            break
        out.append(data[pos:pos + size])
        pos += size
    if pos < len(data):
        out.append(data[pos:])
    return out


class Cutter:
    """Finds where each record ends in a stream fed in pieces (the version is not checked)."""

    def __init__(self) -> None:
        self.buf = b""

    def cut(self, piece: bytes) -> list:
        """[(offset in ``piece`` where a record ends, (type, id, content))]."""
        out = []
        base = len(self.buf)
        self.buf += piece
        pos = 0
        while len(self.buf) - pos >= 8:
            _, rtype, request_id, clen, plen, _ = _header.unpack_from(self.buf, pos)
            end = pos + 8 + clen + plen
            if end > len(self.buf):
                break
            out.append((end - base, (rtype, request_id, self.buf[pos + 8:pos + 8 + clen])))
            pos = end
        self.buf = self.buf[pos:]
        return out


class FastCGIConnection(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.connect()

    def connect(self) -> None:
        self.conn = p.ServerConnection(max_conns=4, max_reqs=4, multiplex=True, max_params=512,
                                       max_body=64, spool_threshold=16, max_in_flight=3)
        self.pending = b""            # bytes written by the web server, not yet received
        self.mirror = Cutter()           # the web server's view of what it sent
        self.out = p.RecordReader()      # the web server reading the replies
        self.open: set = set()           # ids begun and not yet ended (per the records)
        self.began = 0
        self.ended = 0
        self.running: dict = {}          # id -> Request the app holds
        self.dead = False
        self.queued: set = set()         # ids of BEGIN_REQUEST records not yet delivered

    # ---- the web server ----------------------------------------------------

    def send(self, data: bytes) -> None:
        self.pending += data

    @precondition(lambda self: not self.dead)
    @rule(request_id=IDS, role=st.sampled_from([1, 1, 1, 2, 3, 0, 7, 65535]), keep=st.booleans(),
          padding=PADDING, size=st.sampled_from([8] * 12 + [0, 7, 9]), reuse=st.integers(0, 5))
    def begin_request(self, request_id, role, keep, padding, size, reuse):
        if (request_id in self.open or request_id in self.queued) and reuse:
            return   # mostly, a web server does not reuse an id in flight (that is garbage)
        self.queued.add(request_id)
        body = struct.pack(">HB5x", role, p.KEEP_CONN if keep else 0)
        body = (body + bytes(8))[:size]
        self.send(record(p.BEGIN_REQUEST, request_id, body, padding))

    @precondition(lambda self: not self.dead)
    @rule(request_id=IDS, stream=params_streams, split=st.integers(0, 30), end=st.booleans(), padding=PADDING)
    def params(self, request_id, stream, split, end, padding):
        for piece in (stream[:split], stream[split:]):
            if piece:
                self.send(record(p.PARAMS, request_id, piece, padding))
        if end:
            self.send(record(p.PARAMS, request_id, b"", padding))

    @precondition(lambda self: not self.dead)
    @rule(request_id=IDS, rtype=st.sampled_from([p.STDIN, p.STDIN, p.DATA]),
          content=st.binary(max_size=40), padding=PADDING)
    def body(self, request_id, rtype, content, padding):
        self.send(record(rtype, request_id, content, padding))

    @precondition(lambda self: not self.dead)
    @rule(request_id=IDS, padding=PADDING)
    def abort(self, request_id, padding):
        self.send(record(p.ABORT_REQUEST, request_id, b"", padding))

    @precondition(lambda self: not self.dead)
    @rule(names=st.lists(st.sampled_from([p.MAX_CONNS, p.MAX_REQS, p.MPXS_CONNS, b"OTHER", b""]), max_size=4),
          garbage=st.sampled_from([b""] * 6 + [b"\x00", b"\x05ab", b"\x80"]), padding=PADDING, request_id=st.sampled_from([0, 0, 0, 1]))
    def get_values(self, names, garbage, padding, request_id):
        content = b"".join(pair(n, b"") for n in names) + garbage
        self.send(record(p.GET_VALUES, request_id, content, padding))

    @precondition(lambda self: not self.dead)
    @rule(rtype=st.one_of(st.sampled_from([0, p.END_REQUEST, p.STDOUT, p.STDERR, p.GET_VALUES_RESULT,
                                           p.UNKNOWN_TYPE]), st.integers(12, 255)),
          request_id=IDS, content=st.binary(max_size=16), padding=PADDING)
    def unknown_type(self, rtype, request_id, content, padding):
        self.send(record(rtype, request_id, content, padding))

    @precondition(lambda self: not self.dead)
    @rule(garbage=st.binary(min_size=1, max_size=12), often=st.integers(0, 5))
    def garbage(self, garbage, often):
        if not often:        # rarely: a broken connection ends the interesting part
            self.send(garbage)

    @precondition(lambda self: not self.dead and self.pending)
    @rule(sizes=st.lists(st.integers(1, 64), min_size=1, max_size=6))
    def deliver(self, sizes):
        total = sum(sizes)
        data, self.pending = self.pending[:total], self.pending[total:]
        for piece in cut(data, len(sizes), sizes):
            self.receive(piece)
            if self.dead:
                return

    @precondition(lambda self: self.dead)
    @rule()
    def reconnect(self):
        """The web server closed the connection the garbage broke, and opens another."""
        self.connect()

    @precondition(lambda self: not self.dead and self.pending)
    @rule()
    def deliver_all(self):
        data, self.pending = self.pending, b""
        self.receive(data)

    def receive(self, piece: bytes) -> None:
        """Feed ``piece``, cut after each record it completes, so that the
        model sees what each record did (a piece may still start or end
        anywhere inside a record)."""
        start = 0
        for end, sent in self.mirror.cut(piece):
            self.model_sent(sent)
            self.receive_part(piece[start:end])
            start = end
            if self.dead:
                return
        if start < len(piece):
            self.receive_part(piece[start:])

    def model_sent(self, sent: tuple) -> None:
        rtype, request_id, content = sent
        if rtype == p.BEGIN_REQUEST:
            self.queued.discard(request_id)
        if rtype == p.BEGIN_REQUEST and request_id and len(content) == 8 and request_id not in self.open:
            self.open.add(request_id)
            self.began += 1

    def receive_part(self, piece: bytes) -> None:
        try:
            events = self.conn.receive_data(piece)
        except p.ProtocolError:
            self.dead = True       # documented: the caller closes the connection
            return
        self.take(self.conn.data_to_send())
        for event in events:
            if isinstance(event, p.RequestReady):
                self.running[event.request.id] = event.request
            elif isinstance(event, p.RequestAborted) and event.running:
                self.running.pop(event.request_id, None)
                self.take(self.conn.end_request(event.request_id))

    # ---- the app -----------------------------------------------------------

    @precondition(lambda self: self.running and not self.dead)
    @rule(data=st.data(), size=st.sampled_from([0, 1, 7, 8, 100, 65535, 65536, 70000]),
          how=st.sampled_from(["respond", "buffers", "stdout", "stderr"]))
    def app_answers(self, data, size, how):
        request_id = data.draw(st.sampled_from(sorted(self.running)))
        request = self.running.pop(request_id)
        assert request.stdin.read() is not None
        body = b"Status: 200 OK\r\n\r\n" + b"x" * size
        if how == "respond":
            self.take(self.conn.respond(request_id, body))
        elif how == "buffers":
            self.take(b"".join(bytes(b) for b in self.conn.respond_buffers(request_id, (body[:10], body[10:]))))
        else:
            if how == "stderr":
                self.take(self.conn.stderr(request_id, b"warning\n"))
            self.take(self.conn.stdout(request_id, body))
            self.take(self.conn.end_request(request_id))

    # ---- what the web server reads back --------------------------------------

    def take(self, data: bytes) -> None:
        for rtype, request_id, content in self.out.feed(data):
            if request_id == p.NULL_REQUEST_ID:
                assert rtype in (p.GET_VALUES_RESULT, p.UNKNOWN_TYPE), rtype
                continue
            assert request_id in self.open, (
                f"{p.record_name(rtype)} for request {request_id}, which is not in flight")
            assert rtype in (p.STDOUT, p.STDERR, p.END_REQUEST), rtype
            if rtype == p.END_REQUEST:
                assert len(content) == 8
                self.open.discard(request_id)
                self.ended += 1
        check_records(data)

    @invariant()
    def replies_are_complete_records(self):
        assert self.out.buffered == 0, "a reply record was written in parts"

    def teardown(self) -> None:
        if self.dead:
            return
        if self.pending:
            self.receive(self.pending)
            self.pending = b""
        if self.dead:
            return
        if self.mirror.buf:
            # Garbage left a record unfinished: the web server can only close.
            try:
                self.conn.receive_eof()
            except p.ProtocolError:
                return
            raise AssertionError("end of input inside a record was not an error")
        # The web server gives up on whatever is still in flight.
        for request_id in sorted(self.open):
            self.receive(record(p.ABORT_REQUEST, request_id, b"", 0))
            if self.dead:
                return
        for request_id in sorted(self.running):
            self.take(self.conn.end_request(request_id))
        assert not self.open, f"requests {sorted(self.open)} began and never ended"
        assert self.began == self.ended


def check_records(data: bytes) -> None:
    """Each record written: version 1, at most 65535 bytes, padded to a multiple of 8."""
    pos = 0
    while pos < len(data):
        version, rtype, request_id, clen, plen, _ = _header.unpack_from(data, pos)
        assert version == 1
        assert clen <= p.MAX_CONTENT
        assert (clen + plen) % 8 == 0, (clen, plen)
        pos += 8 + clen + plen
    assert pos == len(data), "output ends inside a record"


TestFastCGIConnection = FastCGIConnection.TestCase
