"""``--gzip``: what curl and raw sockets see from ``bridge http`` and from nginx → ``bridge fcgi``."""
import gzip
import socket
import subprocess
import time
import zlib

import pytest

from support import require_binary
from support.middleware import KINDS, Gate, front_door, raw_request, split_response
from support.middleware_apps import PNG, TEXT


@pytest.fixture(scope="module", params=KINDS)
def door(request):
    front = front_door(request.param, "support.middleware_apps:app", "--gzip")
    yield front
    front.stop()


def fetch(door, path, *headers, method="GET"):
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += "".join(h + "\r\n" for h in headers) + "\r\n"
    return split_response(raw_request(door.address, head.encode("latin-1")))


def test_curl_compressed_gets_the_original_text(door):
    curl = require_binary("curl")
    out = subprocess.run([curl, "-sS", "--compressed", "-D", "-", door.url + "/text"],
                         capture_output=True, check=True, timeout=30).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert body == TEXT
    assert b"\r\ncontent-encoding: gzip" in head.lower()
    assert b"\r\nvary: accept-encoding" in head.lower()


def test_raw_gzip_response_decompresses_to_the_original(door):
    code, headers, body = fetch(door, "/text", "Accept-Encoding: gzip")
    assert code == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == TEXT and len(body) < len(TEXT) // 4
    assert headers["etag"] == 'W/"text-v1"'            # strong turned weak
    if "content-length" in headers:
        assert headers["content-length"] == str(len(body))   # recomputed, never the original


def test_stream_of_unknown_length_is_compressed(door):
    code, headers, body = fetch(door, "/json", "Accept-Encoding: gzip, deflate")
    assert headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == b"".join(b'{"n": %d}\n' % i for i in range(2000))


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br"])
def test_clients_without_gzip_get_identity(door, accept):
    code, headers, body = fetch(door, "/text", *([f"Accept-Encoding: {accept}"] if accept else []))
    assert code == 200 and body == TEXT and "content-encoding" not in headers
    assert headers["etag"] == '"text-v1"'
    assert "accept-encoding" in headers["vary"].lower()


def test_incompressible_type_is_left_alone(door):
    code, headers, body = fetch(door, "/png", "Accept-Encoding: gzip")
    assert body == PNG and "content-encoding" not in headers


def test_head_gets_the_headers_of_the_compressed_get(door):
    _, get_headers, get_body = fetch(door, "/text", "Accept-Encoding: gzip")
    code, headers, body = fetch(door, "/text", "Accept-Encoding: gzip", method="HEAD")
    assert code == 200 and body == b""
    for name in ("content-encoding", "content-type", "vary", "etag"):
        assert headers.get(name) == get_headers.get(name), name
    assert headers["content-encoding"] == "gzip"
    assert headers.get("content-length") in (None, str(len(get_body)))


def test_streamed_events_arrive_one_by_one_compressed(door):
    """Each event must be readable by the client before the app produces the next.

    The app makes event N+1 only after the test has decoded event N and opened
    gate N: if anything on the way buffered the stream, event N would never
    arrive, the app would give up waiting and the order below would break.
    """
    gate = Gate()
    count = 4
    events = [b"id: %d\ndata: event number %d %s\n\n" % (i, i, b"x" * 40) for i in range(count)]
    sock = socket.create_connection(door.address, timeout=15)
    try:
        sock.sendall(f"GET /events?n={count}&gate={gate.dir} HTTP/1.1\r\nHost: localhost\r\n"
                     f"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, _, rest = buffer.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower() and b"transfer-encoding: chunked" in head.lower()
        decoder = zlib.decompressobj(31)
        chunked = ChunkReader(rest)
        decoded = b""
        arrivals = []
        start = time.monotonic()
        for i, event in enumerate(events):
            while not decoded.endswith(event):
                piece = chunked.next_chunk(sock)
                assert piece is not None, f"stream ended before event {i}: {decoded!r}"
                decoded += decoder.decompress(piece)
            arrivals.append(round(time.monotonic() - start, 4))
            assert decoded == b"".join(events[:i + 1])       # nothing of event i+1 yet
            gate.open(i)                                      # now the app may make the next one
        while chunked.next_chunk(sock) is not None:
            pass
        print(f"\n[{door.kind}] event arrival times (s): {arrivals}")
    finally:
        gate.open_all(count)
        sock.close()


class ChunkReader:
    """Reads HTTP/1.1 chunks off a socket one at a time."""

    def __init__(self, initial: bytes) -> None:
        self.buf = initial

    def _fill(self, sock) -> bool:
        data = sock.recv(65536)
        self.buf += data
        return bool(data)

    def next_chunk(self, sock):
        while b"\r\n" not in self.buf:
            if not self._fill(sock):
                return None
        size_line, _, rest = self.buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return None
        while len(rest) < size + 2:
            if not self._fill(sock):
                return None
            size_line, _, rest = self.buf.partition(b"\r\n")
        self.buf = rest[size + 2:]
        return rest[:size]
