"""Defects the FastCGI state machine (test_fuzz_fastcgi.py) found in fastcgi/protocol.py."""
import pytest

from bridge.fastcgi import protocol as p
from support.fastcgi import parse_replies, request_bytes

# str.isdigit() is true for the latin-1 superscripts and more, which int()
# refuses: found as params(stream=b'\x0e\x02CONTENT_LENGTH\xb9\xb2') raising
# ValueError out of receive_data (the connection's only documented error is
# ProtocolError, so the worker's read loop would crash on it).
NOT_ASCII_DIGITS = [b"\xb2", b"\xb9\xb2", b"\xb3", b"1\xb2", b"\xbc"]


@pytest.mark.parametrize("max_body", [0, 10])
@pytest.mark.parametrize("length", NOT_ASCII_DIGITS)
def test_a_content_length_of_non_ascii_digits_is_a_400_not_an_exception(length, max_body):
    conn = p.ServerConnection(max_body=max_body)
    events = conn.receive_data(request_bytes({b"REQUEST_METHOD": b"POST", b"CONTENT_LENGTH": length}, b"ab"))
    (rejected,) = [e for e in events if isinstance(e, p.RequestRejected)]
    assert rejected.status == 400
    replies = parse_replies(p.RecordReader().feed(conn.data_to_send()))
    assert replies[1].stdout.startswith(b"Status: 400 ")
    assert replies[1].protocol_status == p.REQUEST_COMPLETE
