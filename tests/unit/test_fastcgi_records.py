"""The FastCGI record layer (spec §3.3, §3.4), fed byte strings."""
import pytest
from hypothesis import given, settings, strategies as st

from bridge.fastcgi import protocol as p


def test_record_is_padded_to_a_multiple_of_eight():
    rec = p.encode_record(p.STDOUT, 1, b"abc")
    assert rec == bytes([1, p.STDOUT, 0, 1, 0, 3, 5, 0]) + b"abc" + bytes(5)


def test_empty_record_ends_a_stream():
    assert p.encode_record(p.STDIN, 258) == bytes([1, p.STDIN, 1, 2, 0, 0, 0, 0])


def test_content_over_65535_bytes_is_split_into_several_records():
    data = bytes(range(256)) * 600   # 153600 bytes
    framed = p.encode_record(p.STDOUT, 7, data)
    records = p.RecordReader().feed(framed)
    assert [len(c) for _, _, c in records] == [65535, 65535, 153600 - 2 * 65535]
    assert b"".join(c for _, _, c in records) == data
    assert {(t, r) for t, r, _ in records} == {(p.STDOUT, 7)}


def test_record_reader_rejects_a_wrong_version():
    with pytest.raises(p.ProtocolError, match="version"):
        p.RecordReader().feed(b"GET / HTTP/1.1\r\n\r\n")


def test_record_reader_reports_a_record_cut_off_at_end_of_input():
    reader = p.RecordReader()
    assert reader.feed(p.encode_record(p.STDIN, 1, b"hello")[:-2]) == []
    with pytest.raises(p.ProtocolError, match="inside a record"):
        reader.check_complete()


def test_pairs_use_four_byte_lengths_from_128_bytes():
    enc = p.encode_pairs([(b"N", b"x" * 127), (b"M", b"y" * 128)])
    assert enc[:2] == bytes([1, 127])
    second = enc[2 + 1 + 127:]
    assert second[:5] == bytes([1, 0x80, 0, 0, 128])
    assert p.decode_pairs(enc) == [(b"N", b"x" * 127), (b"M", b"y" * 128)]


def test_pairs_accept_a_dict_and_latin1_str():
    assert p.decode_pairs(p.encode_pairs({"PATH_INFO": "/caf\xe9"})) == [(b"PATH_INFO", b"/caf\xe9")]


@pytest.mark.parametrize("cut", range(1, 9))
def test_truncated_pair_stream_raises_protocol_error(cut):
    enc = p.encode_pairs([(b"NAME", b"v" * 200)])
    with pytest.raises(p.ProtocolError):
        p.decode_pairs(enc[:-cut] if cut < len(enc) else enc[:1])


def test_begin_and_end_request_bodies_round_trip():
    assert p.decode_begin_request(p.encode_begin_request(p.AUTHORIZER, p.KEEP_CONN)) == (p.AUTHORIZER, 1)
    assert p.decode_end_request(p.encode_end_request(3, p.UNKNOWN_ROLE)) == (3, p.UNKNOWN_ROLE)
    assert p.encode_unknown_type(42) == bytes([42]) + bytes(7)


pairs_strategy = st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=300)), max_size=6)


@settings(max_examples=200, deadline=None)
@given(pairs_strategy)
def test_any_pairs_round_trip(pairs):
    assert p.decode_pairs(p.encode_pairs(pairs)) == pairs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=70000), min_size=1, max_size=4), st.data())
def test_records_survive_any_split_of_the_byte_stream(contents, data):
    stream = b"".join(p.encode_record(p.STDIN, 1, c) for c in contents)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = p.RecordReader()
    got = []
    prev = 0
    for cut in cuts + [len(stream)]:
        got += reader.feed(stream[prev:cut])
        prev = cut
    reader.check_complete()
    assert b"".join(c for _, _, c in got) == b"".join(contents)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_gives_records_or_protocol_error_only(garbage):
    reader = p.RecordReader()
    try:
        reader.feed(garbage)
    except p.ProtocolError:
        pass


def test_a_record_trickling_in_one_byte_at_a_time_is_parsed_once_complete():
    record = p.encode_record(p.STDIN, 3, b"y" * 65535)
    reader = p.RecordReader()
    got = []
    for i in range(len(record)):
        got += reader.feed(record[i:i + 1])
        if i < len(record) - 1:
            assert got == []
    assert got == [(p.STDIN, 3, b"y" * 65535)]
    assert reader.buffered == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=150_000), max_size=4))
def test_framing_pieces_as_buffers_equals_framing_their_concatenation(sizes):
    pieces = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    whole = b"".join(pieces)
    buffers = p.frame_buffers(p.STDOUT, 7, pieces)
    expected = p.encode_record(p.STDOUT, 7, whole) if whole else b""
    assert b"".join(buffers) == expected
    # The content is the pieces themselves or views of them: never copied.
    content = [b for b in buffers if len(b) > 8]
    assert all(any(b is x or getattr(b, "obj", None) is x for x in pieces) for b in content)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 65535])
def test_record_header_and_padding_frame_content_sent_separately_like_encode_record(length):
    from bridge.fastcgi import records
    content = b"y" * length
    separately = records.record_header(p.STDOUT, 3, length) + content + records.record_padding(length)
    assert separately == records.encode_record(p.STDOUT, 3, content) == records.single_record(p.STDOUT, 3, content)
    assert len(separately) % 8 == 0


def test_decode_params_agrees_with_decode_pairs_for_long_and_short_lengths():
    from bridge.fastcgi import records
    pairs = [(b"A", b""), (b"N" * 200, b"v"), (b"k", b"\xff" * 300), (b"A", b"last wins")]
    params = records.decode_params(records.encode_pairs(pairs))
    assert params == {k.decode("latin-1"): v.decode("latin-1") for k, v in records.decode_pairs(records.encode_pairs(pairs))}
    assert params["A"] == "last wins" and params["k"] == "\xff" * 300
