"""bridge.httputil: the response rules, checked against RFC 9110 examples."""
import email.utils

import pytest
from hypothesis import given, settings, strategies as st

from bridge import httputil as h


# -- header lists -----------------------------------------------------------

def test_get_header_is_case_insensitive_and_returns_first():
    headers = [("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")]
    assert h.get_header(headers, "content-type") == "text/plain"
    assert h.get_header(headers, "X-A") == "1"
    assert h.get_all(headers, "X-a") == ["1", "2"]
    assert h.get_header(headers, "missing") is None


def test_remove_and_set_header_replace_every_occurrence():
    headers = [("ETag", '"a"'), ("etag", '"b"'), ("X", "1")]
    h.set_header(headers, "ETag", '"c"')
    assert headers == [("X", "1"), ("ETag", '"c"')]
    h.remove_headers(headers, "x", "etag")
    assert headers == []


def test_split_list_ignores_empty_members_and_commas_in_quotes():
    assert h.split_list(" a ,, b,\tc ,") == ["a", "b", "c"]
    assert h.split_list('"x,y", W/"z\\"," , w') == ['"x,y"', 'W/"z\\","', "w"]
    assert h.split_list(None) == [] and h.split_list("") == []


def test_has_directive_finds_no_transform_among_cache_control_members():
    headers = [("Cache-Control", "public, max-age=60"), ("cache-control", "No-Transform")]
    assert h.has_directive(headers, "Cache-Control", "no-transform")
    assert h.has_directive(headers, "Cache-Control", "max-age")
    assert not h.has_directive(headers, "Cache-Control", "no-store")


@pytest.mark.parametrize("before, after", [
    ([], [("Vary", "Accept-Encoding")]),
    ([("Vary", "Cookie")], [("Vary", "Cookie, Accept-Encoding")]),
    ([("Vary", "cookie, accept-encoding")], [("Vary", "cookie, accept-encoding")]),
    ([("Vary", "Cookie"), ("Vary", "Accept-Encoding")], [("Vary", "Cookie"), ("Vary", "Accept-Encoding")]),
    ([("Vary", "*")], [("Vary", "*")]),
    ([("vary", "")], [("vary", "Accept-Encoding")]),
])
def test_add_vary_merges_with_existing_vary(before, after):
    assert h.add_vary(list(before), "Accept-Encoding") == after


# -- Accept-Encoding --------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("gzip", True),
    ("gzip, deflate, br", True),
    ("GZIP;Q=0.5", True),
    ("x-gzip", True),
    ("gzip;q=0", False),
    ("gzip;q=0.000", False),
    ("gzip; q=0.001", True),
    ("br", False),
    ("*", True),
    ("*;q=0", False),
    ("*, gzip;q=0", False),
    ("gzip;q=0, *", False),
    ("identity", False),
    ("", False),
    ("gzip;q=2", False),          # not a qvalue: the member is dropped
    ("gzip;q=1.000", True),
    ("gzip;q=1.001", False),
    ("gzip;q=0.1234", False),
    ("deflate, gzip;q=1.0, *;q=0.5", True),
])
def test_accepts_gzip_follows_q_values(header, expected):
    assert h.accepts_encoding(header, "gzip") is expected


def test_no_accept_encoding_header_means_identity_only():
    assert h.accepts_encoding(None, "gzip") is False
    assert h.accepts_encoding(None, "identity") is True


def test_identity_is_refused_only_explicitly():
    assert h.accepts_encoding("gzip", "identity")
    assert not h.accepts_encoding("identity;q=0", "identity")
    assert not h.accepts_encoding("*;q=0", "identity")
    assert h.accepts_encoding("*;q=0, identity", "identity")


@pytest.mark.parametrize("header, expected", [
    ("gzip, br", "br"),                 # equal weight: the server's order decides
    ("gzip;q=1, br;q=0.5", "gzip"),
    ("br;q=0, gzip", "gzip"),
    ("deflate", None),
    ("*", "br"),
    (None, None),
])
def test_choose_encoding_prefers_the_highest_weight(header, expected):
    assert h.choose_encoding(header, ("br", "gzip")) == expected


# -- dates ------------------------------------------------------------------

def test_http_date_is_imf_fixdate():
    assert h.http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert h.http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


@pytest.mark.parametrize("text", [
    "Sun, 06 Nov 1994 08:49:37 GMT",        # IMF-fixdate
    "Sunday, 06-Nov-94 08:49:37 GMT",       # obsolete RFC 850 format
    "Sun Nov  6 08:49:37 1994",             # ANSI C asctime() format
    "  Sun, 06 Nov 1994 08:49:37 GMT ",
])
def test_parse_http_date_reads_all_three_formats(text):
    assert h.parse_http_date(text, now=1.7e9) == 784111777


@pytest.mark.parametrize("text", [
    "", "yesterday", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 31 Feb 1994 08:49:37 GMT",
    "Sun, 06 Nov 1994 24:00:00 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "Sun, 6 Nov 1994 08:49:37 GMT",
    "Sun, 06 Nov 94 08:49:37 GMT", "Sun 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49 GMT",
    "Sun, 06 Nov 1994 08:49:3x GMT", "Sun, ٠٦ Nov 1994 08:49:37 GMT", "Sun Nov  6 08:49:37 94",
])
def test_parse_http_date_rejects_what_is_not_an_http_date(text):
    assert h.parse_http_date(text) is None


def test_rfc850_two_digit_year_more_than_50_years_ahead_is_in_the_past():
    now = h.parse_http_date("Mon, 01 Jan 2024 00:00:00 GMT")
    assert h.http_date(h.parse_http_date("Tuesday, 01-Jan-80 00:00:00 GMT", now=now)).endswith("1980 00:00:00 GMT")
    assert h.http_date(h.parse_http_date("Friday, 01-Jan-60 00:00:00 GMT", now=now)).endswith("2060 00:00:00 GMT")


def test_leap_day_is_a_date_and_feb_29_of_a_common_year_is_not():
    assert h.parse_http_date("Thu, 29 Feb 2024 12:00:00 GMT") is not None
    assert h.parse_http_date("Tue, 29 Feb 2100 12:00:00 GMT") is None


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=253402300799))
def test_http_date_round_trips_and_agrees_with_email_utils(ts):
    text = h.http_date(ts)
    assert h.parse_http_date(text) == ts
    assert text == email.utils.formatdate(ts, usegmt=True)


# -- entity-tags ------------------------------------------------------------

def test_parse_etag_strong_weak_and_malformed():
    assert h.parse_etag('"xyzzy"') == (False, '"xyzzy"')
    assert h.parse_etag('W/"xyzzy"') == (True, '"xyzzy"')
    assert h.parse_etag('""') == (False, '""')
    for bad in ('xyzzy', 'w/"x"', '"x', '"x"y', '"a b"', '"a"b"', None):
        assert h.parse_etag(bad) is None


def test_parse_etag_list_with_star_lists_and_garbage():
    assert h.parse_etag_list("*") is h.ANY
    assert h.parse_etag_list('"a", W/"b" ,,"c,d"') == [(False, '"a"'), (True, '"b"'), (False, '"c,d"')]
    assert h.parse_etag_list('"a" "b"') is None
    assert h.parse_etag_list("a, b") is None
    assert h.parse_etag_list("") is None


def test_comparison_table_of_rfc_9110_section_8_8_3_2():
    w1, w2, s1 = h.parse_etag('W/"1"'), h.parse_etag('W/"2"'), h.parse_etag('"1"')
    assert not h.strong_match(w1, w1) and h.weak_match(w1, w1)
    assert not h.strong_match(w1, w2) and not h.weak_match(w1, w2)
    assert not h.strong_match(w1, s1) and h.weak_match(w1, s1)
    assert h.strong_match(s1, s1) and h.weak_match(s1, s1)


def test_etag_in_list_weak_for_if_none_match_strong_for_if_match():
    assert h.etag_in_list('W/"1", "2"', '"1"') is True
    assert h.etag_in_list('W/"1"', '"1"', weak=False) is False
    assert h.etag_in_list("*", '"9"') is True
    assert h.etag_in_list('"3"', '"1"') is False
    assert h.etag_in_list(None, '"1"') is None
    assert h.etag_in_list("junk", '"1"') is None


def test_make_weak():
    assert h.make_weak('"a"') == 'W/"a"'
    assert h.make_weak('W/"a"') == 'W/"a"'


# -- Range ------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    ("bytes=0-499", [(0, 499)]),
    ("bytes=500-999", [(500, 999)]),
    ("bytes=-500", [(9500, 9999)]),
    ("bytes=9500-", [(9500, 9999)]),
    ("bytes=0-0,-1", [(0, 0), (9999, 9999)]),
    ("bytes= 500-600 , 601-999", [(500, 600), (601, 999)]),
    ("Bytes=0-99999999", [(0, 9999)]),
    ("bytes=-20000", [(0, 9999)]),
    ("bytes=0-99999999999999999999999", [(0, 9999)]),
    ("bytes=10000-", []),
    ("bytes=10000-20000", []),
    ("bytes=-0", []),
    ("bytes=99999999999999999999999-", []),
    ("bytes=10000-, 0-1", [(0, 1)]),
])
def test_parse_range_examples(header, expected):
    assert h.parse_range(header, 10000) == expected


@pytest.mark.parametrize("header", [
    None, "", "bytes", "bytes=", "bytes=,", "items=0-1", "bytes=1-0", "bytes=a-b", "bytes=0-1,5",
    "bytes=--1", "bytes=0--1", "bytes=+1-2", "bytes=٠-1", "bytes=" + ",".join(["0-0"] * 101),
])
def test_parse_range_ignores_malformed_headers(header):
    assert h.parse_range(header, 10000) is None


def test_range_on_an_empty_representation_is_ignored():
    assert h.parse_range("bytes=-5", 0) is None
    assert h.parse_range("bytes=0-", 0) is None


def test_content_range():
    assert h.content_range(0, 99, 1234) == "bytes 0-99/1234"


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=1 << 40), st.integers(min_value=0, max_value=1 << 41),
       st.one_of(st.none(), st.integers(min_value=0, max_value=1 << 41)))
def test_parsed_ranges_always_lie_inside_the_representation(size, first, last):
    if last is not None and last < first:
        assert h.parse_range(f"bytes={first}-{last}", size) is None
        return
    spec = f"bytes={first}-" + ("" if last is None else str(last))
    ranges = h.parse_range(spec, size)
    if first >= size:
        assert ranges == []
    else:
        (a, b), = ranges
        assert 0 <= a <= b < size and a == first
