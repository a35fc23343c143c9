"""What a trusted proxy says about the client: X-Forwarded-* and Forwarded (RFC 7239).

Only a peer listed in ``--forwarded-allow-ips`` (or a unix socket peer: a
local process such as nginx) may change REMOTE_ADDR, ``wsgi.url_scheme`` and
HTTP_HOST; anyone else's headers stay in the environ untouched and unused.

The client address is found the way nginx's realip module does with
``real_ip_recursive on``: walk the list from the right (each proxy appends
the address it received the request from) and take the first address that
is not itself a trusted proxy.  Taking the leftmost entry, as some servers
do, lets any client choose its own REMOTE_ADDR.
"""
from __future__ import annotations

import ipaddress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


class TrustedProxies:
    """``--forwarded-allow-ips``: ``*``, addresses and networks, comma separated."""

    def __init__(self, spec: str) -> None:
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
                raise ValueError(f"--forwarded-allow-ips: {item!r} is not an address or network") from None
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
    return value.rpartition(",")[2].strip(" \t")


def _client_from_list(addresses: list, trusted: TrustedProxies) -> Optional[str]:
    """Rightmost address that is not a trusted proxy (or the leftmost if all are)."""
    for address in reversed(addresses):
        if not trusted.trusts(address):
            return address
    return addresses[0] if addresses else None


def _node_address(node: str) -> Optional[str]:
    """RFC 7239 §6 node → IP string: ``192.0.2.60``, ``"[2001:db8::1]:4711"``, ``_hidden``, ``unknown``."""
    node = node.strip().strip('"')
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:
        node = node.partition(":")[0]
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


def apply_forwarded(environ: dict, trusted: TrustedProxies) -> None:
    """Rewrite REMOTE_ADDR, wsgi.url_scheme/HTTPS and HTTP_HOST from a trusted proxy's headers."""
    xff = environ.get("HTTP_X_FORWARDED_FOR")
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    host = environ.get("HTTP_X_FORWARDED_HOST")
    if xff is None and proto is None and host is None:
        forwarded = environ.get("HTTP_FORWARDED")
        if forwarded is None:
            return
        elements = parse_forwarded(forwarded)
        addresses = [_node_address(e.get("for", "")) for e in elements]
        chosen = None
        for i in range(len(elements) - 1, -1, -1):
            if addresses[i] is None or not trusted.trusts(addresses[i]):
                chosen = i
                break
        if chosen is None:
            chosen = 0
        element = elements[chosen]
        if addresses[chosen]:
            environ["REMOTE_ADDR"] = addresses[chosen]
            environ.pop("REMOTE_PORT", None)
        proto = element.get("proto")
        host = element.get("host")
    else:
        if xff is not None:
            addresses = [a.strip(" \t") for a in xff.split(",") if a.strip(" \t")]
            client = _node_address(_client_from_list(addresses, trusted) or "")
            if client:      # "unknown" or an obfuscated name leaves the peer address
                environ["REMOTE_ADDR"] = client
                environ.pop("REMOTE_PORT", None)
        if proto is not None:
            proto = _last(proto)
        if host is not None:
            host = _last(host)
    if proto:
        proto = proto.lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
            if proto == "https":
                environ["HTTPS"] = "on"
            else:
                environ.pop("HTTPS", None)
    if host:
        environ["HTTP_HOST"] = host
