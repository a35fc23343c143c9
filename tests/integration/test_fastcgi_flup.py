"""Differential test: the same FastCGI requests to flup's server and to bridge.

Both serve ``support.fastcgi:inspect_app`` (the str environ as JSON).  Where
the FastCGI or WSGI spec leaves no choice they must agree; the tests at the
end list, one by one, where they differ because flup (1.0.3) is wrong.
"""
import json
import sys

import pytest

from support import Process, bridge_env, free_port, wait_for_port
from support.fastcgi import Client, get_params, request_bytes, start_bridge_fcgi
from bridge.fastcgi import protocol as p

FLUP = ("from flup.server.fcgi import WSGIServer\n"
        "from support.fastcgi import inspect_app\n"
        "WSGIServer(inspect_app, bindAddress=('127.0.0.1', {port})).run()\n")

#: keys only bridge sets (documented environ extensions; wsgi.input_terminated
#: is shown on its own below) or that name the connection
BRIDGE_ONLY = {"fastcgi.role", "connection", "wsgi.input_terminated", "bridge.internal_redirect_root"}


@pytest.fixture(scope="module")
def servers():
    flup_port = free_port()
    flup = Process([sys.executable, "-c", FLUP.format(port=flup_port)], env=bridge_env())
    bridge_port = free_port()
    bridge = start_bridge_fcgi(f"127.0.0.1:{bridge_port}")
    try:
        wait_for_port(flup_port, proc=flup.proc)
    except Exception:
        raise RuntimeError("flup did not start:\n" + flup.output())
    yield {"flup": ("127.0.0.1", flup_port), "bridge": ("127.0.0.1", bridge_port)}
    flup.stop()
    bridge.stop()


def environ_from(address, params, body=b"", raw=None):
    """The app's environ (dict) for one request, or None if no valid response came."""
    with Client(address) as client:
        client.send(raw if raw is not None else request_bytes(params, body))
        client.read_until(lambda recs: any(t == p.END_REQUEST for t, _, _ in recs))
        from support.fastcgi import parse_replies
        reply = parse_replies(client.records).get(1)
    if reply is None or not reply.ended:
        return None
    status, _, data = reply.head_and_body()
    if status != "200 OK":
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def both(servers, params, body=b"", raw=None):
    return (environ_from(servers["flup"], params, body, raw),
            environ_from(servers["bridge"], params, body, raw))


def comparable(env):
    return {k: v for k, v in env.items() if k not in BRIDGE_ONLY}


AGREE = {
    "get_with_path_info": (get_params("/a/b", "x=1&y=%20"), b""),
    "latin1_bytes_in_params": (get_params("/caf\xc3\xa9", "q=\xe9"), b""),
    "post_with_length": (get_params("/form", method="POST", CONTENT_LENGTH="11",
                                    CONTENT_TYPE="application/x-www-form-urlencoded"), b"a=1&b=2&c=3"),
    "mounted_with_both": (get_params("/rest", SCRIPT_NAME="/app", REQUEST_URI="/app/rest"), b""),
    "https": (get_params("/", HTTPS="on", SERVER_PORT="443"), b""),
    "many_headers": (get_params("/", **{f"HTTP_X_H{i}": "v" * i for i in range(200)}), b""),
}


@pytest.mark.parametrize("case", sorted(AGREE))
def test_flup_and_bridge_agree_where_the_specs_leave_no_choice(servers, case):
    params, body = AGREE[case]
    flup_env, bridge_env_ = both(servers, params, body)
    assert flup_env is not None and bridge_env_ is not None
    assert comparable(bridge_env_) == comparable(flup_env)


# ---------------------------------------------------------------------------
# Where bridge is right and flup is wrong


def test_params_pair_split_across_records(servers):
    """FastCGI §3.4/§3.3: PARAMS is a stream; a pair may straddle records.
    flup decodes each record on its own: the request fails."""
    params = get_params("/split", HTTP_COOKIE="c" * 400)
    pairs = p.encode_pairs(params)
    cut = pairs.index(b"HTTP_COOKIE") + 5
    raw = (p.encode_record(p.BEGIN_REQUEST, 1, p.encode_begin_request(p.RESPONDER))
           + p.encode_record(p.PARAMS, 1, pairs[:cut]) + p.encode_record(p.PARAMS, 1, pairs[cut:])
           + p.encode_record(p.PARAMS, 1, b"") + p.encode_record(p.STDIN, 1, b""))
    flup_env, bridge_env_ = both(servers, params, raw=raw)
    assert bridge_env_["HTTP_COOKIE"] == "c" * 400 and bridge_env_["PATH_INFO"] == "/split"
    assert flup_env is None or flup_env.get("HTTP_COOKIE") != "c" * 400


def test_get_values_reports_the_real_limits(servers):
    """§4.1: GET_VALUES_RESULT carries the values asked for.  flup compares the
    bytes names with str keys and always answers an empty record."""
    query = p.encode_record(p.GET_VALUES, 0, p.encode_pairs(
        [(p.MAX_CONNS, b""), (p.MAX_REQS, b""), (p.MPXS_CONNS, b"")]))
    answers = {}
    for name, address in servers.items():
        with Client(address) as client:
            client.send(query)
            recs = client.read_until(lambda r: any(t == p.GET_VALUES_RESULT for t, _, _ in r))
            answers[name] = dict(p.decode_pairs(next(c for t, _, c in recs if t == p.GET_VALUES_RESULT)))
    assert answers["flup"] == {}
    assert set(answers["bridge"]) == {p.MAX_CONNS, p.MAX_REQS, p.MPXS_CONNS}
    assert int(answers["bridge"][p.MAX_REQS]) >= 1


def test_nginx_stock_params_give_the_path_as_path_info(servers):
    """nginx's fastcgi_params send SCRIPT_NAME=$fastcgi_script_name (the whole
    path) and no PATH_INFO.  flup leaves PATH_INFO empty, so every URL reaches
    the app as "/"; bridge takes the path from REQUEST_URI (app at the root)."""
    params = get_params("/x/y", "q=1")
    del params["PATH_INFO"]
    params["SCRIPT_NAME"] = "/x/y"
    flup_env, bridge_env_ = both(servers, params)
    assert (flup_env["SCRIPT_NAME"], flup_env["PATH_INFO"]) == ("/x/y", "")
    assert (bridge_env_["SCRIPT_NAME"], bridge_env_["PATH_INFO"]) == ("", "/x/y")


def test_path_info_derived_from_request_uri_is_percent_decoded(servers):
    """PEP 3333 / RFC 3875 §4.1.5: PATH_INFO is decoded.  flup cuts the raw
    REQUEST_URI and leaves %-escapes in it."""
    params = get_params("", SCRIPT_NAME="/app", REQUEST_URI="/app/caf%C3%A9/a%20b")
    del params["PATH_INFO"]
    flup_env, bridge_env_ = both(servers, params)
    assert flup_env["PATH_INFO"] == "/caf%C3%A9/a%20b"
    assert bridge_env_["PATH_INFO"] == "/caf\xc3\xa9/a b"


def test_proxy_header_does_not_become_http_proxy(servers):
    """httpoxy (CVE-2016-5385): a client's "Proxy:" header arrives as HTTP_PROXY;
    flup hands it to the app, where HTTP clients take it for a proxy setting."""
    flup_env, bridge_env_ = both(servers, get_params("/", HTTP_PROXY="http://evil.example:8080"))
    assert flup_env["HTTP_PROXY"] == "http://evil.example:8080"
    assert "HTTP_PROXY" not in bridge_env_


def test_body_without_content_length_is_marked_terminated(servers):
    """A chunked body forwarded unbuffered has no CONTENT_LENGTH.  bridge says
    wsgi.input_terminated (and the now-known CONTENT_LENGTH); flup says neither,
    so an app that honours CONTENT_LENGTH (PEP 3333) sees no body."""
    params = get_params("/upload", method="POST")
    flup_env, bridge_env_ = both(servers, params, b"streamed body")
    assert bridge_env_["wsgi.input_terminated"] is True
    assert bridge_env_["CONTENT_LENGTH"] == "13" and bridge_env_["body_length"] == 13
    assert flup_env["wsgi.input_terminated"] is False
    assert "CONTENT_LENGTH" not in flup_env
