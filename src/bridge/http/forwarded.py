"""What a trusted proxy says about the client: X-Forwarded-* and Forwarded (RFC 7239).

Only a peer listed in ``--forwarded-allow-ips`` (default ``127.0.0.1,::1``,
gunicorn's default) or a unix socket peer (a local process such as nginx:
only what may open the socket file can connect) may change REMOTE_ADDR,
``wsgi.url_scheme`` and HTTP_HOST; anyone else's headers stay in the environ
untouched and unused.

What each header may change, and why:

* ``X-Forwarded-For`` / ``Forwarded: for=``: REMOTE_ADDR, only to a valid IP
  address.  The client address is found the way nginx's realip module does
  with ``real_ip_recursive on``: walk the list from the right (each proxy
  appends the address it received the request from) and take the first
  address that is not itself a trusted proxy.  Taking the leftmost entry, as
  some servers do, lets any client choose its own REMOTE_ADDR.
* ``X-Forwarded-Proto`` / ``proto=``: ``wsgi.url_scheme``, only to ``http``
  or ``https``.
* ``X-Forwarded-Host`` / ``host=``: HTTP_HOST, only with
  ``--forwarded-host`` (off by default, like werkzeug's ProxyFix
  ``x_host=0``; gunicorn never applies it).  A proxy that does not set the
  header passes the client's own value on, and the host is what password
  reset links, absolute redirects and cache keys are built from; behind
  nginx, ``proxy_set_header Host $host`` already says it.  Even when on,
  only a value of RFC 9110 Host syntax (:data:`bridge.http.abnf.FORWARDED_HOST`)
  is taken, the rightmost of a list (the nearest proxy's); anything else is
  ignored.
"""
from __future__ import annotations

import ipaddress

from bridge.http.abnf import FORWARDED_HOST

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class TrustedProxies:
    """``--forwarded-allow-ips`` (or ``--proxy-allow-ips``): ``*``, addresses and networks, comma separated."""

    def __init__(self, spec: str, option: str = "--forwarded-allow-ips") -> None:
        self.everyone = False
        self.networks: list = []
        for item in (spec or "").split(","):
            item = item.strip()
            if not item:
                continue
            if item == "*":
                self.everyone = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{option}: {item!r} is not an address or network") from None
        self._cache: dict = {}

    def __bool__(self) -> bool:
        return self.everyone or bool(self.networks)

    def trusts(self, address: Optional[str]) -> bool:
        """Is ``address`` (a peer IP as a string; None for a unix socket peer) trusted?"""
        if address is None:
            return True
        if self.everyone:
            return True
        known = self._cache.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        result = any(ip in net for net in self.networks)
        if len(self._cache) < 4096:
            self._cache[address] = result
        return result


def _last(value: str) -> str:
    """The rightmost non-empty element of a comma list (RFC 9110 §5.6.1): the nearest proxy's."""
    for item in reversed(value.split(",")):
        item = item.strip(" \t")
        if item:
            return item
    return ""


def _client_index(nodes: list, trusted: TrustedProxies) -> int:
    """Index of the rightmost node that is not a trusted proxy (the leftmost if all are).

    ``nodes`` are addresses from :func:`_node_address` (None: unknown, hidden
    or garbage).  Such a node stops the walk: what is left of it was said by
    someone bridge cannot vouch for, so the caller keeps the peer's address.
    """
    for i in range(len(nodes) - 1, -1, -1):
        if nodes[i] is None or not trusted.trusts(nodes[i]):
            return i
    return 0


def _node_address(node: str) -> Optional[str]:
    """RFC 7239 §6 node → address string: ``192.0.2.60``, ``"[2001:db8::1]:4711"``, ``_hidden``, ``unknown``.

    ``node = nodename [ ":" node-port ]``, ``node-port = port / obfport``;
    anything else after the address (or after ``]``) makes it no address.
    """
    node = node.strip().strip('"')
    if node.startswith("["):
        node, bracket, port = node[1:].partition("]")
        if not bracket or port and port[0] != ":":
            return None
        port = port[1:] if port else None
    elif node.count(":") == 1:
        node, _, port = node.partition(":")
    else:
        port = None
    if port is not None and not (port.isdigit() and port.isascii()) and not port.startswith("_"):
        return None
    if not node or node == "unknown" or node.startswith("_"):
        return None
    return node


def parse_forwarded(value: str) -> list:
    """RFC 7239 §4: ``Forwarded: for=a;proto=https, for=b`` → [{"for": "a", "proto": "https"}, ...]."""
    elements = []
    # Good enough splitting: values with "," or ";" inside quotes do not occur
    # in for/proto/host; a malformed pair is skipped, not fatal.
    for element in value.split(","):
        pairs = {}
        for pair in element.split(";"):
            name, eq, val = pair.partition("=")
            if eq:
                val = val.strip(" \t")
                if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
                    val = val[1:-1].replace('\\"', '"').replace("\\\\", "\\")
                pairs[name.strip(" \t").lower()] = val
        elements.append(pairs)
    return elements


def _ip(address: Optional[str]) -> Optional[str]:
    """``address`` if it is an IPv4 or IPv6 address, else None (a name, garbage)."""
    if not address or "%" in address:   # no IPv6 zone id: it names an interface of the proxy
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def _host(value: Optional[str]) -> Optional[str]:
    """The rightmost element of a forwarded host list, if it is of Host syntax."""
    if value is None:
        return None
    value = _last(value)
    return value if FORWARDED_HOST.fullmatch(value) else None


def apply_forwarded(environ: dict, trusted: TrustedProxies, forwarded_host: bool = False) -> None:
    """Rewrite REMOTE_ADDR, wsgi.url_scheme/HTTPS and (with ``forwarded_host``) HTTP_HOST.

    Call only for a trusted peer.  A value that is not what its header may
    say (an address that is not an IP, a scheme other than http/https, a
    host that is not of Host syntax) is ignored: the connection's own value
    stays.
    """
    xff = environ.get("HTTP_X_FORWARDED_FOR")
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    host = environ.get("HTTP_X_FORWARDED_HOST") if forwarded_host else None
    if xff is None and proto is None and host is None:
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded is None:
            return
        elements = parse_forwarded(forwarded)
        nodes = [_node_address(e.get("for", "")) for e in elements]
        chosen = _client_index(nodes, trusted)
        element = elements[chosen]
        client = _ip(nodes[chosen])
        if client:
            environ["REMOTE_ADDR"] = client
            environ.pop("REMOTE_PORT", None)
        proto = element.get("proto")
        if forwarded_host:
            host = element.get("host")
    else:
        if xff is not None:
            nodes = [_node_address(a) for a in xff.split(",") if a.strip(" \t")]
            client = _ip(nodes[_client_index(nodes, trusted)]) if nodes else None
            if client:      # "unknown", an obfuscated name or garbage leaves the peer address
                environ["REMOTE_ADDR"] = client
                environ.pop("REMOTE_PORT", None)
        if proto is not None:
            proto = _last(proto)
    if proto:
        proto = proto.lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
            if proto == "https":
                environ["HTTPS"] = "on"
            else:
                environ.pop("HTTPS", None)
    host = _host(host)
    if host:
        environ["HTTP_HOST"] = host
