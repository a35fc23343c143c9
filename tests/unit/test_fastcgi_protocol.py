"""The application side of a FastCGI connection (sans-I/O), fed byte strings."""
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from bridge.fastcgi import protocol as p
from support.fastcgi import get_params, parse_replies, request_bytes


def conn(**kw):
    kw.setdefault("max_conns", 8)
    kw.setdefault("max_reqs", 8)
    return p.ServerConnection(**kw)


def replies(data: bytes) -> dict:
    return parse_replies(p.RecordReader().feed(data))


def ready(events):
    return [e.request for e in events if isinstance(e, p.RequestReady)]


def test_simple_request_is_ready_with_params_and_empty_body():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params("/x", "a=1"))))
    assert req.params["PATH_INFO"] == "/x"
    assert req.params["QUERY_STRING"] == "a=1"
    assert req.role == p.RESPONDER and req.keep_conn is False
    assert req.stdin.read() == b""
    assert c.data_to_send() == b""


def test_request_is_not_ready_before_the_empty_stdin_record():
    c = conn()
    assert ready(c.receive_data(request_bytes(get_params(), b"body", end_stdin=False))) == []
    (req,) = ready(c.receive_data(p.encode_record(p.STDIN, 1, b"")))
    assert req.stdin.read() == b"body"


def test_params_values_are_latin1_str_bytes_as_str():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes({b"PATH_INFO": "/caf\xc3\xa9".encode("latin-1")})))
    assert req.params["PATH_INFO"] == "/caf\xc3\xa9"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_request_split_at_any_bytes_gives_the_same_request(data):
    body = bytes(range(256)) * 3
    params = get_params("/p", "q=" + "x" * 200, HTTP_COOKIE="c" * 300, CONTENT_LENGTH=str(len(body)))
    stream = request_bytes(params, body, keep_conn=True)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    c = conn()
    got = []
    prev = 0
    for cut in cuts + [len(stream)]:
        got += ready(c.receive_data(stream[prev:cut]))
        prev = cut
    (req,) = got
    assert req.params == params
    assert req.stdin.read() == body


def test_request_split_in_two_at_every_byte_gives_the_same_request():
    body = b"0123456789" * 30
    params = get_params("/every", "split=1", HTTP_COOKIE="k" * 200, CONTENT_LENGTH=str(len(body)))
    stream = request_bytes(params, body, keep_conn=True)
    for cut in range(len(stream) + 1):
        c = conn()
        (req,) = ready(c.receive_data(stream[:cut]) + c.receive_data(stream[cut:]))
        assert req.params == params and req.stdin.read() == body, cut


@pytest.mark.parametrize("cut", range(1, 12))
def test_params_split_inside_a_four_byte_length_prefix(cut):
    pairs = p.encode_pairs([(b"HTTP_COOKIE", b"v" * 300)])
    c = conn()
    c.receive_data(p.encode_record(p.BEGIN_REQUEST, 1, p.encode_begin_request(p.RESPONDER)))
    c.receive_data(p.encode_record(p.PARAMS, 1, pairs[:cut]))
    c.receive_data(p.encode_record(p.PARAMS, 1, pairs[cut:]))
    c.receive_data(p.encode_record(p.PARAMS, 1, b""))
    (req,) = ready(c.receive_data(p.encode_record(p.STDIN, 1, b"")))
    assert req.params == {"HTTP_COOKIE": "v" * 300}


def test_get_values_answers_the_real_values_and_omits_unknown_names():
    c = conn(max_conns=12, max_reqs=34)
    query = p.encode_pairs([(p.MAX_CONNS, b""), (p.MAX_REQS, b""), (p.MPXS_CONNS, b""), (b"OTHER", b"")])
    assert c.receive_data(p.encode_record(p.GET_VALUES, 0, query)) == []
    ((rtype, content),) = replies(c.data_to_send())[0]
    assert rtype == p.GET_VALUES_RESULT
    assert p.decode_pairs(content) == [(p.MAX_CONNS, b"12"), (p.MAX_REQS, b"34"), (p.MPXS_CONNS, b"1")]


def test_unknown_management_record_gets_unknown_type():
    c = conn()
    (event,) = c.receive_data(p.encode_record(42, 0, b"whatever"))
    assert isinstance(event, p.RecordIgnored)
    assert c.data_to_send() == p.encode_record(p.UNKNOWN_TYPE, 0, p.encode_unknown_type(42))


def test_unknown_role_is_refused_with_end_request_unknown_role():
    c = conn()
    events = c.receive_data(request_bytes(get_params(), role=7))
    assert ready(events) == []
    assert replies(c.data_to_send())[1].protocol_status == p.UNKNOWN_ROLE
    assert c.must_close


def test_multiplexed_requests_interleaved_are_kept_apart():
    c = conn()
    a = request_bytes(get_params("/a"), b"AAAA", request_id=1, keep_conn=True)
    b = request_bytes(get_params("/b"), b"BBBB", request_id=2, keep_conn=True)
    # interleave record by record
    ra, rb = p.RecordReader().feed(a), p.RecordReader().feed(b)
    stream = b"".join(p.encode_record(t, i, c_) for pair in zip(ra, rb) for t, i, c_ in pair)
    reqs = ready(c.receive_data(stream))
    assert {r.id: (r.params["PATH_INFO"], r.stdin.read()) for r in reqs} == {1: ("/a", b"AAAA"), 2: ("/b", b"BBBB")}
    out = c.respond(2, b"Status: 200 OK\r\n\r\ntwo") + c.respond(1, b"Status: 200 OK\r\n\r\none")
    got = replies(out)
    assert got[1].stdout.endswith(b"one") and got[2].stdout.endswith(b"two")
    assert not c.must_close


def test_multiplexing_refused_when_disabled_with_cant_mpx_conn():
    c = conn(multiplex=False)
    c.receive_data(request_bytes(get_params(), request_id=1, keep_conn=True))
    c.receive_data(request_bytes(get_params(), request_id=2, keep_conn=True))
    assert replies(c.data_to_send())[2].protocol_status == p.CANT_MPX_CONN


def test_too_many_requests_in_flight_get_overloaded():
    c = conn(max_in_flight=2)
    for rid in (1, 2, 3):
        c.receive_data(request_bytes(get_params(), request_id=rid, keep_conn=True))
    assert replies(c.data_to_send())[3].protocol_status == p.OVERLOADED


def test_keep_conn_zero_closes_after_end_request_and_one_keeps_it():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params(), keep_conn=True)))
    c.respond(req.id, b"Status: 204 No Content\r\n\r\n")
    assert not c.must_close
    (req,) = ready(c.receive_data(request_bytes(get_params(), keep_conn=False)))
    c.respond(req.id, b"Status: 204 No Content\r\n\r\n")
    assert c.must_close


def test_small_response_is_one_stdout_record_then_end_in_one_buffer():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params())))
    out = c.respond(req.id, b"Status: 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    recs = p.RecordReader().feed(out)
    assert [(t, len(x)) for t, _, x in recs] == [(p.STDOUT, 39), (p.STDOUT, 0), (p.END_REQUEST, 8)]
    assert len(out) % 8 == 0


def test_large_output_is_split_into_records_of_at_most_65535_bytes():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params())))
    out = c.stdout(req.id, b"x" * 200000) + c.end_request(req.id)
    recs = p.RecordReader().feed(out)
    assert max(len(x) for _, _, x in recs) == 65535
    assert sum(len(x) for t, _, x in recs if t == p.STDOUT) == 200000


def test_stderr_stream_is_closed_when_used():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params())))
    out = c.stderr(req.id, b"oops\n") + c.respond(req.id, b"Status: 200 OK\r\n\r\n")
    types = [t for t, _, _ in p.RecordReader().feed(out)]
    assert types == [p.STDERR, p.STDOUT, p.STDOUT, p.STDERR, p.END_REQUEST]


def test_output_for_an_ended_request_is_a_local_error():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params())))
    c.end_request(req.id)
    with pytest.raises(p.LocalProtocolError):
        c.stdout(req.id, b"late")


def test_abort_during_upload_drops_the_request_and_answers_end_request():
    c = conn()
    c.receive_data(request_bytes(get_params(CONTENT_LENGTH="100"), b"x" * 10, keep_conn=True, end_stdin=False))
    (event,) = c.receive_data(p.encode_record(p.ABORT_REQUEST, 1, b""))
    assert isinstance(event, p.RequestAborted) and not event.running
    assert replies(c.data_to_send())[1].protocol_status == p.REQUEST_COMPLETE
    assert c.requests == {}
    # its late STDIN records are dropped silently
    assert c.receive_data(p.encode_record(p.STDIN, 1, b"more")) == []


def test_abort_of_a_running_request_is_an_event_for_the_caller():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params(), keep_conn=True)))
    (event,) = c.receive_data(p.encode_record(p.ABORT_REQUEST, 1, b""))
    assert isinstance(event, p.RequestAborted) and event.running
    assert req.aborted
    assert p.RecordReader().feed(c.end_request(1, 1))[-1][0] == p.END_REQUEST


def test_oversized_params_get_431_and_the_rest_of_the_request_is_dropped():
    c = conn(max_params=1024)
    events = c.receive_data(request_bytes(get_params(HTTP_COOKIE="c" * 5000), b"body", keep_conn=True))
    (rej,) = [e for e in events if isinstance(e, p.RequestRejected)]
    assert rej.status == 431
    assert [e for e in events if not isinstance(e, p.RequestRejected)] == []
    reply = replies(c.data_to_send())[1]
    assert reply.head_and_body()[0] == "431 Request Header Fields Too Large"
    assert reply.protocol_status == p.REQUEST_COMPLETE
    assert not c.must_close


def test_body_past_the_spool_threshold_goes_to_a_temporary_file():
    c = conn(spool_threshold=1000)
    body = bytes(range(256)) * 40
    (req,) = ready(c.receive_data(request_bytes(get_params(CONTENT_LENGTH=str(len(body))), body)))
    assert req.stdin.fileno() >= 0
    assert req.stdin.read() == body


def test_body_without_content_length_is_terminated_by_empty_stdin():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params(method="POST"), b"chunked body")))
    assert req.input_terminated
    assert req.params["CONTENT_LENGTH"] == "12"
    assert req.stdin.read() == b"chunked body"


def test_body_shorter_than_content_length_is_rejected_with_400():
    c = conn()
    events = c.receive_data(request_bytes(get_params(CONTENT_LENGTH="10"), b"abc"))
    assert [e.status for e in events if isinstance(e, p.RequestRejected)] == [400]


def test_body_longer_than_content_length_is_rejected_with_400():
    c = conn()
    events = c.receive_data(request_bytes(get_params(CONTENT_LENGTH="2"), b"abc"))
    assert [e.status for e in events if isinstance(e, p.RequestRejected)] == [400]


def test_body_over_max_body_is_rejected_with_413():
    c = conn(max_body=5)
    events = c.receive_data(request_bytes(get_params(CONTENT_LENGTH="10"), b"0123456789"))
    assert [e.status for e in events if isinstance(e, p.RequestRejected)] == [413]


def test_authorizer_is_ready_after_params_without_stdin():
    c = conn()
    (req,) = ready(c.receive_data(request_bytes(get_params(), role=p.AUTHORIZER)))
    assert req.role_name == "AUTHORIZER"
    assert req.stdin.read() == b""
    # an empty STDIN a web server might still send is harmless
    assert c.receive_data(p.encode_record(p.STDIN, 1, b"")) == []


def test_filter_gets_stdin_and_the_data_stream():
    c = conn()
    stream = request_bytes(get_params(FCGI_DATA_LENGTH="4"), b"in", role=p.FILTER, data=b"file")
    (req,) = ready(c.receive_data(stream))
    assert req.stdin.read() == b"in" and req.data.read() == b"file"


def test_records_for_unknown_request_ids_are_ignored():
    c = conn()
    (event,) = c.receive_data(p.encode_record(p.STDIN, 9, b"x"))
    assert isinstance(event, p.RecordIgnored) and event.request_id == 9
    assert c.data_to_send() == b""


def test_begin_request_for_a_request_in_flight_is_a_protocol_error():
    c = conn()
    begin = p.encode_record(p.BEGIN_REQUEST, 1, p.encode_begin_request(p.RESPONDER, p.KEEP_CONN))
    c.receive_data(begin)
    with pytest.raises(p.ProtocolError):
        c.receive_data(begin)


def test_wrong_version_is_a_protocol_error():
    with pytest.raises(p.ProtocolError, match="version"):
        conn().receive_data(b"\x02" + bytes(15))


def test_truncated_record_at_eof_is_a_protocol_error():
    c = conn()
    c.receive_data(request_bytes(get_params())[:-3])
    with pytest.raises(p.ProtocolError):
        c.receive_eof()


record = st.builds(
    lambda t, rid, content: p.encode_record(t, rid, content),
    st.integers(0, 14), st.integers(0, 3), st.binary(max_size=40))
begin = st.builds(lambda rid, role, flags: p.encode_record(p.BEGIN_REQUEST, rid, p.encode_begin_request(role, flags)),
                  st.integers(0, 3), st.integers(0, 4), st.integers(0, 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(record, begin, st.binary(max_size=20)), max_size=12))
def test_random_records_and_garbage_raise_nothing_but_protocol_error(chunks):
    c = conn(max_params=64, spool_threshold=16)
    try:
        for chunk in chunks:
            for event in c.receive_data(chunk):
                if isinstance(event, p.RequestReady):
                    c.respond(event.request.id, b"Status: 200 OK\r\n\r\n")
            c.data_to_send()
        c.receive_eof()
    except p.ProtocolError:
        pass


def test_close_input_closes_a_spooled_body_of_a_request_the_caller_drops():
    # What fastcgi/server.py does for requests it never runs (the connection
    # closed under them): the temporary file goes now, not at collection.
    c = conn(spool_threshold=16)
    body = b"x" * 100
    (req,) = ready(c.receive_data(request_bytes(get_params(CONTENT_LENGTH=str(len(body))), body)))
    spool = req.stdin
    req.close_input()
    assert spool.closed
    req.close_input()       # twice is harmless


def test_the_connection_state_machine_reexports_the_record_codec():
    from bridge.fastcgi import records
    for name in records.__all__:
        assert getattr(p, name) is getattr(records, name)
