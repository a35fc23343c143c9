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
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
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
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
    assert e["wsgi.url_scheme"] == "http" and "HTTPS" not in e and e["HTTP_HOST"] == "b.example"


def test_unknown_proto_and_unknown_address_change_nothing():
    e = env(HTTP_X_FORWARDED_PROTO="gopher", HTTP_X_FORWARDED_FOR="unknown")
    apply_forwarded(e, TrustedProxies("127.0.0.1"))
    assert e["wsgi.url_scheme"] == "http" and e["REMOTE_ADDR"] == "127.0.0.1"


def test_rfc7239_forwarded_elements_and_quoting():
    assert parse_forwarded('for=192.0.2.60;proto=http;by=203.0.113.43, For="[2001:db8:cafe::17]:4711"') == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}, {"for": "[2001:db8:cafe::17]:4711"}]
    e = env(HTTP_FORWARDED='for=198.51.100.2;proto=https;host="shop.example", for="[::1]:9"')
    apply_forwarded(e, TrustedProxies("127.0.0.1,::1"))
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
