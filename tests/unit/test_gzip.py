"""bridge.middleware.Gzip called directly and through the WSGI core (no network)."""
import gzip
import io
import os
import zlib

import pytest

from bridge.middleware.gzip import Gzip
from bridge.wsgi import call_app, make_environ

TEXT = b"The quick brown fox jumps over the lazy dog. " * 40


def list_app(body=TEXT, ctype="text/html; charset=utf-8", status="200 OK", extra=(), length=True):
    def app(environ, start_response):
        headers = [("Content-Type", ctype), *extra]
        if length:
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [body]
    return app


def run(app, method="GET", **headers):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/", **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
    captured = {}

    def start_response(status, hdrs, exc_info=None):
        captured["status"], captured["headers"] = status, hdrs
        return lambda data: captured.setdefault("written", []).append(data)

    result = app(environ, start_response)
    try:
        chunks = list(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    body = b"".join(captured.get("written", []) + chunks)
    return captured["status"], captured["headers"], body, result


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    return values[0] if values else None


# -- when it compresses ------------------------------------------------------

def test_compresses_text_for_a_gzip_client():
    status, headers, body, _ = run(Gzip(list_app()), accept_encoding="gzip, deflate, br")
    assert status == "200 OK"
    assert gzip.decompress(body) == TEXT
    assert header(headers, "Content-Encoding") == "gzip"
    assert header(headers, "Vary") == "Accept-Encoding"
    assert header(headers, "Content-Length") is None      # the gateway sets the new one
    assert len(body) < len(TEXT)


def test_list_body_gets_the_compressed_length_from_the_gateway():
    transport = Recorder()
    response = through_core(Gzip(list_app()), transport, accept_encoding="gzip")
    status, head_headers = transport.head
    assert gzip.decompress(transport.body) == TEXT
    assert dict(head_headers)["Content-Length"] == str(len(transport.body))
    assert not response.failed


@pytest.mark.parametrize("accept", ["gzip;q=0", "br", "identity", "", "deflate, gzip;q=0.000", "*;q=0"])
def test_identity_when_the_client_refuses_gzip(accept):
    _, headers, body, _ = run(Gzip(list_app()), accept_encoding=accept)
    assert body == TEXT and header(headers, "Content-Encoding") is None
    assert header(headers, "Content-Length") == str(len(TEXT))
    assert header(headers, "Vary") == "Accept-Encoding"   # still varies: caches must keep both


def test_identity_without_accept_encoding():
    _, headers, body, _ = run(Gzip(list_app()))
    assert body == TEXT and header(headers, "Content-Encoding") is None


@pytest.mark.parametrize("accept", ["*", "x-gzip", "GZIP;q=0.5, identity"])
def test_star_x_gzip_and_case_accept_gzip(accept):
    _, headers, body, _ = run(Gzip(list_app()), accept_encoding=accept)
    assert gzip.decompress(body) == TEXT


@pytest.mark.parametrize("ctype", [
    "text/plain", "application/json", "application/ld+json", "application/javascript",
    "image/svg+xml", "application/atom+xml", "TEXT/CSS; charset=utf-8",
])
def test_compressible_types(ctype):
    _, headers, _, _ = run(Gzip(list_app(ctype=ctype)), accept_encoding="gzip")
    assert header(headers, "Content-Encoding") == "gzip"


@pytest.mark.parametrize("ctype", ["image/png", "application/octet-stream", "video/mp4", "application/zip"])
def test_incompressible_types_untouched_and_without_vary(ctype):
    _, headers, body, _ = run(Gzip(list_app(ctype=ctype)), accept_encoding="gzip")
    assert body == TEXT and header(headers, "Content-Encoding") is None and header(headers, "Vary") is None


def test_no_content_type_is_not_compressed():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [TEXT]
    assert run(Gzip(app), accept_encoding="gzip")[2] == TEXT


def test_configured_types_replace_the_defaults():
    app = Gzip(list_app(ctype="application/x-custom"), types=["application/x-custom"])
    assert header(run(app, accept_encoding="gzip")[1], "Content-Encoding") == "gzip"
    app = Gzip(list_app(ctype="text/html"), types=["application/x-custom"])
    assert header(run(app, accept_encoding="gzip")[1], "Content-Encoding") is None


def test_bad_type_pattern_is_refused():
    with pytest.raises(ValueError, match="type/subtype"):
        Gzip(list_app(), types=["text"])


def test_below_min_size_untouched():
    small = b"x" * 100
    _, headers, body, _ = run(Gzip(list_app(body=small), min_size=101), accept_encoding="gzip")
    assert body == small and header(headers, "Vary") is None
    _, headers, body, _ = run(Gzip(list_app(body=small, length=False), min_size=100), accept_encoding="gzip")
    assert gzip.decompress(body) == small


def test_min_size_uses_list_length_when_content_length_is_absent():
    _, headers, body, _ = run(Gzip(list_app(body=b"tiny", length=False), min_size=10), accept_encoding="gzip")
    assert body == b"tiny"


# -- when it must not ----------------------------------------------------------

@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified", "206 Partial Content", "101 Switching Protocols"])
def test_statuses_without_full_content_untouched(status):
    _, headers, body, _ = run(Gzip(list_app(status=status)), accept_encoding="gzip")
    assert header(headers, "Content-Encoding") is None


def test_head_gets_the_get_headers_with_the_compressed_length():
    _, get_headers, get_body, _ = run(Gzip(list_app()), accept_encoding="gzip")
    _, headers, _, _ = run(Gzip(list_app()), method="HEAD", accept_encoding="gzip")
    assert header(headers, "Content-Encoding") == "gzip"
    assert header(headers, "Vary") == "Accept-Encoding"
    assert header(headers, "Content-Length") is None     # the gateway counts the list, as for GET
    transport = Recorder()
    through_core(Gzip(list_app()), transport, method="HEAD", accept_encoding="gzip")
    assert dict(transport.head[1])["Content-Length"] == str(len(get_body)) and transport.body == b""


def test_no_transform_is_respected():
    app = Gzip(list_app(extra=[("Cache-Control", "public, no-transform")]))
    _, headers, body, _ = run(app, accept_encoding="gzip")
    assert body == TEXT and header(headers, "Content-Encoding") is None


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_already_encoded_is_not_encoded_twice(encoding):
    app = Gzip(list_app(extra=[("Content-Encoding", encoding)]))
    _, headers, body, _ = run(app, accept_encoding="gzip")
    assert body == TEXT and [v for k, v in headers if k == "Content-Encoding"] == [encoding]


def test_identity_content_encoding_is_compressed():
    _, headers, body, _ = run(Gzip(list_app(extra=[("Content-Encoding", "identity")])), accept_encoding="gzip")
    assert gzip.decompress(body) == TEXT


def test_content_range_response_untouched():
    app = Gzip(list_app(extra=[("Content-Range", "bytes 0-9/100")]))
    assert run(app, accept_encoding="gzip")[2] == TEXT


# -- header rewriting ----------------------------------------------------------

def test_vary_is_merged_with_the_apps():
    _, headers, _, _ = run(Gzip(list_app(extra=[("Vary", "Cookie")])), accept_encoding="gzip")
    assert [v for k, v in headers if k.lower() == "vary"] == ["Cookie, Accept-Encoding"]
    _, headers, _, _ = run(Gzip(list_app(extra=[("vary", "accept-encoding")])), accept_encoding="gzip")
    assert [v for k, v in headers if k.lower() == "vary"] == ["accept-encoding"]


def test_strong_etag_becomes_weak_and_weak_stays():
    _, headers, _, _ = run(Gzip(list_app(extra=[("ETag", '"abc"')])), accept_encoding="gzip")
    assert header(headers, "ETag") == 'W/"abc"'
    _, headers, _, _ = run(Gzip(list_app(extra=[("ETag", 'W/"abc"')])), accept_encoding="gzip")
    assert header(headers, "ETag") == 'W/"abc"'
    _, headers, _, _ = run(Gzip(list_app(extra=[("ETag", '"abc"')])))
    assert header(headers, "ETag") == '"abc"'   # identity: untouched


def test_accept_ranges_dropped_when_compressing():
    _, headers, _, _ = run(Gzip(list_app(extra=[("Accept-Ranges", "bytes")])), accept_encoding="gzip")
    assert header(headers, "Accept-Ranges") is None


def test_the_apps_header_list_is_not_modified():
    seen = []

    def app(environ, start_response):
        headers = [("Content-Type", "text/plain"), ("ETag", '"x"')]
        seen.append(headers)
        start_response("200 OK", headers)
        return [TEXT]
    run(Gzip(app), accept_encoding="gzip")
    assert seen[0] == [("Content-Type", "text/plain"), ("ETag", '"x"')]


# -- streaming -------------------------------------------------------------------

def sse_app(events):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        for event in events:
            yield event
    return app


def test_generator_chunks_are_each_flushed_and_decodable_on_arrival():
    events = [f"data: event {i}\n\n".encode() for i in range(5)]
    _, headers, _, result = run(Gzip(sse_app(events)), accept_encoding="gzip")
    assert header(headers, "Content-Encoding") == "gzip"
    # Iterate again, decoding each piece as it arrives: every event is readable
    # before the next one is produced (Z_SYNC_FLUSH).
    captured = {}
    result = Gzip(sse_app(events))({"REQUEST_METHOD": "GET", "HTTP_ACCEPT_ENCODING": "gzip"},
                                   lambda s, h, e=None: captured.setdefault("h", h))
    decoder = zlib.decompressobj(31)
    pieces = []
    for chunk in result:
        pieces.append(decoder.decompress(chunk))
    assert pieces[:5] == events
    assert b"".join(pieces) == b"".join(events) and decoder.eof


def test_streaming_body_of_unknown_size_is_compressed_even_if_small():
    _, headers, body, _ = run(Gzip(sse_app([b"a", b"b"]), min_size=1000), accept_encoding="gzip")
    assert gzip.decompress(body) == b"ab"


def test_streaming_with_declared_small_length_is_untouched():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        yield b"ab"
    _, headers, body, _ = run(Gzip(app, min_size=10), accept_encoding="gzip")
    assert body == b"ab" and header(headers, "Content-Length") == "2"


def test_write_callable_is_compressed_too():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first ")
        write(b"")
        return [b"second"]
    _, headers, body, _ = run(Gzip(app), accept_encoding="gzip")
    assert gzip.decompress(body) == b"first second"


def test_empty_generator_gives_a_valid_empty_gzip_stream():
    _, headers, body, _ = run(Gzip(sse_app([])), accept_encoding="gzip")
    assert gzip.decompress(body) == b""


def test_close_of_the_apps_iterable_is_called():
    closed = []

    class Body:
        def __iter__(self):
            return iter([TEXT])

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    for accept in ("gzip", "br"):
        run(Gzip(app), accept_encoding=accept)
    # close() also when the server never iterates (client gone before the body)
    result = Gzip(app)({"REQUEST_METHOD": "GET", "HTTP_ACCEPT_ENCODING": "gzip"}, lambda *a: None)
    result.close()
    assert closed == [True, True, True]


def test_file_wrapper_passes_through_untouched_when_not_compressing(tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(os.urandom(5000))

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "image/png")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))
    transport = Recorder()
    through_core(Gzip(app), transport, accept_encoding="gzip")
    assert transport.sendfile_used and transport.body == path.read_bytes()


def test_file_wrapper_of_text_is_compressed_by_iteration(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b'{"k": "' + b"v" * 200000 + b'"}')

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(path.stat().st_size))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))
    transport = Recorder()
    response = through_core(Gzip(app), transport, accept_encoding="gzip")
    assert not transport.sendfile_used and gzip.decompress(transport.body) == path.read_bytes()
    assert not response.failed


def test_exc_info_before_the_head_replaces_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]
    transport = Recorder()
    through_core(Gzip(app), transport, accept_encoding="gzip")
    assert transport.head[0] == "500 Internal Server Error" and transport.body == b"sorry"


def test_app_error_mid_stream_aborts_the_response():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"part one"
        raise RuntimeError("boom")
    transport = Recorder()
    response = through_core(Gzip(app), transport, accept_encoding="gzip")
    assert response.failed and transport.aborted


class Recorder:
    def __init__(self):
        self.head = None
        self.body = b""
        self.chunks = []
        self.sendfile_used = False
        self.aborted = False

    def send_head(self, status, headers, body, end):
        self.head = (status, headers)
        self.body += body
        if body:
            self.chunks.append(body)

    def send_body(self, data):
        self.body += data
        self.chunks.append(data)

    def send_file(self, fd, offset, count):
        self.sendfile_used = True
        self.body += os.pread(fd, count, offset)

    def finish(self):
        pass

    def abort(self):
        self.aborted = True


def through_core(app, transport, method="GET", **headers):
    environ = make_environ({"REQUEST_METHOD": method, "PATH_INFO": "/",
                            **{"HTTP_" + k.upper(): v for k, v in headers.items()}},
                           input=io.BytesIO(), errors=io.StringIO(), multithread=False, multiprocess=False)
    return call_app(app, environ, transport)


def test_gzip_around_static_compresses_files_but_not_ranges(tmp_path):
    from bridge.middleware.static import Static
    (tmp_path / "page.html").write_bytes(TEXT)
    app = Gzip(Static(None, {"/s": str(tmp_path)}))
    transport = Recorder()
    through_core(app, transport, accept_encoding="gzip")   # PATH_INFO "/" is not under /s
    assert transport.head[0] == "404 Not Found"
    environ = make_environ({"REQUEST_METHOD": "GET", "PATH_INFO": "/s/page.html", "HTTP_ACCEPT_ENCODING": "gzip"},
                           input=io.BytesIO(), errors=io.StringIO(), multithread=False, multiprocess=False)
    transport = Recorder()
    call_app(app, environ, transport)
    assert dict(transport.head[1])["Content-Encoding"] == "gzip" and gzip.decompress(transport.body) == TEXT
    assert dict(transport.head[1])["ETag"].startswith('W/"')
    environ = make_environ({"REQUEST_METHOD": "GET", "PATH_INFO": "/s/page.html", "HTTP_ACCEPT_ENCODING": "gzip",
                            "HTTP_RANGE": "bytes=0-9"},
                           input=io.BytesIO(), errors=io.StringIO(), multithread=False, multiprocess=False)
    transport = Recorder()
    call_app(app, environ, transport)
    assert transport.head[0] == "206 Partial Content" and transport.body == TEXT[:10]
    assert transport.sendfile_used


# -- one representation on 200, HEAD and 304 (RFC 9110 §9.3.2, §15.4.5) -------------

REPRESENTATION = ("Content-Encoding", "Content-Type", "ETag", "Vary")
VALIDATOR_FIELDS = ("ETag", "Vary")     # what a 304 must carry as the 200 would


def conditional_app(ctype_on_304):
    """An app with a strong ETag that answers If-None-Match (weak comparison) with 304."""
    def app(environ, start_response):
        from bridge import httputil
        if httputil.etag_in_list(environ.get("HTTP_IF_NONE_MATCH"), '"v1"'):
            extra = [("Content-Type", "text/html")] if ctype_on_304 else []
            start_response("304 Not Modified", [("ETag", '"v1"'), ("Cache-Control", "no-cache"), *extra])
            return []
        start_response("200 OK", [("Content-Type", "text/html"), ("ETag", '"v1"'),
                                  ("Cache-Control", "no-cache"), ("Content-Length", str(len(TEXT)))])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [TEXT]
    return app


def static_app(tmp_path):
    from bridge.middleware.static import Static
    (tmp_path / "page.html").write_bytes(TEXT)
    return lambda environ, start_response: Static(None, {"/": str(tmp_path)})(
        {**environ, "PATH_INFO": "/page.html"}, start_response)


def fields(headers, names):
    return {name: header(headers, name) for name in names}


# An identity client revalidating a 304 without Content-Type gives no evidence
# (its strong tag is also what an image's client sends): that 304 is left
# alone, see test_a_304_without_evidence_of_a_compressed_200_is_left_alone.
@pytest.mark.parametrize("make, accept", [
    ("304 without Content-Type", "gzip"), ("304 with Content-Type", "gzip"),
    ("304 with Content-Type", "identity"), ("Static", "gzip"),
])
def test_200_head_and_304_carry_the_same_representation_fields(make, accept, tmp_path):
    if make == "Static":
        app = Gzip(static_app(tmp_path))
    else:
        app = Gzip(conditional_app(make.endswith("with Content-Type")))
    status, got, body, _ = run(app, accept_encoding=accept)
    assert status == "200 OK" and header(got, "Vary") == "Accept-Encoding"
    assert (header(got, "Content-Encoding") == "gzip") == (accept == "gzip")
    _, head, _, _ = run(app, method="HEAD", accept_encoding=accept)
    assert fields(head, REPRESENTATION) == fields(got, REPRESENTATION)
    status, not_modified, body, _ = run(app, accept_encoding=accept, if_none_match=header(got, "ETag"))
    assert status == "304 Not Modified" and body == b""
    assert fields(not_modified, VALIDATOR_FIELDS) == fields(got, VALIDATOR_FIELDS)
    assert header(not_modified, "Content-Encoding") is None


def test_a_304_without_evidence_of_a_compressed_200_is_left_alone():
    # A strong tag revalidated, no Content-Type: an image, or an identity copy.
    def app(environ, start_response):
        start_response("304 Not Modified", [("ETag", '"img"')])
        return []
    _, headers, _, _ = run(Gzip(app), accept_encoding="gzip", if_none_match='"img"')
    assert headers == [("ETag", '"img"')]


@pytest.mark.parametrize("extra", [[("Content-Type", "image/png")], [("Content-Encoding", "br")],
                                   [("Cache-Control", "no-transform")]])
def test_a_304_of_a_representation_never_compressed_is_left_alone(extra):
    def app(environ, start_response):
        start_response("304 Not Modified", [("ETag", '"x"'), *extra])
        return []
    _, headers, _, _ = run(Gzip(app), accept_encoding="gzip", if_none_match='W/"x"')
    assert headers == [("ETag", '"x"'), *extra]


def test_head_of_an_app_that_skips_the_body_gets_no_false_content_length():
    transport = Recorder()
    through_core(Gzip(conditional_app(False)), transport, method="HEAD", accept_encoding="gzip")
    head = dict(transport.head[1])
    assert head["Content-Encoding"] == "gzip" and "Content-Length" not in head and transport.body == b""


# -- flushing: responsive streams without bloated tiny chunks ------------------------

@pytest.fixture()
def frozen_clock(monkeypatch):
    """The clock Gzip measures the app's pauses with; tests move it by hand."""
    import bridge.middleware.gzip as module
    now = [1000.0]
    monkeypatch.setattr(module, "_clock", lambda: now[0], raising=False)   # raising: also on old code
    return now


def stream_app(chunks, ctype="text/plain", clock=None, pause_before=()):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", ctype)])
        for i, chunk in enumerate(chunks):
            if i in pause_before:
                clock[0] += 1.0       # the app waits a second (on the test's clock)
            yield chunk
    return app


def iterate(app, **headers):
    environ = {"REQUEST_METHOD": "GET", **{"HTTP_" + k.upper(): v for k, v in headers.items()}}
    result = app(environ, lambda s, h, e=None: None)
    try:
        return list(result)
    finally:
        result.close()


def test_ten_thousand_one_byte_chunks_compress_close_to_one_shot(frozen_clock):
    data = bytes(b"abcdefghij"[i % 10] ^ (i % 7) for i in range(10000))
    pieces = iterate(Gzip(stream_app([data[i:i + 1] for i in range(len(data))])), accept_encoding="gzip")
    body = b"".join(pieces)
    assert gzip.decompress(body) == data
    one_shot = len(gzip.compress(data, 6))
    assert len(body) < 2 * one_shot, (len(body), one_shot)   # was 70,020 bytes: one flush per byte
    assert len(pieces) >= 10000       # PEP 3333: one yield (b"" while held) per app yield


def test_output_is_flushed_every_flush_size_bytes(frozen_clock):
    chunks = [os.urandom(500).hex().encode() for _ in range(100)]      # 1000 bytes each
    decoder = zlib.decompressobj(31)
    decoded = 0
    fed = 0
    result = Gzip(stream_app(chunks), flush_size=4096)({"REQUEST_METHOD": "GET", "HTTP_ACCEPT_ENCODING": "gzip"},
                                                        lambda s, h, e=None: None)
    for piece in result:
        decoded += len(decoder.decompress(piece))
        fed = min(fed + 1000, 100000)
        assert fed - decoded < 4096 + 1000      # never more than one threshold held back
    assert decoded == 100000


def test_a_chunk_the_app_was_slow_to_make_is_decodable_on_arrival(frozen_clock):
    events = [f"line {i}\n".encode() for i in range(5)]
    app = Gzip(stream_app(events, clock=frozen_clock, pause_before=range(5)))
    decoder = zlib.decompressobj(31)
    decoded = []
    for piece in app({"REQUEST_METHOD": "GET", "HTTP_ACCEPT_ENCODING": "gzip"}, lambda s, h, e=None: None):
        decoded.append(decoder.decompress(piece))
    assert decoded[:5] == events


def test_an_empty_chunk_from_the_app_flushes_what_is_held(frozen_clock):
    app = Gzip(stream_app([b"quick ", b"burst", b"", b"tail"]))
    decoder = zlib.decompressobj(31)
    decoded = b""
    for i, piece in enumerate(app({"REQUEST_METHOD": "GET", "HTTP_ACCEPT_ENCODING": "gzip"},
                                  lambda s, h, e=None: None)):
        decoded += decoder.decompress(piece)
        if i == 2:
            assert decoded == b"quick burst"      # held until the app's b""
    assert decoded == b"quick bursttail"


def test_event_stream_chunks_are_each_flushed_even_when_fast(frozen_clock):
    events = [f"data: {i}\n\n".encode() for i in range(5)]
    decoder = zlib.decompressobj(31)
    pieces = [decoder.decompress(p) for p in iterate(Gzip(stream_app(events, "text/event-stream")),
                                                       accept_encoding="gzip")]
    assert pieces[:5] == events


def test_flush_settings_are_checked():
    with pytest.raises(ValueError, match="flush_size"):
        Gzip(list_app(), flush_size=0)
    with pytest.raises(ValueError, match="pause"):
        Gzip(list_app(), pause=-1)
