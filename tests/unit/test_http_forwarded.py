"""Trusted proxies and what they may change (X-Forwarded-*, RFC 7239 Forwarded), with plain dicts."""
from __future__ import annotations

import pytest

from bridge.http.forwarded import TrustedProxies, apply_forwarded, parse_forwarded


def env(**headers) -> dict:
    base = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5000", "HTTP_HOST": "internal:8000",
            "wsgi.url_scheme": "http"}
    base.update(headers)
    return base


def test_trusted_proxies_accepts_addresses_networks_and_star():
    t = TrustedProxies("127.0.0.1, 10.0.0.0/8 ,::1")
    assert t.trusts("127.0.0.1") and t.trusts("10.200.3.4") and t.trusts("::1")
    assert t.trusts("::ffff:10.1.1.1")          # v4-mapped from a dual-stack socket
    assert not t.trusts("192.0.2.1") and not t.trusts("not-an-ip")
    assert t.trusts(None)                        # a unix socket peer
    assert TrustedProxies("*").trusts("198.51.100.1")
    assert not TrustedProxies("")
    with pytest.raises(ValueError, match="not an address"):
        TrustedProxies("127.0.0.1,localhost")


def test_x_forwarded_headers_set_client_scheme_and_host():
    e = env(HTTP_X_FORWARDED_FOR="203.0.113.5", HTTP_X_FORWARDED_PROTO="HTTPS",
            HTTP_X_FORWARDED_HOST="www.example.com")
    apply_forwarded(e, TrustedProxies("127.0.0.1"), forwarded_host=True)
    assert e["REMOTE_ADDR"] == "203.0.113.5" and "REMOTE_PORT" not in e
    assert e["wsgi.url_scheme"] == "https" and e["HTTPS"] == "on"
    assert e["HTTP_HOST"] == "www.example.com"


def test_rightmost_untrusted_address_is_the_client():
    e = env(HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7, 10.0.0.2, 10.0.0.1")
    apply_forwarded(e, TrustedProxies("127.0.0.1,10.0.0.0/8"))
    assert e["REMOTE_ADDR"] == "198.51.100.7"


def test_all_trusted_chain_gives_the_leftmost():
    e = env(HTTP_X_FORWARDED_FOR="10.0.0.9, 10.0.0.1")
    apply_forwarded(e, TrustedProxies("*"))
    assert e["REMOTE_ADDR"] == "10.0.0.9"


def test_nearest_proxy_proto_and_host_win_in_lists():
    e = env(HTTP_X_FORWARDED_PROTO="https, http", HTTP_X_FORWARDED_HOST="a.example, b.example")
    apply_forwarded(e, TrustedProxies("127.0.0.1"), forwarded_host=True)
    assert e["wsgi.url_scheme"] == "http" and "HTTPS" not in e and e["HTTP_HOST"] == "b.example"


def test_unknown_proto_and_unknown_address_change_nothing():
    e = env(HTTP_X_FORWARDED_PROTO="gopher", HTTP_X_FORWARDED_FOR="unknown")
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
    assert e["wsgi.url_scheme"] == "http" and e["REMOTE_ADDR"] == "127.0.0.1"


def test_rfc7239_forwarded_elements_and_quoting():
    assert parse_forwarded('for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"') == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}, {"for": "[2001:db8:cafe::17]:4711"}]
    e = env(HTTP_FORWARDED='for=198.51.100.2;proto=https;host="shop.example", for="[::1]:9"')
    apply_forwarded(e, TrustedProxies("127.0.0.1,::1"), forwarded_host=True)
    assert e["REMOTE_ADDR"] == "198.51.100.2"
    assert e["wsgi.url_scheme"] == "https" and e["HTTP_HOST"] == "shop.example"


def test_x_forwarded_headers_take_precedence_over_forwarded():
    e = env(HTTP_X_FORWARDED_FOR="203.0.113.5", HTTP_FORWARDED="for=198.51.100.2")
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
    assert e["REMOTE_ADDR"] == "203.0.113.5"


def test_hidden_forwarded_node_keeps_the_peer_address():
    e = env(HTTP_FORWARDED="for=_hidden;proto=https")
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
    assert e["REMOTE_ADDR"] == "127.0.0.1" and e["wsgi.url_scheme"] == "https"


# --------------------------------------------------------------------------
# The host: off unless asked for, and then only of Host syntax (issue 15)


def test_forwarded_host_is_ignored_unless_switched_on():
    for headers in ({"HTTP_X_FORWARDED_HOST": "evil.example"},
                    {"HTTP_FORWARDED": "host=evil.example;proto=https"},
                    {"HTTP_X_FORWARDED_FOR": "203.0.113.5", "HTTP_X_FORWARDED_HOST": "evil.example"}):
        e = env(**headers)
        apply_forwarded(e, TrustedProxies("*"))
        assert e["HTTP_HOST"] == "internal:8000", headers
        assert e.get("HTTP_X_FORWARDED_HOST") == headers.get("HTTP_X_FORWARDED_HOST")   # visible, unused


BAD_HOSTS = [
    ("path", "evil.example/pwn"),
    ("query", "evil.example?x=1"),
    ("fragment", "evil.example#x"),
    ("path_query_and_junk", "evil.example/pwn?x=1 junk"),
    ("space", "evil.example junk"),
    ("tab", "evil\texample"),
    ("userinfo", "user@evil.example"),
    ("userinfo_with_port", "user:pw@evil.example:80"),
    ("cr", "evil.example\r"),
    ("lf", "evil.example\nX-Injected: 1"),
    ("nul", "evil\x00.example"),
    ("esc", "evil\x1b[2J.example"),
    ("del", "evil\x7f.example"),
    ("non_ascii", "\xe9vil.example"),
    ("backslash", "evil.example\\x"),
    ("quote", 'evil"example'),
    ("angle", "<evil.example>"),
    ("empty_host_with_port", ":8080"),
    ("port_not_digits", "evil.example:80x"),
    ("two_ports", "evil.example:80:81"),
    ("bare_ipv6", "2001:db8::1"),
    ("ipv6_unclosed", "[2001:db8::1"),
    ("ipv6_not_hex", "[2001:db8::zz]"),
    ("ipv6_too_many_groups", "[1:2:3:4:5:6:7:8:9]"),
    ("ipv6_two_double_colons", "[1::2::3]"),
    ("ipv6_zone_id", "[fe80::1%25eth0]"),
    ("ipv6_junk_after", "[::1]x"),
    ("ipv6_port_junk", "[::1]:8o"),
    ("bad_percent", "evil%zz.example"),
]
GOOD_HOSTS = ["www.example.com", "www.example.com:8443", "www.example.com:", "192.0.2.7", "192.0.2.7:80",
              "[::1]", "[::1]:8080", "[2001:db8::1]", "[::ffff:192.0.2.1]:443", "[v1.fe80::a+en1]",
              "xn--bcher-kva.example", "caf%C3%A9.example", "localhost"]


@pytest.mark.parametrize("value", [b[1] for b in BAD_HOSTS], ids=[b[0] for b in BAD_HOSTS])
@pytest.mark.parametrize("header", ["x-forwarded-host", "forwarded"])
def test_a_forwarded_host_that_is_not_a_host_is_ignored(value, header):
    if header == "x-forwarded-host":
        e = env(HTTP_X_FORWARDED_HOST=value)
    else:
        e = env(HTTP_FORWARDED='for=192.0.2.1;host="%s"' % value.replace("\\", "\\\\").replace('"', '\\"'))
    apply_forwarded(e, TrustedProxies("127.0.0.1"), forwarded_host=True)
    assert e["HTTP_HOST"] == "internal:8000"


@pytest.mark.parametrize("value", GOOD_HOSTS)
@pytest.mark.parametrize("header", ["x-forwarded-host", "forwarded"])
def test_a_forwarded_host_of_host_syntax_is_applied_when_switched_on(value, header):
    if header == "x-forwarded-host":
        e = env(HTTP_X_FORWARDED_HOST=value)
    else:
        e = env(HTTP_FORWARDED='for=192.0.2.1;host="%s"' % value)
    apply_forwarded(e, TrustedProxies("127.0.0.1"), forwarded_host=True)
    assert e["HTTP_HOST"] == value


@pytest.mark.parametrize("value, expected", [
    ("a.example, b.example", "b.example"),         # the nearest proxy's value
    ("a.example,b.example", "b.example"),
    ("good.example, evil/x", "internal:8000"),     # the nearest is bad: ignored, no fallback to the left
    ("evil/x, good.example", "good.example"),
    ("a.example, ", "a.example"),
])
def test_a_list_of_forwarded_hosts_gives_the_rightmost_if_valid(value, expected):
    e = env(HTTP_X_FORWARDED_HOST=value)
    apply_forwarded(e, TrustedProxies("127.0.0.1"), forwarded_host=True)
    assert e["HTTP_HOST"] == expected


@pytest.mark.parametrize("xff", ["evil", "1.2.3.4 5", "1.2.3.999", "1.2.3.4/24", "::1::2", "[1.2.3.4]junk",
                                 "203.0.113.5\x1b[2J", "_hidden", "unknown", "2001:db8::1%eth0"])
def test_a_forwarded_client_that_is_not_an_ip_address_keeps_the_peer_address(xff):
    for e in (env(HTTP_X_FORWARDED_FOR=xff), env(HTTP_FORWARDED='for="%s"' % xff)):
        apply_forwarded(e, TrustedProxies("127.0.0.1"))
        assert e["REMOTE_ADDR"] == "127.0.0.1" and e["REMOTE_PORT"] == "5000"


@pytest.mark.parametrize("xff, expected", [("[2001:db8::5]:4711", "2001:db8::5"), ("192.0.2.9:80", "192.0.2.9"),
                                           ("2001:db8::5", "2001:db8::5")])
def test_forwarded_client_addresses_with_ports_and_brackets(xff, expected):
    e = env(HTTP_X_FORWARDED_FOR=xff)
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
    assert e["REMOTE_ADDR"] == expected


@pytest.mark.parametrize("xff, expected", [
    ("198.51.100.7, [::1]:4711", "198.51.100.7"),     # a trusted proxy written with brackets and port
    ("198.51.100.7, 127.0.0.1:80", "198.51.100.7"),
    ("198.51.100.7, garbage, 127.0.0.1", "127.0.0.1"),  # garbage next to the proxy: the peer stays
    ("198.51.100.7, unknown", "127.0.0.1"),
])
def test_the_trust_walk_reads_each_node_as_an_address(xff, expected):
    e = env(HTTP_X_FORWARDED_FOR=xff)
    apply_forwarded(e, TrustedProxies("127.0.0.1,::1"))
    assert e["REMOTE_ADDR"] == expected
