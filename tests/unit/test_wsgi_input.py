"""``wsgi.input`` of every gateway: PEP 3333 semantics, and a cost linear in the body size.

Issue 15 item 8: ``readline()`` grew its buffer with ``buf += data``, so
iterating a body without a newline was quadratic (16 MiB: 1.9 s, 32 MiB:
7.2 s, holding the GIL).  The cost test reads a body and one 16 times larger
through the same path, and compares how much each cost relative to
``io.BytesIO`` doing the same calls on the same body (C code, linear): a
linear path stays at about 1x, a quadratic one grows to about 16x.  Dividing
by the reference cancels what is not ours (allocator, page faults, caches,
a busy machine), which raw time ratios of sub-millisecond runs do not.
"""
import io
import random
import tempfile
import time

import pytest

from bridge.cgi.gateway import InputToEOF
from bridge.http.environ import HTTPInput
from bridge.wsgi import BoundedInput


class Pieces:
    """A connection/stdin that hands out the body ``piece`` bytes at a time,
    whatever was asked (``asked=True``: at most what was asked)."""

    def __init__(self, body, piece, asked=False):
        self.body = memoryview(body)
        self.piece = piece
        self.asked = asked
        self.pos = 0

    def read(self, n=-1):
        size = self.piece if not self.asked or n < 0 else min(self.piece, n)
        data = bytes(self.body[self.pos:self.pos + size])
        self.pos += len(data)
        return data

    def read_body(self):           # HTTPInput's connection
        return self.read()


# Every wsgi.input class of bridge's own, fed from a body.  (FastCGI hands the
# app an io.BytesIO or a temporary file: the standard library's, the reference.)
GATEWAYS = {
    "http (HTTPInput, 64 KiB pieces)": lambda body: HTTPInput(Pieces(body, 65536)),
    "http (HTTPInput, 1 KiB pieces)": lambda body: HTTPInput(Pieces(body, 1024)),
    "cgi (BoundedInput)": lambda body: BoundedInput(io.BufferedReader(io.BytesIO(body)), len(body)),
    "cgi chunked via Apache (InputToEOF)": lambda body: InputToEOF(io.BytesIO(body)),
}


def read_all(stream):
    return stream.read()


def read_blocks(stream):
    out = []
    while True:
        block = stream.read(4096)
        if not block:
            return out
        out.append(block)


def read_none(stream):
    return stream.read(None)


def readline(stream):
    return stream.readline()


def readline_sized(stream):
    out = []
    while True:
        line = stream.readline(1 << 20)
        if not line:
            return out
        out.append(line)


def readlines(stream):
    return stream.readlines()


def iterate(stream):
    return list(stream)


# A body that is one long line (readline's worst case), and one of 1000-byte lines
# (readline(size) with a large size over a large buffered piece).
BODIES = {"one line": lambda n: b"x" * n, "lines": lambda n: (b"y" * 999 + b"\n") * (n // 1000)}


def cpu_seconds(make, path, body):
    best = None
    for _ in range(5):
        stream = make(body)
        start = time.process_time()
        path(stream)
        spent = time.process_time() - start
        best = spent if best is None else min(best, spent)
    return max(best, 1e-7)


def relative_cost(make, path, body):
    """CPU time of ``path`` on ``make(body)`` over the same on io.BytesIO."""
    return cpu_seconds(make, path, body) / cpu_seconds(_reference, path, body)


def _reference(body):
    # Positioned past a first byte, io.BytesIO copies what it hands out (at
    # 0, read() returns the body object itself, in no time at any size).
    stream = io.BytesIO(b"_" + body)
    stream.read(1)
    return stream


# Each path with the body shape that is its worst case: one long line for
# everything that looks for a newline, 1000-byte lines for readline(1 MiB)
# (a large buffered piece handed out a line at a time).
CASES = [(read_all, "one line"), (read_none, "one line"), (read_blocks, "one line"),
         (readline, "one line"), (readline_sized, "lines"), (readlines, "one line"),
         (iterate, "one line"), (iterate, "lines")]


@pytest.mark.parametrize("gateway", list(GATEWAYS))
@pytest.mark.parametrize("path, shape", CASES, ids=[f"{p.__name__}-{s}" for p, s in CASES])
def test_every_read_path_is_linear_in_the_body_size(gateway, path, shape):
    make = GATEWAYS[gateway]
    small, large = BODIES[shape](1 << 20), BODIES[shape](16 << 20)
    relative_cost(make, path, small)       # warm up: imports, allocator
    growth = relative_cost(make, path, large) / relative_cost(make, path, small)
    # linear: about 1; quadratic: about 16
    assert growth < 5, f"{gateway} {path.__name__} on {shape}: 16x the body, {growth:.1f}x the cost per byte"


OPS = ["read", "read_n", "readline", "readline_n", "readlines_hint", "next"]


def apply(stream, op, n):
    if op == "read":
        return stream.read()
    if op == "read_n":
        return stream.read(n)
    if op == "readline":
        return stream.readline()
    if op == "readline_n":
        return stream.readline(n)
    if op == "readlines_hint":
        return stream.readlines(n)
    return next(iter(stream), b"")


@pytest.mark.parametrize("seed", range(40))
def test_input_classes_read_like_a_file(seed):
    """Random mixes of calls over random bodies and piece sizes give what io.BytesIO gives."""
    rng = random.Random(seed)
    body = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(0, 3000)))
    piece = rng.choice([1, 2, 7, 100, 4096])
    makes = [lambda: HTTPInput(Pieces(body, piece)),
             lambda: HTTPInput(Pieces(body, piece, asked=True)),
             lambda: BoundedInput(Pieces(body, piece, asked=True), len(body)),
             lambda: InputToEOF(Pieces(body, piece, asked=True))]
    calls = [(rng.choice(OPS), rng.choice([0, 1, 2, 5, 50, 1000, -1])) for _ in range(60)]
    for make in makes:
        reference, stream = io.BytesIO(body), make()
        for op, n in calls:
            if op in ("read_n", "readline_n", "readlines_hint") and n < 0 and op == "readlines_hint":
                n = 0
            assert apply(stream, op, n) == apply(reference, op, n), (op, n, piece)
